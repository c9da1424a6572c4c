//! Wiring: builds the shared state from a config, binds the listener, starts the background
//! tasks, and stops them all on shutdown.

use crate::backend::{BackendLogin, BackendSecret};
use crate::client::auth::{DirectoryError, UserAuth, UserDirectory};
use crate::client::cancel::CancelRegistry;
use crate::client::statements::StatementCache;
use crate::client::{listener, ClientCounter};
use crate::config::{Config, UserConfig};
use crate::health::Health;
use crate::pool::{Limits, Pool, PoolKey, PoolSettings, Pools};
use crate::router::{Classifier, RoundRobin};
use crate::shutdown::{Shutdown, Stage};
use crate::tls::{BackendTls, ClientTls};
use arc_swap::{ArcSwap, ArcSwapOption};
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
    /// TLS toward clients (`None` = client_tls_mode disable), certificates read at build time.
    pub client_tls: Option<Arc<ClientTls>>,
    /// TLS toward PostgreSQL.
    pub backend_tls: BackendTls,
    /// How Patroni's REST API is reached (`routing.patroni_*`), certificates read at build time.
    pub patroni: Arc<crate::health::PatroniAccess>,
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
    /// Node roles and lag, when there is more than one node to choose from; replaced when a
    /// reload changes the nodes (read it with [`Shared::health`]).
    pub(crate) health: ArcSwapOption<Health>,
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
    /// Routing decisions by reason (SHOW ROUTES, metrics).
    pub routes: crate::client::routing::RouteCounters,
    /// SHOW STATS averages of the last completed `stats_period`.
    pub last_period: crate::admin::averages::LastPeriod,
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
    #[error("cannot listen on the Unix socket: {0}")]
    UnixSocket(#[from] crate::client::unix_socket::UnixSocketError),
    #[error("preparing user secrets failed: {0}")]
    Users(String),
    /// auth_file or auth_hba_file is unreadable or malformed.
    #[error(transparent)]
    Auth(#[from] DirectoryError),
    #[error("cannot listen for metrics on {addr}: {source}")]
    MetricsListen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

impl Shared {
    /// The current configuration snapshot. Take it once per transaction, not per message.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Installs a new snapshot (reload); tasks see it at their next `snapshot()`.
    pub(crate) fn store_snapshot(&self, snapshot: Snapshot) {
        self.snapshot.store(Arc::new(snapshot));
    }

    /// The health checkers of the current nodes (`None` with a single node).
    pub fn health(&self) -> Option<Arc<Health>> {
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
        let config = &snapshot.config;
        config.databases.get(database)?;
        let node = config.nodes.get(node_index)?;
        let key = PoolKey {
            database: database.to_string(),
            user: user.name.clone(),
            node: Arc::from(node.address()),
        };
        let mut settings = pool_settings(snapshot, database, user, key.node.clone());
        // A pool logs in with what the client that created it proved (pass-through keys).
        settings.login.secret = auth.backend.clone();
        let pool = self.pools.get_or_create(&key, || settings);
        // A pool made by a client that proved nothing usable (trust, cert) learns the secret of
        // the first client that did.
        let current = pool.settings();
        if current.login.secret == BackendSecret::None && auth.backend != BackendSecret::None {
            let mut settings = (*current).clone();
            settings.login.secret = auth.backend.clone();
            pool.update_settings(settings);
        }
        Some(pool)
    }
}

/// What a pool for (`database`, `user`) on the node at `addr` runs with under `config`, with the
/// secret the config alone provides. Reload compares these with what existing pools have.
pub(crate) fn pool_settings(
    snapshot: &Snapshot,
    database: &str,
    user: &UserConfig,
    addr: Arc<str>,
) -> PoolSettings {
    let config = &snapshot.config;
    let db = config.databases.get(database);
    let pool = &config.pool;
    PoolSettings {
        addr,
        login: BackendLogin {
            user: user.backend_user.clone().unwrap_or_else(|| user.name.clone()),
            database: db
                .and_then(|db| db.dbname.clone())
                .unwrap_or_else(|| database.to_string()),
            secret: backend_secret(user),
            tls: snapshot.backend_tls.clone(),
            keepalive: config.proxy.keepalive(),
        },
        mode: config.pool_mode_for(database),
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
}

/// A running proxy.
pub struct Proxy {
    shared: Arc<Shared>,
    addr: SocketAddr,
    /// Every bound `listen` address (port 0 resolved), in config order.
    addrs: Vec<SocketAddr>,
    unix_socket: Option<std::path::PathBuf>,
    metrics_addr: Option<SocketAddr>,
    tasks: TaskTracker,
    accept: JoinHandle<()>,
    janitor: JoinHandle<()>,
}

impl Proxy {
    /// Binds `proxy.listen` (port 0 picks a free port) and starts serving.
    pub async fn start(config: Config) -> Result<Proxy, AppError> {
        // Deriving SCRAM verifiers costs thousands of hash rounds per user: keep it off the
        // async workers.
        let snapshot = tokio::task::spawn_blocking(move || build_snapshot(config))
            .await
            .map_err(|e| AppError::Users(e.to_string()))??;
        let (listeners, addr) = bind_all(&snapshot.config.proxy)?;
        let mut addrs = Vec::new();
        let mut unix_socket = None;
        for one in &listeners {
            match one {
                listener::Listener::Tcp(tcp) => addrs.extend(tcp.local_addr().ok()),
                listener::Listener::Unix { file, .. } => unix_socket = Some(file.path.clone()),
            }
        }
        // Certificates read now: a bad file stops the start, like the client TLS files.
        let web = Arc::new(crate::metrics::http::Web::build(&snapshot.config.metrics)?);
        let metrics_listener = match snapshot.config.metrics.listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| AppError::MetricsListen { addr, source })?,
            ),
            None => None,
        };
        let shutdown = Shutdown::default();
        let health = start_health(&snapshot, &shutdown);
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let instance_id = snapshot.config.peers.instance_id;
        let shared = Arc::new(Shared {
            health: ArcSwapOption::from(health.map(Arc::new)),
            round_robin: RoundRobin::default(),
            snapshot: ArcSwap::from_pointee(snapshot),
            pools: Pools::new(metrics.clone()),
            sessions: Default::default(),
            metrics,
            started: std::time::SystemTime::now(),
            cancels: Arc::new(CancelRegistry::with_instance(instance_id)),
            statements: StatementCache::default(),
            notify: Default::default(),
            clients: ClientCounter::default(),
            stats: ProxyStats::default(),
            shutdown,
            config_path: std::sync::OnceLock::new(),
            reload_lock: tokio::sync::Mutex::new(()),
        });
        let tasks = TaskTracker::new();
        let names: Vec<String> = listeners.iter().map(listener::Listener::describe).collect();
        let accept = tokio::spawn(listener::accept_all(shared.clone(), listeners, tasks.clone()));
        let janitor = tokio::spawn(janitor(shared.clone()));
        tokio::spawn(crate::admin::averages::run(Arc::downgrade(&shared)));
        watch_role_changes(&shared);
        tracing::info!(%addr, listeners = ?names, "tidepool listening");
        let metrics_addr = match metrics_listener {
            Some(listener) => {
                let metrics_addr = listener.local_addr().ok();
                tracing::info!(addr = ?metrics_addr, "metrics listening");
                tokio::spawn(crate::metrics::http::serve(shared.clone(), listener, web.clone()));
                metrics_addr
            }
            None => None,
        };
        Ok(Proxy {
            shared,
            addr,
            addrs,
            unix_socket,
            metrics_addr,
            tasks,
            accept,
            janitor,
        })
    }

    /// The first `listen` address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every `listen` address, in config order.
    pub fn listen_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The Unix socket file (`<unix_socket_dir>/.s.PGSQL.<port>`), when configured.
    pub fn unix_socket_path(&self) -> Option<&std::path::Path> {
        self.unix_socket.as_deref()
    }

    /// Where `/metrics` is served, when `[metrics] listen` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// `SHUTDOWN WAIT_FOR_CLIENTS`: resolves once the listener is closed and no client but
    /// admin consoles is connected any more. No deadline; the caller races it against a faster
    /// stop.
    pub async fn clients_gone(&self) {
        self.shared.clients.wait_clients_gone().await;
    }

    /// Stops accepting, tells idle clients goodbye, waits up to `grace` for busy ones to finish
    /// their transaction, then closes every pooled connection. From a drain (WAIT_FOR_CLIENTS)
    /// this moves on to graceful: the remaining clients are closed too.
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

    /// `shutdown_within` with the configured `proxy.shutdown_timeout`.
    pub async fn shutdown(self) {
        let grace = self.shared.snapshot().config.proxy.shutdown_timeout.0;
        self.shutdown_within(grace).await;
    }
}

/// Validates what the config derives (the classifier) and prepares user secrets. Slow (key
/// derivation): call it on a blocking thread.
pub(crate) fn build_snapshot(config: Config) -> Result<Snapshot, AppError> {
    let backend_tls = BackendTls::build(&config.tls)?;
    let users = UserDirectory::build(&config, &backend_tls)?;
    let classifier =
        Classifier::new(&config.routing.classifier()).map_err(|e| AppError::Users(e.to_string()))?;
    let weights = config.nodes.iter().map(|n| n.weight).collect();
    let client_tls = ClientTls::build(&config.tls)?;
    let patroni = Arc::new(crate::health::PatroniAccess::build(&config.routing)?);
    Ok(Snapshot {
        patroni,
        config,
        users,
        classifier,
        weights,
        client_tls,
        backend_tls,
    })
}

/// With several nodes, a checker per node finds the primary and measures lag. It logs in as the
/// first configured user that has a password usable toward PostgreSQL.
pub(crate) fn start_health(snapshot: &Snapshot, shutdown: &Shutdown) -> Option<Health> {
    let (config, tls) = (&snapshot.config, &snapshot.backend_tls);
    let (nodes, login) = health_plan(config, tls)?;
    // Validated with the config, so nothing is dropped here.
    let patroni = (config.routing.patroni_api.iter())
        .filter_map(|url| crate::health::PatroniUrl::parse(url).ok())
        .map(|url| url.with_access(snapshot.patroni.clone()))
        .collect();
    let stop = shutdown.subscribe();
    let stopped = async move {
        let mut stop = stop;
        // Draining clients (WAIT_FOR_CLIENTS) still routes: checks go on until clients are closed.
        let _ = stop.wait_for(|stage| *stage >= Stage::Graceful).await;
    };
    Some(Health::spawn_with_patroni(
        nodes,
        login,
        config.health.clone(),
        patroni,
        stopped,
    ))
}

/// The nodes to check and the login to check them with; `None` when there is nothing to choose
/// between (a single node). Reload restarts the checkers when this changes.
pub(crate) fn health_plan(config: &Config, tls: &BackendTls) -> Option<(Vec<Arc<str>>, BackendLogin)> {
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
        tls: tls.clone(),
        keepalive: config.proxy.keepalive(),
    };
    let nodes = config.nodes.iter().map(|n| Arc::from(n.address())).collect();
    Some((nodes, login))
}

/// What tidepool can prove to PostgreSQL for a configured user: the same answer the user
/// directory gives (an md5 hash only serves the user it was made for), so that reload's
/// comparison of pool settings never sees a difference that is not there.
fn backend_secret(user: &UserConfig) -> BackendSecret {
    let secret = user
        .password
        .as_deref()
        .and_then(|p| crate::client::auth::Secret::parse(p).ok());
    crate::client::auth::backend_secret(user, secret.as_ref())
}

/// Binds every `listen` address, then the Unix socket named after the first one's port (port
/// 0 resolved); returns the listeners and the first address.
fn bind_all(proxy: &crate::config::ProxyConfig) -> Result<(Vec<listener::Listener>, SocketAddr), AppError> {
    let mut listeners = Vec::new();
    let mut first = None;
    for &addr in proxy.listen.all() {
        // `[::]:p` is dual-stack unless `0.0.0.0:p` (or another IPv4 address on p) is listed too.
        let only_v6 =
            (proxy.listen.all().iter()).any(|a| a.is_ipv4() && a.port() == addr.port() && addr.port() != 0);
        let tcp = bind(addr, only_v6).map_err(|source| AppError::Listen { addr, source })?;
        let local = tcp
            .local_addr()
            .map_err(|source| AppError::Listen { addr, source })?;
        first.get_or_insert(local);
        listeners.push(listener::Listener::Tcp(tcp));
    }
    let first = first.expect("listen is never empty");
    if let Some(unix) = proxy.unix_socket() {
        let (std_listener, file) = crate::client::unix_socket::bind(&unix, first.port())?;
        let listener = tokio::net::UnixListener::from_std(std_listener).map_err(|source| {
            crate::client::unix_socket::UnixSocketError::Io {
                path: file.path.clone(),
                source,
            }
        })?;
        listeners.push(listener::Listener::Unix {
            listener,
            file,
            port: first.port(),
        });
    }
    Ok((listeners, first))
}

/// Binds with SO_REUSEADDR, so a restart does not wait for TIME_WAIT sockets, and SO_REUSEPORT,
/// so a new tidepool can listen beside an old one that is draining (binary upgrade; the kernel
/// spreads new connections over both until the old one closes its listener).
fn bind(addr: SocketAddr, only_v6: bool) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => {
            let socket = tokio::net::TcpSocket::new_v6()?;
            if only_v6 {
                socket2::SockRef::from(&socket).set_only_v6(true)?;
            }
            socket
        }
    };
    socket.set_reuseaddr(true)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// When a node's role changes, its pooled connections are retired: a connection opened to a
/// primary must not serve as a standby's, nor the reverse. Ends when health checking stops;
/// holds the shared state weakly so that it never keeps the proxy alive.
/// Starts [`retire_on_role_change`] for the current health checkers (at start, and after a
/// reload replaced them: the previous watcher ends with its checkers).
pub(crate) fn watch_role_changes(shared: &Arc<Shared>) {
    if let Some(health) = shared.health() {
        tokio::spawn(retire_on_role_change(health.subscribe(), Arc::downgrade(shared)));
    }
}

async fn retire_on_role_change(
    mut changes: tokio::sync::watch::Receiver<Arc<crate::health::TopologyView>>,
    shared: std::sync::Weak<Shared>,
) {
    let mut before = changes.borrow_and_update().clone();
    while changes.changed().await.is_ok() {
        let now = changes.borrow_and_update().clone();
        let Some(shared) = shared.upgrade() else {
            return;
        };
        for node in now.role_changes(&before) {
            let addr = &now.nodes[node].addr;
            tracing::info!(node = %addr, "node changed role; retiring its connections");
            for pool in shared.pools.all().iter().filter(|p| p.key.node == *addr) {
                pool.retire_connections();
            }
        }
        before = now;
    }
}

/// Once a second: idle and lifetime eviction, prewarming, and pools brought in line with the
/// current snapshot (one created from an older snapshot while a reload ran).
async fn janitor(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shared.shutdown.wait() => return,
        }
        crate::reload::reconcile_pools(&shared, &shared.snapshot());
        for pool in shared.pools.all() {
            pool.maintain();
        }
    }
}
