//! Instructions per forwarded query, counted by valgrind's callgrind (repeatable on a noisy
//! machine, unlike time). Each proxy runs twice under callgrind per protocol, forwarding N and
//! then 2N select-only transactions from the same pgbench clients; the difference divided by N
//! leaves out start-up, logins and shutdown.

use super::pgbench::Protocol;
use super::targets::{start_pgbouncer, start_tidepool, Bench, Process, Target, DATABASE, PASSWORD, USER};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const CLIENTS: usize = 4;

/// The protocols measured: `-M prepared` adds little over extended for the proxy.
pub const PROTOCOLS: [Protocol; 2] = [Protocol::Simple, Protocol::Extended];

pub struct InstructionsResult {
    pub transactions: usize,
    /// Per protocol, per proxy: instructions per query.
    pub per_query: Vec<(Protocol, Target, f64)>,
}

impl InstructionsResult {
    pub fn get(&self, protocol: Protocol, target: Target) -> Option<f64> {
        self.per_query
            .iter()
            .find(|(p, t, _)| *p == protocol && *t == target)
            .map(|(_, _, v)| *v)
    }
}

pub fn measure(bench: &Bench, transactions: usize) -> Result<InstructionsResult, String> {
    if Command::new("valgrind").arg("--version").output().is_err() {
        return Err("valgrind is not installed (apt-get install valgrind)".into());
    }
    let transactions = transactions.max(CLIENTS);
    let mut per_query = Vec::new();
    for protocol in PROTOCOLS {
        for target in [Target::PgBouncer, Target::Tidepool] {
            let once = count(bench, target, protocol, transactions, "n")?;
            let twice = count(bench, target, protocol, 2 * transactions, "2n")?;
            let per = (twice as f64 - once as f64) / transactions as f64;
            eprintln!(
                "compare: {} instructions per select-only query, {} protocol: {per:.0}",
                target.name(),
                protocol.name()
            );
            per_query.push((protocol, target, per));
        }
    }
    Ok(InstructionsResult {
        transactions,
        per_query,
    })
}

/// Total instructions the proxy executed over its life while forwarding `transactions`.
fn count(
    bench: &Bench,
    target: Target,
    protocol: Protocol,
    transactions: usize,
    label: &str,
) -> Result<u64, String> {
    let name = format!("callgrind-{}-{}-{label}", target.name(), protocol.name());
    let dir = bench.dir.path().join(&name);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    // PgBouncer runs as postgres when we are root: let it write its profile here.
    let _ = Command::new("chmod").arg("0777").arg(&dir).status();
    let wrapper = vec![
        "valgrind".to_string(),
        "--tool=callgrind".to_string(),
        format!("--callgrind-out-file={}/callgrind.out.%p", dir.display()),
    ];
    // The PgBouncer binary itself, not a wrapper script (callgrind would profile the shell).
    let mut proxies = bench.proxies.clone();
    proxies.pgbouncer = bench.pgbouncer_exe.clone();
    let primary = bench.cluster.primary.addr();
    let (process, addr) = match target {
        Target::PgBouncer => start_pgbouncer(bench.dir.path(), &name, primary, &proxies, &wrapper)?,
        _ => start_tidepool(bench.dir.path(), &name, &[primary], &proxies, &wrapper)?,
    };
    let pid = match target {
        Target::PgBouncer => read_pid(&bench.dir.path().join(&name).join("pgbouncer.pid"))?,
        _ => process.pid(),
    };
    let status = Command::new(bench.pgbench())
        .args([
            "-n",
            "-S",
            "-M",
            protocol.name(),
            "-c",
            &CLIENTS.to_string(),
            "-j",
            "1",
        ])
        .args(["-t", &(transactions / CLIENTS).to_string()])
        .args([
            "-h",
            &addr.ip().to_string(),
            "-p",
            &addr.port().to_string(),
            "-U",
            USER,
            DATABASE,
        ])
        .env("PGPASSWORD", PASSWORD)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("pgbench: {e}"))?;
    if !status.success() {
        return Err(format!(
            "pgbench through {} under callgrind failed",
            target.name()
        ));
    }
    stop(process, pid)?;
    // The proxy's own profile (valgrind keeps the proxy's pid).
    let out = dir.join(format!("callgrind.out.{pid}"));
    let total = read_total(&out)?;
    keep_profile(&out, &name);
    Ok(total)
}

/// Copies the profile next to the report, for `callgrind_annotate`
/// (`target/benchmarks/callgrind-tidepool-simple-2n.out`).
fn keep_profile(out: &Path, name: &str) {
    let keep = PathBuf::from("target/benchmarks");
    let _ = std::fs::create_dir_all(&keep);
    let _ = std::fs::copy(out, keep.join(format!("{name}.out")));
}

/// PgBouncer may write its pid file just after it starts listening.
fn read_pid(path: &Path) -> Result<u32, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !path.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::fs::read_to_string(path)
        .map_err(|e| format!("{}: {e}", path.display()))?
        .trim()
        .parse()
        .map_err(|_| format!("{}: not a pid", path.display()))
}

/// SIGTERM, then wait for callgrind to write its profile (it does so at exit). The child is
/// valgrind itself, or `runuser`, which exits after it.
fn stop(mut process: Process, pid: u32) -> Result<(), String> {
    let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if process.child.try_wait().map_err(|e| e.to_string())?.is_some() {
            // Gone: its pid must not be killed again on drop (it may belong to another process).
            process.own_pid = None;
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{} did not exit under callgrind", process.name));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// callgrind's `totals:` (or `summary:`) line: instructions executed by the whole process (all
/// its threads: without `--separate-threads` callgrind writes one file per process).
fn read_total(out: &Path) -> Result<u64, String> {
    let text = std::fs::read_to_string(out).map_err(|e| format!("{}: {e}", out.display()))?;
    text.lines()
        .find_map(|l| l.strip_prefix("totals:").or_else(|| l.strip_prefix("summary:")))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .ok_or_else(|| format!("no callgrind totals in {}", out.display()))
}
