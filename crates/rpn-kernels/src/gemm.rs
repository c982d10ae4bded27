//! The one call into the `gemm` crate, behind a safe, length-checked signature: the training
//! gradients' products, whose operands change every step (the forward pass multiplies by weights
//! packed once, in `panel_gemm.rs`).

// `gemm::gemm` takes raw pointers and strides; the assertions below check that every element
// the call reads or writes lies inside the slices it was given.
#![allow(unsafe_code)]

/// A read-only matrix view: element `(i, j)` is `data[i·row_stride + j·col_stride]`. Transposes
/// are views too (swap the strides), so one GEMM entry point serves `a·b`, `aᵀ·b` and `a·bᵀ`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MatRef<'a> {
    pub(crate) data: &'a [f32],
    pub(crate) row_stride: usize,
    pub(crate) col_stride: usize,
}

impl<'a> MatRef<'a> {
    /// A row-major `[rows, cols]` matrix (`row_stride = cols`).
    pub(crate) fn row_major(data: &'a [f32], cols: usize) -> Self {
        Self { data, row_stride: cols, col_stride: 1 }
    }

    /// The transpose of a row-major matrix with `cols` columns.
    pub(crate) fn transposed(data: &'a [f32], cols: usize) -> Self {
        Self { data, row_stride: 1, col_stride: cols }
    }

    /// Panics unless every element of a `rows × cols` view lies inside `data`.
    fn assert_fits(&self, rows: usize, cols: usize, what: &str) {
        if rows == 0 || cols == 0 {
            return;
        }
        let last = (rows - 1) * self.row_stride + (cols - 1) * self.col_stride;
        assert!(last < self.data.len(), "matmul: {what} view {rows}×{cols} is out of bounds");
    }
}

/// `c = a · b` (`accumulate = false`) or `c += a · b` for views `a: m × k`, `b: k × n` and a
/// row-major `c: [m, n]`, on the calling thread only. The summation order depends on the sizes
/// alone.
pub(crate) fn matmul_views(
    m: usize,
    k: usize,
    n: usize,
    a: MatRef<'_>,
    b: MatRef<'_>,
    c: &mut [f32],
    accumulate: bool,
) {
    a.assert_fits(m, k, "left");
    b.assert_fits(k, n, "right");
    assert!(c.len() >= m * n, "matmul: short output slice");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            c[..m * n].fill(0.0);
        }
        return;
    }
    // SAFETY: `gemm` reads a(i, j) at `a.data + i·row_stride + j·col_stride` for i < m, j < k
    // (and likewise b for k × n), all in bounds by `assert_fits`; it writes c[..m·n] (unit column
    // stride, row stride n), in bounds by the assertion above. `c` is borrowed mutably and does
    // not alias `a` or `b`. With `read_dst = false` c's old values are not read; with `true` they
    // are scaled by 1 and the product added.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_product_by_hand() {
        // [[1, 2, 3], [4, 5, 6]] · [[1, 0], [0, 1], [1, 1]] = [[4, 5], [10, 11]]
        let mut c = [f32::NAN; 4];
        let (a, b) = ([1., 2., 3., 4., 5., 6.], [1., 0., 0., 1., 1., 1.]);
        let (a, b) = (MatRef::row_major(&a, 3), MatRef::row_major(&b, 2));
        matmul_views(2, 3, 2, a, b, &mut c, false);
        assert_eq!(c, [4., 5., 10., 11.]);
        let empty = MatRef::row_major(&[], 0);
        matmul_views(2, 0, 2, empty, empty, &mut c, false);
        assert_eq!(c, [0.; 4]);
    }

    /// Transposed views and accumulation: aᵀ·b with a = [[1, 2], [3, 4], [5, 6]] (3×2 stored
    /// row-major), b = [[1], [1], [1]], added onto c = [10, 20].
    #[test]
    fn transposed_view_accumulates() {
        let a = [1., 2., 3., 4., 5., 6.];
        let mut c = [10., 20.];
        matmul_views(
            2,
            3,
            1,
            MatRef::transposed(&a, 2),
            MatRef::row_major(&[1.; 3], 1),
            &mut c,
            true,
        );
        assert_eq!(c, [19., 32.]);
    }

    #[test]
    #[should_panic(expected = "out of bounds")]
    fn views_past_the_slice_panic() {
        let mut c = [0.; 4];
        matmul_views(
            2,
            3,
            2,
            MatRef::transposed(&[0.; 5], 2),
            MatRef::row_major(&[0.; 6], 2),
            &mut c,
            false,
        );
    }
}
