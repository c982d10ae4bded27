//! `rpn propose`: proposals for PNG/JPEG images, in the original images' pixels.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use clap::ValueEnum;
use rpn::model::Arch;
use rpn::{
    mold_square, resize_to_pixels, seed_configs, MatterportPipeline, MoldedImage, RpnPipeline,
    Seed002Pipeline,
};
use rpn_anchors::{Bbox, ImageSize};
use rpn_proposals::{Proposal, ProposalConfig};

use crate::{draw, CliError};

/// How Matterport proposals are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// `x1, y1, x2, y2` in original-image pixels (molded pixels for `--input`).
    Pixels,
    /// Normalised `y1, x1, y2, x2`, zero-padded to the layer's count, like `rpn_rois`.
    Matterport,
}

/// Matterport's proposal layer settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Preset {
    /// Top 6000 → NMS 0.7 → 1000 (`POST_NMS_ROIS_INFERENCE`).
    MatterportInference,
    /// Top 6000 → NMS 0.7 → 2000 (`POST_NMS_ROIS_TRAINING`).
    MatterportTraining,
}

/// What `rpn propose` was asked to do.
#[derive(Debug, Clone)]
pub(crate) struct ProposeArgs {
    pub(crate) arch: Arch,
    pub(crate) weights: PathBuf,
    pub(crate) backbone_weights: Option<PathBuf>,
    pub(crate) images: Vec<PathBuf>,
    pub(crate) input: Option<PathBuf>,
    pub(crate) output: PathBuf,
    pub(crate) draw: Option<PathBuf>,
    /// `None`: 100, or every row of the layer for `--format matterport`.
    pub(crate) top: Option<usize>,
    pub(crate) image_size: Option<usize>,
    pub(crate) format: Format,
    pub(crate) preset: Preset,
}

/// The network's input size for an `width × height` image: `--image-size` if given, else the
/// image's own size rounded down to the backbone stride (at least one stride).
fn input_size(
    arch: Arch,
    width: u32,
    height: u32,
    requested: Option<usize>,
) -> Result<ImageSize, CliError> {
    let stride = if arch == Arch::Seed002 {
        16 // VGG16's block5_conv3
    } else {
        let (backbone, _) = seed_configs(arch)?;
        1u32 << backbone.blocks.len()
    };
    let (h, w) = match requested {
        Some(side) => {
            let side = u32::try_from(side)
                .map_err(|_| CliError::Usage(format!("--image-size {side} is too large")))?;
            if side == 0 || !side.is_multiple_of(stride) {
                return Err(CliError::Usage(format!(
                    "--image-size {side} must be a positive multiple of {}'s stride {stride}",
                    arch.name()
                )));
            }
            (side, side)
        }
        None => ((height / stride).max(1) * stride, (width / stride).max(1) * stride),
    };
    ImageSize::new(h, w).map_err(|e| CliError::Usage(e.to_string()))
}

/// `draw` for image `i` of `n`: the path itself for one image, `stem_i.ext` for several.
fn numbered(path: &Path, i: usize, n: usize) -> PathBuf {
    if n == 1 {
        return path.to_path_buf();
    }
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let ext = path.extension().map(|s| s.to_string_lossy().into_owned()).unwrap_or("png".into());
    path.with_file_name(format!("{stem}_{i}.{ext}"))
}

/// Proposals listed per image unless `--top` says otherwise.
const DEFAULT_TOP: usize = 100;

pub(crate) fn propose(args: &ProposeArgs, device: Device) -> Result<String, CliError> {
    if args.arch.matterport_config().is_some() {
        return propose_matterport(args, device);
    }
    let top = args.top.unwrap_or(DEFAULT_TOP);
    if args.input.is_some() {
        return Err(CliError::Usage(
            "--input (a molded tensor) is for Matterport architectures; give --image".into(),
        ));
    }
    if args.output.extension().is_none_or(|e| e != "json") {
        return Err(CliError::Usage(format!(
            "{}: seed models write proposals as .json",
            args.output.display()
        )));
    }
    if args.images.is_empty() {
        return Err(CliError::Usage("give at least one --image".into()));
    }
    // Seed 002 runs VGG16 + its head at any size; seeds 000/001 need a pipeline per size.
    let seed002 =
        match (args.arch, &args.backbone_weights) {
            (Arch::Seed002, Some(vgg)) => {
                Some(Seed002Pipeline::load(&args.weights, vgg, device.clone())?)
            }
            (Arch::Seed002, None) => return Err(CliError::Usage(
                "seed002 is a head on VGG16 features: give --backbone-weights (VGG16 ported with \
                 `rpn port-keras … --arch vgg16`)"
                    .into(),
            )),
            _ => None,
        };
    let mut pipelines: HashMap<ImageSize, RpnPipeline> = HashMap::new();
    let mut entries = Vec::new();
    let mut drawn = Vec::new();
    for (i, file) in args.images.iter().enumerate() {
        let decoded = image::open(file).map_err(|e| {
            CliError::Usage(format!("{}: cannot decode the image: {e}", file.display()))
        })?;
        let (width, height) = (decoded.width(), decoded.height());
        let size = input_size(args.arch, width, height, args.image_size)?;
        let (pixels, _) = resize_to_pixels(&decoded, size);
        let proposals = match &seed002 {
            Some(p) => p.propose(&pixels, size)?,
            None => {
                let pipeline = match pipelines.entry(size) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(RpnPipeline::load(args.arch, &args.weights, size, device.clone())?)
                    }
                };
                pipeline.propose(&pixels, 1)?.remove(0)
            }
        };
        let (sx, sy) = (width as f32 / size.width as f32, height as f32 / size.height as f32);
        let in_original: Vec<Proposal> = proposals
            .items
            .iter()
            .take(top)
            .map(|p| Proposal {
                bbox: Bbox::new(p.bbox.x1 * sx, p.bbox.y1 * sy, p.bbox.x2 * sx, p.bbox.y2 * sy),
                ..*p
            })
            .collect();
        entries.push(serde_json::json!({
            "file": file.display().to_string(),
            "width": width,
            "height": height,
            "input_size": [size.height, size.width],
            "proposals": in_original.iter().map(|p| serde_json::json!({
                "box": [p.bbox.x1, p.bbox.y1, p.bbox.x2, p.bbox.y2],
                "score": p.score,
                "level": p.level,
            })).collect::<Vec<_>>(),
        }));
        if let Some(draw_path) = &args.draw {
            let path = numbered(draw_path, i, args.images.len());
            draw::draw_boxes(&decoded.to_rgb8(), &[], &in_original, top.min(10), &path)?;
            drawn.push(path.display().to_string());
        }
    }
    let json = serde_json::json!({
        "arch": args.arch.name(),
        "weights": args.weights.display().to_string(),
        "box_format": "x1,y1,x2,y2 in original-image pixels",
        "images": entries,
    });
    let text = serde_json::to_string_pretty(&json).map_err(|e| CliError::Usage(e.to_string()))?;
    std::fs::write(&args.output, text)
        .map_err(|e| CliError::Usage(format!("{}: {e}", args.output.display())))?;
    let mut report = format!(
        "wrote up to {} proposals per image for {} image(s) to {}",
        top,
        args.images.len(),
        args.output.display()
    );
    if !drawn.is_empty() {
        report.push_str(&format!("; drew {}", drawn.join(", ")));
    }
    Ok(report)
}

/// One Matterport image's proposals, ranked: normalised boxes, scores, and (for `--image`) the
/// molding that maps them back.
struct MatterportResult {
    file: String,
    proposals: Vec<Proposal>,
    padded_len: usize,
    molded: Option<MoldedImage>,
}

fn propose_matterport(args: &ProposeArgs, device: Device) -> Result<String, CliError> {
    let ext = args.output.extension().and_then(|e| e.to_str()).unwrap_or("");
    if ext != "json" && ext != "npz" {
        return Err(CliError::Usage(format!(
            "{}: Matterport proposals are written as .json or .npz",
            args.output.display()
        )));
    }
    let max_dim = args.image_size.unwrap_or(1024);
    if max_dim == 0 || !max_dim.is_multiple_of(64) {
        return Err(CliError::Usage(format!(
            "--image-size {max_dim}: Matterport's IMAGE_MAX_DIM must be a positive multiple of 64"
        )));
    }
    let layer = match args.preset {
        Preset::MatterportInference => ProposalConfig::matterport_inference(),
        Preset::MatterportTraining => ProposalConfig::matterport_training(),
    };
    let top = match (args.top, args.format) {
        (Some(top), _) => top,
        (None, Format::Matterport) => layer.pad_to.unwrap_or(layer.post_nms_top_k),
        (None, Format::Pixels) => DEFAULT_TOP,
    };
    let mut results = Vec::new();
    let mut image_size = None;
    // Every molded image has the same size: the weights are read once.
    let mut pipeline: Option<MatterportPipeline> = None;
    let mut run = |molded: &Tensor| -> Result<Vec<rpn_proposals::Proposals>, CliError> {
        let (_, h, w, _) = molded.dims4().map_err(|e| CliError::Usage(format!("input: {e}")))?;
        let size =
            ImageSize::new(h as u32, w as u32).map_err(|e| CliError::Usage(e.to_string()))?;
        image_size = Some(size);
        let mut loaded = match pipeline.take() {
            Some(p) if p.image == size => p,
            Some(p) => MatterportPipeline::new(p.model, size, device.clone())?,
            None => MatterportPipeline::load(args.arch, &args.weights, size, device.clone())?,
        };
        loaded.proposals = layer;
        Ok(pipeline.insert(loaded).run(molded)?.proposals)
    };
    if let Some(input) = &args.input {
        let x = Tensor::read_npy(input)
            .and_then(|x| x.to_dtype(candle_core::DType::F32))
            .map_err(|e| CliError::Usage(format!("{}: {e}", input.display())))?;
        if x.rank() != 4 || x.dim(3).ok() != Some(3) {
            return Err(CliError::Usage(format!(
                "{}: expected molded NHWC images [B, H, W, 3], got {:?}",
                input.display(),
                x.dims()
            )));
        }
        for (i, p) in run(&x)?.into_iter().enumerate() {
            results.push(MatterportResult {
                file: format!("{}[{i}]", input.display()),
                proposals: p.items,
                padded_len: p.padded_len,
                molded: None,
            });
        }
    } else {
        for file in &args.images {
            let decoded = image::open(file).map_err(|e| {
                CliError::Usage(format!("{}: cannot decode the image: {e}", file.display()))
            })?;
            let molded = mold_square(&decoded, 800.min(max_dim as u32), max_dim as u32)?;
            let side = max_dim;
            let x = Tensor::from_slice(&molded.pixels, (1, side, side, 3), &Device::Cpu)
                .map_err(|e| CliError::Usage(e.to_string()))?;
            let p = run(&x)?.remove(0);
            results.push(MatterportResult {
                file: file.display().to_string(),
                proposals: p.items,
                padded_len: p.padded_len,
                molded: Some(molded),
            });
        }
    }
    let Some(size) = image_size else {
        return Err(CliError::Usage("no input: give --image or --input".into()));
    };
    // A proposal's `Bbox` holds Matterport's normalised coordinates (x in x1/x2, y in y1/y2):
    // `(y1, x1, y2, x2)` → pixels of the molded image → original pixels.
    let to_pixels = |r: &MatterportResult, p: &Proposal| {
        let molded = Bbox::from_matterport_normalized(p.bbox.to_yxyx(), size);
        match &r.molded {
            Some(m) => m.to_original(&molded),
            None => molded,
        }
    };
    let rows = |r: &MatterportResult| -> Vec<([f32; 4], f32, usize)> {
        r.proposals
            .iter()
            .take(top)
            .map(|p| {
                let coords = match args.format {
                    Format::Pixels => to_pixels(r, p).to_xyxy(),
                    Format::Matterport => p.bbox.to_yxyx(),
                };
                (coords, p.score, p.level)
            })
            .collect()
    };
    if ext == "npz" {
        // Matterport's `rpn_rois`: a fixed number of rows per image, zero rows after the last.
        let n =
            results.iter().map(|r| r.padded_len.max(r.proposals.len()).min(top)).max().unwrap_or(0);
        let (mut boxes, mut scores) = (Vec::new(), Vec::new());
        for r in &results {
            let rows = rows(r);
            for i in 0..n {
                let (b, s, _) = rows.get(i).copied().unwrap_or(([0.0; 4], 0.0, 0));
                boxes.extend(b);
                scores.push(s);
            }
        }
        let b = results.len();
        let boxes = Tensor::from_vec(boxes, (b, n, 4), &Device::Cpu);
        let scores = Tensor::from_vec(scores, (b, n), &Device::Cpu);
        let (boxes, scores) = match (boxes, scores) {
            (Ok(x), Ok(y)) => (x, y),
            (Err(e), _) | (_, Err(e)) => return Err(CliError::Usage(e.to_string())),
        };
        Tensor::write_npz(&[("proposals", &boxes), ("scores", &scores)], &args.output)
            .map_err(|e| CliError::Usage(format!("{}: {e}", args.output.display())))?;
    } else {
        let images: Vec<serde_json::Value> = results
            .iter()
            .map(|r| {
                serde_json::json!({
                    "file": r.file,
                    "window": r.molded.as_ref().map(|m| m.window.to_yxyx()),
                    "scale": r.molded.as_ref().map(|m| m.scale),
                    "proposals": rows(r).iter().map(|(b, s, l)| serde_json::json!({
                        "box": b, "score": s, "level": l + 2,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let box_format = match args.format {
            Format::Pixels if args.input.is_some() => "x1,y1,x2,y2 in molded-image pixels",
            Format::Pixels => "x1,y1,x2,y2 in original-image pixels",
            Format::Matterport => "y1,x1,y2,x2 normalised as Matterport's rpn_rois",
        };
        let json = serde_json::json!({
            "arch": args.arch.name(),
            "weights": args.weights.display().to_string(),
            "box_format": box_format,
            "level": "FPN level P2..P6",
            "images": images,
        });
        let text =
            serde_json::to_string_pretty(&json).map_err(|e| CliError::Usage(e.to_string()))?;
        std::fs::write(&args.output, text)
            .map_err(|e| CliError::Usage(format!("{}: {e}", args.output.display())))?;
    }
    let mut drawn = Vec::new();
    if let Some(draw_path) = &args.draw {
        for (i, r) in results.iter().enumerate() {
            let Some(file) = args.images.get(i) else { continue };
            let decoded = image::open(file).map_err(|e| {
                CliError::Usage(format!("{}: cannot decode the image: {e}", file.display()))
            })?;
            let in_original: Vec<Proposal> = r
                .proposals
                .iter()
                .take(top)
                .map(|p| Proposal { bbox: to_pixels(r, p), ..*p })
                .collect();
            let path = numbered(draw_path, i, results.len());
            draw::draw_boxes(&decoded.to_rgb8(), &[], &in_original, top.min(10), &path)?;
            drawn.push(path.display().to_string());
        }
    }
    let mut report = format!(
        "wrote up to {} proposals per image for {} image(s) ({}×{} molded) to {}",
        top,
        results.len(),
        size.height,
        size.width,
        args.output.display()
    );
    if !drawn.is_empty() {
        report.push_str(&format!("; drew {}", drawn.join(", ")));
    }
    Ok(report)
}
