//! The crate DAG of `docs/ARCHITECTURE.md`, enforced from `cargo metadata`.
//!
//! Two rules:
//! 1. an internal edge (normal, build or dev dependency between workspace crates) must be listed
//!    in [`ALLOWED`]; a crate missing from the table is an error too, so a new crate has to be
//!    placed in the architecture before it builds in CI;
//! 2. the box-math crates never reach candle, not even transitively: they run in data loaders
//!    and in programs that only want NMS.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// Internal crate → the internal crates it may depend on.
const ALLOWED: &[(&str, &[&str])] = &[
    ("rpn-anchors", &[]),
    ("rpn-targets", &["rpn-anchors"]),
    ("rpn-proposals", &["rpn-anchors"]),
    ("rpn-loss", &["rpn-targets", "rpn-anchors"]),
    ("rpn-model", &[]),
    ("rpn-keras", &["rpn-model"]),
    ("rpn", &["rpn-anchors", "rpn-targets", "rpn-proposals", "rpn-loss", "rpn-model", "rpn-keras"]),
    (
        "rpn-cli",
        &[
            "rpn",
            "rpn-anchors",
            "rpn-targets",
            "rpn-proposals",
            "rpn-loss",
            "rpn-model",
            "rpn-keras",
        ],
    ),
    ("rpn-tests", &["*"]),
    ("xtask", &[]),
];

/// Crates that must not depend on candle, directly or transitively.
const NO_CANDLE: &[&str] = &["rpn-anchors", "rpn-targets", "rpn-proposals"];

/// Runs both checks and reports every violation at once.
pub(crate) fn check(root: &Path) -> Result<(), String> {
    let output = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(root)
        .args(["metadata", "--format-version", "1", "--locked"])
        .output()
        .map_err(|e| format!("cannot run cargo metadata: {e}"))?;
    if !output.status.success() {
        return Err(format!("cargo metadata failed: {}", String::from_utf8_lossy(&output.stderr)));
    }
    let meta: Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("cargo metadata output: {e}"))?;
    let members: BTreeSet<&str> = meta["workspace_members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();

    let mut names: BTreeMap<&str, &str> = BTreeMap::new(); // package id → name
    let mut internal = BTreeSet::new();
    for pkg in meta["packages"].as_array().into_iter().flatten() {
        let (Some(id), Some(name)) = (pkg["id"].as_str(), pkg["name"].as_str()) else { continue };
        names.insert(id, name);
        if members.contains(id) {
            internal.insert(name);
        }
    }
    let allowed: BTreeMap<&str, &[&str]> = ALLOWED.iter().copied().collect();
    let mut errors = Vec::new();

    // Rule 1: direct internal edges, from the resolved graph (all dependency kinds).
    let mut graph: BTreeMap<&str, Vec<(&str, bool)>> = BTreeMap::new(); // name → (dep name, is normal/build)
    for node in meta["resolve"]["nodes"].as_array().into_iter().flatten() {
        let Some(from) = node["id"].as_str().and_then(|id| names.get(id)).copied() else {
            continue;
        };
        for dep in node["deps"].as_array().into_iter().flatten() {
            let Some(to) = dep["pkg"].as_str().and_then(|id| names.get(id)).copied() else {
                continue;
            };
            let kinds = dep["dep_kinds"].as_array().into_iter().flatten();
            let runtime = kinds.clone().any(|k| k["kind"].as_str() != Some("dev"));
            graph.entry(from).or_default().push((to, runtime));
        }
    }
    for &krate in &internal {
        let Some(ok) = allowed.get(krate) else {
            errors.push(format!(
                "crate `{krate}` is not in the allowed-edges table (xtask/src/deps.rs); place it in docs/ARCHITECTURE.md first"
            ));
            continue;
        };
        for &(dep, _) in graph.get(krate).map(Vec::as_slice).unwrap_or_default() {
            if internal.contains(dep) && !ok.contains(&dep) && !ok.contains(&"*") {
                errors.push(format!(
                    "`{krate}` depends on `{dep}`, which the DAG does not allow (allowed: {ok:?})"
                ));
            }
        }
    }

    // Rule 2: no candle in the transitive runtime closure of the box-math crates.
    for &krate in NO_CANDLE.iter().filter(|k| internal.contains(*k)) {
        let mut stack = vec![(krate, vec![krate])];
        let mut seen = BTreeSet::new();
        while let Some((at, path)) = stack.pop() {
            if !seen.insert(at) {
                continue;
            }
            for &(dep, runtime) in graph.get(at).map(Vec::as_slice).unwrap_or_default() {
                if !runtime {
                    continue;
                }
                let mut next = path.clone();
                next.push(dep);
                if dep.starts_with("candle") {
                    errors.push(format!("`{krate}` reaches candle: {}", next.join(" -> ")));
                } else {
                    stack.push((dep, next));
                }
            }
        }
    }

    if errors.is_empty() {
        eprintln!("    dependency DAG ok ({} workspace crates)", internal.len());
        Ok(())
    } else {
        Err(format!("dependency DAG violated:\n  - {}", errors.join("\n  - ")))
    }
}
