//! Child processes of the chaos test: tidepool itself (the real binary, from a config file) and
//! pgbench, each killed by pid when dropped, and signals sent to PostgreSQL process trees.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process killed (SIGKILL, by its pid) and reaped when dropped.
pub struct ChildGuard {
    pub child: Child,
}

impl ChildGuard {
    /// Whether the process is still running (not exited, not reaped).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the process to exit, for at most `timeout`; `None` if it is still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if self.is_running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// tidepool running as its own process, logging (TIDEPOOL_LOG=info) to a file that is printed
/// if the test fails.
pub struct Tidepool {
    pub process: ChildGuard,
    pub addr: SocketAddr,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tidepool {
    /// Writes `config` (which must listen on port 0) into a temp dir, starts the binary and reads
    /// the address it bound from its log.
    pub fn start(config: &str) -> Tidepool {
        let dir = tempfile::tempdir().expect("temp dir");
        let config_path = dir.path().join("tidepool.toml");
        std::fs::write(&config_path, config).expect("write config");
        let log = dir.path().join("tidepool.log");
        let log_file = std::fs::File::create(&log).expect("create log");
        let child = Command::new(env!("CARGO_BIN_EXE_tidepool"))
            .arg("--config")
            .arg(&config_path)
            .env("TIDEPOOL_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("dup log"))
            .stderr(log_file)
            .spawn()
            .expect("start tidepool");
        let mut process = ChildGuard { child };
        let deadline = Instant::now() + Duration::from_secs(30);
        let addr = loop {
            if let Some(addr) = listening_addr(&log) {
                break addr;
            }
            assert!(
                process.is_running() && Instant::now() < deadline,
                "tidepool did not start listening; its log:\n{}",
                tail(&log, 50)
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        Tidepool {
            process,
            addr,
            log,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.process.child.id()
    }

    /// Resident set size now, from /proc/<pid>/status (VmRSS).
    pub fn rss_bytes(&self) -> u64 {
        self.status_kib("VmRSS:") * 1024
    }

    /// The largest resident set size so far (VmHWM), which covers the storm's peak.
    pub fn peak_rss_bytes(&self) -> u64 {
        self.status_kib("VmHWM:") * 1024
    }

    fn status_kib(&self, field: &str) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("tidepool status");
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc/<pid>/status"))
    }

    /// Log lines containing `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|line| line.contains(needle))
            .count()
    }
}

impl Drop for Tidepool {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- tidepool log (last 150 lines) ----\n{}",
                tail(&self.log, 150)
            );
        }
    }
}

/// The `addr=` of tidepool's "tidepool listening" log line.
fn listening_addr(log: &Path) -> Option<SocketAddr> {
    let text = std::fs::read_to_string(log).ok()?;
    let line = text.lines().find(|l| l.contains("tidepool listening"))?;
    let value = line.split("addr=").nth(1)?.split_whitespace().next()?;
    value.trim_matches(|c: char| !c.is_ascii_graphic()).parse().ok()
}

fn tail(path: &Path, lines: usize) -> String {
    let mut text = String::new();
    if let Ok(mut file) = std::fs::File::open(path) {
        let _ = file.read_to_string(&mut text);
    }
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Sends `signal` (a `kill` signal name such as "STOP") to each pid.
pub fn signal(signal: &str, pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .args(pids.iter().map(u32::to_string))
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pids:?} failed");
}

/// `pid` and all its descendants, parents before children, from /proc/<pid>/task/*/children.
pub fn process_tree(pid: u32) -> Vec<u32> {
    let mut tree = vec![pid];
    let mut next = 0;
    while next < tree.len() {
        let parent = tree[next];
        next += 1;
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{parent}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            tree.extend(children.split_whitespace().filter_map(|p| p.parse::<u32>().ok()));
        }
    }
    tree
}

/// A PostgreSQL server frozen with SIGSTOP (postmaster first, so it forks nothing new, then every
/// descendant); SIGCONT on [`Frozen::thaw`] or drop, so a failing test never leaves it stopped.
pub struct Frozen {
    pids: Vec<u32>,
}

impl Frozen {
    pub fn freeze(postmaster: u32) -> Frozen {
        signal("STOP", &[postmaster]);
        let pids = process_tree(postmaster);
        signal("STOP", &pids);
        Frozen { pids }
    }

    pub fn thaw(mut self) {
        self.cont();
    }

    fn cont(&mut self) {
        let pids = std::mem::take(&mut self.pids);
        if pids.is_empty() {
            return; // thawed already (this runs again on drop): `kill -CONT` alone prints usage
        }
        // Some may have exited meanwhile; kill -CONT still signals the rest.
        let _ = Command::new("kill")
            .arg("-CONT")
            .args(pids.iter().map(u32::to_string))
            .status();
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        self.cont();
    }
}
