//! Keras weight files → safetensors for `rpn-model`, in pure Rust (no Python at run time).
//!
//! Reads the three layouts Keras writes (see `keras-h5-formats.md` in the project notes):
//! - Keras 2 `model.save_weights("x.h5")`: root attribute `layer_names`, per layer a group with
//!   attribute `weight_names` and datasets `<layer>/<layer>/kernel:0`, …;
//! - Keras 2 full-model `model.save("x.h5")`: the same tree under the group `model_weights`;
//! - Keras 3 `model.save_weights("x.weights.h5")`: groups `layers/<class-derived name>/vars/<i>`.
//!
//! Layers are mapped onto a [`KerasLayout`] (from `rpn_model::Network::keras_layout`): by name when
//! Keras names them meaningfully, else by **creation order per layer type** — the numeric suffix
//! of auto names (`conv2d_17`; the counter is global to the Python process, so only the order
//! counts). Keras 3 numbers its class-derived paths (`conv2d_1`) in graph order, which can differ
//! from creation order (seed 002 lists `classification` before `location`); when creation order
//! does not fit the shapes but the shapes name every layer unambiguously, shapes decide. Kernels go from HWIO to
//! OIHW with `(3, 2, 0, 1)`; BatchNorm `gamma, beta, moving_mean, moving_variance` become
//! `weight, bias, running_mean, running_var`.
//!
//! [`port`] checks everything before writing: every missing, unexpected or mis-shaped tensor is
//! listed (with both shapes) in one [`PortError::Mismatch`], and [`write_safetensors`] writes to a
//! temporary file and renames it, so a failed port never leaves a partial file behind.

mod h5;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use h5::{read_keras_file, KerasFileKind, KerasLayer, KerasWeight};
pub use rpn_model::KerasLayout;

/// Everything that can go wrong in a port; messages name the file, tensor and shapes.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PortError {
    /// The file could not be opened or parsed as HDF5.
    #[error("cannot read {path}: {message}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the HDF5 reader said.
        message: String,
    },
    /// HDF5, but not a layout Keras writes.
    #[error("{path} is not a Keras weights file: {message}")]
    NotKeras {
        /// The file.
        path: PathBuf,
        /// What is missing.
        message: String,
    },
    /// The file's tensors do not fit the model; every problem is listed, one per line.
    #[error("{path} does not fit the model ({} problem(s)):\n  {}", problems.len(), problems.join("\n  "))]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// One line per missing, unexpected or mis-shaped tensor.
        problems: Vec<String>,
    },
    /// The tensors could not be serialised (nothing was written).
    #[error("cannot write {path}: {message}")]
    Write {
        /// The output path.
        path: PathBuf,
        /// The cause.
        message: String,
    },
    /// The input is not a regular file (a device, a directory) or cannot be opened.
    #[error(transparent)]
    Input(#[from] rpn_io::InputError),
    /// The output file could not be written (the old file, if any, is untouched).
    #[error(transparent)]
    Output(#[from] rpn_io::OutputError),
}

/// Options of [`port`].
#[derive(Debug, Clone, Default)]
pub struct PortOptions {
    /// Layer names to skip, as Matterport's `load_weights(exclude=…)`; `*` matches any run of
    /// characters (`mrcnn_*`).
    pub exclude: Vec<String>,
}

/// Ported tensors: model path → (shape, row-major `f32` values), ready to write.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PortedWeights {
    /// Tensors by model path.
    pub tensors: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    /// Layers of the file skipped by [`PortOptions::exclude`].
    pub excluded: Vec<String>,
    /// Layers with weights that a named layout does not use (Matterport's `mrcnn_*` heads when
    /// porting its RPN), reported rather than refused.
    pub skipped: Vec<String>,
}

/// `*`-glob match of a whole name. Works on characters, so names and patterns in any script
/// (`conv_é*`) match without slicing inside a UTF-8 sequence.
fn glob_match(pattern: &str, name: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == name,
        Some((head, tail)) => name.strip_prefix(head).is_some_and(|rest| {
            // Try every split point of `rest` that is a character boundary, the end included.
            rest.char_indices()
                .map(|(i, _)| i)
                .chain(std::iter::once(rest.len()))
                .any(|i| glob_match(tail, &rest[i..]))
        }),
    }
}

/// Creation-order key of an auto-generated Keras name: `conv2d` → 0, `conv2d_17` → 17.
fn creation_index(name: &str) -> u64 {
    name.rsplit_once('_').and_then(|(_, n)| n.parse().ok()).unwrap_or(0)
}

/// The model-side names of a layer's weights, in Keras' weight order.
fn targets(path: &str, layer: &KerasLayer) -> Vec<String> {
    let suffixes: &[&str] = if layer.weights.len() == 2 {
        &["weight", "bias"]
    } else {
        &["weight", "bias", "running_mean", "running_var"]
    };
    suffixes.iter().map(|s| format!("{path}.{s}")).collect()
}

/// Shape of a Keras weight once ported (kernels HWIO → OIHW).
fn ported_shape(w: &KerasWeight) -> Vec<usize> {
    match w.shape[..] {
        [kh, kw, ci, co] => vec![co, ci, kh, kw],
        _ => w.shape.clone(),
    }
}

/// True if every weight of `layer` has the shape the model expects at `path`.
fn fits(path: &str, layer: &KerasLayer, expected: &BTreeMap<String, Vec<usize>>) -> bool {
    targets(path, layer)
        .iter()
        .zip(&layer.weights)
        .all(|(t, w)| expected.get(t) == Some(&ported_shape(w)))
}

/// For each path the index of the one layer that fits it, when each path fits exactly one layer
/// and no layer serves two paths.
fn unique_by_shape(
    paths: &[String],
    layers: &[KerasLayer],
    expected: &BTreeMap<String, Vec<usize>>,
) -> Option<Vec<usize>> {
    if paths.len() != layers.len() {
        return None;
    }
    let mut used = vec![false; layers.len()];
    let mut out = Vec::with_capacity(paths.len());
    for p in paths {
        let mut candidates = layers.iter().enumerate().filter(|(_, l)| fits(p, l, expected));
        let (i, _) = candidates.next()?;
        if candidates.next().is_some() || used[i] {
            return None;
        }
        used[i] = true;
        out.push(i);
    }
    Some(out)
}

/// HWIO → OIHW: `out[o][i][h][w] = in[h][w][i][o]`.
fn hwio_to_oihw(shape: &[usize], data: &[f32]) -> (Vec<usize>, Vec<f32>) {
    let [kh, kw, ci, co] = [shape[0], shape[1], shape[2], shape[3]];
    let mut out = vec![0.0; data.len()];
    for h in 0..kh {
        for w in 0..kw {
            for i in 0..ci {
                for o in 0..co {
                    out[((o * ci + i) * kh + h) * kw + w] = data[((h * kw + w) * ci + i) * co + o];
                }
            }
        }
    }
    (vec![co, ci, kh, kw], out)
}

/// Maps the layers of a Keras file onto `layout`, checking every shape against `expected`
/// (model path → shape, e.g. `rpn_model::Network::tensor_shapes`). Nothing is written.
pub fn port(
    path: &Path,
    layout: &KerasLayout,
    expected: &BTreeMap<String, Vec<usize>>,
    options: &PortOptions,
) -> Result<PortedWeights, PortError> {
    let (_, mut layers) = read_keras_file(path)?;
    let mut out = PortedWeights::default();
    // A named layout (Matterport, seed 002) whose every name is in the file takes exactly those
    // layers; the others (a full Mask R-CNN's heads) are reported as skipped.
    let wanted: std::collections::BTreeSet<&str> =
        layout.convs.iter().chain(&layout.bns).map(String::as_str).collect();
    if layout.named && wanted.iter().all(|n| layers.iter().any(|l| l.name == *n)) {
        layers.retain(|l| {
            let used = wanted.contains(l.name.as_str()) || l.weights.is_empty();
            let excluded = options.exclude.iter().any(|p| glob_match(p, &l.name));
            if !used && !excluded {
                out.skipped.push(l.name.clone());
            }
            used || excluded
        });
    }
    let mut problems = Vec::new();
    let mut convs = Vec::new();
    let mut bns = Vec::new();
    for layer in layers {
        if options.exclude.iter().any(|p| glob_match(p, &layer.name)) {
            out.excluded.push(layer.name);
            continue;
        }
        match layer.weights.len() {
            0 => {}
            2 if layer.weights[0].shape.len() == 4 => convs.push(layer),
            4 => bns.push(layer),
            _ => problems.push(format!(
                "unexpected layer `{}` with weights {:?}",
                layer.name,
                layer.weights.iter().map(|w| (&w.name, &w.shape)).collect::<Vec<_>>()
            )),
        }
    }
    // Each layer is moved into its pair (and its values into the output): a 47-M-value
    // checkpoint is held once, not copied.
    let pair = |kind: &str,
                paths: &[String],
                mut layers: Vec<KerasLayer>,
                problems: &mut Vec<String>|
     -> Vec<(String, KerasLayer)> {
        if layout.named
            && layers.len() == paths.len()
            && layers.iter().all(|l| paths.contains(&l.name))
        {
            // Same names, same count: sort the layers into the paths' order.
            layers.sort_by_key(|l| paths.iter().position(|p| *p == l.name));
            return paths.iter().cloned().zip(layers).collect();
        }
        // By creation order (auto names, or Keras 3's class-derived paths): `conv2d_10` comes
        // after `conv2d_9`, which a name sort would not give.
        layers.sort_by_key(|l| creation_index(&l.name));
        if layers.len() != paths.len() {
            problems.push(format!(
                "the file has {} {kind} layers, the model {} (file: {:?})",
                layers.len(),
                paths.len(),
                layers.iter().map(|l| l.name.as_str()).collect::<Vec<_>>()
            ));
        }
        let in_order = paths.iter().zip(&layers).all(|(p, l)| fits(p, l, expected));
        match (in_order, unique_by_shape(paths, &layers, expected)) {
            // Keras 3 numbers layers in graph order, which can differ from creation order (seed
            // 002 lists `classification` before `location`): when creation order does not fit
            // but shapes name each layer unambiguously, use shapes.
            (false, Some(by_shape)) => {
                let mut slots: Vec<Option<KerasLayer>> = layers.into_iter().map(Some).collect();
                paths
                    .iter()
                    .zip(by_shape)
                    .filter_map(|(p, i)| slots[i].take().map(|l| (p.clone(), l)))
                    .collect()
            }
            _ => paths.iter().cloned().zip(layers).collect(),
        }
    };
    let conv_pairs = pair("conv", &layout.convs, convs, &mut problems);
    let bn_pairs = pair("batch-norm", &layout.bns, bns, &mut problems);

    let mut put = |target: String,
                   keras: String,
                   shape: Vec<usize>,
                   data: Vec<f32>,
                   problems: &mut Vec<String>| {
        match expected.get(&target) {
            None => problems.push(format!(
                "unexpected tensor `{keras}` → `{target}`, which the model does not have"
            )),
            Some(want) if *want != shape => problems.push(format!(
                "shape mismatch for `{keras}` → `{target}`: file {shape:?}, model {want:?}"
            )),
            Some(_) => {
                out.tensors.insert(target, (shape, data));
            }
        }
    };
    for (path, layer) in conv_pairs {
        let mut weights = layer.weights.into_iter();
        let (Some(kernel), Some(bias)) = (weights.next(), weights.next()) else { continue };
        // The transpose writes a new buffer; the HWIO one is dropped right after.
        let (shape, data) = hwio_to_oihw(&kernel.shape, &kernel.data);
        drop(kernel.data);
        put(
            format!("{path}.weight"),
            format!("{}/{}", layer.name, kernel.name),
            shape,
            data,
            &mut problems,
        );
        put(
            format!("{path}.bias"),
            format!("{}/{}", layer.name, bias.name),
            bias.shape,
            bias.data,
            &mut problems,
        );
    }
    for (path, layer) in bn_pairs {
        for (w, ours) in
            layer.weights.into_iter().zip(["weight", "bias", "running_mean", "running_var"])
        {
            put(
                format!("{path}.{ours}"),
                format!("{}/{}", layer.name, w.name),
                w.shape,
                w.data,
                &mut problems,
            );
        }
    }
    for (target, shape) in expected {
        if !out.tensors.contains_key(target) {
            problems.push(format!(
                "missing tensor `{target}` {shape:?}: no layer of the file maps to it"
            ));
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        // Layer-count problems come first (they explain the rest); order is otherwise the model's.
        problems.dedup();
        Err(PortError::Mismatch { path: path.to_owned(), problems })
    }
}

/// Writes `weights` as safetensors (`f32`), atomically ([`rpn_io::write_atomic`]): on any
/// error `path` is untouched, and a destination that is not a regular file is refused.
pub fn write_safetensors(weights: &PortedWeights, path: &Path) -> Result<(), PortError> {
    let fail = |message: String| PortError::Write { path: path.to_owned(), message };
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = weights
        .tensors
        .iter()
        .map(|(k, (shape, data))| {
            (k.clone(), shape.clone(), data.iter().flat_map(|v| v.to_le_bytes()).collect())
        })
        .collect();
    let views = bytes
        .iter()
        .map(|(k, shape, data)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                .map(|v| (k.clone(), v))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(e.to_string()))?;
    let serialized = safetensors::serialize(views, None).map_err(|e| fail(e.to_string()))?;
    Ok(rpn_io::write_atomic(path, &serialized)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_and_creation_order() {
        assert!(glob_match("mrcnn_*", "mrcnn_bbox_fc"));
        assert!(glob_match("*_bn", "stem_bn"));
        assert!(!glob_match("mrcnn_*", "rpn_model"));
        assert!(glob_match("exact", "exact") && !glob_match("exact", "exactly"));
        // Multi-byte names: the old byte-offset loop sliced inside `é` and panicked.
        assert!(glob_match("*é*", "conv_é_1") && glob_match("*", "ц") && glob_match("a*", "aé"));
        assert!(!glob_match("*x", "héllo") && glob_match("h*o", "héllo"));
        assert!(glob_match("**", "") && !glob_match("?*", "é"));
        assert_eq!(creation_index("conv2d"), 0);
        assert_eq!(creation_index("conv2d_17"), 17);
        assert_eq!(creation_index("batch_normalization_3"), 3);
    }

    #[test]
    fn hwio_to_oihw_moves_each_value() {
        // kh=1, kw=2, in=2, out=3: value = h·100 + w·10 + i + o·1000 (as HWIO, row-major).
        let shape = [1, 2, 2, 3];
        let mut data = Vec::new();
        for w in 0..2 {
            for i in 0..2 {
                for o in 0..3 {
                    data.push((w * 10 + i + o * 1000) as f32);
                }
            }
        }
        let (s, out) = hwio_to_oihw(&shape, &data);
        assert_eq!(s, [3, 2, 1, 2]);
        // OIHW index of o=2, i=1, h=0, w=1 in [3, 2, 1, 2]: ((2·2 + 1)·1 + 0)·2 + 1 = 11.
        assert_eq!(out[11], 2011.0);
    }

    proptest::proptest! {
        /// Any pattern over any name: an answer, never a panic; `*` alone matches everything
        /// and a pattern without `*` matches only itself.
        #[test]
        fn glob_never_panics(pattern in "[a-zé*ц_]{0,8}", name in "\\PC{0,12}") {
            let _ = glob_match(&pattern, &name);
            proptest::prop_assert!(glob_match("*", &name));
            proptest::prop_assert!(glob_match(&name.replace('*', ""), &name.replace('*', "")));
        }
    }
}
