//! Trains seed 001 on synthetic shapes for a few steps and prints the losses.
//!
//! ```text
//! cargo run --release -p rpn --example train_shapes -- 50     # steps (default 20)
//! ```

use std::time::Instant;

use rpn::{TrainConfig, Trainer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let steps: usize = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(20);
    let mut trainer = Trainer::seed001(TrainConfig::default())?;
    let start = Instant::now();
    for step in 1..=steps {
        let l = trainer.step()?;
        println!(
            "step {step:>4}  objectness {:.4}  box {:.4}  total {:.4}",
            l.objectness,
            l.box_regression,
            l.total()
        );
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{steps} steps of 20 images in {secs:.1} s ({:.1} images/s)",
        (steps * 20) as f64 / secs
    );
    Ok(())
}
