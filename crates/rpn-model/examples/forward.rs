//! Builds every architecture (seeds and Matterport's ResNet-FPN) with random weights, runs it on CPU and prints output shapes,
//! parameter counts (equal to Keras') and the time of one forward pass.
//!
//! ```text
//! cargo run --release -p rpn-model --example forward            # batch 2 of 64×64 images
//! cargo run --release -p rpn-model --example forward -- 4 128   # batch 4 of 128×128
//! ```

use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use rpn_model::{MatterportConfig, Model, Network, SeedResNetConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1).map(|a| a.parse::<usize>());
    let batch = args.next().transpose()?.unwrap_or(2);
    let side = args.next().transpose()?.unwrap_or(64);
    let device = Device::Cpu;
    let networks = [
        (
            "seed000",
            Network::SeedRpn { backbone: SeedResNetConfig::seed000(), anchors_per_cell: 9 },
        ),
        (
            "seed001",
            Network::SeedRpn { backbone: SeedResNetConfig::seed001(), anchors_per_cell: 9 },
        ),
        ("seed002", Network::Seed002Head { in_channels: 512, anchors_per_cell: 9 }),
        ("matterport-resnet50", Network::Matterport(MatterportConfig::resnet50())),
        ("matterport-resnet101", Network::Matterport(MatterportConfig::resnet101())),
        ("vgg16", Network::Vgg16),
    ];
    for (name, network) in networks {
        let varmap = VarMap::new();
        let model = network.build(VarBuilder::from_varmap(&varmap, DType::F32, &device))?;
        let params = network.parameter_count()?;
        let start = Instant::now();
        let shapes = match &model {
            Model::SeedRpn(m) => {
                // NHWC images, as Keras feeds them.
                let images = Tensor::rand(0f32, 1.0, (batch, side, side, 3), &device)?;
                let out = m.forward_nhwc(&images)?;
                format!(
                    "logits {:?}, probs {:?}, deltas {:?}",
                    out.logits.dims(),
                    out.probs.dims(),
                    out.deltas.dims()
                )
            }
            Model::Matterport(m) => {
                // Molded images; sides must be multiples of 64 (P6 has stride 64).
                let side = side.div_ceil(64) * 64;
                let images = Tensor::rand(-120f32, 130.0, (batch, side, side, 3), &device)?;
                let out = m.forward_nhwc(&images)?;
                let levels: Vec<_> = out.pyramid.iter().map(|p| p.dims()[2..].to_vec()).collect();
                format!(
                    "P2–P6 {levels:?}, logits {:?}, deltas {:?}",
                    out.logits.dims(),
                    out.deltas.dims()
                )
            }
            Model::Vgg16(m) => {
                let images = Tensor::rand(-120f32, 130.0, (batch, side, side, 3), &device)?;
                let features = m.forward_nhwc(&images)?;
                format!("block5_conv3 {:?} (NCHW)", features.dims())
            }
            Model::Seed002(m) => {
                // Seed 002's head reads VGG16's 512-channel conv5 features (stride 16).
                let features =
                    Tensor::rand(0f32, 1.0, (batch, side / 16, side / 16, 512), &device)?;
                let out = m.forward_nhwc(&features)?;
                format!(
                    "classification {:?}, location {:?}",
                    out.classification.dims(),
                    out.location.dims()
                )
            }
            _ => "(a network this example does not know yet)".to_owned(),
        };
        println!(
            "{:<8} {params:>10} values  {:>8.1} ms  {shapes}",
            name,
            start.elapsed().as_secs_f64() * 1e3
        );
    }
    Ok(())
}
