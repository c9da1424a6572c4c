//! `transaction_timeout`: a client that has been inside one transaction longer than this is
//! disconnected with FATAL 25P04, as PostgreSQL 17's own `transaction_timeout` does (its
//! backend is rolled back or closed like any client's that leaves mid-transaction).
//!
//! The session loop tells the clock, at each turn, whether it is quiet and whether the client
//! is inside a transaction. A transaction starts with the request that opened it when that
//! request started a turn (transaction mode: the first request after a backend was
//! attached), else at the turn that first saw the transaction (at its first ReadyForQuery).

use super::login::CloseReason;
use super::session::Session;
use crate::protocol::{ErrorFields, SqlState};
use std::time::Duration;
use tokio::time::Instant;

/// PostgreSQL's SQLSTATE for `transaction_timeout` (`idle_in_transaction_session_timeout` is
/// its neighbour 25P03).
pub const TRANSACTION_TIMEOUT: SqlState = SqlState::new("25P04");

/// When the client's current transaction began, if it is in one.
#[derive(Debug, Default)]
pub(super) struct TransactionClock {
    since: Option<Instant>,
    /// A request outside a transaction started a turn here: the start if it opens one.
    request: Option<Instant>,
}

impl TransactionClock {
    /// One turn of the request loop; returns when the transaction times out (`timeout` of
    /// `None`: never).
    pub(super) fn observe(
        &mut self,
        quiet: bool,
        in_transaction: bool,
        timeout: Option<Duration>,
    ) -> Option<Instant> {
        let Some(timeout) = timeout else {
            // Off: no clock read on the hot path.
            *self = TransactionClock::default();
            return None;
        };
        let now = Instant::now();
        if !in_transaction {
            self.since = None;
            self.request = if quiet { None } else { self.request.or(Some(now)) };
        } else if self.since.is_none() {
            self.since = Some(self.request.take().unwrap_or(now));
        }
        Some(self.since? + timeout)
    }
}

impl Session {
    /// `proxy.transaction_timeout`, if set.
    pub(super) fn transaction_timeout(&self) -> Option<Duration> {
        self.snapshot.config.proxy.transaction_timeout.non_zero()
    }

    /// The client stayed in one transaction past `transaction_timeout`.
    pub(super) async fn transaction_timeout_hit(&mut self) -> CloseReason {
        let error = ErrorFields::fatal(
            TRANSACTION_TIMEOUT,
            "terminating connection due to transaction timeout",
        );
        self.client.send_fatal(error).await;
        CloseReason::TransactionTimeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_clock_runs_from_the_request_that_opened_the_transaction() {
        let timeout = Some(Duration::from_secs(10));
        let mut clock = TransactionClock::default();
        assert_eq!(clock.observe(true, false, timeout), None);
        // A request starts a turn outside a transaction; it turns out to open one.
        let opened = Instant::now();
        assert_eq!(clock.observe(false, false, timeout), None);
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(
            clock.observe(true, true, timeout),
            Some(opened + Duration::from_secs(10))
        );
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(
            clock.observe(false, true, timeout),
            Some(opened + Duration::from_secs(10))
        );
        assert_eq!(clock.observe(true, true, None), None, "off");
        // Committed: the next transaction (seen only at its ReadyForQuery) has its own clock.
        assert_eq!(clock.observe(true, false, timeout), None);
        let seen = Instant::now();
        assert_eq!(
            clock.observe(true, true, timeout),
            Some(seen + Duration::from_secs(10))
        );
    }
}
