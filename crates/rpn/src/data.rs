//! Data sets a [`crate::Trainer`] and [`crate::evaluate`] read: synthetic shapes from a seed, or a
//! directory of images with COCO-style boxes.
//!
//! Every sample has the data set's fixed [`Dataset::image_size`] (a batch is one tensor), pixels
//! are RGB in `[0, 1]`, HWC, and boxes are pixel [`Bbox`]es in that size. Samples are addressed by
//! index, so the `k`-th image of a training run depends only on the seed and `k`: resuming from a
//! checkpoint needs no data-loader state.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use rand_chacha::ChaCha8Rng;
use rand_core::Rng;
use rpn_anchors::{Bbox, ImageSize};
use rpn_targets::seeded_rng;

use crate::{Error, ShapesDataset};

/// One image and its boxes.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// `height · width · 3` values, HWC, RGB in `[0, 1]`.
    pub pixels: Vec<f32>,
    /// The image's size (the data set's [`Dataset::image_size`]).
    pub size: ImageSize,
    /// Objects to find, pixels.
    pub boxes: Vec<Bbox>,
    /// Crowd regions (COCO `iscrowd = 1`): anchors on them are never negatives; not evaluated.
    pub crowd: Vec<Bbox>,
}

/// An indexed collection of same-sized samples. `Send + Sync`: a trainer makes the next batch
/// on another thread.
pub trait Dataset: Send + Sync {
    /// The size of every sample.
    fn image_size(&self) -> ImageSize;

    /// Number of distinct images (`None`: unbounded, e.g. generated from a seed).
    fn num_images(&self) -> Option<usize>;

    /// Sample `index` (`index < len` when `len` is bounded).
    fn get(&self, index: usize) -> Result<Sample, Error>;

    /// A short description for logs (`shapes (seed 3)`, `COCO dir data/ (120 images)`).
    fn describe(&self) -> String;
}

/// A generator for stream `stream` of `seed`: independent, reproducible sequences per image.
pub(crate) fn stream_rng(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = seeded_rng(seed);
    rng.set_stream(stream);
    rng
}

/// Stream ids: the top 16 bits say what the numbers are for, so streams never collide.
pub(crate) mod streams {
    /// Shapes images used for training.
    pub(crate) const TRAIN_IMAGES: u64 = 1 << 48;
    /// Shapes images held out for evaluation.
    pub(crate) const HELD_OUT_IMAGES: u64 = 2 << 48;
    /// The anchor sample of the `k`-th training image.
    pub(crate) const ANCHOR_SAMPLING: u64 = 3 << 48;
    /// The shuffle of epoch `e` of a finite data set.
    pub(crate) const EPOCH_ORDER: u64 = 4 << 48;
    /// Whether the `k`-th training image is flipped (`TrainConfig::flip`).
    pub(crate) const FLIP: u64 = 5 << 48;
}

/// Seed 001's shapes, image `i` drawn from its own random stream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShapesSource {
    /// The generator.
    pub shapes: ShapesDataset,
    seed: u64,
    stream: u64,
}

impl ShapesSource {
    /// The training images of `seed`.
    pub fn train(seed: u64) -> Self {
        Self { shapes: ShapesDataset::default(), seed, stream: streams::TRAIN_IMAGES }
    }

    /// Images never used for training whatever the training seed: the evaluation set of `seed`.
    pub fn held_out(seed: u64) -> Self {
        Self { shapes: ShapesDataset::default(), seed, stream: streams::HELD_OUT_IMAGES }
    }
}

impl Dataset for ShapesSource {
    fn image_size(&self) -> ImageSize {
        ImageSize { height: self.shapes.side as u32, width: self.shapes.side as u32 }
    }

    fn num_images(&self) -> Option<usize> {
        None
    }

    fn get(&self, index: usize) -> Result<Sample, Error> {
        let image = self.shapes.sample(&mut stream_rng(self.seed, self.stream | index as u64));
        Ok(Sample {
            pixels: image.pixels,
            size: self.image_size(),
            boxes: image.boxes,
            crowd: vec![],
        })
    }

    fn describe(&self) -> String {
        let kind = if self.stream == streams::HELD_OUT_IMAGES { "held-out " } else { "" };
        format!("{kind}shapes {0}×{0} (seed {1})", self.shapes.side, self.seed)
    }
}

/// The data-set index of the `k`-th training image: `k` for unbounded sets; for a set of `len`
/// images, epoch `k / len` visits them in a seeded shuffle (Fisher–Yates).
pub fn training_index(dataset: &dyn Dataset, seed: u64, k: usize) -> usize {
    let Some(len) = dataset.num_images().filter(|&n| n > 0) else { return k };
    let (epoch, position) = (k / len, k % len);
    let mut rng = stream_rng(seed, streams::EPOCH_ORDER | epoch as u64);
    let mut order: Vec<usize> = (0..len).collect();
    for i in (1..len).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        order.swap(i, j);
    }
    order[position]
}

/// How a data-set image of any size becomes a sample of the data set's one size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Fit {
    /// Resized to the size, whatever its aspect ratio (the seeds' square inputs).
    #[default]
    Stretch,
    /// Matterport's `load_image_gt` geometry: `resize_image(mode="square", min_dim, max_dim)`
    /// with `max_dim` the data set's (square) side: aspect ratio kept, centred, zero padding.
    MatterportSquare {
        /// `IMAGE_MIN_DIM` (capped at the side).
        min_dim: u32,
    },
}

/// Images listed in a COCO-style `annotations.json`, brought to one size ([`Fit`]; stretched
/// unless [`CocoDirectory::with_fit`] says otherwise).
///
/// Layout: `DIR/annotations.json` with `images: [{id, file_name, …}]` and
/// `annotations: [{image_id, bbox: [x, y, w, h], iscrowd?}]` (COCO's top-left + size boxes, in
/// the original image's pixels); `file_name` is relative to `DIR` (or `DIR/images`). PNG and JPEG
/// are read. Boxes are scaled with the image; empty boxes (`w` or `h` ≤ 0) are skipped, as
/// torchvision's COCO reference does.
#[derive(Debug, Clone)]
pub struct CocoDirectory {
    dir: PathBuf,
    size: ImageSize,
    fit: Fit,
    images: Vec<CocoImage>,
}

#[derive(Debug, Clone)]
struct CocoImage {
    path: PathBuf,
    boxes: Vec<[f32; 4]>,
    crowd: Vec<[f32; 4]>,
}

#[derive(serde::Deserialize)]
struct CocoFile {
    images: Vec<CocoImageEntry>,
    #[serde(default)]
    annotations: Vec<CocoAnnotation>,
}

#[derive(serde::Deserialize)]
struct CocoImageEntry {
    id: u64,
    file_name: String,
}

#[derive(serde::Deserialize)]
struct CocoAnnotation {
    image_id: u64,
    bbox: [f32; 4],
    #[serde(default)]
    iscrowd: u8,
}

impl CocoDirectory {
    /// Reads `dir/annotations.json`; images are decoded when sampled and resized to `size`.
    pub fn open(dir: impl AsRef<Path>, size: ImageSize) -> Result<Self, Error> {
        let dir = dir.as_ref().to_path_buf();
        let json_path = dir.join("annotations.json");
        let data_err = |message: String| Error::Data { path: json_path.clone(), message };
        let text = rpn_io::read_regular_file(&json_path).map_err(|e| {
            let cause = match &e {
                rpn_io::InputError::Io { source, .. } => source.to_string(),
                other => other.to_string(),
            };
            data_err(format!(
                "cannot read it ({cause}); a data set directory needs annotations.json"
            ))
        })?;
        let file: CocoFile =
            serde_json::from_slice(&text).map_err(|e| data_err(format!("not COCO JSON: {e}")))?;
        if file.images.is_empty() {
            return Err(data_err("lists no images".into()));
        }
        let mut by_id: HashMap<u64, usize> = HashMap::new();
        let mut images = Vec::with_capacity(file.images.len());
        for entry in &file.images {
            let direct = dir.join(&entry.file_name);
            let path =
                if direct.exists() { direct } else { dir.join("images").join(&entry.file_name) };
            if by_id.insert(entry.id, images.len()).is_some() {
                return Err(data_err(format!("image id {} is listed twice", entry.id)));
            }
            images.push(CocoImage { path, boxes: vec![], crowd: vec![] });
        }
        for (i, a) in file.annotations.iter().enumerate() {
            let Some(&img) = by_id.get(&a.image_id) else {
                return Err(data_err(format!(
                    "annotation {i} refers to image id {}, which is not in `images`",
                    a.image_id
                )));
            };
            let [x, y, w, h] = a.bbox;
            if ![x, y, w, h].iter().all(|v| v.is_finite()) {
                return Err(data_err(format!("annotation {i} has a non-finite bbox {:?}", a.bbox)));
            }
            if w <= 0.0 || h <= 0.0 {
                continue;
            }
            let target =
                if a.iscrowd != 0 { &mut images[img].crowd } else { &mut images[img].boxes };
            target.push([x, y, x + w, y + h]);
        }
        Ok(Self { dir, size, fit: Fit::Stretch, images })
    }

    /// The same images brought to the size by `fit`. [`Fit::MatterportSquare`] needs a square
    /// size.
    pub fn with_fit(self, fit: Fit) -> Result<Self, Error> {
        if matches!(fit, Fit::MatterportSquare { .. }) && self.size.height != self.size.width {
            return Err(Error::invalid(
                "size of a Matterport square data set",
                format!("{}×{}", self.size.height, self.size.width),
                "a square (IMAGE_MAX_DIM × IMAGE_MAX_DIM)",
            ));
        }
        Ok(Self { fit, ..self })
    }
}

impl Dataset for CocoDirectory {
    fn image_size(&self) -> ImageSize {
        self.size
    }

    fn num_images(&self) -> Option<usize> {
        Some(self.images.len())
    }

    fn get(&self, index: usize) -> Result<Sample, Error> {
        let entry = self.images.get(index).ok_or_else(|| Error::Data {
            path: self.dir.clone(),
            message: format!("image index {index} out of range ({} images)", self.images.len()),
        })?;
        let decoded = image::open(&entry.path).map_err(|e| Error::Data {
            path: entry.path.clone(),
            message: format!("cannot decode the image: {e}"),
        })?;
        let size = self.size;
        // Boxes follow the image; those left empty (outside, or degenerate) are dropped.
        let placed = |list: &[[f32; 4]], place: &dyn Fn(Bbox) -> Bbox| -> Vec<Bbox> {
            list.iter()
                .map(|b| place(Bbox::new(b[0], b[1], b[2], b[3])).clip_to(size))
                .filter(|b| b.width() > 0.0 && b.height() > 0.0)
                .collect()
        };
        let (pixels, boxes, crowd) = match self.fit {
            Fit::Stretch => {
                let (w0, h0) = (decoded.width() as f32, decoded.height() as f32);
                let (sx, sy) = (size.width as f32 / w0, size.height as f32 / h0);
                let place = |b: Bbox| Bbox::new(b.x1 * sx, b.y1 * sy, b.x2 * sx, b.y2 * sy);
                let pixels = resize_to_pixels(&decoded, size).0;
                (pixels, placed(&entry.boxes, &place), placed(&entry.crowd, &place))
            }
            Fit::MatterportSquare { min_dim } => {
                let square =
                    crate::square_resize(&decoded, min_dim.min(size.height), size.height).map_err(
                        |e| Error::Data { path: entry.path.clone(), message: e.to_string() },
                    )?;
                let pixels = square.rgb.as_raw().iter().map(|&v| v as f32 / 255.0).collect();
                let place = |b: Bbox| square.from_original(&b);
                (pixels, placed(&entry.boxes, &place), placed(&entry.crowd, &place))
            }
        };
        Ok(Sample { pixels, size, boxes, crowd })
    }

    fn describe(&self) -> String {
        let fit = match self.fit {
            Fit::Stretch => String::new(),
            Fit::MatterportSquare { min_dim } => format!(", Matterport square, min side {min_dim}"),
        };
        format!("COCO directory {} ({} images{fit})", self.dir.display(), self.images.len())
    }
}

/// Resizes (bilinear, stretching) to `size` and returns HWC RGB in `[0, 1]`.
pub fn resize_to_pixels(img: &image::DynamicImage, size: ImageSize) -> (Vec<f32>, ImageSize) {
    let rgb = img.to_rgb8();
    let rgb = if rgb.dimensions() == (size.width, size.height) {
        rgb
    } else {
        image::imageops::resize(
            &rgb,
            size.width,
            size.height,
            image::imageops::FilterType::Triangle,
        )
    };
    (rgb.as_raw().iter().map(|&v| v as f32 / 255.0).collect(), size)
}
