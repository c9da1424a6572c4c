//! Why a throwaway cluster could not be located, started, queried or stopped.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// A failure of the local-cluster helper. Every variant that involves a running server carries
/// the tail of that server's log, because "pg_ctl failed" alone is useless in a CI log.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No directory with `initdb` and `pg_ctl` was found.
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl) not found; looked in: {}. \
         Install PostgreSQL (apt-get install -y postgresql) or set TIDEPOOL_PG_BIN \
         to the directory holding initdb",
        display_paths(.searched)
    )]
    BinariesNotFound { searched: Vec<PathBuf> },

    /// We run as root, which initdb and postgres refuse, and there is no `postgres` user.
    #[error("running as root, but there is no `postgres` user to run initdb/postgres as: {source}")]
    NoPostgresUser {
        #[source]
        source: std::io::Error,
    },

    /// We run as root and neither `runuser` nor `setpriv` is installed.
    #[error("running as root, but neither runuser nor setpriv was found to drop privileges")]
    NoPrivilegeDropTool,

    /// The unprivileged `postgres` user cannot write into the cluster's directory
    /// (usually a parent directory of TMPDIR is not traversable by others).
    #[error(
        "the postgres user cannot access {path}; set TMPDIR to a directory it can traverse \
         (for example /tmp)"
    )]
    NotAccessible { path: PathBuf },

    /// A filesystem operation failed.
    #[error("cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Binding 127.0.0.1:0 to find a free port failed.
    #[error("cannot find a free port on 127.0.0.1: {source}")]
    NoFreePort {
        #[source]
        source: std::io::Error,
    },

    /// A program could not be started at all.
    #[error("cannot run {program}: {source}")]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A program ran and failed; `output` is its stderr and stdout.
    #[error("`{command}` failed ({status}): {output}{}", log_section(.log_tail))]
    CommandFailed {
        command: String,
        status: ExitStatus,
        output: String,
        /// Last lines of the node's server log (empty when there is none yet).
        log_tail: String,
    },

    /// `psql` reported an error (usually an SQL error).
    #[error("psql on port {port} failed: {stderr}")]
    Psql { port: u16, stderr: String },

    /// A node did not reach the expected state in time.
    #[error("timed out after {waited:?} waiting for {what}{}", log_section(.log_tail))]
    Timeout {
        what: String,
        waited: Duration,
        log_tail: String,
    },
}

fn display_paths(paths: &[PathBuf]) -> String {
    let shown: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    shown.join(", ")
}

fn log_section(tail: &str) -> String {
    if tail.trim().is_empty() {
        String::new()
    } else {
        format!("\n--- server log (last lines) ---\n{}", tail.trim_end())
    }
}

impl ClusterError {
    /// Shorthand for `ClusterError::Io`.
    pub(crate) fn io(action: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        ClusterError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}
