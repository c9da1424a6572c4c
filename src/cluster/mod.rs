//! Throwaway local PostgreSQL clusters (a primary plus streaming standbys) for the demo and tests.
//!
//! Design note: everything here is blocking `std::process` work, so async callers use
//! `spawn_blocking`. A cluster lives in one private temp directory (`<root>/node<N>/data`, its
//! log and Unix socket beside it) and listens only on 127.0.0.1, on ports found by binding
//! port 0. When we run as root, initdb/pg_ctl/pg_basebackup run as `postgres` via runuser or
//! setpriv. Servers are always addressed by data directory, never by process name. Each
//! cluster has one extra child, the reaper (see `scratch.rs`), which cleans up if we exit
//! without dropping the cluster.

mod binaries;
mod conf;
mod error;
mod node;
mod scratch;
#[cfg(test)]
mod tests;

pub use binaries::{PgBinaries, PG_BIN_ENV};
pub use conf::NodeOptions;
pub use error::ClusterError;
pub use node::{LocalNode, StopMode};

use conf::{sql_ident, sql_literal};
use scratch::Reaper;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a new standby may take to start streaming.
const STANDBY_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// A primary and its standbys in one temp directory; dropping it stops them all (immediate
/// mode) and deletes the directory.
///
/// `primary` and `standbys` describe how the cluster was built: after
/// [`LocalNode::promote`] the roles change but the fields do not.
#[derive(Debug)]
pub struct LocalCluster {
    /// The node created by [`LocalCluster::start`].
    pub primary: LocalNode,
    /// Nodes added by [`LocalCluster::add_standby`], in order.
    pub standbys: Vec<LocalNode>,
    bins: PgBinaries,
    opts: NodeOptions,
    root: PathBuf,
    /// Numbers node directories and replication slots; never reused, even after a failure.
    next_node: usize,
    // Declared last so it drops after `Drop::drop` has already cleaned up.
    _reaper: Reaper,
}

impl LocalCluster {
    /// Creates a temp directory, runs initdb and starts a primary on a free port.
    pub fn start(bins: &PgBinaries, opts: NodeOptions) -> Result<LocalCluster, ClusterError> {
        let root = scratch::create_root(bins)?;
        let reaper = match Reaper::spawn(bins, &root) {
            Ok(reaper) => reaper,
            Err(error) => {
                let _ = std::fs::remove_dir_all(&root);
                return Err(error);
            }
        };
        // From here on an early return drops `reaper`, which stops whatever started and
        // deletes `root`.
        let mut primary = LocalNode::new(bins, &opts, &root, "node0");
        primary.init()?;
        primary.first_start()?;
        Ok(LocalCluster {
            primary,
            standbys: Vec::new(),
            bins: bins.clone(),
            opts,
            root,
            next_node: 1,
            _reaper: reaper,
        })
    }

    /// Adds a streaming standby: `pg_basebackup -R -C -S slot_<N>` from the primary into a new
    /// directory, starts it, and waits until it is in recovery and the primary reports it
    /// streaming.
    pub fn add_standby(&mut self) -> Result<&LocalNode, ClusterError> {
        let number = self.next_node;
        self.next_node += 1;
        let name = format!("node{number}");
        let mut standby = LocalNode::new(&self.bins, &self.opts, &self.root, &name);
        if let Err(error) = self.attach(&mut standby, &format!("slot_{number}")) {
            let _ = standby.stop(StopMode::Immediate);
            return Err(error);
        }
        self.standbys.push(standby);
        Ok(self.standbys.last().expect("a standby was just pushed"))
    }

    fn attach(&self, standby: &mut LocalNode, slot: &str) -> Result<(), ClusterError> {
        standby.clone_from(&self.primary, slot)?;
        standby.first_start()?;
        let standby = &*standby;
        standby.wait_until("the standby to enter recovery", STANDBY_READY_TIMEOUT, || {
            standby.is_in_recovery()
        })?;
        let state = format!(
            "SELECT r.state FROM pg_replication_slots s \
             JOIN pg_stat_replication r ON r.pid = s.active_pid \
             WHERE s.slot_name = {}",
            sql_literal(slot)
        );
        let what = format!("{} to stream from the primary", standby.name);
        self.primary.wait_until(&what, STANDBY_READY_TIMEOUT, || {
            Ok(self.primary.psql("postgres", &state)? == "streaming")
        })
    }

    /// `CREATE ROLE name LOGIN PASSWORD 'password'` on the primary (hashed per
    /// `password_encryption`, scram-sha-256 by default).
    pub fn create_role(&self, name: &str, password: &str) -> Result<(), ClusterError> {
        let sql = format!(
            "CREATE ROLE {} LOGIN PASSWORD {}",
            sql_ident(name),
            sql_literal(password)
        );
        self.primary.psql("postgres", &sql).map(drop)
    }

    /// `CREATE DATABASE name OWNER owner` on the primary.
    pub fn create_database(&self, name: &str, owner: &str) -> Result<(), ClusterError> {
        let sql = format!("CREATE DATABASE {} OWNER {}", sql_ident(name), sql_ident(owner));
        self.primary.psql("postgres", &sql).map(drop)
    }

    /// The primary followed by the standbys.
    pub fn nodes(&self) -> impl Iterator<Item = &LocalNode> {
        std::iter::once(&self.primary).chain(&self.standbys)
    }

    /// The temp directory holding every node.
    pub fn root_dir(&self) -> &Path {
        &self.root
    }

    /// The binaries the nodes run.
    pub fn binaries(&self) -> &PgBinaries {
        &self.bins
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        // Standbys first so none of them logs a lost primary while we tear down.
        for node in self.standbys.iter().chain([&self.primary]) {
            let _ = node.stop(StopMode::Immediate);
        }
        let _ = std::fs::remove_dir_all(&self.root);
    }
}
