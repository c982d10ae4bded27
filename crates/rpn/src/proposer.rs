//! One way from an image to proposals, for every registered architecture.
//!
//! A [`Proposer`] is an [`Architecture`] with its weights loaded once: it preprocesses each image
//! as the architecture says, checks the input against the memory budget before allocating
//! anything, runs the network (images of one input size share a batch), runs the proposal layer
//! on anchors built once per input size, and maps the boxes back to the **original image's
//! pixels**. Matterport's already-molded tensors have their own entry,
//! [`Proposer::propose_molded`], which returns Matterport's normalised `rpn_rois` layout as
//! [`MatterportProposals`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor};
use rpn_anchors::{Anchors, Bbox, ImageSize, NormalizedBox};
use rpn_model::{MatterportRpn, Model, Seed002Head, SeedRpn, TorchvisionRpn, Vgg16};
use rpn_proposals::{
    generate_proposals_with, Clip, Objectness, ProposalConfig, ProposalScratch, Proposals,
};

use crate::arch::{Architecture, Coordinates, Preprocessing, RpnSpec};
use crate::checkpoint;
use crate::data::{resize_to_pixels, Dataset};
use crate::eval::{RecallAccumulator, RecallReport};
use crate::matterport::{mold_square, MoldedImage};
use crate::Error;

/// Environment variable that sets the memory budget, in bytes (`8G`, `512M` and `K` suffixes
/// are understood).
pub const MEMORY_BUDGET_ENV: &str = "RPN_MEMORY_BUDGET";

/// The memory budget when [`MEMORY_BUDGET_ENV`] is not set: 8 GiB, a third of a 24 GiB machine.
pub const DEFAULT_MEMORY_BUDGET: u64 = 8 << 30;

/// Keras' `preprocess_input` (caffe): BGR means subtracted from 0–255 values.
pub const VGG_MEAN_BGR: [f32; 3] = [103.939, 116.779, 123.68];

/// The memory budget from [`MEMORY_BUDGET_ENV`], else [`DEFAULT_MEMORY_BUDGET`].
pub fn memory_budget_from_env() -> Result<u64, Error> {
    match std::env::var(MEMORY_BUDGET_ENV) {
        Ok(text) => parse_bytes(&text).ok_or_else(|| {
            Error::invalid(
                "memory budget",
                format!("{MEMORY_BUDGET_ENV}={text}"),
                "a positive number of bytes, optionally with a K, M or G suffix",
            )
        }),
        Err(_) => Ok(DEFAULT_MEMORY_BUDGET),
    }
}

/// `123`, `64K`, `512M`, `8G` (powers of 1024) → bytes; `None` for anything else or zero.
pub fn parse_bytes(text: &str) -> Option<u64> {
    let text = text.trim();
    let (digits, shift) = match text.char_indices().last()? {
        (i, 'k' | 'K') => (&text[..i], 10),
        (i, 'm' | 'M') => (&text[..i], 20),
        (i, 'g' | 'G') => (&text[..i], 30),
        _ => (text, 0),
    };
    let value: u64 = digits.trim().parse().ok()?;
    value.checked_mul(1u64 << shift).filter(|&v| v > 0)
}

/// How a [`Proposer`] runs. `Default` is the CPU, the architecture's own input size and
/// proposal preset, and the memory budget of [`memory_budget_from_env`].
#[derive(Debug, Clone)]
pub struct ProposerOptions {
    /// Where the network runs.
    pub device: Device,
    /// The backbone's weights, for architectures that have a separate one (seed 002: VGG16).
    pub backbone_weights: Option<PathBuf>,
    /// The input size: the side for the seeds (default: the size the checkpoint was trained
    /// at), the longest side for seed 002 (default 1024), `IMAGE_MAX_DIM` for Matterport
    /// (default 1024).
    pub input_side: Option<u32>,
    /// Replaces the architecture's proposal preset (its clip is set per input where the
    /// architecture clips to the image).
    pub proposals: Option<ProposalConfig>,
    /// Bytes a forward pass may use; `None`: [`memory_budget_from_env`].
    pub memory_budget: Option<u64>,
}

impl Default for ProposerOptions {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            backbone_weights: None,
            input_side: None,
            proposals: None,
            memory_budget: None,
        }
    }
}

/// One proposal in original-image pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ImageProposal {
    /// `x1, y1, x2, y2` in the original image's pixels.
    pub bbox: Bbox,
    /// Objectness probability.
    pub score: f32,
    /// Pyramid level number of its anchor (P2 = 2 … P6 = 6 for FPN models, 0 for one level).
    pub level: usize,
}

/// Where an image sat inside Matterport's molded square.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Molding {
    /// The resized image inside the molded square, molded pixels (`image_meta`'s window).
    pub window: Bbox,
    /// The resize factor from the original image.
    pub scale: f32,
}

/// The proposals of one image.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageProposals {
    /// The image's own size.
    pub original: ImageSize,
    /// The network's input size.
    pub input: ImageSize,
    /// Ranked, best first, in original-image pixels.
    pub proposals: Vec<ImageProposal>,
    /// Matterport's molding of this image (`None` for other architectures).
    pub molding: Option<Molding>,
}

/// Matterport's `rpn_rois` of one molded image: normalised boxes, ranked, with the layer's
/// padded length.
#[derive(Debug, Clone, PartialEq)]
pub struct MatterportProposals {
    /// The molded input size.
    pub input: ImageSize,
    /// Normalised `(y1, x1, y2, x2)` boxes, best first.
    pub rois: Vec<NormalizedBox>,
    /// Their objectness.
    pub scores: Vec<f32>,
    /// Their pyramid level numbers (2 = P2 … 6 = P6).
    pub levels: Vec<usize>,
    /// Rows of `rpn_rois` (the layer's `pad_to`), at least `rois.len()`.
    pub padded_len: usize,
}

impl MatterportProposals {
    /// `rpn_rois` as Matterport lays it out: zero rows after the last proposal up to
    /// [`MatterportProposals::padded_len`].
    pub fn padded_rois(&self) -> Vec<NormalizedBox> {
        let mut rows = self.rois.clone();
        rows.resize(self.padded_len.max(rows.len()), NormalizedBox::default());
        rows
    }
}

/// The network of a proposer, by what its input is.
#[derive(Debug, Clone)]
enum Net {
    Seed(SeedRpn),
    Vgg { backbone: Vgg16, head: Seed002Head },
    Matterport(MatterportRpn),
    Torchvision(TorchvisionRpn),
}

/// The head's objectness for a batch, in the form the network produced it.
enum Scores {
    /// `(background, foreground)` logits (seeds 000/001, Matterport).
    SoftmaxPairs(Vec<[f32; 2]>),
    /// Sigmoid probabilities (seed 002).
    Probabilities(Vec<f32>),
    /// Objectness logits, one per anchor (torchvision).
    Logits(Vec<f32>),
}

/// The head's outputs for a batch on the host: one row per anchor, image after image.
struct HeadOutputs {
    scores: Scores,
    deltas: Vec<[f32; 4]>,
    rows_per_image: usize,
}

impl HeadOutputs {
    /// Image `i`'s objectness and deltas, rows in anchor order.
    fn image(&self, i: usize) -> (Objectness<'_>, &[[f32; 4]]) {
        let rows = i * self.rows_per_image..(i + 1) * self.rows_per_image;
        let objectness = match &self.scores {
            Scores::SoftmaxPairs(p) => Objectness::SoftmaxPairs(&p[rows.clone()]),
            Scores::Probabilities(p) => Objectness::Probabilities(&p[rows.clone()]),
            Scores::Logits(p) => Objectness::Logits(&p[rows.clone()]),
        };
        (objectness, &self.deltas[rows])
    }
}

/// A tensor's values on the host as rows of `K` (`[…, K]` → `Vec<[f32; K]>`): one copy, no
/// allocation per row (261,888 rows for Matterport at 1024²).
fn host_rows<const K: usize>(t: &Tensor) -> Result<Vec<[f32; K]>, Error> {
    let flat = t.to_device(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?;
    Ok(flat.chunks_exact(K).map(|c| std::array::from_fn(|k| c[k])).collect())
}

/// Where one image of a batch came from, to map its boxes back.
#[derive(Clone)]
struct Placement {
    /// The network input (the batch's size).
    input: ImageSize,
    /// The image inside the input (top-left): where proposals are clipped, and what maps to
    /// the original. The input itself except for torchvision's padded batches.
    resized: ImageSize,
    original: ImageSize,
    molded: Option<MoldedImage>,
}

/// An architecture with its weights: images in, proposals in original pixels out.
///
/// ```no_run
/// use rpn::{Architecture, Proposer, ProposerOptions};
///
/// let arch: Architecture = "matterport-resnet50".parse()?;
/// let proposer = Proposer::load(&arch, "mask_rcnn_rpn.safetensors".as_ref(), ProposerOptions::default())?;
/// let photo = image::open("street.jpg").expect("an image");
/// let found = proposer.propose(&photo)?;
/// for p in found.proposals.iter().take(5) {
///     println!("{:?} {:.3} P{}", p.bbox.to_xyxy(), p.score, p.level);
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Proposer {
    arch: Architecture,
    rpn: RpnSpec,
    net: Net,
    options: ProposerOptions,
    /// The input side the seeds' weights were trained at (from the file's metadata).
    trained_side: Option<u32>,
    budget: u64,
    anchors: Mutex<HashMap<ImageSize, Arc<Anchors>>>,
}

impl Proposer {
    /// Loads `arch`'s weights from a safetensors file (`rpn port-keras`, `rpn train`), and the
    /// backbone's from [`ProposerOptions::backbone_weights`] where the architecture has one.
    pub fn load(
        arch: &Architecture,
        weights: &Path,
        options: ProposerOptions,
    ) -> Result<Self, Error> {
        let rpn = rpn_spec(arch)?;
        if rpn.backbone.is_none() && options.backbone_weights.is_some() {
            return Err(Error::Unsupported {
                arch: arch.name,
                what: "it has no separate backbone: backbone weights do not apply".into(),
            });
        }
        let (model, metadata) = checkpoint::load_model(weights, arch, &options.device)?;
        let backbone = match rpn.backbone {
            None => None,
            Some(name) => {
                let backbone: Architecture = name.parse()?;
                let Some(path) = &options.backbone_weights else {
                    return Err(Error::Unsupported {
                        arch: arch.name,
                        what: format!(
                            "it is a head on {name} features: give the {name} weights too \
                             (`rpn port-keras … --arch {name}`, then --backbone-weights)"
                        ),
                    });
                };
                Some(checkpoint::load_model(path, &backbone, &options.device)?.0)
            }
        };
        let trained_side = metadata.get("image_size").and_then(|s| s.parse().ok());
        Self::from_models(arch, model, backbone, trained_side, options)
    }

    /// A proposer over an already-built model (e.g. [`crate::Trainer::proposer`]).
    pub fn from_model(
        arch: &Architecture,
        model: Model,
        trained_side: Option<u32>,
        options: ProposerOptions,
    ) -> Result<Self, Error> {
        Self::from_models(arch, model, None, trained_side, options)
    }

    fn from_models(
        arch: &Architecture,
        model: Model,
        backbone: Option<Model>,
        trained_side: Option<u32>,
        options: ProposerOptions,
    ) -> Result<Self, Error> {
        let rpn = rpn_spec(arch)?.clone();
        let net = match (model, backbone) {
            (Model::SeedRpn(m), None) => Net::Seed(m),
            (Model::Matterport(m), None) => Net::Matterport(m),
            (Model::Torchvision(m), None) => Net::Torchvision(m),
            (Model::Seed002(head), Some(Model::Vgg16(backbone))) => Net::Vgg { backbone, head },
            _ => {
                return Err(Error::Unsupported {
                    arch: arch.name,
                    what: "its network and backbone do not form an RPN the proposer knows".into(),
                })
            }
        };
        let budget = match options.memory_budget {
            Some(b) => b,
            None => memory_budget_from_env()?,
        };
        let proposer = Self {
            arch: arch.clone(),
            rpn,
            net,
            options,
            trained_side,
            budget,
            anchors: Mutex::new(HashMap::new()),
        };
        proposer.check_input_side()?;
        Ok(proposer)
    }

    /// The architecture.
    pub fn architecture(&self) -> &Architecture {
        &self.arch
    }

    /// The proposal layer in use (before the per-input clip).
    pub fn proposal_config(&self) -> ProposalConfig {
        self.options.proposals.unwrap_or(self.rpn.proposals)
    }

    /// The network input size for an image of `original` size.
    pub fn input_size(&self, original: ImageSize) -> ImageSize {
        let requested = self.options.input_side.or(self.trained_side);
        self.rpn.preprocessing.input_size(original, requested)
    }

    /// Proposals for one image.
    pub fn propose(&self, image: &image::DynamicImage) -> Result<ImageProposals, Error> {
        let mut all = self.propose_batch(std::slice::from_ref(image))?;
        all.pop().ok_or_else(|| Error::invalid("batch", 0, "one image was given"))
    }

    /// Proposals for several images; images with the same input size run as one batch (as many
    /// as the memory budget allows).
    pub fn propose_batch(
        &self,
        images: &[image::DynamicImage],
    ) -> Result<Vec<ImageProposals>, Error> {
        if let Some((min_size, max_size)) =
            self.rpn.preprocessing.torchvision_sizes(self.options.input_side)
        {
            return self.propose_torchvision(images, min_size, max_size);
        }
        let mut out = Vec::with_capacity(images.len());
        let mut start = 0;
        while start < images.len() {
            let input = self.input_size(image_size(&images[start])?);
            self.check_budget(input, 1)?;
            let per_image = self.rpn.forward_bytes(input, 1);
            let fit = (self.budget / per_image.max(1)).max(1) as usize;
            let mut end = start + 1;
            while end < images.len()
                && end - start < fit
                && self.input_size(image_size(&images[end])?) == input
            {
                end += 1;
            }
            let (h, w) = (input.height as usize, input.width as usize);
            let mut pixels = Vec::with_capacity((end - start) * h * w * 3);
            let placements = images[start..end]
                .iter()
                .map(|img| self.prepare(img, input, &mut pixels))
                .collect::<Result<Vec<_>, _>>()?;
            out.extend(self.run(pixels, &placements)?);
            start = end;
        }
        Ok(out)
    }

    /// torchvision's batching: consecutive images share a batch while it fits the budget, padded
    /// with zeros to the largest (rounded up to the size divisor), as `batch_images` does.
    fn propose_torchvision(
        &self,
        images: &[image::DynamicImage],
        min_size: u32,
        max_size: u32,
    ) -> Result<Vec<ImageProposals>, Error> {
        let mut out = Vec::with_capacity(images.len());
        let mut start = 0;
        while start < images.len() {
            let mut input = self.input_size(image_size(&images[start])?);
            self.check_budget(input, 1)?;
            let mut end = start + 1;
            while end < images.len() {
                let next = self.input_size(image_size(&images[end])?);
                let merged = ImageSize {
                    height: input.height.max(next.height),
                    width: input.width.max(next.width),
                };
                if self.rpn.forward_bytes(merged, end + 1 - start) > self.budget {
                    break;
                }
                input = merged;
                end += 1;
            }
            let (h, w) = (input.height as usize, input.width as usize);
            let mut pixels = vec![0f32; (end - start) * h * w * 3];
            let mut placements = Vec::with_capacity(end - start);
            for (k, img) in images[start..end].iter().enumerate() {
                let (values, resized) = crate::torchvision_transform(img, min_size, max_size)?;
                let row = resized.width as usize * 3;
                for (y, src) in values.chunks_exact(row).enumerate() {
                    let at = (k * h + y) * w * 3;
                    pixels[at..at + row].copy_from_slice(src);
                }
                placements.push(Placement {
                    input,
                    resized,
                    original: image_size(img)?,
                    molded: None,
                });
            }
            out.extend(self.run(pixels, &placements)?);
            start = end;
        }
        Ok(out)
    }

    /// Matterport's entry for inputs already molded in Python (NHWC `[B, H, W, 3]`, RGB −
    /// `MEAN_PIXEL`, sides multiples of 64): `rpn_rois` in normalised coordinates, bit for bit
    /// the computation Matterport's `ProposalLayer` does.
    pub fn propose_molded(&self, molded: &Tensor) -> Result<Vec<MatterportProposals>, Error> {
        if self.rpn.coordinates != Coordinates::MatterportNormalized {
            return Err(Error::Unsupported {
                arch: self.arch.name,
                what: "molded tensors are Matterport's input; give images instead".into(),
            });
        }
        let (b, h, w, c) = molded.dims4()?;
        let multiple = self.arch.network.stride();
        if c != 3 || h == 0 || w == 0 || h % multiple != 0 || w % multiple != 0 || b == 0 {
            return Err(Error::invalid(
                "molded input shape",
                format!("{:?}", molded.dims()),
                format!("[B ≥ 1, H, W, 3] with H and W positive multiples of {multiple}"),
            ));
        }
        let input = ImageSize::new(h as u32, w as u32)?;
        self.check_budget(input, b)?;
        // 0·x is 0 for finite values and NaN for NaN and ±∞: one reduction on the device.
        let zeroed = molded.to_dtype(DType::F32)?.affine(0.0, 0.0)?;
        let any_non_finite = !zeroed.sum_all()?.to_scalar::<f32>()?.is_finite();
        if any_non_finite {
            return Err(Error::invalid(
                "molded input",
                "with NaN or infinite values",
                "finite values (RGB − MEAN_PIXEL)",
            ));
        }
        let outputs = self.forward(molded)?;
        let anchors = self.anchors_for(input)?;
        let config = self.layer_for(input);
        let mut scratch = ProposalScratch::default();
        (0..b)
            .map(|i| {
                let (objectness, deltas) = outputs.image(i);
                let p = generate_proposals_with(
                    &config,
                    &anchors,
                    objectness,
                    deltas,
                    input,
                    &mut scratch,
                )?;
                Ok(MatterportProposals {
                    input,
                    rois: p
                        .items
                        .iter()
                        .map(|q| NormalizedBox::from_yxyx(q.bbox.to_yxyx()))
                        .collect(),
                    scores: p.items.iter().map(|q| q.score).collect(),
                    levels: p.items.iter().map(|q| q.level + self.rpn.first_level).collect(),
                    padded_len: p.padded_len,
                })
            })
            .collect()
    }

    /// Proposals for images given as data sets give them (HWC RGB in `[0, 1]`, `n` images of
    /// `size`); boxes in `size`'s pixels. Seeds run them as they are (`size` must suit the
    /// network); other architectures preprocess them like decoded images.
    pub fn propose_pixels(
        &self,
        pixels: &[f32],
        n: usize,
        size: ImageSize,
    ) -> Result<Vec<ImageProposals>, Error> {
        let (h, w) = (size.height as usize, size.width as usize);
        let expected =
            h.checked_mul(w).and_then(|hw| hw.checked_mul(3)).and_then(|v| n.checked_mul(v));
        if expected != Some(pixels.len()) {
            return Err(Error::invalid(
                "pixel buffer length",
                pixels.len(),
                format!("{n} images of {h}×{w}×3 values"),
            ));
        }
        if let Some(i) = pixels.iter().position(|v| !v.is_finite()) {
            return Err(Error::invalid("pixel value", pixels[i], format!("finite (value {i})")));
        }
        if let Preprocessing::ResizeUnit { .. } = self.rpn.preprocessing {
            self.check_side(size.height)?;
            self.check_side(size.width)?;
            self.check_budget(size, n)?;
            let placement = Placement { input: size, resized: size, original: size, molded: None };
            return self.run(pixels.to_vec(), &vec![placement; n]);
        }
        let images = pixels
            .chunks_exact(h * w * 3)
            .map(|p| {
                image::Rgb32FImage::from_raw(size.width, size.height, p.to_vec())
                    .map(image::DynamicImage::ImageRgb32F)
                    .ok_or_else(|| Error::invalid("pixel buffer", p.len(), "H·W·3 values"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.propose_batch(&images)
    }

    /// Recall of the proposals on images `0..n` of `dataset` (in batches of `batch`);
    /// `progress` is called with the number of images done.
    pub fn evaluate(
        &self,
        dataset: &dyn Dataset,
        n: usize,
        batch: usize,
        mut progress: impl FnMut(usize),
    ) -> Result<RecallReport, Error> {
        let n = dataset.num_images().map_or(n, |len| n.min(len));
        if n == 0 {
            // Recall of nothing is undefined, not 0.000.
            return Err(Error::invalid(
                "number of images to evaluate",
                n,
                format!("at least 1 image of {}", dataset.describe()),
            ));
        }
        let size = dataset.image_size();
        // Before the first image is generated or decoded at `size`: a batch must fit the budget
        // (the network's estimate where it runs at the data set's size, else the pixels alone).
        let first = batch.max(1).min(n);
        match self.rpn.preprocessing {
            Preprocessing::ResizeUnit { .. } => self.check_budget(size, first)?,
            _ => check_memory(
                || format!("{first} data set images of {}×{}", size.height, size.width),
                (u64::from(size.height) * u64::from(size.width) * 12).saturating_mul(first as u64),
                self.budget,
            )?,
        }
        let mut acc = RecallAccumulator::default();
        let mut start = 0;
        while start < n {
            let count = batch.max(1).min(n - start);
            let samples =
                (start..start + count).map(|i| dataset.get(i)).collect::<Result<Vec<_>, _>>()?;
            let pixels: Vec<f32> = samples.iter().flat_map(|s| s.pixels.iter().copied()).collect();
            for (sample, found) in samples.iter().zip(self.propose_pixels(&pixels, count, size)?) {
                let boxes: Vec<Bbox> = found.proposals.iter().map(|p| p.bbox).collect();
                acc.add(&boxes, &sample.boxes);
            }
            start += count;
            progress(start);
        }
        let report = acc.report();
        if report.gt_boxes == 0 {
            return Err(Error::invalid(
                "number of ground-truth boxes",
                0,
                format!(
                    "at least 1 in the {n} evaluated images of {}: recall is undefined without any",
                    dataset.describe()
                ),
            ));
        }
        Ok(report)
    }

    /// Rejects an input side the network cannot run (not a multiple of its stride).
    fn check_input_side(&self) -> Result<(), Error> {
        match (self.rpn.preprocessing, self.options.input_side.or(self.trained_side)) {
            (Preprocessing::VggCaffe { multiple, .. }, Some(side)) if side < multiple => {
                Err(Error::invalid("input side", side, format!("at least {multiple}")))
            }
            (
                Preprocessing::ResizeUnit { .. } | Preprocessing::MatterportSquare { .. },
                Some(side),
            ) => self.check_side(side),
            _ => Ok(()),
        }
    }

    fn check_side(&self, side: u32) -> Result<(), Error> {
        let stride = self.arch.network.stride() as u32;
        if side == 0 || !side.is_multiple_of(stride) {
            return Err(Error::invalid(
                "input side",
                side,
                format!("a positive multiple of {}'s stride {stride}", self.arch.name),
            ));
        }
        Ok(())
    }

    fn check_budget(&self, input: ImageSize, n: usize) -> Result<(), Error> {
        check_memory(
            || {
                format!(
                    "{} on {n} input(s) of {}×{} (height × width)",
                    self.arch.name, input.height, input.width
                )
            },
            self.rpn.forward_bytes(input, n),
            self.budget,
        )
    }

    /// Preprocesses one image for an `input`-sized network input, appending its values to
    /// `batch` (the batch's one buffer).
    fn prepare(
        &self,
        img: &image::DynamicImage,
        input: ImageSize,
        batch: &mut Vec<f32>,
    ) -> Result<Placement, Error> {
        let original = image_size(img)?;
        let mut molded = None;
        match self.rpn.preprocessing {
            Preprocessing::ResizeUnit { .. } => batch.extend(resize_to_pixels(img, input).0),
            Preprocessing::VggCaffe { .. } => {
                let (unit, _) = resize_to_pixels(img, input);
                batch.extend(unit.chunks_exact(3).flat_map(|p| {
                    [
                        p[2] * 255.0 - VGG_MEAN_BGR[0],
                        p[1] * 255.0 - VGG_MEAN_BGR[1],
                        p[0] * 255.0 - VGG_MEAN_BGR[2],
                    ]
                }));
            }
            Preprocessing::MatterportSquare { min_dim, .. } => {
                let mut m = mold_square(img, min_dim.min(input.height), input.height)?;
                batch.append(&mut m.pixels);
                molded = Some(m);
            }
            Preprocessing::TorchvisionTransform { .. } => {
                return Err(Error::Unsupported {
                    arch: self.arch.name,
                    what: "torchvision batches are prepared by `propose_torchvision`".into(),
                })
            }
        }
        Ok(Placement { input, resized: input, original, molded })
    }

    /// Runs one batch of `input`-sized images (`pixels`, NHWC) and maps each image's proposals
    /// back to its original.
    fn run(&self, pixels: Vec<f32>, images: &[Placement]) -> Result<Vec<ImageProposals>, Error> {
        let Some(first) = images.first() else { return Ok(Vec::new()) };
        let input = first.input;
        let (h, w) = (input.height as usize, input.width as usize);
        let x = Tensor::from_vec(pixels, (images.len(), h, w, 3), &Device::Cpu)?;
        let outputs = self.forward(&x)?;
        let anchors = self.anchors_for(input)?;
        let mut scratch = ProposalScratch::default();
        images
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let (objectness, deltas) = outputs.image(i);
                let found = generate_proposals_with(
                    &self.layer_for(p.resized),
                    &anchors,
                    objectness,
                    deltas,
                    p.resized,
                    &mut scratch,
                )?;
                Ok(self.to_original(p, &found))
            })
            .collect()
    }

    /// The network on an NHWC batch → the head's outputs on the host.
    fn forward(&self, x: &Tensor) -> Result<HeadOutputs, Error> {
        let x = x.to_device(&self.options.device)?;
        let (scores, deltas) = match &self.net {
            Net::Seed(m) => {
                let o = m.forward_nhwc(&x)?;
                (Scores::SoftmaxPairs(host_rows(&o.logits)?), o.deltas)
            }
            Net::Matterport(m) => {
                let o = m.forward_nhwc(&x)?;
                (Scores::SoftmaxPairs(host_rows(&o.logits)?), o.deltas)
            }
            Net::Torchvision(m) => {
                let o = m.forward(&rpn_model::nhwc_to_nchw(&x)?)?;
                let logits = o.objectness.to_device(&Device::Cpu)?.flatten_all()?.to_vec1()?;
                (Scores::Logits(logits), o.deltas)
            }
            Net::Vgg { backbone, head } => {
                let features = backbone.forward_nhwc(&x)?;
                let o = head.forward_nhwc(&features.permute((0, 2, 3, 1))?.contiguous()?)?;
                // `[B, H, W, k]` and `[B, H, W, 4k]`: row `(y·W + x)·k + a`, as the anchors.
                let probabilities =
                    o.classification.to_device(&Device::Cpu)?.flatten_all()?.to_vec1::<f32>()?;
                (Scores::Probabilities(probabilities), o.location)
            }
        };
        let deltas = host_rows(&deltas)?;
        let rows_per_image = deltas.len() / x.dim(0)?.max(1);
        Ok(HeadOutputs { scores, deltas, rows_per_image })
    }

    /// The anchors for `input`, built on first use and shared afterwards.
    fn anchors_for(&self, input: ImageSize) -> Result<Arc<Anchors>, Error> {
        let mut cache = self.anchors.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(a) = cache.get(&input) {
            return Ok(Arc::clone(a));
        }
        let anchors = Arc::new(match self.rpn.coordinates {
            Coordinates::MatterportNormalized => {
                self.rpn.anchors.generate_matterport_normalized(input)?
            }
            _ => self.rpn.anchors.generate(input)?,
        });
        cache.insert(input, Arc::clone(&anchors));
        Ok(anchors)
    }

    /// The proposal layer for one input size: pixel architectures clip to the input.
    fn layer_for(&self, input: ImageSize) -> ProposalConfig {
        let config = self.proposal_config();
        match self.rpn.coordinates {
            Coordinates::MatterportNormalized => config,
            _ => ProposalConfig { clip: Clip::Window(input.as_bbox()), ..config },
        }
    }

    /// Boxes of the network input → the original image.
    fn to_original(&self, p: &Placement, found: &Proposals) -> ImageProposals {
        let level = |l: usize| l + self.rpn.first_level;
        let proposals = match (&p.molded, self.rpn.coordinates) {
            (Some(molded), Coordinates::MatterportNormalized) => found
                .items
                .iter()
                .map(|q| ImageProposal {
                    bbox: molded.to_original(
                        &NormalizedBox::from_yxyx(q.bbox.to_yxyx()).to_pixels(p.input),
                    ),
                    score: q.score,
                    level: level(q.level),
                })
                .collect(),
            _ => {
                let sx = p.original.width as f32 / p.resized.width as f32;
                let sy = p.original.height as f32 / p.resized.height as f32;
                found
                    .items
                    .iter()
                    .map(|q| ImageProposal {
                        bbox: Bbox::new(
                            q.bbox.x1 * sx,
                            q.bbox.y1 * sy,
                            q.bbox.x2 * sx,
                            q.bbox.y2 * sy,
                        )
                        .clip_to(p.original),
                        score: q.score,
                        level: level(q.level),
                    })
                    .collect()
            }
        };
        ImageProposals {
            original: p.original,
            input: p.input,
            proposals,
            molding: p.molded.as_ref().map(|m| Molding { window: m.window, scale: m.scale }),
        }
    }
}

/// The RPN description of `arch`, or why it has none.
fn rpn_spec(arch: &Architecture) -> Result<&RpnSpec, Error> {
    arch.rpn().ok_or_else(|| Error::Unsupported {
        arch: arch.name,
        what: "it is a backbone without an RPN head; use the architecture whose backbone it is"
            .into(),
    })
}

/// The size of a decoded image, rejecting an empty one.
fn image_size(img: &image::DynamicImage) -> Result<ImageSize, Error> {
    Ok(ImageSize::new(img.height(), img.width())?)
}

/// Refuses work whose memory estimate `needed` exceeds `budget`; `what` names the work.
pub(crate) fn check_memory(
    what: impl FnOnce() -> String,
    needed: u64,
    budget: u64,
) -> Result<(), Error> {
    if needed > budget {
        return Err(Error::OverMemoryBudget {
            what: what(),
            needed_bytes: needed,
            budget_bytes: budget,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_sizes_parse() {
        assert_eq!(parse_bytes("123"), Some(123));
        assert_eq!(parse_bytes("64K"), Some(64 << 10));
        assert_eq!(parse_bytes(" 512m "), Some(512 << 20));
        assert_eq!(parse_bytes("8G"), Some(8 << 30));
        for bad in ["", "G", "-1", "0", "1.5G", "99999999999999G", "8 GB"] {
            assert_eq!(parse_bytes(bad), None, "{bad}");
        }
    }
}
