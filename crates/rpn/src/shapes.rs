//! Seed 001's synthetic shapes data: squares, circles and triangles of random colour, size and
//! position on a random background, with their boxes — generated in-process from a seed, so
//! training needs no download.
//!
//! The notebook's `shapeData` comes from a `utils.py` that is not part of the seed; this follows
//! Matterport's `ShapesDataset` (which it derives from) scaled to 64×64: 1–3 shapes of half-size
//! 6–16 px, a shape is dropped when its box overlaps a kept one with IoU > 0.3 (Matterport runs
//! NMS 0.3 over the shapes), images are RGB in `[0, 1]`.

use rand_core::Rng;
use rpn_anchors::Bbox;
use rpn_proposals::nms;

/// What a shape is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShapeKind {
    /// Axis-aligned square.
    Square,
    /// Disc.
    Circle,
    /// Upward equilateral-ish triangle.
    Triangle,
}

/// One drawn shape: kind, centre, half-size, colour, and its box.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Shape {
    /// Kind.
    pub kind: ShapeKind,
    /// Centre x, pixels.
    pub cx: f32,
    /// Centre y, pixels.
    pub cy: f32,
    /// Half-size `s`, pixels.
    pub s: f32,
    /// RGB in `[0, 1]`.
    pub color: [f32; 3],
}

impl Shape {
    /// `√3`: a triangle of height `2s` has half-width `2s / √3`.
    const TRIANGLE_HALF_WIDTH: f32 = 1.154_700_5;

    /// The shape's box, clipped to a `side × side` image.
    pub fn bbox(&self, side: f32) -> Bbox {
        let hw = if self.kind == ShapeKind::Triangle {
            self.s * Self::TRIANGLE_HALF_WIDTH
        } else {
            self.s
        };
        Bbox::new(self.cx - hw, self.cy - self.s, self.cx + hw, self.cy + self.s)
            .clip_to_window(&Bbox::new(0.0, 0.0, side, side))
    }

    fn contains(&self, x: f32, y: f32) -> bool {
        let (dx, dy) = (x - self.cx, y - self.cy);
        match self.kind {
            ShapeKind::Square => dx.abs() <= self.s && dy.abs() <= self.s,
            ShapeKind::Circle => dx * dx + dy * dy <= self.s * self.s,
            // Apex at (cx, cy − s), base at y = cy + s: the half-width grows linearly downwards.
            ShapeKind::Triangle => {
                dy.abs() <= self.s && dx.abs() <= (dy + self.s) / 2.0 * Self::TRIANGLE_HALF_WIDTH
            }
        }
    }
}

/// One generated image.
#[derive(Debug, Clone, PartialEq)]
pub struct ShapesImage {
    /// `side · side · 3` values, HWC (NHWC without the batch), RGB in `[0, 1]`.
    pub pixels: Vec<f32>,
    /// The shapes, in drawing order.
    pub shapes: Vec<Shape>,
    /// Their boxes, pixels.
    pub boxes: Vec<Bbox>,
}

/// The generator. Same RNG state ⇒ same image, on every machine.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShapesDataset {
    /// Image side (64 in seed 001).
    pub side: usize,
    /// At most this many shapes per image (at least one is always drawn).
    pub max_shapes: usize,
}

impl Default for ShapesDataset {
    fn default() -> Self {
        Self { side: 64, max_shapes: 3 }
    }
}

/// A uniform float in `[lo, hi)` from 24 random bits.
fn uniform<R: Rng + ?Sized>(rng: &mut R, lo: f32, hi: f32) -> f32 {
    lo + (hi - lo) * ((rng.next_u32() >> 8) as f32 / (1u32 << 24) as f32)
}

impl ShapesDataset {
    /// Draws one image.
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> ShapesImage {
        let side = self.side as f32;
        let background = [uniform(rng, 0.0, 1.0), uniform(rng, 0.0, 1.0), uniform(rng, 0.0, 1.0)];
        let n = 1 + (rng.next_u32() as usize % self.max_shapes.max(1));
        let mut shapes: Vec<Shape> = (0..n)
            .map(|_| {
                let kind = [ShapeKind::Square, ShapeKind::Circle, ShapeKind::Triangle]
                    [rng.next_u32() as usize % 3];
                let s = uniform(rng, 6.0, 16.0);
                Shape {
                    kind,
                    cx: uniform(rng, s * 0.5, side - s * 0.5),
                    cy: uniform(rng, s * 0.5, side - s * 0.5),
                    s,
                    color: [uniform(rng, 0.0, 1.0), uniform(rng, 0.0, 1.0), uniform(rng, 0.0, 1.0)],
                }
            })
            .collect();
        // Matterport: NMS 0.3 over the shapes' boxes with random scores; here, drawing order wins.
        let boxes: Vec<Bbox> = shapes.iter().map(|s| s.bbox(side)).collect();
        let scores: Vec<f32> = (0..boxes.len()).map(|i| -(i as f32)).collect();
        let mut keep = nms(&boxes, &scores, 0.3, usize::MAX).unwrap_or_default();
        keep.sort_unstable();
        shapes = keep.iter().map(|&i| shapes[i]).collect();

        let mut pixels = Vec::with_capacity(self.side * self.side * 3);
        for y in 0..self.side {
            for x in 0..self.side {
                let (px, py) = (x as f32 + 0.5, y as f32 + 0.5);
                // Later shapes are drawn over earlier ones.
                let color = shapes
                    .iter()
                    .rev()
                    .find(|s| s.contains(px, py))
                    .map_or(background, |s| s.color);
                pixels.extend_from_slice(&color);
            }
        }
        let boxes = shapes.iter().map(|s| s.bbox(side)).collect();
        ShapesImage { pixels, shapes, boxes }
    }
}
