//! Backend connection pools, one per (database, user, node).
//!
//! Design: each `Pool` keeps its bookkeeping in a `PoolCore` under a plain mutex that is never held
//! across an `.await`; all I/O (connect, check, close) happens outside the lock. A client that
//! finds the pool exhausted parks on a oneshot in the core's FIFO; whoever releases a connection
//! hands it straight to the first waiter, so no task polls and nobody is woken for nothing. One
//! janitor task (`app/janitor.rs`) calls `maintain` every second for idle/lifetime eviction and prewarming.

mod autodb;
mod caps;
mod control;
mod core;
mod hold;
mod login_retry;
mod registry;
mod servers;

pub use self::core::{Limits, Pooled, Want};
pub use autodb::{AutoDatabases, TooManyDatabases};
pub use caps::{CapPermit, ConnCap, ConnCaps};
pub use control::{DbControl, DbControls};
pub use hold::CheckoutHold;
pub use registry::{PoolKey, Pools};
pub use servers::{ServerEntry, ServerRegistry, ServerState, ServerTicket};

use self::core::{Acquire, Grant, PoolCore, Released};
use crate::backend::{self, BackendConn, BackendError, BackendLogin};
use crate::config::PoolMode;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
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

/// Why a checkout failed.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("query_wait_timeout")]
    WaitTimeout,
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// Counters read by the admin console and metrics; updated with relaxed atomics.
#[derive(Debug, Default)]
pub struct PoolStats {
    pub waiting_clients: AtomicUsize,
    pub checkouts: AtomicU64,
    pub connects: AtomicU64,
    pub connect_failures: AtomicU64,
    pub wait_timeouts: AtomicU64,
    /// Connections being opened (SHOW POOLS sv_login).
    pub connecting: AtomicUsize,
    /// Transactions completed (a quiet point outside a transaction), SHOW STATS.
    pub transactions: AtomicU64,
    /// Requests answered (Query, Sync, FunctionCall).
    pub queries: AtomicU64,
    /// Cancel requests for this pool's clients being forwarded (SHOW POOLS).
    pub cancels: Arc<crate::client::cancel::CancelCounts>,
    /// Bytes received from clients and sent to them while attached to this pool's backends.
    pub received: AtomicU64,
    pub sent: AtomicU64,
    /// Microseconds backends spent on requests, and clients waited for a backend.
    pub query_time_us: AtomicU64,
    pub wait_time_us: AtomicU64,
    /// Parse messages from clients, Parses sent to backends, Binds from clients (SHOW STATS).
    pub client_parses: AtomicU64,
    pub server_parses: AtomicU64,
    pub binds: AtomicU64,
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
    /// Connections opened at or before this instant are closed when released: their node's
    /// role changed since (see [`Pool::retire_connections`]).
    retired_before: Mutex<Option<Instant>>,
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

/// Parameters a client wants its connection opened with (session mode) and their signature.
#[derive(Debug, Clone, Copy)]
pub struct StartupWish<'a> {
    pub want: Want,
    pub params: &'a [(String, String)],
}

/// Gives back the pool slot of a connection that never came to be, even if the future is dropped.
struct SlotGuard<'a> {
    pool: &'a Pool,
    armed: bool,
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.pool.lock().forget();
        }
    }
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
            retired_before: Mutex::new(None),
            caps: context.caps,
            login_failure: Default::default(),
            hold: Default::default(),
        }
    }

    /// True while PAUSE, SUSPEND or KILL holds this pool's new checkouts.
    pub fn is_paused(&self) -> bool {
        self.controls.paused(&self.control)
    }

    /// Waits while the pool is paused (counted as a waiting client).
    async fn wait_while_paused(&self) {
        self.stats.waiting_clients.fetch_add(1, Ordering::Relaxed);
        while self.is_paused() {
            // Wait on a switch that is on: one that is off resolves at once, and racing it would
            // spin (and starve whatever else the task waits for of its coop budget).
            if self.controls.global.is_paused() {
                self.controls.global.wait_resumed().await;
            } else {
                self.control.wait_resumed().await;
            }
        }
        self.stats.waiting_clients.fetch_sub(1, Ordering::Relaxed);
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

    /// Idle connections that will run `server_check_query` before serving again: idle for
    /// `server_check_delay` or more (SHOW POOLS sv_used).
    pub fn idle_needing_check(&self) -> usize {
        let settings = self.settings.load();
        if settings.check_query.is_empty() {
            return 0;
        }
        match Instant::now().checked_sub(settings.check_delay) {
            Some(cutoff) => self.lock().idle_released_by(cutoff),
            None => 0,
        }
    }

    /// Active (checked out or opening) connections right now.
    pub fn active(&self) -> usize {
        let (open, idle, _) = self.counts();
        open - idle
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

    /// Takes the pool out of service (reload): idle connections close now, busy ones when they
    /// are released; clients are never cut off.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Release);
        self.close_idle();
    }

    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// (open, idle, waiting) right now.
    pub fn counts(&self) -> (usize, usize, usize) {
        let core = self.lock();
        (core.open(), core.idle_count(), core.waiting())
    }

    /// Gets a connection: an idle one, a new one, or the next one released, within
    /// `query_wait_timeout`.
    pub async fn checkout(&self, wish: StartupWish<'_>) -> Result<Server, PoolError> {
        if self.is_paused() {
            self.wait_while_paused().await;
        }
        let conn = self.checkout_unmarked(wish).await?;
        if let Some(ticket) = &conn.ticket {
            ticket.set_state(ServerState::Active);
        }
        Ok(conn)
    }

    /// The common checkout, without a future: an idle connection that needs no check, or
    /// `None` (paused, nothing idle, or the idle one needs a look): then call `checkout`.
    pub fn checkout_idle_now(&self, want: Want) -> Option<Server> {
        if self.is_paused() {
            return None;
        }
        let settings = self.settings.load();
        let needs_check = |conn: &Server| {
            !settings.check_query.is_empty() && conn.last_used.elapsed() >= settings.check_delay
        };
        // A connection that spoke while idle is left for `checkout`, which discards it.
        let conn = self
            .lock()
            .take_idle(want, |conn| !needs_check(conn) && !conn.spoke_while_idle())?;
        self.stats.checkouts.fetch_add(1, Ordering::Relaxed);
        if let Some(ticket) = &conn.ticket {
            ticket.set_state(ServerState::Active);
        }
        Some(conn)
    }

    async fn checkout_unmarked(&self, wish: StartupWish<'_>) -> Result<Server, PoolError> {
        let settings = self.settings();
        let started = Instant::now();
        self.stats.checkouts.fetch_add(1, Ordering::Relaxed);
        loop {
            let step = self.lock().acquire(wish.want);
            match step {
                Acquire::Idle(conn) => {
                    if let Some(conn) = self.check_idle(conn, &settings).await {
                        return Ok(conn);
                    }
                }
                Acquire::Connect => return self.open_in_slot(&settings, wish, started).await,
                Acquire::Replace(old) => {
                    tokio::spawn(old.terminate());
                    return self.open_in_slot(&settings, wish, started).await;
                }
                Acquire::Wait { waiter, grant } => {
                    self.stats.waiting_clients.fetch_add(1, Ordering::Relaxed);
                    let granted = self.wait(waiter, grant, &settings, started).await;
                    self.stats.waiting_clients.fetch_sub(1, Ordering::Relaxed);
                    match granted {
                        Ok(Grant::Conn(conn)) => {
                            if let Some(conn) = self.check_idle(conn, &settings).await {
                                return Ok(conn);
                            }
                        }
                        Ok(Grant::Slot) => return self.open_in_slot(&settings, wish, started).await,
                        Err(e) => return Err(e),
                    }
                }
            }
        }
    }

    /// Waits for a grant; after `reserve_timeout` tries the reserve; gives up at the deadline.
    async fn wait(
        &self,
        waiter: u64,
        mut grant: tokio::sync::oneshot::Receiver<Grant<Server>>,
        settings: &PoolSettings,
        started: Instant,
    ) -> Result<Grant<Server>, PoolError> {
        // Dropped mid-wait (client gone): the closed receiver is skipped by the next release.
        let deadline = settings.query_wait_timeout.map(|t| started + t);
        let mut reserve_at = (settings.limits.reserve_size > 0).then(|| started + settings.reserve_timeout);
        loop {
            let reserve_sleep = async {
                match reserve_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let deadline_sleep = async {
                match deadline {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                got = &mut grant => {
                    // The sender is only dropped with the pool itself.
                    return got.map_err(|_| PoolError::WaitTimeout);
                }
                _ = reserve_sleep => {
                    reserve_at = None;
                    if self.lock().try_reserve(waiter) {
                        return Ok(Grant::Slot);
                    }
                }
                _ = deadline_sleep => {
                    if self.lock().cancel_wait(waiter) {
                        self.stats.wait_timeouts.fetch_add(1, Ordering::Relaxed);
                        return Err(PoolError::WaitTimeout);
                    }
                    // Granted at the last moment: take it.
                    return grant.await.map_err(|_| PoolError::WaitTimeout);
                }
            }
        }
    }

    /// Opens a connection in a slot already counted as open.
    async fn open_in_slot(
        &self,
        settings: &PoolSettings,
        wish: StartupWish<'_>,
        started: Instant,
    ) -> Result<Server, PoolError> {
        let mut guard = SlotGuard {
            pool: self,
            armed: true,
        };
        if let Some(refused) = self.login_failure.cached(settings.login_retry) {
            return Err(refused.into());
        }
        let deadline = settings.query_wait_timeout.map(|t| started + t);
        if self.hold.is_held() {
            self.stats.waiting_clients.fetch_add(1, Ordering::Relaxed);
            let released = self.hold.wait_released(deadline).await;
            self.stats.waiting_clients.fetch_sub(1, Ordering::Relaxed);
            if !released {
                self.stats.wait_timeouts.fetch_add(1, Ordering::Relaxed);
                return Err(PoolError::WaitTimeout);
            }
        }
        let permits = self.cap_permits(deadline).await?;
        let id = self.conn_ids.fetch_add(1, Ordering::Relaxed);
        self.stats.connects.fetch_add(1, Ordering::Relaxed);
        self.stats.connecting.fetch_add(1, Ordering::Relaxed);
        let result = backend::connect(
            &settings.addr,
            &settings.login,
            wish.params,
            wish.want.unwrap_or(0),
            id,
            settings.connect_timeout,
        )
        .await;
        self.stats.connecting.fetch_sub(1, Ordering::Relaxed);
        self.login_failure.record(result.as_ref().map(|_| ()));
        match result {
            Ok(conn) => {
                guard.armed = false;
                let mut conn = Box::new(conn);
                self.register(&mut conn, permits);
                Ok(conn)
            }
            Err(e) => {
                self.stats.connect_failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(pool = %self.key, error = %e, "backend connection failed");
                Err(e.into())
            }
        }
    }

    /// Runs `server_check_query` on a connection idle longer than `server_check_delay`;
    /// returns it if healthy, else closes it and frees its slot.
    async fn check_idle(&self, mut conn: Server, settings: &PoolSettings) -> Option<Server> {
        if conn.spoke_while_idle() {
            // Typically a FATAL then EOF: the server shut down, restarted after a crash, or
            // terminated the backend. Handing it out would fail the client's next request.
            tracing::info!(pool = %self.key, backend = conn.id, "idle backend was closed by the server; discarding it");
            self.discard(conn);
            return None;
        }
        if settings.check_query.is_empty() || conn.last_used.elapsed() < settings.check_delay {
            return Some(conn);
        }
        if let Some(ticket) = &conn.ticket {
            ticket.set_state(ServerState::Tested);
        }
        match conn.run_simple(&settings.check_query).await {
            Ok(outcome) if outcome.error.is_none() && conn.is_reusable() => Some(conn),
            _ => {
                tracing::info!(pool = %self.key, backend = conn.id, "idle backend failed its check; closing it");
                self.discard(conn);
                None
            }
        }
    }

    /// Returns a connection that is idle and clean; anything else is discarded.
    pub fn release(&self, mut conn: Server) {
        let retired = *self.retired_before.lock().unwrap_or_else(|p| p.into_inner());
        let close_needed = match &conn.ticket {
            Some(ticket) => {
                ticket.set_state(ServerState::Idle);
                ticket.link(0);
                ticket.entry().close_needed()
            }
            None => false,
        };
        if !conn.is_reusable()
            || close_needed
            || self.is_retired()
            || self.hold.is_held()
            || retired.is_some_and(|at| conn.created <= at)
        {
            self.discard(conn);
            return;
        }
        let settings = self.settings.load();
        let now = Instant::now();
        if settings
            .lifetime
            .is_some_and(|l| now.duration_since(conn.created) >= l)
        {
            self.discard(conn);
            return;
        }
        conn.last_used = now;
        let released = self.lock().release(conn, now);
        if let Released::Close(conn) = released {
            tokio::spawn(conn.terminate());
        }
    }

    /// Closes a connection that must not be reused and frees its slot.
    pub fn discard(&self, conn: Server) {
        self.lock().forget();
        tokio::spawn(conn.terminate());
    }

    /// Periodic upkeep: closes expired idle connections and opens up to `min_pool_size`.
    pub fn maintain(self: &Arc<Self>) {
        let settings = self.settings();
        let expired = self
            .lock()
            .expire(Instant::now(), settings.idle_timeout, settings.lifetime);
        for conn in expired {
            tokio::spawn(conn.terminate());
        }
        if self.hold.is_held() {
            return;
        }
        let missing = self.lock().prewarm();
        for _ in 0..missing {
            let pool = self.clone();
            let settings = settings.clone();
            // Prewarming never waits for a cap: a full one means the slot is not used.
            let Some(permits) = self.cap_permits_now() else {
                self.lock().forget();
                continue;
            };
            tokio::spawn(async move {
                let id = pool.conn_ids.fetch_add(1, Ordering::Relaxed);
                let result = backend::connect(
                    &settings.addr,
                    &settings.login,
                    &[],
                    0,
                    id,
                    settings.connect_timeout,
                )
                .await;
                match result {
                    Ok(conn) => {
                        let mut conn = Box::new(conn);
                        pool.register(&mut conn, permits);
                        pool.release(conn)
                    }
                    Err(e) => {
                        tracing::warn!(pool = %pool.key, error = %e, "prewarming a backend failed");
                        pool.lock().forget();
                    }
                }
            });
        }
    }

    /// A place under each cap, waiting (counted as a waiting client) until `deadline`.
    async fn cap_permits(&self, deadline: Option<Instant>) -> Result<Vec<CapPermit>, PoolError> {
        let mut permits = Vec::with_capacity(self.caps.len());
        for cap in &self.caps {
            if let Some(permit) = cap.try_acquire() {
                permits.push(permit);
                continue;
            }
            self.stats.waiting_clients.fetch_add(1, Ordering::Relaxed);
            let permit = cap.acquire(deadline).await;
            self.stats.waiting_clients.fetch_sub(1, Ordering::Relaxed);
            match permit {
                Some(permit) => permits.push(permit),
                None => {
                    self.stats.wait_timeouts.fetch_add(1, Ordering::Relaxed);
                    return Err(PoolError::WaitTimeout);
                }
            }
        }
        Ok(permits)
    }

    /// A place under each cap right now, or `None`.
    fn cap_permits_now(&self) -> Option<Vec<CapPermit>> {
        self.caps.iter().map(|cap| cap.try_acquire()).collect()
    }

    /// Closes one idle connection when a cap this pool counts against has waiters (of other
    /// pools: this pool's own clients would have taken it). Called by the janitor.
    pub fn yield_to_cap_waiters(&self) {
        if !self.caps.iter().any(|cap| cap.has_waiters()) {
            return;
        }
        let first = std::cell::Cell::new(true);
        let one = self.lock().drain_idle_where(|_| first.replace(false));
        for conn in one {
            tokio::spawn(conn.terminate());
        }
    }

    /// Closes idle connections opened before the last RECONNECT or KILL.
    pub fn close_idle_stale(&self) {
        let stale = self
            .lock()
            .drain_idle_where(|c: &Server| c.ticket.as_ref().is_some_and(|t| t.entry().close_needed()));
        for conn in stale {
            tokio::spawn(conn.terminate());
        }
    }

    /// The node's role changed (promoted, demoted, fenced): every connection open now is closed,
    /// idle ones at once, checked-out ones when released (never mid-transaction).
    pub fn retire_connections(&self) {
        *self.retired_before.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        self.close_idle();
    }

    /// Holds the pool for a statement that needs its database to itself: no connection opens
    /// and every one released closes until the hold is dropped; idle ones close now.
    pub fn hold_for_exclusive_use(self: &Arc<Self>) -> CheckoutHold {
        let hold = CheckoutHold::new(self.clone());
        self.close_idle();
        hold
    }

    /// Closes every idle connection (shutdown, RECONNECT); returns how many.
    pub fn close_idle(&self) -> usize {
        let idle = self.lock().drain_idle();
        let count = idle.len();
        for conn in idle {
            tokio::spawn(conn.terminate());
        }
        count
    }
}
