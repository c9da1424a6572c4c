//! Client-side timeouts of the request loop with PgBouncer's names.
//!
//! `query_timeout`: a request the server has not answered within this time is cancelled (a
//! CancelRequest to its backend), so the client gets PostgreSQL's 57014 "canceling
//! statement…" error and keeps its connection, as with `statement_timeout`. The relay is
//! driven through [`relay_timed`], which sees after each poll whether a request is
//! outstanding; the backend is not given back before PostgreSQL processed the cancel, so a
//! late cancel never reaches another client's query.
//!
//! `transaction_timeout`: a client that has been inside one transaction longer than this is
//! disconnected with FATAL 25P04, as PostgreSQL 17's own `transaction_timeout` does (its
//! backend is rolled back or closed like any client's that leaves mid-transaction).
//!
//! The session loop tells the clock, at each turn, whether it is quiet and whether the client
//! is inside a transaction. A transaction starts with the request that opened it when that
//! request started a turn (transaction mode: the first request after a backend was
//! attached), else at the turn that first saw the transaction (at its first ReadyForQuery).

use crate::backend::BackendConn;
use crate::client::cancel::CancelTarget;
use crate::client::conn::ClientConn;
use crate::client::login::CloseReason;
use crate::client::session::relay::{poll_relay, relay, Exchange, RelayEvent, Rewrite};
use crate::client::session::Session;
use crate::protocol::{ErrorFields, SqlState};
use std::future::{poll_fn, Future};
use std::task::Poll;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::either::Either;

/// [`relay`] with `query_timeout` (`None`: the plain relay, nothing added to the hot path).
/// Not an async fn, so the plain relay's future is just its references; the timed one, made
/// only when `query_timeout` is on, is boxed.
pub(crate) fn relay_timed<'a>(
    client: &'a mut ClientConn,
    backend: &'a mut BackendConn,
    ex: &'a mut Exchange,
    rewrite: Option<Rewrite<'a>>,
    timeout: Option<Duration>,
) -> impl Future<Output = RelayEvent> + 'a {
    match timeout {
        None => Either::Left(relay(client, backend, ex, rewrite)),
        Some(timeout) => Either::Right(Box::pin(relay_with_timeout(
            client, backend, ex, rewrite, timeout,
        ))),
    }
}

async fn relay_with_timeout(
    client: &mut ClientConn,
    backend: &mut BackendConn,
    ex: &mut Exchange,
    mut rewrite: Option<Rewrite<'_>>,
    timeout: Duration,
) -> RelayEvent {
    let target = CancelTarget {
        addr: backend.addr.clone(),
        key: backend.key,
    };
    // Started when a request is first seen outstanding; fires once per request.
    let mut timer: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    let mut cancel: Option<tokio::task::JoinHandle<()>> = None;
    let event = poll_fn(|cx| {
        let poll = poll_relay(cx, client, backend, ex, rewrite.as_mut());
        if poll.is_ready() {
            return poll;
        }
        if ex.is_quiet() {
            timer = None;
        } else if cancel.is_none() {
            let sleep = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
            if sleep.as_mut().poll(cx).is_ready() {
                tracing::info!(node = %target.addr, "query_timeout: cancelling the request");
                let target = target.clone();
                // Not a client's cancel request: counted nowhere (SHOW POOLS' cancel columns).
                let counts = crate::pool::CancelCounts::default();
                cancel = Some(tokio::spawn(async move {
                    crate::client::cancel::send_cancel_to(&target, &counts).await
                }));
            }
        }
        Poll::Pending
    })
    .await;
    // Not handed back (released, parked) before PostgreSQL processed the cancel.
    if let Some(cancel) = cancel {
        let _ = cancel.await;
    }
    event
}

/// PostgreSQL's SQLSTATE for `transaction_timeout` (`idle_in_transaction_session_timeout` is
/// its neighbour 25P03).
pub const TRANSACTION_TIMEOUT: SqlState = SqlState::new("25P04");

/// When the client's current transaction began, if it is in one.
#[derive(Debug, Default)]
pub(crate) struct TransactionClock {
    since: Option<Instant>,
    /// A request outside a transaction started a turn here: the start if it opens one.
    request: Option<Instant>,
}

impl TransactionClock {
    /// One turn of the request loop; returns when the transaction times out (`timeout` of
    /// `None`: never).
    pub(crate) fn observe(
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
    pub(crate) fn transaction_timeout(&self) -> Option<Duration> {
        self.snapshot.config.proxy.transaction_timeout.non_zero()
    }

    /// The client stayed in one transaction past `transaction_timeout`.
    pub(crate) async fn transaction_timeout_hit(&mut self) -> CloseReason {
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
