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

/// Flattens boxes to `[x1, y1, x2, y2, …]`.
pub fn flat_xyxy(boxes: &[Bbox]) -> Vec<f32> {
    boxes.iter().flat_map(|b| b.to_xyxy()).collect()
}
