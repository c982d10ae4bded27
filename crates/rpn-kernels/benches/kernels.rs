//! The kernels alone: GFLOP/s of the ResNet-FPN convolution shapes against the FMA peak.
//! Run with `cargo bench -p rpn-kernels`; `cargo xtask bench` times whole networks instead.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rpn_kernels::{Conv2d, Epilogue, Nhwc, Padding, Workers};

fn convolutions(c: &mut Criterion) {
    let workers = Workers::new(2);
    eprintln!("FMA peak, 2 threads: {:.0} GFLOP/s", rpn_kernels::fma_peak_gflops(2));
    let mut group = c.benchmark_group("conv");
    group.sample_size(10);
    // (name, side, in, out, kernel, stride): Matterport R50-FPN at 1024² (P2 = 256²).
    for (name, side, i, o, k, s) in [
        ("rpn_head_3x3_256_512_p2", 256, 256, 512, 3, 1),
        ("fpn_3x3_256_256_p2", 256, 256, 256, 3, 1),
        ("res2_1x1_256_64", 256, 256, 64, 1, 1),
        ("res2_3x3_64_64", 256, 64, 64, 3, 1),
        ("stem_7x7s2_3_64", 1024, 3, 64, 7, 2),
    ] {
        let shape = Nhwc::new(1, side, side, i);
        let input: Vec<f32> =
            (0..shape.len().unwrap_or(0)).map(|v| (v % 13) as f32 * 0.01).collect();
        let weight: Vec<f32> = (0..o * i * k * k).map(|v| (v % 7) as f32 * 0.01).collect();
        let Ok(conv) = Conv2d::from_oihw(&weight, [o, i, k, k], None, s, Padding::symmetric(k / 2))
        else {
            continue;
        };
        let Ok(out_shape) = conv.output_shape(shape) else { continue };
        let mut out = vec![0f32; out_shape.len().unwrap_or(0)];
        let pixels = out_shape.pixels().unwrap_or(0);
        group.throughput(Throughput::Elements((2 * pixels * conv.macs_per_pixel()) as u64));
        group.bench_function(name, |b| {
            b.iter(|| conv.forward(&input, shape, Epilogue::RELU, &mut out, &workers))
        });
    }
    group.finish();
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
        let shape = Nhwc::new(20, side, side, i);
        let input: Vec<f32> =
            (0..shape.len().unwrap_or(0)).map(|v| (v % 13) as f32 * 0.01).collect();
        let weight: Vec<f32> = (0..o * i * k * k).map(|v| (v % 7) as f32 * 0.01).collect();
        let pad = Padding::symmetric(k / 2);
        let Ok(conv) = Conv2d::from_oihw(&weight, [o, i, k, k], None, s, pad) else { continue };
        let Ok(out_shape) = conv.output_shape(shape) else { continue };
        let mut out = vec![0f32; out_shape.len().unwrap_or(0)];
        let mut grad_in = vec![0f32; input.len()];
        let flops = (2 * out_shape.pixels().unwrap_or(0) * conv.macs_per_pixel()) as u64;
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

criterion_group!(benches, convolutions, training);
criterion_main!(benches);
