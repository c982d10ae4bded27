//! Reading Keras weight files with the pure-Rust `hdf5-pure` reader.

use std::path::Path;

use hdf5_pure::{AttrValue, File, Group};

use crate::PortError;

/// Which layout a file has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KerasFileKind {
    /// Keras 2 `save_weights` (root `layer_names`).
    Keras2Weights,
    /// Keras 2 full model (`model_weights/layer_names`).
    Keras2Model,
    /// Keras 3 `.weights.h5` (`layers/<name>/vars/<i>`).
    Keras3Weights,
}

/// One weight of a layer, as stored (kernels HWIO).
#[derive(Debug, Clone, PartialEq)]
pub struct KerasWeight {
    /// Short name: `kernel`, `bias`, `gamma`, … (Keras 3: the variable index, `0`, `1`, …).
    pub name: String,
    /// Stored shape.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f32>,
}

/// A layer and its weights, in the file's weight order.
#[derive(Debug, Clone, PartialEq)]
pub struct KerasLayer {
    /// Layer name (Keras 3: the class-derived path, e.g. `conv2d_1`).
    pub name: String,
    /// Its weights (empty for weightless layers).
    pub weights: Vec<KerasWeight>,
}

/// The strings of a string (or string-array) attribute. h5py stores an empty `weight_names` as
/// an empty float64 array, which counts as "no strings".
fn strings(value: &AttrValue) -> Option<Vec<String>> {
    Some(match value {
        AttrValue::StringArray(v)
        | AttrValue::AsciiStringArray(v)
        | AttrValue::VarLenStringArray(v)
        | AttrValue::VarLenAsciiStringArray(v)
        | AttrValue::VarLenAsciiCharArray(v) => v.clone(),
        AttrValue::StringArraySized { values, .. }
        | AttrValue::AsciiStringArraySized { values, .. } => values.clone(),
        AttrValue::String(s)
        | AttrValue::AsciiString(s)
        | AttrValue::VarLenString(s)
        | AttrValue::VarLenAsciiString(s) => {
            vec![s.clone()]
        }
        AttrValue::F64Array(v) if v.is_empty() => Vec::new(),
        AttrValue::F32Array(v) if v.is_empty() => Vec::new(),
        _ => return None,
    })
}

/// The largest expansion a deflate stream allows (about 1032 : 1): a filtered dataset can hold
/// at most this many bytes per byte of file.
const MAX_DEFLATE_RATIO: u64 = 1032;

fn read_dataset(
    file: &File,
    path: &str,
    name: String,
    err: &dyn Fn(String) -> PortError,
) -> Result<KerasWeight, PortError> {
    let ds = file.dataset(path).map_err(|e| err(format!("dataset `{path}`: {e}")))?;
    let dims = ds.shape().map_err(|e| err(format!("dataset `{path}`: {e}")))?;
    // Check the declared size against the file before the reader allocates it: a 4 KB file
    // can declare a (3, 3, 1e5, 1e5) dataset. Unfiltered data must be stored in the file;
    // compressed data can expand at most by deflate's ratio.
    let element = ds.element_size().map_err(|e| err(format!("dataset `{path}`: {e}")))?;
    let stored = dims
        .iter()
        .try_fold(element.max(1), |acc, &d| acc.checked_mul(d))
        .filter(|&bytes| usize::try_from(bytes).is_ok());
    let file_len = file.file_size();
    let limit =
        if ds.filters().is_empty() { file_len } else { file_len.saturating_mul(MAX_DEFLATE_RATIO) };
    match stored {
        Some(bytes) if bytes <= limit => {}
        _ => {
            return Err(err(format!(
                "dataset `{path}` declares shape {dims:?} ({} bytes), more than a {file_len}-byte \
                 file can hold",
                stored.map_or_else(|| "overflowing".to_owned(), |b| b.to_string())
            )))
        }
    }
    let shape: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
    let data = ds.read_f32().map_err(|e| err(format!("dataset `{path}` as f32: {e}")))?;
    if data.len() != shape.iter().product::<usize>() {
        return Err(err(format!("dataset `{path}` has {} values for shape {shape:?}", data.len())));
    }
    Ok(KerasWeight { name, shape, data })
}

fn keras2_layers(
    file: &File,
    base: &str,
    group: &Group,
    err: &dyn Fn(String) -> PortError,
) -> Result<Vec<KerasLayer>, PortError> {
    let attrs = group.attrs().map_err(|e| err(format!("attributes of `/{base}`: {e}")))?;
    let names = attrs
        .get("layer_names")
        .and_then(strings)
        .ok_or_else(|| err("no `layer_names` attribute".into()))?;
    let mut layers = Vec::with_capacity(names.len());
    for layer in names {
        let layer_path = format!("{base}{layer}");
        let g =
            file.group(&layer_path).map_err(|e| err(format!("layer group `{layer_path}`: {e}")))?;
        let a = g.attrs().map_err(|e| err(format!("attributes of `{layer_path}`: {e}")))?;
        let weight_names = a.get("weight_names").and_then(strings).unwrap_or_default();
        // A nested model (Matterport's `rpn_model`) is one group whose weights belong to several
        // inner layers: `rpn_model/rpn_conv_shared/kernel:0`. Each inner layer becomes a layer of
        // its own, named by the inner name, so named layouts find `rpn_conv_shared`.
        let mut current: Option<KerasLayer> = None;
        for w in weight_names {
            // `conv2d_57/kernel:0` → inner layer `conv2d_57`, weight `kernel`.
            let mut parts = w.rsplit('/');
            let short = parts.next().unwrap_or(&w).trim_end_matches(":0").to_owned();
            let inner = parts.next().unwrap_or(&layer).to_owned();
            let owner = if inner == layer || !w.contains('/') { layer.clone() } else { inner };
            let weight = read_dataset(file, &format!("{layer_path}/{w}"), short, err)?;
            match &mut current {
                Some(l) if l.name == owner => l.weights.push(weight),
                _ => {
                    layers.extend(current.take());
                    current = Some(KerasLayer { name: owner, weights: vec![weight] });
                }
            }
        }
        match current {
            Some(l) => layers.push(l),
            // Layers without weights (activations, inputs) are listed too.
            None => layers.push(KerasLayer { name: layer, weights: vec![] }),
        }
    }
    Ok(layers)
}

fn keras3_layers(
    file: &File,
    err: &dyn Fn(String) -> PortError,
) -> Result<Vec<KerasLayer>, PortError> {
    let root = file.group("layers").map_err(|e| err(format!("group `layers`: {e}")))?;
    let mut names = root.groups().map_err(|e| err(format!("groups of `layers`: {e}")))?;
    names.sort();
    let mut layers = Vec::with_capacity(names.len());
    for name in names {
        let vars_path = format!("layers/{name}/vars");
        let mut vars: Vec<String> =
            file.group(&vars_path).and_then(|g| g.datasets()).unwrap_or_default();
        // Variables are stored as `0`, `1`, …: numeric order is Keras' weight order.
        vars.sort_by_key(|v| v.parse::<u64>().unwrap_or(u64::MAX));
        let weights = vars
            .into_iter()
            .map(|v| read_dataset(file, &format!("{vars_path}/{v}"), v.clone(), err))
            .collect::<Result<_, _>>()?;
        layers.push(KerasLayer { name, weights });
    }
    Ok(layers)
}

/// Opens a Keras weight file of any of the three layouts and returns its layers.
pub fn read_keras_file(path: &Path) -> Result<(KerasFileKind, Vec<KerasLayer>), PortError> {
    // Refuse `/dev/zero`, FIFOs and directories before the HDF5 reader opens them.
    drop(rpn_io::open_regular_file(path)?);
    let file = File::open(path)
        .map_err(|e| PortError::Read { path: path.to_owned(), message: e.to_string() })?;
    let err = |message: String| PortError::NotKeras { path: path.to_owned(), message };
    let root = file.root();
    let attrs = root.attrs().map_err(|e| err(format!("root attributes: {e}")))?;
    if attrs.contains_key("layer_names") {
        return Ok((KerasFileKind::Keras2Weights, keras2_layers(&file, "", &root, &err)?));
    }
    let groups = root.groups().map_err(|e| err(format!("root groups: {e}")))?;
    if groups.iter().any(|g| g == "model_weights") {
        let g =
            file.group("model_weights").map_err(|e| err(format!("group `model_weights`: {e}")))?;
        return Ok((KerasFileKind::Keras2Model, keras2_layers(&file, "model_weights/", &g, &err)?));
    }
    if groups.iter().any(|g| g == "layers") {
        return Ok((KerasFileKind::Keras3Weights, keras3_layers(&file, &err)?));
    }
    Err(err("no `layer_names` attribute, `model_weights` group or `layers` group".into()))
}
