//! The kernels' one error type.

use crate::{Nhwc, Padding};

/// Why a kernel refused its arguments. Every variant names the values it refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KernelError {
    /// A slice is shorter or longer than its shape says.
    #[error("{what}: shape {shape:?} needs {expected} values, the slice has {found}")]
    Length {
        /// Which argument.
        what: &'static str,
        /// Its shape.
        shape: Nhwc,
        /// `shape`'s element count.
        expected: usize,
        /// The slice's length.
        found: usize,
    },
    /// The input's channels differ from the kernel's.
    #[error("the kernel takes {expected} input channels, the input has {found}")]
    Channels {
        /// The kernel's input channels.
        expected: usize,
        /// The input's channels.
        found: usize,
    },
    /// The window does not fit the padded input.
    #[error(
        "a {kernel_h}×{kernel_w} window does not fit a {height}×{width} input padded by {padding:?}"
    )]
    TooSmall {
        /// Window height.
        kernel_h: usize,
        /// Window width.
        kernel_w: usize,
        /// Input height.
        height: usize,
        /// Input width.
        width: usize,
        /// The padding.
        padding: Padding,
    },
    /// Sizes whose product overflows `usize`.
    #[error("shape {0:?} has more elements than fit in memory")]
    Overflow(Nhwc),
    /// A malformed kernel description (zero sizes, wrong weight counts, padding ≥ window).
    #[error("invalid {what}: {detail}")]
    Invalid {
        /// Which kernel.
        what: &'static str,
        /// What is wrong, with the values.
        detail: String,
    },
}
