//! Which node serves a client's next transaction: the request in the read buffer is classified
//! (`router`), the health view consulted (`router::pick`), and a write waits out a failover;
//! backends on a node that stopped being the primary are dropped, and per-transaction session
//! routing parks the session's backend of each node between transactions.

use crate::client::login::CloseReason;
use crate::client::params::ClientParams;
use crate::client::session::checkout::Event;
use crate::client::session::Session;
use crate::config::PoolMode;
use crate::health::Role;
use crate::pool::Pool;
use crate::protocol::{tag, ErrorFields, SqlState};
use crate::router::reasons::{apply_route, route_reason, write_decision};
use crate::router::SessionRouting;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

impl Session {
    /// The pool of node `index` for this client, found once per session.
    pub(crate) fn node_pool(&mut self, index: usize) -> Option<Arc<Pool>> {
        if let Some(Some(pool)) = self.node_pools.get(index) {
            if !pool.is_retired() {
                return Some(pool.clone());
            }
        }
        let snapshot = self.snapshot.clone();
        let pool = self
            .shared
            .pool_for(&snapshot, &self.params.database, &self.user, index)?;
        if let Some(slot) = self.node_pools.get_mut(index) {
            *slot = Some(pool.clone());
        }
        Some(pool)
    }

    /// Classifies the request waiting in the read buffer: the simple-protocol Query, or every
    /// Parse/Bind up to the Sync of an extended-protocol batch (a batch goes to one node, so any
    /// write in it sends it to the primary). Anything not visible in full counts as a write.
    pub(crate) fn classify_request(&mut self) -> crate::router::Decision {
        let mut new_route = None;
        let decision = self.classify_buffered(&mut new_route);
        let mut decision = apply_route(decision, self.route);
        if self.ha.deferred_begin.is_some()
            && decision.control == Some(crate::router::Control::SetTransactionReadOnly)
        {
            decision.access = crate::router::Access::Read;
        }
        if let Some(route) = new_route {
            self.route = route;
        }
        decision
    }

    pub(crate) fn classify_buffered(
        &self,
        new_route: &mut Option<crate::router::RouteSetting>,
    ) -> crate::router::Decision {
        use crate::router::{Access, Control, Decision};
        let snapshot = self.snapshot.clone();
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

    /// The node for a request with this classification (`None`: the primary), and whether it is
    /// a standby. Waits up to `failover_timeout` for a primary to appear; never sends a write
    /// to a standby. Counts the decision by reason.
    pub(crate) async fn choose_node(
        &mut self,
        decision: Option<crate::router::Decision>,
    ) -> Result<(usize, bool), ErrorFields> {
        use crate::router::{pick, Target, Why};
        let mut snapshot = self.snapshot.clone();
        let decision = decision.unwrap_or_else(write_decision);
        let deadline = Instant::now() + snapshot.config.routing.failover_timeout.0;
        let ryw_deadline = Instant::now() + snapshot.config.routing.ryw_wait.0;
        loop {
            // Loaded each time round: a reload that changes the nodes restarts the checkers.
            let Some(health) = self.health() else {
                return Ok((0, false));
            };
            // Subscribe before looking, so a change in between is not missed.
            let changed = health.changed();
            let view = health.view();
            if !same_nodes(&view, &snapshot) {
                // A reload changed the nodes and the checkers are being replaced: both sides
                // settle within moments.
                if Instant::now() >= deadline {
                    return Err(no_primary());
                }
                // The waits here are rare (reloads, failovers): boxed, so that the common path's
                // future (in every client's task) stays small.
                drop(changed);
                Box::pin(tokio::time::sleep(Duration::from_millis(10))).await;
                self.take_snapshot();
                snapshot = self.snapshot.clone();
                continue;
            }
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
                    drop(changed);
                    Box::pin(tokio::time::sleep(Duration::from_millis(5))).await;
                }
                Target::Node { index, why } => {
                    let reason = route_reason(why, &decision, &view, min_lsn.is_some());
                    self.shared.stats.routes.record(reason);
                    let standby = view
                        .nodes
                        .get(index)
                        .is_some_and(|n| n.role == crate::health::Role::Standby);
                    return Ok((index, standby));
                }
                Target::NoStandby => {
                    return Err(ErrorFields::error(
                        SqlState::CANNOT_CONNECT_NOW,
                        "no standby available",
                    ))
                }
                Target::NoPrimary => {
                    if Box::pin(tokio::time::timeout_at(deadline, changed))
                        .await
                        .is_err()
                    {
                        return Err(no_primary_in_time(&health.view()));
                    }
                }
            }
        }
    }
}

/// What a request gets when the nodes' checks showed no primary within `failover_timeout`.
fn no_primary_in_time(view: &crate::health::TopologyView) -> ErrorFields {
    let detail = match view.patroni_disagreement() {
        Some(why) => format!("No primary within failover_timeout: {why}"),
        None => "No node reported being the primary within failover_timeout.".into(),
    };
    ErrorFields::error(SqlState::CANNOT_CONNECT_NOW, "no primary server available").with_detail(detail)
}

/// What a write gets when no primary appeared within `failover_timeout`.
fn no_primary() -> ErrorFields {
    ErrorFields::error(SqlState::CANNOT_CONNECT_NOW, "no primary server available")
        .with_detail("No node reported being the primary within failover_timeout.")
}

/// The health view describes the snapshot's nodes (index for index).
fn same_nodes(view: &crate::health::TopologyView, snapshot: &crate::app::Snapshot) -> bool {
    view.nodes.len() == snapshot.config.nodes.len()
        && view
            .nodes
            .iter()
            .zip(&snapshot.config.nodes)
            .all(|(status, node)| *status.addr == node.address())
}

/// A NUL-terminated string at the start of `bytes`, lossily decoded.
fn cstr(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end])
}

/// `tidepool.route` from the startup packet (`options=-c tidepool.route=standby`).
pub(crate) fn startup_route(params: &ClientParams) -> crate::router::RouteSetting {
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

/// A client's routing state beyond the classification of its next request.
#[derive(Default)]
pub(crate) struct HaState {
    /// Node of the attached backend (with health checking).
    pub(crate) node: Option<usize>,
    /// That node was the primary when the backend was attached: if it stops being the primary
    /// while the client still holds the backend, the client must hear about it.
    pub(crate) attached_primary: bool,
    /// A lone `BEGIN` answered by tidepool, to be sent with the first statement
    /// (`transaction_routing = "first_statement"`).
    pub(crate) deferred_begin: Option<String>,
    /// `session_routing = "per_transaction"`: the session's idle backend on each node.
    pub(crate) parked: Vec<Option<crate::pool::Server>>,
}

/// What [`Session::check_demotion`] found.
pub(crate) enum Demotion {
    /// The backend's node is still what it was when the transaction was routed there.
    None,
    /// The backend was dropped; the client's next request gets the error.
    Dropped,
    /// Session mode: the client was told (FATAL) and must go.
    Close(CloseReason),
}

impl Session {
    /// Every transaction-mode client is routed per transaction, and with several nodes so are
    /// session-mode clients under `session_routing = "per_transaction"`.
    pub(crate) fn routes_per_transaction(&self) -> bool {
        self.mode == PoolMode::Transaction
            || (self.has_health()
                && self.snapshot.config.routing.session_routing == SessionRouting::PerTransaction)
    }

    /// Records where the backend about to be attached runs.
    pub(crate) fn note_node(&mut self, index: usize) {
        let primary = self.health().and_then(|h| h.view().primary());
        self.ha.node = Some(index);
        self.ha.attached_primary = primary == Some(index);
    }

    /// The session's parked backend on node `index`, if any (per-transaction session routing).
    pub(crate) fn take_parked(&mut self, index: usize) -> Option<crate::pool::Server> {
        self.ha.parked.get_mut(index).and_then(Option::take)
    }

    /// Per-transaction session routing, between transactions: the backend (just detached from
    /// the checkout) stays the session's but waits aside, so the next transaction may use
    /// another node.
    pub(crate) fn park_backend(&mut self, backend: crate::pool::Server) {
        let Some(node) = self.ha.node else {
            // Never expected (attach notes the node): the backend stays attached.
            self.checkout.attach(backend);
            return;
        };
        if self.ha.parked.len() <= node {
            self.ha.parked.resize_with(node + 1, || None);
        }
        if let Some(old) = self.ha.parked[node].replace(backend) {
            // Parked on the node the session's pool serves: that pool's.
            self.checkout.pool().discard(old);
        }
    }

    /// With a backend attached and nothing in flight: did its node stop being the primary
    /// (a standby now, or fenced) since the backend was attached there? Then the backend is
    /// closed instead of being used for writes that PostgreSQL would refuse, or worse accept on
    /// the losing side of a split brain.
    pub(crate) async fn check_demotion(&mut self) -> Demotion {
        let (Some(health), Some(node), true) = (self.health(), self.ha.node, self.ha.attached_primary) else {
            return Demotion::None;
        };
        let view = health.view();
        let Some(status) = view.nodes.get(node) else {
            return Demotion::None;
        };
        if view.primary() == Some(node) || !(status.fenced || status.role == Role::Standby) {
            return Demotion::None;
        }
        let Some(backend) = self.checkout.server() else {
            return Demotion::None;
        };
        let why = if status.fenced {
            "was fenced"
        } else {
            "is in recovery"
        };
        tracing::warn!(node = %status.addr, backend = backend.id, "server {why}; closing the client's connection to it");
        self.checkout.handle(Event::Lost);
        self.ha.attached_primary = false;
        if self.mode == PoolMode::Session {
            let message = format!(
                "terminating connection because server {} is no longer the primary",
                status.addr
            );
            let error = ErrorFields::fatal(SqlState::ADMIN_SHUTDOWN, message.clone());
            Box::pin(self.client.send_fatal(error)).await;
            return Demotion::Close(CloseReason::BackendLost(message));
        }
        if self.pins.any() {
            self.pins = Default::default();
            self.shared
                .stats
                .pinned_clients
                .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.exchange = Default::default();
        self.pending_error = Some(Box::new(
            ErrorFields::error(
                SqlState::new("25006"),
                format!("server {} is no longer the primary", status.addr),
            )
            .with_detail(format!(
                "The server {why}; the transaction was rolled back and its connection closed."
            )),
        ));
        Demotion::Dropped
    }

    /// Sends the held-back `BEGIN` on the backend just attached, and `SET TRANSACTION READ ONLY`
    /// when the first statement was routed as a read, so that a later write fails with 25006 on
    /// any node (even on the primary, when reads fall back to it).
    pub(crate) async fn replay_begin(&mut self, read_only: bool) -> Result<(), ErrorFields> {
        let Some(begin) = self.ha.deferred_begin.take() else {
            return Ok(());
        };
        let sql = if read_only {
            format!("{begin};\nSET TRANSACTION READ ONLY")
        } else {
            begin
        };
        let backend = self.checkout.attached();
        let outcome = backend.run_simple(&sql).await.map_err(|e| {
            crate::client::session::backend_error_for_client(&e, crate::protocol::Severity::Error)
        })?;
        match outcome.parsed_error() {
            None => Ok(()),
            Some(e) => Err(ErrorFields::error(
                SqlState::parse(&e.code).unwrap_or(SqlState::new("25000")),
                e.message,
            )),
        }
    }

    /// Gives back every parked backend when the client leaves (per-transaction session
    /// routing); they are idle, so cleaning them is one reset each.
    pub(crate) async fn release_parked(&mut self) {
        let parked = std::mem::take(&mut self.ha.parked);
        for (index, backend) in parked.into_iter().enumerate() {
            let (Some(mut backend), Some(pool)) = (backend, self.node_pool(index)) else {
                continue;
            };
            let reset = pool.settings().reset_query.clone();
            let cleaned = tokio::time::timeout(Duration::from_secs(5), backend.reset(&reset)).await;
            match cleaned {
                Ok(Ok(())) => pool.release(backend),
                _ => pool.discard(backend),
            }
        }
    }
}

/// Resolves at the next topology change; never when there is no health checking or it stopped
/// (so a select arm on it cannot spin).
pub(crate) async fn role_changed(
    receiver: Option<&mut tokio::sync::watch::Receiver<Arc<crate::health::TopologyView>>>,
) {
    let stopped = match receiver {
        Some(receiver) => receiver.changed().await.is_err(),
        None => true,
    };
    if stopped {
        std::future::pending::<()>().await;
    }
}

/// Whether a decision sends a transaction to a standby (hints included).
pub(crate) fn wants_standby(decision: &crate::router::Decision) -> bool {
    use crate::router::{Access, Hint};
    match decision.hint {
        Some(Hint::Primary) => false,
        Some(Hint::Standby) => true,
        None => decision.access == Access::Read,
    }
}
