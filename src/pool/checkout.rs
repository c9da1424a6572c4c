//! Checking a connection out: an idle one (checked first when it sat long enough), a new one
//! under the pool's and the caps' limits, or a place in the FIFO until one is released, within
//! `query_wait_timeout`.

use super::core::{Acquire, Grant};
use super::{CapPermit, Pool, PoolSettings, Server, ServerState, Want};
use crate::backend::{self, BackendError};
use std::sync::atomic::Ordering;
use tokio::time::Instant;

/// Why a checkout failed.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("query_wait_timeout")]
    WaitTimeout,
    #[error(transparent)]
    Backend(#[from] BackendError),
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
    /// `now`: the caller's clock reading (it uses the same one for its own accounting).
    pub fn checkout_idle_now(&self, want: Want, now: Instant) -> Option<Server> {
        if self.is_paused() {
            return None;
        }
        let settings = self.settings.load();
        let needs_check = |conn: &Server| {
            !settings.check_query.is_empty()
                && now.saturating_duration_since(conn.last_used) >= settings.check_delay
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
}
