//! The Python peers ("oracles"): installed from PyPI into `target/oracles-venv`, used only to
//! regenerate fixtures and to time the peers. CI never needs them.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::run;

/// Pinned peer versions: fixtures record the versions that made them, and regenerating with the
/// same pins reproduces them bit for bit.
const PACKAGES: &[&str] = &[
    "numpy==2.4.6",
    "torch==2.15.0",
    "torchvision==0.29.2",
    "tensorflow-cpu==2.21.0",
    "tf-keras==2.21.0",
    "scipy==1.17.1",
    "scikit-image==0.26.0",
    "h5py==3.14.0",
    "safetensors",
    // The strongest CPU peers of the network benches, with the exporters that feed them.
    "onnx==1.23.2",
    "onnxruntime==1.32.0",
    "openvino==2026.4.1",
    "tf2onnx==1.17.0",
];

/// Matterport's `mrcnn/` package; `--no-deps` because its metadata pins an ancient TensorFlow.
const MATTERPORT: &str = "mrcnn-colab==2.1";

pub(crate) fn venv_dir(root: &Path) -> PathBuf {
    root.join("target").join("oracles-venv")
}

/// The virtualenv's interpreter, or an error saying how to create it.
pub(crate) fn python(root: &Path) -> Result<PathBuf, String> {
    let py = venv_dir(root).join("bin").join("python");
    if py.is_file() {
        Ok(py)
    } else {
        Err(format!("{} not found: run `cargo xtask oracles` first", py.display()))
    }
}

/// A command running the venv's python with the peers' thread counts pinned to 2.
pub(crate) fn python_command(root: &Path, script: &Path) -> Result<Command, String> {
    let mut cmd = Command::new(python(root)?);
    cmd.current_dir(root).arg(script);
    for var in [
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
        "OPENBLAS_NUM_THREADS",
        "TF_NUM_INTRAOP_THREADS",
        "TF_NUM_INTEROP_THREADS",
    ] {
        cmd.env(var, "2");
    }
    cmd.env("TF_CPP_MIN_LOG_LEVEL", "2").env("PYTHONUNBUFFERED", "1");
    Ok(cmd)
}

pub(crate) fn install_oracles(root: &Path) -> Result<(), String> {
    let venv = venv_dir(root);
    if !venv.join("bin").join("python").is_file() {
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    }
    let pip = venv.join("bin").join("pip");
    run(Command::new(&pip).args(["install", "--quiet", "--upgrade", "pip"]))?;
    run(Command::new(&pip).args(["install", "--quiet"]).args(PACKAGES))?;
    run(Command::new(&pip).args(["install", "--quiet", "--no-deps", MATTERPORT]))?;
    eprintln!("oracles installed in {}", venv.display());
    Ok(())
}

/// Runs every `tests/fixtures/gen_*.py`.
pub(crate) fn regenerate_fixtures(root: &Path) -> Result<(), String> {
    let dir = root.join("tests").join("fixtures");
    let mut scripts: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("gen_"))
                && p.extension().is_some_and(|e| e == "py")
        })
        .collect();
    scripts.sort();
    for script in scripts {
        run(&mut python_command(root, &script)?)?;
    }
    Ok(())
}
