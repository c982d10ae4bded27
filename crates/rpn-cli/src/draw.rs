//! PNG pictures: the training curve and proposals over images (plotters, DejaVu Sans embedded so
//! no system font is looked up).

use std::path::Path;
use std::sync::Once;

use rpn_io::AtomicFile;

use plotters::prelude::*;
use plotters::style::{register_font, FontStyle};
use rpn::{ImageProposal, Sample, StepLosses};
use rpn_anchors::Bbox;

use crate::CliError;

const FONT: &str = "sans-serif";
/// Ground truth.
const GT_COLOR: RGBColor = RGBColor(40, 220, 60);
/// Proposals.
const PROPOSAL_COLOR: RGBColor = RGBColor(255, 120, 0);

fn register() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // A font that does not parse is a build defect, not a user error: the drawing then has
        // no text, and plotters reports it on the first label.
        let _ = register_font(FONT, FontStyle::Normal, dejavu::sans::regular());
    });
}

fn draw_err(path: &Path, e: impl std::fmt::Display) -> CliError {
    CliError::Draw { path: path.to_path_buf(), message: e.to_string() }
}

/// `loss.png`: total, objectness and box losses per step of `batch` images, under `title`, into
/// `out` (not committed).
pub(crate) fn loss_curve(
    history: &[(usize, StepLosses)],
    title: &str,
    batch: usize,
    out: &AtomicFile,
) -> Result<(), CliError> {
    register();
    let path = out.destination();
    let err = |e: &dyn std::fmt::Display| draw_err(path, e);
    let root = BitMapBackend::new(out.temp_path(), (900, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let last_step = history.last().map_or(1, |h| h.0).max(1) as f32;
    let y_max = history.iter().map(|h| h.1.total()).fold(0.1f32, f32::max) * 1.05;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 22))
        .margin(16)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .build_cartesian_2d(0f32..last_step, 0f32..y_max)
        .map_err(|e| err(&e))?;
    chart
        .configure_mesh()
        .x_desc(format!("step (batch of {batch} images)"))
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_desc("loss")
        .label_style((FONT, 15))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(|e| err(&e))?;
    // Each step sees a new batch, so the raw curve is noisy: draw it faint, and a moving
    // average over `SMOOTHING` steps on top.
    let faint = RGBColor(30, 60, 200).mix(0.25);
    chart
        .draw_series(LineSeries::new(history.iter().map(|(s, l)| (*s as f32, l.total())), faint))
        .map_err(|e| err(&e))?
        .label("total, per step")
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], faint));
    let series: [(&str, RGBColor, LossPart); 3] = [
        ("total (moving average)", RGBColor(30, 60, 200), |l| l.total()),
        ("objectness (softmax CE)", RGBColor(220, 60, 40), |l| l.objectness),
        ("box regression (smooth L1)", RGBColor(40, 160, 60), |l| l.box_regression),
    ];
    for (name, color, value) in series {
        chart
            .draw_series(LineSeries::new(moving_average(history, value), color.stroke_width(2)))
            .map_err(|e| err(&e))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FONT, 16))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(|e| err(&e))?;
    root.present().map_err(|e| err(&e))
}

/// Picks one loss out of a step's losses.
type LossPart = fn(&StepLosses) -> f32;

/// Height of the legend strip under a picture.
const LEGEND_HEIGHT: u32 = 24;

/// Steps averaged in the loss curve.
const SMOOTHING: usize = 10;

/// Trailing mean of `value` over the last [`SMOOTHING`] steps (fewer at the start).
fn moving_average(history: &[(usize, StepLosses)], value: LossPart) -> Vec<(f32, f32)> {
    (0..history.len())
        .map(|i| {
            let window = &history[i.saturating_sub(SMOOTHING - 1)..=i];
            let mean = window.iter().map(|(_, l)| value(l)).sum::<f32>() / window.len() as f32;
            (history[i].0 as f32, mean)
        })
        .collect()
}

/// Integer upscale so that small images (64×64 shapes) are readable: at least 384 px wide.
fn display_scale(width: u32) -> u32 {
    (384 / width.max(1)).max(1)
}

/// The image with its GT boxes (green) and the `top` best proposals (orange, score shown).
pub(crate) fn proposals_on_image(
    sample: &Sample,
    proposals: &[ImageProposal],
    top: usize,
    out: &AtomicFile,
) -> Result<(), CliError> {
    let path = out.destination();
    let (w, h) = (sample.size.width, sample.size.height);
    let rgb: Vec<u8> =
        sample.pixels.iter().map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8).collect();
    let image = image::RgbImage::from_raw(w, h, rgb)
        .ok_or_else(|| draw_err(path, "pixel buffer does not match the image size"))?;
    draw_boxes(&image, &sample.boxes, proposals, top, out)
}

/// Draws on a copy of `image` (upscaled when small) and writes a PNG into `out` (not committed).
pub(crate) fn draw_boxes(
    image: &image::RgbImage,
    gt: &[Bbox],
    proposals: &[ImageProposal],
    top: usize,
    out: &AtomicFile,
) -> Result<(), CliError> {
    register();
    let path = out.destination();
    let err = |e: &dyn std::fmt::Display| draw_err(path, e);
    let scale = display_scale(image.width());
    let (w, h) = (image.width() * scale, image.height() * scale);
    // The picture, then a strip below it for the legend (so it hides nothing).
    let total_h = h + LEGEND_HEIGHT;
    let mut canvas = image::RgbImage::new(w, total_h);
    image::imageops::replace(
        &mut canvas,
        &image::imageops::resize(image, w, h, image::imageops::FilterType::Nearest),
        0,
        0,
    );
    let mut canvas = canvas.into_raw();
    {
        let root = BitMapBackend::with_buffer(&mut canvas, (w, total_h)).into_drawing_area();
        let s = scale as f32;
        let corners = |b: &Bbox| {
            let p = |v: f32| (v * s).round() as i32;
            [(p(b.x1), p(b.y1)), (p(b.x2) - 1, p(b.y2) - 1)]
        };
        // A black outline under each box keeps it visible on any background colour.
        let outlined = |[a, b]: [(i32, i32); 2], color: RGBColor, width: u32| {
            root.draw(&Rectangle::new([a, b], BLACK.stroke_width(width + 2)))?;
            root.draw(&Rectangle::new([a, b], color.stroke_width(width)))
        };
        for b in gt {
            outlined(corners(b), GT_COLOR, 3).map_err(|e| err(&e))?;
        }
        // Worst first, so the best proposal is drawn on top.
        let shown: Vec<&ImageProposal> = proposals.iter().take(top).collect();
        for p in shown.iter().rev() {
            let [a, b] = corners(&p.bbox);
            outlined([a, b], PROPOSAL_COLOR, 2).map_err(|e| err(&e))?;
            // The score on a dark tab above the box's top-left corner (inside at the top edge).
            let (x, y) = (a.0.max(0), if a.1 >= 16 { a.1 - 16 } else { a.1.max(0) + 2 });
            root.draw(&Rectangle::new([(x, y), (x + 34, y + 15)], BLACK.mix(0.7).filled()))
                .map_err(|e| err(&e))?;
            let label = format!("{:.2}", p.score);
            let font = (FONT, 13).into_font().color(&PROPOSAL_COLOR);
            root.draw(&Text::new(label, (x + 3, y), font)).map_err(|e| err(&e))?;
        }
        let legend = (FONT, 15).into_font();
        let top = h as i32;
        root.draw(&Rectangle::new([(0, top), (w as i32, total_h as i32)], BLACK.filled()))
            .map_err(|e| err(&e))?;
        root.draw(&Text::new("ground truth", (6, top + 4), legend.color(&GT_COLOR)))
            .map_err(|e| err(&e))?;
        root.draw(&Text::new(
            format!("top {} proposals (score)", shown.len()),
            (120, top + 4),
            legend.color(&PROPOSAL_COLOR),
        ))
        .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    let picture = image::RgbImage::from_raw(w, total_h, canvas)
        .ok_or_else(|| draw_err(path, "canvas size changed while drawing"))?;
    picture.save_with_format(out.temp_path(), image::ImageFormat::Png).map_err(|e| err(&e))
}
