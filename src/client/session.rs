//! A logged-in client: the welcome, then requests served over backends checked out per
//! transaction (transaction mode) or once (session mode), and what happens when either side fails.

use super::cancel::{CancelSlot, CancelTarget, Registration};
use super::conn::{ClientConn, ClientIoError};
use super::keywords::Words;
use super::login::CloseReason;
use super::params::{settings_diff_sql, ClientParams};
use super::relay::{Exchange, RelayEvent, Rewrite};
use super::statements::{ClientStatements, Pipeline};
use crate::app::{Shared, Snapshot};
use crate::backend::{BackendConn, BackendError};
use crate::config::PoolMode;
use crate::pool::{Pool, PoolError, StartupWish};
use crate::protocol::error::BackendError as ServerError;
use crate::protocol::tracker::{Direction, Step, Tracker};
use crate::protocol::{backend_msg, tag, ErrorFields, Severity, SqlState, TransactionStatus};
use crate::shutdown::Stage;
use bytes::{Buf, Bytes};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{sleep_until, Instant};

/// How much of a pipelining client's input routing waits for, to see its frames whole.
const ROUTING_LOOKAHEAD: usize = 64 * 1024;

/// A logged-in client.
pub(super) struct Session {
    pub(super) shared: Arc<Shared>,
    /// What the catalog of the client's database says can change session state (isolation).
    pub(super) hazard_slot: Arc<super::isolation::HazardSlot>,
    /// The configuration this transaction runs under: taken once per attach, not per message.
    pub(super) snapshot: Arc<Snapshot>,
    pub(super) client: ClientConn,
    /// The pool of the node serving (or about to serve) the client.
    pub(super) pool: Arc<Pool>,
    /// Pools of every node for this client's (database, user), found once.
    pub(super) node_pools: Vec<Option<Arc<Pool>>>,
    pub(super) user: Arc<super::auth::UserAuth>,
    /// `SET tidepool.route` / `options=-c tidepool.route=…`: forces reads or writes to one role.
    pub(super) route: crate::router::RouteSetting,
    /// The primary's WAL position after the client's last write transaction (read your writes).
    pub(super) ryw_lsn: Option<crate::health::Lsn>,
    /// The current transaction was routed as a write (to the primary).
    pub(super) routed_write: bool,
    pub(super) mode: PoolMode,
    pub(super) params: ClientParams,
    pub(super) exchange: Exchange,
    /// The backend serving the client now, if any.
    pub(super) backend: Option<crate::pool::Server>,
    /// An error owed to the client's next request (its server died while it idled in a
    /// transaction).
    pub(super) pending_error: Option<ErrorFields>,
    /// After an error in an extended-protocol batch, drop client messages until Sync.
    pub(super) discard_until_sync: bool,
    /// The client's named prepared statements (transaction mode).
    pub(super) statements: ClientStatements,
    /// Requests awaiting answers, for statement renaming (transaction mode).
    pub(super) pipeline: Pipeline,
    /// `pool.max_prepared_statements` at login; 0 turns renaming off.
    pub(super) max_prepared: usize,
    /// What pins the client to its backend now (transaction mode).
    pub(super) pins: super::pinning::Pins,
    /// The client's entry in the registry (SHOW CLIENTS, KILL_CLIENT).
    pub(super) ticket: super::registry::ClientTicket,
    /// The node serving the client is a standby (metrics by role).
    pub(super) on_standby: bool,
    /// No request answered yet: a shutdown gives such a client a moment for its first one (see
    /// `drain.rs`), so that one logging in as the shutdown begins is not turned away.
    pub(super) awaiting_first_request: bool,
    /// Node of the backend, held-back BEGIN, parked backends (`routing.rs`).
    pub(super) ha: super::routing::HaState,
    /// Channels it LISTENs to through the pool's listener (transaction mode, `listen.rs`).
    pub(super) listens: Option<super::notify::Subscription>,
    /// When the current transaction began (`transaction_timeout`, see `timeouts.rs`).
    pub(super) tx_clock: super::timeouts::TransactionClock,
    /// Pools held while a statement that needs their database to itself runs (`database_ddl.rs`).
    pub(super) database_holds: Vec<crate::pool::CheckoutHold>,
    /// Snapshot and health checkers as last taken (`reloaded.rs`).
    pub(super) followed: super::reloaded::Followed,
}

impl Session {
    pub(super) async fn run(&mut self) -> CloseReason {
        if let Err(reason) = self.attach(true).await {
            return reason;
        }
        let registration = self.welcome();
        if self.mode == PoolMode::Transaction {
            // Login needed a backend only to learn and apply the client's settings.
            let backend = self.backend.take().expect("attached at login");
            self.pool.release(backend);
        }
        let reason = self.serve_requests(&registration).await;
        registration.slot.set(None);
        if self.pins.any() {
            self.shared
                .stats
                .pinned_clients
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
        reason
    }

    /// Gets a backend for the client: session mode once at login, transaction mode per
    /// transaction. On login, errors are FATAL (as PostgreSQL's would be at startup).
    pub(super) async fn attach(&mut self, login: bool) -> Result<(), CloseReason> {
        self.attach_cancellable(login, None).await.map(|_| ())
    }

    /// `attach`, but a cancel request for this client while it waits for the pool takes it out
    /// of the queue: its request gets 57014 and the connection stays. Returns false then.
    async fn attach_cancellable(
        &mut self,
        login: bool,
        cancel: Option<&CancelSlot>,
    ) -> Result<bool, CloseReason> {
        self.take_snapshot();
        let decision =
            (!login && self.routes_per_transaction() && self.has_health()).then(|| self.classify_request());
        let read_only = decision.as_ref().is_some_and(super::routing::wants_standby);
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
                        let shutdown_due = self.shutdown_due(self.shutdown_stage_for_waiting());
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
                        if login || self.mode == PoolMode::Session {
                            self.client
                                .send_fatal(backend_error_for_client(&e, Severity::Fatal))
                                .await;
                            return Err(CloseReason::BackendLost(e.to_string()));
                        }
                        // Transaction mode: this request fails, the client stays.
                        self.pending_error = Some(backend_error_for_client(&e, Severity::Error));
                        return Ok(false);
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
                    if login || self.mode == PoolMode::Session {
                        self.client
                            .send_fatal(backend_error_for_client(&e, Severity::Fatal))
                            .await;
                        return Err(CloseReason::BackendLost(e.to_string()));
                    }
                    // Transaction mode: this request fails, the client stays.
                    self.pending_error = Some(backend_error_for_client(&e, Severity::Error));
                    return Ok(false);
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
            self.exchange.isolation.unnamed = super::isolation::Verdict::Opaque;
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
            super::sql_prepared::sync(backend, &self.statements.sql)
                .await
                .map_err(Preamble::Lost)?;
        }
        Ok(())
    }

    /// AuthenticationOk was sent by auth; now ParameterStatus, BackendKeyData, ReadyForQuery.
    fn welcome(&mut self) -> Registration {
        let backend = self.backend.as_ref().expect("attached at login");
        for (name, value) in &backend.reported {
            backend_msg::parameter_status(&mut self.client.wbuf, name, value);
        }
        let real_pid = (self.mode == PoolMode::Session).then_some(backend.key.pid);
        let registration = self
            .shared
            .cancels
            .register(real_pid, self.pool.stats.cancels.clone());
        backend_msg::backend_key_data(
            &mut self.client.wbuf,
            registration.key.pid,
            registration.key.secret,
        );
        self.client.key_pid = Some(registration.key.pid);
        backend_msg::ready_for_query(&mut self.client.wbuf, b'I');
        self.exchange.mark_quiet_reported();
        registration
    }

    pub(super) async fn serve_requests(&mut self, registration: &Registration) -> CloseReason {
        let shared = self.shared.clone();
        loop {
            if self.backend.is_none() {
                self.ticket.idle();
                if let Err(reason) = self.wait_for_request().await {
                    return reason;
                }
                if self.answer_locally() {
                    continue;
                }
                match self.attach_cancellable(false, Some(&registration.slot)).await {
                    Ok(true) => {}
                    // Cancelled while queued: the owed error answers the request.
                    Ok(false) => continue,
                    Err(reason) => return reason,
                }
            }
            if self.exchange.is_quiet() {
                match self.check_demotion().await {
                    super::routing::Demotion::None => {}
                    super::routing::Demotion::Dropped => continue,
                    super::routing::Demotion::Close(reason) => return reason,
                }
            }
            // Quiet with no whole request at hand: the client may idle here (pinned, session mode,
            // idle in a transaction), so timeouts, shutdown, notifications and role changes
            // matter. With a request at hand the relay forwards it at once; those are looked at
            // again at the next quiet point (and arming them costs on every request).
            let request_at_hand =
                match crate::protocol::frame::peek_header(&self.client.rbuf, self.client.decoder.max_len()) {
                    Ok(Some((_, total))) => self.client.rbuf.len() >= total,
                    Ok(None) => false,
                    Err(_) => true,
                };
            let quiet = self.exchange.is_quiet() && !request_at_hand;
            let in_transaction = !self.exchange.tracker.is_idle();
            let tx_deadline = self
                .tx_clock
                .observe(quiet, in_transaction, self.transaction_timeout());
            // Wakes a quiet client's loop when roles change, so a demotion is seen at once.
            let mut role_change = quiet.then(|| self.health()).flatten().map(|h| h.subscribe());
            let idle_deadline = match self.exchange.tracker.status() {
                _ if !quiet => None,
                TransactionStatus::Idle => self.idle_timeout(),
                _ => self.snapshot.config.proxy.idle_transaction_timeout.non_zero(),
            }
            .map(|t| Instant::now() + t);
            // Graceful: close between transactions. Fast: also idle inside one (rolled back).
            let between_transactions = self.exchange.tracker.is_idle();
            // Built only when the client may idle here: a forwarded request never waits on them.
            let stop_stage = if between_transactions {
                Stage::Graceful
            } else {
                Stage::Fast
            };
            let stop_due = quiet.then(|| {
                let first = self.awaiting_first_request;
                super::drain::stop_due(&self.ticket, &self.shared.shutdown, stop_stage, first)
            });
            let per_transaction = self.routes_per_transaction();
            let query_timeout = self.snapshot.config.proxy.query_timeout.non_zero();
            let backend = self.backend.as_mut().expect("attached above");
            registration.slot.set(Some(CancelTarget {
                addr: backend.addr.clone(),
                key: backend.key,
            }));
            // Notifications this backend sends from now on may be this client's (a lock only
            // at the backend's first checkout; then one atomic swap).
            let registry = &self.shared.cancels.users;
            let users = (backend.users).get_or_insert_with(|| registry.register(backend.key.pid));
            users.begin(registration.key.pid, || registry.now());
            if self.exchange.track_settings {
                self.exchange.notify_as = registration.key.pid;
            }
            let rewrite = (per_transaction && self.max_prepared > 0).then(|| Rewrite {
                cache: &shared.statements,
                client: &mut self.statements,
                pipe: &mut self.pipeline,
                capacity: self.max_prepared,
            });
            let event = tokio::select! {
                // The relay first; the others are polled only while it waits.
                biased;
                event = super::timeouts::relay_timed(&mut self.client, backend, &mut self.exchange, rewrite, query_timeout) => event,
                _ = sleep_or_never(idle_deadline) => {
                    return self.idle_timeout_hit().await;
                }
                _ = sleep_or_never(tx_deadline) => return self.transaction_timeout_hit().await,
                _ = maybe(stop_due) => return self.close_for_shutdown().await,
                _ = super::listen::notified(&self.listens), if quiet && between_transactions => {
                    // A pinned client between transactions gets its notifications now.
                    self.deliver_notifications();
                    continue;
                }
                _ = super::routing::role_changed(role_change.as_mut()), if quiet => continue,
            };
            self.account_relay(&event);
            if !matches!(event, RelayEvent::DatabaseDdl(_) | RelayEvent::SchemaChanged(_)) {
                // The statement that needed a database to itself was answered (or never will be).
                self.database_holds.clear();
            }
            match event {
                RelayEvent::DatabaseDdl(databases) => {
                    let holds = super::database_ddl::free_databases(&self.shared, &databases);
                    self.database_holds.extend(holds);
                    self.exchange.database_ddl_freed = true;
                }
                RelayEvent::Idle => {
                    self.awaiting_first_request = false;
                    self.follow_settings();
                    if self.exchange.pins_may_have_changed {
                        if let Err(e) = self.probe_pins().await {
                            registration.slot.set(None);
                            if let Some(reason) = self.backend_lost(None, e.to_string()).await {
                                return reason;
                            }
                            continue;
                        }
                    }
                    if self.exchange.sql_prepared_may_have_changed {
                        if let Err(e) = self.follow_sql_prepared().await {
                            registration.slot.set(None);
                            if let Some(reason) = self.backend_lost(None, e.to_string()).await {
                                return reason;
                            }
                            continue;
                        }
                    }
                    if let Err(e) = self.check_before_sharing().await {
                        registration.slot.set(None);
                        if let Some(reason) = self.backend_lost(None, e.to_string()).await {
                            return reason;
                        }
                        continue;
                    }
                    if self.routed_write && self.read_your_writes() {
                        if let Err(e) = self.record_write_position().await {
                            registration.slot.set(None);
                            if let Some(reason) = self.backend_lost(None, e.to_string()).await {
                                return reason;
                            }
                            continue;
                        }
                    }
                    if self.mode == PoolMode::Transaction && !self.pins.any() {
                        registration.slot.set(None);
                        let backend = self.backend.take().expect("attached");
                        self.pool.release(backend);
                    } else if self.routes_per_transaction() && !self.pins.any() {
                        registration.slot.set(None);
                        self.park_backend();
                    }
                }
                RelayEvent::IdleInTransaction => {
                    self.awaiting_first_request = false;
                    self.follow_settings();
                }
                RelayEvent::IdleUnsynced => {
                    if self.pins.any() {
                        continue;
                    }
                    // Close the batch on the backend ourselves; a lone Sync from the client later
                    // is answered without a backend.
                    let backend = self.backend.as_mut().expect("attached");
                    let tracker = &mut self.exchange.tracker;
                    let mut out = bytes::BytesMut::with_capacity(5);
                    crate::protocol::frontend_msg::sync(&mut out);
                    tracker.step(Direction::Frontend, tag::SYNC, &[]);
                    let closed = async {
                        backend.write_all(&out).await?;
                        loop {
                            let frame = backend.read_frame().await?;
                            backend.observe(&frame);
                            if let Step::Ready { quiet: true, .. } =
                                tracker.step(Direction::Backend, frame.tag, &frame.body)
                            {
                                break;
                            }
                        }
                        Ok::<(), BackendError>(())
                    }
                    .await;
                    // What the batch ran is checked like any transaction's before sharing.
                    let closed = match closed {
                        Ok(()) => self.check_before_sharing().await,
                        Err(e) => Err(e),
                    };
                    registration.slot.set(None);
                    let backend = self.backend.take().expect("attached");
                    match closed {
                        Ok(()) if !self.pins.any() => self.pool.release(backend),
                        Ok(()) => self.backend = Some(backend),
                        Err(_) => self.pool.discard(backend),
                    }
                }
                RelayEvent::SchemaChanged(error) => {
                    if let Err(e) = self.retry_after_schema_change(error).await {
                        registration.slot.set(None);
                        if let Some(reason) = self.backend_lost(None, e.to_string()).await {
                            return reason;
                        }
                    }
                }
                RelayEvent::ClientTerminated => return CloseReason::Terminated,
                RelayEvent::ClientFailed(ClientIoError::Frame(e)) => {
                    let error = ErrorFields::fatal(SqlState::PROTOCOL_VIOLATION, e.to_string());
                    self.client.send_fatal(error).await;
                    return CloseReason::ClientIo(ClientIoError::Frame(e));
                }
                RelayEvent::ClientFailed(e) => return CloseReason::ClientIo(e),
                RelayEvent::BackendFailed(e) => {
                    registration.slot.set(None);
                    if let Some(reason) = self.backend_lost(None, e.to_string()).await {
                        return reason;
                    }
                }
                RelayEvent::BackendFatal(frame) => {
                    registration.slot.set(None);
                    let message = ServerError::parse(&crate::protocol::Frame {
                        tag: frame[0],
                        body: frame.slice(5..),
                    })
                    .message;
                    if let Some(reason) = self.backend_lost(Some(frame), message).await {
                        return reason;
                    }
                }
            }
        }
    }

    pub(super) fn idle_timeout(&self) -> Option<Duration> {
        self.snapshot.config.proxy.client_idle_timeout.non_zero()
    }

    /// Transaction mode between transactions: flush, wait for the client's next request, and
    /// answer locally what needs no server (an owed error, Flush, Terminate).
    async fn wait_for_request(&mut self) -> Result<(), CloseReason> {
        loop {
            self.deliver_notifications();
            self.client.flush().await?;
            if self.client.rbuf.is_empty() {
                let deadline = self.idle_timeout().map(|t| Instant::now() + t);
                let first = self.awaiting_first_request;
                let shutdown_due =
                    super::drain::stop_due(&self.ticket, &self.shared.shutdown, Stage::Graceful, first);
                tokio::select! {
                    biased;
                    ready = self.client.wait_readable() => ready?,
                    _ = super::listen::notified(&self.listens) => continue,
                    _ = sleep_or_never(deadline) => return Err(self.idle_timeout_hit().await),
                    _ = shutdown_due => return Err(self.close_for_shutdown().await),
                }
                // Over TLS, waiting already read.
                if self.client.rbuf.is_empty() {
                    self.client.fill().await?;
                }
            }
            // The select above prefers input: a client sending back to back would never see
            // its shutdown branch.
            if !self.awaiting_first_request && self.shared.shutdown.stage() >= Stage::Graceful {
                return Err(self.close_for_shutdown().await);
            }
            let frame =
                match crate::protocol::frame::peek_header(&self.client.rbuf, self.client.decoder.max_len()) {
                    Ok(Some((tag, total))) if self.client.rbuf.len() >= total => (tag, total),
                    Ok(_) => {
                        self.client.fill().await?;
                        continue;
                    }
                    Err(e) => {
                        self.client
                            .send_fatal(ErrorFields::fatal(SqlState::PROTOCOL_VIOLATION, e.to_string()))
                            .await;
                        return Err(ClientIoError::Frame(e).into());
                    }
                };
            let (tag, total) = frame;
            if tag == tag::TERMINATE {
                return Err(CloseReason::Terminated);
            }
            if let Some(error) = self.pending_error.take() {
                // A held-back BEGIN dies with the request that was to carry it (status I below).
                self.ha.deferred_begin = None;
                self.client.queue_error(&error);
                if matches!(tag, tag::QUERY | tag::FUNCTION_CALL | tag::SYNC) {
                    self.client.rbuf.advance(total);
                    backend_msg::ready_for_query(&mut self.client.wbuf, b'I');
                } else {
                    self.discard_until_sync = true;
                }
                continue;
            }
            if self.discard_until_sync {
                self.client.rbuf.advance(total);
                if tag == tag::SYNC {
                    self.discard_until_sync = false;
                    backend_msg::ready_for_query(&mut self.client.wbuf, b'I');
                }
                continue;
            }
            // One scan of the request's text for every consumer (LISTEN, local commands, relay).
            let words = (self.mode == PoolMode::Transaction && matches!(tag, tag::QUERY | tag::PARSE))
                .then(|| Words::scan(super::relay::sql_start(tag, &self.client.rbuf[5..total])));
            if let Some(words) = words {
                if self.answer_listen(words).await {
                    continue;
                }
            }
            if self.mode == PoolMode::Transaction
                && self.max_prepared > 0
                && (tag == tag::PARSE || tag == tag::CLOSE)
            {
                let answered = super::statements::answer_without_backend(
                    &self.client.rbuf,
                    &self.shared.statements,
                    &mut self.statements,
                    &mut self.client.wbuf,
                );
                if let Some(used) = answered {
                    self.account_local_parses();
                    self.client.rbuf.advance(used);
                    continue;
                }
            }
            if tag == tag::FLUSH || tag == tag::SYNC {
                // No backend means no transaction and no open batch: nothing to flush, and a
                // Sync (say, of a batch tidepool already closed on its backend) is answered
                // exactly as PostgreSQL would.
                self.client.rbuf.advance(total);
                if tag == tag::SYNC {
                    backend_msg::ready_for_query(&mut self.client.wbuf, b'I');
                }
                continue;
            }
            // Routing reads every frame buffered behind this one and takes a frame cut by the
            // read for a write: complete it first (the client is in the middle of sending it),
            // but look no further than ROUTING_LOOKAHEAD into a client that keeps sending.
            while self.client.rbuf.len() < ROUTING_LOOKAHEAD
                && crate::protocol::frame::ends_with_partial_frame(
                    &self.client.rbuf,
                    self.client.decoder.max_len(),
                )
            {
                self.client.fill().await?;
            }
            self.exchange.head_words = words.map(|words| (total, words));
            return Ok(());
        }
    }

    async fn idle_timeout_hit(&mut self) -> CloseReason {
        let in_transaction = self.backend.is_some() && !self.exchange.tracker.is_idle();
        let (code, message, reason) = if in_transaction {
            (
                SqlState::IDLE_IN_TRANSACTION_TIMEOUT,
                "terminating connection due to idle-in-transaction timeout",
                CloseReason::IdleInTransactionTimeout,
            )
        } else {
            (
                SqlState::IDLE_SESSION_TIMEOUT,
                "terminating connection due to idle-session timeout",
                CloseReason::IdleTimeout,
            )
        };
        self.client.send_fatal(ErrorFields::fatal(code, message)).await;
        reason
    }

    /// The backend died or sent FATAL. Returns a reason when the client must go too.
    pub(super) async fn backend_lost(
        &mut self,
        fatal_frame: Option<Bytes>,
        message: String,
    ) -> Option<CloseReason> {
        let backend = self.backend.take().expect("attached");
        tracing::warn!(pool = %self.pool.key, backend = backend.id, "server connection lost: {message}");
        self.pool.discard(backend);
        if server_going_down(fatal_frame.as_ref()) {
            // Its idle siblings are about to die too (some may not have noticed yet): open fresh
            // connections rather than hand those to the next clients.
            self.pool.close_idle();
        }
        let ex = std::mem::take(&mut self.exchange);
        if self.mode == PoolMode::Session {
            match fatal_frame {
                Some(frame) => self.client.wbuf.extend_from_slice(&frame),
                None => self.client.queue_error(&ErrorFields::fatal(
                    SqlState::CONNECTION_FAILURE,
                    "server closed the connection unexpectedly",
                )),
            }
            let _ = self.client.flush().await;
            return Some(CloseReason::BackendLost(message));
        }
        // Transaction mode: the client keeps its connection and learns its transaction is gone.
        let error = match &fatal_frame {
            Some(frame) => {
                let e = ServerError::parse(&crate::protocol::Frame {
                    tag: frame[0],
                    body: frame.slice(5..),
                });
                let mut fields = ErrorFields::error(
                    SqlState::parse(&e.code).unwrap_or(SqlState::CONNECTION_FAILURE),
                    e.message,
                );
                fields.detail =
                    Some("The server connection was lost; any open transaction was rolled back.".into());
                fields
            }
            None => ErrorFields::error(
                SqlState::CONNECTION_FAILURE,
                "server closed the connection unexpectedly",
            )
            .with_detail("The server connection was lost; any open transaction was rolled back."),
        };
        if ex.tracker.pending() > 0 || ex.tracker.batch_open() {
            self.client.queue_error(&error);
            for _ in 0..ex.tracker.pending() {
                backend_msg::ready_for_query(&mut self.client.wbuf, b'I');
            }
            self.discard_until_sync = ex.tracker.batch_open();
        } else {
            self.pending_error = Some(error);
        }
        None
    }
}

/// Why a backend could not be prepared for the client.
enum Preamble {
    /// The server refused the client's settings; the client was told.
    Refused(CloseReason),
    /// The connection failed.
    Lost(BackendError),
}

/// Whether a lost backend suggests its whole server is going down: the connection just dropped,
/// or the server said it is shutting down (57P01), restarting after a crash (57P02) or cannot
/// take connections (57P03).
fn server_going_down(fatal_frame: Option<&Bytes>) -> bool {
    let Some(frame) = fatal_frame else {
        return true;
    };
    let e = ServerError::parse(&crate::protocol::Frame {
        tag: frame[0],
        body: frame.slice(5..),
    });
    matches!(e.code.as_str(), "57P01" | "57P02" | "57P03")
}

/// Sleeps until `deadline`, or forever when there is none.
/// Waits for `future` if there is one, else forever.
pub(super) async fn maybe<F: std::future::Future<Output = ()>>(future: Option<F>) {
    match future {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

pub(super) async fn sleep_or_never(deadline: Option<Instant>) {
    match deadline {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// What a client sees when tidepool could not get it a working backend.
pub(super) fn backend_error_for_client(e: &BackendError, severity: Severity) -> ErrorFields {
    let mut fields = match e {
        BackendError::Server { code, message, .. } => ErrorFields::error(
            SqlState::parse(code).unwrap_or(SqlState::CONNECTION_FAILURE),
            message.clone(),
        ),
        other => ErrorFields::error(SqlState::CONNECTION_FAILURE, other.to_string()),
    };
    fields.severity = severity;
    fields
}
