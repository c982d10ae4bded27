//! Greedy NMS and the full proposal stage on made-up inputs, printed.
//!
//! ```text
//! cargo run --release -p rpn-proposals --example nms
//! ```

use std::error::Error;

use rpn_anchors::{AnchorConfig, Bbox, ImageSize};
use rpn_proposals::{generate_proposals, nms, Objectness, ProposalConfig};

fn main() -> Result<(), Box<dyn Error>> {
    // NMS alone: two overlapping boxes and a distant one.
    let boxes = [
        Bbox::new(10.0, 10.0, 60.0, 60.0),
        Bbox::new(14.0, 12.0, 62.0, 58.0),
        Bbox::new(100.0, 100.0, 140.0, 150.0),
    ];
    let scores = [0.9, 0.95, 0.5];
    println!(
        "nms(iou 0.7) keeps {:?} (indices, best first)",
        nms(&boxes, &scores, 0.7, usize::MAX)?
    );

    // The torchvision test-time proposal stage on a 256×256 image with synthetic head outputs.
    let image = ImageSize::new(256, 256)?;
    let anchors = AnchorConfig::torchvision_fpn().generate(image)?;
    let logits: Vec<f32> =
        (0..anchors.len()).map(|i| ((i * 7919) % 1000) as f32 / 100.0 - 5.0).collect();
    let deltas: Vec<[f32; 4]> =
        (0..anchors.len()).map(|i| [((i % 13) as f32 - 6.0) / 30.0, 0.0, 0.0, 0.0]).collect();
    let config = ProposalConfig { post_nms_top_k: 5, ..ProposalConfig::torchvision_test() };
    let proposals =
        generate_proposals(&config, &anchors, Objectness::Logits(&logits), &deltas, image)?;
    println!("top {} of {} anchors:", proposals.items.len(), anchors.len());
    for p in &proposals.items {
        let b = p.bbox;
        println!(
            "  score {:.4}  level {}  anchor {:>6}  box ({:.1}, {:.1}, {:.1}, {:.1})",
            p.score, p.level, p.anchor, b.x1, b.y1, b.x2, b.y2
        );
    }
    Ok(())
}
