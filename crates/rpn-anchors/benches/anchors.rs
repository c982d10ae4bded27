//! Anchor generation and encode/decode of 261,888 boxes (Matterport's 1024² pyramid).
//!
//! `cargo xtask bench` first runs `benches/anchors_peers.py`, which times torchvision and
//! Matterport on the same inputs and writes them with the peers' outputs to
//! `target/bench/anchors_io.safetensors`; this bench then checks that our outputs equal the peers'
//! before timing anything. Run alone (`cargo bench -p rpn-anchors`), it builds the same kind of
//! inputs itself and skips the check.

// Benches panic on broken inputs or unequal outputs: nothing should be timed then.
#![allow(clippy::expect_used)]

use std::hint::black_box;
use std::path::PathBuf;

use criterion::{criterion_group, criterion_main, Criterion};
use rpn_anchors::{AnchorConfig, Bbox, BoxCoder, ImageSize};
use safetensors::SafeTensors;

struct Inputs {
    anchors: Vec<Bbox>,
    targets: Vec<Bbox>,
    raw: Vec<[f32; 4]>,
}

fn io_path() -> PathBuf {
    let dir = std::env::var_os("RPN_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/bench"));
    dir.join("anchors_io.safetensors")
}

fn rows(t: &SafeTensors<'_>, key: &str) -> Vec<[f32; 4]> {
    let view = t.tensor(key).unwrap_or_else(|e| panic!("bench io: no `{key}`: {e}"));
    view.data()
        .chunks_exact(16)
        .map(|c| {
            std::array::from_fn(|k| {
                f32::from_le_bytes([c[4 * k], c[4 * k + 1], c[4 * k + 2], c[4 * k + 3]])
            })
        })
        .collect()
}

fn yxyx(t: &SafeTensors<'_>, key: &str) -> Vec<Bbox> {
    rows(t, key).into_iter().map(Bbox::from_yxyx).collect()
}

/// `|a − b| ≤ atol + rtol·|b|` everywhere, or a panic naming the first difference.
fn check(what: &str, ours: &[f32], peer: &[f32], rtol: f32, atol: f32) {
    assert_eq!(ours.len(), peer.len(), "{what}: length");
    let bad = ours.iter().zip(peer).position(|(&a, &b)| !((a - b).abs() <= atol + rtol * b.abs()));
    if let Some(i) = bad {
        panic!("{what}: ours {} != peer {} at {i}; not timing unequal outputs", ours[i], peer[i]);
    }
    eprintln!("checked: {what} equal to the peer ({} values)", ours.len());
}

fn load_and_check() -> Option<Inputs> {
    let bytes = std::fs::read(io_path()).ok()?;
    let t = SafeTensors::deserialize(&bytes).expect("bench io is not safetensors");
    let inputs = Inputs {
        anchors: yxyx(&t, "anchors_yxyx"),
        targets: yxyx(&t, "targets_yxyx"),
        raw: rows(&t, "raw_deltas"),
    };
    let flat = |b: &[Bbox]| -> Vec<f32> { b.iter().flat_map(|b| b.to_xyxy()).collect() };

    let image = ImageSize::new(1024, 1024).expect("static size");
    let ours = AnchorConfig::matterport_fpn().generate(image).expect("preset");
    check("matterport anchors", &flat(ours.boxes()), &flat(&yxyx(&t, "mp/anchors_yxyx")), 0.0, 0.0);
    let tv = AnchorConfig::torchvision_fpn()
        .generate(ImageSize::new(800, 1344).expect("static size"))
        .expect("preset");
    let peer: Vec<Bbox> =
        rows(&t, "tv/anchors_800x1344_xyxy").into_iter().map(Bbox::from_xyxy).collect();
    check("torchvision anchors", &flat(tv.boxes()), &flat(&peer), 0.0, 0.0);

    for (name, coder, key_enc, key_dec, dec_yx) in [
        ("matterport", BoxCoder::matterport(), "mp/encoded", "mp/decoded_yxyx", true),
        ("torchvision", BoxCoder::torchvision_rpn(), "tv/encoded", "tv/decoded_xyxy", false),
    ] {
        let mut enc = vec![[0.0; 4]; inputs.anchors.len()];
        coder.encode_slice(&inputs.anchors, &inputs.targets, &mut enc).expect("lengths");
        check(&format!("{name} encode"), &enc.concat(), &rows(&t, key_enc).concat(), 1e-5, 1e-5);
        let mut dec = vec![Bbox::default(); inputs.anchors.len()];
        coder.decode_slice(&inputs.anchors, &inputs.raw, &mut dec).expect("lengths");
        let peer: Vec<Bbox> = rows(&t, key_dec)
            .into_iter()
            .map(if dec_yx { Bbox::from_yxyx } else { Bbox::from_xyxy })
            .collect();
        check(&format!("{name} decode"), &flat(&dec), &flat(&peer), 1e-5, 1e-3);
    }
    Some(inputs)
}

/// Same recipe as the peer script, without its RNG: targets are anchors moved by a fixed pattern.
fn synthetic() -> Inputs {
    let anchors = AnchorConfig::matterport_fpn()
        .generate(ImageSize::new(1024, 1024).expect("static size"))
        .expect("preset")
        .into_parts()
        .0;
    let wobble = |i: usize, k: usize| (((i * 7 + k * 13) % 61) as f32 / 61.0 - 0.5) * 0.6;
    let targets = anchors
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let (w, h) = (a.width(), a.height());
            Bbox::new(
                a.x1 + wobble(i, 0) * w,
                a.y1 + wobble(i, 1) * h,
                a.x2 + wobble(i, 2) * w,
                a.y2 + wobble(i, 3) * h,
            )
        })
        .collect();
    let raw = (0..anchors.len()).map(|i| std::array::from_fn(|k| wobble(i, k) * 3.0)).collect();
    Inputs { anchors, targets, raw }
}

fn benches(c: &mut Criterion) {
    let inputs = load_and_check().unwrap_or_else(|| {
        eprintln!("no peer io at {}: timing synthetic inputs (run `cargo xtask bench` for the side-by-side table)", io_path().display());
        synthetic()
    });
    let n = inputs.anchors.len();

    let mut g = c.benchmark_group("anchors");
    let square = ImageSize::new(1024, 1024).expect("static size");
    let wide = ImageSize::new(800, 1344).expect("static size");
    g.bench_function("generate_matterport_1024", |b| {
        b.iter(|| AnchorConfig::matterport_fpn().generate(black_box(square)))
    });
    g.bench_function("generate_torchvision_800x1344", |b| {
        b.iter(|| AnchorConfig::torchvision_fpn().generate(black_box(wide)))
    });

    let mut enc = vec![[0.0; 4]; n];
    let mut dec = vec![Bbox::default(); n];
    for (name, coder) in
        [("matterport", BoxCoder::matterport()), ("torchvision", BoxCoder::torchvision_rpn())]
    {
        g.bench_function(format!("encode_261888/{name}"), |b| {
            b.iter(|| {
                coder.encode_slice(black_box(&inputs.anchors), black_box(&inputs.targets), &mut enc)
            })
        });
        g.bench_function(format!("decode_261888/{name}"), |b| {
            b.iter(|| {
                coder.decode_slice(black_box(&inputs.anchors), black_box(&inputs.raw), &mut dec)
            })
        });
    }
    g.finish();
}

criterion_group!(anchors, benches);
criterion_main!(anchors);
