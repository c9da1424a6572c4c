//! A logged-in client: the welcome, then requests served over backends checked out per
//! transaction (transaction mode) or once (session mode), and what happens when either side fails.

mod abandon;
mod accounting;
mod attach;
mod drain;
mod follow;
pub mod local_commands;
pub mod relay;
mod reloaded;
pub mod routing;
mod timeouts;

use crate::app::{Shared, Snapshot};
use crate::backend::BackendError;
use crate::client::cancel::{CancelTarget, Registration};
use crate::client::conn::{ClientConn, ClientIoError};
use crate::client::features::keywords::Words;
use crate::client::features::statements::{ClientStatements, Pipeline};
use crate::client::login::CloseReason;
use crate::client::params::ClientParams;
use crate::client::session::relay::{Exchange, RelayEvent, Rewrite};
use crate::config::PoolMode;
use crate::pool::Pool;
use crate::protocol::error::BackendError as ServerError;
use crate::protocol::tracker::{Direction, Step};
use crate::protocol::{backend_msg, tag, ErrorFields, Severity, SqlState, TransactionStatus};
use crate::shutdown::Stage;
use bytes::{Buf, Bytes};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{sleep_until, Instant};

/// How much of a pipelining client's input routing waits for, to see its frames whole.
const ROUTING_LOOKAHEAD: usize = 64 * 1024;

/// A logged-in client.
pub(crate) struct Session {
    pub(crate) shared: Arc<Shared>,
    /// What the catalog of the client's database says can change session state (isolation).
    pub(crate) hazard_slot: Arc<crate::client::features::isolation::HazardSlot>,
    /// The configuration this transaction runs under: taken once per attach, not per message.
    pub(crate) snapshot: Arc<Snapshot>,
    pub(crate) client: ClientConn,
    /// The pool of the node serving (or about to serve) the client.
    pub(crate) pool: Arc<Pool>,
    /// Pools of every node for this client's (database, user), found once.
    pub(crate) node_pools: Vec<Option<Arc<Pool>>>,
    pub(crate) user: Arc<crate::auth::UserAuth>,
    /// `SET tidepool.route` / `options=-c tidepool.route=…`: forces reads or writes to one role.
    pub(crate) route: crate::router::RouteSetting,
    /// The primary's WAL position after the client's last write transaction (read your writes).
    pub(crate) ryw_lsn: Option<crate::health::Lsn>,
    /// The current transaction was routed as a write (to the primary).
    pub(crate) routed_write: bool,
    pub(crate) mode: PoolMode,
    pub(crate) params: ClientParams,
    pub(crate) exchange: Exchange,
    /// The backend serving the client now, if any.
    pub(crate) backend: Option<crate::pool::Server>,
    /// An error owed to the client's next request (its server died while it idled in a
    /// transaction).
    pub(crate) pending_error: Option<ErrorFields>,
    /// After an error in an extended-protocol batch, drop client messages until Sync.
    pub(crate) discard_until_sync: bool,
    /// The client's named prepared statements (transaction mode).
    pub(crate) statements: ClientStatements,
    /// Requests awaiting answers, for statement renaming (transaction mode).
    pub(crate) pipeline: Pipeline,
    /// `pool.max_prepared_statements` at login; 0 turns renaming off.
    pub(crate) max_prepared: usize,
    /// What pins the client to its backend now (transaction mode).
    pub(crate) pins: crate::client::features::pinning::Pins,
    /// The client's entry in the registry (SHOW CLIENTS, KILL_CLIENT).
    pub(crate) ticket: crate::client::registry::ClientTicket,
    /// The node serving the client is a standby (metrics by role).
    pub(crate) on_standby: bool,
    /// No request answered yet: a shutdown gives such a client a moment for its first one (see
    /// `drain.rs`), so that one logging in as the shutdown begins is not turned away.
    pub(crate) awaiting_first_request: bool,
    /// Node of the backend, held-back BEGIN, parked backends (`routing.rs`).
    pub(crate) ha: crate::client::session::routing::HaState,
    /// Channels it LISTENs to through the pool's listener (transaction mode, `listen.rs`).
    pub(crate) listens: Option<crate::notify::Subscription>,
    /// When the current transaction began (`transaction_timeout`, see `timeouts.rs`).
    pub(crate) tx_clock: crate::client::session::timeouts::TransactionClock,
    /// Pools held while a statement that needs their database to itself runs (`database_ddl.rs`).
    pub(crate) database_holds: Vec<crate::pool::CheckoutHold>,
    /// Snapshot and health checkers as last taken (`reloaded.rs`).
    pub(crate) followed: crate::client::session::reloaded::Followed,
}

impl Session {
    pub(crate) async fn run(&mut self) -> CloseReason {
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

    pub(crate) async fn serve_requests(&mut self, registration: &Registration) -> CloseReason {
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
                    crate::client::session::routing::Demotion::None => {}
                    crate::client::session::routing::Demotion::Dropped => continue,
                    crate::client::session::routing::Demotion::Close(reason) => return reason,
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
                crate::client::session::drain::stop_due(
                    &self.ticket,
                    &self.shared.shutdown,
                    stop_stage,
                    first,
                )
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
                event = crate::client::session::timeouts::relay_timed(&mut self.client, backend, &mut self.exchange, rewrite, query_timeout) => event,
                _ = sleep_or_never(idle_deadline) => {
                    return self.idle_timeout_hit().await;
                }
                _ = sleep_or_never(tx_deadline) => return self.transaction_timeout_hit().await,
                _ = maybe(stop_due) => return self.close_for_shutdown().await,
                _ = crate::client::features::listen::notified(&self.listens), if quiet && between_transactions => {
                    // A pinned client between transactions gets its notifications now.
                    self.deliver_notifications();
                    continue;
                }
                _ = crate::client::session::routing::role_changed(role_change.as_mut()), if quiet => continue,
            };
            self.account_relay(&event);
            if !matches!(event, RelayEvent::DatabaseDdl(_) | RelayEvent::SchemaChanged(_)) {
                // The statement that needed a database to itself was answered (or never will be).
                self.database_holds.clear();
            }
            match event {
                RelayEvent::DatabaseDdl(databases) => {
                    let holds =
                        crate::client::features::database_ddl::free_databases(&self.shared, &databases);
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

    pub(crate) fn idle_timeout(&self) -> Option<Duration> {
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
                let shutdown_due = crate::client::session::drain::stop_due(
                    &self.ticket,
                    &self.shared.shutdown,
                    Stage::Graceful,
                    first,
                );
                tokio::select! {
                    biased;
                    ready = self.client.wait_readable() => ready?,
                    _ = crate::client::features::listen::notified(&self.listens) => continue,
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
            let words =
                (self.mode == PoolMode::Transaction && matches!(tag, tag::QUERY | tag::PARSE)).then(|| {
                    Words::scan(crate::client::session::relay::sql_start(
                        tag,
                        &self.client.rbuf[5..total],
                    ))
                });
            if let Some(words) = words {
                if self.answer_listen(words).await {
                    continue;
                }
            }
            if self.mode == PoolMode::Transaction
                && self.max_prepared > 0
                && (tag == tag::PARSE || tag == tag::CLOSE)
            {
                let answered = crate::client::features::statements::answer_without_backend(
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
    pub(crate) async fn backend_lost(
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

/// Waits for `future` if there is one, else forever.
pub(crate) async fn maybe<F: std::future::Future<Output = ()>>(future: Option<F>) {
    match future {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `deadline`, or forever when there is none.
pub(crate) async fn sleep_or_never(deadline: Option<Instant>) {
    match deadline {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// What a client sees when tidepool could not get it a working backend.
pub(crate) fn backend_error_for_client(e: &BackendError, severity: Severity) -> ErrorFields {
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
