//! `rpn propose`: proposals for PNG/JPEG images in the original images' pixels, or for
//! Matterport's already-molded tensors. Every architecture goes through [`rpn::Proposer`]; this
//! module only reads the files and writes the results.

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use clap::ValueEnum;
use rpn::{Architecture, ImageProposals, MatterportProposals, Proposer, ProposerOptions};
use rpn_proposals::ProposalConfig;

use rpn_io::AtomicFile;

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
    pub(crate) arch: Architecture,
    pub(crate) weights: PathBuf,
    pub(crate) backbone_weights: Option<PathBuf>,
    pub(crate) images: Vec<PathBuf>,
    pub(crate) input: Option<PathBuf>,
    pub(crate) output: PathBuf,
    pub(crate) draw: Option<PathBuf>,
    /// `None`: 100, or every row of the layer for `--format matterport`.
    pub(crate) top: Option<usize>,
    pub(crate) image_size: Option<u32>,
    pub(crate) format: Option<Format>,
    pub(crate) preset: Option<Preset>,
    pub(crate) memory_budget: Option<u64>,
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

/// Whether `arch` is Matterport's (its proposal layer runs in normalised coordinates).
fn is_matterport(arch: &Architecture) -> bool {
    arch.rpn().is_some_and(|r| r.coordinates == rpn::Coordinates::MatterportNormalized)
}

pub(crate) fn propose(args: &ProposeArgs, device: Device) -> Result<String, CliError> {
    let matterport = is_matterport(&args.arch);
    let ext = args.output.extension().and_then(|e| e.to_str()).unwrap_or("");
    // Flags that mean something for Matterport only are refused elsewhere, not ignored.
    if !matterport {
        for (flag, given) in [
            ("--input", args.input.is_some()),
            ("--format", args.format.is_some()),
            ("--preset", args.preset.is_some()),
        ] {
            if given {
                return Err(CliError::Usage(format!(
                    "{flag} is for the Matterport architectures, not {}",
                    args.arch.name
                )));
            }
        }
    }
    if ext != "json" && !(matterport && ext == "npz") {
        let allowed = if matterport { ".json or .npz" } else { ".json" };
        return Err(CliError::Usage(format!(
            "{}: {} writes proposals as {allowed}",
            args.output.display(),
            args.arch.name
        )));
    }
    if args.backbone_weights.is_some() && args.arch.rpn().is_some_and(|r| r.backbone.is_none()) {
        return Err(CliError::Usage(format!(
            "--backbone-weights is for heads on a separate backbone (seed002), not {}",
            args.arch.name
        )));
    }
    if let Some(backbone) = args.arch.rpn().and_then(|r| r.backbone) {
        if args.backbone_weights.is_none() {
            return Err(CliError::Usage(format!(
                "{} is a head on {backbone} features: give --backbone-weights (the {backbone} \
                 weights, `rpn port-keras … --arch {backbone}`)",
                args.arch.name
            )));
        }
    }
    if args.input.is_some() && args.draw.is_some() {
        return Err(CliError::Usage(
            "--draw needs --image: a molded --input has no picture to draw on".into(),
        ));
    }
    if args.images.is_empty() && args.input.is_none() {
        return Err(CliError::Usage("give at least one --image".into()));
    }
    if args.input.is_none() && args.format == Some(Format::Matterport) {
        return Err(CliError::Usage(
            "--format matterport writes rpn_rois of molded inputs: give --input".into(),
        ));
    }
    if args.input.is_none() && ext == "npz" {
        return Err(CliError::Usage(format!(
            "{}: .npz holds rpn_rois of molded inputs (--input); proposals for images are .json",
            args.output.display()
        )));
    }
    // Every output is opened (and so checked) before anything is loaded or computed, and
    // committed only once everything has been: a failure leaves all old files as they were.
    let output = AtomicFile::create(&args.output)?;
    let pictures = match &args.draw {
        Some(draw_path) => (0..args.images.len())
            .map(|i| AtomicFile::create(&numbered(draw_path, i, args.images.len())))
            .collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };
    let input_side = args.image_size;
    let mut options = ProposerOptions {
        device,
        backbone_weights: args.backbone_weights.clone(),
        input_side,
        memory_budget: args.memory_budget,
        ..ProposerOptions::default()
    };
    if let Some(preset) = args.preset {
        options.proposals = Some(match preset {
            Preset::MatterportInference => ProposalConfig::matterport_inference(),
            Preset::MatterportTraining => ProposalConfig::matterport_training(),
        });
    }
    let proposer = Proposer::load(&args.arch, &args.weights, options)?;
    let format = args.format.unwrap_or(Format::Pixels);

    if let Some(input) = &args.input {
        return propose_molded(args, &proposer, input, format, output);
    }
    let top = args.top.unwrap_or(DEFAULT_TOP);
    // Decode everything first: a bad file fails before any output is written.
    let decoded = args
        .images
        .iter()
        .map(|file| {
            image::open(file)
                .map_err(|source| CliError::Image { path: file.clone(), source: Box::new(source) })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let results = proposer.propose_batch(&decoded)?;
    let entries: Vec<serde_json::Value> =
        args.images.iter().zip(&results).map(|(file, r)| image_entry(file, r, top)).collect();
    let json = serde_json::json!({
        "arch": args.arch.name,
        "weights": args.weights.display().to_string(),
        "box_format": "x1,y1,x2,y2 in original-image pixels",
        "level": level_note(&args.arch),
        "images": entries,
    });
    let mut output = output;
    output.write_all(crate::json_pretty(&json)?.as_bytes())?;
    let mut drawn = Vec::new();
    for ((img, r), picture) in decoded.iter().zip(&results).zip(&pictures) {
        let shown: Vec<_> = r.proposals.iter().take(top).copied().collect();
        draw::draw_boxes(&img.to_rgb8(), &[], &shown, top.min(10), picture)?;
        drawn.push(picture.destination().display().to_string());
    }
    output.commit()?;
    for picture in pictures {
        picture.commit()?;
    }
    let sizes: Vec<String> = results
        .iter()
        .map(|r| format!("{}×{}", r.input.width, r.input.height))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut report = format!(
        "wrote up to {top} proposals per image for {} image(s) (network input {}) to {}",
        results.len(),
        sizes.join(", "),
        args.output.display()
    );
    if !drawn.is_empty() {
        report.push_str(&format!("; drew {}", drawn.join(", ")));
    }
    Ok(report)
}

/// What `level` means in the JSON of `arch`.
fn level_note(arch: &Architecture) -> &'static str {
    match arch.rpn().map(|r| r.first_level) {
        Some(2) => "FPN level P2..P6",
        _ => "0 (one feature level)",
    }
}

/// One image's entry: the same keys for every architecture, Matterport's molding added.
fn image_entry(file: &Path, r: &ImageProposals, top: usize) -> serde_json::Value {
    let mut entry = serde_json::json!({
        "file": file.display().to_string(),
        "width": r.original.width,
        "height": r.original.height,
        "input_size": [r.input.height, r.input.width],
        "proposals": r.proposals.iter().take(top).map(|p| serde_json::json!({
            "box": p.bbox.to_xyxy(),
            "score": p.score,
            "level": p.level,
        })).collect::<Vec<_>>(),
    });
    if let (Some(m), Some(map)) = (&r.molding, entry.as_object_mut()) {
        map.insert("window".into(), serde_json::json!(m.window.to_yxyx()));
        map.insert("scale".into(), serde_json::json!(m.scale));
    }
    entry
}

/// `--input molded.npy`: Matterport's `rpn_rois` (normalised) or molded-pixel boxes.
fn propose_molded(
    args: &ProposeArgs,
    proposer: &Proposer,
    input: &Path,
    format: Format,
    mut output: AtomicFile,
) -> Result<String, CliError> {
    let x = crate::read_nhwc(input, Some(3))?;
    let results = proposer.propose_molded(&x)?;
    let layer = proposer.proposal_config();
    let top = match (args.top, format) {
        (Some(top), _) => top,
        (None, Format::Matterport) => layer.pad_to.unwrap_or(layer.post_nms_top_k),
        (None, Format::Pixels) => DEFAULT_TOP,
    };
    let rows = |r: &MatterportProposals| -> Vec<([f32; 4], f32, usize)> {
        r.rois
            .iter()
            .zip(&r.scores)
            .zip(&r.levels)
            .take(top)
            .map(|((b, &s), &l)| {
                let coords = match format {
                    Format::Pixels => b.to_pixels(r.input).to_xyxy(),
                    Format::Matterport => b.to_yxyx(),
                };
                (coords, s, l)
            })
            .collect()
    };
    let ext = args.output.extension().and_then(|e| e.to_str()).unwrap_or("");
    if ext == "npz" {
        // Matterport's `rpn_rois`: a fixed number of rows per image, zero rows after the last.
        let n = results.iter().map(|r| r.padded_len.max(r.rois.len()).min(top)).max().unwrap_or(0);
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
        let write = || -> candle_core::Result<()> {
            let boxes = Tensor::from_vec(boxes, (b, n, 4), &Device::Cpu)?;
            let scores = Tensor::from_vec(scores, (b, n), &Device::Cpu)?;
            Tensor::write_npz(&[("proposals", &boxes), ("scores", &scores)], output.temp_path())
        };
        write().map_err(|source| CliError::Candle {
            context: format!("writing {}", args.output.display()),
            source,
        })?;
    } else {
        let images: Vec<serde_json::Value> = results
            .iter()
            .enumerate()
            .map(|(i, r)| {
                serde_json::json!({
                    "file": format!("{}[{i}]", input.display()),
                    "width": r.input.width,
                    "height": r.input.height,
                    "input_size": [r.input.height, r.input.width],
                    "proposals": rows(r).iter().map(|(b, s, l)| serde_json::json!({
                        "box": b, "score": s, "level": l,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        let box_format = match format {
            Format::Pixels => "x1,y1,x2,y2 in molded-image pixels",
            Format::Matterport => "y1,x1,y2,x2 normalised as Matterport's rpn_rois",
        };
        let json = serde_json::json!({
            "arch": args.arch.name,
            "weights": args.weights.display().to_string(),
            "box_format": box_format,
            "level": level_note(&args.arch),
            "images": images,
        });
        output.write_all(crate::json_pretty(&json)?.as_bytes())?;
    }
    output.commit()?;
    let size = results.first().map_or((0, 0), |r| (r.input.height, r.input.width));
    Ok(format!(
        "wrote up to {top} proposals per image for {} image(s) ({}×{} molded) to {}",
        results.len(),
        size.0,
        size.1,
        args.output.display()
    ))
}
