//! Wiring: builds the shared state from a config, binds the listener, starts the background
//! tasks, and stops them all on shutdown.
//!
//! The parts: `snapshot.rs` (the config snapshot and its cluster views), `shared.rs` (the
//! handle every task gets), `pool_settings.rs` (what a pool logs in and runs with),
//! `health.rs` (checkers per cluster, retiring connections on role changes), `bind.rs` (the
//! listeners), `janitor.rs` (the once-a-second upkeep).

mod bind;
mod health;
mod janitor;
mod pool_settings;
mod shared;
mod snapshot;

pub(crate) use health::{health_plan, start_health, start_healths, watch_role_changes};
pub(crate) use pool_settings::pool_settings;
pub use shared::{HealthMap, ProxyStats, Shared};
pub(crate) use snapshot::build_snapshot;
pub use snapshot::Snapshot;

use crate::auth::DirectoryError;
use crate::config::Config;
use crate::listener;
use crate::shutdown::Shutdown;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::task::TaskTracker;

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
    _workers: Option<listener::per_core::Workers>,
}

impl Proxy {
    /// Binds `proxy.listen` (port 0 picks a free port) and starts serving.
    pub async fn start(config: Config) -> Result<Proxy, AppError> {
        // Deriving SCRAM verifiers costs thousands of hash rounds per user: keep it off the
        // async workers.
        let snapshot = tokio::task::spawn_blocking(move || build_snapshot(config))
            .await
            .map_err(|e| AppError::Users(e.to_string()))??;
        let (listeners, addr) = bind::bind_all(&snapshot.config.proxy)?;
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
        let shared = Arc::new(Shared::new(snapshot, health, shutdown));
        let tasks = TaskTracker::new();
        let names: Vec<String> = listeners.iter().map(listener::Listener::describe).collect();
        let mut listeners = listeners;
        let (workers, accepting) = bind::start_workers(&shared, &mut listeners, &tasks)?;
        let accept = tokio::spawn(listener::accept_all(
            shared.clone(),
            listeners,
            tasks.clone(),
            accepting,
        ));
        let janitor = tokio::spawn(janitor::run(shared.clone()));
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

/// Wakes every logged-in client each time the stop moves on, so that idle sessions look at the
/// stage (`client::session::drain::stop_due`) without each holding a subscription per wait. Holds the
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
