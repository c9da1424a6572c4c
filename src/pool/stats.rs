//! What a pool counts for the admin console and metrics: relaxed atomic counters, and the
//! open / idle / waiting numbers read from the core.

use super::Pool;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;
use tokio::time::Instant;

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
    pub cancels: Arc<crate::pool::CancelCounts>,
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

impl Pool {
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

    /// (open, idle, waiting) right now.
    pub fn counts(&self) -> (usize, usize, usize) {
        let core = self.lock();
        (core.open(), core.idle_count(), core.waiting())
    }
}
