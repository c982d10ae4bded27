//! Safetensors files written atomically, with string metadata.
//!
//! A crash (or Ctrl-C) while writing never leaves a truncated file under the final name
//! ([`rpn_io::write_atomic`]: a temporary file in the same directory, flushed to disk, renamed
//! over `NAME`).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

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
    Ok(rpn_io::write_atomic(path, &bytes)?)
}

/// Tensors by name and string metadata of a safetensors file.
pub type SafetensorsContents = (HashMap<String, Tensor>, HashMap<String, String>);

/// The string metadata of a safetensors file, from its header alone (the tensors are not
/// read): the 8-byte header length is checked against the file before the header is read.
pub fn read_metadata(path: &Path) -> Result<HashMap<String, String>, Error> {
    use std::io::Read;
    let bad = |message: String| checkpoint_err(path, format!("not a safetensors file: {message}"));
    let (mut file, file_len) = rpn_io::open_regular_file(path)?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len).map_err(|_| bad("shorter than its 8-byte header length".into()))?;
    let header_len = u64::from_le_bytes(len);
    if header_len > file_len.saturating_sub(8) {
        return Err(bad(format!(
            "the header claims {header_len} bytes but the file has {file_len} in all"
        )));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header).map_err(|e| Error::io(path, "cannot read", e))?;
    let json: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| bad(format!("header: {e}")))?;
    Ok(json
        .get("__metadata__")
        .and_then(|m| m.as_object())
        .map(|m| m.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned()))).collect())
        .unwrap_or_default())
}

/// Reads every tensor and the metadata of a safetensors file.
pub fn read(path: &Path, device: &Device) -> Result<SafetensorsContents, Error> {
    let bytes = rpn_io::read_regular_file(path)?;
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
    // Narrow Matterport weights (`rpn train --width`) load under the architecture's name.
    let model = arch.network.fitted_to(&tensors).build_from(tensors, device).map_err(|source| {
        Error::Weights { path: path.to_path_buf(), arch: arch.name, source: Box::new(source) }
    })?;
    Ok((model, metadata))
}
