//! The real PgBouncer 1.25 beside tidepool, for the tests that compare them: found at
//! `$TIDEPOOL_PGBOUNCER` or `../shared/tools/pgbouncer/pgbouncer` (next to the checkout), run
//! from a temp directory as the `postgres` user when we are root (it refuses to run as root),
//! on a free loopback port, and stopped by its own pid when dropped.
#![allow(dead_code)]

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Where the PgBouncer 1.25 launcher is; panics with how to provide it when it is missing.
pub fn binary() -> PathBuf {
    let path = std::env::var_os("TIDEPOOL_PGBOUNCER")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/tools/pgbouncer/pgbouncer"));
    assert!(
        path.exists(),
        "PgBouncer 1.25 not found at {} (set TIDEPOOL_PGBOUNCER to its binary)",
        path.display()
    );
    // The launcher script checks its libraries with `ldconfig -p | grep -q` under pipefail:
    // when grep quits early ldconfig may die of SIGPIPE, and the script then tries apt-get
    // (as `postgres`: exit 127). With the libraries present, run the binary beside it.
    let direct = path.with_file_name("pgbouncer-1.25.2");
    if direct.exists() && libevent_installed() {
        return direct;
    }
    path
}

/// Whether the shared library PgBouncer 1.25 links against is installed.
fn libevent_installed() -> bool {
    Command::new("ldconfig")
        .arg("-p")
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains("libevent-2.1.so.7"))
}

/// A free loopback port (bound, then released for the program that will listen on it).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().unwrap().port()
}

fn running_as_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("run id");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// A directory PgBouncer can read and write: a temp dir, owned by `postgres` when we are root.
pub struct Home {
    pub dir: tempfile::TempDir,
}

impl Home {
    pub fn new() -> Home {
        Home {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The `[pgbouncer]` lines every instance needs: listen on `port` of 127.0.0.1 only (no
    /// Unix socket), log and pid files in this directory.
    pub fn settings(&self, port: u16) -> String {
        let home = self.path().display();
        format!(
            "listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
             logfile = {home}/pgbouncer.log\npidfile = {home}/pgbouncer.pid\n"
        )
    }

    /// Writes a file into the directory; returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.path().join(name);
        std::fs::write(&path, text).expect("write a PgBouncer file");
        path
    }

    fn give_to_postgres(&self) {
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(self.path())
            .status()
            .expect("run chown");
        assert!(status.success(), "chown {} to postgres", self.path().display());
    }
}

impl Default for Home {
    fn default() -> Self {
        Home::new()
    }
}

/// A running PgBouncer.
pub struct PgBouncer {
    child: Child,
    pub addr: SocketAddr,
    log: PathBuf,
    pidfile: PathBuf,
}

impl PgBouncer {
    /// Starts PgBouncer on `ini` (which must include [`Home::settings`] for `port`) and waits
    /// until it accepts connections.
    pub fn start(home: &Home, ini: &Path, port: u16) -> PgBouncer {
        let mut command = if running_as_root() {
            home.give_to_postgres();
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(binary());
            c
        } else {
            Command::new(binary())
        };
        let child = command
            .arg(ini)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start PgBouncer");
        let mut bouncer = PgBouncer {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            log: home.path().join("pgbouncer.log"),
            pidfile: home.path().join("pgbouncer.pid"),
        };
        bouncer.wait_listening();
        bouncer
    }

    fn wait_listening(&mut self) {
        for _ in 0..1500 {
            if TcpStream::connect(self.addr).is_ok() {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("PgBouncer exited ({status}): {}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("PgBouncer does not listen on {}: {}", self.addr, self.log_text());
    }

    /// Its log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        // runuser forks: PgBouncer's own pid is in its pid file. SIGQUIT: immediate shutdown.
        if let Some(pid) = std::fs::read_to_string(&self.pidfile)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
        {
            let _ = Command::new("kill").args(["-QUIT", &pid.to_string()]).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
