//! The cluster's private temp directory, and the reaper child that cleans it up when we exit.
//!
//! Why a child process: a cluster kept in a `static` (one per test binary) is never dropped,
//! and `process::exit` or an abort skips destructors too. The reaper blocks reading a pipe whose
//! only writer is us; the kernel closes it however we exit, and the reaper then stops every
//! server under the directory by data directory (never by process name) and deletes it.

use super::conf::sh_quote;
use super::{ClusterError, PgBinaries};
use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

/// Creates `$TMPDIR/tidepool-<pid>-<nanos>` (mode 0700, owned by the server user) and checks
/// that the server user can really reach it.
pub(crate) fn create_root(bins: &PgBinaries) -> Result<PathBuf, ClusterError> {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let base = std::env::temp_dir();
    let mut attempt = 0u32;
    let root = loop {
        let candidate = base.join(format!("tidepool-{}-{nanos:x}-{attempt}", std::process::id()));
        match std::fs::symlink_metadata(&candidate) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => break candidate,
            _ => attempt += 1,
        }
    };
    bins.create_private_dir(&root)?;
    if let Err(error) = bins.check_access(&root) {
        let _ = std::fs::remove_dir_all(&root);
        return Err(error);
    }
    Ok(root)
}

/// The watchdog child; dropping it runs its cleanup now and waits for it.
#[derive(Debug)]
pub(crate) struct Reaper {
    pipe: Option<ChildStdin>,
    child: Child,
}

impl Reaper {
    /// Starts the watchdog for the cluster directory `root`.
    pub(crate) fn spawn(bins: &PgBinaries, root: &Path) -> Result<Reaper, ClusterError> {
        let script = reaper_script(&bins.server_argv("pg_ctl"), root);
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .current_dir("/")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group: a Ctrl-C at the terminal must not kill the watchdog
            // (pg_ctl already detaches the servers from the terminal).
            .process_group(0)
            .spawn()
            .map_err(|source| ClusterError::Spawn {
                program: PathBuf::from("/bin/sh"),
                source,
            })?;
        Ok(Reaper {
            pipe: child.stdin.take(),
            child,
        })
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        // Closing our end is the signal; waiting reaps the child so no zombie is left.
        drop(self.pipe.take());
        let _ = self.child.wait();
    }
}

/// The watchdog's shell script: wait for EOF on stdin, then stop and delete.
pub(crate) fn reaper_script(pg_ctl: &[OsString], root: &Path) -> String {
    let pg_ctl: Vec<String> = pg_ctl.iter().map(|word| sh_quote(word)).collect();
    let root = sh_quote(root.as_os_str());
    format!(
        "trap '' INT HUP\n\
         cat >/dev/null\n\
         for d in {root}/*/data; do\n\
         \x20 if [ -f \"$d/postmaster.pid\" ]; then\n\
         \x20   {pg_ctl} stop -D \"$d\" -m immediate -w -t 30 >/dev/null 2>&1\n\
         \x20 fi\n\
         done\n\
         rm -rf {root}\n",
        pg_ctl = pg_ctl.join(" "),
    )
}
