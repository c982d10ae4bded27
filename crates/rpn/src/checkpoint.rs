//! Safetensors files written atomically, with string metadata.
//!
//! A crash (or Ctrl-C) while writing never leaves a truncated file under the final name: the bytes
//! go to `NAME.tmp` in the same directory, are flushed to disk, and the temporary file is renamed
//! over `NAME` (atomic on POSIX file systems).

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use rpn_model::Arch;

use crate::Error;

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
        checkpoint_err(path, format!("cannot write: {e}"))
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
    let bytes =
        std::fs::read(path).map_err(|e| checkpoint_err(path, format!("cannot read: {e}")))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| checkpoint_err(path, format!("not a safetensors file: {e}")))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let tensors = candle_core::safetensors::load_buffer(&bytes, device)
        .map_err(|e| checkpoint_err(path, format!("cannot load tensors: {e}")))?;
    Ok((tensors, metadata))
}

/// Reads the safetensors weights of `arch` from `path` on `device`, checking that every tensor
/// the model needs is there with its shape (extra tensors, e.g. a checkpoint's optimizer state,
/// are ignored). Errors name the file, the tensor and both shapes.
pub fn load_weights(
    path: &Path,
    arch: Arch,
    device: &Device,
) -> Result<HashMap<String, Tensor>, Error> {
    let tensors: HashMap<String, Tensor> = candle_core::safetensors::load(path, device)
        .map_err(|e| checkpoint_err(path, format!("cannot read safetensors: {e}")))?;
    for (name, shape) in arch.tensor_shapes()? {
        match tensors.get(&name) {
            None => {
                return Err(checkpoint_err(
                    path,
                    format!("no tensor `{name}` {shape:?}: not {} weights", arch.name()),
                ))
            }
            Some(t) if t.dims() != shape.as_slice() => {
                return Err(checkpoint_err(
                    path,
                    format!(
                        "tensor `{name}` has shape {:?}, {} needs {shape:?}",
                        t.dims(),
                        arch.name()
                    ),
                ))
            }
            Some(_) => {}
        }
    }
    Ok(tensors)
}
