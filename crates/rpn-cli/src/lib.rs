//! The `rpn` command line, as a library so that tests drive exactly what the binary runs.
//!
//! ```text
//! rpn port-keras IN.h5 --arch seed001 -o OUT.safetensors [--exclude 'mrcnn_*']
//! rpn forward --arch seed001 --weights W.safetensors --input X.npy -o OUT.npz [--device cpu|cuda|metal]
//! rpn inspect FILE.(safetensors|h5)
//! ```

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use clap::{Parser, Subcommand, ValueEnum};
use rpn_keras::{port, read_keras_file, write_safetensors, PortError, PortOptions};
use rpn_model::{Arch, Model};

/// Errors of the command line; each prints as one line (a port mismatch lists its problems below).
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// A Keras port failed (nothing was written).
    #[error(transparent)]
    Port(#[from] PortError),
    /// candle failed (device, shapes, file formats).
    #[error("{context}: {source}")]
    Candle {
        /// What was being done.
        context: String,
        /// candle's error.
        source: candle_core::Error,
    },
    /// Bad arguments or input files.
    #[error("{0}")]
    Usage(String),
}

fn candle<T>(context: impl Into<String>, r: candle_core::Result<T>) -> Result<T, CliError> {
    r.map_err(|source| CliError::Candle { context: context.into(), source })
}

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
    /// Converts a Keras weights file (.h5 or .weights.h5) to safetensors for --arch.
    PortKeras {
        /// The Keras file.
        input: PathBuf,
        /// seed000, seed001 or seed002.
        #[arg(long, value_parser = Arch::parse)]
        arch: Arch,
        /// Output safetensors file (written atomically; untouched on error).
        #[arg(short, long)]
        output: PathBuf,
        /// Layer names to skip (`*` wildcards), like Matterport's `load_weights(exclude=…)`.
        #[arg(long)]
        exclude: Vec<String>,
    },
    /// Runs --arch on an NHWC float32 .npy input and writes the Keras-layout outputs as .npz.
    Forward {
        /// seed000, seed001 or seed002.
        #[arg(long, value_parser = Arch::parse)]
        arch: Arch,
        /// Weights from `rpn port-keras`.
        #[arg(long)]
        weights: PathBuf,
        /// NHWC float32 array: images (seed000/001) or 512-channel features (seed002).
        #[arg(long)]
        input: PathBuf,
        /// Output .npz: rpn_class_logits, rpn_class, rpn_bbox (seed000/001) or classification, location (seed002).
        #[arg(short, long)]
        output: PathBuf,
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
        Command::PortKeras { input, arch, output, exclude } => {
            port_keras(&input, arch, &output, exclude)
        }
        Command::Forward { arch, weights, input, output, device } => {
            forward(arch, &weights, &input, &output, device)
        }
        Command::Inspect { file } => inspect(&file),
    }
}

fn port_keras(
    input: &Path,
    arch: Arch,
    output: &Path,
    exclude: Vec<String>,
) -> Result<String, CliError> {
    let shapes = candle("listing the model's tensors", arch.tensor_shapes())?;
    let weights = port(input, &arch.keras_layout(), &shapes, &PortOptions { exclude })?;
    write_safetensors(&weights, output)?;
    let values: usize = weights.tensors.values().map(|(_, d)| d.len()).sum();
    let mut report = format!(
        "ported {} tensors ({values} values) of {} to {}",
        weights.tensors.len(),
        arch.name(),
        output.display()
    );
    if !weights.excluded.is_empty() {
        report.push_str(&format!("; excluded layers: {}", weights.excluded.join(", ")));
    }
    Ok(report)
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
    arch: Arch,
    weights: &Path,
    input: &Path,
    output: &Path,
    device_arg: DeviceArg,
) -> Result<String, CliError> {
    let device = device(device_arg)?;
    let tensors: HashMap<String, Tensor> = candle(
        format!("reading weights {}", weights.display()),
        candle_core::safetensors::load(weights, &device),
    )?;
    let expected = candle("listing the model's tensors", arch.tensor_shapes())?;
    for (name, shape) in &expected {
        match tensors.get(name) {
            None => {
                return Err(CliError::Usage(format!(
                    "{} has no tensor `{name}` {shape:?} for {}",
                    weights.display(),
                    arch.name()
                )))
            }
            Some(t) if t.dims() != shape.as_slice() => {
                return Err(CliError::Usage(format!(
                    "{}: tensor `{name}` has shape {:?}, {} needs {shape:?}",
                    weights.display(),
                    t.dims(),
                    arch.name()
                )))
            }
            Some(_) => {}
        }
    }
    let model = candle(
        "building the model",
        arch.build(VarBuilder::from_tensors(tensors, DType::F32, &device)),
    )?;
    let x = candle(format!("reading {}", input.display()), Tensor::read_npy(input))?;
    let x = candle(
        "converting the input to f32",
        x.to_dtype(DType::F32).and_then(|x| x.to_device(&device)),
    )?;
    let outputs: Vec<(&str, Tensor)> = match &model {
        Model::SeedRpn(m) => {
            let o = candle(format!("running {}", arch.name()), m.forward_nhwc(&x))?;
            vec![("rpn_class_logits", o.logits), ("rpn_class", o.probs), ("rpn_bbox", o.deltas)]
        }
        Model::Seed002(m) => {
            let o = candle(format!("running {}", arch.name()), m.forward_nhwc(&x))?;
            vec![("classification", o.classification), ("location", o.location)]
        }
    };
    let on_cpu: Vec<(&str, Tensor)> = outputs
        .into_iter()
        .map(|(n, t)| {
            candle("copying outputs to the CPU", t.to_device(&Device::Cpu)).map(|t| (n, t))
        })
        .collect::<Result<_, _>>()?;
    let refs: Vec<(&str, &Tensor)> = on_cpu.iter().map(|(n, t)| (*n, t)).collect();
    candle(format!("writing {}", output.display()), Tensor::write_npz(&refs, output))?;
    let shapes: Vec<String> = on_cpu.iter().map(|(n, t)| format!("{n} {:?}", t.dims())).collect();
    Ok(format!("wrote {}: {}", output.display(), shapes.join(", ")))
}

fn inspect(file: &Path) -> Result<String, CliError> {
    let mut lines = Vec::new();
    let mut total = 0usize;
    let is_h5 = file.extension().is_some_and(|e| e == "h5");
    if is_h5 {
        let (kind, layers) = read_keras_file(file)?;
        lines.push(format!("{} ({kind:?})", file.display()));
        for layer in layers {
            for w in layer.weights {
                total += w.data.len();
                lines.push(format!("{}/{}  f32  {:?}", layer.name, w.name, w.shape));
            }
        }
    } else {
        let bytes = std::fs::read(file)
            .map_err(|e| CliError::Usage(format!("cannot read {}: {e}", file.display())))?;
        let st = safetensors::SafeTensors::deserialize(&bytes).map_err(|e| {
            CliError::Usage(format!("{} is not a safetensors file: {e}", file.display()))
        })?;
        lines.push(format!("{} (safetensors)", file.display()));
        let mut names: Vec<_> = st.names().into_iter().map(String::from).collect();
        names.sort();
        for name in names {
            let view = st.tensor(&name).map_err(|e| CliError::Usage(e.to_string()))?;
            total += view.shape().iter().product::<usize>();
            lines.push(format!("{name}  {:?}  {:?}", view.dtype(), view.shape()));
        }
    }
    lines.push(format!("{} tensors, {total} values", lines.len() - 1));
    Ok(lines.join("\n"))
}
