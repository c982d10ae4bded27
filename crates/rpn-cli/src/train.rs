//! `rpn train`, `rpn eval` and `rpn demo`.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rpn::{
    Architecture, Border, CocoDirectory, Dataset, Fit, Layers, LrSchedule, Preprocessing, Proposer,
    RecallReport, ShapesSource, StepLosses, TrainConfig, Trainer,
};
use rpn_anchors::ImageSize;
use rpn_io::AtomicFile;
use rpn_model::{MatterportConfig, Network};

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
/// Every number is checked here: EVERY ≥ 1, GAMMA finite and > 0, FLOOR in [0, 1].
pub(crate) fn parse_schedule(s: &str) -> Result<ScheduleArg, String> {
    let parts: Vec<&str> = s.split(':').collect();
    let num = |v: &str, what: &str| -> Result<f64, String> {
        v.parse::<f64>()
            .ok()
            .filter(|x| x.is_finite())
            .ok_or_else(|| format!("schedule `{s}`: {what} `{v}` is not a finite number"))
    };
    let schedule = match parts.as_slice() {
        ["constant"] => ScheduleArg::Constant,
        ["step", every, gamma] => ScheduleArg::Step {
            every: every.parse().map_err(|_| {
                format!("schedule `{s}`: step count `{every}` is not a whole number")
            })?,
            gamma: num(gamma, "gamma")?,
        },
        ["cosine"] => ScheduleArg::Cosine { floor: 0.0 },
        ["cosine", floor] => ScheduleArg::Cosine { floor: num(floor, "floor")? },
        _ => {
            return Err(format!(
                "unknown schedule `{s}` (expected constant, step:EVERY:GAMMA or cosine[:FLOOR])"
            ))
        }
    };
    // The library's own check, so the flag and the API refuse the same things.
    schedule.resolve(1).validate().map_err(|e| format!("schedule `{s}`: {e}"))?;
    Ok(schedule)
}

/// `--border keep | ignore`.
pub(crate) fn parse_border(s: &str) -> Result<Border, String> {
    match s {
        "keep" => Ok(Border::Keep),
        "ignore" => Ok(Border::Ignore),
        _ => Err(format!("unknown border policy `{s}` (expected keep or ignore)")),
    }
}

fn border_name(border: Border) -> &'static str {
    match border {
        Border::Ignore => "ignore",
        _ => "keep",
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

fn square(side: u32) -> Result<ImageSize, CliError> {
    ImageSize::new(side, side).map_err(|e| CliError::Usage(format!("image size: {e}")))
}

/// Refuses a `flag` side that `arch` cannot run: it must be a positive multiple of the
/// network's stride (the feature map must tile the image).
pub(crate) fn check_side(arch: &Architecture, flag: &str, side: u32) -> Result<(), CliError> {
    let stride = arch.network.stride() as u32;
    if side < stride || !side.is_multiple_of(stride) {
        return Err(CliError::Usage(format!(
            "{flag} {side}: {} needs a multiple of its stride {stride}",
            arch.name
        )));
    }
    Ok(())
}

/// Refuses `--arch` values `rpn train` cannot train (before any work).
fn check_trainable(arch: &Architecture) -> Result<(), CliError> {
    if arch.rpn().is_some_and(|r| r.trainable) {
        return Ok(());
    }
    let trainable: Vec<&str> = Architecture::all()
        .into_iter()
        .filter(|a| a.rpn().is_some_and(|r| r.trainable))
        .map(|a| a.name)
        .collect();
    Err(CliError::Usage(format!(
        "--arch {}: `rpn train` trains {} (the others run with weights ported from Keras)",
        arch.name,
        trainable.join(", ")
    )))
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
/// it in both splits), at `side × side`; directory images fit the way `arch` molds its inputs
/// (Matterport: aspect kept, centred, padded).
pub(crate) fn dataset(
    arg: &DatasetArg,
    split: Split,
    seed: u64,
    side: u32,
    arch: &Architecture,
) -> Result<Box<dyn Dataset>, CliError> {
    Ok(match arg {
        DatasetArg::Shapes => {
            let mut s = match split {
                Split::Train => ShapesSource::train(seed),
                Split::HeldOut => ShapesSource::held_out(seed),
            };
            s.shapes.side = side as usize;
            Box::new(s)
        }
        DatasetArg::Directory(dir) => {
            let fit = match arch.rpn().map(|r| r.preprocessing) {
                Some(Preprocessing::MatterportSquare { min_dim, .. }) => {
                    Fit::MatterportSquare { min_dim }
                }
                _ => Fit::Stretch,
            };
            Box::new(CocoDirectory::open(dir, square(side)?)?.with_fit(fit)?)
        }
    })
}

fn bar(len: u64, template: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// The flags that define a training run. `None`: not given on the command line; a fresh run
/// takes the default, a resumed run the checkpoint's value.
#[derive(Debug, Clone, Default)]
pub(crate) struct RunFlags {
    pub(crate) arch: Option<Architecture>,
    pub(crate) dataset: Option<DatasetArg>,
    pub(crate) batch_size: Option<usize>,
    pub(crate) seed: Option<u64>,
    pub(crate) lr: Option<f64>,
    pub(crate) momentum: Option<f64>,
    pub(crate) weight_decay: Option<f64>,
    pub(crate) clip_grad_norm: Option<f64>,
    pub(crate) schedule: Option<ScheduleArg>,
    pub(crate) image_size: Option<u32>,
    pub(crate) layers: Option<Layers>,
    pub(crate) border: Option<Border>,
    pub(crate) flip: Option<bool>,
    /// Matterport's stem width (fresh runs; a resumed run keeps its checkpoint's).
    pub(crate) width: Option<usize>,
}

/// A run's settings once defaults (or the checkpoint's values) are filled in.
struct RunSettings {
    arch: Architecture,
    dataset: DatasetArg,
    config: TrainConfig,
    image_size: u32,
}

impl RunSettings {
    /// Checks the settings, then that `output` accepts files (a usage error creates nothing),
    /// and opens the training data: everything before any work.
    fn checked_dataset(&self, output: &Path) -> Result<Box<dyn Dataset>, CliError> {
        check_side(&self.arch, "--image-size", self.image_size)?;
        self.config.validate()?;
        rpn_io::check_writable_dir(output)?;
        dataset(&self.dataset, Split::Train, self.config.seed, self.image_size, &self.arch)
    }
}

impl RunFlags {
    /// The settings of a fresh run: given flags, else seed 001's recipe.
    fn fresh(&self, steps: usize) -> Result<RunSettings, CliError> {
        let schedule = self.schedule.unwrap_or(ScheduleArg::Constant).resolve(steps);
        let mut arch = match &self.arch {
            Some(a) => a.clone(),
            None => "seed001".parse().map_err(rpn::Error::from)?,
        };
        let (recipe, default_side) = match arch.rpn().map(|r| r.preprocessing) {
            Some(Preprocessing::MatterportSquare { max_dim, .. }) => {
                (TrainConfig::matterport(), max_dim)
            }
            _ => (TrainConfig::default(), DEFAULT_SIDE),
        };
        match (&arch.network, self.width) {
            (_, None) => {}
            (Network::Matterport(c), Some(width)) => {
                arch.network = Network::Matterport(MatterportConfig {
                    width,
                    pyramid_channels: 4 * width,
                    rpn_channels: 8 * width,
                    ..*c
                });
            }
            (_, Some(width)) => {
                return Err(CliError::Usage(format!(
                    "--width {width}: only the Matterport networks come in narrower widths, not {}",
                    arch.name
                )))
            }
        }
        if self.layers.is_some_and(|l| l != Layers::All)
            && !matches!(arch.network, Network::Matterport(_))
        {
            return Err(CliError::Usage(format!(
                "--layers: layer selections follow Matterport's layer names; {} trains every layer",
                arch.name
            )));
        }
        Ok(RunSettings {
            config: self.over(recipe, schedule),
            arch,
            dataset: self.dataset.clone().unwrap_or(DatasetArg::Shapes),
            image_size: self.image_size.unwrap_or(default_side),
        })
    }

    /// The given flags laid over `base`, with `schedule` already resolved.
    fn over(&self, base: TrainConfig, schedule: LrSchedule) -> TrainConfig {
        TrainConfig {
            lr: self.lr.unwrap_or(base.lr),
            momentum: self.momentum.unwrap_or(base.momentum),
            weight_decay: self.weight_decay.unwrap_or(base.weight_decay),
            batch_size: self.batch_size.unwrap_or(base.batch_size),
            seed: self.seed.unwrap_or(base.seed),
            clip_grad_norm: self.clip_grad_norm.or(base.clip_grad_norm),
            schedule,
            layers: self.layers.unwrap_or(base.layers),
            border: self.border.unwrap_or(base.border),
            flip: self.flip.unwrap_or(base.flip),
            ..base
        }
    }

    /// The settings of a resumed run: given flags, else the checkpoint's values; and one line
    /// per given flag whose value differs from the checkpoint's.
    fn resumed(
        &self,
        info: &rpn::CheckpointInfo,
        steps: usize,
    ) -> Result<(RunSettings, Vec<String>), CliError> {
        let c = info.config;
        let mut changes = Vec::new();
        let mut pick = |flag: &str, given: Option<String>, saved: String| {
            if let Some(g) = given.filter(|g| *g != saved) {
                changes.push(format!("{flag} {g} (the checkpoint has {saved})"));
            }
        };
        pick("--arch", self.arch.as_ref().map(|a| a.name.to_owned()), info.arch.clone());
        pick("--batch-size", self.batch_size.map(|v| v.to_string()), c.batch_size.to_string());
        pick("--seed", self.seed.map(|v| v.to_string()), c.seed.to_string());
        pick("--lr", self.lr.map(|v| v.to_string()), c.lr.to_string());
        pick("--momentum", self.momentum.map(|v| v.to_string()), c.momentum.to_string());
        pick(
            "--weight-decay",
            self.weight_decay.map(|v| v.to_string()),
            c.weight_decay.to_string(),
        );
        let clip = |v: Option<f64>| v.map_or("none".to_owned(), |v| v.to_string());
        pick(
            "--clip-grad-norm",
            self.clip_grad_norm.map(|v| v.to_string()),
            clip(c.clip_grad_norm),
        );
        let schedule = self.schedule.map(|s| s.resolve(steps));
        pick("--schedule", schedule.map(|s| format!("{s:?}")), format!("{:?}", c.schedule));
        pick("--image-size", self.image_size.map(|v| v.to_string()), info.image_size.to_string());
        pick("--layers", self.layers.map(|l| l.name().to_owned()), c.layers.name().to_owned());
        pick(
            "--border",
            self.border.map(|b| border_name(b).to_owned()),
            border_name(c.border).to_owned(),
        );
        pick("--flip", self.flip.map(|f| f.to_string()), c.flip.to_string());
        let config = self.over(c, schedule.unwrap_or(c.schedule));
        let arch = match &self.arch {
            Some(a) => a.clone(),
            None => info.arch.parse().map_err(rpn::Error::from)?,
        };
        let settings = RunSettings {
            arch,
            // Data sets are not recorded as arguments: `shapes` unless given (compared below).
            dataset: self.dataset.clone().unwrap_or(DatasetArg::Shapes),
            config,
            image_size: self.image_size.unwrap_or(info.image_size),
        };
        Ok((settings, changes))
    }
}

/// `--image-size` of a fresh run: seed 001's 64.
const DEFAULT_SIDE: u32 = 64;

/// What `rpn train` was asked to do.
#[derive(Debug, Clone)]
pub(crate) struct TrainArgs {
    pub(crate) flags: RunFlags,
    /// `--init`: weights to start a fresh run from.
    pub(crate) init: Option<PathBuf>,
    pub(crate) steps: usize,
    pub(crate) output: PathBuf,
    pub(crate) checkpoint_every: usize,
    pub(crate) resume: bool,
    pub(crate) override_checkpoint: bool,
    pub(crate) precise_bn_batches: usize,
}

/// The outcome of a training run.
pub(crate) struct TrainOutcome {
    pub(crate) trainer: Trainer,
    pub(crate) history: Vec<(usize, StepLosses)>,
    pub(crate) images_per_second: f64,
    /// With `--resume --override`: what changed from the checkpoint's run.
    pub(crate) changes: Vec<String>,
}

/// Batches of 20 for the BatchNorm population statistics at the end of a run (200 images).
pub(crate) const PRECISE_BN_BATCHES: usize = 10;

const LOSS_CSV_HEADER: &str = "step,objectness,box_regression,total,lr,grad_norm";

/// Reads `loss.csv` rows up to `last_step` (the rest belongs to steps a resumed run redoes).
fn read_history(path: &Path, last_step: usize) -> Result<Vec<(usize, StepLosses)>, CliError> {
    if !path.exists() {
        return Ok(vec![]);
    }
    let bytes = rpn_io::read_regular_file(path)?;
    let text = String::from_utf8_lossy(&bytes);
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
        let row = parsed.ok_or_else(|| CliError::Input {
            path: path.to_path_buf(),
            message: format!("line {} is not a loss row: `{line}`", i + 1),
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
    Ok(rpn_io::write_atomic(path, text.as_bytes())?)
}

/// Runs `rpn train`: progress bar, `loss.csv`, `checkpoint.safetensors` every
/// `checkpoint_every` steps and at the end, `final.safetensors`. Everything that can be checked
/// is checked before the first step: the run directory accepts files, the configuration is
/// valid, a resumed run's flags agree with its checkpoint.
pub(crate) fn train(args: &TrainArgs) -> Result<TrainOutcome, CliError> {
    let checkpoint = args.output.join("checkpoint.safetensors");
    let csv = args.output.join("loss.csv");
    let mut overridden = Vec::new();
    let mut trainer = if args.resume {
        if !checkpoint.exists() {
            return Err(CliError::Usage(format!(
                "--resume: {} does not exist (run without --resume first)",
                checkpoint.display()
            )));
        }
        let info = rpn::CheckpointInfo::read(&checkpoint)?;
        if info.step >= args.steps {
            return Err(CliError::Usage(format!(
                "--steps {}: {} is already at step {}; ask for more steps to continue it",
                args.steps,
                checkpoint.display(),
                info.step
            )));
        }
        let (settings, mut changes) = args.flags.resumed(&info, args.steps)?;
        let dataset = settings.checked_dataset(&args.output)?;
        if dataset.describe() != info.dataset {
            changes.push(format!(
                "--dataset: {} (the checkpoint was trained on {})",
                dataset.describe(),
                info.dataset
            ));
        }
        if changes.is_empty() {
            Trainer::resume(&checkpoint, dataset)?
        } else if args.override_checkpoint {
            crate::note(format!("resuming with changes (--override):\n  {}", changes.join("\n  ")));
            overridden = changes;
            Trainer::resume_with(&checkpoint, dataset, settings.config)?
        } else {
            return Err(CliError::Usage(format!(
                "--resume continues {} exactly, but these flags differ from it:\n  {}\n\
                 leave them out (or give the checkpoint's values), or add --override to continue \
                 with the new values",
                checkpoint.display(),
                changes.join("\n  ")
            )));
        }
    } else {
        let settings = args.flags.fresh(args.steps)?;
        check_trainable(&settings.arch)?;
        let dataset = settings.checked_dataset(&args.output)?;
        let mut trainer = Trainer::new(&settings.arch, settings.config, dataset)?;
        if let Some(init) = &args.init {
            trainer.load_initial_weights(init)?;
        }
        trainer
    };
    let mut history = if args.resume { read_history(&csv, trainer.steps_done())? } else { vec![] };
    let start_step = trainer.steps_done();
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
            crate::note(format_args!("step {}/{}: {msg}", step + 1, args.steps));
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
    if args.precise_bn_batches > 0 && !trainer.batch_norm_frozen() {
        trainer.recompute_bn_statistics(args.precise_bn_batches)?;
    }
    let loss_png = AtomicFile::create(&args.output.join("loss.png"))?;
    let title =
        format!("{} on {}: training loss", trainer.arch().name, trainer.dataset().describe());
    draw::loss_curve(&history, &title, trainer.config().batch_size, &loss_png)?;
    trainer.save_weights(&args.output.join("final.safetensors"))?;
    loss_png.commit()?;
    let done = args.steps - start_step;
    let images_per_second = (done * batch) as f64 / started.elapsed().as_secs_f64().max(1e-9);
    Ok(TrainOutcome { trainer, history, images_per_second, changes: overridden })
}

pub(crate) fn train_report(args: &TrainArgs, outcome: &TrainOutcome) -> String {
    let first = outcome.history.first().map_or(f32::NAN, |h| h.1.total());
    let last = outcome.history.last().map_or(f32::NAN, |h| h.1.total());
    let bn = match args.precise_bn_batches {
        _ if outcome.trainer.batch_norm_frozen() => {
            "BatchNorm frozen (TRAIN_BN = False): statistics as they started".to_owned()
        }
        0 => "BatchNorm moving averages as trained".to_owned(),
        n => format!("BatchNorm statistics recomputed over {n} batches"),
    };
    let changes = match outcome.changes.as_slice() {
        [] => String::new(),
        c => format!("\nresumed with changes (--override): {}", c.join("; ")),
    };
    format!(
        "trained {} on {} for {} steps of {} ({:.1} images/s): loss {first:.4} → {last:.4}\n\
         wrote {}/final.safetensors ({bn}), checkpoint.safetensors, loss.csv, loss.png{changes}",
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
        flags: RunFlags {
            arch: Some("seed001".parse().map_err(rpn::Error::from)?),
            seed: Some(seed),
            ..RunFlags::default()
        },
        init: None,
        steps,
        output: output.to_path_buf(),
        checkpoint_every: 0,
        resume: false,
        override_checkpoint: false,
        precise_bn_batches: PRECISE_BN_BATCHES,
    };
    let started = Instant::now();
    crate::note(format_args!(
        "rpn demo: training seed 001 (seed's recipe: SGD lr 5e-4, momentum 0.9, batch 20) on \
         synthetic shapes for {steps} steps, then evaluating on {images} held-out images"
    ));
    // `train` checks the directory accepts files before the first step.
    let outcome = train(&args)?;
    let proposer = outcome.trainer.proposer()?;
    let held_out = ShapesSource::held_out(seed);
    let report = evaluate(&proposer, &held_out, images, 20)?;

    // Every picture and the report are staged, then committed together (`train` wrote
    // loss.png with the weights).
    let mut staged = Vec::new();
    let mut pictures = Vec::new();
    for i in 0..4 {
        let sample = held_out.get(i)?;
        let found = proposer.propose_pixels(&sample.pixels, 1, sample.size)?;
        let proposals = found.first().map(|f| f.proposals.as_slice()).unwrap_or_default();
        let name = format!("proposals_{i}.png");
        let picture = AtomicFile::create(&output.join(&name))?;
        draw::proposals_on_image(&sample, proposals, 5, &picture)?;
        staged.push(picture);
        pictures.push(name);
    }
    let mut recall = AtomicFile::create(&output.join("recall.json"))?;
    recall.write_all(crate::json_pretty(&report)?.as_bytes())?;
    staged.push(recall);
    for file in staged {
        file.commit()?;
    }
    Ok(format!(
        "{}\n\nheld-out recall (IoU 0.5, top 100): {:.3}   (IoU 0.7, top 100): {:.3}   AR@100: {:.3}\n\
         {:.0} s; wrote {}: final.safetensors, loss.csv, loss.png, recall.json, {}",
        report,
        report.recall_iou0_5_top100,
        report.recall_iou0_7_top100,
        report.ar_top100,
        started.elapsed().as_secs_f64(),
        output.display(),
        pictures.join(", ")
    ))
}
