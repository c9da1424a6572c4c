//! Wiring: builds the shared state from a config, binds the listener, starts the background
//! tasks, and stops them all on shutdown.

use crate::auth::{DirectoryError, UserAuth, UserDirectory};
use crate::backend::{BackendLogin, BackendSecret};
use crate::client::cancel::CancelRegistry;
use crate::client::features::statements::StatementCache;
use crate::config::{Config, UserConfig};
use crate::health::Health;
use crate::listener::per_core::Workers;
use crate::listener::{self, ClientCounter};
use crate::pool::{Limits, Pool, PoolKey, PoolSettings, Pools};
use crate::router::{Classifier, RoundRobin};
use crate::shutdown::{Shutdown, Stage};
use crate::tls::{BackendTls, ClientTls};
use arc_swap::ArcSwap;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

/// An immutable view of the configuration and what is derived from it; swapped whole on reload.
///
/// The snapshot of the whole config also holds one *view* per cluster: the same snapshot with
/// `config.nodes`, `config.health` and `config.routing` (and the weights and classifier derived
/// from them) being that cluster's. Sessions hold the view of their database's cluster.
pub struct Snapshot {
    pub config: Config,
    pub users: Arc<UserDirectory>,
    /// Read/write classification for this config's function lists (cached by statement text).
    pub classifier: Arc<Classifier>,
    /// `[[nodes]] weight`, in node order.
    pub weights: Vec<u32>,
    /// TLS toward clients (`None` = client_tls_mode disable), certificates read at build time.
    pub client_tls: Option<Arc<ClientTls>>,
    /// TLS toward PostgreSQL.
    pub backend_tls: BackendTls,
    /// The cluster whose nodes `config.nodes` are (`default` for the whole config's snapshot).
    pub cluster: Arc<str>,
    /// Per cluster name, its view (empty in a view).
    views: BTreeMap<String, Arc<Snapshot>>,
    /// How Patroni's REST API is reached (this `config.routing`'s `patroni_*`), certificates
    /// read at build time.
    pub patroni: Arc<crate::health::PatroniAccess>,
}

impl Snapshot {
    /// The view of the cluster serving `database`; `None` if no database entry serves it.
    pub fn view_for(&self, database: &str) -> Option<Arc<Snapshot>> {
        self.views.get(self.config.cluster_of(database)?).cloned()
    }

    /// Every cluster's view, by name.
    pub fn views(&self) -> impl Iterator<Item = (&str, &Arc<Snapshot>)> {
        self.views.iter().map(|(name, view)| (name.as_str(), view))
    }

    /// The nodes of the cluster serving `database`, from a view or the whole snapshot.
    pub fn nodes_for(&self, database: &str) -> Option<&[crate::config::NodeConfig]> {
        let cluster = self.config.cluster_of(database)?;
        if *self.cluster == *cluster {
            return Some(&self.config.nodes);
        }
        self.views.get(cluster).map(|view| view.config.nodes.as_slice())
    }
}

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
    pub routes: crate::client::session::routing::RouteCounters,
    /// SHOW STATS averages of the last completed `stats_period`.
    pub last_period: crate::admin::averages::LastPeriod,
    /// Cancel requests being forwarded to `[peers]` (SHOW PEER_POOLS).
    pub peer_cancels: crate::client::peers::PeerCancels,
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
    UnixSocket(#[from] crate::listener::unix_socket::UnixSocketError),
    #[error("preparing user secrets failed: {0}")]
    Users(String),
    /// auth_file or auth_hba_file is unreadable or malformed.
    #[error(transparent)]
    Auth(#[from] DirectoryError),
    #[error("cannot start the per-core workers: {source}")]
    Workers {
        #[source]
        source: std::io::Error,
    },
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

/// What a pool for (`database`, `user`) on the node at `addr` runs with under `config`, with the
/// secret the config alone provides. Reload compares these with what existing pools have.
pub(crate) fn pool_settings(
    snapshot: &Snapshot,
    database: &str,
    user: &UserConfig,
    addr: Arc<str>,
) -> PoolSettings {
    let config = &snapshot.config;
    let pool = &config.pool;
    let (login_user, secret) = server_login(config, database, user);
    PoolSettings {
        addr,
        login: BackendLogin {
            user: login_user,
            database: config
                .server_dbname(database)
                .unwrap_or_else(|| database.to_string()),
            secret,
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
        login_retry: pool.server_login_retry.0,
    }
}

/// The user and secret a pool logs in to PostgreSQL with: the database's own `user` (with its
/// `password`, else that user's `[[users]]` entry), else the client user's backend login.
fn server_login(config: &Config, database: &str, user: &UserConfig) -> (String, BackendSecret) {
    let forced = config
        .database(database)
        .and_then(|db| Some((db.user.clone()?, db)));
    let Some((name, db)) = forced else {
        let name = user.backend_user.clone().unwrap_or_else(|| user.name.clone());
        return (name, backend_secret(user));
    };
    let secret = match (&db.password, config.user(&name)) {
        (Some(password), _) => {
            let entry = UserConfig {
                name: name.clone(),
                password: Some(password.clone()),
                auth_method: None,
                backend_user: None,
                backend_password: None,
                pool_size: None,
                max_user_connections: None,
            };
            backend_secret(&entry)
        }
        (None, Some(entry)) => backend_secret(entry),
        (None, None) => BackendSecret::None,
    };
    (name, secret)
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
    /// `runtime = "per_core"`: the worker threads, stopped when the proxy is dropped (after
    /// `shutdown_within` has closed the pools).
    _workers: Option<Workers>,
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
        let health = start_healths(&snapshot, &shutdown);
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let instance_id = snapshot.config.peers.instance_id;
        let shared = Arc::new(Shared {
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
        });
        let tasks = TaskTracker::new();
        let names: Vec<String> = listeners.iter().map(listener::Listener::describe).collect();
        let mut listeners = listeners;
        let (workers, accepting) = start_workers(&shared, &mut listeners, &tasks)?;
        let accept = tokio::spawn(listener::accept_all(
            shared.clone(),
            listeners,
            tasks.clone(),
            accepting,
        ));
        let janitor = tokio::spawn(janitor(shared.clone()));
        tokio::spawn(wake_clients_on_stop(&shared));
        tokio::spawn(crate::admin::averages::run(Arc::downgrade(&shared)));
        for health in shared.healths().values() {
            watch_role_changes(&shared, health);
        }
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
            _workers: workers,
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
    let users = Arc::new(UserDirectory::build(&config, &backend_tls)?);
    let classifier =
        Arc::new(Classifier::new(&config.routing.classifier()).map_err(|e| AppError::Users(e.to_string()))?);
    let client_tls = ClientTls::build(&config.tls)?;
    let patroni = Arc::new(crate::health::PatroniAccess::build(&config.routing)?);
    let mut views = BTreeMap::new();
    for name in config.cluster_names() {
        let Some(view) = config.cluster_view(name) else {
            continue;
        };
        // Clusters without routing of their own share the whole config's classifier (and cache).
        let classifier = if view.routing.classifier() == config.routing.classifier() {
            classifier.clone()
        } else {
            Arc::new(Classifier::new(&view.routing.classifier()).map_err(|e| AppError::Users(e.to_string()))?)
        };
        // Likewise Patroni access: a cluster's own `[routing]` reads its own certificates.
        let patroni = if view.routing.patroni_access() == config.routing.patroni_access() {
            patroni.clone()
        } else {
            Arc::new(crate::health::PatroniAccess::build(&view.routing)?)
        };
        let view = Snapshot {
            patroni,
            weights: view.nodes.iter().map(|n| n.weight).collect(),
            config: view,
            users: users.clone(),
            classifier,
            client_tls: client_tls.clone(),
            backend_tls: backend_tls.clone(),
            cluster: Arc::from(name),
            views: BTreeMap::new(),
        };
        views.insert(name.to_string(), Arc::new(view));
    }
    Ok(Snapshot {
        weights: config.nodes.iter().map(|n| n.weight).collect(),
        patroni,
        config,
        users,
        classifier,
        client_tls,
        backend_tls,
        cluster: Arc::from(crate::config::DEFAULT_CLUSTER),
        views,
    })
}

/// Health checkers for every cluster of `snapshot` with more than one node.
pub(crate) fn start_healths(snapshot: &Snapshot, shutdown: &Shutdown) -> HealthMap {
    (snapshot.views())
        .filter_map(|(name, view)| Some((name.to_string(), Arc::new(start_health(view, shutdown)?))))
        .collect()
}

/// With several nodes, a checker per node of the cluster `view` is of finds the primary and
/// measures lag. It logs in as the first configured user that has a password usable toward
/// PostgreSQL.
pub(crate) fn start_health(view: &Snapshot, shutdown: &Shutdown) -> Option<Health> {
    let (nodes, login) = health_plan(view)?;
    let config = &view.config;
    // Validated with the config, so nothing is dropped here.
    let patroni = (config.routing.patroni_api.iter())
        .filter_map(|url| crate::health::PatroniUrl::parse(url).ok())
        .map(|url| url.with_access(view.patroni.clone()))
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

/// The nodes of the cluster `view` is of and the login to check them with; `None` when there
/// is nothing to choose between (a single node). Reload restarts the checkers when this, the
/// cluster's `[health]` or its Patroni endpoints change.
pub(crate) fn health_plan(view: &Snapshot) -> Option<(Vec<Arc<str>>, BackendLogin)> {
    let config = &view.config;
    if config.nodes.len() < 2 {
        return None;
    }
    let database = config.health_dbname(&view.cluster);
    let user = config
        .users
        .iter()
        .find(|u| !matches!(backend_secret(u), BackendSecret::None))
        .or_else(|| config.users.first())?;
    let login = BackendLogin {
        user: user.backend_user.clone().unwrap_or_else(|| user.name.clone()),
        database,
        secret: backend_secret(user),
        tls: view.backend_tls.clone(),
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
        .and_then(|p| crate::auth::Secret::parse(p).ok());
    crate::auth::backend_secret(user, secret.as_ref())
}

/// Binds every `listen` address, then the Unix socket named after the first one's port (port
/// 0 resolved); returns the listeners and the first address.
fn bind_all(proxy: &crate::config::ProxyConfig) -> Result<(Vec<listener::Listener>, SocketAddr), AppError> {
    let mut listeners = Vec::new();
    let mut first = None;
    for &addr in proxy.listen.all() {
        let std_listener = listener::bind_tcp(addr, only_v6(proxy, addr))
            .map_err(|source| AppError::Listen { addr, source })?;
        let tcp = TcpListener::from_std(std_listener).map_err(|source| AppError::Listen { addr, source })?;
        let local = tcp
            .local_addr()
            .map_err(|source| AppError::Listen { addr, source })?;
        first.get_or_insert(local);
        listeners.push(listener::Listener::Tcp(tcp));
    }
    let first = first.expect("listen is never empty");
    if let Some(unix) = proxy.unix_socket() {
        let (std_listener, file) = crate::listener::unix_socket::bind(&unix, first.port())?;
        let listener = tokio::net::UnixListener::from_std(std_listener).map_err(|source| {
            crate::listener::unix_socket::UnixSocketError::Io {
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

/// `[::]:p` is dual-stack unless `0.0.0.0:p` (or another IPv4 address on p) is listed too.
fn only_v6(proxy: &crate::config::ProxyConfig, addr: SocketAddr) -> bool {
    addr.is_ipv6()
        && (proxy.listen.all().iter()).any(|a| a.is_ipv4() && a.port() == addr.port() && addr.port() != 0)
}

/// With `runtime = "per_core"`, hands the TCP listeners to per-core workers (the Unix socket
/// stays here) and starts them; with the work-stealing runtime, leaves everything here.
fn start_workers(
    shared: &Arc<Shared>,
    listeners: &mut Vec<listener::Listener>,
    tasks: &TaskTracker,
) -> Result<(Option<Workers>, listener::per_core::Accepting), AppError> {
    let proxy = &shared.snapshot().config.proxy;
    if proxy.runtime != crate::config::RuntimeMode::PerCore {
        return Ok((None, Vec::new()));
    }
    let count = match proxy.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let mut tcp = Vec::new();
    for one in std::mem::take(listeners) {
        match one {
            listener::Listener::Tcp(t) => {
                let addr = t.local_addr().map_err(|source| AppError::Workers { source })?;
                let std_listener = t.into_std().map_err(|source| AppError::Workers { source })?;
                tcp.push((std_listener, only_v6(proxy, addr)));
            }
            unix => listeners.push(unix),
        }
    }
    let (workers, accepting) =
        Workers::start(shared, tcp, count, tasks).map_err(|source| AppError::Workers { source })?;
    tracing::info!(workers = count, "per-core runtimes started");
    Ok((Some(workers), accepting))
}

/// When a node's role changes, its pooled connections are retired: a connection opened to a
/// primary must not serve as a standby's, nor the reverse. Ends when health checking stops;
/// holds the shared state weakly so that it never keeps the proxy alive.
/// Starts [`retire_on_role_change`] for the current health checkers (at start, and after a
/// reload replaced them: the previous watcher ends with its checkers).
pub(crate) fn watch_role_changes(shared: &Arc<Shared>, health: &Health) {
    tokio::spawn(retire_on_role_change(health.subscribe(), Arc::downgrade(shared)));
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
/// Wakes every logged-in client each time the stop moves on, so that idle sessions look at the
/// stage (`client::drain::stop_due`) without each holding a subscription per wait. Holds the
/// proxy weakly: the task ends with it.
fn wake_clients_on_stop(shared: &Arc<Shared>) -> impl std::future::Future<Output = ()> + Send + 'static {
    let mut stop = shared.shutdown.subscribe();
    let shared = Arc::downgrade(shared);
    async move {
        while stop.changed().await.is_ok() {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            for client in shared.sessions.all() {
                client.wake();
            }
        }
    }
}

async fn janitor(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let hazards_every = crate::client::features::isolation::catalog::REFRESH_EVERY
        .as_secs()
        .max(1);
    let mut ticks = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shared.shutdown.wait() => return,
        }
        ticks += 1;
        if ticks % hazards_every == 0 {
            shared.hazards.mark_all_due();
        }
        let snapshot = shared.snapshot();
        crate::reload::reconcile_pools(&shared, &snapshot);
        close_idle_auto_databases(&shared, &snapshot);
        for pool in shared.pools.all() {
            pool.yield_to_cap_waiters();
            pool.maintain();
        }
    }
}

/// Closes the databases served through `*` that no client used for `autodb_idle_timeout`:
/// their pools are retired (idle connections close now). A database is in use while a client
/// is logged in to it or one of its connections is borrowed.
fn close_idle_auto_databases(shared: &Shared, snapshot: &Snapshot) {
    let idle = snapshot.config.pool.autodb_idle_timeout.0;
    let pools = shared.pools.all();
    let mut in_use: std::collections::HashSet<String> =
        shared.sessions.all().iter().map(|c| c.database.clone()).collect();
    for pool in &pools {
        let (open, idle_count, waiting) = pool.counts();
        if open > idle_count || waiting > 0 {
            in_use.insert(pool.key.database.clone());
        }
    }
    for name in shared.pools.auto.expire(|name| in_use.contains(name), idle) {
        tracing::info!(database = %name, "database served through \"*\" closed: idle");
        for pool in pools.iter().filter(|p| p.key.database == name) {
            shared.pools.retire(pool);
        }
    }
}
