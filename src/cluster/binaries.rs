//! Finds the PostgreSQL binaries and runs server tools as the `postgres` user when we are root.

use super::ClusterError;
use std::ffi::OsString;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Environment variable naming the directory that holds `initdb`, `pg_ctl`, ….
pub const PG_BIN_ENV: &str = "TIDEPOOL_PG_BIN";

/// Debian/Ubuntu keep one `bin/` per major version here.
const VERSIONED_ROOT: &str = "/usr/lib/postgresql";

/// Where the PostgreSQL tools live and how to run the server-side ones.
#[derive(Debug, Clone)]
pub struct PgBinaries {
    /// Directory holding initdb, pg_ctl, postgres, pg_basebackup, psql and pgbench.
    pub bin_dir: PathBuf,
    run_as: RunAs,
}

/// Who runs initdb, pg_ctl, pg_basebackup and postgres.
#[derive(Debug, Clone, PartialEq, Eq)]
enum RunAs {
    /// We are not root: run them directly.
    CurrentUser,
    /// We are root, which initdb and postgres refuse: run them through `prefix`
    /// (runuser or setpriv) as the `postgres` user, and give it our directories.
    Postgres {
        prefix: Vec<OsString>,
        uid: u32,
        gid: u32,
    },
}

impl PgBinaries {
    /// Finds the binaries: `$TIDEPOOL_PG_BIN` if set, else the newest
    /// `/usr/lib/postgresql/<version>/bin`, else the first `PATH` entry holding `initdb`.
    pub fn locate() -> Result<PgBinaries, ClusterError> {
        PgBinaries::at(find_bin_dir()?)
    }

    /// Uses the binaries in `bin_dir`, which must hold `initdb` and `pg_ctl`.
    pub fn at(bin_dir: impl Into<PathBuf>) -> Result<PgBinaries, ClusterError> {
        let bin_dir = bin_dir.into();
        if !has_server_tools(&bin_dir) {
            return Err(ClusterError::BinariesNotFound {
                searched: vec![bin_dir],
            });
        }
        Ok(PgBinaries {
            bin_dir,
            run_as: RunAs::detect()?,
        })
    }

    /// Full path of a tool such as `psql` or `pgbench` (client tools run fine as root).
    pub fn tool(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    /// True when server tools run as the `postgres` user because we are root.
    pub fn runs_as_postgres(&self) -> bool {
        matches!(self.run_as, RunAs::Postgres { .. })
    }

    /// A command for a server-side tool (initdb, pg_ctl, pg_basebackup, postgres), wrapped so it
    /// runs as `postgres` when we are root.
    pub fn server_command(&self, name: &str) -> Command {
        let argv = self.server_argv(name);
        let mut command = Command::new(&argv[0]);
        command.args(&argv[1..]);
        command
    }

    /// The argument vector `server_command` runs, for use in shell scripts.
    pub(crate) fn server_argv(&self, name: &str) -> Vec<OsString> {
        let mut argv = match &self.run_as {
            RunAs::CurrentUser => Vec::new(),
            RunAs::Postgres { prefix, .. } => prefix.clone(),
        };
        argv.push(self.tool(name).into_os_string());
        argv
    }

    /// Creates `path` with mode 0700 (PostgreSQL insists on private data directories) and
    /// hands it to the user the server runs as.
    pub(crate) fn create_private_dir(&self, path: &Path) -> Result<(), ClusterError> {
        std::fs::create_dir(path).map_err(|source| ClusterError::io("create", path, source))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
            .map_err(|source| ClusterError::io("chmod", path, source))?;
        self.hand_over(path)
    }

    /// Makes a file or directory we created as root owned by the server user.
    pub(crate) fn hand_over(&self, path: &Path) -> Result<(), ClusterError> {
        if let RunAs::Postgres { uid, gid, .. } = self.run_as {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .map_err(|source| ClusterError::io("chown", path, source))?;
        }
        Ok(())
    }

    /// Fails early, with a hint, when the server user cannot write into `dir`.
    pub(crate) fn check_access(&self, dir: &Path) -> Result<(), ClusterError> {
        let RunAs::Postgres { prefix, .. } = &self.run_as else {
            return Ok(());
        };
        let status = Command::new(&prefix[0])
            .args(&prefix[1..])
            .args(["test", "-w"])
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|source| ClusterError::Spawn {
                program: PathBuf::from(&prefix[0]),
                source,
            })?;
        if status.success() {
            Ok(())
        } else {
            Err(ClusterError::NotAccessible {
                path: dir.to_path_buf(),
            })
        }
    }
}

impl RunAs {
    fn detect() -> Result<RunAs, ClusterError> {
        if !running_as_root() {
            return Ok(RunAs::CurrentUser);
        }
        let uid = postgres_id("-u")?;
        let gid = postgres_id("-g")?;
        let prefix: Vec<OsString> = if let Some(runuser) = find_program("runuser") {
            vec![runuser.into(), "-u".into(), "postgres".into(), "--".into()]
        } else if let Some(setpriv) = find_program("setpriv") {
            vec![
                setpriv.into(),
                "--reuid=postgres".into(),
                "--regid=postgres".into(),
                "--init-groups".into(),
            ]
        } else {
            return Err(ClusterError::NoPrivilegeDropTool);
        };
        Ok(RunAs::Postgres { prefix, uid, gid })
    }
}

/// Reads our effective uid without libc: /proc/self belongs to it.
fn running_as_root() -> bool {
    if let Ok(meta) = std::fs::metadata("/proc/self") {
        return meta.uid() == 0;
    }
    Command::new("id")
        .arg("-u")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stdout).trim() == "0")
        .unwrap_or(false)
}

/// `id -u postgres` / `id -g postgres`: goes through NSS, like runuser itself will.
fn postgres_id(flag: &str) -> Result<u32, ClusterError> {
    let not_found = |detail: String| ClusterError::NoPostgresUser {
        source: std::io::Error::new(std::io::ErrorKind::NotFound, detail),
    };
    let out = Command::new("id")
        .args([flag, "postgres"])
        .output()
        .map_err(|source| ClusterError::NoPostgresUser { source })?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(not_found(String::from_utf8_lossy(&out.stderr).trim().to_string()));
    }
    text.trim()
        .parse()
        .map_err(|_| not_found(format!("unexpected `id {flag} postgres` output {text:?}")))
}

/// Searches PATH, plus the sbin directories that root's PATH lacks in some containers.
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

fn find_bin_dir() -> Result<PathBuf, ClusterError> {
    if let Some(dir) = std::env::var_os(PG_BIN_ENV) {
        // An explicit choice that does not work is an error, not a hint to look elsewhere.
        return Ok(PathBuf::from(dir));
    }
    let mut searched = Vec::new();
    for dir in versioned_bin_dirs(Path::new(VERSIONED_ROOT)) {
        if has_server_tools(&dir) {
            return Ok(dir);
        }
        searched.push(dir);
    }
    searched.push(Path::new(VERSIONED_ROOT).join("*/bin"));
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        if has_server_tools(&dir) {
            return Ok(dir);
        }
    }
    searched.push(PathBuf::from("$PATH"));
    Err(ClusterError::BinariesNotFound { searched })
}

fn has_server_tools(dir: &Path) -> bool {
    dir.join("initdb").is_file() && dir.join("pg_ctl").is_file()
}

/// `<root>/<version>/bin` for every versioned subdirectory, newest first.
fn versioned_bin_dirs(root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let names = entries.filter_map(|e| e.ok()?.file_name().into_string().ok());
    newest_first(names)
        .into_iter()
        .map(|name| root.join(name).join("bin"))
        .collect()
}

/// Keeps names that look like versions ("15", "9.6") and sorts them newest first;
/// numeric so that "10" beats "9.6".
pub(crate) fn newest_first(names: impl IntoIterator<Item = String>) -> Vec<String> {
    let mut versions: Vec<(Vec<u32>, String)> = names
        .into_iter()
        .filter_map(|name| {
            let key: Option<Vec<u32>> = name.split('.').map(|part| part.parse().ok()).collect();
            Some((key?, name))
        })
        .collect();
    versions.sort_by(|a, b| b.0.cmp(&a.0));
    versions.into_iter().map(|(_, name)| name).collect()
}
