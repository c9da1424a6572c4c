//! A logged-in client: the welcome, then requests served over backends checked out per
//! transaction (transaction mode) or once (session mode), and what happens when either side fails.

mod abandon;
mod accounting;
mod attach;
pub(crate) mod checkout;
mod drain;
mod events;
mod follow;
pub mod local_commands;
pub mod relay;
mod reloaded;
pub mod routing;
mod timeouts;
mod wait;

use crate::app::{Shared, Snapshot};
use crate::backend::BackendError;
use crate::client::cancel::Registration;
use crate::client::conn::ClientConn;
use crate::client::features::statements::{ClientStatements, Pipeline};
use crate::client::login::CloseReason;
use crate::client::params::ClientParams;
use crate::client::session::checkout::{Checkout, Event};
use crate::client::session::relay::{Exchange, RelayEvent, Rewrite};
use crate::config::PoolMode;
use crate::protocol::{backend_msg, ErrorFields, Severity, SqlState, TransactionStatus};
use crate::shutdown::Stage;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::{sleep_until, Instant};

/// A logged-in client.
pub(crate) struct Session {
    pub(crate) shared: Arc<Shared>,
    /// What the catalog of the client's database says can change session state (isolation).
    pub(crate) hazard_slot: Arc<crate::client::features::isolation::HazardSlot>,
    /// The configuration this transaction runs under: taken once per attach, not per message.
    pub(crate) snapshot: Arc<Snapshot>,
    pub(crate) client: ClientConn,
    /// The pool of the node serving (or about to serve) the client, the client's cancel slot
    /// and the backend checked out, if any: the session's state (`checkout.rs`).
    pub(crate) checkout: Checkout,
    /// Pools of every node for this client's (database, user), found once.
    pub(crate) node_pools: Vec<Option<Arc<crate::pool::Pool>>>,
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
    /// An error owed to the client's next request (its server died while it idled in a
    /// transaction).
    pub(crate) pending_error: Option<Box<ErrorFields>>,
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
    pub(crate) listens: Option<Box<crate::notify::Subscription>>,
    /// When the current transaction began (`transaction_timeout`, see `timeouts.rs`).
    pub(crate) tx_clock: crate::client::session::timeouts::TransactionClock,
    /// Pools held while a statement that needs their database to itself runs (`database_ddl.rs`).
    pub(crate) database_holds: Vec<crate::pool::CheckoutHold>,
    /// Snapshot and health checkers as last taken (`reloaded.rs`).
    pub(crate) followed: crate::client::session::reloaded::Followed,
}

impl Session {
    pub(crate) async fn run(&mut self) -> CloseReason {
        // Boxed: the login's attach happens once; inline it would size the task for good.
        if let Err(reason) = Box::pin(self.attach(true)).await {
            return reason;
        }
        let registration = self.welcome();
        self.checkout.set_cancel_slot(registration.slot.clone());
        // Transaction mode: login needed a backend only to learn and apply the client's settings.
        let transaction_mode = self.mode == PoolMode::Transaction;
        self.checkout.handle(Event::Welcomed { transaction_mode });
        let reason = self.serve_requests(registration.key.pid).await;
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
        let backend = self.checkout.server().expect("attached at login");
        for (name, value) in &backend.reported {
            backend_msg::parameter_status(&mut self.client.wbuf, name, value);
        }
        let real_pid = (self.mode == PoolMode::Session).then_some(backend.key.pid);
        let counts = self.checkout.pool().stats.cancels.clone();
        let registration = self.shared.cancels.register(real_pid, counts);
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

    /// The request loop: wait for a request (no backend), attach, relay, act on where the
    /// exchange stopped. `key_pid`: the pid of the client's cancel key.
    pub(crate) async fn serve_requests(&mut self, key_pid: i32) -> CloseReason {
        loop {
            if !self.checkout.is_attached() {
                self.ticket.idle();
                if let Err(reason) = self.wait_for_request().await {
                    return reason;
                }
                if self.answer_locally() {
                    continue;
                }
                match self.attach_cancellable(false).await {
                    Ok(true) => {}
                    // Cancelled while queued (or failed): the owed error answers the request.
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
            let event = match self.relay_turn(key_pid).await {
                Turn::Event(event) => event,
                Turn::Again => continue,
                Turn::Close(reason) => return reason,
            };
            if let Some(reason) = self.after_relay(event).await {
                return reason;
            }
        }
    }

    /// One turn of the relay on the attached backend, with the arms a client idling here needs.
    async fn relay_turn(&mut self, key_pid: i32) -> Turn {
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
            crate::client::session::drain::stop_due(&self.ticket, &self.shared.shutdown, stop_stage, first)
        });
        let per_transaction = self.routes_per_transaction();
        let query_timeout = self.snapshot.config.proxy.query_timeout.non_zero();
        self.checkout.arm_cancel();
        let backend = self.checkout.attached();
        // Notifications this backend sends from now on may be this client's (a lock only
        // at the backend's first checkout; then one atomic swap).
        let registry = &self.shared.cancels.users;
        let users = (backend.users).get_or_insert_with(|| registry.register(backend.key.pid));
        users.begin(key_pid, || registry.now());
        if self.exchange.features.track_settings {
            self.exchange.features.notify_as = key_pid;
        }
        let rewrite = (per_transaction && self.max_prepared > 0).then(|| Rewrite {
            cache: &self.shared.statements,
            client: &mut self.statements,
            pipe: &mut self.pipeline,
            capacity: self.max_prepared,
        });
        tokio::select! {
            // The relay first; the others are polled only while it waits.
            biased;
            event = crate::client::session::timeouts::relay_timed(&mut self.client, backend, &mut self.exchange, rewrite, query_timeout) => Turn::Event(event),
            _ = sleep_or_never(idle_deadline) => Turn::Close(Box::pin(self.idle_timeout_hit()).await),
            _ = sleep_or_never(tx_deadline) => Turn::Close(Box::pin(self.transaction_timeout_hit()).await),
            _ = maybe(stop_due) => Turn::Close(Box::pin(self.close_for_shutdown()).await),
            _ = crate::client::features::listen::notified(&self.listens), if quiet && between_transactions => {
                // A pinned client between transactions gets its notifications now.
                self.deliver_notifications();
                Turn::Again
            }
            _ = crate::client::session::routing::role_changed(role_change.as_mut()), if quiet => Turn::Again,
        }
    }

    pub(crate) fn idle_timeout(&self) -> Option<Duration> {
        self.snapshot.config.proxy.client_idle_timeout.non_zero()
    }
}

/// How a turn of the relay ended.
enum Turn {
    /// Where the exchange stopped, for `after_relay`.
    Event(RelayEvent),
    /// Nothing to act on (a notification delivered, roles changed): round the loop again.
    Again,
    Close(CloseReason),
}

pin_project_lite::pin_project! {
    /// Waits for `future` if there is one, else forever. A plain future, not an async fn (whose
    /// future would hold the argument beside its own copy): an idle client's task carries it.
    pub(crate) struct Maybe<F> {
        #[pin]
        future: Option<F>,
    }
}

pub(crate) fn maybe<F: Future<Output = ()>>(future: Option<F>) -> Maybe<F> {
    Maybe { future }
}

impl<F: Future<Output = ()>> Future for Maybe<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match self.project().future.as_pin_mut() {
            Some(future) => future.poll(cx),
            None => Poll::Pending,
        }
    }
}

/// Sleeps until a deadline, or forever when there is none. The timer is boxed, and only made
/// when there is a deadline (the timeouts are off by default): inline, every client's task
/// would carry one per wait that may time out, idle or not.
pub(crate) struct SleepOrNever(Option<Pin<Box<tokio::time::Sleep>>>);

pub(crate) fn sleep_or_never(deadline: Option<Instant>) -> SleepOrNever {
    SleepOrNever(deadline.map(|at| Box::pin(sleep_until(at))))
}

impl Future for SleepOrNever {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        match &mut self.0 {
            Some(sleep) => sleep.as_mut().poll(cx),
            None => Poll::Pending,
        }
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
