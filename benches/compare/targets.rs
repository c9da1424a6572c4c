//! The things pgbench is pointed at: PostgreSQL itself, PgBouncer and tidepool, each started
//! here on free loopback ports and stopped (by pid) when the benchmark ends.

use super::pgbench::Protocol;
use super::Options;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tidepool::cluster::{LocalCluster, NodeOptions, PgBinaries};

pub const USER: &str = "bench";
pub const PASSWORD: &str = "bench-secret";
pub const DATABASE: &str = "bench";

/// Where a pgbench run goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Direct,
    PgBouncer,
    /// tidepool in front of the primary only: the like-for-like comparison with PgBouncer.
    Tidepool,
    /// tidepool in front of the primary and both standbys, spreading reads.
    TidepoolSplit,
}

impl Target {
    pub const MAIN: [Target; 3] = [Target::Direct, Target::PgBouncer, Target::Tidepool];

    pub fn name(self) -> &'static str {
        match self {
            Target::Direct => "direct",
            Target::PgBouncer => "pgbouncer",
            Target::Tidepool => "tidepool",
            Target::TidepoolSplit => "tidepool (r/w split)",
        }
    }
}

/// A child process killed when dropped.
pub struct Process {
    pub child: Child,
    pub name: &'static str,
    /// The program's own pid (from its pid file) when `child` is `runuser`, which does not pass
    /// a kill on to the program it started.
    pub own_pid: Option<u32>,
}

impl Process {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Some(pid) = self.own_pid {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The binaries under test and the settings both poolers share.
#[derive(Debug, Clone)]
pub struct Proxies {
    /// PgBouncer, or a wrapper script that `exec`s it (as `../shared/tools/pgbouncer/pgbouncer`).
    pub pgbouncer: PathBuf,
    pub tidepool: PathBuf,
    pub pool_size: usize,
    /// `max_client_conn` of both: above the idle-client count, so that test is never refused.
    pub max_clients: usize,
}

/// Everything the benchmark started.
pub struct Bench {
    // Fields drop in this order: the proxies, then PostgreSQL, then the directory.
    pub pgbouncer: Process,
    pub pgbouncer_addr: SocketAddr,
    /// First line of `pgbouncer --version`, e.g. "PgBouncer 1.25.2".
    pub pgbouncer_version: String,
    /// The program PgBouncer runs as (`/proc/PID/exe`): the binary behind a wrapper script, which
    /// callgrind runs directly.
    pub pgbouncer_exe: PathBuf,
    pub tidepool: Process,
    pub tidepool_addr: SocketAddr,
    /// Started only when the read/write-split run is on (it needs the standbys).
    pub tidepool_split: Option<(Process, SocketAddr)>,
    pub proxies: Proxies,
    pub postgres_version: String,
    pub cluster: LocalCluster,
    pub dir: tempfile::TempDir,
}

impl Bench {
    pub fn start(options: &Options) -> Result<Bench, String> {
        let bins = PgBinaries::locate().map_err(|e| e.to_string())?;
        let node_options = NodeOptions {
            hba_rules: vec!["host all all 127.0.0.1/32 scram-sha-256".into()],
            // 256 direct clients plus the poolers' pools and the standbys' walsenders.
            extra_conf: vec!["max_connections = 400".into(), "shared_buffers = 256MB".into()],
        };
        let mut cluster = LocalCluster::start(&bins, node_options).map_err(|e| e.to_string())?;
        cluster.create_role(USER, PASSWORD).map_err(|e| e.to_string())?;
        cluster
            .create_database(DATABASE, USER)
            .map_err(|e| e.to_string())?;
        let primary = cluster.primary.addr();
        let status = Command::new(bins.tool("pgbench"))
            .args(["-i", "-q", "-s", &options.scale.to_string(), "-h"])
            .arg(primary.ip().to_string())
            .args(["-p", &primary.port().to_string(), "-U", USER, DATABASE])
            .env("PGPASSWORD", PASSWORD)
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("pgbench -i: {e}"))?;
        if !status.success() {
            return Err(format!("pgbench -i failed: {status}"));
        }
        // Standbys after the data load, so pg_basebackup copies it instead of streaming it.
        let split = options.split;
        if split {
            cluster.add_standby().map_err(|e| e.to_string())?;
            cluster.add_standby().map_err(|e| e.to_string())?;
        }
        let postgres_version = cluster
            .primary
            .psql("postgres", "SHOW server_version")
            .map_err(|e| e.to_string())?
            .trim()
            .to_string();

        let proxies = Proxies {
            pgbouncer: options.pgbouncer_binary(),
            tidepool: options.tidepool.clone(),
            pool_size: options.pool_size,
            max_clients: options.idle_clients + 2_000,
        };
        // Our idle clients, and the proxies (which inherit the limit) each hold that many sockets.
        raise_open_files(proxies.max_clients as u64 + 1_000)?;
        // Run as we are: the wrapper installs PgBouncer's libraries if it can (as root).
        let pgbouncer_version = command_output(&proxies.pgbouncer, &["--version"])
            .lines()
            .next()
            .unwrap_or("unknown")
            .trim()
            .to_string();
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let nodes: Vec<SocketAddr> = cluster.nodes().map(|n| n.addr()).collect();
        let (pgbouncer, pgbouncer_addr) = start_pgbouncer(dir.path(), "pgbouncer", primary, &proxies, &[])?;
        let pgbouncer_exe = pgbouncer
            .own_pid
            .and_then(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).ok())
            .unwrap_or_else(|| proxies.pgbouncer.clone());
        let (tidepool, tidepool_addr) = start_tidepool(dir.path(), "single", &nodes[..1], &proxies, &[])?;
        let tidepool_split = if split {
            Some(start_tidepool(dir.path(), "split", &nodes, &proxies, &[])?)
        } else {
            None
        };
        Ok(Bench {
            cluster,
            dir,
            pgbouncer,
            pgbouncer_addr,
            pgbouncer_version,
            pgbouncer_exe,
            tidepool,
            tidepool_addr,
            tidepool_split,
            proxies,
            postgres_version,
        })
    }

    /// PgBouncer before 1.21 cannot run named prepared statements in transaction mode.
    pub fn supports(&self, target: Target, protocol: Protocol) -> bool {
        target != Target::PgBouncer || protocol != Protocol::Prepared || self.pgbouncer_has_prepared()
    }

    fn pgbouncer_has_prepared(&self) -> bool {
        let version = self.pgbouncer_version.trim_start_matches("PgBouncer ");
        let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        (parts.next().unwrap_or(0), parts.next().unwrap_or(0)) >= (1, 21)
    }

    pub fn addr(&self, target: Target) -> SocketAddr {
        match target {
            Target::Direct => self.cluster.primary.addr(),
            Target::PgBouncer => self.pgbouncer_addr,
            Target::Tidepool => self.tidepool_addr,
            Target::TidepoolSplit => self
                .tidepool_split
                .as_ref()
                .map_or(self.tidepool_addr, |(_, a)| *a),
        }
    }

    /// The pid of the proxy process itself (PgBouncer may run under `runuser`, which forks).
    pub fn proxy_pid(&self, target: Target) -> Option<u32> {
        match target {
            Target::Direct => None,
            Target::PgBouncer => self.pgbouncer.own_pid.or(Some(self.pgbouncer.pid())),
            Target::Tidepool => Some(self.tidepool.pid()),
            Target::TidepoolSplit => self.tidepool_split.as_ref().map(|(p, _)| p.pid()),
        }
    }

    pub fn pgbench(&self) -> PathBuf {
        self.cluster.binaries().tool("pgbench")
    }
}

/// Raises this process's RLIMIT_NOFILE (which the proxies inherit) to at least `needed`: the soft
/// limit to the hard one, and the hard one too when we may (root). Uses prlimit(1), so the
/// benchmark needs no unsafe code.
fn raise_open_files(needed: u64) -> Result<(), String> {
    let limits = std::fs::read_to_string("/proc/self/limits").map_err(|e| e.to_string())?;
    let (soft, hard) = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| {
            let mut fields = l
                .split_whitespace()
                .skip(3)
                .map(|v| v.parse::<u64>().unwrap_or(u64::MAX));
            Some((fields.next()?, fields.next()?))
        })
        .ok_or("no open-files line in /proc/self/limits")?;
    if soft >= needed {
        return Ok(());
    }
    let target_hard = if running_as_root() { hard.max(needed) } else { hard };
    let target_soft = target_hard.min(needed.max(soft));
    let status = Command::new("prlimit")
        .arg(format!("--pid={}", std::process::id()))
        .arg(format!("--nofile={target_soft}:{target_hard}"))
        .status()
        .map_err(|e| format!("prlimit: {e}"))?;
    if !status.success() || target_soft < needed {
        return Err(format!(
            "cannot raise the open-files limit to {needed} (soft {soft}, hard {hard}): \
             run `ulimit -n {needed}` first, or pass a smaller --idle"
        ));
    }
    eprintln!("compare: open-files limit raised from {soft} to {target_soft}");
    Ok(())
}

fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    Ok(listener.local_addr().map_err(|e| e.to_string())?.port())
}

fn command_output(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned() + &String::from_utf8_lossy(&o.stderr))
        .unwrap_or_default()
}

fn running_as_root() -> bool {
    command_output("id", &["-u"]).trim() == "0"
}

/// PgBouncer refuses to run as root: run it as `postgres` then, in a directory it owns.
/// `wrapper` runs in front of the binary (e.g. valgrind); the instance lives in `dir/name`.
/// Clients log in with SCRAM-SHA-256, as tidepool's do; the plain password in the auth file
/// lets PgBouncer log in to PostgreSQL with SCRAM too.
pub fn start_pgbouncer(
    dir: &Path,
    name: &str,
    primary: SocketAddr,
    proxies: &Proxies,
    wrapper: &[String],
) -> Result<(Process, SocketAddr), String> {
    let binary = &proxies.pgbouncer;
    if !binary.exists() {
        return Err(format!(
            "no PgBouncer at {} (apt-get install pgbouncer, or pass --pgbouncer PATH)",
            binary.display()
        ));
    }
    let home = dir.join(name);
    std::fs::create_dir_all(&home).map_err(|e| e.to_string())?;
    let port = free_port()?;
    std::fs::write(home.join("userlist.txt"), format!("\"{USER}\" \"{PASSWORD}\"\n"))
        .map_err(|e| e.to_string())?;
    let ini = format!(
        "[databases]\n\
         {DATABASE} = host={host} port={pg_port} dbname={DATABASE}\n\
         [pgbouncer]\n\
         listen_addr = 127.0.0.1\n\
         listen_port = {port}\n\
         unix_socket_dir =\n\
         auth_type = scram-sha-256\n\
         auth_file = {home}/userlist.txt\n\
         pool_mode = transaction\n\
         default_pool_size = {pool_size}\n\
         max_client_conn = {max_clients}\n\
         max_prepared_statements = 200\n\
         listen_backlog = 4096\n\
         logfile = {home}/pgbouncer.log\n\
         pidfile = {home}/pgbouncer.pid\n\
         log_connections = 0\n\
         log_disconnections = 0\n\
         ignore_startup_parameters = extra_float_digits\n",
        host = primary.ip(),
        pg_port = primary.port(),
        home = home.display(),
        pool_size = proxies.pool_size,
        max_clients = proxies.max_clients,
    );
    let ini_path = home.join("pgbouncer.ini");
    std::fs::write(&ini_path, ini).map_err(|e| e.to_string())?;
    let mut command = if running_as_root() {
        for entry in [home.clone(), home.join("userlist.txt"), ini_path.clone()] {
            let status = Command::new("chown")
                .arg("postgres:postgres")
                .arg(&entry)
                .status();
            if !status.map(|s| s.success()).unwrap_or(false) {
                return Err(format!("cannot chown {} to postgres", entry.display()));
            }
        }
        // runuser resets the soft open-files limit to 1024: raise it to the hard limit again, or
        // PgBouncer stops accepting (and clients hang) near a thousand connections.
        let mut c = Command::new("runuser");
        c.args([
            "-u",
            "postgres",
            "--",
            "sh",
            "-c",
            "ulimit -n \"$(ulimit -Hn)\" && exec \"$@\"",
            "sh",
        ])
        .args(wrapper)
        .arg(binary);
        c
    } else if let Some((first, rest)) = wrapper.split_first() {
        let mut c = Command::new(first);
        c.args(rest).arg(binary);
        c
    } else {
        Command::new(binary)
    };
    // Its stderr (the wrapper's, valgrind's) beside its log, for the error when it does not start.
    let stderr = std::fs::File::create(home.join("stderr.log")).map_err(|e| e.to_string())?;
    let child = command
        .arg(&ini_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .map_err(|e| format!("pgbouncer: {e}"))?;
    let mut process = Process {
        child,
        name: "pgbouncer",
        own_pid: None,
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_listening(
        addr,
        &[home.join("pgbouncer.log"), home.join("stderr.log")],
        wrapper,
    )?;
    // Read now: the pid file goes with the temp dir, which may be deleted before we are.
    let pidfile = home.join("pgbouncer.pid");
    let deadline = Instant::now() + Duration::from_secs(30);
    while process.own_pid.is_none() && Instant::now() < deadline {
        process.own_pid = std::fs::read_to_string(&pidfile)
            .ok()
            .and_then(|s| s.trim().parse().ok());
        if process.own_pid.is_none() {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok((process, addr))
}

/// The tidepool binary (by default the release binary built beside this benchmark), with a
/// config written here; `wrapper` runs in front of it (e.g. valgrind). Clients log in with
/// SCRAM-SHA-256.
pub fn start_tidepool(
    dir: &Path,
    name: &str,
    nodes: &[SocketAddr],
    proxies: &Proxies,
    wrapper: &[String],
) -> Result<(Process, SocketAddr), String> {
    let port = free_port()?;
    let mut config = format!(
        "[proxy]\nlisten = \"127.0.0.1:{port}\"\npool_mode = \"transaction\"\nmax_client_conn = {max_clients}\n\n\
         [pool]\ndefault_pool_size = {pool_size}\n\n\
         [databases.{DATABASE}]\n\n\
         [[users]]\nname = \"{USER}\"\npassword = \"{PASSWORD}\"\nauth_method = \"scram-sha-256\"\n",
        max_clients = proxies.max_clients,
        pool_size = proxies.pool_size,
    );
    for node in nodes {
        config.push_str(&format!(
            "\n[[nodes]]\nhost = \"{}\"\nport = {}\n",
            node.ip(),
            node.port()
        ));
    }
    let path = dir.join(format!("tidepool-{name}.toml"));
    std::fs::write(&path, config).map_err(|e| e.to_string())?;
    let log = dir.join(format!("tidepool-{name}.log"));
    let log_file = std::fs::File::create(&log).map_err(|e| e.to_string())?;
    let binary = &proxies.tidepool;
    let mut command = match wrapper.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(binary);
            c
        }
        None => Command::new(binary),
    };
    let child = command
        .arg("--config")
        .arg(&path)
        .env("TIDEPOOL_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .map_err(|e| format!("tidepool: {e}"))?;
    let process = Process {
        child,
        name: "tidepool",
        own_pid: None,
    };
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    wait_listening(addr, std::slice::from_ref(&log), wrapper)?;
    if nodes.len() > 1 {
        // Let the health checker find the primary and the standbys before measuring.
        std::thread::sleep(Duration::from_secs(3));
    }
    Ok((process, addr))
}

fn wait_listening(addr: SocketAddr, logs: &[PathBuf], wrapper: &[String]) -> Result<(), String> {
    // Under valgrind, start-up takes many times longer.
    let patience = Duration::from_secs(if wrapper.is_empty() { 20 } else { 120 });
    let deadline = Instant::now() + patience;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let logs: Vec<String> = logs
        .iter()
        .map(|log| {
            format!(
                "{}: {}",
                log.display(),
                std::fs::read_to_string(log).unwrap_or_default()
            )
        })
        .collect();
    Err(format!(
        "nothing listens on {addr} after {} s; {}",
        patience.as_secs(),
        logs.join("\n")
    ))
}
