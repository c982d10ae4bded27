//! The kernels alone: GFLOP/s of the ResNet-FPN convolution shapes against the FMA peak.
//! Run with `cargo bench -p rpn-kernels`; `cargo xtask bench` times whole networks instead.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rpn_kernels::{Conv2d, Epilogue, Nhwc, Padding, Workers};

/// One layer to time: the convolution, a deterministic input and an output buffer.
struct Layer {
    conv: Conv2d,
    shape: Nhwc,
    input: Vec<f32>,
    out: Vec<f32>,
    /// Multiply-adds × 2 of the direct convolution (Winograd layers do fewer).
    flops: u64,
}

/// `side × side × i → o` with a `k × k` kernel, stride `s` and padding `k / 2`, on `batch`
/// images; `None` if the shape is refused.
fn layer(batch: usize, side: usize, i: usize, o: usize, k: usize, s: usize) -> Option<Layer> {
    let shape = Nhwc::new(batch, side, side, i);
    let input: Vec<f32> = (0..shape.len().ok()?).map(|v| (v % 13) as f32 * 0.01).collect();
    let weight: Vec<f32> = (0..o * i * k * k).map(|v| (v % 7) as f32 * 0.01).collect();
    let conv = Conv2d::from_oihw(&weight, [o, i, k, k], None, s, Padding::symmetric(k / 2)).ok()?;
    let out_shape = conv.output_shape(shape).ok()?;
    let out = vec![0f32; out_shape.len().ok()?];
    let flops = (2 * out_shape.pixels().ok()? * conv.macs_per_pixel()) as u64;
    Some(Layer { conv, shape, input, out, flops })
}

/// `(name, side, in, out, kernel, stride)`.
type Shape = (&'static str, usize, usize, usize, usize, usize);

/// Times the forward pass (bias + ReLU) of each layer on `batch` images, in group `group`.
fn forward_group(c: &mut Criterion, group: &str, batch: usize, layers: &[Shape]) {
    let workers = Workers::new(2);
    let mut group = c.benchmark_group(group);
    group.sample_size(10);
    for &(name, side, i, o, k, s) in layers {
        let Some(Layer { conv, shape, input, mut out, flops }) = layer(batch, side, i, o, k, s)
        else {
            continue;
        };
        group.throughput(Throughput::Elements(flops));
        group.bench_function(name, |b| {
            b.iter(|| conv.forward(&input, shape, Epilogue::RELU, &mut out, &workers))
        });
    }
    group.finish();
}

/// Matterport R50-FPN's layers at 1024² (P2 = 256²).
fn convolutions(c: &mut Criterion) {
    eprintln!("FMA peak, 2 threads: {:.0} GFLOP/s", rpn_kernels::fma_peak_gflops(2));
    forward_group(
        c,
        "conv",
        1,
        &[
            ("rpn_head_3x3_256_512_p2", 256, 256, 512, 3, 1),
            ("fpn_3x3_256_256_p2", 256, 256, 256, 3, 1),
            ("res2_1x1_256_64", 256, 256, 64, 1, 1),
            ("res2_3x3_64_64", 256, 64, 64, 3, 1),
            ("stem_7x7s2_3_64", 1024, 3, 64, 7, 2),
        ],
    );
}

/// Seed 000's inference layers (batch 8, 64×64 images: 32², 16² and 8² maps), whose small maps
/// give short GEMMs: the shapes where per-call overheads (weight packing, thread start) show.
fn small_maps(c: &mut Criterion) {
    forward_group(
        c,
        "seed000",
        8,
        &[
            ("stage1_3x3_64_64", 32, 64, 64, 3, 1),
            ("stage2_3x3_128_128", 16, 128, 128, 3, 1),
            ("stage3_3x3_256_256", 8, 256, 256, 3, 1),
            ("head_3x3_1024_256", 8, 1024, 256, 3, 1),
            ("stage2_1x1_512_128", 16, 512, 128, 1, 1),
            ("stage3_1x1_1024_256", 8, 1024, 256, 1, 1),
            ("stage3_1x1_256_1024", 8, 256, 1024, 1, 1),
        ],
    );
}

/// Seed 001's training layers (batch 20, 32×32 maps): forward, input and weight gradients.
fn training(c: &mut Criterion) {
    let workers = Workers::new(2);
    let mut group = c.benchmark_group("train");
    group.sample_size(10);
    // (name, side, in, out, kernel, stride)
    for (name, side, i, o, k, s) in [
        ("head_3x3_256_256", 32, 256, 256, 3, 1),
        ("block_3x3_64_64", 32, 64, 64, 3, 1),
        ("block_1x1_64_256", 32, 64, 256, 1, 1),
        ("block_1x1s2_64_64", 64, 64, 64, 1, 2),
    ] {
        let Some(Layer { conv, shape, input, mut out, flops }) = layer(20, side, i, o, k, s) else {
            continue;
        };
        let mut grad_in = vec![0f32; input.len()];
        group.throughput(Throughput::Elements(flops));
        group.bench_function(format!("{name}_forward"), |b| {
            b.iter(|| conv.forward(&input, shape, Epilogue::LINEAR, &mut out, &workers))
        });
        group.bench_function(format!("{name}_input_grad"), |b| {
            b.iter(|| conv.backward_input(&out, shape, &mut grad_in, &workers))
        });
        group.bench_function(format!("{name}_weight_grad"), |b| {
            b.iter(|| conv.backward_weights(&input, shape, &out, &workers))
        });
    }
    group.finish();
}

criterion_group!(benches, convolutions, small_maps, training);
criterion_main!(benches);
