//! PyTorch checkpoints → safetensors for `rpn-model`'s torchvision networks, in pure Rust
//! (candle's `pickle` reader; no Python).
//!
//! Reads what `torch.save(model.state_dict())` writes for torchvision's detectors
//! (`fasterrcnn_resnet50_fpn`, `maskrcnn_resnet50_fpn`, fine-tuned copies), and the state dicts
//! of `model.rpn` or `model.backbone` alone, or wrapped as `{"model": state_dict}` (torchvision's
//! reference training scripts). Keys stay torchvision's (`backbone.body.layer1.0.conv1.weight`,
//! `rpn.head.cls_logits.bias`, …): they are the paths `rpn_model::TorchvisionRpn` loads by.
//! `roi_heads.*` (the second stage) is reported as skipped, `num_batches_tracked` is dropped,
//! and every missing, unexpected or mis-shaped tensor is listed at once.
//!
//! ```no_run
//! use rpn_model::{Network, TorchvisionConfig};
//!
//! let network = Network::Torchvision(TorchvisionConfig::resnet50_fpn());
//! let weights = rpn_torch::port("fasterrcnn_resnet50_fpn.pth".as_ref(), &network)?;
//! println!("{} tensors, skipped {} of the second stage", weights.tensors.len(), weights.skipped.len());
//! rpn_torch::write_safetensors(&weights, "rpn.safetensors".as_ref())?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};
use rpn_model::Network;

/// Why a checkpoint cannot be ported. Nothing is written in any case.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TorchPortError {
    /// Not a regular file, or it cannot be opened.
    #[error(transparent)]
    Input(#[from] rpn_io::InputError),
    /// Not a PyTorch zip checkpoint with a state dict, or a tensor that cannot be read.
    #[error("{}: not a readable PyTorch state dict: {message}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The state dict does not fit the network; one line per problem.
    #[error("{} does not fit the model ({} problem(s)):\n  {}", path.display(), problems.len(), problems.join("\n  "))]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// Missing, unexpected and mis-shaped tensors.
        problems: Vec<String>,
    },
    /// The output could not be written (the old file is untouched).
    #[error(transparent)]
    Output(#[from] rpn_io::OutputError),
    /// The tensors could not be serialised.
    #[error("cannot serialise {}: {message}", path.display())]
    Serialize {
        /// The output.
        path: PathBuf,
        /// The cause.
        message: String,
    },
}

/// One entry of a state dict, as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct StateDictEntry {
    /// Key as stored (before any prefix normalisation).
    pub name: String,
    /// PyTorch dtype as candle names it.
    pub dtype: DType,
    /// Shape.
    pub shape: Vec<usize>,
}

/// A ported checkpoint.
#[derive(Debug, Clone)]
pub struct TorchWeights {
    /// The network's tensors by torchvision key, `f32`, on the CPU.
    pub tensors: BTreeMap<String, Tensor>,
    /// Keys outside the RPN (`roi_heads.*`, …), in file order.
    pub skipped: Vec<String>,
}

/// The keys a state dict may carry that hold no weights.
fn is_bookkeeping(key: &str) -> bool {
    key.ends_with("num_batches_tracked")
}

/// The torchvision key of `key`: `module.` (DataParallel) removed, the `backbone.` / `rpn.`
/// prefix restored for the state dicts of `model.backbone` / `model.rpn` alone, and the names
/// of checkpoints saved before torchvision 0.13 (the published `fasterrcnn_resnet50_fpn_coco`
/// among them) updated as torchvision's own `_load_from_state_dict` does:
/// `rpn.head.conv.weight` → `rpn.head.conv.0.0.weight`, `fpn.inner_blocks.0.weight` →
/// `fpn.inner_blocks.0.0.weight` (and `layer_blocks`).
fn normalize(key: &str) -> String {
    let key = key.strip_prefix("module.").unwrap_or(key);
    let key = if key.starts_with("body.") || key.starts_with("fpn.") {
        format!("backbone.{key}")
    } else if key.starts_with("head.") {
        format!("rpn.{key}")
    } else {
        key.to_owned()
    };
    for param in ["weight", "bias"] {
        if key == format!("rpn.head.conv.{param}") {
            return format!("rpn.head.conv.0.0.{param}");
        }
    }
    for blocks in ["backbone.fpn.inner_blocks.", "backbone.fpn.layer_blocks."] {
        if let Some(rest) = key.strip_prefix(blocks) {
            // `N.weight` (old) vs `N.0.weight` (new): only two parts means the old layout.
            if let [index, param] = rest.split('.').collect::<Vec<_>>()[..] {
                if index.parse::<usize>().is_ok() && (param == "weight" || param == "bias") {
                    return format!("{blocks}{index}.0.{param}");
                }
            }
        }
    }
    key
}

/// Where the state dict sits: the file's top-level object, or under one of these keys.
const WRAPPER_KEYS: &[&str] = &["model", "state_dict"];

fn open(path: &Path) -> Result<candle_core::pickle::PthTensors, TorchPortError> {
    // Refuse devices and FIFOs before the zip reader opens them.
    let (_, file_len) = rpn_io::open_regular_file(path)?;
    let read_err = |e: candle_core::Error| TorchPortError::Read {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let mut pth = candle_core::pickle::PthTensors::new(path, None).map_err(read_err)?;
    for key in WRAPPER_KEYS {
        if !pth.tensor_infos().is_empty() {
            break;
        }
        if let Ok(wrapped) = candle_core::pickle::PthTensors::new(path, Some(key)) {
            pth = wrapped;
        }
    }
    if pth.tensor_infos().is_empty() {
        return Err(TorchPortError::Read {
            path: path.to_path_buf(),
            message: "no tensors (expected `torch.save(model.state_dict())`, optionally under \
                      `model` or `state_dict`)"
                .into(),
        });
    }
    // A tensor cannot hold more bytes than the file: checked before any is read.
    for info in pth.tensor_infos().values() {
        let bytes = info
            .layout
            .dims()
            .iter()
            .try_fold(info.dtype.size_in_bytes() as u64, |acc, &d| acc.checked_mul(d as u64));
        if bytes.is_none_or(|b| b > file_len) {
            return Err(TorchPortError::Read {
                path: path.to_path_buf(),
                message: format!(
                    "tensor `{}` declares shape {:?}, more than a {file_len}-byte file holds",
                    info.name,
                    info.layout.dims()
                ),
            });
        }
    }
    Ok(pth)
}

/// The entries of the state dict in `path` (names as stored, sorted), without reading the data:
/// what `rpn inspect` lists.
pub fn read_state_dict(path: &Path) -> Result<Vec<StateDictEntry>, TorchPortError> {
    let pth = open(path)?;
    let mut entries: Vec<StateDictEntry> = pth
        .tensor_infos()
        .values()
        .map(|i| StateDictEntry {
            name: i.name.clone(),
            dtype: i.dtype,
            shape: i.layout.dims().to_vec(),
        })
        .collect();
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

/// Reads the state dict in `path` and keeps the tensors `network` needs, as `f32`, checked by
/// name and shape ([`Network::tensor_shapes`]). Every problem is reported at once.
pub fn port(path: &Path, network: &Network) -> Result<TorchWeights, TorchPortError> {
    port_files(&[path], network)
}

/// [`port`] over several state dicts that together make the network — `model.backbone` and
/// `model.rpn` saved separately —; a key in two files is a problem, not a silent overwrite.
pub fn port_files(paths: &[&Path], network: &Network) -> Result<TorchWeights, TorchPortError> {
    let first = paths.first().map_or_else(PathBuf::new, |p| p.to_path_buf());
    let expected = network.tensor_shapes().map_err(|e| TorchPortError::Read {
        path: first.clone(),
        message: format!("cannot list the model's tensors: {e}"),
    })?;
    let (mut tensors, mut skipped, mut problems) = (BTreeMap::new(), Vec::new(), Vec::new());
    let mut source: BTreeMap<String, &Path> = BTreeMap::new();
    for &path in paths {
        let pth = open(path)?;
        let mut names: Vec<&String> = pth.tensor_infos().keys().collect();
        names.sort();
        for name in names {
            if is_bookkeeping(name) {
                continue;
            }
            let key = normalize(name);
            let Some(shape) = expected.get(&key) else {
                if key.starts_with("backbone.") || key.starts_with("rpn.") {
                    problems.push(format!("unexpected tensor `{name}` (not in the model)"));
                } else {
                    skipped.push(name.clone());
                }
                continue;
            };
            if let Some(other) = source.insert(key.clone(), path) {
                problems.push(format!(
                    "tensor `{key}` is in both {} and {}",
                    other.display(),
                    path.display()
                ));
                continue;
            }
            let read = pth.get(name).and_then(|t| match t {
                Some(t) => t.to_dtype(DType::F32).map(Some),
                None => Ok(None),
            });
            match read {
                Ok(Some(t)) if t.dims() == shape.as_slice() => {
                    tensors.insert(key, t);
                }
                Ok(Some(t)) => problems.push(format!(
                    "tensor `{name}` has shape {:?}, the model needs {shape:?}",
                    t.dims()
                )),
                Ok(None) => problems.push(format!("tensor `{name}` has no data")),
                Err(e) => {
                    return Err(TorchPortError::Read {
                        path: path.to_path_buf(),
                        message: format!("tensor `{name}`: {e}"),
                    })
                }
            }
        }
    }
    for (key, shape) in &expected {
        if !tensors.contains_key(key) && !problems.iter().any(|p| p.contains(&format!("`{key}`"))) {
            problems.push(format!("missing tensor `{key}` {shape:?}"));
        }
    }
    if !problems.is_empty() {
        return Err(TorchPortError::Mismatch { path: first, problems });
    }
    Ok(TorchWeights { tensors, skipped })
}

/// Writes `weights` as safetensors, atomically ([`rpn_io::write_atomic`]).
pub fn write_safetensors(weights: &TorchWeights, path: &Path) -> Result<(), TorchPortError> {
    let contiguous = weights
        .tensors
        .iter()
        .map(|(k, t)| t.contiguous().map(|t| (k.as_str(), t)))
        .collect::<candle_core::Result<Vec<_>>>()
        .map_err(|e| TorchPortError::Serialize {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    let bytes =
        safetensors::serialize(contiguous.iter().map(|(k, t)| (*k, t)), None).map_err(|e| {
            TorchPortError::Serialize { path: path.to_path_buf(), message: e.to_string() }
        })?;
    Ok(rpn_io::write_atomic(path, &bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_partial_state_dicts_get_their_prefix_back() {
        assert_eq!(normalize("body.conv1.weight"), "backbone.body.conv1.weight");
        assert_eq!(normalize("fpn.inner_blocks.0.0.bias"), "backbone.fpn.inner_blocks.0.0.bias");
        assert_eq!(normalize("head.cls_logits.weight"), "rpn.head.cls_logits.weight");
        assert_eq!(normalize("module.rpn.head.conv.0.0.weight"), "rpn.head.conv.0.0.weight");
        assert_eq!(normalize("roi_heads.box_head.fc6.weight"), "roi_heads.box_head.fc6.weight");
        // torchvision < 0.13 names (the published COCO checkpoints).
        assert_eq!(normalize("rpn.head.conv.weight"), "rpn.head.conv.0.0.weight");
        assert_eq!(
            normalize("backbone.fpn.inner_blocks.3.bias"),
            "backbone.fpn.inner_blocks.3.0.bias"
        );
        assert_eq!(normalize("fpn.layer_blocks.0.weight"), "backbone.fpn.layer_blocks.0.0.weight");
        assert_eq!(
            normalize("backbone.fpn.layer_blocks.0.1.running_var"),
            "backbone.fpn.layer_blocks.0.1.running_var"
        );
        assert!(is_bookkeeping("backbone.body.bn1.num_batches_tracked"));
    }

    #[test]
    fn a_file_that_is_not_a_zip_is_a_read_error() {
        let path = std::env::temp_dir().join(format!("rpn-torch-{}.pth", std::process::id()));
        assert!(std::fs::write(&path, b"not a zip at all").is_ok());
        let network = Network::Torchvision(rpn_model::TorchvisionConfig::resnet50_fpn());
        let err = port(&path, &network).err();
        assert!(matches!(err, Some(TorchPortError::Read { .. })), "{err:?}");
        let _ = std::fs::remove_file(&path);
    }
}
