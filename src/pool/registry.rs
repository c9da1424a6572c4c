//! The set of pools, created on first use from the configuration snapshot.

use super::{AutoDatabases, ConnCaps, DbControls, Pool, PoolContext, PoolSettings, ServerRegistry};
use crate::metrics::Metrics;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

/// Identifies a pool: client-visible database, client user, node address, and the cluster the
/// node belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    pub database: String,
    pub user: String,
    pub node: Arc<str>,
    pub cluster: Arc<str>,
}

impl fmt::Display for PoolKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}@{}", self.database, self.user, self.node)
    }
}

/// All pools of the process, with what they share: database switches, the list of open
/// backends, and the metrics they record into.
#[derive(Default)]
pub struct Pools {
    map: Mutex<HashMap<PoolKey, Arc<Pool>>>,
    conn_ids: Arc<AtomicU64>,
    pub controls: Arc<DbControls>,
    pub servers: Arc<ServerRegistry>,
    pub metrics: Arc<Metrics>,
    /// Databases currently served through `*`.
    pub auto: AutoDatabases,
    /// `max_db_connections` / `max_user_connections` across pools.
    pub caps: ConnCaps,
}

impl Pools {
    /// Pools recording into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Pools {
            metrics,
            ..Pools::default()
        }
    }

    /// The pool for `key`, created with `settings` if it does not exist yet.
    pub fn get_or_create(&self, key: &PoolKey, settings: impl FnOnce() -> PoolSettings) -> Arc<Pool> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(pool) = map.get(key) {
            return pool.clone();
        }
        let context = PoolContext {
            caps: [self.caps.database(&key.database), self.caps.user(&key.user)],
            conn_ids: self.conn_ids.clone(),
            controls: self.controls.clone(),
            servers: self.servers.clone(),
            metrics: self
                .metrics
                .pool(&key.database, &key.user, &key.node, &key.cluster),
        };
        let pool = Arc::new(Pool::new(key.clone(), settings(), context));
        map.insert(key.clone(), pool.clone());
        pool
    }

    /// Takes `pool` out of the set and retires it (reload), so that the next `get_or_create`
    /// for its key builds a fresh one. A newer pool under the same key is left alone.
    pub fn retire(&self, pool: &Arc<Pool>) {
        {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            if map.get(&pool.key).is_some_and(|p| Arc::ptr_eq(p, pool)) {
                map.remove(&pool.key);
            }
        }
        pool.retire();
    }

    /// A snapshot of all pools (admin console, janitor).
    pub fn all(&self) -> Vec<Arc<Pool>> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.values().cloned().collect()
    }
}
