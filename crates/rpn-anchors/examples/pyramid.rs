//! Prints an anchor pyramid: levels, grids, strides, counts and the first anchors of each level.
//!
//! ```text
//! cargo run --release -p rpn-anchors --example pyramid                 # Matterport FPN at 1024×1024
//! cargo run --release -p rpn-anchors --example pyramid -- torchvision 800 1344
//! ```
//! Presets: `matterport` (default), `torchvision`, `detectron2`, `seed000`, `seed001`.

use std::process::ExitCode;

use rpn_anchors::{AnchorConfig, ImageSize};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("error: {message}");
            eprintln!(
                "usage: pyramid [matterport|torchvision|detectron2|seed000|seed001] [HEIGHT WIDTH]"
            );
            ExitCode::FAILURE
        }
    }
}

fn run(args: &[String]) -> Result<(), String> {
    let preset = args.first().map(String::as_str).unwrap_or("matterport");
    let (config, default_side) = match preset {
        "matterport" => (AnchorConfig::matterport_fpn(), 1024),
        "torchvision" => (AnchorConfig::torchvision_fpn(), 800),
        "detectron2" => (AnchorConfig::detectron2_fpn(), 800),
        "seed000" => (AnchorConfig::seed000(), 64),
        "seed001" => (AnchorConfig::seed001(), 64),
        other => return Err(format!("unknown preset `{other}`")),
    };
    let side = |i: usize| -> Result<u32, String> {
        args.get(i).map_or(Ok(default_side), |s| {
            s.parse().map_err(|e| format!("bad image side `{s}`: {e}"))
        })
    };
    let image = ImageSize::new(side(1)?, side(2)?).map_err(|e| e.to_string())?;
    let anchors = config.generate(image).map_err(|e| e.to_string())?;

    println!(
        "{preset} anchor pyramid for a {}x{} image (height x width)",
        image.height, image.width
    );
    println!(
        "ratios {:?} ({:?}), cell order {:?}, offset {}",
        config.ratios, config.ratio_convention, config.cell_order, config.offset
    );
    println!(
        "{:<6} {:>10} {:>9} {:>6} {:>9}  first anchor (x1, y1, x2, y2)",
        "level", "grid", "stride", "A", "anchors"
    );
    for (l, level) in anchors.levels().iter().enumerate() {
        let first = anchors.boxes()[level.start];
        println!(
            "{:<6} {:>10} {:>9} {:>6} {:>9}  ({:.3}, {:.3}, {:.3}, {:.3})",
            l,
            format!("{}x{}", level.shape.height, level.shape.width),
            format!("{}x{}", level.stride_y, level.stride_x),
            level.anchors_per_cell,
            level.len(),
            first.x1,
            first.y1,
            first.x2,
            first.y2,
        );
    }
    println!("total  {} anchors, order level -> y -> x -> anchor", anchors.len());
    Ok(())
}
