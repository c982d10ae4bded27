//! NHWC convolution as GEMM over blocks of output rows, with a fused epilogue.
//!
//! An NHWC input is a `[B·H·W, C]` matrix. Output pixel `(b, oy, ox)` is row `(b·Ho + oy)·Wo + ox`
//! of `[B·Ho·Wo, O]`, and equals its gathered window — `kh·kw·C` values, tap `(ky, kx)` at
//! columns `(ky·kw + kx)·C ..` — times the packed weights `[kh·kw·C, O]` (Keras' HWIO order).
//! A 1×1 stride-1 unpadded convolution needs no gathering at all: the input rows are the
//! windows. Every other shape gathers one block of rows at a time into a per-thread scratch
//! buffer (im2col in pieces that stay in cache), multiplies it, and finishes the block with the
//! epilogue (bias, residual, ReLU) before the next: each output value is written once.

use std::sync::OnceLock;

use crate::panel_gemm::{matmul_packed, Finish, PackedMatrix, MICRO_KERNEL_ROWS};
use crate::winograd::{self, TileSize};
use crate::workers::{block_size, scratch_slice};
use crate::{KernelError, Nhwc, Padding, Workers};

/// What happens to `window · weights` before it is stored: `+ bias` always (zero when the
/// convolution has none), then `+ residual` (same shape as the output) if given, then ReLU.
#[derive(Debug, Clone, Copy, Default)]
pub struct Epilogue<'a> {
    /// Added after the bias: a ResNet block's shortcut.
    pub residual: Option<&'a [f32]>,
    /// `max(·, 0)` last.
    pub relu: bool,
}

impl Epilogue<'static> {
    /// Bias only.
    pub const LINEAR: Self = Self { residual: None, relu: false };
    /// Bias, then ReLU.
    pub const RELU: Self = Self { residual: None, relu: true };
}

/// Whether a layer of `dims = [kh, kw, C, O]` suits Winograd: 3×3, stride 1, ≥ 16 channels in
/// and out.
fn winograd_applies([kh, kw, c, o]: [usize; 4], stride: usize) -> bool {
    kh == 3 && kw == 3 && stride == 1 && c >= 16 && o >= 16
}

impl ForwardWeights {
    /// Packs `packed` (`[kh·kw·C, O]`, `dims = [kh, kw, C, O]`) for the forward pass, as Winograd
    /// weights (made on first use, for the tile size the map asks for) if `winograd` and the
    /// shape suits it.
    fn new(packed: &[f32], dims: [usize; 4], stride: usize, winograd: bool) -> Self {
        let [_, _, _, o] = dims;
        if winograd && winograd_applies(dims, stride) {
            Self::Winograd(WinogradWeights::default())
        } else {
            Self::Gemm(PackedMatrix::new(packed, packed.len() / o, o))
        }
    }
}

/// A Winograd layer's transformed weights, packed, per tile size: made when a forward pass
/// first needs them (a layer that only ever sees large maps never holds the 2×2 set, and the
/// other way round).
#[derive(Debug, Clone, Default)]
pub(crate) struct WinogradWeights {
    two: OnceLock<Vec<PackedMatrix>>,
    four: OnceLock<Vec<PackedMatrix>>,
}

impl WinogradWeights {
    /// The packed matrices for `tile`, transformed from `packed` (`[9·C, O]`) on first use.
    fn get(&self, tile: TileSize, packed: &[f32], c: usize, o: usize) -> &[PackedMatrix] {
        let cell = match tile {
            TileSize::Two => &self.two,
            TileSize::Four => &self.four,
        };
        cell.get_or_init(|| {
            let u = winograd::transform_weights_for(tile, packed, c, o);
            u.chunks_exact(c * o).map(|m| PackedMatrix::new(m, c, o)).collect()
        })
    }
}

impl PartialEq for WinogradWeights {
    /// Always equal: the sets are a cache of the layer's `packed` weights, which `Conv2d`
    /// compares itself.
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

/// A 2-D convolution with packed weights, ready to run on NHWC inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct Conv2d {
    pub(crate) kernel_h: usize,
    pub(crate) kernel_w: usize,
    pub(crate) in_channels: usize,
    pub(crate) out_channels: usize,
    pub(crate) stride: usize,
    pub(crate) padding: Padding,
    /// `[kh·kw·C, O]`, row `(ky·kw + kx)·C + c`: what the gradients read.
    pub(crate) packed: Vec<f32>,
    /// `[O]`.
    pub(crate) bias: Vec<f32>,
    /// What [`Conv2d::forward`] multiplies by, packed once for its micro-kernel.
    pub(crate) forward_weights: ForwardWeights,
}

/// The weights of the forward pass, in the form its GEMMs read.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ForwardWeights {
    /// `packed` as one matrix: windows · weights.
    Gemm(PackedMatrix),
    /// Winograd: the transformed matrices `U[ξ]`, each `[C, O]`, per tile size.
    Winograd(WinogradWeights),
}

/// Output rows per block of work. Measured on 2 Zen cores (AVX2) over the GEMM shapes of a
/// ResNet-FPN at 1024² (M = 65,536, K 256–2,304, N 64–512): 256-row blocks on our own threads
/// reach 120–150 GFLOP/s where one `gemm` call with its own 2 threads reaches 85–105. With the
/// weights packed once (`panel_gemm.rs`) a block no longer pays for packing, and smaller blocks
/// keep a `K` slice of their rows (96 × 256 values, 96 KiB) in L2 and give the small layers
/// more blocks to share between threads: on seed 000's 1×1 layers (2 threads, minimum of 25
/// runs, 4 interleaved rounds) 96 rows took 17.4 ms in all against 18.9 for 256; 48–144 were
/// within the noise of 96. A multiple of the micro-kernel's 6 rows.
const ROWS_PER_BLOCK: usize = 96;

impl Conv2d {
    /// From PyTorch/candle `[O, I, kh, kw]` weights and an optional `[O]` bias; 3×3 stride-1
    /// layers get their Winograd weights (see [`Conv2d::with_winograd`]).
    pub fn from_oihw(
        weight: &[f32],
        shape: [usize; 4],
        bias: Option<&[f32]>,
        stride: usize,
        padding: Padding,
    ) -> Result<Self, KernelError> {
        Self::from_oihw_with(weight, shape, bias, stride, padding, true)
    }

    /// As [`Conv2d::from_oihw`] without the Winograd weights: every shape runs as a GEMM over
    /// gathered windows. What the gradients need (they never use the forward's Winograd weights),
    /// without the cost of transforming them.
    pub fn from_oihw_gemm(
        weight: &[f32],
        shape: [usize; 4],
        bias: Option<&[f32]>,
        stride: usize,
        padding: Padding,
    ) -> Result<Self, KernelError> {
        Self::from_oihw_with(weight, shape, bias, stride, padding, false)
    }

    fn from_oihw_with(
        weight: &[f32],
        [out_channels, in_channels, kernel_h, kernel_w]: [usize; 4],
        bias: Option<&[f32]>,
        stride: usize,
        padding: Padding,
        winograd: bool,
    ) -> Result<Self, KernelError> {
        let invalid = |detail: String| KernelError::Invalid { what: "convolution", detail };
        if out_channels == 0 || in_channels == 0 || kernel_h == 0 || kernel_w == 0 || stride == 0 {
            return Err(invalid(format!(
                "zero size in weights [{out_channels}, {in_channels}, {kernel_h}, {kernel_w}] \
                 or stride {stride}"
            )));
        }
        if padding.top >= kernel_h
            || padding.bottom >= kernel_h
            || padding.left >= kernel_w
            || padding.right >= kernel_w
        {
            return Err(invalid(format!(
                "padding {padding:?} reaches a whole {kernel_h}×{kernel_w} window past the input"
            )));
        }
        let taps = kernel_h * kernel_w;
        let expected = out_channels * in_channels * taps;
        if weight.len() != expected {
            return Err(invalid(format!(
                "[{out_channels}, {in_channels}, {kernel_h}, {kernel_w}] weights need {expected} \
                 values, got {}",
                weight.len()
            )));
        }
        let bias = match bias {
            Some(b) if b.len() != out_channels => {
                return Err(invalid(format!(
                    "{out_channels} output channels, {} bias values",
                    b.len()
                )))
            }
            Some(b) => b.to_vec(),
            None => vec![0.0; out_channels],
        };
        let mut packed = vec![0f32; expected];
        for o in 0..out_channels {
            for c in 0..in_channels {
                for tap in 0..taps {
                    packed[(tap * in_channels + c) * out_channels + o] =
                        weight[(o * in_channels + c) * taps + tap];
                }
            }
        }
        let dims = [kernel_h, kernel_w, in_channels, out_channels];
        Ok(Self::assemble(dims, stride, padding, packed, bias, winograd))
    }

    /// A layer from its packed `[kh·kw·C, O]` weights (`dims = [kh, kw, C, O]`), with Winograd
    /// weights if `winograd` and the shape suits it.
    pub(crate) fn assemble(
        dims: [usize; 4],
        stride: usize,
        padding: Padding,
        packed: Vec<f32>,
        bias: Vec<f32>,
        winograd: bool,
    ) -> Self {
        let [kernel_h, kernel_w, in_channels, out_channels] = dims;
        let forward_weights = ForwardWeights::new(&packed, dims, stride, winograd);
        Self {
            kernel_h,
            kernel_w,
            in_channels,
            out_channels,
            stride,
            padding,
            packed,
            bias,
            forward_weights,
        }
    }

    /// Whether a 3×3 stride-1 layer runs as Winograd (F(4×4) or F(2×2) by map size; `true` by
    /// default where it applies: both channel counts ≥ 16, below which the transforms cost more
    /// than they save) or as a plain GEMM over gathered windows. Other shapes ignore the
    /// setting.
    pub fn with_winograd(mut self, enabled: bool) -> Self {
        let dims = [self.kernel_h, self.kernel_w, self.in_channels, self.out_channels];
        self.forward_weights = ForwardWeights::new(&self.packed, dims, self.stride, enabled);
        self
    }

    /// Whether the layer's shape suits Winograd.
    pub(crate) fn winograd_applies(&self) -> bool {
        winograd_applies(
            [self.kernel_h, self.kernel_w, self.in_channels, self.out_channels],
            self.stride,
        )
    }

    /// Whether [`Conv2d::forward`] runs Winograd (F(4×4, 3×3) on output maps of at least
    /// 16×16, F(2×2, 3×3) on smaller ones).
    pub fn uses_winograd(&self) -> bool {
        matches!(self.forward_weights, ForwardWeights::Winograd(_))
    }

    /// Folds an inference-mode BatchNorm that follows the convolution into its weights and bias:
    /// `γ·(conv(x) + b − μ)/√(σ² + ε) + β` = `conv'(x) + b'` with weights scaled by
    /// `s = γ/√(σ² + ε)` per output channel and `b' = (b − μ)·s + β` (computed in `f64`).
    pub fn fold_batch_norm(
        mut self,
        gamma: &[f32],
        beta: &[f32],
        mean: &[f32],
        variance: &[f32],
        eps: f64,
    ) -> Result<Self, KernelError> {
        let o = self.out_channels;
        if [gamma.len(), beta.len(), mean.len(), variance.len()] != [o; 4] {
            return Err(KernelError::Invalid {
                what: "batch norm",
                detail: format!(
                    "{o} channels, but γ/β/μ/σ² have {}/{}/{}/{} values",
                    gamma.len(),
                    beta.len(),
                    mean.len(),
                    variance.len()
                ),
            });
        }
        let scale: Vec<f64> =
            (0..o).map(|c| f64::from(gamma[c]) / (f64::from(variance[c]) + eps).sqrt()).collect();
        for row in self.packed.chunks_exact_mut(o) {
            for (w, s) in row.iter_mut().zip(&scale) {
                *w = (f64::from(*w) * s) as f32;
            }
        }
        for c in 0..o {
            self.bias[c] = ((f64::from(self.bias[c]) - f64::from(mean[c])) * scale[c]
                + f64::from(beta[c])) as f32;
        }
        let winograd = self.uses_winograd();
        Ok(self.with_winograd(winograd))
    }

    /// Output channels.
    pub fn out_channels(&self) -> usize {
        self.out_channels
    }

    /// Input channels.
    pub fn in_channels(&self) -> usize {
        self.in_channels
    }

    /// Multiply-adds per output pixel (`kh·kw·C·O`), for GFLOP/s reports.
    pub fn macs_per_pixel(&self) -> usize {
        self.packed.len()
    }

    /// The output shape for `input`, or why the input does not fit.
    pub fn output_shape(&self, input: Nhwc) -> Result<Nhwc, KernelError> {
        if input.channels != self.in_channels {
            return Err(KernelError::Channels {
                expected: self.in_channels,
                found: input.channels,
            });
        }
        let (ho, wo) = self.padding.output(input, self.kernel_h, self.kernel_w, self.stride)?;
        let out = Nhwc::new(input.batch, ho, wo, self.out_channels);
        out.len()?;
        Ok(out)
    }

    /// Whether the input rows are the windows (1×1, stride 1, no padding).
    pub(crate) fn is_pointwise(&self) -> bool {
        self.kernel_h == 1
            && self.kernel_w == 1
            && self.stride == 1
            && self.padding == Padding::VALID
    }

    /// Runs the convolution on `input` (shape `shape`) into `out`, which must have exactly
    /// [`Conv2d::output_shape`]'s size; returns that shape. `epilogue.residual`, if any, has the
    /// output's shape too.
    pub fn forward(
        &self,
        input: &[f32],
        shape: Nhwc,
        epilogue: Epilogue<'_>,
        out: &mut [f32],
        workers: &Workers,
    ) -> Result<Nhwc, KernelError> {
        shape.check("convolution input", input)?;
        let out_shape = self.output_shape(shape)?;
        out_shape.check("convolution output", out)?;
        if let Some(residual) = epilogue.residual {
            out_shape.check("residual", residual)?;
        }
        if out_shape.is_empty() {
            return Ok(out_shape);
        }
        let weights = match &self.forward_weights {
            ForwardWeights::Winograd(sets) => {
                let tile = TileSize::for_output(out_shape);
                let (c, o) = (self.in_channels, self.out_channels);
                let weights = sets.get(tile, &self.packed, c, o);
                self.forward_winograd(
                    input, shape, out_shape, tile, weights, epilogue, out, workers,
                );
                return Ok(out_shape);
            }
            ForwardWeights::Gemm(weights) => weights,
        };
        let (window, n) = (self.packed.len() / self.out_channels, self.out_channels);
        let pointwise = self.is_pointwise();
        let rows_per_block = block_size(out.len() / n, ROWS_PER_BLOCK, MICRO_KERNEL_ROWS);
        workers.for_each_block(out, n, rows_per_block, |first_row, block, scratch| {
            let rows = block.len() / n;
            let windows: &[f32] = if pointwise {
                &input[first_row * window..(first_row + rows) * window]
            } else {
                let windows = scratch_slice(scratch, rows * window);
                self.gather(input, shape, out_shape, first_row, windows);
                windows
            };
            let residual = epilogue.residual.map(|r| &r[first_row * n..(first_row + rows) * n]);
            let finish = Finish { bias: &self.bias, residual, relu: epilogue.relu };
            matmul_packed(rows, windows, weights, block, Some(finish));
        });
        Ok(out_shape)
    }

    /// The Winograd path: the batch's output cut into blocks of whole tile rows.
    #[allow(clippy::too_many_arguments)]
    fn forward_winograd(
        &self,
        input: &[f32],
        shape: Nhwc,
        out_shape: Nhwc,
        tile: TileSize,
        weights: &[PackedMatrix],
        epilogue: Epilogue<'_>,
        out: &mut [f32],
        workers: &Workers,
    ) {
        let n = self.out_channels;
        let row_len = out_shape.width * n;
        let layer = winograd::Layer {
            input,
            shape,
            out: out_shape,
            top: self.padding.top,
            left: self.padding.left,
            tile,
            weights,
        };
        // Blocks of tile rows across the whole batch, each with its contiguous run of output rows.
        let mut tasks = Vec::new();
        let mut rest = out;
        for rows in layer.forward_blocks() {
            let start = layer.output_row(rows.first);
            let len = (layer.output_row(rows.first + rows.count) - start) * row_len;
            let (block, tail) = std::mem::take(&mut rest).split_at_mut(len);
            rest = tail;
            tasks.push((rows, start * row_len, block));
        }
        workers.for_each_task(tasks, |(rows, start, block), scratch| {
            let residual = epilogue.residual.map(|r| &r[start..start + block.len()]);
            let finish = Finish { bias: &self.bias, residual, relu: epilogue.relu };
            layer.block(rows, block, finish, scratch);
        });
    }

    /// Writes the windows of output rows `first_row..` into `windows` (`[rows, kh·kw·C]`),
    /// zeros where a tap falls in the padding.
    pub(crate) fn gather(
        &self,
        input: &[f32],
        shape: Nhwc,
        out: Nhwc,
        first_row: usize,
        windows: &mut [f32],
    ) {
        let c = self.in_channels;
        let (kh, kw, s) = (self.kernel_h, self.kernel_w, self.stride);
        let (top, left) = (self.padding.top, self.padding.left);
        let window = kh * kw * c;
        for (r, dst) in windows.chunks_exact_mut(window).enumerate() {
            let row = first_row + r;
            let (b, pixel) = (row / (out.height * out.width), row % (out.height * out.width));
            let (oy, ox) = (pixel / out.width, pixel % out.width);
            for ky in 0..kh {
                let taps = &mut dst[ky * kw * c..(ky + 1) * kw * c];
                let iy = (oy * s + ky).wrapping_sub(top);
                if iy >= shape.height {
                    taps.fill(0.0);
                    continue;
                }
                let line = (b * shape.height + iy) * shape.width;
                let x0 = (ox * s).wrapping_sub(left);
                if x0 < shape.width && x0 + kw <= shape.width {
                    // The whole row of taps is inside: one contiguous copy.
                    taps.copy_from_slice(&input[(line + x0) * c..(line + x0 + kw) * c]);
                    continue;
                }
                for (kx, tap) in taps.chunks_exact_mut(c).enumerate() {
                    let ix = (ox * s + kx).wrapping_sub(left);
                    if ix < shape.width {
                        tap.copy_from_slice(&input[(line + ix) * c..(line + ix + 1) * c]);
                    } else {
                        tap.fill(0.0);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Direct convolution, the definition written out (f64 sums), for comparison.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn direct(
        input: &[f32],
        shape: Nhwc,
        weight: &[f32],
        [o, i, kh, kw]: [usize; 4],
        bias: &[f32],
        stride: usize,
        pad: Padding,
        out: Nhwc,
    ) -> Vec<f32> {
        let mut y = vec![0f32; out.len().unwrap()];
        for b in 0..shape.batch {
            for oy in 0..out.height {
                for ox in 0..out.width {
                    for oc in 0..o {
                        let mut acc = f64::from(bias[oc]);
                        for ky in 0..kh {
                            for kx in 0..kw {
                                let iy = (oy * stride + ky) as isize - pad.top as isize;
                                let ix = (ox * stride + kx) as isize - pad.left as isize;
                                if iy < 0
                                    || ix < 0
                                    || iy >= shape.height as isize
                                    || ix >= shape.width as isize
                                {
                                    continue;
                                }
                                let (iy, ix) = (iy as usize, ix as usize);
                                for c in 0..i {
                                    let v = input[((b * shape.height + iy) * shape.width + ix)
                                        * shape.channels
                                        + c];
                                    acc += f64::from(v)
                                        * f64::from(weight[((oc * i + c) * kh + ky) * kw + kx]);
                                }
                            }
                        }
                        y[((b * out.height + oy) * out.width + ox) * o + oc] = acc as f32;
                    }
                }
            }
        }
        y
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        // A small LCG: values in [-1, 1), different per seed.
        let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(12345);
        (0..n)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 8) as f32 / (1u32 << 23) as f32 - 1.0
            })
            .collect()
    }

    /// Every geometry the models use (and odd ones), against the written-out definition.
    #[test]
    fn matches_the_definition_on_every_geometry() {
        let workers = Workers::new(2);
        // (kernel, stride, padding, height, width, in, out)
        let cases = [
            (1, 1, Padding::VALID, 5, 7, 6, 5),
            (1, 2, Padding::VALID, 8, 6, 4, 3),
            (1, 2, Padding::VALID, 7, 5, 4, 3),
            (3, 1, Padding::symmetric(1), 6, 5, 3, 4),
            (3, 2, Padding::symmetric(1), 9, 6, 3, 4),
            (3, 2, Padding::tf_same(8, 8, 3, 2), 8, 8, 2, 3),
            (7, 2, Padding::symmetric(3), 11, 10, 3, 5),
            (3, 1, Padding::VALID, 4, 6, 2, 2),
            (2, 2, Padding::VALID, 6, 6, 3, 2),
            // Winograd: even and odd sides, "same" and "valid", tiles cut at the edges.
            (3, 1, Padding::symmetric(1), 9, 7, 16, 17),
            (3, 1, Padding::symmetric(1), 8, 12, 20, 16),
            (3, 1, Padding::VALID, 7, 10, 16, 16),
            (3, 1, Padding { top: 0, left: 1, bottom: 2, right: 1 }, 5, 6, 16, 24),
            // F(4×4, 3×3) on maps of 16 and more: sides 1–3 past a multiple of 4, both paddings.
            (3, 1, Padding::symmetric(1), 17, 19, 16, 17),
            (3, 1, Padding::symmetric(1), 16, 22, 24, 16),
            (3, 1, Padding::VALID, 18, 23, 16, 16),
            (3, 1, Padding { top: 0, left: 1, bottom: 2, right: 1 }, 16, 17, 16, 24),
        ];
        for (n, &(k, stride, pad, h, w, i, o)) in cases.iter().enumerate() {
            let shape = Nhwc::new(2, h, w, i);
            let input = values(shape.len().unwrap(), n as u32);
            let weight = values(o * i * k * k, 100 + n as u32);
            let bias = values(o, 200 + n as u32);
            let conv = Conv2d::from_oihw(&weight, [o, i, k, k], Some(&bias), stride, pad).unwrap();
            assert_eq!(conv.uses_winograd(), k == 3 && stride == 1 && i >= 16, "case {n}");
            let out_shape = conv.output_shape(shape).unwrap();
            let plain = direct(&input, shape, &weight, [o, i, k, k], &bias, stride, pad, out_shape);
            // The epilogue too: every other case adds a residual and applies the ReLU.
            let residual = values(plain.len(), 300 + n as u32);
            let epilogue = match n % 2 {
                0 => Epilogue::LINEAR,
                _ => Epilogue { residual: Some(&residual), relu: true },
            };
            let expected: Vec<f32> = match epilogue.residual {
                None => plain,
                Some(r) => plain.iter().zip(r).map(|(y, r)| (y + r).max(0.0)).collect(),
            };
            // F(4×4, 3×3)'s weights carry 1/6, 1/12 and 1/24, rounded once: a few times the
            // error of the 2×2 transform (measured: at most 3.0e-5 on these cases, 1.6e-6 for 2×2).
            let four = conv.uses_winograd() && TileSize::for_output(out_shape) == TileSize::Four;
            let tolerance = if four { 5e-5 } else { 1e-5 };
            for conv in [conv.clone(), conv.with_winograd(false)] {
                let mut out = vec![f32::NAN; out_shape.len().unwrap()];
                conv.forward(&input, shape, epilogue, &mut out, &workers).unwrap();
                for (j, (a, e)) in out.iter().zip(&expected).enumerate() {
                    let ok = (a - e).abs() <= tolerance * (1.0 + e.abs());
                    assert!(ok, "case {n} winograd {} value {j}: {a} vs {e}", conv.uses_winograd());
                }
            }
        }
    }

    /// BatchNorm folded into the weights equals BatchNorm applied after; the residual and the
    /// ReLU are applied after the bias.
    #[test]
    fn folded_batch_norm_residual_and_relu() {
        let shape = Nhwc::new(1, 4, 4, 3);
        let input = values(48, 1);
        let weight = values(2 * 3 * 9, 2);
        let residual = values(32, 3);
        let (gamma, beta, mean, var) =
            ([1.5f32, -0.5], [0.25f32, 0.1], [0.3f32, -0.2], [2.0f32, 0.5]);
        let plain =
            Conv2d::from_oihw(&weight, [2, 3, 3, 3], None, 1, Padding::symmetric(1)).unwrap();
        let folded = plain.clone().fold_batch_norm(&gamma, &beta, &mean, &var, 1e-3).unwrap();
        let workers = Workers::new(1);
        let (mut y, mut z) = (vec![0f32; 32], vec![0f32; 32]);
        plain.forward(&input, shape, Epilogue::LINEAR, &mut y, &workers).unwrap();
        let epilogue = Epilogue { residual: Some(&residual), relu: true };
        folded.forward(&input, shape, epilogue, &mut z, &workers).unwrap();
        for (j, (y, z)) in y.iter().zip(&z).enumerate() {
            let c = j % 2;
            let bn = gamma[c] * (y - mean[c]) / (var[c] + 1e-3).sqrt() + beta[c];
            let expected = (bn + residual[j]).max(0.0);
            assert!((z - expected).abs() < 1e-5, "value {j}: {z} vs {expected}");
        }
    }

    /// Blocks are cut by row count alone, so 1, 2 and 3 threads give identical bits, on a layer
    /// large enough to have many blocks.
    #[test]
    fn same_bits_on_any_thread_count() {
        let shape = Nhwc::new(2, 40, 36, 16);
        let input = values(shape.len().unwrap(), 7);
        let weight = values(24 * 16 * 9, 8);
        let conv =
            Conv2d::from_oihw(&weight, [24, 16, 3, 3], None, 1, Padding::symmetric(1)).unwrap();
        let out_shape = conv.output_shape(shape).unwrap();
        let run = |threads| {
            let mut out = vec![0f32; out_shape.len().unwrap()];
            conv.forward(&input, shape, Epilogue::RELU, &mut out, &Workers::new(threads)).unwrap();
            out.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        };
        let one = run(1);
        assert_eq!(one, run(2));
        assert_eq!(one, run(3));
        assert!(conv.uses_winograd());
        let conv = conv.with_winograd(false);
        let run = |threads| {
            let mut out = vec![0f32; out_shape.len().unwrap()];
            conv.forward(&input, shape, Epilogue::RELU, &mut out, &Workers::new(threads)).unwrap();
            out.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        };
        assert_eq!(run(1), run(2));
    }

    #[test]
    fn refusals_name_the_values() {
        let conv = Conv2d::from_oihw(&[0.0; 18], [1, 2, 3, 3], None, 2, Padding::VALID).unwrap();
        let err = conv.output_shape(Nhwc::new(1, 2, 5, 2)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "a 3×3 window does not fit a 2×5 input padded by Padding { top: 0, left: 0, bottom: 0, right: 0 }"
        );
        assert_eq!(
            conv.output_shape(Nhwc::new(1, 5, 5, 3)).unwrap_err().to_string(),
            "the kernel takes 2 input channels, the input has 3"
        );
        let err = Conv2d::from_oihw(&[0.0; 17], [1, 2, 3, 3], None, 1, Padding::VALID).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid convolution: [1, 2, 3, 3] weights need 18 values, got 17"
        );
        let mut out = vec![0.0; 3];
        let err = conv
            .forward(
                &[0.0; 50],
                Nhwc::new(1, 5, 5, 2),
                Epilogue::LINEAR,
                &mut out,
                &Workers::new(1),
            )
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "convolution output: shape Nhwc { batch: 1, height: 2, width: 2, channels: 1 } needs 4 values, the slice has 3"
        );
    }
}
