//! Shared helpers of the workspace's golden tests: reading fixtures written by the peer scripts.
//!
//! Fixtures are safetensors files under `tests/fixtures/`, each produced by the Python script
//! named in its metadata (`generator`) and in the test that reads it. CI only reads them; the
//! scripts need the oracle virtualenv (`cargo xtask oracles`).

// A broken fixture is a broken checkout: panicking with the file and key is the right report.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::{Path, PathBuf};

/// README's Rust example, compiled and run as a doc test so it cannot rot.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;

use rpn_anchors::Bbox;
use safetensors::{Dtype, SafeTensors};

/// A fresh directory under the system temp dir, unique to this test process and `name`.
pub fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rpn-tests-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

/// Directory holding the committed fixtures.
pub fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// A fixture file loaded in memory.
pub struct Fixture {
    name: String,
    bytes: Vec<u8>,
}

/// One tensor of a fixture, converted to owned values.
#[derive(Debug, Clone, PartialEq)]
pub struct Array<T> {
    /// Row-major values.
    pub data: Vec<T>,
    /// Dimensions.
    pub shape: Vec<usize>,
}

impl Fixture {
    /// Loads `tests/fixtures/<name>`; panics with the path and the regeneration hint if absent
    /// (a missing fixture is a broken checkout, not a condition to handle).
    pub fn load(name: &str) -> Self {
        let path = fixtures_dir().join(name);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| {
            panic!(
                "cannot read fixture {}: {e} (regenerate with `cargo xtask fixtures`)",
                path.display()
            )
        });
        Self { name: name.to_owned(), bytes }
    }

    fn tensors(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.bytes)
            .unwrap_or_else(|e| panic!("fixture {} is not valid safetensors: {e}", self.name))
    }

    fn raw(&self, key: &str, dtype: Dtype) -> (Vec<u8>, Vec<usize>) {
        let tensors = self.tensors();
        let view = tensors
            .tensor(key)
            .unwrap_or_else(|e| panic!("fixture {}: no tensor `{key}`: {e}", self.name));
        assert_eq!(view.dtype(), dtype, "fixture {}: tensor `{key}` dtype", self.name);
        (view.data().to_vec(), view.shape().to_vec())
    }

    /// The names of the tensors starting with `prefix`, sorted.
    pub fn keys_with_prefix(&self, prefix: &str) -> Vec<String> {
        let mut keys: Vec<String> = self
            .tensors()
            .names()
            .into_iter()
            .filter(|k| k.starts_with(prefix))
            .map(str::to_owned)
            .collect();
        keys.sort();
        keys
    }

    /// An `f32` tensor.
    pub fn f32(&self, key: &str) -> Array<f32> {
        let (bytes, shape) = self.raw(key, Dtype::F32);
        let data =
            bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        Array { data, shape }
    }

    /// An `i64` tensor.
    pub fn i64(&self, key: &str) -> Array<i64> {
        let (bytes, shape) = self.raw(key, Dtype::I64);
        let data = bytes
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect();
        Array { data, shape }
    }

    /// An `i8` tensor (labels).
    pub fn i8(&self, key: &str) -> Array<i8> {
        let (bytes, shape) = self.raw(key, Dtype::I8);
        Array { data: bytes.into_iter().map(|b| b as i8).collect(), shape }
    }

    /// An `i64` tensor as indices.
    pub fn indices(&self, key: &str) -> Vec<usize> {
        self.i64(key)
            .data
            .into_iter()
            .map(|v| usize::try_from(v).expect("fixture index is negative"))
            .collect()
    }

    /// A `[N, 4]` tensor of `(x1, y1, x2, y2)` boxes.
    pub fn boxes_xyxy(&self, key: &str) -> Vec<Bbox> {
        self.rows4(key).into_iter().map(Bbox::from_xyxy).collect()
    }

    /// A `[N, 4]` tensor of Matterport `(y1, x1, y2, x2)` boxes.
    pub fn boxes_yxyx(&self, key: &str) -> Vec<Bbox> {
        self.rows4(key).into_iter().map(Bbox::from_yxyx).collect()
    }

    /// Any `[…, 4]` `f32` tensor as rows (leading dimensions flattened).
    pub fn rows4_of(&self, key: &str) -> Vec<[f32; 4]> {
        let a = self.f32(key);
        assert_eq!(a.shape.last(), Some(&4), "fixture {}: `{key}` must end in 4", self.name);
        a.data.chunks_exact(4).map(|c| [c[0], c[1], c[2], c[3]]).collect()
    }

    /// A `[N, 4]` `f32` tensor as rows.
    pub fn rows4(&self, key: &str) -> Vec<[f32; 4]> {
        let a = self.f32(key);
        assert_eq!(
            a.shape.get(1),
            Some(&4),
            "fixture {}: `{key}` must be [N, 4], is {:?}",
            self.name,
            a.shape
        );
        a.data.chunks_exact(4).map(|c| [c[0], c[1], c[2], c[3]]).collect()
    }
}

/// `|a − b| ≤ atol + rtol · |b|` for every element, with a message naming the first bad element.
pub fn assert_close(what: &str, actual: &[f32], expected: &[f32], rtol: f32, atol: f32) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
        let ok = (a - e).abs() <= atol + rtol * e.abs() || (a.is_nan() && e.is_nan()) || a == e;
        assert!(ok, "{what}[{i}]: got {a}, expected {e} (rtol {rtol}, atol {atol})");
    }
}

/// A fixture array as a CPU tensor of its shape.
pub fn tensor(a: &Array<f32>) -> candle_core::Tensor {
    candle_core::Tensor::from_vec(a.data.clone(), a.shape.as_slice(), &candle_core::Device::Cpu)
        .unwrap_or_else(|e| panic!("fixture array {:?}: {e}", a.shape))
}

/// Max |ours − theirs| ≤ `rel` · max |theirs| (a network output against the peer's, relative to
/// the output's scale), with the same shape.
pub fn assert_scaled(what: &str, ours: &candle_core::Tensor, theirs: &Array<f32>, rel: f32) {
    assert_eq!(ours.dims(), theirs.shape.as_slice(), "{what} shape");
    let ours = ours
        .flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let scale = theirs.data.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = ours.iter().zip(&theirs.data).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(worst <= rel * scale, "{what}: max diff {worst}, scale {scale}");
}

/// Flattens boxes to `[x1, y1, x2, y2, …]`.
pub fn flat_xyxy(boxes: &[Bbox]) -> Vec<f32> {
    boxes.iter().flat_map(|b| b.to_xyxy()).collect()
}

/// The integer hash the Keras fixture scripts share with these tests (`tests/fixtures/keras_seeds.py`):
/// weights, BN statistics and inputs are generated from it on both sides, so large models need no
/// stored checkpoint and values are exact in both languages.
pub mod hashed {
    use candle_core::{Device, Tensor};
    use candle_nn::VarMap;

    /// `lowbias32`, evaluated like numpy's wrapping `uint32` arithmetic.
    pub fn lowbias32(mut x: u32) -> u32 {
        x ^= x >> 16;
        x = x.wrapping_mul(0x7FEB_352D);
        x ^= x >> 15;
        x = x.wrapping_mul(0x846C_A68B);
        x ^ (x >> 16)
    }

    /// `keras_seeds.unit(n, salt)`: `n` floats in [0, 1) with 24 significant bits.
    pub fn unit(n: usize, salt: u32) -> Vec<f32> {
        let s = lowbias32(salt);
        (0..n as u32).map(|i| (lowbias32(i ^ s) >> 8) as f32 / (1u32 << 24) as f32).collect()
    }

    /// `keras_seeds.hashed(shape, salt, scale)`: `(unit − 0.5) · scale`, row-major in `shape`.
    pub fn tensor(shape: &[usize], salt: u32, scale: f32) -> Tensor {
        let n = shape.iter().product();
        let v: Vec<f32> = unit(n, salt).into_iter().map(|u| (u - 0.5) * scale).collect();
        Tensor::from_vec(v, shape, &Device::Cpu).expect("length matches shape")
    }

    /// Matterport's ResNet-50-FPN RPN as variables, hashed by layer name exactly as
    /// `tests/fixtures/matterport_graph.py`'s `hashed_resnet50_rpn` sets Keras' weights.
    pub fn matterport_resnet50() -> VarMap {
        use rpn_model::{MatterportConfig, MatterportRpn};
        let config = MatterportConfig::resnet50();
        let varmap = VarMap::new();
        let vb = candle_nn::VarBuilder::from_varmap(&varmap, candle_core::DType::F32, &Device::Cpu);
        MatterportRpn::new(&config, vb).expect("Matterport's ResNet-50 builds");
        let (convs, bns) = MatterportRpn::keras_layer_names(&config);
        set_weights(&varmap, &convs, &bns);
        varmap
    }

    /// The variables of `varmap` as plain tensors (no gradient tracking), for building the same
    /// model for inference as a user's loaded weights would (candle's convolution path).
    pub fn frozen(varmap: &VarMap) -> candle_nn::VarBuilder<'static> {
        let vars = varmap.data().lock().expect("varmap lock");
        let tensors: std::collections::HashMap<String, Tensor> =
            vars.iter().map(|(k, v)| (k.clone(), v.as_tensor().detach())).collect();
        candle_nn::VarBuilder::from_tensors(tensors, candle_core::DType::F32, &Device::Cpu)
    }

    /// Sets a model's convs and BNs (paths in Keras creation order) exactly as
    /// `keras_seeds.set_weights` sets Keras': kernels generated HWIO, then transposed to OIHW
    /// with `(3, 2, 0, 1)` as a port must.
    pub fn set_weights(varmap: &VarMap, convs: &[String], bns: &[String]) {
        let vars = varmap.data().lock().expect("varmap lock");
        let set = |name: &str, t: Tensor| {
            let var = vars.get(name).unwrap_or_else(|| panic!("no variable `{name}`"));
            assert_eq!(var.dims(), t.dims(), "{name}");
            var.set(&t).expect("same shape and dtype");
        };
        for (k, path) in convs.iter().enumerate() {
            let k = k as u32;
            let (o, i, kh, kw) =
                vars[&format!("{path}.weight")].dims4().expect("conv weight is 4-D");
            let hwio = tensor(&[kh, kw, i, o], 1000 + 10 * k, 2.0 / ((kh * kw * i) as f32).sqrt());
            set(
                &format!("{path}.weight"),
                hwio.permute((3, 2, 0, 1)).and_then(|t| t.contiguous()).expect("permute"),
            );
            set(&format!("{path}.bias"), tensor(&[o], 1001 + 10 * k, 0.2));
        }
        for (k, path) in bns.iter().enumerate() {
            let k = k as u32;
            let n = vars[&format!("{path}.weight")].dims1().expect("BN weight is 1-D");
            let t = |salt: u32, f: fn(f32) -> f32| {
                Tensor::from_vec(
                    unit(n, salt).into_iter().map(f).collect::<Vec<_>>(),
                    n,
                    &Device::Cpu,
                )
                .expect("length")
            };
            set(&format!("{path}.weight"), t(5000 + 10 * k, |u| 0.5 + u));
            set(&format!("{path}.bias"), t(5001 + 10 * k, |u| u - 0.5));
            set(&format!("{path}.running_mean"), t(5002 + 10 * k, |u| (u - 0.5) * 0.2));
            set(&format!("{path}.running_var"), t(5003 + 10 * k, |u| 0.5 + u));
        }
    }
}

/// The network of a registered architecture (`seed001`, `matterport-resnet50`, …).
pub fn network(name: &str) -> rpn_model::Network {
    name.parse::<rpn::Architecture>().expect("a registered architecture").network
}

/// What a network bench reports besides its time, for `cargo xtask bench`'s second table: the
/// convolutions' GFLOP per timed iteration (direct-convolution count, so Winograd layers show
/// as an effective rate), this process's peak resident memory, and the machine's FMA peak
/// measured with the same thread count. Kept in `$RPN_BENCH_DIR/{suite}_ours.json`, a JSON
/// array with one entry per row (a row measured again replaces its entry).
pub fn record_network_row(suite: &str, row: &str, gflop_per_iter: Option<f64>, threads: usize) {
    let dir = std::env::var_os("RPN_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/bench"));
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    // `VmHWM`: the high-water mark of resident memory, in kB (Linux).
    let peak_rss_mb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0);
    let report = serde_json::json!({
        "row": row,
        "gflop_per_iter": gflop_per_iter,
        "peak_rss_mb": peak_rss_mb,
        "fma_peak_gflops": rpn_kernels::fma_peak_gflops(threads),
        "threads": threads,
        "kernels": rpn_kernels::CpuIsa::active().name(),
    });
    // One entry per row: a suite with several rows calls this once for each.
    let path = dir.join(format!("{suite}_ours.json"));
    let mut rows: Vec<serde_json::Value> = std::fs::read_to_string(&path)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default();
    rows.retain(|r| r["row"] != row);
    rows.push(report);
    let text = serde_json::Value::Array(rows).to_string();
    if let Err(e) = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, text)) {
        eprintln!("cannot write {}: {e}", path.display());
    }
}
