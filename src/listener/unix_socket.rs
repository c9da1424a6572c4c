//! The Unix-domain socket `<unix_socket_dir>/.s.PGSQL.<port>`: created beside a lock file,
//! stale files replaced, a live tidepool's socket taken over (binary upgrade), anything else's
//! refused; removed at shutdown only while it is still ours.
//!
//! Why take over a running tidepool's socket: TCP listeners share a port with SO_REUSEPORT
//! during an upgrade; a socket path cannot be shared, but `rename(2)` swaps it atomically, so a
//! client connecting by path reaches either the old process (before) or the new one (after),
//! never nothing. The old process keeps its socket (now nameless) until it drains its backlog.
//! The lock file (`.s.PGSQL.<port>.lock`, PID then `tidepool`, like PostgreSQL's PID then data
//! directory) tells a tidepool from a PostgreSQL or PgBouncer on the same path.

use crate::config::UnixSocket;
use std::io::{self, ErrorKind};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// What the lock file says after the PID.
const LOCK_OWNER: &str = "tidepool";

/// Why the socket could not be created.
#[derive(Debug, thiserror::Error)]
pub enum UnixSocketError {
    #[error("{path}: another server listens on this socket (lock file: {owner})")]
    InUse { path: PathBuf, owner: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// A bound socket file, until [`SocketFile::remove`].
#[derive(Debug)]
pub struct SocketFile {
    pub path: PathBuf,
    lock: PathBuf,
    /// (device, inode) of the file we created: a successor's file has another.
    identity: (u64, u64),
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> UnixSocketError + '_ {
    move |source| UnixSocketError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates the socket for `port` and returns the listener (non-blocking) with its file.
pub fn bind(
    config: &UnixSocket,
    port: u16,
) -> Result<(std::os::unix::net::UnixListener, SocketFile), UnixSocketError> {
    let path = config.path(port);
    let lock = PathBuf::from(format!("{}.lock", path.display()));
    check_current_owner(&path, &lock)?;
    // Bound under a temporary name with its mode set, then renamed: the path never points to
    // a socket with the wrong permissions, nor to nothing.
    let temporary = config
        .dir
        .join(format!(".s.PGSQL.{port}.{}.new", std::process::id()));
    let _ = std::fs::remove_file(&temporary);
    let listener = std::os::unix::net::UnixListener::bind(&temporary).map_err(io_at(&path))?;
    let placed = std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(config.mode.0))
        .and_then(|()| listener.set_nonblocking(true))
        .and_then(|()| std::fs::write(&lock, format!("{}\n{LOCK_OWNER}\n", std::process::id())))
        .and_then(|()| std::fs::rename(&temporary, &path))
        .and_then(|()| std::fs::metadata(&path));
    let meta = match placed {
        Ok(meta) => meta,
        Err(e) => {
            let _ = std::fs::remove_file(&temporary);
            return Err(io_at(&path)(e));
        }
    };
    let identity = (meta.dev(), meta.ino());
    Ok((listener, SocketFile { path, lock, identity }))
}

/// Refuses a path another kind of server listens on; logs a stale file or a tidepool being
/// replaced.
fn check_current_owner(path: &Path, lock: &Path) -> Result<(), UnixSocketError> {
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => {
            let owner = std::fs::read_to_string(lock).unwrap_or_default();
            let mut lines = owner.lines();
            let pid = lines.next().unwrap_or("").trim().to_string();
            if lines.next().map(str::trim) != Some(LOCK_OWNER) {
                let owner = if owner.is_empty() {
                    "none".to_string()
                } else {
                    format!("PID {pid}, not tidepool")
                };
                return Err(UnixSocketError::InUse {
                    path: path.to_path_buf(),
                    owner,
                });
            }
            tracing::info!(path = %path.display(), %pid, "taking over the Unix socket of a running tidepool");
        }
        // Nobody accepts on it: a file left by a process that died.
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "replacing a stale Unix socket file");
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(io_at(path)(e)),
    }
    Ok(())
}

impl SocketFile {
    /// Removes the socket file and lock file unless a successor has replaced them.
    pub fn remove(&self) {
        let ours = std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.identity);
        if !ours {
            tracing::debug!(path = %self.path.display(), "Unix socket now belongs to another process; left in place");
            return;
        }
        let _ = std::fs::remove_file(&self.path);
        let lock_ours = std::fs::read_to_string(&self.lock)
            .is_ok_and(|text| text.lines().next() == Some(&std::process::id().to_string()));
        if lock_ours {
            let _ = std::fs::remove_file(&self.lock);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SocketMode;

    fn config(dir: &Path) -> UnixSocket {
        UnixSocket {
            dir: dir.to_path_buf(),
            mode: SocketMode(0o700),
        }
    }

    #[test]
    fn socket_gets_libpq_name_mode_and_lock() {
        let dir = tempfile::tempdir().unwrap();
        let (_listener, file) = bind(&config(dir.path()), 6543).unwrap();
        assert_eq!(file.path, dir.path().join(".s.PGSQL.6543"));
        let mode = std::fs::metadata(&file.path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let lock = std::fs::read_to_string(dir.path().join(".s.PGSQL.6543.lock")).unwrap();
        assert_eq!(lock, format!("{}\ntidepool\n", std::process::id()));
        file.remove();
        assert!(!file.path.exists() && !dir.path().join(".s.PGSQL.6543.lock").exists());
    }

    #[test]
    fn stale_file_is_replaced_and_foreign_server_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".s.PGSQL.7000");
        // A socket nobody accepts on any more.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        let (_listener, file) = bind(&config(dir.path()), 7000).unwrap();
        file.remove();

        // A live socket whose lock file is PostgreSQL's.
        let _foreign = std::os::unix::net::UnixListener::bind(&path).unwrap();
        std::fs::write(
            dir.path().join(".s.PGSQL.7000.lock"),
            "4242\n/var/lib/postgresql\n",
        )
        .unwrap();
        let error = bind(&config(dir.path()), 7000).unwrap_err();
        assert!(matches!(error, UnixSocketError::InUse { .. }), "{error}");
    }

    #[test]
    fn live_tidepool_socket_is_taken_over_and_not_removed_by_the_old_owner() {
        let dir = tempfile::tempdir().unwrap();
        let (old_listener, old) = bind(&config(dir.path()), 7001).unwrap();
        let (new_listener, new) = bind(&config(dir.path()), 7001).unwrap();
        // The old process shuts down after the new one took the path: the path stays.
        old.remove();
        assert!(new.path.exists());
        let _client = std::os::unix::net::UnixStream::connect(&new.path).unwrap();
        assert!(new_listener.accept().is_ok(), "the new listener gets new clients");
        // The old one only has the new one's connect test (to tell it from a stale file).
        assert!(old_listener.accept().is_ok());
        assert!(old_listener.accept().is_err(), "the old one gets no new client");
        new.remove();
        assert!(!new.path.exists());
    }
}
