//! From accepted socket to logged-in session: startup packet, max_client_conn, authentication,
//! the database's pool, then the session; every disconnection is logged with its reason.

use crate::app::{Shared, Snapshot};
use crate::client::authenticate::{self, AuthError};
use crate::client::conn::{ClientConn, ClientIoError};
use crate::client::features::statements::{ClientStatements, Pipeline};
use crate::client::params::ClientParams;
use crate::client::session::checkout::{Checkout, Event};
use crate::client::session::relay::Exchange;
use crate::client::session::routing::startup_route;
use crate::client::session::Session;
use crate::client::startup::{negotiate, Opening, StartupFailure};
use crate::listener::ConnectionGuard;
use crate::protocol::{ErrorFields, SqlState};
use crate::tls::Stream;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::time::Instant;

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
    #[error("transaction_timeout")]
    TransactionTimeout,
    #[error("server connection lost: {0}")]
    BackendLost(String),
    #[error("query_wait_timeout")]
    WaitTimeout,
    #[error("cancel request")]
    CancelRequest,
    #[error("shutting down")]
    Shutdown,
    #[error("killed from the admin console")]
    Killed,
}

/// The view of the cluster serving `database` and the pool of its first node: 3D000 for a
/// database no entry serves, 53300 for one more than `*` may serve.
fn database_pool(
    shared: &Shared,
    snapshot: &Snapshot,
    database: &str,
    user: &crate::auth::UserAuth,
) -> Result<(Arc<Snapshot>, Arc<crate::pool::Pool>), ErrorFields> {
    let missing = || {
        ErrorFields::fatal(
            SqlState::INVALID_CATALOG_NAME,
            format!("database \"{database}\" does not exist"),
        )
    };
    let view = snapshot.view_for(database).ok_or_else(missing)?;
    if snapshot.config.is_auto_database(database) {
        let max = snapshot.config.pool.max_auto_databases;
        (shared.pools.auto.admit(database, max))
            .map_err(|e| ErrorFields::fatal(SqlState::TOO_MANY_CONNECTIONS, e.to_string()))?;
    }
    let pool = shared.pool_for(&view, database, user, 0).ok_or_else(missing)?;
    Ok((view, pool))
}

/// Serves one accepted connection to the end; `guard` counts it until then.
pub async fn serve(shared: Arc<Shared>, stream: Stream, peer: SocketAddr, mut guard: ConnectionGuard) {
    let snapshot = shared.snapshot();
    if let Some(tcp) = stream.tcp() {
        let _ = tcp.set_nodelay(true);
        if let Err(e) = snapshot
            .config
            .proxy
            .keepalive()
            .apply(socket2::SockRef::from(tcp))
        {
            tracing::warn!(%peer, error = %e, "cannot set TCP keepalive options");
        }
    }
    let over_limit = !shared.clients.try_enter(snapshot.config.proxy.max_client_conn);
    let reason = serve_inner(&shared, snapshot, stream, peer, over_limit, &mut guard).await;
    if !over_limit {
        shared.clients.leave();
    }
    // The setting in force now: a reload may have changed it during the connection.
    let log = shared.snapshot().config.proxy.log_disconnections;
    match &reason {
        CloseReason::CancelRequest => {}
        _ if log => tracing::info!(%peer, reason = %reason, "client disconnected"),
        _ => tracing::debug!(%peer, reason = %reason, "client disconnected"),
    }
}

async fn serve_inner(
    shared: &Arc<Shared>,
    snapshot: Arc<Snapshot>,
    stream: Stream,
    peer: SocketAddr,
    over_limit: bool,
    guard: &mut ConnectionGuard,
) -> CloseReason {
    // Boxed: the login is transient, and inline its locals (the connection, the startup
    // parameters) would size the task of every client for its whole life.
    let mut session = match Box::pin(log_in(shared, snapshot, stream, peer, over_limit, guard)).await {
        LoggedIn::Session(session) => session,
        LoggedIn::Done(reason) => return reason,
    };
    // By reference: an async fn's arguments take room in its future beside its locals. (A
    // separate fn from `serve`: inlined there, the task keeps the login's result beside the
    // session, ~1 KB more for every client.)
    run_session(shared, &mut session).await
}

/// How a login ended.
// Not boxed: the session is moved once into the task, which keeps it anyway.
#[allow(clippy::large_enum_variant)]
enum LoggedIn {
    Session(Session),
    /// Refused, failed, or a console session served to its end.
    Done(CloseReason),
}

/// Startup, max_client_conn, authentication, the database's pool: the session, or why there is
/// none (a console connection is served here to its end).
async fn log_in(
    shared: &Arc<Shared>,
    snapshot: Arc<Snapshot>,
    stream: Stream,
    peer: SocketAddr,
    over_limit: bool,
    guard: &mut ConnectionGuard,
) -> LoggedIn {
    let proxy = &snapshot.config.proxy;
    let unix = stream.is_unix();
    let mut client = ClientConn::new(stream, peer, proxy.max_message_size.0.min(u32::MAX as u64) as u32);
    let login_deadline = Instant::now() + proxy.client_login_timeout.0;
    let params = match open(shared, &snapshot, &mut client, unix, login_deadline).await {
        Ok(params) => params,
        Err(reason) => return LoggedIn::Done(reason),
    };
    if over_limit {
        client
            .send_fatal(ErrorFields::fatal(
                SqlState::TOO_MANY_CONNECTIONS,
                "sorry, too many clients already",
            ))
            .await;
        return LoggedIn::Done(CloseReason::Refused("max_client_conn reached".into()));
    }
    let user = match authenticate(&snapshot, &mut client, &params, login_deadline).await {
        Ok(user) => user,
        Err(reason) => return LoggedIn::Done(reason),
    };
    if crate::admin::is_console(&params.database) {
        // A console does not keep a process draining for WAIT_FOR_CLIENTS alive.
        guard.mark_console();
        let served = Box::pin(crate::admin::serve(
            shared,
            &snapshot,
            client,
            &params,
            &user.config,
        ));
        return LoggedIn::Done(served.await);
    }
    // From here on the session sees its database's cluster (its nodes, health, routing).
    let (snapshot, pool) = match database_pool(shared, &snapshot, &params.database, &user) {
        Ok(found) => found,
        Err(error) => {
            let message = error.message.clone();
            client.send_fatal(error).await;
            return LoggedIn::Done(CloseReason::Refused(message));
        }
    };
    if pool.control.is_disabled() {
        let message = format!("database \"{}\" is disabled", params.database);
        client
            .send_fatal(ErrorFields::fatal(SqlState::CANNOT_CONNECT_NOW, message.clone()))
            .await;
        return LoggedIn::Done(CloseReason::Refused(message));
    }
    LoggedIn::Session(new_session(shared, snapshot, client, pool, user, params))
}

/// The logged-in client's session to its end (or until it is killed).
async fn run_session(shared: &Arc<Shared>, session: &mut Session) -> CloseReason {
    let entry = session.ticket.entry().clone();
    let reason = tokio::select! {
        // Biased: no random branch order (a thread-local RNG draw) on every poll of the task.
        biased;
        reason = session.run() => reason,
        _ = entry.killed() => {
            // Killed mid-anything: its backend goes too (it may be mid-request).
            session.checkout.handle(Event::Lost);
            if session.pins.any() {
                shared.stats.pinned_clients.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
            }
            let error = ErrorFields::fatal(SqlState::ADMIN_SHUTDOWN, "terminating connection due to administrator command");
            Box::pin(session.client.send_fatal(error)).await;
            return CloseReason::Killed;
        }
    };
    Box::pin(async {
        session.finish().await;
        session.release_parked().await;
    })
    .await;
    reason
}

/// The opening exchange (TLS, startup packet) within the login deadline: the client's startup
/// parameters, or the end of the connection (a cancel request ends it too, once forwarded).
async fn open(
    shared: &Shared,
    snapshot: &Snapshot,
    client: &mut ClientConn,
    unix: bool,
    login_deadline: Instant,
) -> Result<ClientParams, CloseReason> {
    let opened = tokio::time::timeout_at(
        login_deadline,
        // No TLS on a Unix socket, as in PostgreSQL: SSLRequest is answered `N` and
        // `client_tls_mode` does not apply (the connection never leaves the host).
        // Boxed, as the other login steps: transient, and inline they would size the task of
        // every client for its whole life (an idle client is that task).
        Box::pin(negotiate(
            client,
            snapshot.client_tls.as_deref().filter(|_| !unix),
        )),
    )
    .await;
    match opened {
        Err(_) => Err(CloseReason::LoginTimeout),
        Ok(Err(e)) => Err(e.into()),
        Ok(Ok(Opening::Cancel(key))) => {
            let (key, forwarded) = crate::client::peers::unwrap_forwarded(key);
            if !shared.cancels.cancel(key).await && !forwarded {
                crate::client::peers::forward(&snapshot.config.peers, &shared.stats.peer_cancels, key).await;
            }
            Err(CloseReason::CancelRequest)
        }
        Ok(Ok(Opening::Login(params))) => Ok(params),
    }
}

/// Authentication within the login deadline; a failure is logged and told to the client.
async fn authenticate(
    snapshot: &Snapshot,
    client: &mut ClientConn,
    params: &ClientParams,
    login_deadline: Instant,
) -> Result<Arc<crate::auth::UserAuth>, CloseReason> {
    let auth = Box::pin(authenticate::login(
        client,
        &snapshot.config,
        &snapshot.users,
        params,
    ));
    match tokio::time::timeout_at(login_deadline, auth).await {
        Err(_) => {
            client
                .send_fatal(ErrorFields::fatal(
                    SqlState::CANNOT_CONNECT_NOW,
                    "canceling authentication due to timeout",
                ))
                .await;
            Err(CloseReason::LoginTimeout)
        }
        Ok(Err(e)) => {
            let peer = client.peer;
            tracing::warn!(%peer, user = %params.user, database = %params.database, "login failed: {e}");
            if let Some(error) = e.client_error(&params.user) {
                client.send_fatal(error).await;
            }
            Err(e.into())
        }
        Ok(Ok(user)) => Ok(user),
    }
}

/// A logged-in client of `pool`'s database, registered (SHOW CLIENTS) and not yet attached.
fn new_session(
    shared: &Arc<Shared>,
    snapshot: Arc<Snapshot>,
    client: ClientConn,
    pool: Arc<crate::pool::Pool>,
    user: Arc<crate::auth::UserAuth>,
    params: ClientParams,
) -> Session {
    let ticket = shared.sessions.register(crate::client::registry::NewClient {
        user: &params.user,
        database: &params.database,
        addr: client.peer,
        local_addr: client.stream.local_addr().ok(),
        application_name: params
            .settings
            .iter()
            .find(|(name, _)| name == "application_name")
            .map_or("", |(_, value)| value.as_str()),
        tls: client.tls.is_some(),
    });
    if snapshot.config.proxy.log_connections {
        let peer = client.peer;
        tracing::info!(%peer, user = %params.user, database = %params.database, "client connected");
    }
    let mode = pool.settings().mode;
    let node_count = snapshot.config.nodes.len();
    let hazard_slot = shared.hazards.slot(&pool.key.database);
    let mut session = Session {
        hazard_slot,
        shared: shared.clone(),
        snapshot: snapshot.clone(),
        client,
        node_pools: vec![None; node_count],
        checkout: Checkout::new(pool),
        route: startup_route(&params),
        ryw_lsn: None,
        routed_write: false,
        user,
        mode,
        params,
        exchange: Exchange::default(),
        pending_error: None,
        discard_until_sync: false,
        statements: ClientStatements::default(),
        pipeline: Pipeline::default(),
        max_prepared: snapshot.config.pool.max_prepared_statements,
        pins: Default::default(),
        ticket,
        on_standby: false,
        awaiting_first_request: true,
        ha: Default::default(),
        listens: None,
        tx_clock: Default::default(),
        database_holds: Vec::new(),
        followed: Default::default(),
    };
    session.take_snapshot();
    session
}
