//! One client's life after startup: authentication, the welcome, then requests served over
//! backends checked out per transaction (transaction mode) or once (session mode).

use super::auth::{self, AuthError};
use super::cancel::{CancelSlot, CancelTarget, Registration};
use super::conn::{ClientConn, ClientIoError};
use super::params::{follow_reported, settings_diff_sql, ClientParams};
use super::relay::{relay, Exchange, RelayEvent, Rewrite};
use super::startup::{negotiate, Opening, StartupFailure};
use super::statements::{ClientStatements, Pipeline};
use crate::app::Shared;
use crate::backend::{BackendConn, BackendError};
use crate::config::PoolMode;
use crate::pool::{Pool, PoolError, StartupWish};
use crate::protocol::error::BackendError as ServerError;
use crate::protocol::{backend_msg, tag, ErrorFields, Severity, SqlState, TransactionStatus};
use bytes::{Buf, Bytes};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::{sleep_until, Instant};

/// Why a client connection ended; logged with every disconnection.
#[derive(Debug, thiserror::Error)]
pub enum CloseReason {
    #[error("client sent Terminate")]
    Terminated,
    #[error("{0}")]
    ClientIo(#[from] ClientIoError),
    #[error("startup failed: {0}")]
    Startup(#[from] StartupFailure),
    #[error("login timed out")]
    LoginTimeout,
    #[error("authentication failed: {0}")]
    Auth(#[from] AuthError),
    #[error("{0}")]
    Refused(String),
    #[error("client_idle_timeout")]
    IdleTimeout,
    #[error("idle_transaction_timeout")]
    IdleInTransactionTimeout,
    #[error("server connection lost: {0}")]
    BackendLost(String),
    #[error("query_wait_timeout")]
    WaitTimeout,
    #[error("cancel request")]
    CancelRequest,
    #[error("shutting down")]
    Shutdown,
}

/// Serves one accepted connection to the end.
pub async fn serve(shared: Arc<Shared>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let over_limit = !shared
        .clients
        .try_enter(shared.snapshot().config.proxy.max_client_conn);
    let reason = serve_inner(&shared, stream, peer, over_limit).await;
    if !over_limit {
        shared.clients.leave();
    }
    match &reason {
        CloseReason::CancelRequest => {}
        CloseReason::Terminated => tracing::debug!(%peer, "client disconnected: {reason}"),
        _ => tracing::info!(%peer, "client disconnected: {reason}"),
    }
}

async fn serve_inner(
    shared: &Arc<Shared>,
    stream: TcpStream,
    peer: SocketAddr,
    over_limit: bool,
) -> CloseReason {
    let snapshot = shared.snapshot();
    let proxy = &snapshot.config.proxy;
    let mut client = ClientConn::new(stream, peer, proxy.max_message_size.0.min(u32::MAX as u64) as u32);
    let login_deadline = Instant::now() + proxy.client_login_timeout.0;

    let params = match tokio::time::timeout_at(login_deadline, negotiate(&mut client)).await {
        Err(_) => return CloseReason::LoginTimeout,
        Ok(Err(e)) => return e.into(),
        Ok(Ok(Opening::Cancel(key))) => {
            shared.cancels.cancel(key).await;
            return CloseReason::CancelRequest;
        }
        Ok(Ok(Opening::Login(params))) => params,
    };
    if over_limit {
        client
            .send_fatal(ErrorFields::fatal(
                SqlState::TOO_MANY_CONNECTIONS,
                "sorry, too many clients already",
            ))
            .await;
        return CloseReason::Refused("max_client_conn reached".into());
    }

    let user = snapshot.users.lookup(&params.user);
    let auth = auth::authenticate(&mut client, &params.user, user.as_deref(), &snapshot.users);
    match tokio::time::timeout_at(login_deadline, auth).await {
        Err(_) => {
            client
                .send_fatal(ErrorFields::fatal(
                    SqlState::CANNOT_CONNECT_NOW,
                    "canceling authentication due to timeout",
                ))
                .await;
            return CloseReason::LoginTimeout;
        }
        Ok(Err(e)) => {
            tracing::warn!(%peer, user = %params.user, database = %params.database, "login failed: {e}");
            if let Some(error) = e.client_error(&params.user) {
                client.send_fatal(error).await;
            }
            return e.into();
        }
        Ok(Ok(())) => {}
    }
    let Some(user) = user else {
        // authenticate() fails for unknown users; this is unreachable in practice.
        return CloseReason::Refused("unknown user".into());
    };

    let Some(pool) = shared.pool_for(&snapshot, &params.database, &user.config, 0) else {
        let message = format!("database \"{}\" does not exist", params.database);
        client
            .send_fatal(ErrorFields::fatal(
                SqlState::INVALID_CATALOG_NAME,
                message.clone(),
            ))
            .await;
        return CloseReason::Refused(message);
    };
    let mode = pool.settings().mode;
    let node_count = snapshot.config.nodes.len();
    let mut session = Session {
        shared: shared.clone(),
        client,
        node_pools: vec![None; node_count],
        pool,
        route: startup_route(&params),
        ryw_lsn: None,
        routed_write: false,
        user,
        mode,
        params,
        exchange: Exchange::default(),
        backend: None,
        pending_error: None,
        discard_until_sync: false,
        statements: ClientStatements::default(),
        pipeline: Pipeline::default(),
        max_prepared: snapshot.config.pool.max_prepared_statements,
        pins: Default::default(),
    };
    let reason = session.run().await;
    session.finish().await;
    reason
}

/// A logged-in client.
struct Session {
    shared: Arc<Shared>,
    client: ClientConn,
    /// The pool of the node serving (or about to serve) the client.
    pool: Arc<Pool>,
    /// Pools of every node for this client's (database, user), found once.
    node_pools: Vec<Option<Arc<Pool>>>,
    user: Arc<super::auth::UserAuth>,
    /// `SET tidepool.route` / `options=-c tidepool.route=…`: forces reads or writes to one role.
    route: crate::router::RouteSetting,
    /// The primary's WAL position after the client's last write transaction (read your writes).
    ryw_lsn: Option<crate::health::Lsn>,
    /// The current transaction was routed as a write (to the primary).
    routed_write: bool,
    mode: PoolMode,
    params: ClientParams,
    exchange: Exchange,
    /// The backend serving the client now, if any.
    backend: Option<BackendConn>,
    /// An error owed to the client's next request (its server died while it idled in a
    /// transaction).
    pending_error: Option<ErrorFields>,
    /// After an error in an extended-protocol batch, drop client messages until Sync.
    discard_until_sync: bool,
    /// The client's named prepared statements (transaction mode).
    statements: ClientStatements,
    /// Requests awaiting answers, for statement renaming (transaction mode).
    pipeline: Pipeline,
    /// `pool.max_prepared_statements` at login; 0 turns renaming off.
    max_prepared: usize,
    /// What pins the client to its backend now (transaction mode).
    pins: super::pinning::Pins,
}

impl Session {
    async fn run(&mut self) -> CloseReason {
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
    async fn attach(&mut self, login: bool) -> Result<(), CloseReason> {
        self.attach_cancellable(login, None).await.map(|_| ())
    }

    /// `attach`, but a cancel request for this client while it waits for the pool takes it out
    /// of the queue: its request gets 57014 and the connection stays. Returns false then.
    async fn attach_cancellable(
        &mut self,
        login: bool,
        cancel: Option<&CancelSlot>,
    ) -> Result<bool, CloseReason> {
        let decision = (!login && self.mode == PoolMode::Transaction && self.shared.health.is_some())
            .then(|| self.classify_request());
        self.routed_write = decision.is_none_or(|d| d.access == crate::router::Access::Write);
        // A node that refuses connections may be failing over: with health checking, wait for the
        // topology to change and choose again, up to failover_timeout.
        let failover_deadline = Instant::now() + self.shared.snapshot().config.routing.failover_timeout.0;
        let mut backend = loop {
            if self.shared.health.is_some() {
                // Sessions (and logins) start on the primary; transactions go where they may.
                match self.choose_node(decision).await {
                    Ok(index) => match self.node_pool(index) {
                        Some(pool) => self.pool = pool,
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
            let changed = self.shared.health.as_ref().map(|h| h.changed());
            let checkout = self.pool.checkout(wish);
            let checked_out = match cancel {
                Some(slot) => slot.cancellable(checkout).await,
                None => Some(checkout.await),
            };
            let Some(checked_out) = checked_out else {
                self.pending_error = Some(ErrorFields::error(
                    SqlState::QUERY_CANCELED,
                    "canceling statement due to user request",
                ));
                return Ok(false);
            };
            match checked_out {
                Ok(b) => break b,
                Err(PoolError::WaitTimeout) => {
                    let error = ErrorFields::fatal(SqlState::PROTOCOL_VIOLATION, "query_wait_timeout")
                        .with_detail("No server connection became available within query_wait_timeout.");
                    self.client.send_fatal(error).await;
                    return Err(CloseReason::WaitTimeout);
                }
                Err(PoolError::Backend(e)) => {
                    if let Some(changed) = changed.filter(|_| e.happened_before_login()) {
                        if tokio::time::timeout_at(failover_deadline, changed).await.is_ok() {
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
        if self.mode == PoolMode::Transaction {
            if let Some(sql) = settings_diff_sql(&backend.applied, &self.params.settings) {
                let outcome = backend.run_simple(&sql).await;
                match outcome {
                    Ok(o) if o.error.is_none() => backend.applied = self.params.settings.clone(),
                    Ok(o) => {
                        // A value the server refuses: PostgreSQL would refuse the login.
                        let e = o.parsed_error().unwrap_or_default();
                        self.pool.release(backend);
                        let mut error = ErrorFields::fatal(SqlState::new("22023"), e.message.clone());
                        if let Some(code) = SqlState::parse(&e.code) {
                            error.code = code;
                        }
                        if !login {
                            error.severity = Severity::Error;
                        }
                        self.client.send_fatal(error).await;
                        return Err(CloseReason::Refused(e.message));
                    }
                    Err(e) => {
                        self.pool.discard(backend);
                        self.client
                            .send_fatal(backend_error_for_client(&e, Severity::Fatal))
                            .await;
                        return Err(CloseReason::BackendLost(e.to_string()));
                    }
                }
            }
        }
        self.exchange = Exchange::default();
        self.exchange.track_settings = self.mode == PoolMode::Transaction;
        self.exchange.pinned = self.pins.any();
        self.pipeline = Pipeline::default();
        self.backend = Some(backend);
        Ok(true)
    }

    /// The pool of node `index` for this client, found once per session.
    fn node_pool(&mut self, index: usize) -> Option<Arc<Pool>> {
        if let Some(Some(pool)) = self.node_pools.get(index) {
            return Some(pool.clone());
        }
        let snapshot = self.shared.snapshot();
        let pool = self
            .shared
            .pool_for(&snapshot, &self.params.database, &self.user.config, index)?;
        if let Some(slot) = self.node_pools.get_mut(index) {
            *slot = Some(pool.clone());
        }
        Some(pool)
    }

    /// Classifies the request waiting in the read buffer: the simple-protocol Query, or every
    /// Parse/Bind up to the Sync of an extended-protocol batch (a batch goes to one node, so any
    /// write in it sends it to the primary). Anything not visible in full counts as a write.
    fn classify_request(&mut self) -> crate::router::Decision {
        let mut new_route = None;
        let decision = self.classify_buffered(&mut new_route);
        let decision = apply_route(decision, self.route);
        if let Some(route) = new_route {
            self.route = route;
        }
        decision
    }

    fn classify_buffered(
        &self,
        new_route: &mut Option<crate::router::RouteSetting>,
    ) -> crate::router::Decision {
        use crate::router::{Access, Control, Decision};
        let snapshot = self.shared.snapshot();
        let write = write_decision();
        let buf = &self.client.rbuf[..];
        let mut pos = 0;
        let mut combined: Option<Decision> = None;
        while let Ok(Some((tag, total))) =
            crate::protocol::frame::peek_header(&buf[pos..], self.client.decoder.max_len())
        {
            if buf.len() - pos < total {
                return write;
            }
            let body = &buf[pos + 5..pos + total];
            let sql = match tag {
                tag::QUERY => Some(cstr(body)),
                tag::PARSE => body.iter().position(|&b| b == 0).map(|n| cstr(&body[n + 1..])),
                tag::BIND => {
                    let statement = body
                        .iter()
                        .position(|&b| b == 0)
                        .map(|n| cstr(&body[n + 1..]))
                        .unwrap_or_default();
                    match self.statements.by_name.get(statement.as_ref()) {
                        Some(stmt) => Some(std::borrow::Cow::Owned(stmt.query().to_string())),
                        // The unnamed statement or one parsed earlier in this batch.
                        None if combined.is_some() => None,
                        None => return write,
                    }
                }
                tag::SYNC | tag::DESCRIBE | tag::EXECUTE | tag::CLOSE | tag::FLUSH => None,
                _ => return write,
            };
            if let Some(sql) = sql {
                let mut decision = snapshot.classifier.classify(&sql);
                if matches!(decision.control, Some(Control::BeginReadOnly)) {
                    decision.access = Access::Read;
                }
                if let Some(Control::SetRoute { route, local: false }) = decision.control {
                    // Takes effect from the next transaction on (PostgreSQL runs the SET too).
                    *new_route = Some(route);
                }
                combined = Some(match combined {
                    None => decision,
                    Some(previous) if previous.access == Access::Write => previous,
                    Some(previous) if decision.access == Access::Read => previous,
                    Some(_) => decision,
                });
            }
            if tag == tag::QUERY || tag == tag::SYNC {
                return combined.unwrap_or(write);
            }
            pos += total;
        }
        write
    }

    /// The node for a request with this classification (`None`: the primary). Waits up to
    /// `failover_timeout` for a primary to appear; never sends a write to a standby.
    async fn choose_node(&self, decision: Option<crate::router::Decision>) -> Result<usize, ErrorFields> {
        use crate::router::{pick, Target, Why};
        let Some(health) = self.shared.health.as_ref() else {
            return Ok(0);
        };
        let snapshot = self.shared.snapshot();
        let decision = decision.unwrap_or_else(write_decision);
        let deadline = Instant::now() + snapshot.config.routing.failover_timeout.0;
        let ryw_deadline = Instant::now() + snapshot.config.routing.ryw_wait.0;
        loop {
            // Subscribe before looking, so a change in between is not missed.
            let changed = health.changed();
            let view = health.view();
            let routing = &snapshot.config.routing;
            let min_lsn = self
                .ryw_lsn
                .filter(|_| decision.access == crate::router::Access::Read);
            match pick(
                &decision,
                &view,
                routing,
                &snapshot.weights,
                &self.shared.round_robin,
                min_lsn,
            ) {
                Target::Node {
                    why: Why::NoStandby, ..
                } if min_lsn.is_some() && Instant::now() < ryw_deadline => {
                    // Give a standby up to ryw_wait to replay the client's last write.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                Target::Node { index, .. } => return Ok(index),
                Target::NoStandby => {
                    return Err(ErrorFields::error(
                        SqlState::CANNOT_CONNECT_NOW,
                        "no standby available",
                    ))
                }
                Target::NoPrimary => {
                    if tokio::time::timeout_at(deadline, changed).await.is_err() {
                        return Err(ErrorFields::error(
                            SqlState::CANNOT_CONNECT_NOW,
                            "no primary server available",
                        )
                        .with_detail("No node reported being the primary within failover_timeout."));
                    }
                }
            }
        }
    }

    /// AuthenticationOk was sent by auth; now ParameterStatus, BackendKeyData, ReadyForQuery.
    fn welcome(&mut self) -> Registration {
        let backend = self.backend.as_ref().expect("attached at login");
        for (name, value) in &backend.reported {
            backend_msg::parameter_status(&mut self.client.wbuf, name, value);
        }
        let real_pid = (self.mode == PoolMode::Session).then_some(backend.key.pid);
        let registration = self.shared.cancels.register(real_pid);
        backend_msg::backend_key_data(
            &mut self.client.wbuf,
            registration.key.pid,
            registration.key.secret,
        );
        backend_msg::ready_for_query(&mut self.client.wbuf, b'I');
        self.exchange.mark_quiet_reported();
        registration
    }

    async fn serve_requests(&mut self, registration: &Registration) -> CloseReason {
        let shared = self.shared.clone();
        loop {
            if self.backend.is_none() {
                if let Err(reason) = self.wait_for_request().await {
                    return reason;
                }
                match self.attach_cancellable(false, Some(&registration.slot)).await {
                    Ok(true) => {}
                    // Cancelled while queued: the owed error answers the request.
                    Ok(false) => continue,
                    Err(reason) => return reason,
                }
            }
            let idle_deadline = match self.exchange.status {
                _ if !self.exchange.is_quiet() => None,
                TransactionStatus::Idle => self.idle_timeout(),
                _ => shared.snapshot().config.proxy.idle_transaction_timeout.non_zero(),
            }
            .map(|t| Instant::now() + t);
            let backend = self.backend.as_mut().expect("attached above");
            registration.slot.set(Some(CancelTarget {
                addr: backend.addr.clone(),
                key: backend.key,
            }));
            let rewrite = (self.mode == PoolMode::Transaction && self.max_prepared > 0).then(|| Rewrite {
                cache: &shared.statements,
                client: &mut self.statements,
                pipe: &mut self.pipeline,
                capacity: self.max_prepared,
            });
            let event = tokio::select! {
                event = relay(&mut self.client, backend, &mut self.exchange, rewrite) => event,
                _ = sleep_or_never(idle_deadline) => {
                    return self.idle_timeout_hit().await;
                }
                _ = shared.shutdown.wait(), if self.exchange.is_quiet() && self.exchange.status == TransactionStatus::Idle => {
                    self.client.send_fatal(ErrorFields::fatal(SqlState::ADMIN_SHUTDOWN, "terminating connection due to administrator command")).await;
                    return CloseReason::Shutdown;
                }
            };
            match event {
                RelayEvent::Idle => {
                    self.follow_settings();
                    if !self.exchange.changes.is_empty() {
                        if let Err(e) = self.carry_setting_changes().await {
                            registration.slot.set(None);
                            if let Some(reason) = self.backend_lost(None, e.to_string()).await {
                                return reason;
                            }
                            continue;
                        }
                    }
                    if self.exchange.pins_may_have_changed {
                        if let Err(e) = self.probe_pins().await {
                            registration.slot.set(None);
                            if let Some(reason) = self.backend_lost(None, e.to_string()).await {
                                return reason;
                            }
                            continue;
                        }
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
                    }
                }
                RelayEvent::IdleInTransaction => self.follow_settings(),
                RelayEvent::IdleUnsynced => {
                    if self.pins.any() {
                        continue;
                    }
                    // Close the batch on the backend ourselves; a lone Sync from the client later
                    // is answered without a backend.
                    let backend = self.backend.as_mut().expect("attached");
                    let mut out = bytes::BytesMut::with_capacity(5);
                    crate::protocol::frontend_msg::sync(&mut out);
                    let closed = async {
                        backend.write_all(&out).await?;
                        loop {
                            let frame = backend.read_frame().await?;
                            if backend.observe(&frame) {
                                break;
                            }
                        }
                        Ok::<(), BackendError>(())
                    }
                    .await;
                    registration.slot.set(None);
                    let backend = self.backend.take().expect("attached");
                    match closed {
                        Ok(()) => self.pool.release(backend),
                        Err(_) => self.pool.discard(backend),
                    }
                    self.exchange.unsynced = false;
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

    fn idle_timeout(&self) -> Option<Duration> {
        self.shared.snapshot().config.proxy.client_idle_timeout.non_zero()
    }

    /// Settings the client changed during the exchange follow it to its next backend.
    fn follow_settings(&mut self) {
        if self.exchange.reported.is_empty() {
            return;
        }
        let reported = std::mem::take(&mut self.exchange.reported);
        follow_reported(&mut self.params.settings, &reported);
        if let Some(backend) = self.backend.as_mut() {
            follow_reported(&mut backend.applied, &reported);
        }
    }

    fn read_your_writes(&self) -> bool {
        self.mode == PoolMode::Transaction
            && self.shared.health.is_some()
            && self.shared.snapshot().config.routing.read_your_writes
    }

    /// After a write transaction: where the primary's WAL is now, so that this client's reads
    /// only go to standbys that replayed that far.
    async fn record_write_position(&mut self) -> Result<(), BackendError> {
        self.routed_write = false;
        let backend = self.backend.as_mut().expect("attached");
        let outcome = backend
            .run_simple("SELECT pg_catalog.pg_current_wal_lsn()")
            .await?;
        let lsn = outcome
            .first_row
            .and_then(|row| row.into_iter().next().flatten())
            .and_then(|text| crate::health::Lsn::parse(&text));
        if lsn.is_some() {
            self.ryw_lsn = lsn;
        }
        Ok(())
    }

    /// Asks the backend what the client holds that cannot move (locks, temp tables, cursors,
    /// LISTEN); while it holds any, the backend stays with the client.
    async fn probe_pins(&mut self) -> Result<(), BackendError> {
        self.exchange.pins_may_have_changed = false;
        let backend = self.backend.as_mut().expect("attached");
        let outcome = backend.run_simple(super::pinning::PROBE_SQL).await?;
        let row = outcome.first_row.unwrap_or_default();
        let pins = super::pinning::Pins::from_row(&row);
        if pins.any() != self.pins.any() {
            let peer = self.client.peer;
            if pins.any() {
                self.shared
                    .stats
                    .pinned_clients
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::debug!(%peer, backend = backend.id, "client pinned to its backend: {}", pins.describe());
            } else {
                self.shared
                    .stats
                    .pinned_clients
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                tracing::debug!(%peer, backend = backend.id, "client unpinned");
            }
        }
        self.pins = pins;
        self.exchange.pinned = pins.any();
        Ok(())
    }

    /// After a transaction that ran SET/RESET/DISCARD ALL: reads back what the settings are now
    /// and records them as the client's (they follow it) and as the backend's (so the next client
    /// gets only its own). One round trip, only after such transactions.
    async fn carry_setting_changes(&mut self) -> Result<(), BackendError> {
        let changes = std::mem::take(&mut self.exchange.changes);
        let backend = self.backend.as_mut().expect("attached");
        let settings = &mut self.params.settings;
        if changes.reset_all {
            // The backend went back to server defaults; the client to its startup values.
            *settings = self.params.startup_settings.clone();
            backend.applied.clear();
        }
        for name in &changes.reset {
            settings.retain(|(n, _)| n != name);
            if let Some((_, v)) = self.params.startup_settings.iter().find(|(n, _)| n == name) {
                settings.push((name.clone(), v.clone()));
            }
            backend.applied.retain(|(n, _)| n != name);
        }
        if changes.set.is_empty() {
            return Ok(());
        }
        let columns: Vec<String> = changes
            .set
            .iter()
            .map(|n| format!("pg_catalog.current_setting({}, true)", super::params::literal(n)))
            .collect();
        let outcome = backend
            .run_simple(&format!("SELECT {}", columns.join(", ")))
            .await?;
        let row = outcome.first_row.unwrap_or_default();
        for (name, value) in changes.set.iter().zip(row) {
            if let Some(value) = value {
                super::params::set(settings, name.clone(), value.clone());
                super::params::set(&mut backend.applied, name.clone(), value);
            }
        }
        Ok(())
    }

    /// Transaction mode between transactions: flush, wait for the client's next request, and
    /// answer locally what needs no server (an owed error, Flush, Terminate).
    async fn wait_for_request(&mut self) -> Result<(), CloseReason> {
        loop {
            self.client.flush().await?;
            if self.client.rbuf.is_empty() {
                let deadline = self.idle_timeout().map(|t| Instant::now() + t);
                let shared = self.shared.clone();
                tokio::select! {
                    ready = self.client.wait_readable() => ready?,
                    _ = sleep_or_never(deadline) => return Err(self.idle_timeout_hit().await),
                    _ = shared.shutdown.wait() => {
                        self.client.send_fatal(ErrorFields::fatal(SqlState::ADMIN_SHUTDOWN, "terminating connection due to administrator command")).await;
                        return Err(CloseReason::Shutdown);
                    }
                }
                self.client.fill().await?;
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
            if self.mode == PoolMode::Transaction && self.max_prepared > 0 && tag == tag::PARSE {
                let answered = super::statements::answer_without_backend(
                    &self.client.rbuf,
                    &self.shared.statements,
                    &mut self.statements,
                    &mut self.client.wbuf,
                );
                if let Some(used) = answered {
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
            return Ok(());
        }
    }

    async fn idle_timeout_hit(&mut self) -> CloseReason {
        let in_transaction = self.backend.is_some() && self.exchange.status != TransactionStatus::Idle;
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
    async fn backend_lost(&mut self, fatal_frame: Option<Bytes>, message: String) -> Option<CloseReason> {
        let backend = self.backend.take().expect("attached");
        tracing::warn!(pool = %self.pool.key, backend = backend.id, "server connection lost: {message}");
        self.pool.discard(backend);
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
        if ex.pending > 0 || ex.unsynced {
            self.client.queue_error(&error);
            for _ in 0..ex.pending {
                backend_msg::ready_for_query(&mut self.client.wbuf, b'I');
            }
            self.discard_until_sync = ex.unsynced;
        } else {
            self.pending_error = Some(error);
        }
        None
    }

    /// Returns or closes the backend when the client leaves.
    async fn finish(&mut self) {
        let Some(mut backend) = self.backend.take() else {
            return;
        };
        let settings = self.pool.settings();
        let quiet = self.exchange.is_quiet() && backend.wbuf.is_empty();
        let exchange = &mut self.exchange;
        let (mode, pinned) = (self.mode, self.pins.any());
        let cleanup = async {
            if !quiet {
                // Abandoned mid-request: cancel it and read to the end, so that the connection
                // can serve someone else.
                drain_abandoned(&mut backend, exchange).await?;
            }
            if exchange.status != TransactionStatus::Idle {
                backend.run_simple("ROLLBACK").await?;
            }
            if mode == PoolMode::Session {
                backend.reset(&settings.reset_query).await?;
            } else if pinned {
                // Locks, temp tables, cursors and LISTENs must not outlive their client.
                backend.reset("DISCARD ALL").await?;
            }
            Ok::<(), BackendError>(())
        };
        // Bounded: a statement that ignores cancel is not worth waiting for.
        match tokio::time::timeout(Duration::from_secs(5), cleanup).await {
            Ok(Ok(())) => self.pool.release(backend),
            _ => self.pool.discard(backend),
        }
    }
}

/// Finishes what a departed client left running: sends what was buffered, ends an open COPY or
/// batch, cancels the running statement, and reads until every request is answered.
async fn drain_abandoned(backend: &mut BackendConn, ex: &mut Exchange) -> Result<(), BackendError> {
    use crate::protocol::frontend_msg;
    let mut out = std::mem::take(&mut backend.wbuf);
    if ex.in_copy_in() {
        let s = backend_msg::begin(&mut out, tag::COPY_FAIL);
        backend_msg::put_cstr(&mut out, "client disconnected");
        backend_msg::finish(&mut out, s);
    }
    if ex.unsynced {
        frontend_msg::sync(&mut out);
        ex.pending += 1;
    }
    backend.write_all(&out).await?;
    if ex.pending > 0 {
        let target = CancelTarget {
            addr: backend.addr.clone(),
            key: backend.key,
        };
        tokio::spawn(async move { super::cancel::send_cancel_to(&target).await });
    }
    while ex.pending > 0 {
        let frame = backend.read_frame().await?;
        if backend.observe(&frame) {
            ex.pending -= 1;
            if let Some(status) = frame.body.first().and_then(|&b| TransactionStatus::from_byte(b)) {
                ex.status = status;
            }
        }
    }
    Ok(())
}

/// A NUL-terminated string at the start of `bytes`, lossily decoded.
fn cstr(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end])
}

/// `tidepool.route` from the startup packet (`options=-c tidepool.route=standby`).
fn startup_route(params: &ClientParams) -> crate::router::RouteSetting {
    use crate::router::RouteSetting;
    match params
        .settings
        .iter()
        .find(|(name, _)| name == "tidepool.route")
        .map(|(_, v)| v.to_ascii_lowercase())
        .as_deref()
    {
        Some("primary") => RouteSetting::Primary,
        Some("standby") => RouteSetting::Standby,
        _ => RouteSetting::Auto,
    }
}

/// A connection-wide route setting acts like a hint on every statement without one.
fn apply_route(
    mut decision: crate::router::Decision,
    route: crate::router::RouteSetting,
) -> crate::router::Decision {
    use crate::router::{Hint, RouteSetting};
    if decision.hint.is_none() {
        decision.hint = match route {
            RouteSetting::Primary => Some(Hint::Primary),
            RouteSetting::Standby => Some(Hint::Standby),
            RouteSetting::Auto => None,
        };
    }
    decision
}

/// What a request tidepool cannot see into is: a write, for the primary.
fn write_decision() -> crate::router::Decision {
    crate::router::Decision {
        access: crate::router::Access::Write,
        reason: crate::router::Reason::Write,
        control: None,
        hint: None,
        max_lag: None,
    }
}

/// Sleeps until `deadline`, or forever when there is none.
async fn sleep_or_never(deadline: Option<Instant>) {
    match deadline {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// What a client sees when tidepool could not get it a working backend.
fn backend_error_for_client(e: &BackendError, severity: Severity) -> ErrorFields {
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
