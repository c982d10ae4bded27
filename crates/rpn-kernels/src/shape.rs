//! Shapes and padding.

use crate::KernelError;

/// The shape of an NHWC `f32` buffer: value `((b·H + y)·W + x)·C + c`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Nhwc {
    /// Images in the batch.
    pub batch: usize,
    /// Rows.
    pub height: usize,
    /// Columns.
    pub width: usize,
    /// Channels (innermost).
    pub channels: usize,
}

impl Nhwc {
    /// `[batch, height, width, channels]`.
    pub const fn new(batch: usize, height: usize, width: usize, channels: usize) -> Self {
        Self { batch, height, width, channels }
    }

    /// `batch · height · width`: the rows of the buffer seen as a `[pixels, channels]` matrix.
    pub fn pixels(&self) -> Result<usize, KernelError> {
        self.batch
            .checked_mul(self.height)
            .and_then(|n| n.checked_mul(self.width))
            .ok_or(KernelError::Overflow(*self))
    }

    /// The element count.
    pub fn len(&self) -> Result<usize, KernelError> {
        self.pixels()?.checked_mul(self.channels).ok_or(KernelError::Overflow(*self))
    }

    /// Whether the shape holds no element.
    pub fn is_empty(&self) -> bool {
        self.batch == 0 || self.height == 0 || self.width == 0 || self.channels == 0
    }

    /// Errors unless `data` holds exactly this shape's values.
    pub(crate) fn check(&self, what: &'static str, data: &[f32]) -> Result<(), KernelError> {
        let expected = self.len()?;
        if data.len() != expected {
            return Err(KernelError::Length { what, shape: *self, expected, found: data.len() });
        }
        Ok(())
    }
}

/// Zero rows/columns added around the input before a window slides over it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Padding {
    /// Rows above.
    pub top: usize,
    /// Columns on the left.
    pub left: usize,
    /// Rows below.
    pub bottom: usize,
    /// Columns on the right.
    pub right: usize,
}

impl Padding {
    /// No padding (Keras "valid").
    pub const VALID: Self = Self { top: 0, left: 0, bottom: 0, right: 0 };

    /// `p` on every side (PyTorch's `padding=p`, candle's `Conv2dConfig::padding`).
    pub const fn symmetric(p: usize) -> Self {
        Self { top: p, left: p, bottom: p, right: p }
    }

    /// TensorFlow's "same": the output has `⌈in / stride⌉` rows and columns, and the padding a
    /// window needs is split with the extra row/column at the **bottom/right** (so a 3×3 stride-2
    /// window on an even side pads bottom/right only).
    pub fn tf_same(height: usize, width: usize, kernel: usize, stride: usize) -> Self {
        let split = |side: usize| {
            let out = side.div_ceil(stride.max(1));
            let total = ((out.max(1) - 1) * stride + kernel).saturating_sub(side);
            (total / 2, total - total / 2)
        };
        let ((top, bottom), (left, right)) = (split(height), split(width));
        Self { top, left, bottom, right }
    }

    /// The output side of a `kernel` window with `stride` over `side` padded by `before + after`,
    /// or `None` when the window does not fit.
    pub(crate) fn out_side(
        side: usize,
        before: usize,
        after: usize,
        kernel: usize,
        stride: usize,
    ) -> Option<usize> {
        let padded = side.checked_add(before)?.checked_add(after)?;
        (padded >= kernel && stride > 0 && side > 0).then(|| (padded - kernel) / stride + 1)
    }

    /// The output height and width of a `kh × kw` window with `stride` over `input`.
    pub(crate) fn output(
        &self,
        input: Nhwc,
        kh: usize,
        kw: usize,
        stride: usize,
    ) -> Result<(usize, usize), KernelError> {
        let too_small = KernelError::TooSmall {
            kernel_h: kh,
            kernel_w: kw,
            height: input.height,
            width: input.width,
            padding: *self,
        };
        let ho = Self::out_side(input.height, self.top, self.bottom, kh, stride);
        let wo = Self::out_side(input.width, self.left, self.right, kw, stride);
        match (ho, wo) {
            (Some(ho), Some(wo)) => Ok((ho, wo)),
            _ => Err(too_small),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// TF's rule, worked by hand: 3×3/2 on an even side pads one row at the bottom only; on an
    /// odd side one each way; a 1×1/2 window never pads; stride 1 pads `k/2` each way.
    #[test]
    fn tf_same_puts_the_odd_row_at_the_bottom() {
        assert_eq!(Padding::tf_same(8, 8, 3, 2), Padding { top: 0, left: 0, bottom: 1, right: 1 });
        assert_eq!(Padding::tf_same(7, 6, 3, 2), Padding { top: 1, left: 0, bottom: 1, right: 1 });
        assert_eq!(Padding::tf_same(8, 7, 1, 2), Padding::VALID);
        assert_eq!(Padding::tf_same(5, 9, 3, 1), Padding::symmetric(1));
        assert_eq!(Padding::tf_same(5, 5, 7, 1), Padding::symmetric(3));
    }

    #[test]
    fn overflowing_shapes_are_errors() {
        let huge = Nhwc::new(usize::MAX, 2, 1, 1);
        assert_eq!(huge.len(), Err(KernelError::Overflow(huge)));
    }
}
