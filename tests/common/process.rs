//! The real `tidepool` binary as a child process, for tests where signals matter: start it from
//! a config file, read its JSON log lines, send it signals by pid.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A runtime for a test that drives the binary from async clients (signals and process
/// waits stay blocking calls beside it).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A running `tidepool --config FILE` with its stderr collected line by line.
pub struct Tidepool {
    pub child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Tidepool {
    /// Starts the binary. The config should set `log_format = "json"` for [`Self::addr`].
    pub fn start(config: &Path) -> Tidepool {
        Tidepool::start_with_env(config, &[])
    }

    /// Starts the binary with extra environment variables (e.g. `NOTIFY_SOCKET`).
    pub fn start_with_env(config: &Path, env: &[(&str, &str)]) -> Tidepool {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tidepool"))
            .arg("--config")
            .arg(config)
            .env_remove("TIDEPOOL_LOG")
            .env_remove("RUST_LOG")
            .env_remove("NOTIFY_SOCKET")
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start tidepool");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Tidepool { child, lines }
    }

    /// Sends a signal (`"TERM"`, `"INT"`, `"QUIT"`, `"HUP"`, `"USR1"`, …) to this process only.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// The log lines so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// How many log lines contain `needle` so far.
    pub fn count(&self, needle: &str) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Waits (bounded) until a log line contains `needle`; returns it.
    pub fn wait_for_line(&self, needle: &str) -> String {
        for _ in 0..1500 {
            if let Some(line) = self.lines.lock().unwrap().iter().find(|l| l.contains(needle)) {
                return line.clone();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no log line with {needle:?}: {:#?}", self.lines());
    }

    /// Where it listens, from the JSON "tidepool listening" line.
    pub fn addr(&self) -> SocketAddr {
        let line = self.wait_for_line("tidepool listening");
        let start = line.find("\"addr\":\"").expect("addr field") + 8;
        let end = start + line[start..].find('"').unwrap();
        line[start..end].parse().expect("an address")
    }

    /// Waits for the process to exit.
    pub fn wait(&mut self) -> ExitStatus {
        self.child.wait().expect("wait for tidepool")
    }

    /// Waits for the process to exit, at most a minute (then fails with its log).
    pub fn wait_exit(&mut self) -> ExitStatus {
        for _ in 0..3000 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("tidepool did not exit: {:#?}", self.lines());
    }
}

impl Drop for Tidepool {
    fn drop(&mut self) {
        // A failed test must not leave the child behind.
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
