//! Reads a Keras weights file, lists its layers, and ports it to safetensors for an architecture.
//!
//! ```text
//! cargo run --release -p rpn-keras --example port                    # the committed seed 001 file
//! cargo run --release -p rpn-keras --example port -- my.h5 seed000 out.safetensors
//! ```

use std::path::PathBuf;

use rpn_keras::{port, read_keras_file, write_safetensors, PortOptions};
use rpn_model::{MatterportConfig, Network, SeedResNetConfig};

/// The networks by the CLI's names (the `rpn` facade's registry has the full list).
fn network(name: &str) -> Result<Network, String> {
    Ok(match name {
        "seed000" => {
            Network::SeedRpn { backbone: SeedResNetConfig::seed000(), anchors_per_cell: 9 }
        }
        "seed001" => {
            Network::SeedRpn { backbone: SeedResNetConfig::seed001(), anchors_per_cell: 9 }
        }
        "seed002" => Network::Seed002Head { in_channels: 512, anchors_per_cell: 9 },
        "matterport-resnet50" => Network::Matterport(MatterportConfig::resnet50()),
        "matterport-resnet101" => Network::Matterport(MatterportConfig::resnet101()),
        "vgg16" => Network::Vgg16,
        other => return Err(format!("unknown architecture `{other}`")),
    })
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let input = args.next().map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/keras/seed001.h5")
    });
    let name = args.next().unwrap_or_else(|| "seed001".into());
    let network = network(&name)?;
    let output = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join(format!("{name}.safetensors")));

    let (kind, layers) = read_keras_file(&input)?;
    println!("{} ({kind:?}): {} layers", input.display(), layers.len());
    for layer in layers.iter().take(6) {
        let shapes: Vec<_> = layer.weights.iter().map(|w| (&w.name, &w.shape)).collect();
        println!("  {:<28} {shapes:?}", layer.name);
    }
    if layers.len() > 6 {
        println!("  … {} more", layers.len() - 6);
    }
    let ported =
        port(&input, &network.keras_layout(), &network.tensor_shapes()?, &PortOptions::default())?;
    write_safetensors(&ported, &output)?;
    println!(
        "ported {} tensors to {} (kernels HWIO → OIHW)",
        ported.tensors.len(),
        output.display()
    );
    Ok(())
}
