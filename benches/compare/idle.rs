//! Memory per idle client: open N authenticated connections that then do nothing, and read the
//! proxy's resident set size before and after.

use super::targets::{Bench, Target, DATABASE, PASSWORD, USER};
use futures_util::stream::{self, StreamExt};
use std::time::Duration;

/// RSS growth per idle connection, per proxy.
pub struct IdleResult {
    pub clients: usize,
    pub rows: Vec<IdleRow>,
}

/// One proxy's resident set size before and after the idle clients logged in.
pub struct IdleRow {
    pub target: Target,
    pub before: u64,
    pub after: u64,
    pub clients: usize,
}

impl IdleRow {
    pub fn per_client(&self) -> f64 {
        self.after.saturating_sub(self.before) as f64 / self.clients as f64
    }
}

impl IdleResult {
    pub fn per_client(&self, target: Target) -> Option<f64> {
        self.rows
            .iter()
            .find(|r| r.target == target)
            .map(IdleRow::per_client)
    }
}

pub fn measure(bench: &Bench, clients: usize) -> Result<IdleResult, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    for target in [Target::PgBouncer, Target::Tidepool] {
        let pid = bench
            .proxy_pid(target)
            .ok_or_else(|| format!("no pid for {}", target.name()))?;
        let before = rss_bytes(pid)?;
        let started = std::time::Instant::now();
        let connections = runtime.block_on(open_idle(bench, target, clients))?;
        let took = started.elapsed();
        // Let both settle (buffers returned, timers armed) before reading.
        std::thread::sleep(Duration::from_secs(2));
        let row = IdleRow {
            target,
            before,
            after: rss_bytes(pid)?,
            clients,
        };
        eprintln!(
            "compare: {} idle clients on {} (logged in in {:.1} s): RSS {} KiB -> {} KiB ({:.0} B each)",
            clients,
            target.name(),
            took.as_secs_f64(),
            row.before / 1024,
            row.after / 1024,
            row.per_client()
        );
        rows.push(row);
        runtime.block_on(async move { drop(connections) });
        std::thread::sleep(Duration::from_secs(1));
    }
    Ok(IdleResult { clients, rows })
}

async fn open_idle(
    bench: &Bench,
    target: Target,
    clients: usize,
) -> Result<Vec<tokio_postgres::Client>, String> {
    let addr = bench.addr(target);
    let conninfo = format!(
        "host={} port={} user={USER} password={PASSWORD} dbname={DATABASE}",
        addr.ip(),
        addr.port()
    );
    // A bounded number of logins in flight, so the accept backlog never overflows.
    let results: Vec<Result<tokio_postgres::Client, String>> = stream::iter(0..clients)
        .map(|_| {
            let conninfo = conninfo.clone();
            async move {
                let connect = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls);
                let (client, connection) = tokio::time::timeout(Duration::from_secs(30), connect)
                    .await
                    .map_err(|_| {
                        "a login took over 30 s (is the proxy out of file descriptors?)".to_string()
                    })?
                    .map_err(|e| e.to_string())?;
                tokio::spawn(connection);
                Ok(client)
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    results.into_iter().collect()
}

fn rss_bytes(pid: u32) -> Result<u64, String> {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| format!("pid {pid}: {e}"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or("no VmRSS line")?;
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .ok_or("bad VmRSS line")?;
    Ok(kib * 1024)
}
