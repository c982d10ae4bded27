//! The forward pass's GEMM: weights packed once, multiplied by a register-blocked micro-kernel.
//!
//! A convolution multiplies many blocks of input rows by the same weights. A general GEMM (the
//! `gemm` crate's) packs its right-hand side again in every call; on seed 000's 8×8 maps a
//! Winograd block has 16–128 rows, and packing a 1024 × 256 matrix then costs about as much as
//! multiplying by it. Here the weights are packed once, when the layer is built, into panels of
//! 16 columns (`[K][16]`, each row one aligned cache line, zero-padded past `N`). The AVX2 micro-
//! kernel keeps a 6 × 16 block of `C` in twelve registers and, per step of `k`, loads one row of
//! the panel and broadcasts 6 inputs; for a full group of 6 rows its `k` loop is written in
//! inline assembly, because LLVM's register allocation of the intrinsics loop spilled two
//! accumulators to the stack (a store and a reload per 8 steps on the accumulator chain: 6–8 %
//! slower on a 1×1 layer, one thread). `A` is read in a grouped layout (6 rows × 8 columns per
//! chunk, [`grouped_chunk`]): one stream in order rather than 6 rows `K` apart, which share L1
//! sets when `K` is a multiple of 1024. The Winograd input transform writes that layout
//! directly; row-major inputs (1×1 layers) are copied into it one `K` slice at a time. `K` is
//! cut into slices of [`KC`] so that a panel slice (16 KiB) stays in L1 while every row of the
//! block streams past it.
//!
//! **Determinism.** Every value of `C` is one chain of multiply-adds over `k` in increasing order
//! (stored and reloaded unchanged between `K` slices), whatever the number of rows or where the
//! row sits in its block: so the bits depend neither on how rows are split between threads nor
//! on `M`. Machines without AVX2 + FMA run a portable kernel (the same order, unfused, which the
//! compiler vectorises for the target's baseline SIMD).
//!
//! **AVX-512.** The same packed weights and grouped inputs feed a 6 × 64 micro-kernel on zmm
//! registers: four 16-column panels side by side (one register each), 24 accumulators, each
//! input broadcast once and used by its row's four multiply-adds. Each output is the same fused
//! chain as on AVX2, so the two give the same bits (tested); `K` slices are [`KC_AVX512`] long
//! so that the four panel slices (32 KiB) still stay in L1. Edge columns use masked loads and
//! stores. [`CpuIsa::active`] picks the family once per process.

// The AVX2 micro-kernel reads and writes through raw pointers (intrinsics' loads and stores, and
// the read-only `asm!` loop of `chunks6`); every access is inside the bounds that `Strip::run`
// asserts before calling it.
#![allow(unsafe_code)]

use crate::isa::CpuIsa;

/// Columns per panel: two AVX2 registers, one AVX-512 register.
const NR: usize = 16;
/// Rows per micro-kernel call: 6 × 2 accumulators + 2 weight registers + 2 broadcasts = 16.
const MR: usize = 6;
/// [`MR`] for callers that size blocks of rows: blocks of whole groups run no short groups
/// but the last.
pub(crate) const MICRO_KERNEL_ROWS: usize = MR;
/// Columns per chunk of the grouped layout ([`grouped_chunk`]).
pub(crate) const CHUNK: usize = 8;
/// Values per chunk of a group: 6 rows × 8 columns.
const CHUNK_LEN: usize = MR * CHUNK;
/// `k` steps per slice: a panel slice is `KC · 64` bytes = 16 KiB, half of L1. A multiple of
/// [`CHUNK`], so that slices start at a chunk.
const KC: usize = 256;
/// [`KC`] for the AVX-512 kernel, which streams four panels at once: 4 · 128 · 64 bytes = 32 KiB.
const KC_AVX512: usize = 128;

/// One row of a panel: 16 weights in one 64-byte cache line.
#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(C, align(64))]
struct PanelRow([f32; NR]);

/// A `[K, N]` matrix packed for [`matmul_packed`]: `⌈N / 16⌉` panels of `K` rows of 16 columns,
/// panel `p`'s row `k` holding columns `16p .. 16p + 16` of row `k` (zeros past `N`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PackedMatrix {
    k: usize,
    n: usize,
    rows: Vec<PanelRow>,
}

impl PackedMatrix {
    /// Packs the row-major `[k, n]` matrix `b`.
    pub(crate) fn new(b: &[f32], k: usize, n: usize) -> Self {
        assert_eq!(b.len(), k * n, "PackedMatrix: {k}×{n} matrix from {} values", b.len());
        let panels = n.div_ceil(NR);
        let mut rows = vec![PanelRow([0.0; NR]); panels * k];
        for p in 0..panels {
            let cols = NR.min(n - p * NR);
            for (kk, row) in rows[p * k..(p + 1) * k].iter_mut().enumerate() {
                row.0[..cols].copy_from_slice(&b[kk * n + p * NR..kk * n + p * NR + cols]);
            }
        }
        Self { k, n, rows }
    }

    /// The panel rows `k0 .. k0 + kc` of panels `p .. p + count`: panel `p + j`'s rows start at
    /// `j · K` in the slice returned.
    fn slice(&self, p: usize, count: usize, k0: usize, kc: usize) -> &[PanelRow] {
        &self.rows[p * self.k + k0..(p + count - 1) * self.k + k0 + kc]
    }
}

/// What happens to the finished sums as they are stored (after the last `K` slice): `+ bias`,
/// then `+ residual` (laid out like `c`) if given, then ReLU — a convolution's epilogue, applied
/// while the values are still in registers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Finish<'a> {
    /// `[N]`.
    pub(crate) bias: &'a [f32],
    pub(crate) residual: Option<&'a [f32]>,
    pub(crate) relu: bool,
}

/// `c = finish(a · b)` for a row-major `a: [m, K]` and `c: [m, N]` (overwritten), `b` packed
/// `[K, N]`, on the calling thread only (callers split rows over threads).
pub(crate) fn matmul_packed(
    m: usize,
    a: &[f32],
    b: &PackedMatrix,
    c: &mut [f32],
    finish: Option<Finish<'_>>,
) {
    matmul_on(CpuIsa::active(), m, a, b, c, finish);
}

/// [`matmul_packed`] on a given micro-kernel: `A` grouped one `K` slice at a time, so that the
/// slice the panels stream past is the one just written (in cache).
fn matmul_on(
    isa: CpuIsa,
    m: usize,
    a: &[f32],
    b: &PackedMatrix,
    c: &mut [f32],
    finish: Option<Finish<'_>>,
) {
    let k = b.k;
    assert!(a.len() >= m * k, "matmul_packed: {m}×{k} left side from {} values", a.len());
    GROUPED_ROWS.with_borrow_mut(|grouped| {
        Slices { m, b, finish }.run(isa, c, RowsOfA::RowMajor { a, grouped });
    });
}

/// `c = a · b` as [`matmul_packed`] (no epilogue), for an `a: [m, K]` already in the grouped
/// layout ([`grouped_len`], [`grouped_chunk`]).
pub(crate) fn matmul_grouped(m: usize, a: &[f32], b: &PackedMatrix, c: &mut [f32]) {
    let k = b.k;
    assert!(a.len() >= grouped_len(m, k), "matmul: {m}×{k} grouped rows from {} values", a.len());
    Slices { m, b, finish: None }.run(CpuIsa::active(), c, RowsOfA::Grouped(a));
}

/// Where a product's `A` comes from.
enum RowsOfA<'a> {
    /// Row-major, grouped one `K` slice at a time into the buffer.
    RowMajor { a: &'a [f32], grouped: &'a mut Vec<f32> },
    /// Already grouped.
    Grouped(&'a [f32]),
}

/// One product cut into `K` slices.
struct Slices<'a> {
    m: usize,
    b: &'a PackedMatrix,
    finish: Option<Finish<'a>>,
}

impl Slices<'_> {
    /// Multiplies `a` into `c` one `K` slice at a time: written by the first slice, added to by
    /// the others, finished by the last.
    fn run(&self, isa: CpuIsa, c: &mut [f32], mut a: RowsOfA<'_>) {
        let (m, k, n) = (self.m, self.b.k, self.b.n);
        assert!(c.len() >= m * n, "matmul: {m}×{n} output into {} values", c.len());
        if let Some(finish) = self.finish {
            assert_eq!(finish.bias.len(), n, "matmul: bias for {n} columns");
            if let Some(residual) = finish.residual {
                assert!(residual.len() >= m * n, "matmul: short residual");
            }
        }
        if m == 0 || n == 0 {
            return;
        }
        let panels = n.div_ceil(NR);
        let (width, slice_len) = match isa {
            CpuIsa::Avx512 => (avx512::PANELS, KC_AVX512),
            CpuIsa::Avx2 | CpuIsa::Portable => (1, KC),
        };
        if k == 0 {
            // No products: the finish applies to zeros.
            c[..m * n].fill(0.0);
            for p in (0..panels).step_by(width) {
                let count = width.min(panels - p);
                self.strip(
                    isa,
                    &[],
                    0,
                    Panels { first: p, count, rows: &[], k0: 0, kc: 0 },
                    c,
                    true,
                );
            }
            return;
        }
        for k0 in (0..k).step_by(slice_len) {
            let kc = slice_len.min(k - k0);
            // The slice's rows: group `g` at `g · group_stride`, its chunks in order.
            let (a, group_stride) = match &mut a {
                RowsOfA::RowMajor { a, grouped } => {
                    group_rows(m, k, k0, kc, a, grouped);
                    (&grouped[..], group_len(kc))
                }
                RowsOfA::Grouped(a) => (&a[k0 * MR..], group_len(k)),
            };
            let last = k0 + kc == k;
            for p in (0..panels).step_by(width) {
                let count = width.min(panels - p);
                let rows = self.b.slice(p, count, k0, kc);
                self.strip(isa, a, group_stride, Panels { first: p, count, rows, k0, kc }, c, last);
            }
        }
    }

    /// All rows of `c`'s columns under `panels` for one `K` slice.
    fn strip(
        &self,
        isa: CpuIsa,
        a: &[f32],
        group_stride: usize,
        panels: Panels<'_>,
        c: &mut [f32],
        last: bool,
    ) {
        let n = self.b.n;
        let first_col = panels.first * NR;
        let cols = (panels.count * NR).min(n - first_col);
        let finish = self.finish.filter(|_| last).map(|f| StripFinish {
            bias: &f.bias[first_col..first_col + cols],
            residual: f.residual.map(|r| &r[first_col..]),
            relu: f.relu,
        });
        let strip = Strip {
            a,
            group_stride,
            panel: panels.rows,
            panel_stride: self.b.k,
            panels: panels.count,
            kc: panels.kc,
            c: &mut c[first_col..],
            ldc: n,
            rows: self.m,
            cols,
            accumulate: panels.k0 > 0 || panels.kc == 0,
            finish,
        };
        strip.run(isa);
    }
}

/// Neighbouring panels of `B` cut to one `K` slice: what one strip multiplies by.
struct Panels<'a> {
    /// The first panel's index.
    first: usize,
    count: usize,
    /// [`PackedMatrix::slice`] of the panels.
    rows: &'a [PanelRow],
    /// The slice's first `k` and its length.
    k0: usize,
    kc: usize,
}

/// Values in the grouped layout of an `[m, k]` matrix: `⌈m / 6⌉` groups of 6 rows; a group is
/// `⌈k / 8⌉` chunks of 8 columns, each chunk `[6 rows][8 columns]`. The micro-kernel then reads
/// one stream in order (not 6 rows `k` apart, which share L1 sets when `k` is a multiple of
/// 1024), and writers fill 8 columns of a row with one contiguous store. Rows past `m` and
/// columns past `k` in the last group and chunk are never read.
pub(crate) fn grouped_len(m: usize, k: usize) -> usize {
    m.div_ceil(MR) * group_len(k)
}

/// Values per group of 6 rows with `k` columns.
fn group_len(k: usize) -> usize {
    k.div_ceil(CHUNK) * CHUNK_LEN
}

/// Where columns `chunk · 8 ..` of row `row` of a `[·, k]` matrix start in the grouped layout
/// (8 contiguous values, fewer in the last chunk).
#[inline]
pub(crate) fn grouped_chunk(row: usize, chunk: usize, k: usize) -> usize {
    (row / MR) * group_len(k) + chunk * CHUNK_LEN + (row % MR) * CHUNK
}

/// Where element `(row, kk)` of the slice lies, from the start of its group.
#[inline(always)]
fn in_group(row: usize, kk: usize) -> usize {
    (kk / CHUNK) * CHUNK_LEN + row * CHUNK + kk % CHUNK
}

thread_local! {
    /// `A` regrouped by [`group_rows`]; reused from call to call.
    static GROUPED_ROWS: std::cell::RefCell<Vec<f32>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Copies columns `k0 .. k0 + kc` of the row-major `a: [m, k]` into `grouped`, in the grouped
/// layout of an `[m, kc]` matrix: runs of 8 values, row by row.
fn group_rows(m: usize, k: usize, k0: usize, kc: usize, a: &[f32], grouped: &mut Vec<f32>) {
    let len = grouped_len(m, kc);
    if grouped.len() < len {
        grouped.resize(len, 0.0);
    }
    for r in 0..m {
        let row = &a[r * k + k0..][..kc];
        // Whole chunks first: constant-size copies the compiler inlines (one loop with a
        // variable size would call `memcpy` for every 8 values).
        let mut chunks = row.chunks_exact(CHUNK);
        for (chunk, values) in (&mut chunks).enumerate() {
            let at = grouped_chunk(r, chunk, kc);
            grouped[at..at + CHUNK].copy_from_slice(values);
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let at = grouped_chunk(r, kc / CHUNK, kc);
            grouped[at..at + rest.len()].copy_from_slice(rest);
        }
    }
}

/// One micro-kernel call per group of 6 rows down a strip of `panels` 16-column panels of `c`:
/// `c[i][16q + j] (+)= Σ_kk a[(i / 6)·group_stride + in_group(i % 6, kk)] · panel[q·panel_stride + kk][j]`
/// for `i < rows`, `16q + j < cols ≤ 16·panels`, `kk < kc`, then the finish if any.
struct Strip<'a> {
    a: &'a [f32],
    group_stride: usize,
    /// Panel `q`'s `kc` rows start at `q · panel_stride`.
    panel: &'a [PanelRow],
    panel_stride: usize,
    panels: usize,
    kc: usize,
    /// Starts at the strip's first column; row stride `ldc`.
    c: &'a mut [f32],
    ldc: usize,
    rows: usize,
    cols: usize,
    /// Start from `c`'s values (a later `K` slice) rather than zero.
    accumulate: bool,
    finish: Option<StripFinish<'a>>,
}

/// [`Finish`] cut to one strip: `bias` has `cols` values, `residual` starts at the strip's first
/// column with row stride `ldc`.
#[derive(Clone, Copy)]
struct StripFinish<'a> {
    bias: &'a [f32],
    residual: Option<&'a [f32]>,
    relu: bool,
}

impl StripFinish<'_> {
    /// The finish of the strip's columns from `col` on.
    fn skip_cols(self, col: usize) -> Self {
        Self { bias: &self.bias[col..], residual: self.residual.map(|r| &r[col..]), ..self }
    }
}

impl Strip<'_> {
    fn run(self, isa: CpuIsa) {
        // Every read of `a` and `panel` and every access to `c` and the residual is in bounds:
        // checked once here, relied on by the kernels.
        let (kc, rows, cols, ldc) = (self.kc, self.rows, self.cols, self.ldc);
        assert!(rows >= 1 && self.panels >= 1);
        assert!((self.panels - 1) * NR < cols && cols <= self.panels * NR, "strip: columns");
        if kc > 0 {
            let last_group = (rows - 1) / MR;
            let needed = last_group * self.group_stride + group_len(kc);
            assert!(needed <= self.a.len(), "strip: short a");
            let panel_rows = (self.panels - 1) * self.panel_stride + kc;
            assert!(panel_rows <= self.panel.len(), "strip: short panels");
        }
        assert!((rows - 1) * ldc + cols <= self.c.len(), "strip: short c");
        if let Some(finish) = self.finish {
            assert_eq!(finish.bias.len(), cols, "strip: bias");
            if let Some(residual) = finish.residual {
                assert!((rows - 1) * ldc + cols <= residual.len(), "strip: short residual");
            }
        }
        assert!(isa.is_available(), "strip: {isa} kernels on a CPU without them");
        match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: AVX-512F is available (asserted above); the bounds the kernel relies on
            // were asserted above.
            CpuIsa::Avx512 => unsafe { avx512::strip(self) },
            CpuIsa::Avx2 | CpuIsa::Portable => {
                let Strip { panel, panel_stride, panels, kc, c, cols, finish, .. } = self;
                // One panel at a time: these kernels are 16 columns wide.
                for q in 0..panels {
                    let one = Strip {
                        panel: if kc == 0 { &[] } else { &panel[q * panel_stride..][..kc] },
                        panel_stride: 0,
                        panels: 1,
                        c: &mut c[q * NR..],
                        cols: NR.min(cols - q * NR),
                        finish: finish.map(|f| f.skip_cols(q * NR)),
                        ..self
                    };
                    match isa {
                        #[cfg(target_arch = "x86_64")]
                        // SAFETY: AVX2 and FMA are available (asserted above); the bounds the
                        // kernel relies on were asserted above and still hold for one panel.
                        CpuIsa::Avx2 => unsafe { avx2::strip(one) },
                        _ => one.portable(),
                    }
                }
            }
            #[cfg(not(target_arch = "x86_64"))]
            CpuIsa::Avx512 => unreachable!("no AVX-512 kernels off x86-64"),
        }
    }

    /// The same sums in plain Rust (multiply, then add), for one panel.
    fn portable(self) {
        let Strip { a, group_stride, panel, c, ldc, rows, cols, accumulate, finish, .. } = self;
        for r0 in (0..rows).step_by(MR) {
            let a = &a[(r0 / MR) * group_stride..];
            let mut acc = [[0f32; NR]; MR];
            let group_rows = MR.min(rows - r0);
            for (i, row) in acc.iter_mut().enumerate().take(group_rows) {
                if accumulate {
                    row[..cols].copy_from_slice(&c[(r0 + i) * ldc..][..cols]);
                }
            }
            for (kk, weights) in panel.iter().enumerate() {
                for (i, row) in acc.iter_mut().enumerate().take(group_rows) {
                    let x = a[in_group(i, kk)];
                    for (v, w) in row.iter_mut().zip(&weights.0) {
                        *v += x * w;
                    }
                }
            }
            for (i, row) in acc.iter_mut().enumerate().take(group_rows) {
                let at = (r0 + i) * ldc;
                if let Some(f) = finish {
                    for (v, b) in row.iter_mut().zip(f.bias) {
                        *v += b;
                    }
                    if let Some(residual) = f.residual {
                        for (v, r) in row.iter_mut().zip(&residual[at..at + cols]) {
                            *v += r;
                        }
                    }
                    if f.relu {
                        for v in row.iter_mut() {
                            *v = v.max(0.0);
                        }
                    }
                }
                c[at..at + cols].copy_from_slice(&row[..cols]);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::{
        __m256, _mm256_add_ps, _mm256_broadcast_ss, _mm256_fmadd_ps, _mm256_load_ps,
        _mm256_loadu_ps, _mm256_max_ps, _mm256_setzero_ps, _mm256_storeu_ps, _mm_prefetch,
        _MM_HINT_T0,
    };

    use super::{Strip, StripFinish, CHUNK, CHUNK_LEN, MR, NR};

    /// Loads up to 16 values (`cols` of them, zeros after) as two registers.
    #[target_feature(enable = "avx2,fma")]
    fn load(values: &[f32], cols: usize) -> [__m256; 2] {
        let mut edge = [0f32; NR];
        let src = if cols == NR {
            &values[..NR]
        } else {
            for (e, v) in edge.iter_mut().zip(&values[..cols]) {
                *e = *v;
            }
            &edge[..]
        };
        // SAFETY: `src` holds 16 values.
        unsafe { [_mm256_loadu_ps(src.as_ptr()), _mm256_loadu_ps(src.as_ptr().add(8))] }
    }

    /// One step of `k`: `acc[i] += a[i·8 + q] · weights` for every row `i`.
    ///
    /// # Safety
    /// `a` is valid for reads at `i·8 + q` for `i < ROWS`; AVX2 and FMA are available.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn step<const ROWS: usize>(
        acc: &mut [[__m256; 2]; ROWS],
        weights: &super::PanelRow,
        a: *const f32,
        q: usize,
    ) {
        // SAFETY: a panel row is 16 values aligned to 64 bytes; `a` per the caller's contract.
        unsafe {
            let w0 = _mm256_load_ps(weights.0.as_ptr());
            let w1 = _mm256_load_ps(weights.0.as_ptr().add(8));
            for (i, acc) in acc.iter_mut().enumerate() {
                let x = _mm256_broadcast_ss(&*a.add(i * CHUNK + q));
                acc[0] = _mm256_fmadd_ps(x, w0, acc[0]);
                acc[1] = _mm256_fmadd_ps(x, w1, acc[1]);
            }
        }
    }

    /// Stores the first `cols` of two registers' 16 values into `dst`.
    #[target_feature(enable = "avx2,fma")]
    fn store(dst: &mut [f32], cols: usize, v: [__m256; 2]) {
        if cols == NR {
            let dst = &mut dst[..NR];
            // SAFETY: `dst` holds 16 values.
            unsafe {
                _mm256_storeu_ps(dst.as_mut_ptr(), v[0]);
                _mm256_storeu_ps(dst.as_mut_ptr().add(8), v[1]);
            }
            return;
        }
        let mut edge = [0f32; NR];
        // SAFETY: `edge` holds 16 values.
        unsafe {
            _mm256_storeu_ps(edge.as_mut_ptr(), v[0]);
            _mm256_storeu_ps(edge.as_mut_ptr().add(8), v[1]);
        }
        for (d, e) in dst[..cols].iter_mut().zip(edge) {
            *d = e;
        }
    }

    /// [`Strip`] on AVX2 + FMA.
    ///
    /// # Safety
    /// The caller checked AVX2 + FMA at run time and the strip's bounds as in `Strip::run`.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn strip(strip: Strip<'_>) {
        let Strip { a, group_stride, panel, c, ldc, rows, cols, accumulate, finish, .. } = strip;
        let bias = finish.map(|f| load(f.bias, cols));
        for r0 in (0..rows).step_by(MR) {
            let group = Group {
                a: &a[(r0 / MR) * group_stride..],
                panel,
                ldc,
                cols,
                accumulate,
                finish: finish.map(|f| (f, bias)),
                residual_at: r0 * ldc,
            };
            let c = &mut c[r0 * ldc..];
            // SAFETY: forwarded from the caller.
            unsafe {
                match MR.min(rows - r0) {
                    6 => group.run::<6>(c),
                    5 => group.run::<5>(c),
                    4 => group.run::<4>(c),
                    3 => group.run::<3>(c),
                    2 => group.run::<2>(c),
                    _ => group.run::<1>(c),
                }
            }
        }
    }

    /// One step `q` of a chunk for 6 rows: the panel row in ymm0/ymm1, row `i`'s input broadcast
    /// into ymm2 or ymm3 (alternating, so that a broadcast need not wait for the previous
    /// row's multiply-adds), accumulators ymm4..ymm15 (row `i` in `4 + 2i`, `5 + 2i`).
    #[rustfmt::skip]
    macro_rules! step6 {
        ($q:literal) => {
            concat!(
                "vmovaps ymm0, ymmword ptr [{p} + 64*", $q, "]\n",
                "vmovaps ymm1, ymmword ptr [{p} + 64*", $q, " + 32]\n",
                "vbroadcastss ymm2, dword ptr [{a} + 4*", $q, "]\n",
                "vfmadd231ps ymm4, ymm2, ymm0\n",
                "vfmadd231ps ymm5, ymm2, ymm1\n",
                "vbroadcastss ymm3, dword ptr [{a} + 4*", $q, " + 32]\n",
                "vfmadd231ps ymm6, ymm3, ymm0\n",
                "vfmadd231ps ymm7, ymm3, ymm1\n",
                "vbroadcastss ymm2, dword ptr [{a} + 4*", $q, " + 64]\n",
                "vfmadd231ps ymm8, ymm2, ymm0\n",
                "vfmadd231ps ymm9, ymm2, ymm1\n",
                "vbroadcastss ymm3, dword ptr [{a} + 4*", $q, " + 96]\n",
                "vfmadd231ps ymm10, ymm3, ymm0\n",
                "vfmadd231ps ymm11, ymm3, ymm1\n",
                "vbroadcastss ymm2, dword ptr [{a} + 4*", $q, " + 128]\n",
                "vfmadd231ps ymm12, ymm2, ymm0\n",
                "vfmadd231ps ymm13, ymm2, ymm1\n",
                "vbroadcastss ymm3, dword ptr [{a} + 4*", $q, " + 160]\n",
                "vfmadd231ps ymm14, ymm3, ymm0\n",
                "vfmadd231ps ymm15, ymm3, ymm1\n",
            )
        };
    }

    /// `chunks` whole chunks of 8 steps for a full group of 6 rows, the 12 accumulators held in
    /// registers throughout (the same multiply-adds in the same order as [`step`]; written out
    /// because LLVM spilled two accumulators to the stack in the loop built from `step`).
    ///
    /// # Safety
    /// `a` is valid for `chunks · 48` reads and `panel` for `chunks · 8` panel rows; AVX2 and
    /// FMA are available.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn chunks6(
        acc: &mut [[__m256; 2]; 6],
        a: *const f32,
        panel: *const super::PanelRow,
        chunks: usize,
    ) {
        if chunks == 0 {
            return;
        }
        let [[mut c00, mut c01], [mut c10, mut c11], [mut c20, mut c21], [mut c30, mut c31], [mut c40, mut c41], [mut c50, mut c51]] =
            *acc;
        // SAFETY: reads only, inside the bounds the caller guarantees (one chunk of `a` is 192
        // bytes, eight panel rows 512).
        unsafe {
            std::arch::asm!(
                "2:",
                step6!(0),
                step6!(1),
                step6!(2),
                step6!(3),
                step6!(4),
                step6!(5),
                step6!(6),
                step6!(7),
                "add {a}, 192",
                "add {p}, 512",
                "dec {n}",
                "jnz 2b",
                a = inout(reg) a => _,
                p = inout(reg) panel => _,
                n = inout(reg) chunks => _,
                out("ymm0") _,
                out("ymm1") _,
                out("ymm2") _,
                out("ymm3") _,
                inout("ymm4") c00,
                inout("ymm5") c01,
                inout("ymm6") c10,
                inout("ymm7") c11,
                inout("ymm8") c20,
                inout("ymm9") c21,
                inout("ymm10") c30,
                inout("ymm11") c31,
                inout("ymm12") c40,
                inout("ymm13") c41,
                inout("ymm14") c50,
                inout("ymm15") c51,
                options(nostack, readonly),
            );
        }
        *acc = [[c00, c01], [c10, c11], [c20, c21], [c30, c31], [c40, c41], [c50, c51]];
    }

    /// One group of rows of a strip.
    struct Group<'a> {
        /// The group's inputs, its chunks in order.
        a: &'a [f32],
        panel: &'a [super::PanelRow],
        ldc: usize,
        cols: usize,
        accumulate: bool,
        finish: Option<(StripFinish<'a>, Option<[__m256; 2]>)>,
        /// Where the group's first row starts in the strip's residual.
        residual_at: usize,
    }

    impl Group<'_> {
        /// `c` (starting at the group's first row, row stride `ldc`) for `ROWS` rows:
        /// 2·`ROWS` accumulators for the whole slice.
        ///
        /// # Safety
        /// As [`strip`]; `a` holds the group's `⌈kc / 8⌉` chunks and `c`
        /// `(ROWS − 1)·ldc + cols` values.
        #[target_feature(enable = "avx2,fma")]
        unsafe fn run<const ROWS: usize>(&self, c: &mut [f32]) {
            let (ldc, cols) = (self.ldc, self.cols);
            let mut acc = [[_mm256_setzero_ps(); 2]; ROWS];
            if self.accumulate {
                for (i, acc) in acc.iter_mut().enumerate() {
                    *acc = load(&c[i * ldc..], cols);
                }
            }
            if let Some((StripFinish { residual: Some(residual), .. }, _)) = self.finish {
                // The residual was written layers ago (L3 at best): ask for its lines now, so
                // that they are in L1 when the sums are finished.
                for i in 0..ROWS {
                    let line = &residual[self.residual_at + i * ldc..][..cols];
                    _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast());
                    _mm_prefetch::<_MM_HINT_T0>(line[cols - 1..].as_ptr().cast());
                }
            }
            let a = self.a.as_ptr();
            // Whole chunks of 8 steps (fixed offsets inside the chunk), then the rest.
            let done = self.panel.len() / CHUNK;
            match <&mut [[__m256; 2]; MR]>::try_from(&mut acc[..]) {
                // SAFETY: `a` holds `done` chunks of 48 values, the panel `done · 8` rows.
                Ok(six) => unsafe { chunks6(six, a, self.panel.as_ptr(), done) },
                Err(_) => {
                    for (chunk, weights) in self.panel.chunks_exact(CHUNK).enumerate() {
                        // SAFETY: `a` holds the chunk's 48 values (`Strip::run`'s assertions).
                        let a = unsafe { a.add(chunk * CHUNK_LEN) };
                        for (q, weights) in weights.iter().enumerate() {
                            // SAFETY: as below, `i·8 + q < 48`.
                            unsafe { step(&mut acc, weights, a, q) };
                        }
                    }
                }
            }
            // SAFETY: `a` holds the last, partial chunk too (its first `kc mod 8` columns).
            let a = unsafe { a.add(done * CHUNK_LEN) };
            for (q, weights) in self.panel[done * CHUNK..].iter().enumerate() {
                // SAFETY: as below.
                unsafe { step(&mut acc, weights, a, q) };
            }
            for (i, mut v) in acc.into_iter().enumerate() {
                if let Some((f, Some(b))) = self.finish {
                    v = [_mm256_add_ps(v[0], b[0]), _mm256_add_ps(v[1], b[1])];
                    if let Some(residual) = f.residual {
                        let r = load(&residual[self.residual_at + i * ldc..], cols);
                        v = [_mm256_add_ps(v[0], r[0]), _mm256_add_ps(v[1], r[1])];
                    }
                    if f.relu {
                        let zero = _mm256_setzero_ps();
                        v = [_mm256_max_ps(v[0], zero), _mm256_max_ps(v[1], zero)];
                    }
                }
                store(&mut c[i * ldc..], cols, v);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::{
        __m512, __mmask16, _mm512_add_ps, _mm512_fmadd_ps, _mm512_load_ps, _mm512_mask_storeu_ps,
        _mm512_maskz_loadu_ps, _mm512_max_ps, _mm512_set1_ps, _mm512_setzero_ps, _mm_prefetch,
        _MM_HINT_T0,
    };

    use super::{PanelRow, Strip, StripFinish, CHUNK, CHUNK_LEN, MR, NR};

    /// Panels per strip: 6 rows × 4 panels = 24 accumulators, plus 4 panel rows, in the 32 zmm
    /// registers; per step of `k`, 10 loads (4 panel rows, 6 broadcasts) feed 24 multiply-adds.
    pub(super) const PANELS: usize = 4;

    /// Lanes `0 .. cols` of a register (`cols ≤ 16`).
    fn mask(cols: usize) -> __mmask16 {
        if cols >= NR {
            u16::MAX
        } else {
            (1u16 << cols) - 1
        }
    }

    /// [`Strip`] on AVX-512F, up to [`PANELS`] panels at once.
    ///
    /// # Safety
    /// The caller checked AVX-512F at run time and the strip's bounds as in `Strip::run`.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn strip(strip: Strip<'_>) {
        // SAFETY: forwarded from the caller.
        unsafe {
            match strip.panels {
                4 => strip_of::<4>(strip),
                3 => strip_of::<3>(strip),
                2 => strip_of::<2>(strip),
                _ => strip_of::<1>(strip),
            }
        }
    }

    /// [`strip`] for exactly `P` panels.
    ///
    /// # Safety
    /// As [`strip`], with `strip.panels == P`.
    #[target_feature(enable = "avx512f")]
    unsafe fn strip_of<const P: usize>(strip: Strip<'_>) {
        let Strip {
            a,
            group_stride,
            panel,
            panel_stride,
            kc,
            c,
            ldc,
            rows,
            cols,
            accumulate,
            finish,
            ..
        } = strip;
        let mut masks = [0; P];
        for (q, m) in masks.iter_mut().enumerate() {
            *m = mask(cols.saturating_sub(q * NR));
        }
        let group = |r0: usize| Group::<P> {
            a: &a[(r0 / MR) * group_stride..],
            panel,
            panel_stride,
            kc,
            ldc,
            masks,
            accumulate,
            finish,
            residual_at: r0 * ldc,
        };
        for r0 in (0..rows).step_by(MR) {
            let c = &mut c[r0 * ldc..];
            // SAFETY: forwarded from the caller.
            unsafe {
                match MR.min(rows - r0) {
                    6 => group(r0).run::<6>(c),
                    5 => group(r0).run::<5>(c),
                    4 => group(r0).run::<4>(c),
                    3 => group(r0).run::<3>(c),
                    2 => group(r0).run::<2>(c),
                    _ => group(r0).run::<1>(c),
                }
            }
        }
    }

    /// One group of rows of a strip of `P` panels.
    struct Group<'a, const P: usize> {
        /// The group's inputs, its chunks in order.
        a: &'a [f32],
        panel: &'a [PanelRow],
        panel_stride: usize,
        kc: usize,
        ldc: usize,
        /// The columns of each panel that exist (only the last may be short).
        masks: [__mmask16; P],
        accumulate: bool,
        finish: Option<StripFinish<'a>>,
        /// Where the group's first row starts in the strip's residual.
        residual_at: usize,
    }

    impl<const P: usize> Group<'_, P> {
        /// `c` (starting at the group's first row, row stride `ldc`) for `ROWS` rows:
        /// `ROWS · P` accumulators for the whole slice.
        ///
        /// # Safety
        /// As [`strip`]; `a` holds the group's `⌈kc / 8⌉` chunks, every panel `kc` rows, `c`
        /// (and the residual from `residual_at`) `(ROWS − 1)·ldc + cols` values.
        #[target_feature(enable = "avx512f")]
        unsafe fn run<const ROWS: usize>(&self, c: &mut [f32]) {
            let (ldc, masks) = (self.ldc, self.masks);
            let mut acc = [[_mm512_setzero_ps(); P]; ROWS];
            if self.accumulate {
                for (i, acc) in acc.iter_mut().enumerate() {
                    for (q, acc) in acc.iter_mut().enumerate() {
                        // SAFETY: the masked lanes are the strip's columns of row `i` (in
                        // bounds); masked-off lanes are not read.
                        *acc = unsafe {
                            _mm512_maskz_loadu_ps(masks[q], c.as_ptr().add(i * ldc + q * NR))
                        };
                    }
                }
            }
            if let Some(StripFinish { residual: Some(residual), .. }) = self.finish {
                // As on AVX2: the residual is old, ask for its lines before the `k` loop.
                for i in 0..ROWS {
                    let line = &residual[self.residual_at + i * ldc..];
                    for q in 0..P {
                        _mm_prefetch::<_MM_HINT_T0>(line[q * NR..].as_ptr().cast());
                    }
                }
            }
            let (a, panel) = (self.a.as_ptr(), self.panel.as_ptr());
            let chunks = self.kc / CHUNK;
            for chunk in 0..chunks {
                for q in 0..CHUNK {
                    // SAFETY: chunk `chunk` of `a` and panel row `chunk · 8 + q` are in bounds.
                    unsafe {
                        self.step(
                            &mut acc,
                            a.add(chunk * CHUNK_LEN),
                            panel.add(chunk * CHUNK + q),
                            q,
                        )
                    };
                }
            }
            for q in 0..self.kc % CHUNK {
                // SAFETY: the last, partial chunk holds columns `q < kc mod 8`.
                unsafe {
                    self.step(&mut acc, a.add(chunks * CHUNK_LEN), panel.add(chunks * CHUNK + q), q)
                };
            }
            let bias = self.finish.map(|f| {
                let mut bias = [_mm512_setzero_ps(); P];
                for (q, b) in bias.iter_mut().enumerate() {
                    // SAFETY: `bias` holds the strip's `cols` values; masked-off lanes are not read.
                    *b = unsafe { _mm512_maskz_loadu_ps(masks[q], f.bias.as_ptr().add(q * NR)) };
                }
                bias
            });
            for (i, row) in acc.iter_mut().enumerate() {
                if let (Some(f), Some(bias)) = (self.finish, bias) {
                    for (q, v) in row.iter_mut().enumerate() {
                        *v = _mm512_add_ps(*v, bias[q]);
                        if let Some(residual) = f.residual {
                            let at = self.residual_at + i * ldc + q * NR;
                            // SAFETY: the residual is laid out like `c` (asserted by the caller).
                            let r = unsafe {
                                _mm512_maskz_loadu_ps(masks[q], residual.as_ptr().add(at))
                            };
                            *v = _mm512_add_ps(*v, r);
                        }
                        if f.relu {
                            *v = _mm512_max_ps(*v, _mm512_setzero_ps());
                        }
                    }
                }
                for (q, v) in row.iter().enumerate() {
                    // SAFETY: as the loads from `c` above.
                    unsafe {
                        _mm512_mask_storeu_ps(c.as_mut_ptr().add(i * ldc + q * NR), masks[q], *v)
                    };
                }
            }
        }

        /// One step of `k`: `acc[i][q] += a[i·8 + step] · panel q's row` for every row `i` and
        /// panel `q` — the same fused multiply-adds as the AVX2 kernel's, in the same order.
        ///
        /// # Safety
        /// `a` is valid for reads at `i·8 + step` for `i < ROWS`, `weights` at `q · panel_stride`
        /// for `q < P`; AVX-512F is available.
        #[target_feature(enable = "avx512f")]
        #[inline]
        unsafe fn step<const ROWS: usize>(
            &self,
            acc: &mut [[__m512; P]; ROWS],
            a: *const f32,
            weights: *const PanelRow,
            step: usize,
        ) {
            // SAFETY: per the contract; panel rows are 16 values aligned to 64 bytes.
            unsafe {
                let mut w = [_mm512_setzero_ps(); P];
                for (q, w) in w.iter_mut().enumerate() {
                    *w = _mm512_load_ps((*weights.add(q * self.panel_stride)).0.as_ptr());
                }
                for (i, acc) in acc.iter_mut().enumerate() {
                    let x = _mm512_set1_ps(*a.add(i * CHUNK + step));
                    for (acc, w) in acc.iter_mut().zip(w) {
                        *acc = _mm512_fmadd_ps(x, w, *acc);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The product in f64, the definition written out.
    fn reference(m: usize, k: usize, n: usize, a: &[f32], b: &[f32]) -> Vec<f64> {
        let mut c = vec![0f64; m * n];
        for i in 0..m {
            for kk in 0..k {
                for j in 0..n {
                    c[i * n + j] += f64::from(a[i * k + kk]) * f64::from(b[kk * n + j]);
                }
            }
        }
        c
    }

    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len).map(|i| ((i * 7 + seed * 13) % 23) as f32 / 11.0 - 1.0).collect()
    }

    /// The kernel families this CPU runs; the others are named as skipped.
    fn available_isas() -> Vec<CpuIsa> {
        let (run, skipped): (Vec<_>, Vec<_>) =
            CpuIsa::ALL.into_iter().partition(|i| i.is_available());
        if !skipped.is_empty() {
            eprintln!("skipped on this CPU: {skipped:?}");
        }
        run
    }

    /// Edge rows (m not a multiple of 6), edge columns (n not a multiple of 16), strips of 1 to 4
    /// panels and several `K` slices (k > 256), on every kernel this CPU has.
    #[test]
    fn products_match_the_definition_at_every_edge() {
        for isa in available_isas() {
            let shapes = [
                (1, 1, 1),
                (7, 3, 17),
                (13, 300, 40),
                (6, 513, 16),
                (20, 64, 5),
                (9, 130, 83),
                (5, 9, 128),
            ];
            for (m, k, n) in shapes {
                let (a, b) = (values(m * k, 1), values(k * n, 2));
                let packed = PackedMatrix::new(&b, k, n);
                let expected = reference(m, k, n, &a, &b);
                let mut c = vec![f32::NAN; m * n + 3];
                matmul_on(isa, m, &a, &packed, &mut c, None);
                for (got, want) in c.iter().zip(&expected) {
                    let close = (f64::from(*got) - want).abs() <= 1e-5 * k as f64;
                    assert!(close, "{isa:?} {m}×{k}×{n}: {got} vs {want}");
                }
                assert!(c[m * n..].iter().all(|v| v.is_nan()), "{isa:?} wrote past m×n");
                // The fused finish: bias, residual, ReLU.
                let (bias, residual) = (values(n, 5), values(m * n, 6));
                let finish = Finish { bias: &bias, residual: Some(&residual), relu: true };
                matmul_on(isa, m, &a, &packed, &mut c, Some(finish));
                for (j, (got, want)) in c.iter().zip(&expected).enumerate() {
                    let want = (want + f64::from(bias[j % n]) + f64::from(residual[j])).max(0.0);
                    let close = (f64::from(*got) - want).abs() <= 1e-5 * k as f64;
                    assert!(close, "{isa:?} {m}×{k}×{n} finished: {got} vs {want}");
                }
            }
        }
    }

    /// AVX2 and AVX-512 run the same fused chains: the same bits, at every edge of rows, columns
    /// (1–5 panels, short last panel), `K` slices (both kernels' slice lengths) and the finish.
    #[test]
    fn simd_kernels_give_the_same_bits() {
        let isas: Vec<_> =
            [CpuIsa::Avx2, CpuIsa::Avx512].into_iter().filter(|i| i.is_available()).collect();
        if isas.len() < 2 {
            eprintln!("skipped: this CPU runs {isas:?} of AVX2 and AVX-512");
            return;
        }
        for (m, k, n) in
            [(1, 1, 1), (7, 129, 17), (13, 300, 80), (6, 513, 64), (20, 64, 70), (31, 257, 33)]
        {
            let (a, b) = (values(m * k, 7), values(k * n, 8));
            let (bias, residual) = (values(n, 9), values(m * n, 10));
            let packed = PackedMatrix::new(&b, k, n);
            for relu in [false, true] {
                for finish in [None, Some(Finish { bias: &bias, residual: Some(&residual), relu })]
                {
                    let outputs: Vec<Vec<f32>> = isas
                        .iter()
                        .map(|&isa| {
                            let mut c = vec![f32::NAN; m * n];
                            matmul_on(isa, m, &a, &packed, &mut c, finish);
                            c
                        })
                        .collect();
                    let bits = |c: &[f32]| c.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                    assert_eq!(
                        bits(&outputs[0]),
                        bits(&outputs[1]),
                        "{m}×{k}×{n}, finish {}",
                        finish.is_some()
                    );
                }
            }
        }
    }

    /// Each value is one chain over `k`, whatever the rows around it: computing rows one at a
    /// time gives the same bits as all at once.
    #[test]
    fn a_row_has_the_same_bits_alone_and_in_a_block() {
        let (m, k, n) = (11, 600, 35);
        let (a, b) = (values(m * k, 3), values(k * n, 4));
        let packed = PackedMatrix::new(&b, k, n);
        let mut all = vec![0f32; m * n];
        matmul_packed(m, &a, &packed, &mut all, None);
        for i in 0..m {
            let mut one = vec![0f32; n];
            matmul_packed(1, &a[i * k..(i + 1) * k], &packed, &mut one, None);
            assert_eq!(one, all[i * n..(i + 1) * n], "row {i}");
        }
    }

    #[test]
    fn empty_inner_dimension_writes_zeros_then_the_finish() {
        let packed = PackedMatrix::new(&[], 0, 3);
        let mut c = [f32::NAN; 6];
        matmul_packed(2, &[], &packed, &mut c, None);
        assert_eq!(c, [0.0; 6]);
        let finish = Finish { bias: &[1.0, -2.0, 3.0], residual: None, relu: true };
        matmul_packed(2, &[], &packed, &mut c, Some(finish));
        assert_eq!(c, [1.0, 0.0, 3.0, 1.0, 0.0, 3.0]);
    }
}
