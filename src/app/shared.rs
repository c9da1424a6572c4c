//! The `Shared` handle every task gets: the snapshot in an `ArcSwap`, pools, health checkers,
//! registries and counters, passed down explicitly instead of kept in globals.

use super::pool_settings::pool_settings;
use super::Snapshot;
use crate::auth::UserAuth;
use crate::backend::BackendSecret;
use crate::client::cancel::CancelRegistry;
use crate::client::features::statements::StatementCache;
use crate::health::Health;
use crate::listener::ClientCounter;
use crate::pool::{Pool, PoolKey, Pools};
use crate::router::RoundRobin;
use crate::shutdown::Shutdown;
use arc_swap::ArcSwap;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The health checkers of each cluster with more than one node, by cluster name.
pub type HealthMap = BTreeMap<String, Arc<Health>>;

/// Everything tasks share, passed down explicitly (no globals).
pub struct Shared {
    snapshot: ArcSwap<Snapshot>,
    pub pools: Pools,
    pub cancels: Arc<CancelRegistry>,
    /// Named prepared statements interned across clients (transaction mode).
    pub statements: StatementCache,
    /// Per database: what can change session state behind a plain statement (isolation).
    pub hazards: crate::client::features::isolation::HazardCatalogs,
    /// LISTEN connections shared by the clients of each pool (transaction mode).
    pub notify: crate::notify::NotifyHubs,
    pub clients: ClientCounter,
    pub stats: ProxyStats,
    /// Node roles and lag per cluster with more than one node to choose from; a cluster's
    /// entry is replaced when a reload changes its nodes (read with [`Shared::health_of`]).
    pub(crate) health: ArcSwap<HealthMap>,
    /// Bumped by `store_snapshot` and `swap_health` (see `generation`).
    generation: std::sync::atomic::AtomicUsize,
    /// Read rotation position.
    pub round_robin: RoundRobin,
    pub shutdown: Shutdown,
    /// Logged-in clients (SHOW CLIENTS, KILL_CLIENT).
    pub sessions: Arc<crate::client::registry::ClientRegistry>,
    /// Prometheus families and the handles the data path records into.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// When the proxy started (SHOW STATE, uptime).
    pub started: std::time::SystemTime,
    /// The file the configuration came from, for SIGHUP and `RELOAD`.
    config_path: std::sync::OnceLock<std::path::PathBuf>,
    /// One reload at a time: each builds on the snapshot the previous one installed.
    pub(crate) reload_lock: tokio::sync::Mutex<()>,
}

/// Process-wide counters (admin console, metrics), updated with relaxed atomics.
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Clients currently pinned to their backend in transaction mode.
    pub pinned_clients: std::sync::atomic::AtomicUsize,
    /// Session-state checks after transactions that were not clean, and how many of them also
    /// reset the backend (transaction-mode isolation).
    pub isolation_checks: std::sync::atomic::AtomicU64,
    pub isolation_resets: std::sync::atomic::AtomicU64,
    /// Routing decisions by reason (SHOW ROUTES, metrics).
    pub routes: crate::router::reasons::RouteCounters,
    /// SHOW STATS averages of the last completed `stats_period`.
    pub last_period: crate::admin::averages::LastPeriod,
    /// Cancel requests being forwarded to `[peers]` (SHOW PEER_POOLS).
    pub peer_cancels: crate::client::peers::PeerCancels,
}

impl Shared {
    /// The handle for a proxy starting with `snapshot` and the health checkers started for it.
    pub(super) fn new(snapshot: Snapshot, health: HealthMap, shutdown: Shutdown) -> Shared {
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let instance_id = snapshot.config.peers.instance_id;
        Shared {
            health: ArcSwap::from_pointee(health),
            generation: std::sync::atomic::AtomicUsize::new(1),
            round_robin: RoundRobin::default(),
            snapshot: ArcSwap::from_pointee(snapshot),
            pools: Pools::new(metrics.clone()),
            sessions: Default::default(),
            metrics,
            started: std::time::SystemTime::now(),
            cancels: Arc::new(CancelRegistry::with_instance(instance_id)),
            statements: StatementCache::default(),
            hazards: Default::default(),
            notify: Default::default(),
            clients: ClientCounter::default(),
            stats: ProxyStats::default(),
            shutdown,
            config_path: std::sync::OnceLock::new(),
            reload_lock: tokio::sync::Mutex::new(()),
        }
    }

    /// The current configuration snapshot. Take it once per transaction, not per message.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Changes after every snapshot or health-map swap (one atomic load): a session that saw
    /// this value before has nothing to look at again.
    pub fn generation(&self) -> usize {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Installs a new snapshot (reload); tasks see it at their next `snapshot()`.
    pub(crate) fn store_snapshot(&self, snapshot: Snapshot) {
        self.snapshot.store(Arc::new(snapshot));
        // After the store: whoever sees the new generation loads the new snapshot.
        self.generation.fetch_add(1, std::sync::atomic::Ordering::Release);
    }

    /// Installs new health checkers (reload); returns the previous ones.
    pub(crate) fn swap_health(&self, healths: HealthMap) -> Arc<HealthMap> {
        let previous = self.health.swap(Arc::new(healths));
        self.generation.fetch_add(1, std::sync::atomic::Ordering::Release);
        previous
    }

    /// The health checkers of the default cluster (`None` with a single node).
    pub fn health(&self) -> Option<Arc<Health>> {
        self.health_of(crate::config::DEFAULT_CLUSTER)
    }

    /// The health checkers of cluster `name` (`None` with a single node).
    pub fn health_of(&self, name: &str) -> Option<Arc<Health>> {
        self.health.load().get(name).cloned()
    }

    /// Every cluster's health checkers.
    pub fn healths(&self) -> Arc<HealthMap> {
        self.health.load_full()
    }

    /// Records the file the configuration was loaded from; reloads re-read it. Set once.
    pub fn set_config_path(&self, path: std::path::PathBuf) {
        let _ = self.config_path.set(path);
    }

    pub fn config_path(&self) -> Option<&std::path::Path> {
        self.config_path.get().map(|p| p.as_path())
    }

    /// The pool serving `database` for `user` on the node to use now; `None` if the database is
    /// not configured. A pool logs in with the backend secret of the client that created it
    /// (for SCRAM pass-through, that client's key).
    pub fn pool_for(
        &self,
        snapshot: &Snapshot,
        database: &str,
        auth: &UserAuth,
        node_index: usize,
    ) -> Option<Arc<Pool>> {
        let user = &auth.config;
        let node = snapshot.nodes_for(database)?.get(node_index)?;
        let key = PoolKey {
            database: database.to_string(),
            user: user.name.clone(),
            node: Arc::from(node.address()),
            cluster: Arc::from(snapshot.config.cluster_of(database)?),
        };
        let mut settings = pool_settings(snapshot, database, user, key.node.clone());
        // A database that names its own server login does not take the client's secret.
        let own_login = snapshot.config.database(database)?.user.is_some();
        if !own_login {
            // A pool logs in with what the client that created it proved (pass-through keys).
            settings.login.secret = auth.backend.clone();
        }
        let pool = self.pools.get_or_create(&key, || settings);
        // Before its first connection: the caps it counts against have their maxima.
        (self.pools.caps).configure(&snapshot.config, database, &user.name);
        // A pool made by a client that proved nothing usable (trust, cert) learns the secret of
        // the first client that did.
        let current = pool.settings();
        if !own_login && current.login.secret == BackendSecret::None && auth.backend != BackendSecret::None {
            let mut settings = (*current).clone();
            settings.login.secret = auth.backend.clone();
            pool.update_settings(settings);
        }
        Some(pool)
    }
}
