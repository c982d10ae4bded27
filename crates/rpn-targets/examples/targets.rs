//! Builds RPN training targets for one 1024² image on Matterport's anchor pyramid and prints what
//! the matcher and the sampler did.
//!
//! ```text
//! cargo run --release -p rpn-targets --example targets
//! ```

use std::error::Error;

use rpn_anchors::{AnchorConfig, Bbox, BoxCoder, ImageSize};
use rpn_targets::{
    seeded_rng, AnchorMatch, Matcher, MatcherConfig, Sampler, SamplerConfig, TargetBuilder,
};

fn main() -> Result<(), Box<dyn Error>> {
    let image = ImageSize::new(1024, 1024)?;
    let config = AnchorConfig::matterport_fpn();
    let anchors = config.generate(image)?;
    // Matterport matches in float64: give the matcher its f64 anchors for identical tie sets.
    let matcher = Matcher::new(anchors.clone(), MatcherConfig::default())?
        .with_f64_anchors(config.generate_f64(image)?)?;

    // Three objects (pixels, Matterport's (y1, x1, y2, x2) order) and one crowd region.
    let gt: Vec<Bbox> =
        [[100.0, 120.0, 300.0, 260.0], [500.0, 480.0, 540.0, 530.0], [700.0, 20.0, 1000.0, 600.0]]
            .into_iter()
            .map(Bbox::from_yxyx)
            .collect();
    let crowd = [Bbox::from_yxyx([600.0, 700.0, 900.0, 1000.0])];

    let m = matcher.match_anchors(&gt, &crowd, image)?;
    println!(
        "{} anchors: {} positive, {} negative before sampling",
        anchors.len(),
        m.num_positive(),
        m.num_negative()
    );
    for (g, b) in gt.iter().enumerate() {
        let n = m.labels.iter().filter(|l| **l == AnchorMatch::Positive { gt: g as u32 }).count();
        println!("  GT {g} ({:.0}x{:.0} px): {n} positive anchors", b.width(), b.height());
    }

    let mut builder = TargetBuilder::new(
        matcher,
        Sampler::new(SamplerConfig::default())?,
        BoxCoder::matterport(),
    );
    let (targets, counts) = builder.matterport(&gt, &crowd, image, &mut seeded_rng(42))?;
    println!(
        "sampled (seed 42): {} positive + {} negative of 256",
        counts.positive, counts.negative
    );
    println!(
        "rpn_bbox[0] = {:?}  (dy, dx, log dh, log dw) / (0.1, 0.1, 0.2, 0.2)",
        targets.rpn_bbox[0]
    );
    Ok(())
}
