//! One pgbench run and what we read from it: TPS from its summary, mean and p99 latency from its
//! per-transaction log, failures from both.

use super::targets::{Bench, Target, DATABASE, PASSWORD, USER};
use std::process::{Command, Stdio};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    SelectOnly,
    TpcbLike,
}

impl Workload {
    pub fn parse(s: &str) -> Result<Workload, String> {
        match s.trim() {
            "select" | "select-only" | "S" => Ok(Workload::SelectOnly),
            "tpcb" | "tpcb-like" => Ok(Workload::TpcbLike),
            other => Err(format!("unknown workload {other} (select, tpcb)")),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Workload::SelectOnly => "select-only",
            Workload::TpcbLike => "tpcb-like",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Simple,
    Extended,
    Prepared,
}

impl Protocol {
    pub fn parse(s: &str) -> Result<Protocol, String> {
        match s.trim() {
            "simple" => Ok(Protocol::Simple),
            "extended" => Ok(Protocol::Extended),
            "prepared" => Ok(Protocol::Prepared),
            other => Err(format!("unknown protocol {other} (simple, extended, prepared)")),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Protocol::Simple => "simple",
            Protocol::Extended => "extended",
            Protocol::Prepared => "prepared",
        }
    }
}

/// What one run measured.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub tps: f64,
    pub mean_ms: f64,
    pub p99_ms: f64,
    pub failed: u64,
}

/// Runs pgbench for `duration` and reads its summary and transaction log.
pub fn run(
    bench: &Bench,
    target: Target,
    workload: Workload,
    protocol: Protocol,
    clients: usize,
    duration: Duration,
) -> Result<RunResult, String> {
    let addr = bench.addr(target);
    let logs = tempfile::tempdir().map_err(|e| e.to_string())?;
    let prefix = logs.path().join("tx");
    let mut command = Command::new(bench.pgbench());
    command
        .args(["-n", "-j", "2", "-M", protocol.name()])
        .args([
            "-c",
            &clients.to_string(),
            "-T",
            &duration.as_secs().max(1).to_string(),
        ])
        .args([
            "-h",
            &addr.ip().to_string(),
            "-p",
            &addr.port().to_string(),
            "-U",
            USER,
        ])
        .arg("--log")
        .arg(format!("--log-prefix={}", prefix.display()))
        .env("PGPASSWORD", PASSWORD)
        .stdin(Stdio::null());
    if workload == Workload::SelectOnly {
        command.arg("-S");
    }
    command.arg(DATABASE);
    let output = command.output().map_err(|e| format!("pgbench: {e}"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let tps = summary_value(&stdout, "tps = ").ok_or_else(|| {
        format!(
            "pgbench against {} ({}, {}, {clients} clients) printed no tps: {stdout}{stderr}",
            target.name(),
            workload.name(),
            protocol.name()
        )
    })?;
    let failed = summary_value(&stdout, "number of failed transactions: ").unwrap_or(0.0) as u64;
    let mut latencies = read_latencies(logs.path())?;
    let (mean_ms, p99_ms) = mean_and_p99(&mut latencies);
    Ok(RunResult {
        tps,
        mean_ms,
        p99_ms,
        failed,
    })
}

/// The number after `key` on its summary line, e.g. `tps = 1234.5 (without …)`.
fn summary_value(stdout: &str, key: &str) -> Option<f64> {
    let line = stdout.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

/// Latencies (µs, third field) of every logged transaction, from every thread's file.
fn read_latencies(dir: &std::path::Path) -> Result<Vec<u64>, String> {
    let mut latencies = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| e.to_string())? {
        let path = entry.map_err(|e| e.to_string())?.path();
        let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        for line in text.lines() {
            // client_id transaction_no time script_no time_epoch time_us; failed ones say "failed".
            if let Some(us) = line.split_whitespace().nth(2).and_then(|f| f.parse::<u64>().ok()) {
                latencies.push(us);
            }
        }
    }
    Ok(latencies)
}

fn mean_and_p99(latencies: &mut [u64]) -> (f64, f64) {
    if latencies.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    latencies.sort_unstable();
    let mean = latencies.iter().sum::<u64>() as f64 / latencies.len() as f64;
    let index = ((latencies.len() as f64) * 0.99).ceil() as usize;
    let p99 = latencies[index.clamp(1, latencies.len()) - 1] as f64;
    (mean / 1000.0, p99 / 1000.0)
}

/// The median of `values` (mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted.sort_by(|a, b| a.total_cmp(b));
    let mid = sorted.len() / 2;
    if sorted.len() % 2 == 0 {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    } else {
        sorted[mid]
    }
}
