//! `rpn train`, `rpn eval` and `rpn demo`.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rpn::{
    Architecture, CocoDirectory, Dataset, LrSchedule, Proposer, RecallReport, ShapesSource,
    StepLosses, TrainConfig, Trainer,
};
use rpn_anchors::ImageSize;

use crate::draw;
use crate::CliError;

/// `--dataset`: the synthetic shapes or a COCO-style directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DatasetArg {
    Shapes,
    Directory(PathBuf),
}

pub(crate) fn parse_dataset(s: &str) -> Result<DatasetArg, String> {
    if s == "shapes" {
        return Ok(DatasetArg::Shapes);
    }
    let path = PathBuf::from(s);
    if path.is_dir() {
        Ok(DatasetArg::Directory(path))
    } else {
        Err(format!("`{s}` is neither `shapes` nor a directory (with annotations.json)"))
    }
}

/// `--schedule constant | step:EVERY:GAMMA | cosine[:FLOOR]` (cosine decays over `--steps`).
pub(crate) fn parse_schedule(s: &str) -> Result<ScheduleArg, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let num = |v: &str, what: &str| -> Result<f64, String> {
        v.parse().map_err(|_| format!("schedule `{s}`: {what} `{v}` is not a number"))
    };
    match parts.as_slice() {
        ["constant"] => Ok(ScheduleArg::Constant),
        ["step", every, gamma] => Ok(ScheduleArg::Step {
            every: every
                .parse()
                .map_err(|_| format!("schedule `{s}`: step count `{every}` is not an integer"))?,
            gamma: num(gamma, "gamma")?,
        }),
        ["cosine"] => Ok(ScheduleArg::Cosine { floor: 0.0 }),
        ["cosine", floor] => Ok(ScheduleArg::Cosine { floor: num(floor, "floor")? }),
        _ => Err(format!(
            "unknown schedule `{s}` (expected constant, step:EVERY:GAMMA or cosine[:FLOOR])"
        )),
    }
}

/// A schedule before the run length is known.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum ScheduleArg {
    Constant,
    Step { every: usize, gamma: f64 },
    Cosine { floor: f64 },
}

impl ScheduleArg {
    fn resolve(self, steps: usize) -> LrSchedule {
        match self {
            Self::Constant => LrSchedule::Constant,
            Self::Step { every, gamma } => LrSchedule::Step { every, gamma },
            Self::Cosine { floor } => LrSchedule::Cosine { total_steps: steps, floor },
        }
    }
}

fn square(side: usize) -> Result<ImageSize, CliError> {
    let side = u32::try_from(side)
        .map_err(|_| CliError::Usage(format!("image size {side} is too large")))?;
    ImageSize::new(side, side).map_err(|e| CliError::Usage(format!("image size: {e}")))
}

/// Which shapes images a data set argument means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Split {
    /// The training stream of the seed.
    Train,
    /// The held-out stream (never trained on, whatever the seeds).
    HeldOut,
}

/// The images of `arg`: shapes from the `split` stream of `seed`, or a COCO directory (all of
/// it in both splits), at `side × side`.
pub(crate) fn dataset(
    arg: &DatasetArg,
    split: Split,
    seed: u64,
    side: usize,
) -> Result<Box<dyn Dataset>, CliError> {
    Ok(match arg {
        DatasetArg::Shapes => {
            let mut s = match split {
                Split::Train => ShapesSource::train(seed),
                Split::HeldOut => ShapesSource::held_out(seed),
            };
            s.shapes.side = side;
            Box::new(s)
        }
        DatasetArg::Directory(dir) => Box::new(CocoDirectory::open(dir, square(side)?)?),
    })
}

fn bar(len: u64, template: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// What `rpn train` was asked to do.
#[derive(Debug, Clone)]
pub(crate) struct TrainArgs {
    pub(crate) arch: Architecture,
    pub(crate) dataset: DatasetArg,
    pub(crate) steps: usize,
    pub(crate) config: TrainConfig,
    pub(crate) schedule: ScheduleArg,
    pub(crate) image_size: usize,
    pub(crate) output: PathBuf,
    pub(crate) checkpoint_every: usize,
    pub(crate) resume: bool,
    pub(crate) precise_bn_batches: usize,
}

/// The outcome of a training run.
pub(crate) struct TrainOutcome {
    pub(crate) trainer: Trainer,
    pub(crate) history: Vec<(usize, StepLosses)>,
    pub(crate) images_per_second: f64,
}

/// Batches of 20 for the BatchNorm population statistics at the end of a run (200 images).
pub(crate) const PRECISE_BN_BATCHES: usize = 10;

const LOSS_CSV_HEADER: &str = "step,objectness,box_regression,total,lr,grad_norm";

fn io_err(path: &Path, source: std::io::Error) -> CliError {
    CliError::Io { path: path.to_path_buf(), operation: "cannot write", source }
}

/// Reads `loss.csv` rows up to `last_step` (the rest belongs to steps a resumed run redoes).
fn read_history(path: &Path, last_step: usize) -> Result<Vec<(usize, StepLosses)>, CliError> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok(vec![]) };
    let mut rows = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let f: Vec<&str> = line.split(',').collect();
        let parsed = (|| -> Option<(usize, StepLosses)> {
            Some((
                f.first()?.parse().ok()?,
                StepLosses {
                    objectness: f.get(1)?.parse().ok()?,
                    box_regression: f.get(2)?.parse().ok()?,
                    lr: f.get(4)?.parse().ok()?,
                    grad_norm: f.get(5)?.parse().ok()?,
                },
            ))
        })();
        let row = parsed.ok_or_else(|| {
            CliError::Usage(format!(
                "{}: line {} is not a loss row: `{line}`",
                path.display(),
                i + 1
            ))
        })?;
        if row.0 <= last_step {
            rows.push(row);
        }
    }
    Ok(rows)
}

fn write_history(path: &Path, history: &[(usize, StepLosses)]) -> Result<(), CliError> {
    let mut text = format!("{LOSS_CSV_HEADER}\n");
    for (step, l) in history {
        text.push_str(&format!(
            "{step},{},{},{},{},{}\n",
            l.objectness,
            l.box_regression,
            l.total(),
            l.lr,
            l.grad_norm
        ));
    }
    let tmp = path.with_extension("csv.tmp");
    std::fs::write(&tmp, text).map_err(|e| io_err(&tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| io_err(path, e))
}

/// Runs `rpn train`: progress bar, `loss.csv`, `checkpoint.safetensors` every
/// `checkpoint_every` steps and at the end, `final.safetensors`.
pub(crate) fn train(args: &TrainArgs) -> Result<TrainOutcome, CliError> {
    std::fs::create_dir_all(&args.output).map_err(|e| io_err(&args.output, e))?;
    let checkpoint = args.output.join("checkpoint.safetensors");
    let csv = args.output.join("loss.csv");
    let config = TrainConfig { schedule: args.schedule.resolve(args.steps), ..args.config };
    let dataset = dataset(&args.dataset, Split::Train, config.seed, args.image_size)?;
    let mut trainer = if args.resume {
        if !checkpoint.exists() {
            return Err(CliError::Usage(format!(
                "--resume: {} does not exist (run without --resume first)",
                checkpoint.display()
            )));
        }
        Trainer::resume(&checkpoint, dataset)?
    } else {
        Trainer::new(&args.arch, config, dataset)?
    };
    let mut history = if args.resume { read_history(&csv, trainer.steps_done())? } else { vec![] };
    let start_step = trainer.steps_done();
    if start_step >= args.steps {
        return Err(CliError::Usage(format!(
            "the checkpoint is already at step {start_step}; ask for more than {} steps",
            args.steps
        )));
    }
    let progress = bar(
        args.steps as u64,
        "{spinner} step {pos}/{len} [{bar:30}] {msg} ({elapsed} elapsed, ETA {eta})",
    );
    progress.set_position(start_step as u64);
    let plain_log = !std::io::stderr().is_terminal();
    let log_every = (args.steps / 10).max(1);
    let batch = trainer.config().batch_size;
    let started = Instant::now();
    for step in start_step..args.steps {
        let losses = trainer.step()?;
        history.push((step + 1, losses));
        let done = step + 1 - start_step;
        let rate = (done * batch) as f64 / started.elapsed().as_secs_f64().max(1e-9);
        let msg = format!(
            "loss {:.4} (objectness {:.4}, box {:.4}) {rate:.1} images/s",
            losses.total(),
            losses.objectness,
            losses.box_regression
        );
        if plain_log && ((step + 1) % log_every == 0 || step + 1 == args.steps) {
            eprintln!("step {}/{}: {msg}", step + 1, args.steps);
        }
        progress.set_message(msg);
        progress.inc(1);
        let last = step + 1 == args.steps;
        if last || (args.checkpoint_every > 0 && (step + 1) % args.checkpoint_every == 0) {
            trainer.save_checkpoint(&checkpoint)?;
            write_history(&csv, &history)?;
        }
    }
    progress.finish_and_clear();
    // After the last checkpoint, so that `--resume` continues the training run's statistics.
    if args.precise_bn_batches > 0 {
        trainer.recompute_bn_statistics(args.precise_bn_batches)?;
    }
    trainer.save_weights(&args.output.join("final.safetensors"))?;
    let done = args.steps - start_step;
    let images_per_second = (done * batch) as f64 / started.elapsed().as_secs_f64().max(1e-9);
    Ok(TrainOutcome { trainer, history, images_per_second })
}

pub(crate) fn train_report(args: &TrainArgs, outcome: &TrainOutcome) -> String {
    let first = outcome.history.first().map_or(f32::NAN, |h| h.1.total());
    let last = outcome.history.last().map_or(f32::NAN, |h| h.1.total());
    let bn = match args.precise_bn_batches {
        0 => "BatchNorm moving averages as trained".to_owned(),
        n => format!("BatchNorm statistics recomputed over {n} batches"),
    };
    format!(
        "trained {} on {} for {} steps of {} ({:.1} images/s): loss {first:.4} → {last:.4}\n\
         wrote {}/final.safetensors ({bn}), checkpoint.safetensors, loss.csv",
        outcome.trainer.arch().name,
        outcome.trainer.dataset().describe(),
        args.steps,
        outcome.trainer.config().batch_size,
        outcome.images_per_second,
        args.output.display()
    )
}

/// Evaluates `proposer` on `n` images of `dataset` with a progress bar.
pub(crate) fn evaluate(
    proposer: &Proposer,
    dataset: &dyn Dataset,
    n: usize,
    batch: usize,
) -> Result<RecallReport, CliError> {
    let n = dataset.num_images().map_or(n, |len| n.min(len));
    let progress = bar(n as u64, "{spinner} evaluating {pos}/{len} images [{bar:30}] ETA {eta}");
    let report = proposer.evaluate(dataset, n, batch, |done| progress.set_position(done as u64))?;
    progress.finish_and_clear();
    Ok(report)
}

/// `rpn demo`: train seed 001 on shapes, evaluate on held-out images, draw.
pub(crate) fn demo(
    output: &Path,
    steps: usize,
    images: usize,
    seed: u64,
) -> Result<String, CliError> {
    let args = TrainArgs {
        arch: "seed001".parse().map_err(rpn::Error::from)?,
        dataset: DatasetArg::Shapes,
        steps,
        config: TrainConfig { seed, ..TrainConfig::default() },
        schedule: ScheduleArg::Constant,
        image_size: 64,
        output: output.to_path_buf(),
        checkpoint_every: 0,
        resume: false,
        precise_bn_batches: PRECISE_BN_BATCHES,
    };
    let started = Instant::now();
    eprintln!(
        "rpn demo: training seed 001 (seed's recipe: SGD lr 5e-4, momentum 0.9, batch 20) on \
         synthetic shapes for {steps} steps, then evaluating on {images} held-out images"
    );
    let outcome = train(&args)?;
    let proposer = outcome.trainer.proposer()?;
    let held_out = ShapesSource::held_out(seed);
    let report = evaluate(&proposer, &held_out, images, 20)?;

    let loss_png = output.join("loss.png");
    draw::loss_curve(&outcome.history, &loss_png)?;
    let mut pictures = Vec::new();
    for i in 0..4 {
        let sample = held_out.get(i)?;
        let found = proposer.propose_pixels(&sample.pixels, 1, sample.size)?;
        let proposals = found.first().map(|f| f.proposals.as_slice()).unwrap_or_default();
        let path = output.join(format!("proposals_{i}.png"));
        draw::proposals_on_image(&sample, proposals, 5, &path)?;
        pictures.push(path);
    }
    std::fs::write(
        output.join("recall.json"),
        serde_json::to_string_pretty(&report).map_err(|e| CliError::Usage(e.to_string()))?,
    )
    .map_err(|e| io_err(&output.join("recall.json"), e))?;
    let mut out = std::io::stderr();
    let _ = out.flush();
    Ok(format!(
        "{}\n\nheld-out recall (IoU 0.5, top 100): {:.3}   (IoU 0.7, top 100): {:.3}   AR@100: {:.3}\n\
         {:.0} s; wrote {}: final.safetensors, loss.csv, loss.png, recall.json, {}",
        report,
        report.recall_iou0_5_top100,
        report.recall_iou0_7_top100,
        report.ar_top100,
        started.elapsed().as_secs_f64(),
        output.display(),
        pictures
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect::<Vec<_>>()
            .join(", ")
    ))
}
