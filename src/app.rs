//! Wiring: builds the shared state from a config, binds the listener, starts the background
//! tasks, and stops them all on shutdown.

use crate::backend::{BackendLogin, BackendSecret};
use crate::client::auth::UserDirectory;
use crate::client::cancel::CancelRegistry;
use crate::client::statements::StatementCache;
use crate::client::{listener, ClientCounter};
use crate::config::{Config, PoolMode, UserConfig};
use crate::health::Health;
use crate::pool::{Limits, Pool, PoolKey, PoolSettings, Pools};
use crate::router::{Classifier, RoundRobin};
use crate::shutdown::Shutdown;
use arc_swap::ArcSwap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

/// An immutable view of the configuration and what is derived from it; swapped whole on reload.
pub struct Snapshot {
    pub config: Config,
    pub users: UserDirectory,
    /// Read/write classification for this config's function lists (cached by statement text).
    pub classifier: Classifier,
    /// `[[nodes]] weight`, in node order.
    pub weights: Vec<u32>,
}

/// Everything tasks share, passed down explicitly (no globals).
pub struct Shared {
    snapshot: ArcSwap<Snapshot>,
    pub pools: Pools,
    pub cancels: Arc<CancelRegistry>,
    /// Named prepared statements interned across clients (transaction mode).
    pub statements: StatementCache,
    /// LISTEN connections shared by the clients of each pool (transaction mode).
    pub notify: crate::client::notify::NotifyHubs,
    pub clients: ClientCounter,
    pub stats: ProxyStats,
    /// Node roles and lag, when there is more than one node to choose from.
    pub health: Option<Health>,
    /// Read rotation position.
    pub round_robin: RoundRobin,
    pub shutdown: Shutdown,
}

/// Process-wide counters (admin console, metrics), updated with relaxed atomics.
#[derive(Debug, Default)]
pub struct ProxyStats {
    /// Clients currently pinned to their backend in transaction mode.
    pub pinned_clients: std::sync::atomic::AtomicUsize,
}

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("preparing user secrets failed: {0}")]
    Users(String),
}

impl Shared {
    /// The current configuration snapshot. Take it once per transaction, not per message.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// The pool serving `database` for `user` on the node to use now; `None` if the database is
    /// not configured.
    pub fn pool_for(
        &self,
        snapshot: &Snapshot,
        database: &str,
        user: &UserConfig,
        node_index: usize,
    ) -> Option<Arc<Pool>> {
        let config = &snapshot.config;
        let db = config.databases.get(database)?;
        let node = config.nodes.get(node_index)?;
        let key = PoolKey {
            database: database.to_string(),
            user: user.name.clone(),
            node: Arc::from(node.address()),
        };
        Some(self.pools.get_or_create(&key, || {
            let secret = backend_secret(user);
            let pool = &config.pool;
            let mode: PoolMode = config.pool_mode_for(database);
            PoolSettings {
                addr: key.node.clone(),
                login: BackendLogin {
                    user: user.backend_user.clone().unwrap_or_else(|| user.name.clone()),
                    database: db.dbname.clone().unwrap_or_else(|| database.to_string()),
                    secret,
                },
                mode,
                limits: Limits {
                    pool_size: config.pool_size_for(database, user),
                    reserve_size: pool.reserve_pool_size,
                    min_size: pool.min_pool_size,
                },
                connect_timeout: pool.server_connect_timeout.0,
                query_wait_timeout: pool.query_wait_timeout.non_zero(),
                reserve_timeout: pool.reserve_pool_timeout.0,
                idle_timeout: pool.server_idle_timeout.non_zero(),
                lifetime: pool.server_lifetime.non_zero(),
                reset_query: pool.server_reset_query.clone(),
                check_query: pool.server_check_query.clone(),
                check_delay: pool.server_check_delay.0,
            }
        }))
    }
}

/// A running proxy.
pub struct Proxy {
    shared: Arc<Shared>,
    addr: SocketAddr,
    tasks: TaskTracker,
    accept: JoinHandle<()>,
    janitor: JoinHandle<()>,
}

impl Proxy {
    /// Binds `proxy.listen` (port 0 picks a free port) and starts serving.
    pub async fn start(config: Config) -> Result<Proxy, AppError> {
        let listen = config.proxy.listen;
        // Deriving SCRAM verifiers costs thousands of hash rounds per user: keep it off the
        // async workers.
        let snapshot = tokio::task::spawn_blocking(move || build_snapshot(config))
            .await
            .map_err(|e| AppError::Users(e.to_string()))??;
        let listener = bind(listen).map_err(|source| AppError::Listen { addr: listen, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| AppError::Listen { addr: listen, source })?;
        let shutdown = Shutdown::default();
        let health = start_health(&snapshot.config, &shutdown);
        let instance_id = snapshot.config.peers.instance_id;
        let shared = Arc::new(Shared {
            health,
            round_robin: RoundRobin::default(),
            snapshot: ArcSwap::from_pointee(snapshot),
            pools: Pools::default(),
            cancels: Arc::new(CancelRegistry::with_instance(instance_id)),
            statements: StatementCache::default(),
            notify: Default::default(),
            clients: ClientCounter::default(),
            stats: ProxyStats::default(),
            shutdown,
        });
        let tasks = TaskTracker::new();
        let accept = tokio::spawn(listener::accept_loop(shared.clone(), listener, tasks.clone()));
        let janitor = tokio::spawn(janitor(shared.clone()));
        tracing::info!(%addr, "tidepool listening");
        Ok(Proxy {
            shared,
            addr,
            tasks,
            accept,
            janitor,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Stops accepting, tells idle clients goodbye, waits up to `grace` for busy ones to finish
    /// their transaction, then closes every pooled connection.
    pub async fn shutdown_within(self, grace: Duration) {
        self.shared.shutdown.trigger();
        let _ = self.accept.await;
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait()).await.is_err() {
            tracing::warn!("shutdown grace period over; closing remaining clients");
        }
        self.janitor.abort();
        for pool in self.shared.pools.all() {
            pool.close_idle();
        }
    }

    /// `shutdown_within` with a 30 s grace period.
    pub async fn shutdown(self) {
        self.shutdown_within(Duration::from_secs(30)).await;
    }
}

/// Validates what the config derives (the classifier) and prepares user secrets.
fn build_snapshot(config: Config) -> Result<Snapshot, AppError> {
    let users = UserDirectory::build(&config);
    let classifier =
        Classifier::new(&config.routing.classifier()).map_err(|e| AppError::Users(e.to_string()))?;
    let weights = config.nodes.iter().map(|n| n.weight).collect();
    Ok(Snapshot {
        config,
        users,
        classifier,
        weights,
    })
}

/// With several nodes, a checker per node finds the primary and measures lag. It logs in as the
/// first configured user that has a password usable toward PostgreSQL.
fn start_health(config: &Config, shutdown: &Shutdown) -> Option<Health> {
    if config.nodes.len() < 2 {
        return None;
    }
    let database = config
        .databases
        .iter()
        .next()
        .map(|(name, db)| db.dbname.clone().unwrap_or_else(|| name.clone()))?;
    let user = config
        .users
        .iter()
        .find(|u| !matches!(backend_secret(u), BackendSecret::None))
        .or_else(|| config.users.first())?;
    let login = BackendLogin {
        user: user.backend_user.clone().unwrap_or_else(|| user.name.clone()),
        database,
        secret: backend_secret(user),
    };
    let nodes = config.nodes.iter().map(|n| Arc::from(n.address())).collect();
    let stop = shutdown.subscribe();
    Some(Health::spawn(nodes, login, config.health.clone(), async move {
        let mut stop = stop;
        let _ = stop.wait_for(|stopping| *stopping).await;
    }))
}

/// What tidepool can prove to PostgreSQL for a configured user.
fn backend_secret(user: &UserConfig) -> BackendSecret {
    match (&user.backend_password, &user.password) {
        (Some(p), _) => BackendSecret::Plain(p.clone()),
        (None, Some(p)) if p.starts_with("SCRAM-SHA-256$") => BackendSecret::None,
        (None, Some(p)) if p.len() == 35 && p.starts_with("md5") => BackendSecret::Md5Hash(p.clone()),
        (None, Some(p)) => BackendSecret::Plain(p.clone()),
        (None, None) => BackendSecret::None,
    }
}

/// Binds with SO_REUSEADDR so a restart does not wait for TIME_WAIT sockets.
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// Once a second: idle and lifetime eviction, prewarming.
async fn janitor(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shared.shutdown.wait() => return,
        }
        for pool in shared.pools.all() {
            pool.maintain();
        }
    }
}
