//! The one call into the `gemm` crate, behind a safe, length-checked signature.

// `gemm::gemm` takes raw pointers and strides; the assertions below check that every element
// the call reads or writes lies inside the slices it was given.
#![allow(unsafe_code)]

/// `c = a · b` for row-major `a: [m, k]`, `b: [k, n]`, `c: [m, n]` (`c` overwritten), on the
/// calling thread only: callers split rows over threads themselves, so that a row's bits never
/// depend on the thread count.
pub(crate) fn matmul(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n, "matmul: short slice");
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        c[..m * n].fill(0.0);
        return;
    }
    // SAFETY: with unit column strides and row strides k (a), n (b), n (c), the call touches
    // a[..m·k], b[..k·n] and c[..m·n], all in bounds by the assertion above; `c` is borrowed
    // mutably and does not alias `a` or `b`. `read_dst = false`: `c`'s old values are not read.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            n as isize,
            0.0,
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
        matmul(2, 3, 2, &[1., 2., 3., 4., 5., 6.], &[1., 0., 0., 1., 1., 1.], &mut c);
        assert_eq!(c, [4., 5., 10., 11.]);
        matmul(2, 0, 2, &[], &[], &mut c);
        assert_eq!(c, [0.; 4]);
    }
}
