//! The markdown report: medians per cell, ratios, and the machine it ran on.

use super::idle::IdleResult;
use super::instructions::{InstructionsResult, PROTOCOLS};
use super::pgbench::{median, RunResult};
use super::targets::{Bench, Target};
use super::{Cell, Options};
use std::fmt::Write;
use std::process::Command;

struct Medians {
    tps: f64,
    mean_ms: f64,
    p99_ms: f64,
    failed: u64,
}

fn medians(runs: &[RunResult]) -> Medians {
    let pick = |f: fn(&RunResult) -> f64| median(&runs.iter().map(f).collect::<Vec<_>>());
    Medians {
        tps: pick(|r| r.tps),
        mean_ms: pick(|r| r.mean_ms),
        p99_ms: pick(|r| r.p99_ms),
        failed: runs.iter().map(|r| r.failed).sum(),
    }
}

fn of(cell: &Cell, target: Target) -> Option<Medians> {
    cell.results
        .iter()
        .find(|(t, _)| *t == target)
        .map(|(_, runs)| medians(runs))
}

fn ratio(a: Option<&Medians>, b: Option<&Medians>) -> String {
    match (a, b) {
        (Some(a), Some(b)) if b.tps > 0.0 => format!("{:.2}", a.tps / b.tps),
        _ => "–".into(),
    }
}

fn tps(m: Option<&Medians>) -> String {
    m.map_or("n/a".into(), |m| format!("{:.0}", m.tps))
}

fn latency(m: Option<&Medians>) -> String {
    m.map_or("n/a".into(), |m| format!("{:.2} / {:.2}", m.mean_ms, m.p99_ms))
}

/// One progress line per measured cell, on stderr while the benchmark runs.
pub fn cell_line(cell: &Cell) -> String {
    let mut line = format!(
        "{} {} c={}:",
        cell.workload.name(),
        cell.protocol.name(),
        cell.clients
    );
    for (target, runs) in &cell.results {
        let m = medians(runs);
        let _ = write!(
            line,
            " {} {:.0} tps (p99 {:.2} ms, {} failed);",
            target.name(),
            m.tps,
            m.p99_ms,
            m.failed
        );
    }
    line
}

pub fn render(
    bench: &Bench,
    options: &Options,
    cells: &[Cell],
    split: &[Cell],
    idle: Option<&IdleResult>,
    instructions: Option<&InstructionsResult>,
) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "## Run of {}\n", shell("date -u '+%Y-%m-%d %H:%M UTC'"));
    let _ = writeln!(
        out,
        "- machine: {} CPUs ({}), {}, kernel {}",
        shell("nproc"),
        shell("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'"),
        shell("free -g | awk '/Mem:/ {print $2 \" GiB RAM\"}'"),
        shell("uname -r")
    );
    let _ = writeln!(
        out,
        "- PostgreSQL {} ({}, fsync off, on loopback); {} ({}); tidepool {} ({}, {})",
        bench.postgres_version,
        if bench.tidepool_split.is_some() {
            "primary + 2 streaming standbys"
        } else {
            "primary only"
        },
        bench.pgbouncer_version,
        bench.proxies.pgbouncer.display(),
        env!("CARGO_PKG_VERSION"),
        shell("git rev-parse --short HEAD 2>/dev/null || echo unknown"),
        bench.proxies.tidepool.display(),
    );
    let _ = writeln!(
        out,
        "- Pool size {} for both poolers, transaction mode, SCRAM-SHA-256 client auth (and SCRAM to \
         PostgreSQL); PgBouncer with max_prepared_statements = 200; pgbench scale {}.",
        options.pool_size, options.scale
    );
    if !cells.is_empty() {
        let _ = writeln!(
            out,
            "- pgbench -j 2, {} s per run, {} run(s) per cell, targets interleaved; medians quoted. \
             Latency columns: mean / p99 in ms, from pgbench's per-transaction log.",
            options.duration.as_secs(),
            options.runs,
        );
    }
    let _ = writeln!(out);
    render_matrix(&mut out, cells);
    render_split(&mut out, split);
    if let Some(idle) = idle {
        render_idle(&mut out, idle);
    }
    if let Some(instructions) = instructions {
        render_instructions(&mut out, instructions);
    }
    out
}

fn render_matrix(out: &mut String, cells: &[Cell]) {
    if cells.is_empty() {
        return;
    }

    let _ = writeln!(
        out,
        "| workload | protocol | clients | direct TPS | PgBouncer TPS | tidepool TPS | tidepool/PgBouncer | \
         tidepool/direct | direct ms | PgBouncer ms | tidepool ms | failed (d/p/t) |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for cell in cells {
        let d = of(cell, Target::Direct);
        let p = of(cell, Target::PgBouncer);
        let t = of(cell, Target::Tidepool);
        let failed = |m: &Option<Medians>| m.as_ref().map_or("–".into(), |m| m.failed.to_string());
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {}/{}/{} |",
            cell.workload.name(),
            cell.protocol.name(),
            cell.clients,
            tps(d.as_ref()),
            tps(p.as_ref()),
            tps(t.as_ref()),
            ratio(t.as_ref(), p.as_ref()),
            ratio(t.as_ref(), d.as_ref()),
            latency(d.as_ref()),
            latency(p.as_ref()),
            latency(t.as_ref()),
            failed(&d),
            failed(&p),
            failed(&t),
        );
    }
    if cells.iter().any(|c| of(c, Target::PgBouncer).is_none()) {
        let _ = writeln!(
            out,
            "\nn/a: PgBouncer before 1.21 cannot run `-M prepared` in transaction mode, so those \
             cells compare tidepool with a direct connection only."
        );
    }
}

fn render_split(out: &mut String, split: &[Cell]) {
    if !split.is_empty() {
        let _ = writeln!(
            out,
            "\n### Read/write split (select-only, extended protocol)\n\n\
             tidepool with the primary and both standbys as nodes, reads spread over the standbys, \
             against tidepool in front of the primary alone and a direct connection to the primary.\n"
        );
        let _ = writeln!(
            out,
            "| clients | direct TPS | tidepool (primary) TPS | tidepool (split) TPS | split/primary | split ms |"
        );
        let _ = writeln!(out, "|---:|---:|---:|---:|---:|---:|");
        for cell in split {
            let d = of(cell, Target::Direct);
            let t = of(cell, Target::Tidepool);
            let s = of(cell, Target::TidepoolSplit);
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                cell.clients,
                tps(d.as_ref()),
                tps(t.as_ref()),
                tps(s.as_ref()),
                ratio(s.as_ref(), t.as_ref()),
                latency(s.as_ref()),
            );
        }
    }
}

fn render_idle(out: &mut String, idle: &IdleResult) {
    let _ = writeln!(
        out,
        "\n### Idle clients\n\n{} idle authenticated (SCRAM) connections; growth of the proxy's RSS \
         divided by the number of connections.\n",
        idle.clients
    );
    let _ = writeln!(
        out,
        "| proxy | RSS before (KiB) | RSS after (KiB) | bytes per idle client |\n|---|---:|---:|---:|"
    );
    for row in &idle.rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.0} |",
            row.target.name(),
            row.before / 1024,
            row.after / 1024,
            row.per_client()
        );
    }
    if let (Some(p), Some(t)) = (
        idle.per_client(Target::PgBouncer),
        idle.per_client(Target::Tidepool),
    ) {
        if p > 0.0 {
            let _ = writeln!(out, "\ntidepool / PgBouncer: {:.1}×", t / p);
        }
    }
}

fn render_instructions(out: &mut String, instructions: &InstructionsResult) {
    let _ = writeln!(
        out,
        "\n### Instructions per forwarded query\n\nvalgrind --tool=callgrind, select-only, 4 clients; \
         (instructions over 2N transactions − over N) / N, N = {}.\n",
        instructions.transactions
    );
    let _ = writeln!(
        out,
        "| protocol | PgBouncer | tidepool | tidepool / PgBouncer |\n|---|---:|---:|---:|"
    );
    for protocol in PROTOCOLS {
        let p = instructions.get(protocol, Target::PgBouncer);
        let t = instructions.get(protocol, Target::Tidepool);
        let show = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:.0}"));
        let ratio = match (t, p) {
            (Some(t), Some(p)) if p > 0.0 => format!("{:.2}", t / p),
            _ => "–".into(),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {ratio} |",
            protocol.name(),
            show(p),
            show(t)
        );
    }
}

fn shell(script: &str) -> String {
    Command::new("sh")
        .args(["-c", script])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}
