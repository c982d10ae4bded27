//! The `rpn` command line, as a library so that tests drive exactly what the binary runs.
//!
//! ```text
//! rpn demo [-o runs/demo] [--steps N]
//! rpn train --arch seed001 --dataset shapes|DIR --steps N --batch-size B --seed S -o RUN_DIR [--resume]
//! rpn eval --arch seed001 --weights W --dataset shapes|DIR [--images N --seed S] [--json]
//! rpn propose --arch seed001 --weights W --image FILE... -o OUT.json [--draw OUT.png] [--top N]
//! rpn port-keras IN.h5 --arch seed001 -o OUT.safetensors [--exclude 'mrcnn_*']
//! rpn port-torch MODEL.pth --arch torchvision-resnet50-fpn -o OUT.safetensors
//! rpn forward --arch seed001 --weights W.safetensors --input X.npy -o OUT.npz [--device cpu|cuda|metal]
//! rpn inspect FILE.(safetensors|h5|pth)
//! ```
//!
//! Exit status ([`main_with`]): 0 on success (and when the reader of standard output has gone,
//! as in `rpn inspect W | head -1`), 2 for usage errors (a bad flag or value, clap's
//! convention), 1 for everything else. Every file the commands write is written atomically
//! ([`rpn_io::AtomicFile`]): on any failure the old file is untouched, and commands that write
//! several files write none until all of them are computed.

mod draw;
mod flags;
mod propose;
mod train;

use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use clap::{Parser, Subcommand, ValueEnum};
use rpn::{Architecture, ProposerOptions};
use rpn_keras::{port, read_keras_file, write_safetensors, PortError, PortOptions};
use rpn_model::Model;

/// Errors of the command line. Each names what failed; the cause, if any, is its
/// [`std::error::Error::source`] chain, which [`error_chain`] prints one line per link.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// A Keras port failed (nothing was written).
    #[error(transparent)]
    Port(#[from] PortError),
    /// A PyTorch port failed (nothing was written).
    #[error(transparent)]
    Torch(#[from] rpn_torch::TorchPortError),
    /// candle failed (device, shapes, file formats).
    #[error("{context}")]
    Candle {
        /// What was being done.
        context: String,
        /// candle's error.
        source: candle_core::Error,
    },
    /// Loading, proposals, training, evaluation, data sets or checkpoints failed.
    #[error(transparent)]
    Rpn(#[from] rpn::Error),
    /// An image could not be decoded or written.
    #[error("{}: cannot decode the image", path.display())]
    Image {
        /// The file.
        path: PathBuf,
        /// The decoder's error.
        source: Box<image::ImageError>,
    },
    /// An output file could not be written (the old one is untouched).
    #[error(transparent)]
    Output(#[from] rpn_io::OutputError),
    /// An input file is not a regular file or cannot be read.
    #[error(transparent)]
    File(#[from] rpn_io::InputError),
    /// An `.npy` input could not be read.
    #[error(transparent)]
    Npy(#[from] rpn_io::NpyError),
    /// A picture could not be drawn (nothing was written).
    #[error("drawing {}: {message}", path.display())]
    Draw {
        /// The picture's path.
        path: PathBuf,
        /// The drawing library's error.
        message: String,
    },
    /// An input array does not fit the command (rank, zero or wrong dimensions, non-finite
    /// values).
    #[error("{}: {message}", path.display())]
    Input {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A bug: something that cannot fail did (please report it).
    #[error("internal error: {0}")]
    Internal(String),
    /// Bad arguments: a flag, a value or a combination the command refuses (exit status 2).
    #[error("{0}")]
    Usage(String),
}

impl CliError {
    /// The process exit status for this error: 2 for usage errors, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Usage(_) => 2,
            _ => 1,
        }
    }
}

/// Runs the command line `args` and writes its report to `stdout`, errors to `stderr`;
/// returns the exit status (see the module docs). What the `rpn` binary's `main` does, as a
/// function so that tests can drive it with failing writers.
pub fn main_with<I, T>(args: I, stdout: &mut dyn Write, stderr: &mut dyn Write) -> u8
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    match run(args) {
        Ok(report) => match writeln!(stdout, "{report}").and_then(|()| stdout.flush()) {
            Ok(()) => 0,
            // The reader went away (`rpn inspect W | head -1`): like other Unix tools, stop
            // quietly. The work itself succeeded and its files are written.
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
            Err(e) => {
                // Best effort: if stderr is gone too there is nobody left to tell.
                let _ = writeln!(stderr, "error: cannot write the report to standard output: {e}");
                1
            }
        },
        Err(e) => {
            let _ = writeln!(stderr, "error: {}", error_chain(&e));
            e.exit_code()
        }
    }
}

/// A line of progress on standard error that never panics (an `eprintln!` does when stderr is
/// a full disk).
pub(crate) fn note(text: impl std::fmt::Display) {
    let _ = writeln!(std::io::stderr(), "{text}");
}

/// `error` and each of its causes, one per line (`caused by: …`), as the binary prints them.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        // Lower layers sometimes repeat their cause in their own message; say it once.
        if !text.contains(&line) {
            text.push_str(&format!("\n  caused by: {line}"));
        }
        source = cause.source();
    }
    text
}

fn candle<T>(context: impl Into<String>, r: candle_core::Result<T>) -> Result<T, CliError> {
    r.map_err(|source| CliError::Candle { context: context.into(), source })
}

/// Default `rpn demo` length: 160 steps of 20 images, about 2.5 minutes on a 2-core CPU (AMD
/// EPYC, AVX2) with the CPU training kernels, after which held-out recall@0.5 of the top 100
/// proposals is about 0.82 (recall@0.7 about 0.38).
pub const DEMO_STEPS: usize = 160;

/// Region proposal networks from the seed notebooks, in Rust.
#[derive(Debug, Parser)]
#[command(name = "rpn", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum DeviceArg {
    Cpu,
    Cuda,
    Metal,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Trains seed 001 on synthetic shapes, evaluates on held-out images, draws pictures.
    Demo {
        /// Output directory: final.safetensors, loss.csv, loss.png, recall.json, proposals_*.png.
        #[arg(short, long, default_value = "runs/demo")]
        output: PathBuf,
        /// Training steps of 20 images (the default takes about 2.5 minutes on 2 cores).
        #[arg(long, allow_negative_numbers = true, default_value_t = DEMO_STEPS, value_parser = flags::count)]
        steps: usize,
        /// Held-out images to evaluate.
        #[arg(long, allow_negative_numbers = true, default_value_t = 200, value_parser = flags::count)]
        images: usize,
        /// Seed of the weights, the data and the anchor sampling.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Trains an RPN; writes RUN_DIR/{loss.csv, loss.png, checkpoint.safetensors, final.safetensors}.
    ///
    /// seed000/seed001 train with seed 001's recipe (SGD lr 5e-4, momentum 0.9, batches of 20,
    /// BatchNorm in training mode); matterport-resnet50/101 with Matterport's (SGD lr 1e-3,
    /// momentum 0.9, L2 1e-4 on all but BatchNorm γ/β, clipnorm 5, batches of 2, BatchNorm
    /// frozen), from --init weights or from scratch.
    ///
    /// With --resume, flags left out take the checkpoint's values; a flag given with another
    /// value than the checkpoint's is refused unless --override says to continue with it.
    Train {
        /// seed000, seed001, matterport-resnet50 or matterport-resnet101 [default: seed001].
        #[arg(long)]
        arch: Option<Architecture>,
        /// `shapes` (generated from --seed) or a directory with annotations.json (COCO boxes)
        /// [default: shapes].
        #[arg(long, value_parser = train::parse_dataset)]
        dataset: Option<train::DatasetArg>,
        /// Total steps (a resumed run continues up to this step).
        #[arg(long, allow_negative_numbers = true, value_parser = flags::count)]
        steps: usize,
        /// Images per step [default: 20; Matterport 2].
        #[arg(long, allow_negative_numbers = true, value_parser = flags::count)]
        batch_size: Option<usize>,
        /// Seed of the weights, the image order and the anchor sampling [default: 0].
        #[arg(long)]
        seed: Option<u64>,
        /// Learning rate, finite and > 0 [default: 0.0005, seed 001's; Matterport 0.001].
        #[arg(long, allow_negative_numbers = true, value_parser = flags::positive)]
        lr: Option<f64>,
        /// SGD momentum in [0, 1) [default: 0.9, seed 001's].
        #[arg(long, allow_negative_numbers = true, value_parser = flags::momentum)]
        momentum: Option<f64>,
        /// L2 weight decay ≥ 0 [default: 0; Matterport 0.0001, as its L2 loss].
        #[arg(long, allow_negative_numbers = true, value_parser = flags::non_negative)]
        weight_decay: Option<f64>,
        /// Clip the gradients' L2 norm to this (> 0): the global norm for the seeds, each
        /// tensor's for Matterport (Keras' clipnorm) [default: none; Matterport 5].
        #[arg(long, allow_negative_numbers = true, value_parser = flags::positive)]
        clip_grad_norm: Option<f64>,
        /// constant, step:EVERY:GAMMA (EVERY ≥ 1, GAMMA > 0) or cosine[:FLOOR] (FLOOR a share
        /// of --lr in [0, 1]; cosine decays over --steps) [default: constant].
        #[arg(long, value_parser = train::parse_schedule)]
        schedule: Option<train::ScheduleArg>,
        /// Side of the (square) training images, a multiple of the network's stride;
        /// directory images are resized to it (Matterport: aspect kept, padded, as its
        /// `resize_image` square mode) [default: 64; Matterport 1024].
        #[arg(long, allow_negative_numbers = true, value_parser = flags::side)]
        image_size: Option<u32>,
        /// Write RUN_DIR/checkpoint.safetensors every this many steps (and at the end; 0: only
        /// at the end).
        #[arg(long, default_value_t = 50)]
        checkpoint_every: usize,
        /// Continue from RUN_DIR/checkpoint.safetensors, exactly.
        #[arg(long)]
        resume: bool,
        /// With --resume: continue with the flags given even where they differ from the
        /// checkpoint's configuration (the changes are listed on stderr).
        #[arg(long = "override", requires = "resume")]
        override_checkpoint: bool,
        /// Before writing final.safetensors, recompute the BatchNorm statistics over this many
        /// training batches (detectron2's PreciseBN; 0 keeps the training run's moving averages).
        #[arg(long, default_value_t = 10)]
        precise_bn: usize,
        /// Matterport: the layers that learn, as `model.train(layers=…)`: heads (rpn_*, fpn_*),
        /// 3+, 4+, 5+ (ResNet stage and up, and the heads) or all; the others stay bit for bit
        /// [default: all].
        #[arg(long)]
        layers: Option<rpn::Layers>,
        /// Start from these weights (`rpn port-keras`, or another run's final.safetensors)
        /// instead of the seeded random initialisation.
        #[arg(long, conflicts_with = "resume")]
        init: Option<PathBuf>,
        /// Anchors crossing the image border: `keep` (Matterport, torchvision) or `ignore`
        /// (seed 004, py-faster-rcnn) [default: keep].
        #[arg(long, value_parser = train::parse_border)]
        border: Option<rpn::Border>,
        /// Flip half of the training images left–right (Matterport's `augment`), drawn from
        /// --seed.
        #[arg(long)]
        flip: bool,
        /// Matterport: a narrower network with the same layer names, for CPU runs: stem width N
        /// (Matterport: 64), FPN channels 4N, RPN head channels 8N [default: 64].
        #[arg(long, allow_negative_numbers = true, value_parser = flags::width, conflicts_with = "resume")]
        width: Option<usize>,
        /// The run directory.
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Proposal recall (IoU 0.5/0.7, top 10/100/1000) and AR@100/1000 of trained weights.
    Eval {
        /// seed000, seed001, matterport-resnet50 or matterport-resnet101 (narrow `--width`
        /// weights load as they are).
        #[arg(long, default_value = "seed001")]
        arch: Architecture,
        /// Weights (final.safetensors, a checkpoint, or a ported Keras file).
        #[arg(long)]
        weights: PathBuf,
        /// `shapes` (held-out images of --seed, never trained on) or a COCO-style directory.
        #[arg(long, value_parser = train::parse_dataset, default_value = "shapes")]
        dataset: train::DatasetArg,
        /// Images to evaluate (a directory has at most its own count).
        #[arg(long, allow_negative_numbers = true, default_value_t = 200, value_parser = flags::count)]
        images: usize,
        /// Seed of the held-out shapes.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Side of the (square) images, a multiple of the network's stride.
        #[arg(long, allow_negative_numbers = true, default_value_t = 64, value_parser = flags::side)]
        image_size: u32,
        /// IoU threshold of the proposal layer's NMS (Matterport's RPN_NMS_THRESHOLD, 0.7). Lower
        /// values spread the top 100 over more objects (0.5: recall@0.5 0.84 → 0.95 after 300
        /// steps of seed 001) at the cost of recall at IoU 0.7.
        #[arg(long, allow_negative_numbers = true, default_value_t = 0.7, value_parser = flags::iou)]
        nms_iou: f32,
        /// Print one JSON object (keys recall_iou0.5_top100, recall_iou0.7_top100, ar_top100, …).
        #[arg(long)]
        json: bool,
        /// Where to run.
        #[arg(long, value_enum, default_value = "cpu")]
        device: DeviceArg,
    },
    /// Proposals for PNG/JPEG images in original-image pixels, with scores and levels.
    Propose {
        /// seed000, seed001, seed002, matterport-resnet50, matterport-resnet101 or
        /// torchvision-resnet50-fpn or torchvision-resnet50-fpn-v2.
        #[arg(long)]
        arch: Architecture,
        /// Weights (final.safetensors, a checkpoint, or a ported Keras file).
        #[arg(long)]
        weights: PathBuf,
        /// seed002 only: the VGG16 body (`rpn port-keras … --arch vgg16`).
        #[arg(long)]
        backbone_weights: Option<PathBuf>,
        /// PNG/JPEG images (repeat the flag or list several).
        #[arg(long, num_args = 1.., required_unless_present = "input")]
        image: Vec<PathBuf>,
        /// Matterport only: an already-molded NHWC float32 .npy (RGB − MEAN_PIXEL, sides /64).
        #[arg(long, conflicts_with = "image")]
        input: Option<PathBuf>,
        /// Output .json (seed and Matterport) or .npz (Matterport: `proposals`, `scores`).
        #[arg(short, long)]
        output: PathBuf,
        /// Also draw the top proposals (at most 10) over the image; several images get _0, _1, ….
        #[arg(long)]
        draw: Option<PathBuf>,
        /// Proposals kept per image (default 100; with `--format matterport`, all the layer's
        /// rows, zero-padded to 1000 or 2000 like `rpn_rois`).
        #[arg(long, allow_negative_numbers = true, value_parser = flags::count)]
        top: Option<usize>,
        /// Seeds 000/001: run the network on SIDE×SIDE (default: the size the weights were
        /// trained at, 64 for the seed recipe). Seed 002: the longest side (default 1024; never
        /// upscaled). Matterport: IMAGE_MAX_DIM of the `square` resize (default 1024).
        /// torchvision: `min_size` of the transform (default 800; `max_size` scales with it,
        /// 1333 at 800).
        #[arg(long, allow_negative_numbers = true, value_parser = flags::side)]
        image_size: Option<u32>,
        /// Matterport: `pixels` (x1,y1,x2,y2 in original-image pixels; molded pixels for
        /// --input) or `matterport` (normalised y1,x1,y2,x2 zero-padded like `rpn_rois`; --input).
        #[arg(long, value_enum)]
        format: Option<propose::Format>,
        /// Matterport's proposal layer settings (default: matterport-inference).
        #[arg(long, value_enum)]
        preset: Option<propose::Preset>,
        /// Refuse inputs whose forward pass would need more memory than this (bytes, or with a
        /// K/M/G suffix); default: $RPN_MEMORY_BUDGET, else 8G.
        #[arg(long, value_parser = parse_memory_budget)]
        memory_budget: Option<u64>,
        /// Where to run.
        #[arg(long, value_enum, default_value = "cpu")]
        device: DeviceArg,
    },
    /// Converts a Keras weights file (.h5 or .weights.h5) to safetensors for --arch.
    PortKeras {
        /// The Keras file.
        input: PathBuf,
        /// seed000, seed001, seed002, matterport-resnet50, matterport-resnet101 or vgg16.
        #[arg(long)]
        arch: Architecture,
        /// Output safetensors file (written atomically; untouched on error).
        #[arg(short, long)]
        output: PathBuf,
        /// Layer names to skip (`*` wildcards), like Matterport's `load_weights(exclude=…)`.
        #[arg(long)]
        exclude: Vec<String>,
    },
    /// Converts a PyTorch state dict (.pth: a torchvision detector, or its `model.rpn` /
    /// `model.backbone`) to safetensors for --arch; `roi_heads.*` is reported as skipped.
    PortTorch {
        /// The `.pth` file (`torch.save(model.state_dict())`), or several that together hold
        /// the network (`model.backbone` and `model.rpn` saved separately).
        #[arg(required = true, num_args = 1..)]
        input: Vec<PathBuf>,
        /// torchvision-resnet50-fpn or torchvision-resnet50-fpn-v2.
        #[arg(long)]
        arch: Architecture,
        /// Output safetensors file (written atomically; untouched on error).
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Runs --arch on an NHWC float32 .npy input and writes the Keras-layout outputs as .npz.
    Forward {
        /// seed000, seed001, seed002, matterport-resnet50, matterport-resnet101 or
        /// torchvision-resnet50-fpn or torchvision-resnet50-fpn-v2.
        #[arg(long)]
        arch: Architecture,
        /// Weights from `rpn port-keras`.
        #[arg(long)]
        weights: PathBuf,
        /// NHWC float32 array: images (seeds 000/001), 512-channel features (seed002), molded
        /// images (Matterport: RGB − MEAN_PIXEL, sides multiples of 64) or torchvision's
        /// transformed batch (`images.tensors` permuted to NHWC: normalised, padded to 32).
        #[arg(long)]
        input: PathBuf,
        /// Output .npz: rpn_class_logits, rpn_class, rpn_bbox (seeds 000/001; Matterport also
        /// P2…P6, NHWC), classification, location (seed002), or objectness [B, N], deltas
        /// [B, N, 4] (torchvision's `concat_box_prediction_layers` order), `RPNHead`'s own
        /// per-level objectness_p2…p6 [B, A, H, W] and bbox_pred_p2…p6 [B, 4A, H, W], and P2…P6.
        #[arg(short, long)]
        output: PathBuf,
        /// Refuse inputs whose forward pass would need more memory than this (bytes, or with a
        /// K/M/G suffix); default: $RPN_MEMORY_BUDGET, else 8G.
        #[arg(long, value_parser = parse_memory_budget)]
        memory_budget: Option<u64>,
        /// Where to run.
        #[arg(long, value_enum, default_value = "cpu")]
        device: DeviceArg,
    },
    /// Lists the tensors of a safetensors or Keras .h5 file and the total number of values.
    Inspect {
        /// The file.
        file: PathBuf,
    },
}

/// Parses `args` (including the program name) and runs the command; returns what to print.
pub fn run<I, T>(args: I) -> Result<String, CliError>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        // `--help` and `--version` are answers, not errors.
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) =>
        {
            return Ok(e.to_string().trim_end().to_owned())
        }
        Err(e) => {
            return Err(CliError::Usage(
                e.to_string().trim_end().trim_start_matches("error: ").to_owned(),
            ))
        }
    };
    match cli.command {
        Command::Demo { output, steps, images, seed } => train::demo(&output, steps, images, seed),
        Command::Train {
            arch,
            dataset,
            steps,
            batch_size,
            seed,
            lr,
            momentum,
            weight_decay,
            clip_grad_norm,
            schedule,
            image_size,
            checkpoint_every,
            resume,
            override_checkpoint,
            precise_bn,
            layers,
            init,
            border,
            flip,
            width,
            output,
        } => {
            let args = train::TrainArgs {
                flags: train::RunFlags {
                    arch,
                    dataset,
                    batch_size,
                    seed,
                    lr,
                    momentum,
                    weight_decay,
                    clip_grad_norm,
                    schedule,
                    image_size,
                    layers,
                    border,
                    flip: flip.then_some(true),
                    width,
                },
                init,
                steps,
                output,
                checkpoint_every,
                resume,
                override_checkpoint,
                precise_bn_batches: precise_bn,
            };
            let outcome = train::train(&args)?;
            Ok(train::train_report(&args, &outcome))
        }
        Command::Eval {
            arch,
            weights,
            dataset,
            images,
            seed,
            image_size,
            nms_iou,
            json,
            device: d,
        } => {
            let Some(spec) = arch.rpn() else {
                return Err(rpn::Error::Unsupported {
                    arch: arch.name,
                    what: "it has no RPN head to evaluate".into(),
                }
                .into());
            };
            train::check_side(&arch, "--image-size", image_size)?;
            let data = train::dataset(&dataset, train::Split::HeldOut, seed, image_size, &arch)?;
            let options = ProposerOptions {
                device: device(d)?,
                input_side: Some(data.image_size().height),
                proposals: Some(rpn_proposals::ProposalConfig { nms_iou, ..spec.proposals }),
                ..ProposerOptions::default()
            };
            let proposer = rpn::Proposer::load(&arch, &weights, options)?;
            let report = train::evaluate(&proposer, data.as_ref(), images, 20)?;
            if json {
                json_text(&report)
            } else {
                Ok(format!("{} on {}\n{report}", arch.name, data.describe()))
            }
        }
        Command::Propose {
            arch,
            weights,
            backbone_weights,
            image,
            input,
            output,
            draw,
            top,
            image_size,
            format,
            preset,
            memory_budget,
            device: d,
        } => {
            let args = propose::ProposeArgs {
                memory_budget,
                arch,
                weights,
                backbone_weights,
                images: image,
                input,
                output,
                draw,
                top,
                image_size,
                format,
                preset,
            };
            propose::propose(&args, device(d)?)
        }
        Command::PortKeras { input, arch, output, exclude } => {
            port_keras(&input, &arch, &output, exclude)
        }
        Command::PortTorch { input, arch, output } => port_torch(&input, &arch, &output),
        Command::Forward { arch, weights, input, output, memory_budget, device } => {
            forward(&arch, &weights, &input, &output, memory_budget, device)
        }
        Command::Inspect { file } => inspect(&file),
    }
}

/// `value` as compact JSON.
pub(crate) fn json_text(value: &impl serde::Serialize) -> Result<String, CliError> {
    serde_json::to_string(value).map_err(|e| CliError::Internal(format!("JSON: {e}")))
}

/// `value` as indented JSON.
pub(crate) fn json_pretty(value: &impl serde::Serialize) -> Result<String, CliError> {
    serde_json::to_string_pretty(value).map_err(|e| CliError::Internal(format!("JSON: {e}")))
}

fn parse_memory_budget(text: &str) -> Result<u64, String> {
    rpn::parse_bytes(text)
        .ok_or_else(|| format!("`{text}` is not a positive number of bytes (e.g. 4G, 512M)"))
}

fn port_keras(
    input: &Path,
    arch: &Architecture,
    output: &Path,
    exclude: Vec<String>,
) -> Result<String, CliError> {
    if matches!(arch.network, rpn_model::Network::Torchvision(_)) {
        return Err(CliError::Usage(format!(
            "{} has PyTorch weights: use `rpn port-torch MODEL.pth --arch {}`",
            arch.name, arch.name
        )));
    }
    // Refuse a bad destination (a device, a missing directory) before reading the input.
    rpn_io::check_destination(output)?;
    let shapes = candle("listing the model's tensors", arch.network.tensor_shapes())?;
    let weights = port(input, &arch.network.keras_layout(), &shapes, &PortOptions { exclude })?;
    write_safetensors(&weights, output)?;
    let values: usize = weights.tensors.values().map(|(_, d)| d.len()).sum();
    let unused = format!("layers {} does not use", arch.name);
    let mut report =
        port_report(arch, output, weights.tensors.len(), values, &weights.skipped, &unused);
    if !weights.excluded.is_empty() {
        report.push_str(&format!("; excluded layers: {}", weights.excluded.join(", ")));
    }
    Ok(report)
}

fn port_torch(inputs: &[PathBuf], arch: &Architecture, output: &Path) -> Result<String, CliError> {
    if !matches!(arch.network, rpn_model::Network::Torchvision(_)) {
        return Err(CliError::Usage(format!(
            "--arch {}: `rpn port-torch` ports torchvision networks (torchvision-resnet50-fpn, \
             torchvision-resnet50-fpn-v2); \
             Keras files go through `rpn port-keras`",
            arch.name
        )));
    }
    rpn_io::check_destination(output)?;
    let paths: Vec<&Path> = inputs.iter().map(PathBuf::as_path).collect();
    let weights = rpn_torch::port_files(&paths, &arch.network)?;
    rpn_torch::write_safetensors(&weights, output)?;
    let values: usize = weights.tensors.values().map(|t| t.elem_count()).sum();
    let count = weights.tensors.len();
    Ok(port_report(arch, output, count, values, &weights.skipped, "tensors outside the RPN"))
}

/// `ported N tensors (V values) of ARCH to OUT[; skipped K WHAT: a, b, … and M more]`.
fn port_report(
    arch: &Architecture,
    output: &Path,
    tensors: usize,
    values: usize,
    skipped: &[String],
    skipped_what: &str,
) -> String {
    let mut report = format!(
        "ported {tensors} tensors ({values} values) of {} to {}",
        arch.name,
        output.display()
    );
    if !skipped.is_empty() {
        let shown: Vec<&str> = skipped.iter().take(6).map(String::as_str).collect();
        let more = skipped.len().saturating_sub(shown.len());
        let more = if more > 0 { format!(" and {more} more") } else { String::new() };
        report.push_str(&format!(
            "; skipped {} {skipped_what}: {}{more}",
            skipped.len(),
            shown.join(", ")
        ));
    }
    report
}

fn device(arg: DeviceArg) -> Result<Device, CliError> {
    match arg {
        DeviceArg::Cpu => Ok(Device::Cpu),
        DeviceArg::Cuda => {
            candle("opening CUDA device 0 (build with --features cuda)", Device::new_cuda(0))
        }
        DeviceArg::Metal => {
            candle("opening Metal device 0 (build with --features metal)", Device::new_metal(0))
        }
    }
}

fn forward(
    arch: &Architecture,
    weights: &Path,
    input: &Path,
    output: &Path,
    memory_budget: Option<u64>,
    device_arg: DeviceArg,
) -> Result<String, CliError> {
    let device = device(device_arg)?;
    let out = rpn_io::AtomicFile::create(output)?;
    let x = read_nhwc(input, expected_channels(arch))?;
    let budget = match memory_budget {
        Some(b) => b,
        None => rpn::memory_budget_from_env()?,
    };
    let needed = forward_bytes(arch, x.dims());
    if needed > budget {
        return Err(rpn::Error::OverMemoryBudget {
            what: format!("{} on {} {:?}", arch.name, input.display(), x.dims()),
            needed_bytes: needed,
            budget_bytes: budget,
        }
        .into());
    }
    let (model, _) = rpn::load_model(weights, arch, &device)?;
    let x = candle("moving the input to the device", x.to_device(&device))?;
    let outputs: Vec<(&str, Tensor)> = match &model {
        Model::SeedRpn(m) => {
            let o = candle(format!("running {}", arch.name), m.forward_nhwc(&x))?;
            vec![("rpn_class_logits", o.logits), ("rpn_class", o.probs), ("rpn_bbox", o.deltas)]
        }
        Model::Seed002(m) => {
            let o = candle(format!("running {}", arch.name), m.forward_nhwc(&x))?;
            vec![("classification", o.classification), ("location", o.location)]
        }
        Model::Vgg16(m) => {
            let run = || -> candle_core::Result<Tensor> {
                m.forward_nhwc(&x)?.permute((0, 2, 3, 1))?.contiguous()
            };
            vec![("block5_conv3", candle(format!("running {}", arch.name), run())?)]
        }
        Model::Matterport(m) => {
            let o = candle(format!("running {}", arch.name), m.forward_nhwc(&x))?;
            let mut named = vec![
                ("rpn_class_logits", o.logits),
                ("rpn_class", o.probs),
                ("rpn_bbox", o.deltas),
            ];
            for (name, p) in ["P2", "P3", "P4", "P5", "P6"].into_iter().zip(o.pyramid) {
                let nhwc = candle("P2–P6 to NHWC", p.permute((0, 2, 3, 1)))?;
                named.push((name, nhwc));
            }
            named
        }
        Model::Torchvision(m) => {
            // torchvision's `images.tensors`, channels last: the model takes NCHW.
            let nchw = candle("NHWC to NCHW", rpn_model::nhwc_to_nchw(&x))?;
            let o = candle(format!("running {}", arch.name), m.forward(&nchw))?;
            let mut named = vec![("objectness", o.objectness), ("deltas", o.deltas)];
            // `RPNHead`'s per-level outputs as torchvision returns them (NCHW).
            const PER_LEVEL: [(&str, &str); 5] = [
                ("objectness_p2", "bbox_pred_p2"),
                ("objectness_p3", "bbox_pred_p3"),
                ("objectness_p4", "bbox_pred_p4"),
                ("objectness_p5", "bbox_pred_p5"),
                ("objectness_p6", "bbox_pred_p6"),
            ];
            for ((logits_name, boxes_name), (logits, boxes)) in
                PER_LEVEL.into_iter().zip(o.per_level)
            {
                named.push((logits_name, logits));
                named.push((boxes_name, boxes));
            }
            for (name, p) in ["P2", "P3", "P4", "P5", "P6"].into_iter().zip(o.pyramid) {
                let nhwc = candle("P2–P6 to NHWC", p.permute((0, 2, 3, 1)))?;
                named.push((name, nhwc));
            }
            named
        }
        _ => {
            return Err(CliError::from(rpn::Error::Unsupported {
                arch: arch.name,
                what: "`rpn forward` does not know this network's outputs yet".into(),
            }))
        }
    };
    let on_cpu: Vec<(&str, Tensor)> = outputs
        .into_iter()
        .map(|(n, t)| {
            candle("copying outputs to the CPU", t.to_device(&Device::Cpu)).map(|t| (n, t))
        })
        .collect::<Result<_, _>>()?;
    let refs: Vec<(&str, &Tensor)> = on_cpu.iter().map(|(n, t)| (*n, t)).collect();
    candle(format!("writing {}", output.display()), Tensor::write_npz(&refs, out.temp_path()))?;
    out.commit()?;
    let shapes: Vec<String> = on_cpu.iter().map(|(n, t)| format!("{n} {:?}", t.dims())).collect();
    Ok(format!("wrote {}: {}", output.display(), shapes.join(", ")))
}

/// Bytes of VGG16's forward pass per input pixel: seed 002's measured 803 B/px is VGG16's, with
/// the registry's margin.
const VGG16_BYTES_PER_PIXEL: u64 = 1_200;

/// Estimated peak bytes of `rpn forward` on an NHWC input of `dims`: the architecture's
/// per-pixel estimate for image inputs; for seed 002's head, whose input is already a feature
/// map, four copies of it (input, the 512-channel shared conv, its activation, the outputs).
fn forward_bytes(arch: &Architecture, dims: &[usize]) -> u64 {
    let elements = dims.iter().fold(1u64, |acc, &d| acc.saturating_mul(d as u64));
    let [b, h, w, _] = *dims else { return u64::MAX };
    let (Ok(height), Ok(width)) = (u32::try_from(h), u32::try_from(w)) else { return u64::MAX };
    let input = rpn_anchors::ImageSize { height, width };
    match (&arch.network, arch.rpn()) {
        (rpn_model::Network::Seed002Head { .. }, _) => elements.saturating_mul(16),
        (_, Some(rpn)) => rpn.forward_bytes(input, b),
        (_, None) => (u64::from(height) * u64::from(width))
            .saturating_mul(VGG16_BYTES_PER_PIXEL)
            .saturating_mul(b as u64),
    }
}

/// The channels an NHWC input of `arch` has (images: 3; seed 002's head: its feature depth).
fn expected_channels(arch: &Architecture) -> Option<usize> {
    match &arch.network {
        rpn_model::Network::Seed002Head { in_channels, .. } => Some(*in_channels),
        _ => Some(3),
    }
}

/// Reads an NHWC `.npy` (any numeric dtype, as f32) and checks it before it reaches a network:
/// rank 4, no zero dimension, `channels` channels, finite values.
pub(crate) fn read_nhwc(path: &Path, channels: Option<usize>) -> Result<Tensor, CliError> {
    let array = rpn_io::read_npy(path)?;
    let bad = |message: String| CliError::Input { path: path.to_path_buf(), message };
    let shape = array.shape.as_slice();
    let [_, _, _, c] = *shape else {
        return Err(bad(format!(
            "expected an NHWC array [batch, height, width, channels], got shape {shape:?}"
        )));
    };
    if shape.contains(&0) {
        return Err(bad(format!("shape {shape:?} has a zero dimension: there is nothing to run")));
    }
    if let Some(expected) = channels.filter(|&e| e != c) {
        return Err(bad(format!("shape {shape:?} has {c} channels; the network takes {expected}")));
    }
    let non_finite = array.data.iter().filter(|v| !v.is_finite()).count();
    if non_finite > 0 {
        return Err(bad(format!(
            "{non_finite} of {} values are NaN or infinite; a network cannot give meaningful \
             outputs for them",
            array.data.len()
        )));
    }
    candle(format!("reading {}", path.display()), Tensor::from_vec(array.data, shape, &Device::Cpu))
}

fn inspect(file: &Path) -> Result<String, CliError> {
    let mut lines = Vec::new();
    let mut total = 0usize;
    let is_h5 = file.extension().is_some_and(|e| e == "h5");
    let is_pth = file.extension().is_some_and(|e| e == "pth" || e == "pt");
    if is_pth {
        let entries = rpn_torch::read_state_dict(file)?;
        lines.push(format!("{} (PyTorch state dict)", file.display()));
        for e in entries {
            total += e.shape.iter().product::<usize>();
            lines.push(format!("{}  {:?}  {:?}", e.name, e.dtype, e.shape));
        }
    } else if is_h5 {
        let (kind, layers) = read_keras_file(file)?;
        lines.push(format!("{} ({kind:?})", file.display()));
        for layer in layers {
            for w in layer.weights {
                total += w.data.len();
                lines.push(format!("{}/{}  f32  {:?}", layer.name, w.name, w.shape));
            }
        }
    } else {
        let bytes = rpn_io::read_regular_file(file)?;
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| CliError::Input {
            path: file.to_path_buf(),
            message: format!("not a safetensors file: {e}"),
        })?;
        lines.push(format!("{} (safetensors)", file.display()));
        let mut names: Vec<_> = st.names().into_iter().map(String::from).collect();
        names.sort();
        for name in names {
            let view = st.tensor(&name).map_err(|e| CliError::Input {
                path: file.to_path_buf(),
                message: format!("tensor `{name}`: {e}"),
            })?;
            total += view.shape().iter().product::<usize>();
            lines.push(format!("{name}  {:?}  {:?}", view.dtype(), view.shape()));
        }
    }
    lines.push(format!("{} tensors, {total} values", lines.len() - 1));
    Ok(lines.join("\n"))
}
