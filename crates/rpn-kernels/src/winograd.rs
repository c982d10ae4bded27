//! Winograd F(2×2, 3×3) for stride-1 3×3 convolutions on NHWC inputs (Lavin & Gray, 2015).
//!
//! Each 2×2 block of outputs ("tile") comes from a 4×4 input patch `d`:
//! `Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A`, summed over input channels. With the transformed
//! weights `U[ξ] = (G g Gᵀ)[ξ]` stored as 16 `[C, O]` matrices and the transformed patches
//! `V[ξ] = (Bᵀ d B)[ξ]` as 16 `[tiles, C]` matrices, the channel sum is 16 GEMMs
//! `M[ξ] = V[ξ] · U[ξ]`: 16 multiply-adds per 4 outputs instead of 36, 2.25× fewer. The
//! transforms are additions and halvings only, so the result stays within a few ulp of the
//! direct sum (tested against it at 1e-5).
//!
//! Work is cut into blocks of whole tile rows of one image, sized by the layer's shape only:
//! the same bits on any thread count, like the GEMM path.

use crate::gemm::{matmul, matmul_views, MatRef};
use crate::Nhwc;

/// Tiles per block of work (rounded to whole tile rows): the block's `V` and `M` matrices
/// (`16 · tiles · (C + O)` values, 6 MiB at C = 256, O = 512) stay in the shared cache, and the
/// 16 GEMMs get enough rows to pay for packing their weights.
const TILES_PER_BLOCK: usize = 192;

/// Transformed 3×3 weights: 16 matrices `[C, O]`, matrix `ξ = 4i + j`.
pub(crate) fn transform_weights(
    packed: &[f32],
    in_channels: usize,
    out_channels: usize,
) -> Vec<f32> {
    let (c_n, o_n) = (in_channels, out_channels);
    let mut u = vec![0f32; 16 * c_n * o_n];
    for c in 0..c_n {
        for o in 0..o_n {
            let g = |ky: usize, kx: usize| f64::from(packed[((ky * 3 + kx) * c_n + c) * o_n + o]);
            // G g: 4 rows of 3.
            let mut gg = [[0f64; 3]; 4];
            for kx in 0..3 {
                let (g0, g1, g2) = (g(0, kx), g(1, kx), g(2, kx));
                gg[0][kx] = g0;
                gg[1][kx] = 0.5 * (g0 + g1 + g2);
                gg[2][kx] = 0.5 * (g0 - g1 + g2);
                gg[3][kx] = g2;
            }
            for (i, [a0, a1, a2]) in gg.into_iter().enumerate() {
                let row = [a0, 0.5 * (a0 + a1 + a2), 0.5 * (a0 - a1 + a2), a2];
                for (j, v) in row.into_iter().enumerate() {
                    u[((4 * i + j) * c_n + c) * o_n + o] = v as f32;
                }
            }
        }
    }
    u
}

/// Output rows per block for an output `width` wide (a multiple of 2: whole tile rows).
pub(crate) fn rows_per_block(width: usize) -> usize {
    2 * (TILES_PER_BLOCK / width.div_ceil(2)).max(1)
}

/// Geometry of one layer's Winograd pass.
pub(crate) struct Layer<'a> {
    pub(crate) input: &'a [f32],
    pub(crate) shape: Nhwc,
    pub(crate) out: Nhwc,
    pub(crate) top: usize,
    pub(crate) left: usize,
    /// `[16, C, O]` from [`transform_weights`].
    pub(crate) weights: &'a [f32],
}

impl Layer<'_> {
    /// Computes output rows `first_row..first_row + rows` of image `b` (before the epilogue)
    /// into `block` (`[rows, Wo, O]`), using `scratch`.
    pub(crate) fn block(
        &self,
        b: usize,
        first_row: usize,
        block: &mut [f32],
        scratch: &mut Vec<f32>,
    ) {
        let (c_n, o_n) = (self.shape.channels, self.out.channels);
        let wo = self.out.width;
        let rows = block.len() / (wo * o_n);
        let (tile_rows, tile_cols) = (rows.div_ceil(2), wo.div_ceil(2));
        let tiles = tile_rows * tile_cols;
        scratch.resize(16 * tiles * (c_n + o_n), 0.0);
        let (v, m) = scratch.split_at_mut(16 * tiles * c_n);
        self.transform_input(b, first_row, tile_rows, tile_cols, v);
        for xi in 0..16 {
            matmul(
                tiles,
                c_n,
                o_n,
                &v[xi * tiles * c_n..(xi + 1) * tiles * c_n],
                &self.weights[xi * c_n * o_n..(xi + 1) * c_n * o_n],
                &mut m[xi * tiles * o_n..(xi + 1) * tiles * o_n],
            );
        }
        transform_output(m, tiles, tile_cols, o_n, wo, rows, block);
    }

    /// `V[ξ][tile][c] = (Bᵀ d B)[ξ]` for the tiles of output rows `first_row..`.
    fn transform_input(
        &self,
        b: usize,
        first_row: usize,
        tile_rows: usize,
        tile_cols: usize,
        v: &mut [f32],
    ) {
        let c_n = self.shape.channels;
        let tiles = tile_rows * tile_cols;
        let zeros = vec![0f32; c_n];
        let (h, w) = (self.shape.height, self.shape.width);
        for ty in 0..tile_rows {
            for tx in 0..tile_cols {
                let tile = ty * tile_cols + tx;
                // The 16 input pixels of the patch (zeros outside the image).
                let pixel = |dy: usize, dx: usize| -> &[f32] {
                    let iy = (first_row + 2 * ty + dy).wrapping_sub(self.top);
                    let ix = (2 * tx + dx).wrapping_sub(self.left);
                    if iy < h && ix < w {
                        let at = ((b * h + iy) * w + ix) * c_n;
                        &self.input[at..at + c_n]
                    } else {
                        &zeros
                    }
                };
                let d: [[&[f32]; 4]; 4] =
                    std::array::from_fn(|dy| std::array::from_fn(|dx| pixel(dy, dx)));
                for c in 0..c_n {
                    // Bᵀ d (rows), then (·) B (columns).
                    let mut u = [[0f32; 4]; 4];
                    for j in 0..4 {
                        let (d0, d1, d2, d3) = (d[0][j][c], d[1][j][c], d[2][j][c], d[3][j][c]);
                        u[0][j] = d0 - d2;
                        u[1][j] = d1 + d2;
                        u[2][j] = d2 - d1;
                        u[3][j] = d1 - d3;
                    }
                    for (i, [u0, u1, u2, u3]) in u.into_iter().enumerate() {
                        let row = [u0 - u2, u1 + u2, u2 - u1, u1 - u3];
                        for (j, value) in row.into_iter().enumerate() {
                            v[((4 * i + j) * tiles + tile) * c_n + c] = value;
                        }
                    }
                }
            }
        }
    }
}

/// `Y = Aᵀ M A` per tile into the block's `[rows, Wo, O]` (clipped at odd edges).
fn transform_output(
    m: &[f32],
    tiles: usize,
    tile_cols: usize,
    o_n: usize,
    wo: usize,
    rows: usize,
    block: &mut [f32],
) {
    let mut quad = vec![0f32; 4 * o_n];
    for tile in 0..tiles {
        let ms: [&[f32]; 16] =
            std::array::from_fn(|xi| &m[(xi * tiles + tile) * o_n..(xi * tiles + tile + 1) * o_n]);
        let (q00, rest) = quad.split_at_mut(o_n);
        let (q01, rest) = rest.split_at_mut(o_n);
        let (q10, q11) = rest.split_at_mut(o_n);
        for o in 0..o_n {
            let v = |xi: usize| ms[xi][o];
            // Aᵀ m (rows 0..3 of m → 2 rows), then · A (columns).
            let s0: [f32; 4] = std::array::from_fn(|j| v(j) + v(4 + j) + v(8 + j));
            let s1: [f32; 4] = std::array::from_fn(|j| v(4 + j) - v(8 + j) - v(12 + j));
            q00[o] = s0[0] + s0[1] + s0[2];
            q01[o] = s0[1] - s0[2] - s0[3];
            q10[o] = s1[0] + s1[1] + s1[2];
            q11[o] = s1[1] - s1[2] - s1[3];
        }
        let (ty, tx) = (tile / tile_cols, tile % tile_cols);
        for (k, values) in quad.chunks_exact(o_n).enumerate() {
            let (y, x) = (2 * ty + k / 2, 2 * tx + k % 2);
            if y < rows && x < wo {
                block[(y * wo + x) * o_n..(y * wo + x + 1) * o_n].copy_from_slice(values);
            }
        }
    }
}

/// Tiles per block of the weight gradient: its GEMMs reduce over the tiles, and each adds into a
/// `C × O` sum, so longer reductions than the forward pass's pay for that traffic.
const WEIGHT_GRAD_TILES: usize = 384;

/// The weight gradient of a Winograd layer, in the transformed domain (the same identity run
/// backwards): with `V = Bᵀ d B` per tile as in the forward pass and `P = A dY Aᵀ` the 4×4
/// transform of the tile's 2×2 output gradient, `∂L/∂U[ξ] = Σ_tiles V[ξ]ᵀ · P[ξ]` is 16 GEMMs
/// `[C, tiles] · [tiles, O]`, and `∂L/∂g = Gᵀ (∂L/∂U) G` per channel pair: 2.25× fewer
/// multiply-adds than `windowsᵀ · dy`.
pub(crate) struct WeightGradient<'a> {
    /// The layer's input and geometry (its `weights` are not read).
    pub(crate) layer: Layer<'a>,
    /// `∂L/∂y`, the output's shape.
    pub(crate) grad_out: &'a [f32],
}

impl WeightGradient<'_> {
    /// Output rows per block: whole tile rows, about [`WEIGHT_GRAD_TILES`] tiles.
    fn rows_per_block(width: usize) -> usize {
        2 * (WEIGHT_GRAD_TILES / width.div_ceil(2)).max(1)
    }

    /// Blocks of work: `(image, first output row)`, whole tile rows, in a fixed order.
    pub(crate) fn blocks(&self) -> Vec<(usize, usize)> {
        let rows = Self::rows_per_block(self.layer.out.width);
        let mut blocks = Vec::new();
        for b in 0..self.layer.out.batch {
            blocks.extend((0..self.layer.out.height).step_by(rows).map(|first| (b, first)));
        }
        blocks
    }

    /// Adds `∂L/∂U` of one block (`(image, first row)`) into `u` (`[16, C, O]`), or writes it
    /// there if not `accumulate`.
    pub(crate) fn accumulate(
        &self,
        (b, first_row): (usize, usize),
        u: &mut [f32],
        scratch: &mut Vec<f32>,
        accumulate: bool,
    ) {
        let out = self.layer.out;
        let (c_n, o_n) = (self.layer.shape.channels, out.channels);
        let rows = Self::rows_per_block(out.width).min(out.height - first_row);
        let (tile_rows, tile_cols) = (rows.div_ceil(2), out.width.div_ceil(2));
        let tiles = tile_rows * tile_cols;
        scratch.resize(16 * tiles * (c_n + o_n), 0.0);
        let (v, p) = scratch.split_at_mut(16 * tiles * c_n);
        self.layer.transform_input(b, first_row, tile_rows, tile_cols, v);
        self.transform_output_grad(b, first_row, tile_rows, tile_cols, p);
        for xi in 0..16 {
            matmul_views(
                c_n,
                tiles,
                o_n,
                MatRef::transposed(&v[xi * tiles * c_n..(xi + 1) * tiles * c_n], c_n),
                MatRef::row_major(&p[xi * tiles * o_n..(xi + 1) * tiles * o_n], o_n),
                &mut u[xi * c_n * o_n..(xi + 1) * c_n * o_n],
                accumulate,
            );
        }
    }

    /// `P[ξ][tile][o] = (A dY Aᵀ)[ξ]` for the tiles of output rows `first_row..` of image `b`;
    /// output positions past the edge (odd sizes) count as zero.
    fn transform_output_grad(
        &self,
        b: usize,
        first_row: usize,
        tile_rows: usize,
        tile_cols: usize,
        p: &mut [f32],
    ) {
        let out = self.layer.out;
        let o_n = out.channels;
        let tiles = tile_rows * tile_cols;
        let zeros = vec![0f32; o_n];
        for ty in 0..tile_rows {
            for tx in 0..tile_cols {
                let tile = ty * tile_cols + tx;
                let grad = |dy: usize, dx: usize| -> &[f32] {
                    let (y, x) = (first_row + 2 * ty + dy, 2 * tx + dx);
                    if y < out.height && x < out.width {
                        let at = ((b * out.height + y) * out.width + x) * o_n;
                        &self.grad_out[at..at + o_n]
                    } else {
                        &zeros
                    }
                };
                let (g00, g01, g10, g11) = (grad(0, 0), grad(0, 1), grad(1, 0), grad(1, 1));
                for o in 0..o_n {
                    // A dY: rows [y0, y0 + y1, y0 − y1, −y1]; then each row [a, b] → [a, a + b, a − b, −b].
                    let rows = [
                        [g00[o], g01[o]],
                        [g00[o] + g10[o], g01[o] + g11[o]],
                        [g00[o] - g10[o], g01[o] - g11[o]],
                        [-g10[o], -g11[o]],
                    ];
                    for (i, [a, c]) in rows.into_iter().enumerate() {
                        for (j, value) in [a, a + c, a - c, -c].into_iter().enumerate() {
                            p[((4 * i + j) * tiles + tile) * o_n + o] = value;
                        }
                    }
                }
            }
        }
    }
}

/// `∂L/∂g = Gᵀ (∂L/∂U) G` for every channel pair: `u` (`[16, C, O]`) → packed `[9·C, O]`
/// (row `(ky·3 + kx)·C + c`).
pub(crate) fn untransform_weight_grad(u: &[f32], c_n: usize, o_n: usize) -> Vec<f32> {
    let mut packed = vec![0f32; 9 * c_n * o_n];
    for c in 0..c_n {
        for o in 0..o_n {
            let at = |xi: usize| f64::from(u[(xi * c_n + c) * o_n + o]);
            // Gᵀ rows: [1, ½, ½, 0], [0, ½, −½, 0], [0, ½, ½, 1] — first on rows, then columns.
            let mut q = [[0f64; 4]; 3];
            for j in 0..4 {
                let (p0, p1, p2, p3) = (at(j), at(4 + j), at(8 + j), at(12 + j));
                q[0][j] = p0 + 0.5 * (p1 + p2);
                q[1][j] = 0.5 * (p1 - p2);
                q[2][j] = 0.5 * (p1 + p2) + p3;
            }
            for (ky, [p0, p1, p2, p3]) in q.into_iter().enumerate() {
                let row = [p0 + 0.5 * (p1 + p2), 0.5 * (p1 - p2), 0.5 * (p1 + p2) + p3];
                for (kx, value) in row.into_iter().enumerate() {
                    packed[((ky * 3 + kx) * c_n + c) * o_n + o] = value as f32;
                }
            }
        }
    }
    packed
}
