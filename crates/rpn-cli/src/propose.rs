//! `rpn propose`: proposals for PNG/JPEG images, in the original images' pixels.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::Device;
use rpn::model::Arch;
use rpn::{resize_to_pixels, seed_configs, RpnPipeline};
use rpn_anchors::{Bbox, ImageSize};
use rpn_proposals::Proposal;

use crate::{draw, CliError};

/// What `rpn propose` was asked to do.
#[derive(Debug, Clone)]
pub(crate) struct ProposeArgs {
    pub(crate) arch: Arch,
    pub(crate) weights: PathBuf,
    pub(crate) images: Vec<PathBuf>,
    pub(crate) output: PathBuf,
    pub(crate) draw: Option<PathBuf>,
    pub(crate) top: usize,
    pub(crate) image_size: Option<usize>,
}

/// The network's input size for an `width × height` image: `--image-size` if given, else the
/// image's own size rounded down to the backbone stride (at least one stride).
fn input_size(
    arch: Arch,
    width: u32,
    height: u32,
    requested: Option<usize>,
) -> Result<ImageSize, CliError> {
    let (backbone, _) = seed_configs(arch)?;
    let stride = 1u32 << backbone.blocks.len();
    let (h, w) = match requested {
        Some(side) => {
            let side = u32::try_from(side)
                .map_err(|_| CliError::Usage(format!("--image-size {side} is too large")))?;
            if side == 0 || side % stride != 0 {
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

pub(crate) fn propose(args: &ProposeArgs, device: Device) -> Result<String, CliError> {
    if args.output.extension().is_none_or(|e| e != "json") {
        return Err(CliError::Usage(format!(
            "{}: seed models write proposals as .json",
            args.output.display()
        )));
    }
    if args.images.is_empty() {
        return Err(CliError::Usage("give at least one --image".into()));
    }
    let mut pipelines: HashMap<ImageSize, RpnPipeline> = HashMap::new();
    let mut entries = Vec::new();
    let mut drawn = Vec::new();
    for (i, file) in args.images.iter().enumerate() {
        let decoded = image::open(file).map_err(|e| {
            CliError::Usage(format!("{}: cannot decode the image: {e}", file.display()))
        })?;
        let (width, height) = (decoded.width(), decoded.height());
        let size = input_size(args.arch, width, height, args.image_size)?;
        let pipeline = match pipelines.entry(size) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(RpnPipeline::load(args.arch, &args.weights, size, device.clone())?)
            }
        };
        let (pixels, _) = resize_to_pixels(&decoded, size);
        let proposals = pipeline.propose(&pixels, 1)?.remove(0);
        let (sx, sy) = (width as f32 / size.width as f32, height as f32 / size.height as f32);
        let in_original: Vec<Proposal> = proposals
            .items
            .iter()
            .take(args.top)
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
            draw::draw_boxes(&decoded.to_rgb8(), &[], &in_original, args.top.min(10), &path)?;
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
        args.top,
        args.images.len(),
        args.output.display()
    );
    if !drawn.is_empty() {
        report.push_str(&format!("; drew {}", drawn.join(", ")));
    }
    Ok(report)
}
