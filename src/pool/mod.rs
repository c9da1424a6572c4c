//! Backend connection pools, one per (database, user, node).
//!
//! Design: each `Pool` keeps its bookkeeping in a `PoolCore` under a plain mutex that is never held
//! across an `.await`; all I/O (connect, check, close) happens outside the lock. A client that
//! finds the pool exhausted parks on a oneshot in the core's FIFO; whoever releases a connection
//! hands it straight to the first waiter, so no task polls and nobody is woken for nothing. One
//! janitor task (`app/janitor.rs`) calls `maintain` every second for idle/lifetime eviction and prewarming.
//!
//! Files: `core.rs` is the synchronous bookkeeping; this file the `Pool` itself; `checkout.rs`,
//! `release.rs` and `upkeep.rs` what happens to its connections (out, back in, closed or
//! opened by the janitor and on command); `stats.rs` what it counts.

mod autodb;
mod cancel_counts;
mod caps;
mod checkout;
mod control;
mod core;
mod hold;
mod login_retry;
mod registry;
mod release;
mod servers;
mod stats;
mod upkeep;

pub use self::core::{Limits, Pooled, Want};
pub use autodb::{AutoDatabases, TooManyDatabases};
pub use cancel_counts::CancelCounts;
pub use caps::{CapPermit, ConnCap, ConnCaps};
pub use checkout::{PoolError, StartupWish};
pub use control::{DbControl, DbControls};
pub use hold::CheckoutHold;
pub use registry::{PoolKey, Pools};
pub use servers::{ServerEntry, ServerRegistry, ServerState, ServerTicket};
pub use stats::PoolStats;

use self::core::PoolCore;
use crate::backend::{BackendConn, BackendLogin};
use crate::config::PoolMode;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// A pooled server connection. Boxed: it changes hands several times per transaction (pool,
/// session, parked slots), and moving a pointer is cheaper than moving the connection.
pub type Server = Box<BackendConn>;

impl Pooled for Server {
    fn signature(&self) -> u64 {
        self.startup_signature
    }
    fn created(&self) -> Instant {
        self.created
    }
}

/// Everything a pool needs to open and look after its connections; rebuilt on reload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolSettings {
    pub addr: Arc<str>,
    pub login: BackendLogin,
    pub mode: PoolMode,
    pub limits: Limits,
    pub connect_timeout: Duration,
    pub query_wait_timeout: Option<Duration>,
    pub reserve_timeout: Duration,
    pub idle_timeout: Option<Duration>,
    pub lifetime: Option<Duration>,
    pub reset_query: String,
    pub check_query: String,
    pub check_delay: Duration,
    /// `server_login_retry`: how long a refused login is answered from cache (0 = off).
    pub login_retry: Duration,
}

/// One pool of backend connections to one node for one (database, user).
pub struct Pool {
    pub key: PoolKey,
    settings: arc_swap::ArcSwap<PoolSettings>,
    core: Mutex<PoolCore<Server>>,
    conn_ids: Arc<AtomicU64>,
    pub stats: PoolStats,
    /// This pool's database switches (PAUSE, DISABLE, RECONNECT) and the global ones.
    pub control: Arc<DbControl>,
    controls: Arc<DbControls>,
    servers: Arc<ServerRegistry>,
    /// Histogram handles, resolved once at creation.
    pub metrics: crate::metrics::PoolMetrics,
    /// Set when a reload changed this pool's backend settings or removed its database, user or
    /// node: connections close when released, and sessions move to the new pool.
    retired: AtomicBool,
    /// `max_db_connections` and `max_user_connections`: every connection holds a place in both.
    pub caps: [Arc<ConnCap>; 2],
    /// The last refused login, answered again for `server_login_retry`.
    login_failure: login_retry::LoginFailure,
    /// Held while a client's statement needs the database to itself (`hold.rs`).
    hold: hold::Hold,
}

/// What a pool shares with the others of its process.
pub(crate) struct PoolContext {
    pub caps: [Arc<ConnCap>; 2],
    pub conn_ids: Arc<AtomicU64>,
    pub controls: Arc<DbControls>,
    pub servers: Arc<ServerRegistry>,
    pub metrics: crate::metrics::PoolMetrics,
}

impl Pool {
    pub(crate) fn new(key: PoolKey, settings: PoolSettings, context: PoolContext) -> Self {
        Pool {
            core: Mutex::new(PoolCore::new(settings.limits)),
            settings: arc_swap::ArcSwap::from_pointee(settings),
            control: context.controls.get(&key.database),
            controls: context.controls,
            servers: context.servers,
            metrics: context.metrics,
            key,
            conn_ids: context.conn_ids,
            stats: PoolStats::default(),
            retired: AtomicBool::new(false),
            caps: context.caps,
            login_failure: Default::default(),
            hold: Default::default(),
        }
    }

    /// True while PAUSE, SUSPEND or KILL holds this pool's new checkouts.
    pub fn is_paused(&self) -> bool {
        self.controls.paused(&self.control)
    }

    /// Gives a new connection its registry entry (SHOW SERVERS).
    fn register(&self, conn: &mut BackendConn, permits: Vec<CapPermit>) {
        let settings = self.settings.load();
        conn.ticket = Some(self.servers.register(servers::NewServer {
            permits,
            id: conn.id,
            pool: &self.key,
            user: &settings.login.user,
            pid: conn.key.pid,
            local_addr: conn.stream.local_addr().ok(),
            control: &self.control,
        }));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolCore<Server>> {
        // A panic while holding this lock leaves counts that are still consistent enough to go on.
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn settings(&self) -> Arc<PoolSettings> {
        self.settings.load_full()
    }

    /// Applies new limits and timeouts (reload): a larger pool serves its waiters at once, a
    /// smaller one closes its surplus as connections come back. Checkouts already waiting keep
    /// the timeouts they started with.
    pub fn update_settings(&self, settings: PoolSettings) {
        self.settings.store(Arc::new(settings.clone()));
        self.lock().set_limits(settings.limits);
    }
}
