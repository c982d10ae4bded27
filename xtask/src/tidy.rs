//! Source hygiene that rustc and clippy do not check.

use std::path::{Path, PathBuf};

/// Macros that mean "not finished" or "debugging left in".
const FORBIDDEN: &[&str] = &["todo!(", "unimplemented!(", "dbg!("];

/// Fails on forbidden macros in Rust sources and on crates that do not inherit the workspace lints.
pub(crate) fn check(root: &Path) -> Result<(), String> {
    let mut problems = Vec::new();
    let mut files = Vec::new();
    for dir in ["crates", "tests", "xtask"] {
        collect_rs(&root.join(dir), &mut files);
    }
    for file in &files {
        // xtask's own table of forbidden strings is not a use of them.
        if file.ends_with("xtask/src/tidy.rs") {
            continue;
        }
        let text = std::fs::read_to_string(file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        for (n, line) in text.lines().enumerate() {
            for bad in FORBIDDEN {
                if line.contains(bad) {
                    problems.push(format!("{}:{}: `{bad}..)` left in", rel(root, file), n + 1));
                }
            }
        }
    }
    for manifest in manifests(root) {
        let text = std::fs::read_to_string(&manifest)
            .map_err(|e| format!("cannot read {}: {e}", manifest.display()))?;
        if !text.contains("[lints]\nworkspace = true") {
            problems.push(format!("{}: add `[lints] workspace = true`", rel(root, &manifest)));
        }
        if text.lines().any(|l| l.contains("path = \"..") && l.contains("../..")) {
            problems
                .push(format!("{}: path dependency outside the workspace", rel(root, &manifest)));
        }
    }
    if problems.is_empty() {
        eprintln!("    tidy ok ({} Rust files)", files.len());
        Ok(())
    } else {
        Err(format!("tidy:\n  - {}", problems.join("\n  - ")))
    }
}

fn rel(root: &Path, p: &Path) -> String {
    p.strip_prefix(root).unwrap_or(p).display().to_string()
}

fn manifests(root: &Path) -> Vec<PathBuf> {
    let mut out = vec![root.join("tests/Cargo.toml"), root.join("xtask/Cargo.toml")];
    if let Ok(entries) = std::fs::read_dir(root.join("crates")) {
        out.extend(entries.flatten().map(|e| e.path().join("Cargo.toml")).filter(|p| p.is_file()));
    }
    out
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_rs(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}
