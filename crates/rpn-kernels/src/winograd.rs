//! Winograd F(2×2, 3×3) and F(4×4, 3×3) for stride-1 3×3 convolutions on NHWC inputs (Lavin &
//! Gray, 2015).
//!
//! Each 2×2 block of outputs ("tile") comes from a 4×4 input patch `d`:
//! `Y = Aᵀ [ (G g Gᵀ) ⊙ (Bᵀ d B) ] A`, summed over input channels. With the transformed
//! weights `U[ξ] = (G g Gᵀ)[ξ]` stored as 16 `[C, O]` matrices and the transformed patches
//! `V[ξ] = (Bᵀ d B)[ξ]` as 16 `[tiles, C]` matrices, the channel sum is 16 GEMMs
//! `M[ξ] = V[ξ] · U[ξ]`: 16 multiply-adds per 4 outputs instead of 36, 2.25× fewer. The
//! transforms are additions and halvings only, so the result stays within a few ulp of the
//! direct sum (tested against it at 1e-5).
//!
//! On larger maps the forward pass uses F(4×4, 3×3) ([`TileSize::for_output`]): each 4×4 block
//! of outputs comes from a 6×6 patch, 36 GEMMs of 36 multiply-adds per 16 outputs instead of
//! 144, 4× fewer (1.78× fewer than F(2×2)). Its transforms multiply by 2, 4, 5 and 8 (exact) and
//! its weights by 1/4, 1/6, 1/12 and 1/24 (rounded once, in `f64`), so it is a little less exact
//! than F(2×2): within 1e-4 of the direct sum's scale (tested). The gradients keep F(2×2).
//!
//! Work is cut into blocks of whole tile rows counted across the batch (a block may end in one
//! image and go on in the next: on 8×8 maps an image has only 16 tiles, too few rows for each
//! block's pass over all the transformed weights), sized by the layer's shape only: the same bits
//! on any thread count, like the GEMM path.

use crate::gemm::{matmul_views, MatRef};
use crate::panel_gemm::{grouped_chunk, grouped_len, matmul_grouped, Finish, PackedMatrix, CHUNK};
use crate::workers::{block_size, scratch_slice};
use crate::Nhwc;

/// Tiles per block of work (rounded to whole tile rows): the block's `V` and `M` matrices
/// (`16 · tiles · (C + O)` values, 6 MiB at C = 256, O = 512) stay in the shared cache, and the
/// 16 GEMMs get enough rows for their pass over the transformed weights.
const TILES_PER_BLOCK: usize = 192;
/// [`TILES_PER_BLOCK`] for F(4×4, 3×3), whose tiles hold 4× the outputs and 2.25× the
/// transformed values.
const TILES_PER_BLOCK_4X4: usize = 96;

/// The output tile of a Winograd pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TileSize {
    /// F(2×2, 3×3): 4×4 patches, 16 transformed points.
    Two,
    /// F(4×4, 3×3): 6×6 patches, 36 transformed points.
    Four,
}

impl TileSize {
    /// Outputs per tile side.
    pub(crate) fn side(self) -> usize {
        match self {
            Self::Two => 2,
            Self::Four => 4,
        }
    }

    /// Transformed points per tile (GEMMs per block).
    pub(crate) fn points(self) -> usize {
        (self.side() + 2) * (self.side() + 2)
    }

    /// The forward pass's tile for an output map: 4×4 where both sides are at least
    /// [`MIN_SIDE_4X4`], else 2×2 (on small maps most 4×4 tiles would hang over the edge, and
    /// blocks would get too few tiles).
    pub(crate) fn for_output(out: Nhwc) -> Self {
        if out.height >= MIN_SIDE_4X4 && out.width >= MIN_SIDE_4X4 {
            Self::Four
        } else {
            Self::Two
        }
    }
}

/// The smallest output side that runs F(4×4, 3×3).
const MIN_SIDE_4X4: usize = 16;

/// Transformed 3×3 weights for `tile`: 16 or 36 matrices `[C, O]`.
pub(crate) fn transform_weights_for(
    tile: TileSize,
    packed: &[f32],
    in_channels: usize,
    out_channels: usize,
) -> Vec<f32> {
    match tile {
        TileSize::Two => transform_weights(packed, in_channels, out_channels),
        TileSize::Four => transform_weights_4x4(packed, in_channels, out_channels),
    }
}

/// `G g` for one column of a 3×3 kernel, F(4×4, 3×3)'s `G` (6 × 3).
fn g_4x4([g0, g1, g2]: [f64; 3]) -> [f64; 6] {
    [
        g0 / 4.0,
        -(g0 + g1 + g2) / 6.0,
        -(g0 - g1 + g2) / 6.0,
        g0 / 24.0 + g1 / 12.0 + g2 / 6.0,
        g0 / 24.0 - g1 / 12.0 + g2 / 6.0,
        g2,
    ]
}

/// Transformed 3×3 weights for F(4×4, 3×3): 36 matrices `[C, O]`, matrix `ξ = 6i + j`.
fn transform_weights_4x4(packed: &[f32], c_n: usize, o_n: usize) -> Vec<f32> {
    let mut u = vec![0f32; 36 * c_n * o_n];
    for c in 0..c_n {
        for o in 0..o_n {
            let g = |ky: usize, kx: usize| f64::from(packed[((ky * 3 + kx) * c_n + c) * o_n + o]);
            // G g: 6 rows of 3, then each row · Gᵀ.
            let columns: [[f64; 6]; 3] =
                std::array::from_fn(|kx| g_4x4([g(0, kx), g(1, kx), g(2, kx)]));
            for i in 0..6 {
                let row = g_4x4([columns[0][i], columns[1][i], columns[2][i]]);
                for (j, v) in row.into_iter().enumerate() {
                    u[((6 * i + j) * c_n + c) * o_n + o] = v as f32;
                }
            }
        }
    }
    u
}

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

/// A run of tile rows counted across the batch: global tile row `g` is tile row
/// `g % tile_rows_per_image` of image `g / tile_rows_per_image`, and covers that image's output
/// rows `s·ty .. s·ty + s` for tiles of side `s` (fewer at the bottom edge).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TileRows {
    pub(crate) first: usize,
    pub(crate) count: usize,
}

/// How the transformed inputs `V[ξ]` (`[tiles, C]` each) lie in memory: row-major for the
/// weight gradient's transposed views, grouped for the forward pass's micro-kernel (see
/// `panel_gemm.rs`), which then reads them without copying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    RowMajor,
    Grouped,
}

impl Layout {
    /// Values per matrix.
    fn matrix_len(self, tiles: usize, c_n: usize) -> usize {
        match self {
            Self::RowMajor => tiles * c_n,
            Self::Grouped => grouped_len(tiles, c_n),
        }
    }

    /// Where channels `chunk · 8 ..` of tile `tile` start (8 contiguous values, fewer in the
    /// last chunk).
    fn chunk(self, tile: usize, chunk: usize, c_n: usize) -> usize {
        match self {
            Self::RowMajor => tile * c_n + chunk * CHUNK,
            Self::Grouped => grouped_chunk(tile, chunk, c_n),
        }
    }
}

/// `W` channels of one value, computed together (the compiler vectorises the lane-wise loops).
type Lanes<const W: usize> = [f32; W];

// Plain loops rather than `array::from_fn`, whose closure calls the compiler does not always
// inline.
#[inline(always)]
fn add<const W: usize>(mut a: Lanes<W>, b: Lanes<W>) -> Lanes<W> {
    for k in 0..W {
        a[k] += b[k];
    }
    a
}

#[inline(always)]
fn sub<const W: usize>(mut a: Lanes<W>, b: Lanes<W>) -> Lanes<W> {
    for k in 0..W {
        a[k] -= b[k];
    }
    a
}

/// `a + s·b`, rounded after the product and after the sum (never fused: the same bits
/// whatever the target's SIMD).
#[inline(always)]
fn add_scaled<const W: usize>(mut a: Lanes<W>, s: f32, b: Lanes<W>) -> Lanes<W> {
    for k in 0..W {
        a[k] += s * b[k];
    }
    a
}

/// `Bᵀ d` for one column (or row) of a 6×6 patch (F(4×4, 3×3)), `W` channels at a time:
/// `Bᵀ` rows `[4 0 −5 0 1 0]`, `[0 −4 −4 1 1 0]`, `[0 4 −4 −1 1 0]`, `[0 −2 −1 2 1 0]`,
/// `[0 2 −1 −2 1 0]`, `[0 4 0 −5 0 1]`, with the shared sums computed once.
#[inline(always)]
fn input_transform_6<const W: usize>([d0, d1, d2, d3, d4, d5]: [Lanes<W>; 6]) -> [Lanes<W>; 6] {
    let (d4_minus_d2, d1_minus_d3) = (sub(d4, d2), sub(d1, d3));
    [
        add_scaled(d4_minus_d2, 4.0, sub(d0, d2)),
        add_scaled(add(d3, d4), -4.0, add(d1, d2)),
        add_scaled(sub(d4, d3), 4.0, sub(d1, d2)),
        add_scaled(d4_minus_d2, -2.0, d1_minus_d3),
        add_scaled(d4_minus_d2, 2.0, d1_minus_d3),
        add_scaled(sub(d5, d3), 4.0, d1_minus_d3),
    ]
}

/// `Aᵀ m` for one column (or row) of a tile's 6×6 products (F(4×4, 3×3)): `Aᵀ` rows
/// `[1 1 1 1 1 0]`, `[0 1 −1 2 −2 0]`, `[0 1 1 4 4 0]`, `[0 1 −1 8 −8 1]`.
#[inline(always)]
fn output_transform_6<const W: usize>([m0, m1, m2, m3, m4, m5]: [Lanes<W>; 6]) -> [Lanes<W>; 4] {
    let (plus12, minus12) = (add(m1, m2), sub(m1, m2));
    let (plus34, minus34) = (add(m3, m4), sub(m3, m4));
    [
        add(add(m0, plus12), plus34),
        add_scaled(minus12, 2.0, minus34),
        add_scaled(plus12, 4.0, plus34),
        add(add_scaled(minus12, 8.0, minus34), m5),
    ]
}

/// `Bᵀ d` for one column (or row) of a 4×4 patch, `W` channels at a time.
#[inline(always)]
fn input_transform<const W: usize>([d0, d1, d2, d3]: [Lanes<W>; 4]) -> [Lanes<W>; 4] {
    [sub(d0, d2), add(d1, d2), sub(d2, d1), sub(d1, d3)]
}

/// The 1-D input transform `Bᵀ` of one tile size, applied to `P` values of `W` channels.
trait InputTransform<const P: usize> {
    fn apply<const W: usize>(d: [Lanes<W>; P]) -> [Lanes<W>; P];
}

/// F(2×2, 3×3)'s `Bᵀ` ([`input_transform`]).
struct Patch4;

impl InputTransform<4> for Patch4 {
    #[inline(always)]
    fn apply<const W: usize>(d: [Lanes<W>; 4]) -> [Lanes<W>; 4] {
        input_transform(d)
    }
}

/// F(4×4, 3×3)'s `Bᵀ` ([`input_transform_6`]).
struct Patch6;

impl InputTransform<6> for Patch6 {
    #[inline(always)]
    fn apply<const W: usize>(d: [Lanes<W>; 6]) -> [Lanes<W>; 6] {
        input_transform_6(d)
    }
}

/// Channels `c0 .. c0 + W` of one `P × P` patch `d` transformed, `Bᵀ d B` (`B` from `T`):
/// value `ξ = P·i + j` goes to `v[ξ · matrix_len + at ..][..W]`. `W` is a constant so that
/// every copy is a fixed-size move (a variable one becomes a `memcpy` call).
#[inline(always)]
fn transform_lanes<T: InputTransform<P>, const W: usize, const P: usize>(
    d: &[[&[f32]; P]; P],
    c0: usize,
    v: &mut [f32],
    matrix_len: usize,
    at: usize,
) {
    let load = |pixel: &[f32]| -> Lanes<W> {
        let mut lanes = [0f32; W];
        lanes.copy_from_slice(&pixel[c0..c0 + W]);
        lanes
    };
    // Bᵀ d (each column), then (·) B (each row).
    let mut columns = [[[0f32; W]; P]; P];
    for (j, column) in columns.iter_mut().enumerate() {
        let mut pixels = [[0f32; W]; P];
        for (i, pixel) in pixels.iter_mut().enumerate() {
            *pixel = load(d[i][j]);
        }
        *column = T::apply(pixels);
    }
    for i in 0..P {
        let mut values = [[0f32; W]; P];
        for (j, value) in values.iter_mut().enumerate() {
            *value = columns[j][i];
        }
        for (j, values) in T::apply(values).iter().enumerate() {
            let at = (P * i + j) * matrix_len + at;
            v[at..at + W].copy_from_slice(values);
        }
    }
}

/// Geometry of one layer's Winograd pass.
pub(crate) struct Layer<'a> {
    pub(crate) input: &'a [f32],
    pub(crate) shape: Nhwc,
    pub(crate) out: Nhwc,
    pub(crate) top: usize,
    pub(crate) left: usize,
    /// The output tile: [`TileSize::Two`] for the gradients.
    pub(crate) tile: TileSize,
    /// The `tile.points()` `[C, O]` matrices from [`transform_weights_for`], packed (empty for
    /// the gradient).
    pub(crate) weights: &'a [PackedMatrix],
}

impl Layer<'_> {
    /// Tile rows per image.
    fn tile_rows_per_image(&self) -> usize {
        self.out.height.div_ceil(self.tile.side())
    }

    /// Tiles per tile row.
    pub(crate) fn tile_cols(&self) -> usize {
        self.out.width.div_ceil(self.tile.side())
    }

    /// `(image, tile row in the image)` of global tile row `g`.
    fn locate(&self, g: usize) -> (usize, usize) {
        let per_image = self.tile_rows_per_image();
        (g / per_image, g % per_image)
    }

    /// The global output row (`b·Ho + y`) where global tile row `g` starts; `g` may be one past
    /// the last tile row.
    pub(crate) fn output_row(&self, g: usize) -> usize {
        let (b, ty) = self.locate(g);
        b * self.out.height + self.tile.side() * ty
    }

    /// The batch's tile rows cut into blocks of at most about `target_tiles` tiles (at least one
    /// tile row each), in order, sized by [`block_size`].
    pub(crate) fn blocks(&self, target_tiles: usize) -> Vec<TileRows> {
        let total = self.out.batch * self.tile_rows_per_image();
        let by_size = (target_tiles / self.tile_cols()).max(1);
        let per_block = block_size(total, by_size, 1);
        (0..total)
            .step_by(per_block)
            .map(|first| TileRows { first, count: per_block.min(total - first) })
            .collect()
    }

    /// The forward pass's blocks (about [`TILES_PER_BLOCK`] tiles each, or
    /// [`TILES_PER_BLOCK_4X4`]).
    pub(crate) fn forward_blocks(&self) -> Vec<TileRows> {
        self.blocks(match self.tile {
            TileSize::Two => TILES_PER_BLOCK,
            TileSize::Four => TILES_PER_BLOCK_4X4,
        })
    }

    /// Computes the output of the tile rows `rows` into `block`: output rows
    /// `output_row(rows.first)..output_row(rows.first + rows.count)`, each `[Wo, O]`, finished
    /// by `finish` (its residual laid out like `block`).
    pub(crate) fn block(
        &self,
        rows: TileRows,
        block: &mut [f32],
        finish: Finish<'_>,
        scratch: &mut Vec<f32>,
    ) {
        let (c_n, o_n) = (self.shape.channels, self.out.channels);
        let tiles = rows.count * self.tile_cols();
        let layout = Layout::Grouped;
        let v_len = layout.matrix_len(tiles, c_n);
        let points = self.tile.points();
        assert_eq!(self.weights.len(), points, "winograd: weights for another tile size");
        let (v, m) =
            scratch_slice(scratch, points * (v_len + tiles * o_n)).split_at_mut(points * v_len);
        self.transform_input(rows, v, layout);
        for (xi, weights) in self.weights.iter().enumerate() {
            matmul_grouped(
                tiles,
                &v[xi * v_len..(xi + 1) * v_len],
                weights,
                &mut m[xi * tiles * o_n..(xi + 1) * tiles * o_n],
            );
        }
        self.transform_output(m, rows, block, finish);
    }

    /// `V[ξ][tile][c] = (Bᵀ d B)[ξ]` for the tiles of `rows`, each of the 16 or 36 matrices
    /// `[tiles, C]` in `layout`.
    fn transform_input(&self, rows: TileRows, v: &mut [f32], layout: Layout) {
        match self.tile {
            TileSize::Two => self.transform_patches::<Patch4, 4>(rows, v, layout),
            TileSize::Four => self.transform_patches::<Patch6, 6>(rows, v, layout),
        }
    }

    /// [`Layer::transform_input`] for patches of `P × P` pixels.
    fn transform_patches<T: InputTransform<P>, const P: usize>(
        &self,
        rows: TileRows,
        v: &mut [f32],
        layout: Layout,
    ) {
        let c_n = self.shape.channels;
        let tiles = rows.count * self.tile_cols();
        let matrix_len = layout.matrix_len(tiles, c_n);
        let zeros = vec![0f32; c_n];
        for tile in 0..tiles {
            let d = self.patch::<P>(rows, tile, &zeros);
            // Whole chunks of 8 channels, then any channels left one at a time.
            for chunk in 0..c_n / CHUNK {
                let at = layout.chunk(tile, chunk, c_n);
                transform_lanes::<T, CHUNK, P>(&d, chunk * CHUNK, v, matrix_len, at);
            }
            for c in c_n / CHUNK * CHUNK..c_n {
                let at = layout.chunk(tile, c / CHUNK, c_n) + c % CHUNK;
                transform_lanes::<T, 1, P>(&d, c, v, matrix_len, at);
            }
        }
    }

    /// The `P × P` input pixels (`[C]` each, `P` = the tile's side + 2) of tile `tile` of
    /// `rows`: zeros outside the image.
    fn patch<'s, const P: usize>(
        &'s self,
        rows: TileRows,
        tile: usize,
        zeros: &'s [f32],
    ) -> [[&'s [f32]; P]; P] {
        debug_assert_eq!(P, self.tile.side() + 2);
        let side = self.tile.side();
        let c_n = self.shape.channels;
        let (h, w) = (self.shape.height, self.shape.width);
        let tile_cols = self.tile_cols();
        let (b, ty) = self.locate(rows.first + tile / tile_cols);
        let tx = tile % tile_cols;
        let pixel = |dy: usize, dx: usize| -> &'s [f32] {
            let iy = (side * ty + dy).wrapping_sub(self.top);
            let ix = (side * tx + dx).wrapping_sub(self.left);
            if iy < h && ix < w {
                let at = ((b * h + iy) * w + ix) * c_n;
                &self.input[at..at + c_n]
            } else {
                zeros
            }
        };
        std::array::from_fn(|dy| std::array::from_fn(|dx| pixel(dy, dx)))
    }

    /// `Y = Aᵀ M A` per tile of `rows` into `block` (clipped at the edges), finished there:
    /// `+ bias`, `+ residual`, ReLU.
    fn transform_output(&self, m: &[f32], rows: TileRows, block: &mut [f32], finish: Finish<'_>) {
        match self.tile {
            TileSize::Two => self.transform_output_tiles::<4>(m, rows, block, finish),
            TileSize::Four => self.transform_output_tiles::<16>(m, rows, block, finish),
        }
    }

    /// [`Layer::transform_output`] for tiles of `N` = side² outputs.
    fn transform_output_tiles<const N: usize>(
        &self,
        m: &[f32],
        rows: TileRows,
        block: &mut [f32],
        finish: Finish<'_>,
    ) {
        let (o_n, wo, ho) = (self.out.channels, self.out.width, self.out.height);
        let side = self.tile.side();
        debug_assert_eq!(N, side * side);
        let tile_cols = self.tile_cols();
        let tiles = rows.count * tile_cols;
        let block_start = self.output_row(rows.first);
        for tile in 0..tiles {
            let (r, tx) = (tile / tile_cols, tile % tile_cols);
            let g = rows.first + r;
            let (_, ty) = self.locate(g);
            let first_row = self.output_row(g) - block_start;
            // Where the tile's outputs go in `block`, row by row (none past an edge).
            let targets: [Option<usize>; N] = std::array::from_fn(|k| {
                let (dy, x) = (k / side, side * tx + k % side);
                (side * ty + dy < ho && x < wo).then(|| ((first_row + dy) * wo + x) * o_n)
            });
            let out = OutputTile { m, tiles, tile, o_n, targets, finish };
            // Whole chunks of 8 channels, then any channels left one at a time.
            for o0 in (0..o_n / CHUNK * CHUNK).step_by(CHUNK) {
                out.lanes::<CHUNK>(o0, block);
            }
            for o in o_n / CHUNK * CHUNK..o_n {
                out.lanes::<1>(o, block);
            }
        }
    }
}

/// One tile of `Y = Aᵀ M A` and where its `N` outputs go (4 for F(2×2), 16 for F(4×4)).
struct OutputTile<'a, const N: usize> {
    /// The products `M[ξ]`, `[tiles, O]` each.
    m: &'a [f32],
    tiles: usize,
    tile: usize,
    o_n: usize,
    targets: [Option<usize>; N],
    finish: Finish<'a>,
}

impl<const N: usize> OutputTile<'_, N> {
    /// Channels `o0 .. o0 + W` of product `ξ`.
    #[inline(always)]
    fn product<const W: usize>(&self, xi: usize, o0: usize) -> Lanes<W> {
        let at = (xi * self.tiles + self.tile) * self.o_n + o0;
        let mut lanes = [0f32; W];
        lanes.copy_from_slice(&self.m[at..at + W]);
        lanes
    }

    /// Channels `o0 .. o0 + W`: transformed, finished (bias, residual, ReLU) and stored.
    #[inline(always)]
    fn lanes<const W: usize>(&self, o0: usize, block: &mut [f32]) {
        let mut values = [[0f32; W]; N];
        if N == 4 {
            // Aᵀ m (rows 0..3 of m → 2 rows), then · A (columns).
            let v = |xi: usize| self.product::<W>(xi, o0);
            let mut s0 = [[0f32; W]; 4];
            let mut s1 = [[0f32; W]; 4];
            for j in 0..4 {
                let (m1, m2) = (v(4 + j), v(8 + j));
                s0[j] = add(add(v(j), m1), m2);
                s1[j] = sub(sub(m1, m2), v(12 + j));
            }
            values[..4].copy_from_slice(&[
                add(add(s0[0], s0[1]), s0[2]),
                sub(sub(s0[1], s0[2]), s0[3]),
                add(add(s1[0], s1[1]), s1[2]),
                sub(sub(s1[1], s1[2]), s1[3]),
            ]);
        } else {
            // F(4×4): Aᵀ over the 6 rows of each column, then over the 6 columns of each row.
            let mut columns = [[[0f32; W]; 4]; 6];
            for (j, column) in columns.iter_mut().enumerate() {
                let mut products = [[0f32; W]; 6];
                for (i, p) in products.iter_mut().enumerate() {
                    *p = self.product::<W>(6 * i + j, o0);
                }
                *column = output_transform_6(products);
            }
            for dy in 0..4 {
                let mut row = [[0f32; W]; 6];
                for (j, value) in row.iter_mut().enumerate() {
                    *value = columns[j][dy];
                }
                values[4 * dy..4 * dy + 4].copy_from_slice(&output_transform_6(row));
            }
        }
        let mut bias = [0f32; W];
        bias.copy_from_slice(&self.finish.bias[o0..o0 + W]);
        for (values, target) in values.into_iter().zip(self.targets) {
            let Some(at) = target else { continue };
            let mut y = add(values, bias);
            if let Some(residual) = self.finish.residual {
                let mut r = [0f32; W];
                r.copy_from_slice(&residual[at + o0..at + o0 + W]);
                y = add(y, r);
            }
            if self.finish.relu {
                for y in &mut y {
                    *y = y.max(0.0);
                }
            }
            block[at + o0..at + o0 + W].copy_from_slice(&y);
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
    /// Blocks of work: about [`WEIGHT_GRAD_TILES`] tiles each, in a fixed order.
    pub(crate) fn blocks(&self) -> Vec<TileRows> {
        self.layer.blocks(WEIGHT_GRAD_TILES)
    }

    /// Adds `∂L/∂U` of the tile rows `rows` into `u` (`[16, C, O]`), or writes it there if not
    /// `accumulate`.
    pub(crate) fn accumulate(
        &self,
        rows: TileRows,
        u: &mut [f32],
        scratch: &mut Vec<f32>,
        accumulate: bool,
    ) {
        let (c_n, o_n) = (self.layer.shape.channels, self.layer.out.channels);
        let tiles = rows.count * self.layer.tile_cols();
        let (v, p) =
            scratch_slice(scratch, 16 * tiles * (c_n + o_n)).split_at_mut(16 * tiles * c_n);
        self.layer.transform_input(rows, v, Layout::RowMajor);
        self.transform_output_grad(rows, p);
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

    /// `P[ξ][tile][o] = (A dY Aᵀ)[ξ]` for the tiles of `rows`; output positions past the edge
    /// (odd sizes) count as zero.
    fn transform_output_grad(&self, rows: TileRows, p: &mut [f32]) {
        let out = self.layer.out;
        let o_n = out.channels;
        let tile_cols = self.layer.tile_cols();
        let tiles = rows.count * tile_cols;
        let zeros = vec![0f32; o_n];
        for r in 0..rows.count {
            let (b, ty) = self.layer.locate(rows.first + r);
            for tx in 0..tile_cols {
                let tile = r * tile_cols + tx;
                let grad = |dy: usize, dx: usize| -> &[f32] {
                    let (y, x) = (2 * ty + dy, 2 * tx + dx);
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
