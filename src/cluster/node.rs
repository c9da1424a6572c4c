//! One local PostgreSQL server: its directories, pg_ctl life cycle and a psql shortcut.

use super::conf::{self, NodeOptions, NODE_CONF};
use super::{ClusterError, PgBinaries};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Seconds pg_ctl waits for start, stop and promote.
const PG_CTL_WAIT_SECS: &str = "60";
/// Ports tried before giving up when another process grabs ours between probe and bind.
const PORT_ATTEMPTS: usize = 5;
/// Lines of server log attached to errors.
const LOG_TAIL_LINES: usize = 30;

/// How `pg_ctl stop` shuts a server down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Wait for clients to disconnect.
    Smart,
    /// Abort transactions, disconnect clients, checkpoint (the usual choice).
    Fast,
    /// Quit without a checkpoint, as a crash would; recovery runs at next start.
    Immediate,
}

impl StopMode {
    fn as_arg(self) -> &'static str {
        match self {
            StopMode::Smart => "smart",
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        }
    }
}

/// A PostgreSQL server in its own directory, listening only on 127.0.0.1.
///
/// Layout: `<node_dir>/data` (PGDATA), `<node_dir>/postgres.log`, and the Unix socket in
/// `<node_dir>` itself so nothing touches /var/run.
#[derive(Debug)]
pub struct LocalNode {
    /// Directory name and `cluster_name`: `node0` is the first primary, standbys follow.
    pub name: String,
    /// TCP port on 127.0.0.1; kept across restarts.
    pub port: u16,
    /// The data directory (what `pg_ctl -D` takes).
    pub data_dir: PathBuf,
    node_dir: PathBuf,
    log_file: PathBuf,
    bins: PgBinaries,
    opts: NodeOptions,
}

impl LocalNode {
    /// Paths for a node under `root`; nothing is created yet and the port is chosen at start.
    pub(crate) fn new(bins: &PgBinaries, opts: &NodeOptions, root: &Path, name: &str) -> LocalNode {
        let node_dir = root.join(name);
        LocalNode {
            name: name.to_string(),
            port: 0,
            data_dir: node_dir.join("data"),
            log_file: node_dir.join("postgres.log"),
            node_dir,
            bins: bins.clone(),
            opts: opts.clone(),
        }
    }

    /// Runs initdb and writes our configuration.
    pub(crate) fn init(&self) -> Result<(), ClusterError> {
        self.bins.create_private_dir(&self.node_dir)?;
        let mut initdb = self.bins.server_command("initdb");
        initdb
            .arg("-D")
            .arg(&self.data_dir)
            .args(["--nosync", "-A", "trust", "-U", "postgres"])
            .args(["--encoding=UTF8", "--locale=C"]);
        self.run(initdb)?;

        let main_conf = self.data_dir.join("postgresql.conf");
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&main_conf)
            .map_err(|source| ClusterError::io("open", &main_conf, source))?;
        writeln!(file, "\ninclude '{NODE_CONF}'")
            .map_err(|source| ClusterError::io("append to", &main_conf, source))?;
        self.write_file("pg_hba.conf", &conf::render_hba(&self.opts))
    }

    /// Fills this (standby) node's data directory with a base backup of `primary`, creating
    /// replication slot `slot` there and writing standby.signal and primary_conninfo (`-R`).
    pub(crate) fn clone_from(&self, primary: &LocalNode, slot: &str) -> Result<(), ClusterError> {
        self.bins.create_private_dir(&self.node_dir)?;
        let port = primary.port.to_string();
        let mut backup = self.bins.server_command("pg_basebackup");
        backup.arg("-D").arg(&self.data_dir);
        backup.args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres"]);
        // -R: standby.signal + primary_conninfo; -C -S: a slot so the primary keeps our WAL.
        backup.args(["-R", "-C", "-S", slot, "-X", "stream"]);
        backup.args(["--checkpoint=fast", "--no-sync"]);
        // The primary's log says why a backup failed, so report through it.
        primary.run(backup).map(drop)
    }

    /// First start: picks a free port, writes it, starts; retries on another port when some
    /// other process took ours between our probe and the server's bind.
    pub(crate) fn first_start(&mut self) -> Result<(), ClusterError> {
        let mut attempt = 1;
        loop {
            self.port = free_port()?;
            self.write_file(
                NODE_CONF,
                &conf::render_node_conf(&self.name, self.port, &self.node_dir, &self.opts),
            )?;
            let log_before = std::fs::metadata(&self.log_file).map_or(0, |m| m.len());
            match self.start() {
                Ok(()) => return Ok(()),
                Err(error) if attempt < PORT_ATTEMPTS && self.lost_port_race(log_before) => {
                    attempt += 1;
                    drop(error);
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start(&self) -> Result<(), ClusterError> {
        let mut pg_ctl = self.pg_ctl("start");
        pg_ctl.arg("-l").arg(&self.log_file);
        self.run(pg_ctl).map(drop)
    }

    /// Stops the server and waits until it is gone; a server that is not running is fine.
    pub fn stop(&self, mode: StopMode) -> Result<(), ClusterError> {
        if !self.is_running() {
            return Ok(());
        }
        let mut pg_ctl = self.pg_ctl("stop");
        pg_ctl.args(["-m", mode.as_arg()]);
        self.run(pg_ctl).map(drop)
    }

    /// Restarts with a fast shutdown, keeping the port.
    pub fn restart(&self) -> Result<(), ClusterError> {
        let mut pg_ctl = self.pg_ctl("restart");
        pg_ctl.args(["-m", "fast", "-l"]).arg(&self.log_file);
        self.run(pg_ctl).map(drop)
    }

    /// Promotes a standby and waits until it accepts writes.
    pub fn promote(&self) -> Result<(), ClusterError> {
        self.run(self.pg_ctl("promote")).map(drop)
    }

    /// Whether a postmaster runs for this data directory (`pg_ctl status`).
    pub fn is_running(&self) -> bool {
        let mut status = self.bins.server_command("pg_ctl");
        status.arg("status").arg("-D").arg(&self.data_dir);
        status
            .current_dir(&self.node_dir)
            .stdin(Stdio::null())
            .output()
            .is_ok_and(|out| out.status.success())
    }

    /// The postmaster's process id, from `postmaster.pid` (None when the file is absent).
    pub fn pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        text.lines().next()?.trim().parse().ok()
    }

    /// Runs `sql` (one or more statements) as superuser `postgres` over TCP and returns the
    /// unaligned, tuples-only output, trimmed. Stops at the first error.
    pub fn psql(&self, db: &str, sql: &str) -> Result<String, ClusterError> {
        let psql = self.bins.tool("psql");
        let port = self.port.to_string();
        let mut child = Command::new(&psql)
            .args(["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1"])
            .args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres"])
            .args(["-d", db, "-f", "-"])
            .env("PGCONNECT_TIMEOUT", "10")
            .env_remove("PGPASSWORD")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| ClusterError::Spawn {
                program: psql.clone(),
                source,
            })?;
        // Statements go through stdin, not -c, so each runs in its own transaction and
        // CREATE DATABASE works; a thread feeds it so large output cannot deadlock us.
        let mut stdin = child.stdin.take().expect("stdin is piped");
        let sql = sql.to_string();
        let feeder = std::thread::spawn(move || stdin.write_all(sql.as_bytes()));
        let out = child.wait_with_output().map_err(|source| ClusterError::Spawn {
            program: psql,
            source,
        })?;
        // A write error only means psql quit early; its exit status tells why.
        let _ = feeder.join();
        if !out.status.success() {
            return Err(ClusterError::Psql {
                port: self.port,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }

    /// Writes a file only the server user may read (mode 0600, as PostgreSQL wants for
    /// `ssl_key_file`) into the data directory; settings can name it relative to it.
    pub fn install_private_file(&self, name: &str, contents: &[u8]) -> Result<(), ClusterError> {
        use std::os::unix::fs::PermissionsExt;
        let path = self.data_dir.join(name);
        std::fs::write(&path, contents).map_err(|source| ClusterError::io("write", &path, source))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|source| ClusterError::io("chmod", &path, source))?;
        self.bins.hand_over(&path)
    }

    /// Replaces the test rules of pg_hba.conf (the fixed ones stay first) and reloads.
    pub fn set_hba_rules(&self, rules: &[String]) -> Result<(), ClusterError> {
        let opts = NodeOptions {
            hba_rules: rules.to_vec(),
            ..self.opts.clone()
        };
        self.write_file("pg_hba.conf", &conf::render_hba(&opts))?;
        self.psql("postgres", "SELECT pg_reload_conf()").map(drop)
    }

    /// `SELECT pg_is_in_recovery()`: true on a standby.
    pub fn is_in_recovery(&self) -> Result<bool, ClusterError> {
        Ok(self.psql("postgres", "SELECT pg_is_in_recovery()")? == "t")
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The server's log file.
    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// The last `lines` lines of the server log (empty if there is none).
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read(&self.log_file).unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// The binaries this node runs.
    pub fn binaries(&self) -> &PgBinaries {
        &self.bins
    }

    /// Polls `check` every 100 ms until it returns true, for about `timeout`.
    pub(crate) fn wait_until(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut() -> Result<bool, ClusterError>,
    ) -> Result<(), ClusterError> {
        // Counting polls instead of reading a clock keeps this usable under paused tokio time.
        let interval = Duration::from_millis(100);
        let polls = (timeout.as_millis() / interval.as_millis()).max(1);
        for _ in 0..polls {
            if check()? {
                return Ok(());
            }
            std::thread::sleep(interval);
        }
        Err(ClusterError::Timeout {
            what: what.to_string(),
            waited: timeout,
            log_tail: self.log_tail(LOG_TAIL_LINES),
        })
    }

    fn pg_ctl(&self, action: &str) -> Command {
        let mut pg_ctl = self.bins.server_command("pg_ctl");
        pg_ctl
            .arg(action)
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-w", "-t", PG_CTL_WAIT_SECS]);
        pg_ctl
    }

    /// Runs a tool to completion; on failure the error carries its output and our log tail.
    fn run(&self, mut command: Command) -> Result<String, ClusterError> {
        // Run from a directory the postgres user can enter; ours may be private to root.
        command.current_dir(&self.node_dir).stdin(Stdio::null());
        let out = command.output().map_err(|source| ClusterError::Spawn {
            program: PathBuf::from(command.get_program()),
            source,
        })?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        if out.status.success() {
            return Ok(stdout.into_owned());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(ClusterError::CommandFailed {
            command: format!("{command:?}"),
            status: out.status,
            output: format!("{}\n{}", stderr.trim(), stdout.trim()).trim().to_string(),
            log_tail: self.log_tail(LOG_TAIL_LINES),
        })
    }

    /// Writes a file into the data directory, owned by the server user.
    fn write_file(&self, name: &str, text: &str) -> Result<(), ClusterError> {
        let path = self.data_dir.join(name);
        std::fs::write(&path, text).map_err(|source| ClusterError::io("write", &path, source))?;
        self.bins.hand_over(&path)
    }

    /// Whether the log written since byte `from` says our port was taken.
    fn lost_port_race(&self, from: u64) -> bool {
        let text = std::fs::read(&self.log_file).unwrap_or_default();
        let start = usize::try_from(from).unwrap_or(usize::MAX).min(text.len());
        String::from_utf8_lossy(&text[start..]).contains("Address already in use")
    }
}

/// A port that was free on 127.0.0.1 a moment ago (the kernel picks it for port 0).
fn free_port() -> Result<u16, ClusterError> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(|source| ClusterError::NoFreePort { source })?;
    let addr = listener
        .local_addr()
        .map_err(|source| ClusterError::NoFreePort { source })?;
    Ok(addr.port())
}
