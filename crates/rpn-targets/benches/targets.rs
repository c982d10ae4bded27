//! Full RPN target building (match + sample + encode) on Matterport's 1024² pyramid
//! (261,888 anchors) with 10 and 100 GT boxes.
//!
//! `cargo xtask bench targets` first runs `benches/targets_peers.py` (Matterport
//! `build_rpn_targets`, torchvision Matcher + sampler + encode), which writes the GT sets and the
//! peers' labels to `target/bench/targets_io.safetensors`; this bench checks our labels equal
//! theirs before timing. Alone (`cargo bench -p rpn-targets`) it uses its own GT sets.

// Benches panic on broken inputs or unequal outputs: nothing should be timed then.
#![allow(clippy::expect_used)]

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion};
use rpn_anchors::{AnchorConfig, Bbox, BoxCoder, ImageSize};
use rpn_targets::{seeded_rng, Matcher, MatcherConfig, Sampler, SamplerConfig, TargetBuilder};
use safetensors::SafeTensors;

fn io_path() -> PathBuf {
    let dir = std::env::var_os("RPN_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/bench"));
    dir.join("targets_io.safetensors")
}

fn f32s(t: &SafeTensors<'_>, key: &str) -> Vec<f32> {
    let view = t.tensor(key).unwrap_or_else(|e| panic!("bench io: no `{key}`: {e}"));
    view.data().chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

fn i8s(t: &SafeTensors<'_>, key: &str) -> Vec<i8> {
    t.tensor(key)
        .unwrap_or_else(|e| panic!("bench io: no `{key}`: {e}"))
        .data()
        .iter()
        .map(|&b| b as i8)
        .collect()
}

/// Deterministic GT boxes of 16–300 px inside the image, for runs without peer io.
fn synthetic_gt(count: usize) -> Vec<Bbox> {
    (0..count)
        .map(|i| {
            let (h, w) = (16 + (i * 37) % 284, 16 + (i * 53) % 284);
            let (y, x) = ((i * 101) % (1024 - h), (i * 211) % (1024 - w));
            Bbox::new(x as f32, y as f32, (x + w) as f32, (y + h) as f32)
        })
        .collect()
}

fn benches(c: &mut Criterion) {
    let image = ImageSize::new(1024, 1024).expect("static size");
    let config = AnchorConfig::matterport_fpn();
    let anchors = config.generate(image).expect("preset");
    let f32_matcher =
        Matcher::new(anchors.clone(), MatcherConfig::default()).expect("default config");
    let f64_matcher = f32_matcher
        .clone()
        .with_f64_anchors(config.generate_f64(image).expect("preset"))
        .expect("lengths");

    let bytes = std::fs::read(io_path()).ok();
    let peer_io =
        bytes.as_deref().map(|b| SafeTensors::deserialize(b).expect("bench io is not safetensors"));
    if peer_io.is_none() {
        eprintln!(
            "no peer io at {}: timing synthetic GT (run `cargo xtask bench targets` for the table)",
            io_path().display()
        );
    }

    let mut g = c.benchmark_group("targets");
    for count in [10usize, 100] {
        let gt = match &peer_io {
            Some(t) => {
                let gt: Vec<Bbox> = f32s(t, &format!("gt{count}_yxyx"))
                    .chunks_exact(4)
                    .map(|r| Bbox::from_yxyx([r[0], r[1], r[2], r[3]]))
                    .collect();
                // Labels before subsampling must equal the peers' before anything is timed.
                let mp =
                    f64_matcher.match_anchors(&gt, &[], image).expect("valid GT").to_matterport();
                let expected = i8s(t, &format!("gt{count}/mp/rpn_match"));
                assert!(
                    mp.iter().zip(&expected).all(|(a, b)| i64::from(*a) == i64::from(*b)),
                    "labels differ from Matterport"
                );
                let tv =
                    f32_matcher.match_anchors(&gt, &[], image).expect("valid GT").to_torchvision();
                let expected = i8s(t, &format!("gt{count}/tv/labels"));
                assert!(
                    tv.iter().zip(&expected).all(|(a, b)| *a == f32::from(*b)),
                    "labels differ from torchvision"
                );
                eprintln!(
                    "checked: {count} GT, labels equal Matterport's and torchvision's ({} anchors)",
                    mp.len()
                );
                gt
            }
            None => synthetic_gt(count),
        };
        let sampler = Sampler::new(SamplerConfig::default()).expect("default config");
        let mut mp =
            TargetBuilder::new(f64_matcher.clone(), sampler.clone(), BoxCoder::matterport());
        let mut rng = seeded_rng(0);
        g.bench_function(format!("match_sample_encode_{count}gt/matterport"), |b| {
            b.iter(|| {
                mp.matterport(black_box(&gt), &[], image, &mut rng)
                    .map(|(t, c)| (t.rpn_bbox[0], c))
                    .expect("valid GT")
            })
        });
        let mut tv = TargetBuilder::new(f32_matcher.clone(), sampler, BoxCoder::torchvision_rpn());
        g.bench_function(format!("match_sample_encode_{count}gt/torchvision"), |b| {
            b.iter(|| {
                tv.torchvision(black_box(&gt), &[], image, &mut rng)
                    .map(|(t, c)| (t.labels[0], c))
                    .expect("valid GT")
            })
        });
    }
    g.finish();
}

criterion_group!(targets, benches);
criterion_main!(targets);
