//! Networks compiled for CPU inference: NHWC from end to end, BatchNorm folded into the
//! convolutions, every layer one `rpn-kernels` call with its bias, residual and ReLU fused.
//!
//! A model describes its inference graph once, in its own file, with [`PlanBuilder`] (the same
//! walk over its layers as its candle `forward`), and keeps the [`CpuPlan`] it compiles to.
//! The plan is used only where it computes exactly what candle's path computes: a CPU `f32`
//! input that tracks no gradient, every weight a plain tensor (a model holding `Var`s is being
//! trained: its weights change between calls and its callers may want gradients) and BatchNorm
//! in inference mode. Everything else — training, CUDA/Metal, `f16` — runs candle's ops through
//! the same model code.
//!
//! Buffers: each value's buffer returns to a pool after its last use and is reused by later
//! layers and later calls, so a forward pass allocates only what its peak needs, once.
//!
//! Batches: the first layers, while their maps are large, run a few images at a time and the
//! batch is joined before the small maps ([`CHUNK_PIXELS`]), so that a layer's output is still in
//! cache when the next layer reads it. Each kernel computes an image the same way whatever else
//! is in its batch: the bits do not depend on the chunking (tested).

use std::ops::Range;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use candle_core::{DType, Result, Tensor};
use candle_nn::BatchNorm;
use rpn_kernels::{Conv2d, Epilogue, Nhwc, Padding, Workers};

use crate::conv::Conv;

/// Whether models may use their compiled CPU plans: on unless `RPN_CPU_KERNELS=off` (or `0`),
/// read once — for comparing the two paths, not for users.
pub(crate) fn plans_enabled() -> bool {
    static ENABLED: OnceLock<bool> = OnceLock::new();
    *ENABLED.get_or_init(|| {
        !matches!(std::env::var("RPN_CPU_KERNELS").as_deref(), Ok("off" | "0" | "false"))
    })
}

/// Whether `input` can go through a CPU plan (device, dtype, no gradient wanted).
pub(crate) fn plan_applies(input: &Tensor) -> bool {
    plans_enabled() && input.device().is_cpu() && input.dtype() == DType::F32 && !input.track_op()
}

/// A handle on one intermediate value of a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Value(usize);

/// A convolution and the inference-mode BatchNorm after it.
pub(crate) type ConvBn<'a> = (&'a Conv, &'a BatchNorm);

/// How a max-pool pads.
#[derive(Debug, Clone, Copy)]
pub(crate) enum PoolPadding {
    /// TF "same": computed from each input's size (bottom/right first).
    TfSame,
    /// Fixed padding.
    Fixed(Padding),
}

#[derive(Debug)]
enum Step {
    Conv {
        conv: usize,
        input: Value,
        residual: Option<Value>,
        relu: bool,
    },
    MaxPool {
        input: Value,
        kernel: usize,
        stride: usize,
        padding: PoolPadding,
    },
    /// `large + upsample×2(small)`, written into `large`'s buffer.
    UpsampleAdd {
        small: Value,
        large: Value,
    },
}

/// Builds a [`CpuPlan`] layer by layer. Value 0 is the input image batch.
#[derive(Debug, Default)]
pub(crate) struct PlanBuilder {
    convs: Vec<Conv2d>,
    steps: Vec<Step>,
    outputs: Vec<Value>,
}

/// The error that stops compiling a plan for a model that must keep candle's path: weights that
/// are `Var`s (it is being trained) or live on another device (candle's error type cannot be
/// downcast, so [`PlanCache`] recognises the message).
const NOT_PLANNABLE: &str = "the model holds variables or non-CPU weights: no CPU plan";

impl PlanBuilder {
    pub(crate) const INPUT: Value = Value(0);

    fn push(&mut self, step: Step) -> Value {
        self.steps.push(step);
        Value(self.steps.len())
    }

    /// Adds a convolution made by [`PlanBuilder::conv_weights`] or
    /// [`PlanBuilder::conv_bn_weights`]; returns its index, to apply it with [`PlanBuilder::apply`]
    /// (once or many times: a head shared by the pyramid levels).
    pub(crate) fn add_conv(&mut self, conv: Conv2d) -> usize {
        self.convs.push(conv);
        self.convs.len() - 1
    }

    /// `relu?(conv(input) + residual?)`.
    pub(crate) fn apply(
        &mut self,
        conv: usize,
        input: Value,
        residual: Option<Value>,
        relu: bool,
    ) -> Value {
        self.push(Step::Conv { conv, input, residual, relu })
    }

    /// Adds and applies a convolution in one go.
    pub(crate) fn conv(
        &mut self,
        conv: Conv2d,
        input: Value,
        residual: Option<Value>,
        relu: bool,
    ) -> Value {
        let index = self.add_conv(conv);
        self.apply(index, input, residual, relu)
    }

    pub(crate) fn max_pool(
        &mut self,
        input: Value,
        kernel: usize,
        stride: usize,
        padding: PoolPadding,
    ) -> Value {
        self.push(Step::MaxPool { input, kernel, stride, padding })
    }

    /// `large + upsample×2(small)`; `large` must not be used after this step.
    pub(crate) fn upsample_add(&mut self, small: Value, large: Value) -> Value {
        self.push(Step::UpsampleAdd { small, large })
    }

    /// Marks `value` as an output; [`CpuPlan::run`] returns outputs in marking order.
    pub(crate) fn output(&mut self, value: Value) {
        self.outputs.push(value);
    }

    /// A weight's values, or the [`NOT_PLANNABLE`] error for a `Var` (its model is being
    /// trained) or a weight off the CPU (a CUDA/Metal model given a host input must fail in
    /// candle as before, not run silently on the CPU).
    fn tensor_values(&mut self, t: &Tensor) -> Result<Vec<f32>> {
        if t.is_variable() || !t.device().is_cpu() {
            return Err(candle_core::Error::Msg(NOT_PLANNABLE.to_owned()));
        }
        statistic_values(t)
    }

    /// A candle convolution's weights (square or not), stride and symmetric padding.
    pub(crate) fn conv_weights(&mut self, conv: &Conv) -> Result<Conv2d> {
        let cfg = conv.0.config();
        if cfg.dilation != 1 || cfg.groups != 1 {
            candle_core::bail!("CPU plan: dilated or grouped convolutions are not supported")
        }
        let weight = conv.0.weight();
        let (o, i, kh, kw) = weight.dims4()?;
        let values = self.tensor_values(weight)?;
        let bias = match conv.0.bias() {
            Some(b) => Some(self.tensor_values(b)?),
            None => None,
        };
        Conv2d::from_oihw(
            &values,
            [o, i, kh, kw],
            bias.as_deref(),
            cfg.stride,
            Padding::symmetric(cfg.padding),
        )
        .map_err(kernel_error)
    }

    /// A convolution followed by an inference-mode BatchNorm, folded into one.
    pub(crate) fn conv_bn_weights(&mut self, conv: &Conv, bn: &BatchNorm) -> Result<Conv2d> {
        let folded = self.conv_weights(conv)?;
        let channels = folded.out_channels();
        let (gamma, beta) = match bn.weight_and_bias() {
            Some((g, b)) => (self.tensor_values(g)?, self.tensor_values(b)?),
            None => (vec![1.0; channels], vec![0.0; channels]),
        };
        // candle_nn keeps running statistics in `Var`s in every model; they change only in
        // training or calibration, which clear the model's plan.
        let mean = statistic_values(bn.running_mean())?;
        let var = statistic_values(bn.running_var())?;
        folded.fold_batch_norm(&gamma, &beta, &mean, &var, bn.eps()).map_err(kernel_error)
    }

    /// `relu?(bn(conv(x)) + residual?)` with the inference BatchNorm folded into the convolution.
    pub(crate) fn conv_bn(
        &mut self,
        (conv, bn): ConvBn<'_>,
        x: Value,
        residual: Option<Value>,
        relu: bool,
    ) -> Result<Value> {
        let conv = self.conv_bn_weights(conv, bn)?;
        Ok(self.conv(conv, x, residual, relu))
    }

    /// A ResNet bottleneck block, whichever ResNet stores it: `relu(c(b(a(x))) + shortcut(x))`,
    /// every convolution followed by BatchNorm, `a` and `b` by ReLU; the shortcut is `x` itself
    /// when `None`. The addition and the last ReLU are fused into `c`'s epilogue.
    pub(crate) fn bottleneck(
        &mut self,
        x: Value,
        [a, b, c]: [ConvBn<'_>; 3],
        shortcut: Option<ConvBn<'_>>,
    ) -> Result<Value> {
        let y = self.conv_bn(a, x, None, true)?;
        let y = self.conv_bn(b, y, None, true)?;
        let shortcut = match shortcut {
            Some(s) => self.conv_bn(s, x, None, false)?,
            None => x,
        };
        self.conv_bn(c, y, Some(shortcut), true)
    }

    /// An FPN RPN head shared by every level of `pyramid`: the `trunk` convolutions (each
    /// followed by ReLU), then `class` and `bbox` on the trunk's output. Marks the outputs that
    /// [`PyramidOutputs::new`] reads: the levels, then the class maps, then the box maps.
    pub(crate) fn pyramid_head(
        &mut self,
        pyramid: Vec<Value>,
        trunk: &[&Conv],
        class: &Conv,
        bbox: &Conv,
    ) -> Result<()> {
        let trunk = trunk
            .iter()
            .map(|conv| {
                let conv = self.conv_weights(conv)?;
                Ok(self.add_conv(conv))
            })
            .collect::<Result<Vec<_>>>()?;
        let class = self.conv_weights(class)?;
        let class = self.add_conv(class);
        let bbox = self.conv_weights(bbox)?;
        let bbox = self.add_conv(bbox);
        let (mut classes, mut boxes) = (Vec::new(), Vec::new());
        for &level in &pyramid {
            let mut t = level;
            for &conv in &trunk {
                t = self.apply(conv, t, None, true);
            }
            classes.push(self.apply(class, t, None, false));
            boxes.push(self.apply(bbox, t, None, false));
        }
        for v in pyramid.into_iter().chain(classes).chain(boxes) {
            self.output(v);
        }
        Ok(())
    }

    /// The plan.
    pub(crate) fn finish(self) -> CpuPlan {
        let values = self.steps.len() + 1;
        // Index of the last step reading each value (outputs: never freed).
        let mut last_use = vec![0usize; values];
        for (s, step) in self.steps.iter().enumerate() {
            let reads: &[Option<Value>] = &match *step {
                Step::Conv { input, residual, .. } => [Some(input), residual],
                Step::MaxPool { input, .. } => [Some(input), None],
                Step::UpsampleAdd { small, large } => [Some(small), Some(large)],
            };
            for v in reads.iter().flatten() {
                last_use[v.0] = s + 1;
            }
        }
        for v in &self.outputs {
            last_use[v.0] = usize::MAX;
        }
        CpuPlan {
            convs: self.convs,
            steps: self.steps,
            outputs: self.outputs,
            last_use,
            workers: Workers::new(candle_core::utils::get_num_threads()),
            pool: Mutex::new(Vec::new()),
        }
    }
}

fn statistic_values(t: &Tensor) -> Result<Vec<f32>> {
    t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()
}

pub(crate) fn kernel_error(e: rpn_kernels::KernelError) -> candle_core::Error {
    candle_core::Error::Msg(e.to_string())
}

/// A compiled inference graph (see the module docs).
#[derive(Debug)]
pub(crate) struct CpuPlan {
    convs: Vec<Conv2d>,
    steps: Vec<Step>,
    outputs: Vec<Value>,
    last_use: Vec<usize>,
    workers: Workers,
    /// Buffers of freed values, reused by later steps and later calls.
    pool: Mutex<Vec<Vec<f32>>>,
}

/// An NHWC buffer and its shape.
pub(crate) type Activation = (Vec<f32>, Nhwc);

impl CpuPlan {
    /// A buffer of at least `len` values from the pool (contents unspecified: every kernel
    /// overwrites the `len` values of its output). Pooled buffers keep their full length, so
    /// that reusing a buffer for a larger value zero-fills it only when the pool first grows, not
    /// on every call (`Vec::resize` after a shorter use fills again: 2–3 % of seed 000's forward).
    fn buffer(&self, len: usize) -> Vec<f32> {
        let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
        // The smallest pooled buffer that is large enough, else the largest one grown.
        let best = (0..pool.len())
            .filter(|&i| pool[i].len() >= len)
            .min_by_key(|&i| pool[i].len())
            .or_else(|| (0..pool.len()).max_by_key(|&i| pool[i].len()));
        let mut buffer = best.map(|i| pool.swap_remove(i)).unwrap_or_default();
        if buffer.len() < len {
            buffer.resize(len, 0.0);
        }
        buffer
    }

    fn recycle(&self, buffer: Vec<f32>) {
        self.pool.lock().unwrap_or_else(PoisonError::into_inner).push(buffer);
    }

    /// Runs the plan on an NHWC batch; returns the marked outputs, in marking order.
    ///
    /// The first layers, while their maps are large, run a few images at a time (see
    /// [`CHUNK_PIXELS`]), the rest on the whole batch.
    pub(crate) fn run(&self, input: Vec<f32>, shape: Nhwc) -> Result<Vec<Activation>> {
        let per_chunk = CHUNK_PIXELS / (shape.height * shape.width).max(1);
        self.run_chunked(input, shape, per_chunk.max(1))
    }

    /// [`CpuPlan::run`] with the large-map layers on `per_chunk` images at a time. Every kernel
    /// computes an image's values the same way whatever else is in its batch, so the bits do
    /// not depend on `per_chunk` (tested).
    pub(crate) fn run_chunked(
        &self,
        input: Vec<f32>,
        shape: Nhwc,
        per_chunk: usize,
    ) -> Result<Vec<Activation>> {
        let len = shape.len().map_err(kernel_error)?;
        if input.len() != len {
            candle_core::bail!("CPU plan: {} input values for shape {shape:?}", input.len())
        }
        // Steps before `boundary` have large maps: worth running a chunk of images at a time.
        let boundary = self.first_small_step(shape)?;
        let (mut values, next) = if per_chunk < shape.batch && boundary > 0 {
            let values = self.run_in_chunks(&input, shape, per_chunk, boundary)?;
            self.recycle(input);
            (values, boundary)
        } else {
            (self.start(input, shape, len), 0)
        };
        self.run_steps(&mut values, next..self.steps.len())?;
        self.outputs
            .iter()
            .map(|v| match values[v.0].take() {
                Some(Held { mut data, shape, len }) => {
                    data.truncate(len);
                    Ok((data, shape))
                }
                None => candle_core::bail!("CPU plan: output {} was not computed", v.0),
            })
            .collect()
    }

    /// The value slots of a run, the input in the first.
    fn start(&self, input: Vec<f32>, shape: Nhwc, len: usize) -> Vec<Option<Held>> {
        let mut values: Vec<Option<Held>> = Vec::with_capacity(self.steps.len() + 1);
        values.push(Some(Held { data: input, shape, len }));
        values.resize_with(self.steps.len() + 1, || None);
        values
    }

    /// The first step whose output has fewer than [`CHUNKED_MAP_PIXELS`] pixels per image on an
    /// input of `shape` (from the steps' shapes alone, nothing run).
    fn first_small_step(&self, shape: Nhwc) -> Result<usize> {
        let mut shapes = vec![None; self.steps.len() + 1];
        shapes[0] = Some(shape);
        for s in 0..self.steps.len() {
            let out = self.output_shape(s, |v| {
                shapes[v.0].ok_or_else(|| {
                    candle_core::Error::Msg(format!(
                        "CPU plan: value {} read before it is made",
                        v.0
                    ))
                })
            })?;
            if out.height * out.width < CHUNKED_MAP_PIXELS {
                return Ok(s);
            }
            shapes[s + 1] = Some(out);
        }
        Ok(self.steps.len())
    }

    /// Runs steps `0..boundary` on `per_chunk` images at a time, then joins the values still
    /// needed into whole batches; returns the value slots.
    fn run_in_chunks(
        &self,
        input: &[f32],
        shape: Nhwc,
        per_chunk: usize,
        boundary: usize,
    ) -> Result<Vec<Option<Held>>> {
        let image_len = input.len() / shape.batch;
        let mut chunks = Vec::new();
        for first in (0..shape.batch).step_by(per_chunk) {
            let images = per_chunk.min(shape.batch - first);
            let chunk_shape = Nhwc { batch: images, ..shape };
            let mut held = self.held(chunk_shape)?;
            held.values_mut()
                .copy_from_slice(&input[first * image_len..(first + images) * image_len]);
            let mut values = self.start(held.data, chunk_shape, held.len);
            self.run_steps(&mut values, 0..boundary)?;
            chunks.push(values);
        }
        // Join each value still held (read by a later step, or an output) across the chunks:
        // an NHWC batch is image after image, so joining is concatenating.
        let mut values: Vec<Option<Held>> = Vec::new();
        values.resize_with(self.steps.len() + 1, || None);
        for v in 0..=boundary {
            let parts: Vec<Held> = chunks.iter_mut().filter_map(|c| c[v].take()).collect();
            let Some(first) = parts.first() else { continue };
            let joined_shape =
                Nhwc { batch: parts.iter().map(|p| p.shape.batch).sum(), ..first.shape };
            let mut joined = self.held(joined_shape)?;
            let mut at = 0;
            for part in parts {
                joined.values_mut()[at..at + part.len].copy_from_slice(part.values());
                at += part.len;
                self.recycle(part.data);
            }
            values[v] = Some(joined);
        }
        Ok(values)
    }

    /// Runs the steps of `steps`, in order.
    fn run_steps(&self, values: &mut [Option<Held>], steps: Range<usize>) -> Result<()> {
        steps.into_iter().try_for_each(|s| self.run_step(s, values))
    }

    /// The shape step `s` produces, given the shapes of the values it reads.
    fn output_shape(&self, s: usize, shape_of: impl Fn(Value) -> Result<Nhwc>) -> Result<Nhwc> {
        match self.steps[s] {
            Step::Conv { conv, input, .. } => {
                self.convs[conv].output_shape(shape_of(input)?).map_err(kernel_error)
            }
            Step::MaxPool { input, kernel, stride, padding } => {
                let in_shape = shape_of(input)?;
                let padding = pool_padding(padding, in_shape, kernel, stride);
                rpn_kernels::max_pool_shape(in_shape, kernel, stride, padding).map_err(kernel_error)
            }
            Step::UpsampleAdd { large, .. } => shape_of(large),
        }
    }

    /// Runs step `s`: its output into its slot, then frees what it read for the last time.
    fn run_step(&self, s: usize, values: &mut [Option<Held>]) -> Result<()> {
        let out_shape = self.output_shape(s, |v| Ok(taken(values, v)?.1))?;
        let produced = match self.steps[s] {
            Step::Conv { conv, input, residual, relu } => {
                let conv = &self.convs[conv];
                let (i, in_shape) = taken(values, input)?;
                let mut out = self.held(out_shape)?;
                let residual = match residual {
                    Some(r) => Some(taken(values, r)?.0),
                    None => None,
                };
                let epilogue = Epilogue { residual: residual.map(|r| data(values, r)), relu };
                let (input, workers) = (data(values, i), &self.workers);
                conv.forward(input, in_shape, epilogue, out.values_mut(), workers)
                    .map_err(kernel_error)?;
                out
            }
            Step::MaxPool { input, kernel, stride, padding } => {
                let (i, in_shape) = taken(values, input)?;
                let padding = pool_padding(padding, in_shape, kernel, stride);
                let mut out = self.held(out_shape)?;
                rpn_kernels::max_pool(
                    data(values, i),
                    in_shape,
                    kernel,
                    stride,
                    padding,
                    out.values_mut(),
                    &self.workers,
                )
                .map_err(kernel_error)?;
                out
            }
            Step::UpsampleAdd { small, large } => {
                let (si, small_shape) = taken(values, small)?;
                let (li, _) = taken(values, large)?;
                if self.last_use[li] != s + 1 {
                    candle_core::bail!("CPU plan: upsample-add target {li} is read later")
                }
                let Some(mut target) = values[li].take() else {
                    candle_core::bail!("CPU plan: value {li} used after it was freed")
                };
                let target_shape = target.shape;
                rpn_kernels::upsample2_add(
                    data(values, si),
                    small_shape,
                    target.values_mut(),
                    target_shape,
                    &self.workers,
                )
                .map_err(kernel_error)?;
                target
            }
        };
        values[s + 1] = Some(produced);
        // Free what this step read for the last time (the input batch included).
        for v in 0..=s {
            if self.last_use[v] == s + 1 {
                if let Some(held) = values[v].take() {
                    self.recycle(held.data);
                }
            }
        }
        Ok(())
    }

    /// A pooled buffer for a value of `shape`.
    fn held(&self, shape: Nhwc) -> Result<Held> {
        let len = shape.len().map_err(kernel_error)?;
        Ok(Held { data: self.buffer(len), shape, len })
    }
}

/// Value `v`'s slot and shape, or an error if it was freed.
fn taken(values: &[Option<Held>], v: Value) -> Result<(usize, Nhwc)> {
    match &values[v.0] {
        Some(held) => Ok((v.0, held.shape)),
        None => candle_core::bail!("CPU plan: value {} used after it was freed", v.0),
    }
}

/// A max-pool's padding on an input of `in_shape`.
fn pool_padding(padding: PoolPadding, in_shape: Nhwc, kernel: usize, stride: usize) -> Padding {
    match padding {
        PoolPadding::TfSame => Padding::tf_same(in_shape.height, in_shape.width, kernel, stride),
        PoolPadding::Fixed(p) => p,
    }
}

/// Input pixels per chunk of images in the first layers of a batch (images per chunk: this over
/// the input's pixels per image, at least 1). Seed 000's 64×64 batches run 2 images at a time
/// through its stem and first two stages (32×32 maps with 256 channels: 2 MiB per chunk instead
/// of 8 MiB per batch), so that what a layer writes is still in cache when the next reads it.
/// Measured on its batch of 8 (2 threads, 4 interleaved rounds of 40 runs): fastest runs
/// 103–112 ms against 114–126 for the whole batch at once; 1 or 4 images per chunk measured
/// alike.
const CHUNK_PIXELS: usize = 8192;

/// Layers run in chunks of images until the first whose output has fewer pixels per image.
/// Smaller maps run on the whole batch: their GEMMs need the batch's rows (seed 000's 8×8 stage
/// and head, chunked too, measured 10 % slower).
const CHUNKED_MAP_PIXELS: usize = 256;

/// The values of value `j` (empty if it was freed: the step's own checks reported that).
fn data(values: &[Option<Held>], j: usize) -> &[f32] {
    values[j].as_ref().map_or(&[][..], Held::values)
}

/// A value during [`CpuPlan::run`]: its first `len` values in a pooled buffer that may be longer.
struct Held {
    data: Vec<f32>,
    shape: Nhwc,
    len: usize,
}

impl Held {
    fn values(&self) -> &[f32] {
        &self.data[..self.len]
    }

    fn values_mut(&mut self) -> &mut [f32] {
        &mut self.data[..self.len]
    }
}

/// What a model knows about its plan.
#[derive(Debug, Clone, Default)]
enum Cached {
    /// Not compiled yet (or cleared).
    #[default]
    Unknown,
    Plan(Arc<CpuPlan>),
    /// The model holds `Var`s or non-CPU weights: candle's path, always.
    Candle,
}

/// A model's plan, compiled on first use and kept; models holding `Var`s get none (see the
/// module docs). Clones of a model share it.
#[derive(Debug, Clone, Default)]
pub(crate) struct PlanCache(Arc<Mutex<Cached>>);

impl PlanCache {
    /// The cached plan, compiling it with `build` on first use; `None` for models in training.
    pub(crate) fn get(
        &self,
        build: impl FnOnce() -> Result<CpuPlan>,
    ) -> Result<Option<Arc<CpuPlan>>> {
        let mut slot = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Cached::Unknown = *slot {
            *slot = match build() {
                Ok(plan) => Cached::Plan(Arc::new(plan)),
                Err(candle_core::Error::Msg(m)) if m == NOT_PLANNABLE => Cached::Candle,
                Err(e) => return Err(e),
            };
        }
        Ok(match &*slot {
            Cached::Plan(plan) => Some(Arc::clone(plan)),
            _ => None,
        })
    }

    /// Forgets the plan: the model's BatchNorm statistics are about to change.
    pub(crate) fn clear(&self) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Cached::Unknown;
    }
}

/// An NHWC activation as a candle tensor `[B, H, W, C]` (moves the buffer, no copy).
pub(crate) fn to_tensor((data, shape): Activation) -> Result<Tensor> {
    Tensor::from_vec(
        data,
        (shape.batch, shape.height, shape.width, shape.channels),
        &candle_core::Device::Cpu,
    )
}

/// An NHWC activation as an NCHW tensor: a permuted view of the buffer, no copy.
pub(crate) fn nchw_view(activation: Activation) -> Result<Tensor> {
    to_tensor(activation)?.permute((0, 3, 1, 2))
}

/// The outputs of a plan that ended with [`PlanBuilder::pyramid_head`].
pub(crate) struct PyramidOutputs {
    /// The pyramid levels, NCHW views.
    pub(crate) pyramid: Vec<Tensor>,
    /// Each level's class map, NHWC.
    pub(crate) classes: Vec<Activation>,
    /// Each level's box map, NHWC.
    pub(crate) boxes: Vec<Activation>,
}

impl PyramidOutputs {
    pub(crate) fn new(outputs: Vec<Activation>) -> Result<Self> {
        if !outputs.len().is_multiple_of(3) {
            candle_core::bail!("CPU plan: {} outputs are not levels, classes, boxes", outputs.len())
        }
        let levels = outputs.len() / 3;
        let mut outputs = outputs.into_iter();
        let pyramid = outputs.by_ref().take(levels).map(nchw_view).collect::<Result<_>>()?;
        let classes = outputs.by_ref().take(levels).collect();
        Ok(Self { pyramid, classes, boxes: outputs.collect() })
    }
}

/// Head outputs of several levels (`[B, H, W, k·per_anchor]` each) as Keras rows
/// `[B, Σ H·W·k, per_anchor]`, levels concatenated per image: one copy, straight from NHWC.
pub(crate) fn keras_rows(levels: &[Activation], per_anchor: usize) -> Result<Tensor> {
    let Some(batch) = levels.first().map(|(_, s)| s.batch) else {
        candle_core::bail!("CPU plan: no head outputs")
    };
    let per_image: usize = levels.iter().map(|(d, _)| d.len() / batch.max(1)).sum();
    let mut rows = Vec::with_capacity(per_image * batch);
    for b in 0..batch {
        for (data, _) in levels {
            let len = data.len() / batch.max(1);
            rows.extend_from_slice(&data[b * len..(b + 1) * len]);
        }
    }
    Tensor::from_vec(rows, (batch, per_image / per_anchor, per_anchor), &candle_core::Device::Cpu)
}

/// The NHWC input batch of a plan: `images` as a host vector and its shape.
pub(crate) fn plan_input(images: &Tensor) -> Result<Activation> {
    let (b, h, w, c) = images.dims4()?;
    Ok((images.flatten_all()?.to_vec1()?, Nhwc::new(b, h, w, c)))
}

#[cfg(test)]
pub(crate) mod tests {
    use std::collections::HashMap;

    use candle_core::{Device, Tensor};

    use super::*;

    /// `network` with random weights as plain tensors (so it compiles a plan): convolutions
    /// scaled by `1/√fan_in`, γ near 1, small β/means/biases, variances in [0.5, 1.5).
    pub(crate) fn random_model(network: &crate::Network) -> Result<crate::Model> {
        let dev = Device::Cpu;
        let mut tensors = HashMap::new();
        for (name, dims) in network.tensor_shapes()? {
            let t = if dims.len() == 4 {
                let fan_in = (dims[1] * dims[2] * dims[3]) as f64;
                (Tensor::randn(0f32, 1.0, dims.as_slice(), &dev)? / fan_in.sqrt())?
            } else if name.ends_with("running_var") {
                Tensor::rand(0.5f32, 1.5, dims.as_slice(), &dev)?
            } else if name.ends_with("weight") {
                (Tensor::randn(0f32, 0.1, dims.as_slice(), &dev)? + 1.0)?
            } else {
                Tensor::randn(0f32, 0.1, dims.as_slice(), &dev)?
            };
            tensors.insert(name, t);
        }
        network.build_from(tensors, &dev).map_err(|e| candle_core::Error::Msg(e.to_string()))
    }

    /// `|actual − expected| ≤ 1e-4 · max(1, max |expected|)`, elementwise.
    pub(crate) fn assert_close(what: &str, actual: &Tensor, expected: &Tensor) -> Result<()> {
        assert_eq!(actual.dims(), expected.dims(), "{what}");
        let diff = (actual - expected)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
        let scale = expected.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?.max(1.0);
        assert!(diff <= 1e-4 * scale, "{what}: max difference {diff} at scale {scale}");
        Ok(())
    }
}
