//! Getting a backend for a client: choosing the node, checking out (a cancel takes a waiting
//! client out of the queue), bringing the backend to the client's settings and SQL-level
//! prepared statements, and a fresh exchange for it. Session mode does this once at login,
//! transaction mode per transaction.

use crate::backend::{BackendConn, BackendError};
use crate::client::cancel::CancelSlot;
use crate::client::login::CloseReason;
use crate::client::params::settings_diff_sql;
use crate::client::session::{backend_error_for_client, Session};
use crate::config::PoolMode;
use crate::pool::{PoolError, StartupWish};
use crate::protocol::tracker::Tracker;
use crate::protocol::{ErrorFields, Severity, SqlState, TransactionStatus};
use std::time::Duration;
use tokio::time::{sleep_until, Instant};

impl Session {
    /// Gets a backend for the client: session mode once at login, transaction mode per
    /// transaction. On login, errors are FATAL (as PostgreSQL's would be at startup).
    pub(crate) async fn attach(&mut self, login: bool) -> Result<(), CloseReason> {
        self.attach_cancellable(login, None).await.map(|_| ())
    }

    /// `attach`, but a cancel request for this client while it waits for the pool takes it out
    /// of the queue: its request gets 57014 and the connection stays. Returns false then.
    pub(crate) async fn attach_cancellable(
        &mut self,
        login: bool,
        cancel: Option<&CancelSlot>,
    ) -> Result<bool, CloseReason> {
        self.take_snapshot();
        let decision =
            (!login && self.routes_per_transaction() && self.has_health()).then(|| self.classify_request());
        let read_only = decision
            .as_ref()
            .is_some_and(crate::client::session::routing::wants_standby);
        self.routed_write = decision.is_none_or(|d| d.access == crate::router::Access::Write);
        // A node that refuses connections may be failing over: with health checking, wait for the
        // topology to change and choose again, up to failover_timeout after the first refusal.
        let mut failover_deadline = None;
        let mut node = 0;
        // An idle backend may have died since it was checked in (its server went down): one
        // that fails before any of the client's request was sent is replaced, a couple of times.
        let mut replaced = 0;
        let mut backend = loop {
            let mut backend = loop {
                if self.has_health() {
                    // Sessions (and logins) start on the primary; transactions go where they may.
                    match self.choose_node(decision).await {
                        Ok((index, standby)) => match self.node_pool(index) {
                            Some(pool) => {
                                self.pool = pool;
                                self.on_standby = standby;
                                node = index;
                                self.note_node(index);
                                if let Some(parked) = self.take_parked(index) {
                                    break parked;
                                }
                            }
                            None => {
                                return Err(CloseReason::Refused(
                                    "database disappeared from the configuration".into(),
                                ))
                            }
                        },
                        Err(mut error) if login => {
                            error.severity = Severity::Fatal;
                            let message = error.message.clone();
                            self.client.send_fatal(error).await;
                            return Err(CloseReason::Refused(message));
                        }
                        Err(error) => {
                            self.pending_error = Some(error);
                            return Ok(false);
                        }
                    }
                }
                let wish = match self.mode {
                    PoolMode::Session => StartupWish {
                        want: Some(self.params.signature()),
                        params: &self.params.settings,
                    },
                    PoolMode::Transaction => StartupWish {
                        want: None,
                        params: &[],
                    },
                };
                // An idle connection at hand needs no future (the checkout future is large to build),
                // no clock and no watch on the topology: nothing can fail or wait.
                let mut changed = None;
                let (checked_out, waited) = match self.pool.checkout_idle_now(wish.want) {
                    Some(conn) => (Some(Ok(conn)), Duration::ZERO),
                    None => {
                        let wait_started = Instant::now();
                        self.ticket.waiting(node, wait_started);
                        changed = self.health().map(|h| h.changed());
                        // Boxed: the wait is rare (an idle connection at hand needs none) and its future
                        // large; inline, every client's task would carry it while idle.
                        let checkout = Box::pin(self.pool.checkout(wish));
                        let waiting = async {
                            match cancel {
                                Some(slot) => slot.cancellable(checkout).await,
                                None => Some(checkout.await),
                            }
                        };
                        // A shutdown does not hold a waiting client to the end (drain.rs); a server
                        // at hand is still used (biased).
                        let (stage, first) = (self.shutdown_stage_for_waiting(), self.awaiting_first_request);
                        let shutdown_due = crate::client::session::drain::stop_due(
                            &self.ticket,
                            &self.shared.shutdown,
                            stage,
                            first,
                        );
                        let checked_out = tokio::select! {
                            biased;
                            checked_out = waiting => Some(checked_out),
                            _ = shutdown_due => None,
                        };
                        let Some(checked_out) = checked_out else {
                            return Err(self.close_waiting_for_shutdown().await);
                        };
                        (checked_out, wait_started.elapsed())
                    }
                };
                let Some(checked_out) = checked_out else {
                    self.pending_error = Some(ErrorFields::error(
                        SqlState::QUERY_CANCELED,
                        "canceling statement due to user request",
                    ));
                    return Ok(false);
                };
                match checked_out {
                    Ok(b) => {
                        self.account_checkout(waited);
                        self.ticket.active(node, b.id);
                        if let Some(server) = &b.ticket {
                            server.link(self.ticket.id());
                        }
                        break b;
                    }
                    Err(PoolError::WaitTimeout) => {
                        let error = ErrorFields::fatal(SqlState::PROTOCOL_VIOLATION, "query_wait_timeout")
                            .with_detail("No server connection became available within query_wait_timeout.");
                        self.client.send_fatal(error).await;
                        return Err(CloseReason::WaitTimeout);
                    }
                    Err(PoolError::Backend(e)) => {
                        // Nothing of the client's request was sent yet. The node may be restarting
                        // or failing over: choose again when the health view changes, or after one
                        // check interval (a quick restart may never show as a change).
                        if let Some(changed) = changed.filter(|_| e.is_transient()) {
                            let failover_deadline = *failover_deadline.get_or_insert_with(|| {
                                Instant::now() + self.snapshot.config.routing.failover_timeout.0
                            });
                            let retry_at = Instant::now() + self.snapshot.config.health.interval();
                            tokio::select! {
                                _ = changed => {}
                                _ = sleep_until(retry_at.min(failover_deadline)) => {}
                            }
                            if Instant::now() < failover_deadline {
                                continue;
                            }
                        }
                        return self.no_backend(e, login).await;
                    }
                }
            };
            match self.prepare_backend(&mut backend, login).await {
                Ok(()) => break backend,
                Err(Preamble::Refused(reason)) => {
                    self.pool.release(backend);
                    return Err(reason);
                }
                Err(Preamble::Lost(e)) => {
                    self.pool.discard(backend);
                    if e.is_transient() && replaced < 2 {
                        replaced += 1;
                        tracing::info!(pool = %self.pool.key, "server connection lost before the request was sent; using another: {e}");
                        // Its idle siblings are likely dead too: open fresh connections instead.
                        self.pool.close_idle();
                        continue;
                    }
                    return self.no_backend(e, login).await;
                }
            }
        };
        let replayed = self.ha.deferred_begin.is_some();
        if let Err(error) = self.replay_begin(&mut backend, read_only).await {
            self.pool.discard(backend);
            self.pending_error = Some(error);
            return Ok(false);
        }
        self.exchange.restart();
        if replayed {
            self.exchange.tracker = Tracker::at(TransactionStatus::InTransaction);
        }
        self.exchange.track_settings = self.routes_per_transaction();
        if self.exchange.track_settings {
            // Judged against the catalog as it is now; a Bind of the unnamed statement with none
            // parsed on this backend runs something nobody judged.
            self.exchange.isolation.hazards = Some(self.hazard_slot.load());
            self.exchange.isolation.unnamed = crate::client::features::isolation::Verdict::Opaque;
        }
        self.exchange.pinned = self.pins.any();
        self.pipeline.reset();
        self.backend = Some(backend);
        Ok(true)
    }

    /// Brings a backend just taken from the pool to the client's settings and SQL-level prepared
    /// statements, before any of the client's request goes to it.
    async fn prepare_backend(&mut self, backend: &mut BackendConn, login: bool) -> Result<(), Preamble> {
        if self.mode == PoolMode::Session && !login && backend.applied.is_empty() {
            // Opened (or reset) with the client's startup parameters: that is what it carries.
            backend.applied = self.params.startup_settings.clone();
        }
        if self.mode == PoolMode::Transaction || (!login && self.routes_per_transaction()) {
            if let Some(sql) = settings_diff_sql(&backend.applied, &self.params.settings) {
                let outcome = backend.run_simple(&sql).await.map_err(Preamble::Lost)?;
                if outcome.error.is_some() {
                    // A value the server refuses: PostgreSQL would refuse the login.
                    let e = outcome.parsed_error().unwrap_or_default();
                    let mut error = ErrorFields::fatal(SqlState::new("22023"), e.message.clone());
                    if let Some(code) = SqlState::parse(&e.code) {
                        error.code = code;
                    }
                    if !login {
                        error.severity = Severity::Error;
                    }
                    self.client.send_fatal(error).await;
                    return Err(Preamble::Refused(CloseReason::Refused(e.message)));
                }
                backend.applied = self.params.settings.clone();
            }
        }
        if self.mode == PoolMode::Transaction {
            // The backend's SQL-level prepared statements become the client's (sql_prepared.rs).
            crate::client::features::sql_prepared::sync(backend, &self.statements.sql)
                .await
                .map_err(Preamble::Lost)?;
        }
        Ok(())
    }

    /// No backend could be had for this request (nothing of it was sent): at login or in
    /// session mode the client goes with a FATAL; in transaction mode this request fails with
    /// the error and the client stays.
    async fn no_backend(&mut self, e: BackendError, login: bool) -> Result<bool, CloseReason> {
        if login || self.mode == PoolMode::Session {
            self.client
                .send_fatal(backend_error_for_client(&e, Severity::Fatal))
                .await;
            return Err(CloseReason::BackendLost(e.to_string()));
        }
        self.pending_error = Some(backend_error_for_client(&e, Severity::Error));
        Ok(false)
    }
}

/// Why a backend could not be prepared for the client.
enum Preamble {
    /// The server refused the client's settings; the client was told.
    Refused(CloseReason),
    /// The connection failed.
    Lost(BackendError),
}
