//! Which node serves a client's next transaction: the request in the read buffer is classified
//! (`router`), the health view consulted (`router::pick`), and a write waits out a failover.

use super::params::ClientParams;
use super::session::Session;
use crate::pool::Pool;
use crate::protocol::{tag, ErrorFields, SqlState};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

impl Session {
    /// The pool of node `index` for this client, found once per session.
    pub(super) fn node_pool(&mut self, index: usize) -> Option<Arc<Pool>> {
        if let Some(Some(pool)) = self.node_pools.get(index) {
            return Some(pool.clone());
        }
        let snapshot = self.snapshot.clone();
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
    pub(super) fn classify_request(&mut self) -> crate::router::Decision {
        let mut new_route = None;
        let decision = self.classify_buffered(&mut new_route);
        let decision = apply_route(decision, self.route);
        if let Some(route) = new_route {
            self.route = route;
        }
        decision
    }

    pub(super) fn classify_buffered(
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

    /// The node for a request with this classification (`None`: the primary). Waits up to
    /// `failover_timeout` for a primary to appear; never sends a write to a standby.
    pub(super) async fn choose_node(
        &self,
        decision: Option<crate::router::Decision>,
    ) -> Result<usize, ErrorFields> {
        use crate::router::{pick, Target, Why};
        let Some(health) = self.shared.health.as_ref() else {
            return Ok(0);
        };
        let snapshot = self.snapshot.clone();
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
                        let detail = match health.view().patroni_disagreement() {
                            Some(why) => format!("No primary within failover_timeout: {why}"),
                            None => "No node reported being the primary within failover_timeout.".into(),
                        };
                        return Err(ErrorFields::error(
                            SqlState::CANNOT_CONNECT_NOW,
                            "no primary server available",
                        )
                        .with_detail(detail));
                    }
                }
            }
        }
    }
}

/// A NUL-terminated string at the start of `bytes`, lossily decoded.
fn cstr(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end])
}

/// `tidepool.route` from the startup packet (`options=-c tidepool.route=standby`).
pub(super) fn startup_route(params: &ClientParams) -> crate::router::RouteSetting {
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
