//! Closing connections that should go, and opening the ones missing: the janitor's upkeep
//! (eviction, prewarming, cap waiters), retirement (reload, role change), holds and RECONNECT.

use super::{CapPermit, CheckoutHold, Pool, Server};
use crate::backend;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use tokio::time::Instant;

impl Pool {
    /// Takes the pool out of service (reload): idle connections close now, busy ones when they
    /// are released; clients are never cut off.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Release);
        self.close_idle();
    }

    pub fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Acquire)
    }

    /// Periodic upkeep: closes expired idle connections and opens up to `min_pool_size`.
    pub fn maintain(self: &Arc<Self>) {
        let settings = self.settings();
        let expired = self
            .lock()
            .expire(Instant::now(), settings.idle_timeout, settings.lifetime);
        close_all(expired);
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
        close_all(one);
    }

    /// Closes idle connections opened before the last RECONNECT or KILL.
    pub fn close_idle_stale(&self) {
        let stale = self
            .lock()
            .drain_idle_where(|c: &Server| c.ticket.as_ref().is_some_and(|t| t.entry().close_needed()));
        close_all(stale);
    }

    /// The node's role changed (promoted, demoted, fenced) or it went down under a client: every
    /// connection open now is closed, idle ones at once, checked-out ones when released (never
    /// mid-transaction).
    pub fn retire_connections(&self) {
        let idle = self.lock().retire_open(Instant::now());
        close_all(idle);
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
        close_all(idle);
        count
    }
}

/// Closes connections already taken out of the pool's count, each in its own task.
fn close_all(conns: Vec<Server>) {
    for conn in conns {
        tokio::spawn(conn.terminate());
    }
}
