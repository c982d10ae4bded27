//! The RPN losses of every convention on one toy batch, with their gradients.
//!
//! ```text
//! cargo run --release -p rpn-loss --example losses
//! ```

use candle_core::{Device, Tensor, Var};
use rpn_loss::{matterport_losses, sigmoid_losses, Normalization};

fn main() -> candle_core::Result<()> {
    let dev = Device::Cpu;
    // Two images, six anchors each.
    // Matterport / seed 001: rpn_match 1 positive, −1 negative, 0 neutral.
    let rpn_match = Tensor::new(&[[1i64, -1, 0, -1, 1, 0], [0, -1, -1, 0, 0, 1]], &dev)?;
    let logits = Var::randn(0f32, 1.0, (2, 6, 2), &dev)?;
    let deltas = Var::randn(0f32, 0.5, (2, 6, 4), &dev)?;
    // Positives' target deltas packed at the top of each image's rows (Matterport's rpn_bbox).
    let target_bbox = Tensor::randn(0f32, 0.5, (2, 4, 4), &dev)?;
    let m = matterport_losses(&rpn_match, &logits, &target_bbox, &deltas)?;
    let grads = m.total()?.backward()?;
    println!(
        "Matterport / seed 001: objectness {:.4}, box {:.4}; |d logits| = {:.4}",
        m.objectness.to_scalar::<f32>()?,
        m.box_regression.to_scalar::<f32>()?,
        grads.get(&logits).map_or(Ok(0.0), |g| g.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>())?,
    );

    // torchvision / detectron2: one logit per anchor, labels 1 / 0 / −1 (ignored).
    let labels = Tensor::new(&[[1i64, 0, -1, 0, 1, -1], [-1, 0, 0, -1, -1, 1]], &dev)?;
    let objectness = Tensor::randn(0f32, 1.0, (2, 6), &dev)?;
    let target_deltas = Tensor::randn(0f32, 0.5, (2, 6, 4), &dev)?;
    for (name, norm) in [
        ("torchvision (means, smooth L1 β = 1/9)", Normalization::Torchvision),
        (
            "detectron2 (sums / (256·N), L1)",
            Normalization::Detectron2 { batch_size_per_image: 256 },
        ),
    ] {
        let l = sigmoid_losses(&labels, &objectness, &deltas, &target_deltas, norm)?;
        println!(
            "{name}: objectness {:.4}, box {:.4}",
            l.objectness.to_scalar::<f32>()?,
            l.box_regression.to_scalar::<f32>()?
        );
    }
    Ok(())
}
