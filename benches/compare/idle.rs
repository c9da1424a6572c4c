//! Memory per idle client: open N authenticated connections that then do nothing, and read the
//! proxy's resident set size before and after.

use super::targets::{Bench, Target, DATABASE, PASSWORD, USER};
use futures_util::stream::{self, StreamExt};
use std::time::Duration;

/// RSS growth per idle connection, per proxy.
pub struct IdleResult {
    pub clients: usize,
    pub per_client_bytes: Vec<(Target, f64)>,
}

pub fn measure(bench: &Bench, clients: usize) -> Result<IdleResult, String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let mut per_client_bytes = Vec::new();
    for target in [Target::PgBouncer, Target::Tidepool] {
        let pid = bench
            .proxy_pid(target)
            .ok_or_else(|| format!("no pid for {}", target.name()))?;
        let before = rss_bytes(pid)?;
        let connections = runtime.block_on(open_idle(bench, target, clients))?;
        // Let both settle (buffers returned, timers armed) before reading.
        std::thread::sleep(Duration::from_secs(2));
        let after = rss_bytes(pid)?;
        let per_client = after.saturating_sub(before) as f64 / clients as f64;
        eprintln!(
            "compare: {} idle clients on {}: RSS {} KiB -> {} KiB ({per_client:.0} B each)",
            clients,
            target.name(),
            before / 1024,
            after / 1024
        );
        per_client_bytes.push((target, per_client));
        runtime.block_on(async move { drop(connections) });
        std::thread::sleep(Duration::from_secs(1));
    }
    Ok(IdleResult {
        clients,
        per_client_bytes,
    })
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
