//! Anchor pyramids: the fixed reference boxes an RPN scores and regresses.
//!
//! Global order is **level → y → x → anchor**: anchor `a` of cell `(y, x)` on level `l` sits at
//! index `levels[l].start + (y · W_l + x) · A_l + a`. Every peer uses this order, and it is the
//! row order of the RPN head's reshaped outputs, so the anchors and the head agree by construction.
//!
//! What the peers do *not* agree on is configuration, and all of it is here:
//!
//! | | Matterport | torchvision | detectron2 |
//! |---|---|---|---|
//! | ratio means | `w / h` ([`RatioConvention::WidthOverHeight`]) | `h / w` | `h / w` |
//! | cell order | ratio-major | ratio-major | size-major |
//! | base anchors | floats | rounded to integers | floats |
//! | stride | configured | `image // grid` per axis | configured |
//! | centre offset | 0 | 0 | 0 (configurable) |
//!
//! With ratios `(0.5, 1, 2)` Matterport's anchor 0 of a cell is **tall** and torchvision's is
//! **wide**. A head trained with one order only works with that order: the
//! [`AnchorConfig::matterport_fpn`] preset is the one to use for ported Keras heads.

use crate::{AnchorError, Bbox, ImageSize};

/// What an aspect ratio `r` means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum RatioConvention {
    /// `r = w / h`: `w = s·√r`, `h = s/√r` (Matterport `utils.generate_anchors`; r = 0.5 is tall).
    WidthOverHeight,
    /// `r = h / w`: `w = s/√r`, `h = s·√r` (torchvision, detectron2, mmdet; r = 0.5 is wide).
    HeightOverWidth,
}

/// Order of the `sizes × ratios` anchors inside one cell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum CellOrder {
    /// `a = i_ratio · n_sizes + i_size` (Matterport's meshgrid, torchvision, mmdet).
    RatioMajor,
    /// `a = i_size · n_ratios + i_ratio` (detectron2).
    SizeMajor,
}

/// How a level's stride (pixels between neighbouring cells) is obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[non_exhaustive]
pub enum StrideRule {
    /// The level's configured [`PyramidLevel::stride`] on both axes (Matterport, detectron2, mmdet).
    Configured,
    /// `image_side // feature_side` per axis, torchvision's `AnchorGenerator`. For an 800-px side
    /// the P6 grid has 13 cells and the stride is 61, not 64.
    ImageOverGrid,
}

/// One pyramid level: its nominal stride and the anchor sizes (square roots of areas, pixels).
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct PyramidLevel {
    /// Pixels between cells of this level's feature map (e.g. 4 for P2).
    pub stride: u32,
    /// Anchor sizes `s` on this level; an anchor of ratio `r` has area `s²`.
    pub sizes: Vec<f32>,
}

/// Everything that defines an anchor pyramid. Start from a preset and adjust fields.
///
/// ```
/// # use rpn_anchors::{AnchorConfig, ImageSize};
/// let anchors = AnchorConfig::matterport_fpn().generate(ImageSize::new(1024, 1024)?)?;
/// assert_eq!(anchors.len(), 261_888);
/// // Matterport's first anchor: tall (ratio w/h = 0.5), centred on the top-left pixel corner.
/// assert_eq!(anchors.boxes()[0].to_yxyx(), [-22.627417, -11.313708, 22.627417, 11.313708]);
/// # Ok::<(), rpn_anchors::AnchorError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct AnchorConfig {
    /// Levels from finest (P2) to coarsest.
    pub levels: Vec<PyramidLevel>,
    /// Aspect ratios, shared by all levels, meaning set by [`AnchorConfig::ratio_convention`].
    pub ratios: Vec<f32>,
    /// What a ratio means.
    pub ratio_convention: RatioConvention,
    /// Order of the anchors of one cell.
    pub cell_order: CellOrder,
    /// Anchor centre of cell `(y, x)` is `((x + offset)·stride_x, (y + offset)·stride_y)`;
    /// 0 for every peer's default, 0.5 centres anchors on their cell. Must lie in `[0, 1)`.
    pub offset: f32,
    /// Round the zero-centred base anchors to integers, half to even (torchvision).
    pub round_base_anchors: bool,
    /// How strides are obtained.
    pub stride_rule: StrideRule,
}

/// Height and width of one level's feature map, in cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct FeatureShape {
    /// Rows.
    pub height: u32,
    /// Columns.
    pub width: u32,
}

/// Where one level's anchors sit in [`Anchors::boxes`], and the grid they came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AnchorLevel {
    /// Index of the level's first anchor.
    pub start: usize,
    /// The feature-map grid.
    pub shape: FeatureShape,
    /// Vertical stride actually used, pixels.
    pub stride_y: u32,
    /// Horizontal stride actually used, pixels.
    pub stride_x: u32,
    /// Anchors per cell, `A_l = sizes × ratios`.
    pub anchors_per_cell: usize,
}

impl AnchorLevel {
    /// Number of anchors on this level, `H · W · A`.
    pub fn len(&self) -> usize {
        self.shape.height as usize * self.shape.width as usize * self.anchors_per_cell
    }

    /// True for a level with no cells.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `start .. start + len`.
    pub fn range(&self) -> std::ops::Range<usize> {
        self.start..self.start + self.len()
    }
}

/// An anchor pyramid: all boxes in level → y → x → anchor order, and per-level bookkeeping.
///
/// The fields are private so that the invariant every consumer relies on holds: the levels are
/// contiguous, in order, start at 0 and cover exactly the boxes (level `l` owns
/// `levels()[l].range()`). [`AnchorConfig::generate`] builds them; [`Anchors::new`] checks
/// pyramids built by hand.
#[derive(Debug, Clone, PartialEq)]
pub struct Anchors {
    boxes: Vec<Bbox>,
    levels: Vec<AnchorLevel>,
}

impl Anchors {
    /// Anchors built elsewhere, checked: `levels` must be non-empty and contiguous from 0, each
    /// level's `start` the previous one's end, and together cover exactly `boxes`.
    ///
    /// ```
    /// # use rpn_anchors::{AnchorLevel, Anchors, Bbox, FeatureShape};
    /// let level = AnchorLevel {
    ///     start: 0,
    ///     shape: FeatureShape { height: 1, width: 2 },
    ///     stride_y: 8,
    ///     stride_x: 8,
    ///     anchors_per_cell: 1,
    /// };
    /// let boxes = vec![Bbox::new(0.0, 0.0, 8.0, 8.0), Bbox::new(8.0, 0.0, 16.0, 8.0)];
    /// assert!(Anchors::new(boxes.clone(), vec![level]).is_ok());
    /// assert!(Anchors::new(boxes[..1].to_vec(), vec![level]).is_err()); // 1 box for 2 cells
    /// ```
    pub fn new(boxes: Vec<Bbox>, levels: Vec<AnchorLevel>) -> Result<Self, AnchorError> {
        if levels.is_empty() {
            return Err(AnchorError::config("levels", "must not be empty", &levels));
        }
        let mut end = 0usize;
        for (l, level) in levels.iter().enumerate() {
            if level.start != end {
                return Err(AnchorError::config(
                    format!("levels[{l}].start"),
                    "must equal the previous level's end",
                    (level.start, end),
                ));
            }
            if level.stride_x == 0 || level.stride_y == 0 {
                return Err(AnchorError::config(
                    format!("levels[{l}].stride"),
                    "must be > 0",
                    (level.stride_y, level.stride_x),
                ));
            }
            let len = (level.shape.height as usize)
                .checked_mul(level.shape.width as usize)
                .and_then(|cells| cells.checked_mul(level.anchors_per_cell))
                .ok_or_else(|| {
                    AnchorError::config(format!("levels[{l}]"), "overflows usize", level.shape)
                })?;
            end = end.checked_add(len).ok_or_else(|| {
                AnchorError::config(format!("levels[{l}]"), "overflows usize", level.shape)
            })?;
        }
        AnchorError::check_len("boxes", end, boxes.len())?;
        Ok(Self { boxes, levels })
    }

    /// All anchors, in level → y → x → anchor order, in the unit they were generated in (pixels
    /// from [`AnchorConfig::generate`]).
    pub fn boxes(&self) -> &[Bbox] {
        &self.boxes
    }

    /// One entry per pyramid level, in order.
    pub fn levels(&self) -> &[AnchorLevel] {
        &self.levels
    }

    /// The boxes and levels, taken apart.
    pub fn into_parts(self) -> (Vec<Bbox>, Vec<AnchorLevel>) {
        (self.boxes, self.levels)
    }

    /// Total number of anchors.
    pub fn len(&self) -> usize {
        self.boxes.len()
    }

    /// True when there are no anchors.
    pub fn is_empty(&self) -> bool {
        self.boxes.is_empty()
    }

    /// The level that anchor `index` belongs to, or `None` past the end.
    pub fn level_of(&self, index: usize) -> Option<usize> {
        if index >= self.boxes.len() {
            return None;
        }
        // Levels are contiguous and ascending: the last level starting at or before `index`.
        Some(self.levels.partition_point(|l| l.start <= index) - 1)
    }

    /// Index of anchor `a` of cell `(y, x)` on `level`, or `None` if any part is out of range.
    pub fn index(&self, level: usize, y: u32, x: u32, a: usize) -> Option<usize> {
        let l = self.levels.get(level)?;
        (y < l.shape.height && x < l.shape.width && a < l.anchors_per_cell).then(|| {
            l.start + ((y as usize * l.shape.width as usize) + x as usize) * l.anchors_per_cell + a
        })
    }
}

impl AnchorConfig {
    /// Matterport Mask R-CNN (`config.py` defaults): one size per level, 32…512 px on strides
    /// 4…64 (P2–P6), ratios `(0.5, 1, 2)` as `w/h` (tall first), floats, offset 0.
    /// 261,888 anchors at 1024×1024.
    pub fn matterport_fpn() -> Self {
        Self {
            levels: fpn_levels(),
            ratios: vec![0.5, 1.0, 2.0],
            ratio_convention: RatioConvention::WidthOverHeight,
            cell_order: CellOrder::RatioMajor,
            offset: 0.0,
            round_base_anchors: false,
            stride_rule: StrideRule::Configured,
        }
    }

    /// torchvision `_default_anchorgen()` of the FPN detectors: sizes 32…512 on P2–P6, ratios
    /// `(0.5, 1, 2)` as `h/w` (wide first), base anchors rounded, strides `image // grid`.
    /// 268,569 anchors for an 800×1344 padded batch.
    pub fn torchvision_fpn() -> Self {
        Self {
            ratio_convention: RatioConvention::HeightOverWidth,
            round_base_anchors: true,
            stride_rule: StrideRule::ImageOverGrid,
            ..Self::matterport_fpn()
        }
    }

    /// detectron2 `Base-RCNN-FPN`: like torchvision but float base anchors, size-major cells and
    /// configured strides (`MODEL.ANCHOR_GENERATOR.OFFSET = 0.0`).
    pub fn detectron2_fpn() -> Self {
        Self {
            ratio_convention: RatioConvention::HeightOverWidth,
            cell_order: CellOrder::SizeMajor,
            ..Self::matterport_fpn()
        }
    }

    /// Seed 000: one level of stride 8 on a 64×64 input (8×8 map), 9 anchors per cell
    /// (sizes 8, 16, 32 × ratios 0.5, 1, 2, Matterport conventions): 576 anchors.
    ///
    /// The seed notebooks take their anchor sizes from a `config.py` that is not part of the
    /// seed text; these sizes span the 64×64 shapes images. Change `levels[0].sizes` to match
    /// a checkpoint trained with others.
    pub fn seed000() -> Self {
        Self::single_level(8)
    }

    /// Seed 001: seed 000's anchors on the 32×32 map of its one-stage backbone (stride 2):
    /// 9,216 anchors at 64×64.
    pub fn seed001() -> Self {
        Self::single_level(2)
    }

    /// Seed 002 (the RPN head on VGG16's stride-16 `block5_conv3`): the notebook stops at the head,
    /// so these are the Faster R-CNN paper's anchors (py-faster-rcnn `generate_anchors`): sizes
    /// 128, 256, 512 × ratios 0.5, 1, 2 as `h / w`, ratio-major, 9 per cell; float corners.
    pub fn seed002() -> Self {
        Self {
            levels: vec![PyramidLevel { stride: 16, sizes: vec![128.0, 256.0, 512.0] }],
            ratio_convention: RatioConvention::HeightOverWidth,
            ..Self::matterport_fpn()
        }
    }

    /// Anchors per feature-map cell on `level` (`sizes × ratios`): the `k` of the RPN head that
    /// scores this level. 0 for a level that does not exist.
    pub fn anchors_per_cell(&self, level: usize) -> usize {
        self.levels.get(level).map_or(0, |l| l.sizes.len() * self.ratios.len())
    }

    /// The anchors per cell when every level has the same number, as a head shared across
    /// levels needs (Matterport's 3, the seeds' 9); `None` when levels differ or there are none.
    ///
    /// ```
    /// # use rpn_anchors::AnchorConfig;
    /// assert_eq!(AnchorConfig::matterport_fpn().uniform_anchors_per_cell(), Some(3));
    /// assert_eq!(AnchorConfig::seed001().uniform_anchors_per_cell(), Some(9));
    /// ```
    pub fn uniform_anchors_per_cell(&self) -> Option<usize> {
        let first = self.anchors_per_cell(0);
        (first > 0 && (1..self.levels.len()).all(|l| self.anchors_per_cell(l) == first))
            .then_some(first)
    }

    fn single_level(stride: u32) -> Self {
        Self {
            levels: vec![PyramidLevel { stride, sizes: vec![8.0, 16.0, 32.0] }],
            ..Self::matterport_fpn()
        }
    }

    /// Checks every field, naming the first bad one and its value.
    ///
    /// ```
    /// # use rpn_anchors::AnchorConfig;
    /// let mut config = AnchorConfig::matterport_fpn();
    /// config.levels[2].sizes[0] = -128.0;
    /// assert_eq!(
    ///     config.validate().unwrap_err().to_string(),
    ///     "anchor config: `levels[2].sizes[0]` must be a finite number > 0, got -128.0"
    /// );
    /// ```
    pub fn validate(&self) -> Result<(), AnchorError> {
        const POSITIVE: &str = "must be a finite number > 0";
        if self.levels.is_empty() {
            return Err(AnchorError::config("levels", "must not be empty", &self.levels));
        }
        for (l, level) in self.levels.iter().enumerate() {
            if level.stride == 0 {
                return Err(AnchorError::config(
                    format!("levels[{l}].stride"),
                    "must be > 0",
                    level.stride,
                ));
            }
            if level.sizes.is_empty() {
                return Err(AnchorError::config(
                    format!("levels[{l}].sizes"),
                    "must not be empty",
                    &level.sizes,
                ));
            }
            for (i, s) in level.sizes.iter().enumerate() {
                if !(s.is_finite() && *s > 0.0) {
                    return Err(AnchorError::config(
                        format!("levels[{l}].sizes[{i}]"),
                        POSITIVE,
                        s,
                    ));
                }
            }
        }
        if self.ratios.is_empty() {
            return Err(AnchorError::config("ratios", "must not be empty", &self.ratios));
        }
        for (i, r) in self.ratios.iter().enumerate() {
            if !(r.is_finite() && *r > 0.0) {
                return Err(AnchorError::config(format!("ratios[{i}]"), POSITIVE, r));
            }
        }
        if !(0.0..1.0).contains(&self.offset) {
            return Err(AnchorError::config("offset", "must lie in [0, 1)", self.offset));
        }
        Ok(())
    }

    /// Feature-map shapes for an image, `ceil(side / stride)` per level (Matterport's
    /// `compute_backbone_shapes`; also what a stride-2 conv/pool chain with "same" padding gives,
    /// e.g. 800 → 200, 100, 50, 25, 13).
    ///
    /// Validates the configuration first (a stride of 0 is an error, not a division by zero).
    pub fn feature_shapes(&self, image: ImageSize) -> Result<Vec<FeatureShape>, AnchorError> {
        self.validate()?;
        Ok(self
            .levels
            .iter()
            .map(|l| FeatureShape {
                height: image.height.div_ceil(l.stride),
                width: image.width.div_ceil(l.stride),
            })
            .collect())
    }

    /// The zero-centred anchors of one cell of `level`, in cell order, as `(half_w, half_h)`
    /// pairs in `f64` (one rounding to `f32` happens when the shift is added).
    pub fn cell_half_extents(&self, level: usize) -> Vec<(f64, f64)> {
        let Some(level) = self.levels.get(level) else { return Vec::new() };
        let mut out = Vec::with_capacity(level.sizes.len() * self.ratios.len());
        let mut push = |size: f32, ratio: f32| out.push(self.half_extent(size, ratio));
        match self.cell_order {
            CellOrder::RatioMajor => {
                self.ratios.iter().for_each(|&r| level.sizes.iter().for_each(|&s| push(s, r)))
            }
            CellOrder::SizeMajor => {
                level.sizes.iter().for_each(|&s| self.ratios.iter().for_each(|&r| push(s, r)))
            }
        }
        out
    }

    fn half_extent(&self, size: f32, ratio: f32) -> (f64, f64) {
        if self.round_base_anchors {
            // torchvision, in f32 and in its operation order, so that the rounding sees the
            // same value: h_ratio = √r, w_ratio = 1/h_ratio, base = round(±size·ratio / 2).
            let (h_ratio, w_ratio) = match self.ratio_convention {
                RatioConvention::HeightOverWidth => (ratio.sqrt(), 1.0 / ratio.sqrt()),
                RatioConvention::WidthOverHeight => (1.0 / ratio.sqrt(), ratio.sqrt()),
            };
            let half = |v: f32| f64::from((v / 2.0).round_ties_even());
            return (half(w_ratio * size), half(h_ratio * size));
        }
        // Matterport computes in f64: heights = s / √r, widths = s · √r (r = w/h).
        let (s, r) = (f64::from(size), f64::from(ratio));
        let (w, h) = match self.ratio_convention {
            RatioConvention::WidthOverHeight => (s * r.sqrt(), s / r.sqrt()),
            RatioConvention::HeightOverWidth => (s / r.sqrt(), s * r.sqrt()),
        };
        (0.5 * w, 0.5 * h)
    }

    /// All anchors for an image, with feature shapes from [`AnchorConfig::feature_shapes`].
    pub fn generate(&self, image: ImageSize) -> Result<Anchors, AnchorError> {
        self.generate_unchecked(image, &self.feature_shapes(image)?)
    }

    /// All anchors for an image whose backbone produced `shapes` (one per level), for backbones
    /// whose arithmetic differs from `ceil(side / stride)`.
    pub fn generate_for_shapes(
        &self,
        image: ImageSize,
        shapes: &[FeatureShape],
    ) -> Result<Anchors, AnchorError> {
        self.validate()?;
        if shapes.len() != self.levels.len() {
            return Err(AnchorError::FeatureShapeCount {
                levels: self.levels.len(),
                shapes: shapes.len(),
            });
        }
        self.generate_unchecked(image, shapes)
    }

    /// The anchors of [`AnchorConfig::generate`] before rounding to `f32`, as `[x1, y1, x2, y2]`.
    ///
    /// Matterport generates and matches anchors in `float64`; its tie sets (anchors sharing a GT's
    /// best IoU) depend on that precision. Matching on these corners reproduces them exactly
    /// (see `rpn-targets`' `Matcher::with_f64_anchors`).
    pub fn generate_f64(&self, image: ImageSize) -> Result<Vec<[f64; 4]>, AnchorError> {
        let levels = self.layout(image, &self.feature_shapes(image)?)?;
        let mut corners = reserve(&levels)?;
        self.emit_corners(&levels, |c| corners.push(c));
        Ok(corners)
    }

    /// The anchors in Matterport's normalised in-graph coordinates, what its inference model is
    /// fed (`norm_boxes(anchors, image_shape)`): the `f64` corners of
    /// [`AnchorConfig::generate_f64`] mapped by `(b − [0, 0, 1, 1]) / [h − 1, w − 1, h − 1, w − 1]`
    /// and rounded once, so the values equal Matterport's `float32` anchors bit for bit. The boxes
    /// keep the [`Bbox`] field names (`x1` is the normalised `x1`); `levels` are unchanged.
    ///
    /// ```
    /// # use rpn_anchors::{AnchorConfig, ImageSize};
    /// let anchors = AnchorConfig::matterport_fpn().generate_matterport_normalized(ImageSize::new(1024, 1024)?)?;
    /// assert_eq!(anchors.len(), 261_888);
    /// assert!((anchors.boxes()[1].y2 - 0.014663).abs() < 1e-6); // the square 32-px anchor at (0, 0)
    /// # Ok::<(), rpn_anchors::AnchorError>(())
    /// ```
    pub fn generate_matterport_normalized(&self, image: ImageSize) -> Result<Anchors, AnchorError> {
        let levels = self.layout(image, &self.feature_shapes(image)?)?;
        let (sh, sw) = (f64::from(image.height) - 1.0, f64::from(image.width) - 1.0);
        let mut boxes = reserve(&levels)?;
        self.emit_corners(&levels, |[x1, y1, x2, y2]| {
            boxes.push(Bbox::new(
                (x1 / sw) as f32,
                (y1 / sh) as f32,
                ((x2 - 1.0) / sw) as f32,
                ((y2 - 1.0) / sh) as f32,
            ));
        });
        Ok(Anchors { boxes, levels })
    }

    fn generate_unchecked(
        &self,
        image: ImageSize,
        shapes: &[FeatureShape],
    ) -> Result<Anchors, AnchorError> {
        let levels = self.layout(image, shapes)?;
        let mut boxes = reserve(&levels)?;
        self.emit_corners(&levels, |[x1, y1, x2, y2]| {
            boxes.push(Bbox::new(x1 as f32, y1 as f32, x2 as f32, y2 as f32));
        });
        Ok(Anchors { boxes, levels })
    }

    /// Per-level bookkeeping: strides actually used, grid shapes, index ranges (their sum is
    /// checked not to overflow).
    fn layout(
        &self,
        image: ImageSize,
        shapes: &[FeatureShape],
    ) -> Result<Vec<AnchorLevel>, AnchorError> {
        let mut levels = Vec::with_capacity(self.levels.len());
        let mut start = 0usize;
        for (l, (level, shape)) in self.levels.iter().zip(shapes).enumerate() {
            let (stride_y, stride_x) = match self.stride_rule {
                StrideRule::Configured => (level.stride, level.stride),
                // torchvision: integer division of the padded image size by the grid size.
                StrideRule::ImageOverGrid => {
                    (image.height / shape.height.max(1), image.width / shape.width.max(1))
                }
            };
            let anchors_per_cell = level.sizes.len() * self.ratios.len();
            let entry = AnchorLevel { start, shape: *shape, stride_y, stride_x, anchors_per_cell };
            // Checked: a huge image or grid is an error, never an overflowing product.
            start = (shape.height as usize)
                .checked_mul(shape.width as usize)
                .and_then(|cells| cells.checked_mul(anchors_per_cell))
                .and_then(|n| start.checked_add(n))
                .ok_or_else(|| {
                    AnchorError::config(
                        format!("levels[{l}]"),
                        "gives more anchors than fit in memory",
                        shape,
                    )
                })?;
            levels.push(entry);
        }
        Ok(levels)
    }

    /// Calls `emit([x1, y1, x2, y2])` in `f64` for every anchor, in level → y → x → anchor order.
    fn emit_corners(&self, levels: &[AnchorLevel], mut emit: impl FnMut([f64; 4])) {
        let offset = f64::from(self.offset);
        for (l, level) in levels.iter().enumerate() {
            let cell = self.cell_half_extents(l);
            let (sy, sx) = (f64::from(level.stride_y), f64::from(level.stride_x));
            for y in 0..level.shape.height {
                let cy = (f64::from(y) + offset) * sy;
                for x in 0..level.shape.width {
                    let cx = (f64::from(x) + offset) * sx;
                    for &(hw, hh) in &cell {
                        emit([cx - hw, cy - hh, cx + hw, cy + hh]);
                    }
                }
            }
        }
    }
}

/// P2–P6 with one size each, 32…512 on strides 4…64: every FPN preset's levels.
fn fpn_levels() -> Vec<PyramidLevel> {
    [(4, 32.0), (8, 64.0), (16, 128.0), (32, 256.0), (64, 512.0)]
        .into_iter()
        .map(|(stride, size)| PyramidLevel { stride, sizes: vec![size] })
        .collect()
}

/// An empty buffer with room for every anchor of `levels`; an allocation the machine cannot
/// make is an error naming the count, not an abort.
fn reserve<T>(levels: &[AnchorLevel]) -> Result<Vec<T>, AnchorError> {
    let count = levels.last().map_or(0, |l| l.start + l.len());
    let mut buffer = Vec::new();
    buffer.try_reserve_exact(count).map_err(|_| {
        AnchorError::config("levels", "give more anchors than fit in memory", count)
    })?;
    Ok(buffer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(h: u32, w: u32) -> ImageSize {
        ImageSize::new(h, w).unwrap()
    }

    #[test]
    fn preset_counts() {
        assert_eq!(
            AnchorConfig::matterport_fpn().generate(image(1024, 1024)).unwrap().len(),
            261_888
        );
        assert_eq!(
            AnchorConfig::torchvision_fpn().generate(image(800, 1344)).unwrap().len(),
            268_569
        );
        assert_eq!(AnchorConfig::seed000().generate(image(64, 64)).unwrap().len(), 576);
        assert_eq!(AnchorConfig::seed001().generate(image(64, 64)).unwrap().len(), 9_216);
    }

    #[test]
    fn torchvision_p6_stride_is_image_over_grid() {
        let anchors = AnchorConfig::torchvision_fpn().generate(image(800, 1344)).unwrap();
        let p6 = anchors.levels[4];
        assert_eq!((p6.shape.height, p6.shape.width, p6.stride_y, p6.stride_x), (13, 21, 61, 64));
    }

    #[test]
    fn ratio_conventions_swap_tall_and_wide() {
        let m = AnchorConfig::matterport_fpn().cell_half_extents(0);
        let t = AnchorConfig::torchvision_fpn().cell_half_extents(0);
        assert!(m[0].1 > m[0].0, "Matterport anchor 0 is tall");
        assert!(t[0].0 > t[0].1, "torchvision anchor 0 is wide");
        // torchvision rounds ±22.627 / ±11.314 to 23 / 11.
        assert_eq!(t[0], (23.0, 11.0));
    }

    #[test]
    fn index_and_level_of_agree_with_order() {
        let anchors = AnchorConfig::matterport_fpn().generate(image(256, 320)).unwrap();
        let l = anchors.levels[1];
        let i = anchors.index(1, 2, 3, 1).unwrap();
        assert_eq!(i, l.start + (2 * l.shape.width as usize + 3) * 3 + 1);
        assert_eq!(anchors.level_of(i), Some(1));
        assert_eq!(anchors.level_of(anchors.len()), None);
        assert_eq!(anchors.index(1, l.shape.height, 0, 0), None);
        let b = anchors.boxes[i];
        assert_eq!(b.center(), (3.0 * 8.0, 2.0 * 8.0));
    }

    #[test]
    fn bad_config_is_an_error_not_a_panic() {
        let mut c = AnchorConfig::torchvision_fpn();
        c.levels[1].stride = 0;
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "anchor config: `levels[1].stride` must be > 0, got 0"
        );
        let mut c = AnchorConfig::seed000();
        c.ratios = vec![1.0, f32::NAN];
        assert_eq!(
            c.generate(image(64, 64)).unwrap_err().to_string(),
            "anchor config: `ratios[1]` must be a finite number > 0, got NaN"
        );
        let mut c = AnchorConfig::seed000();
        c.levels.clear();
        assert_eq!(
            c.validate().unwrap_err().to_string(),
            "anchor config: `levels` must not be empty, got []"
        );
        let err = AnchorConfig::seed000().generate_for_shapes(image(64, 64), &[]).unwrap_err();
        assert_eq!(err.to_string(), "expected one feature shape per pyramid level (1), got 0");
    }

    #[test]
    fn offset_half_centres_anchors_in_cells() {
        let mut c = AnchorConfig::seed000();
        c.offset = 0.5;
        let anchors = c.generate(image(64, 64)).unwrap();
        // Anchor 4 of the cell is size 16, ratio 1 (ratio-major: i_ratio 1 · 3 sizes + i_size 1).
        assert_eq!(anchors.boxes[4], Bbox::new(-4.0, -4.0, 12.0, 12.0));
        assert_eq!(anchors.boxes[9 + 4], Bbox::new(4.0, -4.0, 20.0, 12.0));
    }
}
