//! The crate DAG of `docs/ARCHITECTURE.md`, enforced from `cargo metadata`.
//!
//! Three rules:
//! 1. an internal edge (normal, build or dev dependency between workspace crates) must be listed
//!    in [`ALLOWED`], and every listed edge must exist (an allowed edge nobody uses is a stale
//!    promise); a crate missing from the table is an error too, so a new crate has to be placed in
//!    the architecture before it builds in CI;
//! 2. the box-math crates never reach candle, not even transitively: they run in data loaders
//!    and in programs that only want NMS;
//! 3. the DAG drawn in docs/ARCHITECTURE.md (the `crate ──► deps` lines of its "The crate DAG"
//!    block) is exactly [`ALLOWED`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use serde_json::Value;

/// Internal crate → the internal crates it may depend on.
const ALLOWED: &[(&str, &[&str])] = &[
    ("rpn-anchors", &[]),
    ("rpn-targets", &["rpn-anchors"]),
    ("rpn-proposals", &["rpn-anchors"]),
    ("rpn-loss", &[]),
    ("rpn-kernels", &[]),
    ("rpn-model", &["rpn-kernels"]),
    ("rpn-io", &[]),
    ("rpn-keras", &["rpn-model", "rpn-io"]),
    ("rpn-torch", &["rpn-model", "rpn-io"]),
    ("rpn", &["rpn-anchors", "rpn-targets", "rpn-proposals", "rpn-loss", "rpn-model", "rpn-io"]),
    (
        "rpn-cli",
        &["rpn", "rpn-anchors", "rpn-proposals", "rpn-model", "rpn-keras", "rpn-torch", "rpn-io"],
    ),
    ("rpn-tests", &["*"]),
    ("xtask", &[]),
];

/// Crates that must not depend on candle, directly or transitively.
const NO_CANDLE: &[&str] = &["rpn-anchors", "rpn-targets", "rpn-proposals", "rpn-kernels"];

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

    // Rule 1, the other way: every allowed edge is used.
    for &(krate, deps) in ALLOWED {
        let used: BTreeSet<&str> =
            graph.get(krate).map(Vec::as_slice).unwrap_or_default().iter().map(|e| e.0).collect();
        for dep in deps.iter().filter(|d| **d != "*") {
            if !used.contains(dep) {
                errors.push(format!(
                    "`{krate}` may depend on `{dep}` (xtask/src/deps.rs) but does not: remove the edge"
                ));
            }
        }
    }

    // Rule 3: the drawing in docs/ARCHITECTURE.md is the table.
    match documented_edges(root) {
        Ok(drawn) => errors.extend(compare_with_table(&drawn)),
        Err(e) => errors.push(e),
    }

    if errors.is_empty() {
        eprintln!("    dependency DAG ok ({} workspace crates)", internal.len());
        Ok(())
    } else {
        Err(format!("dependency DAG violated:\n  - {}", errors.join("\n  - ")))
    }
}

/// The edges drawn in docs/ARCHITECTURE.md: in the first ```text block after the heading
/// `## The crate DAG`, each line `crate ──► a, b` (or `crate ──► (nothing internal)`); text in
/// parentheses is a comment.
fn documented_edges(root: &Path) -> Result<BTreeMap<String, BTreeSet<String>>, String> {
    let path = root.join("docs/ARCHITECTURE.md");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse_drawn_edges(&text).map_err(|e| format!("{}: {e}", path.display()))
}

fn parse_drawn_edges(text: &str) -> Result<BTreeMap<String, BTreeSet<String>>, String> {
    let after = text.split_once("## The crate DAG").ok_or("no `## The crate DAG` section")?.1;
    let block = after
        .split_once("```text\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .ok_or("no ```text block in `## The crate DAG`")?
        .0;
    let mut edges = BTreeMap::new();
    for line in block.lines().filter(|l| l.contains("──►")) {
        let (from, to) = line.split_once("──►").unwrap_or_default();
        let from = from.trim().to_owned();
        // Drop comments in parentheses: `(candle)`, `(nothing internal)`.
        let mut deps = String::new();
        let mut depth = 0usize;
        for c in to.chars() {
            match c {
                '(' => depth += 1,
                ')' => depth = depth.saturating_sub(1),
                _ if depth == 0 => deps.push(c),
                _ => {}
            }
        }
        let deps: BTreeSet<String> =
            deps.split(',').map(str::trim).filter(|d| !d.is_empty()).map(str::to_owned).collect();
        if edges.insert(from.clone(), deps).is_some() {
            return Err(format!("crate `{from}` is drawn twice"));
        }
    }
    if edges.is_empty() {
        return Err("the DAG block has no `crate ──► deps` lines".into());
    }
    Ok(edges)
}

/// Differences between the drawn DAG and [`ALLOWED`] (the tests package and xtask are not drawn).
fn compare_with_table(drawn: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut errors = Vec::new();
    for &(krate, deps) in ALLOWED.iter().filter(|(k, _)| !matches!(*k, "rpn-tests" | "xtask")) {
        let table: BTreeSet<String> = deps.iter().map(|d| (*d).to_owned()).collect();
        match drawn.get(krate) {
            None => errors.push(format!("docs/ARCHITECTURE.md does not draw `{krate}`")),
            Some(d) if *d != table => errors.push(format!(
                "docs/ARCHITECTURE.md draws `{krate} ──► {}`, xtask/src/deps.rs allows {}",
                d.iter().cloned().collect::<Vec<_>>().join(", "),
                table.iter().cloned().collect::<Vec<_>>().join(", ")
            )),
            Some(_) => {}
        }
    }
    for krate in drawn.keys() {
        if !ALLOWED.iter().any(|(k, _)| k == krate) {
            errors.push(format!("docs/ARCHITECTURE.md draws `{krate}`, which the table lacks"));
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drawing(lines: &str) -> String {
        format!("# A\n## The crate DAG\n\n```text\n{lines}```\n")
    }

    #[test]
    fn the_documented_dag_is_the_table() {
        let root = crate::workspace_root();
        let drawn = documented_edges(&root).expect("ARCHITECTURE.md has the DAG block");
        assert_eq!(compare_with_table(&drawn), Vec::<String>::new());
    }

    #[test]
    fn a_drawn_edge_missing_from_the_table_is_reported() {
        let mut drawn = parse_drawn_edges(&drawing(
            "rpn-anchors ──► (nothing internal)\nrpn-model ──► rpn-anchors (wrong)\n",
        ))
        .expect("parses");
        assert_eq!(drawn["rpn-anchors"], BTreeSet::new());
        assert_eq!(drawn["rpn-model"], BTreeSet::from(["rpn-anchors".to_owned()]));
        let errors = compare_with_table(&drawn);
        assert!(
            errors.iter().any(|e| e.contains("draws `rpn-model ──► rpn-anchors`")),
            "{errors:?}"
        );
        assert!(errors.iter().any(|e| e.contains("does not draw `rpn-targets`")), "{errors:?}");
        drawn.insert("rpn-extra".into(), BTreeSet::new());
        assert!(compare_with_table(&drawn).iter().any(|e| e.contains("rpn-extra")));
    }

    #[test]
    fn drawings_without_edges_are_refused() {
        assert!(parse_drawn_edges("no section").is_err());
        assert!(parse_drawn_edges(&drawing("just text\n")).is_err());
        assert!(parse_drawn_edges(&drawing("a ──► b\na ──► c\n")).is_err());
    }
}
