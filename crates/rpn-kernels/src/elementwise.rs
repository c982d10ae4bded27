//! The elementwise steps of a ResNet block in training: `relu(a + b)` and its gradient mask.

use crate::{KernelError, Workers};

/// Values per block of work.
const BLOCK: usize = 1 << 16;

/// `out[i] = f(a[i], b[i])` in blocks over the threads, after checking that `b` (named
/// `b_name`) and `out` (named `out_name`) have `a`'s length.
fn zip_map(
    a: &[f32],
    (b, b_name): (&[f32], &'static str),
    (out, out_name): (&mut [f32], &'static str),
    workers: &Workers,
    f: impl Fn(f32, f32) -> f32 + Sync,
) -> Result<(), KernelError> {
    for (what, len) in [(b_name, b.len()), (out_name, out.len())] {
        if len != a.len() {
            return Err(KernelError::Invalid {
                what: "elementwise",
                detail: format!("{what} has {len} values, expected {}", a.len()),
            });
        }
    }
    workers.for_each_block(out, 1, BLOCK, |first, block, _| {
        let (a, b) = (&a[first..first + block.len()], &b[first..first + block.len()]);
        for ((o, &x), &y) in block.iter_mut().zip(a).zip(b) {
            *o = f(x, y);
        }
    });
    Ok(())
}

/// `out = max(a + b, 0)`: a residual block's sum and final ReLU in one pass.
pub fn add_relu(
    a: &[f32],
    b: &[f32],
    out: &mut [f32],
    workers: &Workers,
) -> Result<(), KernelError> {
    zip_map(a, (b, "second operand"), (out, "output"), workers, |x, y| (x + y).max(0.0))
}

/// `out = dy` where the ReLU's output `y` is positive, 0 elsewhere (its gradient).
pub fn relu_backward(
    y: &[f32],
    dy: &[f32],
    out: &mut [f32],
    workers: &Workers,
) -> Result<(), KernelError> {
    zip_map(y, (dy, "output gradient"), (out, "input gradient"), workers, |v, d| {
        if v > 0.0 {
            d
        } else {
            0.0
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_relu_and_its_gradient_by_hand() {
        let workers = Workers::new(2);
        let mut y = [0.0; 4];
        add_relu(&[1.0, -2.0, 0.5, -0.5], &[1.0, 1.0, -1.0, 0.5], &mut y, &workers).unwrap();
        assert_eq!(y, [2.0, 0.0, 0.0, 0.0]);
        let mut g = [9.0; 4];
        relu_backward(&y, &[1.0, 2.0, 3.0, 4.0], &mut g, &workers).unwrap();
        assert_eq!(g, [1.0, 0.0, 0.0, 0.0]);
        let err = add_relu(&[1.0; 3], &[1.0; 2], &mut [0.0; 3], &workers).unwrap_err();
        assert!(err.to_string().contains("second operand has 2 values, expected 3"), "{err}");
    }
}
