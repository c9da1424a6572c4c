//! Getting a backend for a client: choosing the node, checking out (a cancel takes a waiting
//! client out of the queue), bringing the backend to the client's settings and SQL-level
//! prepared statements, and a fresh exchange for it. Session mode does this once at login,
//! transaction mode per transaction.

use crate::backend::BackendError;
use crate::client::login::CloseReason;
use crate::client::params::settings_diff_sql;
use crate::client::session::checkout::Event;
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
        self.attach_cancellable(login).await.map(|_| ())
    }

    /// `attach`, but (once the client has a cancel key) a cancel request for this client while
    /// it waits for the pool takes it out of the queue: its request gets 57014 and the
    /// connection stays. Returns false when the request fails that way or any other way that
    /// leaves the client connected (the error is owed to it, `pending_error`).
    pub(crate) async fn attach_cancellable(&mut self, login: bool) -> Result<bool, CloseReason> {
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
        // An idle backend may have died since it was checked in (its server went down): one
        // that fails before any of the client's request was sent is replaced, a couple of times.
        let mut replaced = 0;
        let checked_out_at = loop {
            let CheckedOut::Attached { at } = self.check_out(decision, login, &mut failover_deadline).await?
            else {
                return Ok(false);
            };
            match self.prepare_backend(login).await {
                Ok(()) => break at,
                Err(Preamble::Refused(reason)) => {
                    self.checkout.handle(Event::Refused);
                    return Err(reason);
                }
                Err(Preamble::Lost(e)) => {
                    self.checkout.handle(Event::Lost);
                    if e.is_transient() && replaced < 2 {
                        replaced += 1;
                        let pool = self.checkout.pool();
                        tracing::info!(pool = %pool.key, "server connection lost before the request was sent; using another: {e}");
                        // Its idle siblings are likely dead too: open fresh connections instead.
                        pool.close_idle();
                        continue;
                    }
                    return Box::pin(self.no_backend(e, login)).await;
                }
            }
        };
        let replayed = self.ha.deferred_begin.is_some();
        if replayed {
            if let Err(error) = Box::pin(self.replay_begin(read_only)).await {
                self.checkout.handle(Event::Lost);
                self.pending_error = Some(Box::new(error));
                return Ok(false);
            }
        }
        self.fresh_exchange(replayed);
        // The request at hand is busy from the checkout on (microseconds before it is forwarded;
        // settings applied first count too: the client waits for them). Not at login: the
        // client's first request is still to come.
        if !login {
            self.exchange.stats.busy_since = checked_out_at;
        }
        Ok(true)
    }

    /// A fresh exchange for the backend just attached.
    fn fresh_exchange(&mut self, replayed: bool) {
        self.exchange.restart();
        if replayed {
            self.exchange.tracker = Tracker::at(TransactionStatus::InTransaction);
        }
        self.exchange.features.track_settings = self.routes_per_transaction();
        if self.exchange.features.track_settings {
            // Judged against the catalog as it is now; a Bind of the unnamed statement with none
            // parsed on this backend runs something nobody judged.
            self.exchange.features.isolation.hazards = Some(self.hazard_slot.load());
            self.exchange.features.isolation.unnamed = crate::client::features::isolation::Verdict::Opaque;
        }
        self.exchange.features.pinned = self.pins.any();
        self.pipeline.reset();
    }

    /// Chooses the node and checks a backend out of its pool into `self.checkout`. `Failed`:
    /// the request fails (the error is owed to the client, which stays).
    async fn check_out(
        &mut self,
        decision: Option<crate::router::Decision>,
        login: bool,
        failover_deadline: &mut Option<Instant>,
    ) -> Result<CheckedOut, CloseReason> {
        loop {
            let mut node = 0;
            if self.has_health() {
                match self.pick_node(decision, login).await? {
                    Picked::Node(index) => node = index,
                    Picked::Parked => return Ok(CheckedOut::Attached { at: None }),
                    Picked::Failed => return Ok(CheckedOut::Failed),
                }
            }
            let want = self.startup_wish().want;
            // An idle connection at hand needs no future (the checkout future is large to build)
            // and no watch on the topology: nothing can fail or wait. One clock reading serves
            // its age check and the request's start.
            let now = Instant::now();
            let (server, waited, at) = match self.checkout.pool().checkout_idle_now(want, now) {
                Some(server) => (server, Duration::ZERO, Some(now)),
                None => match Box::pin(self.wait_for_backend(node, failover_deadline)).await? {
                    Waited::Got(server, waited) => (server, waited, None),
                    Waited::Retry => continue,
                    Waited::Cancelled => {
                        self.pending_error = Some(Box::new(ErrorFields::error(
                            SqlState::QUERY_CANCELED,
                            "canceling statement due to user request",
                        )));
                        return Ok(CheckedOut::Failed);
                    }
                    // It attaches nothing: the client gets the error (or goes).
                    Waited::Failed(e) => {
                        return Box::pin(self.no_backend(e, login))
                            .await
                            .map(|_| CheckedOut::Failed)
                    }
                },
            };
            self.account_checkout(waited);
            self.ticket.active(node, server.id);
            if let Some(ticket) = &server.ticket {
                ticket.link(self.ticket.id());
            }
            self.checkout.attach(server);
            return Ok(CheckedOut::Attached { at });
        }
    }

    /// What a backend must have been opened with for this client.
    fn startup_wish(&self) -> StartupWish<'_> {
        match self.mode {
            PoolMode::Session => StartupWish {
                want: Some(self.params.signature()),
                params: &self.params.settings,
            },
            PoolMode::Transaction => StartupWish {
                want: None,
                params: &[],
            },
        }
    }

    /// With health checking: the node for this request, whose pool the checkout then draws
    /// from; a backend parked there is attached at once.
    async fn pick_node(
        &mut self,
        decision: Option<crate::router::Decision>,
        login: bool,
    ) -> Result<Picked, CloseReason> {
        // Sessions (and logins) start on the primary; transactions go where they may.
        match self.choose_node(decision).await {
            Ok((index, standby)) => {
                let Some(pool) = self.node_pool(index) else {
                    return Err(CloseReason::Refused(
                        "database disappeared from the configuration".into(),
                    ));
                };
                self.checkout.set_pool(pool);
                self.on_standby = standby;
                self.note_node(index);
                if let Some(parked) = self.take_parked(index) {
                    self.checkout.attach(parked);
                    return Ok(Picked::Parked);
                }
                Ok(Picked::Node(index))
            }
            Err(mut error) if login => {
                error.severity = Severity::Fatal;
                let message = error.message.clone();
                Box::pin(self.client.send_fatal(error)).await;
                Err(CloseReason::Refused(message))
            }
            Err(error) => {
                self.pending_error = Some(Box::new(error));
                Ok(Picked::Failed)
            }
        }
    }

    /// No idle backend at hand: queue for one (a cancel for this client, once it has a key,
    /// takes it out of the queue); a shutdown does not hold a waiting client to the end
    /// (drain.rs). A backend that cannot be opened on a node that may be failing over is waited
    /// out (`Retry`).
    async fn wait_for_backend(
        &mut self,
        node: usize,
        failover_deadline: &mut Option<Instant>,
    ) -> Result<Waited, CloseReason> {
        let wait_started = Instant::now();
        self.ticket.waiting(node, wait_started);
        let changed = self.health().map(|h| h.changed());
        let wish = self.startup_wish();
        // Not boxed here: the caller boxes this whole wait (rare: an idle connection at hand
        // needs none), so the checkout's large future never sizes a client's task.
        let checkout = self.checkout.pool().checkout(wish);
        let cancel = self.checkout.cancel_slot();
        let waiting = async {
            match cancel {
                Some(slot) => slot.cancellable(checkout).await,
                None => Some(checkout.await),
            }
        };
        // A server at hand is still used (biased).
        let (stage, first) = (self.shutdown_stage_for_waiting(), self.awaiting_first_request);
        let shutdown_due =
            crate::client::session::drain::stop_due(&self.ticket, &self.shared.shutdown, stage, first);
        let checked_out = tokio::select! {
            biased;
            checked_out = waiting => Some(checked_out),
            _ = shutdown_due => None,
        };
        let Some(checked_out) = checked_out else {
            return Err(self.close_waiting_for_shutdown().await);
        };
        match checked_out {
            None => Ok(Waited::Cancelled),
            Some(Ok(server)) => Ok(Waited::Got(server, wait_started.elapsed())),
            Some(Err(PoolError::WaitTimeout)) => {
                let error = ErrorFields::fatal(SqlState::PROTOCOL_VIOLATION, "query_wait_timeout")
                    .with_detail("No server connection became available within query_wait_timeout.");
                self.client.send_fatal(error).await;
                Err(CloseReason::WaitTimeout)
            }
            Some(Err(PoolError::Backend(e))) => {
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
                        return Ok(Waited::Retry);
                    }
                }
                Ok(Waited::Failed(e))
            }
        }
    }

    /// Brings a backend just taken from the pool to the client's settings and SQL-level prepared
    /// statements, before any of the client's request goes to it.
    async fn prepare_backend(&mut self, login: bool) -> Result<(), Preamble> {
        let per_transaction = !login && self.routes_per_transaction();
        let Session {
            checkout,
            client,
            params,
            statements,
            mode,
            ..
        } = self;
        let (mode, backend) = (*mode, checkout.attached());
        if mode == PoolMode::Session && !login && backend.applied.is_empty() {
            // Opened (or reset) with the client's startup parameters: that is what it carries.
            backend.applied = params.startup_settings.clone();
        }
        if mode == PoolMode::Transaction || per_transaction {
            if let Some(sql) = settings_diff_sql(&backend.applied, &params.settings) {
                let outcome = Box::pin(backend.run_simple(&sql)).await.map_err(Preamble::Lost)?;
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
                    Box::pin(client.send_fatal(error)).await;
                    return Err(Preamble::Refused(CloseReason::Refused(e.message)));
                }
                backend.applied = params.settings.clone();
            }
        }
        if mode == PoolMode::Transaction && statements.sql != backend.statements.sql {
            // The backend's SQL-level prepared statements become the client's (sql_prepared.rs).
            Box::pin(crate::client::features::sql_prepared::sync(
                backend,
                &statements.sql,
            ))
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
        self.pending_error = Some(Box::new(backend_error_for_client(&e, Severity::Error)));
        Ok(false)
    }
}

/// How a checkout went.
enum CheckedOut {
    /// A backend is attached; `at`: the clock reading of the checkout when an idle one was
    /// taken at once (the request's start).
    Attached { at: Option<Instant> },
    /// None: the request fails.
    Failed,
}

/// How choosing the node went.
enum Picked {
    /// Check out of this node's pool.
    Node(usize),
    /// The session's parked backend there is attached.
    Parked,
    /// The request fails (the error is owed to the client).
    Failed,
}

/// How waiting for the pool went.
enum Waited {
    Got(crate::pool::Server, Duration),
    /// A cancel request for the client took it out of the queue.
    Cancelled,
    /// The node may be failing over: choose again.
    Retry,
    Failed(BackendError),
}

/// Why a backend could not be prepared for the client.
enum Preamble {
    /// The server refused the client's settings; the client was told.
    Refused(CloseReason),
    /// The connection failed.
    Lost(BackendError),
}
