//! Safetensors files written atomically, with string metadata.
//!
//! A crash (or Ctrl-C) while writing never leaves a truncated file under the final name: the bytes
//! go to `NAME.tmp` in the same directory, are flushed to disk, and the temporary file is renamed
//! over `NAME` (atomic on POSIX file systems).

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use rpn_model::Model;

use crate::{Architecture, Error};

fn checkpoint_err(path: &Path, message: String) -> Error {
    Error::Checkpoint { path: path.to_path_buf(), message }
}

/// Writes `tensors` (sorted by name) and `metadata` to `path` atomically; tensors move to the CPU.
pub fn write_atomic(
    path: &Path,
    tensors: &BTreeMap<String, Tensor>,
    metadata: HashMap<String, String>,
) -> Result<(), Error> {
    let on_cpu: Vec<(&String, Tensor)> = tensors
        .iter()
        .map(|(n, t)| Ok((n, t.to_device(&Device::Cpu)?.contiguous()?)))
        .collect::<Result<_, candle_core::Error>>()?;
    let bytes = safetensors::serialize(on_cpu.iter().map(|(n, t)| (n.as_str(), t)), Some(metadata))
        .map_err(|e| checkpoint_err(path, format!("cannot serialise: {e}")))?;
    let tmp = temp_path(path);
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(&bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, "cannot write", e)
    })
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Tensors by name and string metadata of a safetensors file.
pub type SafetensorsContents = (HashMap<String, Tensor>, HashMap<String, String>);

/// Reads every tensor and the metadata of a safetensors file.
pub fn read(path: &Path, device: &Device) -> Result<SafetensorsContents, Error> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, "cannot read", e))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| checkpoint_err(path, format!("not a safetensors file: {e}")))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let tensors = candle_core::safetensors::load_buffer(&bytes, device)
        .map_err(|e| checkpoint_err(path, format!("cannot load tensors: {e}")))?;
    Ok((tensors, metadata))
}

/// Reads `arch`'s network from the safetensors file at `path` on `device`, with the file's
/// metadata. The network is built once, straight from the file's tensors: every tensor it needs
/// must be there with its shape ([`Error::Weights`] names the tensor and both shapes); extra
/// tensors, e.g. a checkpoint's optimizer state, are ignored.
pub fn load_model(
    path: &Path,
    arch: &Architecture,
    device: &Device,
) -> Result<(Model, HashMap<String, String>), Error> {
    let (tensors, metadata) = read(path, device)?;
    let model = arch.network.build_from(tensors, device).map_err(|source| Error::Weights {
        path: path.to_path_buf(),
        arch: arch.name,
        source: Box::new(source),
    })?;
    Ok((model, metadata))
}
