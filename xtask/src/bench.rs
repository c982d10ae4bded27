//! `cargo xtask bench [SUITE…]`: peers and our criterion benches on the same inputs, one table.
//!
//! For each suite: the peer script times the Python peers (threads pinned to 2) and writes the
//! inputs plus the peers' outputs to `target/bench/`; the criterion bench reads them, checks our
//! outputs equal the peers' (it panics before timing otherwise), and times ours. The table reads
//! criterion's median estimates and the peers' medians.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use crate::{cargo, python, run};

struct Suite {
    /// Name on the command line and criterion group name.
    name: &'static str,
    /// Peer timing script, relative to the workspace root.
    peer_script: &'static str,
    /// Package and bench target.
    package: &'static str,
    bench: &'static str,
    /// File the peer script writes its timings to, inside `target/bench`.
    peers_json: &'static str,
}

const SUITES: &[Suite] = &[
    Suite {
        name: "anchors",
        peer_script: "crates/rpn-anchors/benches/anchors_peers.py",
        package: "rpn-anchors",
        bench: "anchors",
        peers_json: "anchors_peers.json",
    },
    Suite {
        name: "targets",
        peer_script: "crates/rpn-targets/benches/targets_peers.py",
        package: "rpn-targets",
        bench: "targets",
        peers_json: "targets_peers.json",
    },
    Suite {
        name: "proposals",
        peer_script: "crates/rpn-proposals/benches/proposals_peers.py",
        package: "rpn-proposals",
        bench: "proposals",
        peers_json: "proposals_peers.json",
    },
    Suite {
        name: "seed_forward",
        peer_script: "tests/benches/seed_forward_peers.py",
        package: "rpn-tests",
        bench: "seed_forward",
        peers_json: "seed_forward_peers.json",
    },
    Suite {
        name: "train_step",
        peer_script: "tests/benches/train_step_peers.py",
        package: "rpn-tests",
        bench: "train_step",
        peers_json: "train_step_peers.json",
    },
    Suite {
        name: "matterport",
        peer_script: "tests/benches/matterport_peers.py",
        package: "rpn-tests",
        bench: "matterport",
        peers_json: "matterport_peers.json",
    },
    Suite {
        name: "torchvision",
        peer_script: "tests/benches/torchvision_peers.py",
        package: "rpn-tests",
        bench: "torchvision",
        peers_json: "torchvision_peers.json",
    },
];

/// One timed operation of one round: a peer's median and our criterion median.
struct Measured {
    op: String,
    peer: String,
    peer_ms: f64,
    ours_ms: Option<f64>,
}

pub(crate) fn side_by_side(root: &Path, args: &[String]) -> Result<(), String> {
    let (names, rounds) = parse_args(args)?;
    let selected: Vec<&Suite> =
        SUITES.iter().filter(|s| names.is_empty() || names.iter().any(|a| a == s.name)).collect();
    if selected.is_empty() {
        let names: Vec<_> = SUITES.iter().map(|s| s.name).collect();
        return Err(format!("no bench suite named {args:?}; suites: {names:?}"));
    }
    let out_dir = root.join("target").join("bench");
    std::fs::create_dir_all(&out_dir)
        .map_err(|e| format!("cannot create {}: {e}", out_dir.display()))?;

    let mut table = format!("{}\n\n", machine_line());
    let mut networks = String::new();
    let mut peer_memory = String::new();
    let ratio_header = if rounds > 1 { " | range over rounds" } else { "" };
    let _ = writeln!(
        table,
        "| suite | operation | peer | peer ms | ours ms | speed-up{ratio_header} |\n|---|---|---|---:|---:|---:|{}",
        if rounds > 1 { "---:|" } else { "" }
    );
    for suite in selected {
        // Peers and ours alternate round by round, so that a busy spell of a shared host
        // slows both sides of some round rather than one side of every round.
        let mut measured = Vec::with_capacity(rounds);
        for round in 1..=rounds {
            eprintln!("==> {}: peers (round {round} of {rounds})", suite.name);
            run(python::python_command(root, &root.join(suite.peer_script))?.arg(&out_dir))?;
            eprintln!("==> {}: ours, criterion (round {round} of {rounds})", suite.name);
            run(cargo(root, &["bench", "-p", suite.package, "--bench", suite.bench])
                .env("RPN_BENCH_DIR", &out_dir))?;
            measured.push(measure(root, suite)?);
        }
        append_rows(suite, &measured, &mut table);
        append_network_row(root, suite, &mut networks);
        append_peer_memory(root, suite, &mut peer_memory);
    }
    if !networks.is_empty() {
        table.push_str(
            "\n| suite | our row | our kernels | conv GFLOP | ours GFLOP/s | FMA peak GFLOP/s | % of peak | our peak RSS MB |\n|---|---|---|---:|---:|---:|---:|---:|\n",
        );
        table.push_str(&networks);
    }
    table.push_str(&peer_memory);
    println!("\n{table}");
    println!("Peers: median of repeated runs, 2 threads. Ours: criterion median; box math on 1 thread, networks on the 2 cores (rpn-kernels on CPU). Outputs checked equal first. GFLOP/s counts direct-convolution multiply-adds (Winograd layers do fewer), the FMA peak is measured by rpn_kernels::fma_peak_gflops on the same threads.");
    if rounds > 1 {
        println!("{rounds} rounds, peers and ours alternating: times are the medians over rounds, the speed-up is the median of the rounds' speed-ups, the range their lowest and highest; the GFLOP/s row is the last round's.");
    }
    let summary = out_dir.join("summary.md");
    std::fs::write(&summary, &table)
        .map_err(|e| format!("cannot write {}: {e}", summary.display()))?;
    eprintln!("table written to {}", summary.display());
    Ok(())
}

/// Suite names and `--rounds N` (default 1).
fn parse_args(args: &[String]) -> Result<(Vec<String>, usize), String> {
    let mut names = Vec::new();
    let mut rounds = 1;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg == "--rounds" {
            let value = args.next().ok_or("--rounds needs a count, e.g. `--rounds 3`")?;
            rounds = value
                .parse()
                .ok()
                .filter(|&n: &usize| (1..=20).contains(&n))
                .ok_or_else(|| format!("--rounds {value:?}: expected a count from 1 to 20"))?;
        } else {
            names.push(arg.clone());
        }
    }
    Ok((names, rounds))
}

/// The CPU model, core count and the SIMD features that decide which kernels run: a ratio
/// measured on one machine is the claim, so every table says which machine.
fn machine_line() -> String {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |key: &str| {
        info.lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_owned())
    };
    let model = field("model name").unwrap_or_else(|| std::env::consts::ARCH.to_owned());
    let flags = field("flags").unwrap_or_default();
    let simd: Vec<&str> =
        ["sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_bf16", "amx_bf16"]
            .into_iter()
            .filter(|f| flags.split_whitespace().any(|g| g == *f))
            .collect();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    // A forced kernel family (rpn_kernels::CPU_ISA_ENV) changes what runs: say so.
    let forced =
        std::env::var("RPN_CPU_ISA").map(|v| format!("; RPN_CPU_ISA={v}")).unwrap_or_default();
    format!("Machine: {model}, {cores} cores; SIMD: {}{forced}", simd.join(" "))
}

fn read_json(path: &Path) -> Result<Value, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Criterion's median for `group/id`, in milliseconds (criterion stores `a/b` ids as `a_b`).
fn ours_ms(root: &Path, group: &str, id: &str) -> Option<f64> {
    let path = root
        .join("target/criterion")
        .join(group)
        .join(id.replace('/', "_"))
        .join("new/estimates.json");
    let ns = read_json(&path).ok()?["median"]["point_estimate"].as_f64()?;
    Some(ns / 1e6)
}

/// The second table's rows for a network suite: throughput against the measured FMA peak and
/// peak memory, from the `{suite}_ours.json` its bench writes (`rpn_tests::record_network_row`:
/// an array with one entry per row; a single object from older benches is one row).
fn append_network_row(root: &Path, suite: &Suite, rows: &mut String) {
    let Ok(reports) =
        read_json(&root.join("target/bench").join(format!("{}_ours.json", suite.name)))
    else {
        return;
    };
    let reports = match reports {
        Value::Array(list) => list,
        single => vec![single],
    };
    let cell =
        |v: Option<f64>, digits: usize| v.map_or("-".to_owned(), |v| format!("{v:.digits$}"));
    for report in &reports {
        let row = report["row"].as_str().unwrap_or("?");
        let peak = report["fma_peak_gflops"].as_f64();
        let gflop = report["gflop_per_iter"].as_f64();
        let rate = gflop.zip(ours_ms(root, suite.name, row)).map(|(g, ms)| g / (ms / 1e3));
        let share = rate.zip(peak).map(|(r, p)| 100.0 * r / p);
        let _ = writeln!(
            rows,
            "| {} | {row} | {} | {} | {} | {} | {} | {} |",
            suite.name,
            report["kernels"].as_str().unwrap_or("?"),
            cell(gflop, 1),
            cell(rate, 1),
            cell(peak, 0),
            cell(share, 0),
            cell(report["peak_rss_mb"].as_f64(), 0),
        );
    }
}

/// The peers' peak resident memory, where a suite's peer script measured it (each peer alone in
/// a fresh process: `peak_rss_mb` in its peers JSON), as one line under the tables.
fn append_peer_memory(root: &Path, suite: &Suite, lines: &mut String) {
    let Ok(peers) = read_json(&root.join("target/bench").join(suite.peers_json)) else { return };
    let Some(rss) = peers["peak_rss_mb"].as_object() else { return };
    let each: Vec<String> = rss
        .iter()
        .filter_map(|(peer, mb)| mb.as_f64().map(|mb| format!("{peer} {mb:.0}")))
        .collect();
    let _ =
        writeln!(lines, "\n{}: peers' peak RSS MB, each alone: {}", suite.name, each.join(", "));
}

/// This round's times: the peers' medians from their JSON, ours from criterion.
fn measure(root: &Path, suite: &Suite) -> Result<Vec<Measured>, String> {
    let peers = read_json(&root.join("target/bench").join(suite.peers_json))?;
    let ops =
        peers["ms"].as_object().ok_or_else(|| format!("{}: no `ms` object", suite.peers_json))?;
    let mut measured = Vec::new();
    for (op, by_peer) in ops {
        for (peer, ms) in by_peer.as_object().into_iter().flatten() {
            let Some(peer_ms) = ms.as_f64() else { continue };
            // Our bench id is `op/peer` when we run the peer's convention, else `op`.
            let ours_ms = ours_ms(root, suite.name, &format!("{op}/{peer}"))
                .or_else(|| ours_ms(root, suite.name, op));
            measured.push(Measured { op: op.clone(), peer: peer.clone(), peer_ms, ours_ms });
        }
    }
    Ok(measured)
}

/// The table's rows for a suite: per operation and peer, medians over the rounds.
fn append_rows(suite: &Suite, rounds: &[Vec<Measured>], table: &mut String) {
    let Some(first) = rounds.first() else { return };
    for m in first {
        // The same operation and peer in every round.
        let same: Vec<&Measured> = rounds
            .iter()
            .filter_map(|round| round.iter().find(|r| r.op == m.op && r.peer == m.peer))
            .collect();
        let peer_ms = median(same.iter().map(|r| r.peer_ms).collect());
        let ours: Vec<f64> = same.iter().filter_map(|r| r.ours_ms).collect();
        let ratios: Vec<f64> = same.iter().filter_map(|r| Some(r.peer_ms / r.ours_ms?)).collect();
        let (ours_text, ratio) = match (median(ours), median(ratios.clone())) {
            (Some(o), Some(r)) => (format!("{o:.3}"), format!("{r:.1}x")),
            _ => ("missing".into(), "-".into()),
        };
        let range = match (
            ratios.iter().copied().reduce(f64::min),
            ratios.iter().copied().reduce(f64::max),
        ) {
            (Some(lo), Some(hi)) if rounds.len() > 1 => format!(" {lo:.1}–{hi:.1}x |"),
            _ if rounds.len() > 1 => " - |".to_owned(),
            _ => String::new(),
        };
        let _ = writeln!(
            table,
            "| {} | {} | {} | {:.3} | {ours_text} | {ratio} |{range}",
            suite.name,
            m.op,
            m.peer,
            peer_ms.unwrap_or(f64::NAN),
        );
    }
}

/// The median (the mean of the middle two for an even count); `None` for no values.
fn median(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_even_and_no_values() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(Vec::new()), None);
    }

    #[test]
    fn rounds_are_parsed_and_bad_counts_named() {
        let args = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let (names, rounds) = parse_args(&args(&["seed_forward", "--rounds", "3"])).unwrap();
        assert_eq!((names, rounds), (vec!["seed_forward".to_owned()], 3));
        assert_eq!(parse_args(&args(&["anchors"])).unwrap().1, 1);
        let error = parse_args(&args(&["--rounds", "0"])).unwrap_err();
        assert!(error.contains("\"0\""), "{error}");
        assert!(parse_args(&args(&["--rounds"])).is_err());
    }
}
