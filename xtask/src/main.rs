//! Project automation, run as `cargo xtask <command>` (alias in `.cargo/config.toml`).
//!
//! - `test-all`: every check CI runs, cheapest first; stops at the first failing step and names it.
//! - `deps`: the crate dependency-DAG check alone.
//! - `oracles`: installs the Python peers (torch, torchvision, tf-keras, Matterport's `mrcnn`) into
//!   `target/oracles-venv`; only needed to regenerate fixtures or to run `bench`.
//! - `fixtures`: regenerates the golden fixtures under `tests/fixtures/` with the peers.
//! - `fuzz [--cases N]`: the property tests of the library crates with N cases per property
//!   (default 10,000; CI runs each with its small default) — arbitrary sizes, NaN and infinite
//!   values, hostile headers; every property includes "never panics".
//! - `bench [SUITE…] [--rounds N]`: runs the peers' timing scripts and our criterion benches on
//!   the same inputs, and prints the side-by-side table; with `--rounds N` peers and ours
//!   alternate N times and the table gives the median speed-up and its range (steadier on a
//!   shared host).

mod bench;
mod deps;
mod python;
mod tidy;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

const USAGE: &str =
    "usage: cargo xtask <test-all|deps|oracles|fixtures|bench [SUITE…] [--rounds N]|fuzz [--cases N]> [--help]";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("test-all") => test_all(),
        Some("deps") => deps::check(&workspace_root()),
        Some("oracles") => python::install_oracles(&workspace_root()),
        Some("fixtures") => python::regenerate_fixtures(&workspace_root()),
        Some("bench") => bench::side_by_side(&workspace_root(), &args[1..]),
        Some("fuzz") => fuzz(&workspace_root(), &args[1..]),
        Some("--help" | "-h" | "help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Some(other) => Err(format!("unknown command `{other}`\n{USAGE}")),
        None => Err(USAGE.to_owned()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: {message}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root: xtask lives one level below it.
pub(crate) fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// A `cargo` command in the workspace root, with the same flags for every step so that steps
/// share build artefacts instead of invalidating each other.
pub(crate) fn cargo(root: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(root).args(args);
    cmd.env("RUSTFLAGS", "-D warnings");
    cmd.env("RUSTDOCFLAGS", "-D warnings -D rustdoc::broken_intra_doc_links");
    if std::env::var_os("CARGO_BUILD_JOBS").is_none() {
        cmd.env("CARGO_BUILD_JOBS", "2");
    }
    cmd
}

/// Runs a command, echoing it, and turns a non-zero exit into an error naming it.
pub(crate) fn run(cmd: &mut Command) -> Result<(), String> {
    let shown = format!(
        "{} {}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args().map(|a| a.to_string_lossy()).collect::<Vec<_>>().join(" ")
    );
    eprintln!("    $ {shown}");
    let status = cmd.status().map_err(|e| format!("could not start `{shown}`: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{shown}` failed with {status}"))
    }
}

/// Workspace members that are libraries or binaries of the product (not xtask, not the tests package).
fn product_crates(root: &Path) -> Result<Vec<String>, String> {
    let mut names = Vec::new();
    let crates = root.join("crates");
    let entries =
        std::fs::read_dir(&crates).map_err(|e| format!("cannot list {}: {e}", crates.display()))?;
    for entry in entries.flatten() {
        if entry.path().join("Cargo.toml").is_file() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Crates whose property tests `fuzz` runs (every property includes "no panic").
const FUZZED: &[&str] =
    &["rpn-anchors", "rpn-targets", "rpn-proposals", "rpn-io", "rpn-keras", "rpn"];

/// `cargo xtask fuzz [--cases N]`: the property tests with N cases each (default 10,000).
fn fuzz(root: &Path, args: &[String]) -> Result<(), String> {
    let cases = match args {
        [] => 10_000,
        [flag, n] if flag == "--cases" => n
            .parse::<u32>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("--cases `{n}` is not a positive whole number\n{USAGE}"))?,
        _ => return Err(format!("fuzz takes `--cases N` only\n{USAGE}")),
    };
    let mut cmd = cargo(root, &["test", "--locked", "--lib"]);
    for name in FUZZED {
        cmd.args(["-p", name]);
    }
    cmd.env("PROPTEST_CASES", cases.to_string());
    eprintln!("==> fuzz: property tests of {} with {cases} cases each", FUZZED.join(", "));
    let started = Instant::now();
    run(&mut cmd)?;
    eprintln!("==> fuzz: passed in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// One step of `test-all`: runs and says what failed.
type Step<'a> = Box<dyn Fn() -> Result<(), String> + 'a>;

fn test_all() -> Result<(), String> {
    let root = workspace_root();
    let crates = product_crates(&root)?;
    let mut steps: Vec<(String, Step<'_>)> = vec![
        ("fmt".into(), Box::new(|| run(&mut cargo(&root, &["fmt", "--all", "--", "--check"])))),
        ("tidy".into(), Box::new(|| tidy::check(&root))),
        ("deps".into(), Box::new(|| deps::check(&root))),
        (
            "clippy".into(),
            Box::new(|| {
                run(&mut cargo(
                    &root,
                    &["clippy", "--workspace", "--all-targets", "--locked", "--", "-D", "warnings"],
                ))
            }),
        ),
    ];
    for name in &crates {
        let root = root.clone();
        let name = name.clone();
        // Alone: only this crate's own dependency features, so a crate that silently relies on a
        // feature another crate enables fails here. Includes its unit, integration and doc tests.
        steps.push((
            format!("test {name} alone"),
            Box::new(move || run(&mut cargo(&root, &["test", "--locked", "-p", &name]))),
        ));
    }
    // Optional features that CPU-only CI can build (GPU features are compile-gated elsewhere).
    steps.push((
        "features".into(),
        Box::new(|| {
            run(&mut cargo(
                &root,
                &["check", "--locked", "-p", "rpn-anchors", "--features", "serde"],
            ))
        }),
    ));
    steps.push((
        "doc".into(),
        Box::new(|| {
            run(&mut cargo(
                &root,
                &["doc", "--workspace", "--no-deps", "--locked", "--exclude", "xtask"],
            ))
        }),
    ));
    steps.push((
        "xtask".into(),
        Box::new(|| run(&mut cargo(&root, &["test", "--locked", "-p", "xtask"]))),
    ));
    steps.push((
        "tests package".into(),
        Box::new(|| run(&mut cargo(&root, &["test", "--locked", "-p", "rpn-tests"]))),
    ));

    let started = Instant::now();
    let total = steps.len();
    for (i, (name, step)) in steps.iter().enumerate() {
        eprintln!("==> [{}/{total}] {name}", i + 1);
        let t = Instant::now();
        step().map_err(|e| format!("step `{name}` failed: {e}"))?;
        eprintln!("    ok: {name} ({:.1} s)", t.elapsed().as_secs_f64());
    }
    eprintln!("==> test-all: {total} steps passed in {:.1} s", started.elapsed().as_secs_f64());
    Ok(())
}
