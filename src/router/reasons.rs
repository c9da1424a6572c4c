//! Why a transaction went where it went: the reason recorded for each routing decision (SHOW
//! ROUTES, `tidepool_routing_decisions_total`), and the small decisions the session's routing
//! builds on.

use std::sync::atomic::{AtomicU64, Ordering};

/// Why a transaction went where it went (SHOW ROUTES, `tidepool_routing_decisions_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteReason {
    /// A write (or anything not provably a read): the primary.
    Write,
    /// Transaction control (`BEGIN`, `SET`…): the primary, for the transaction's whole life.
    InTransaction,
    /// A read that calls a function on the `write_functions` list: the primary.
    WriteFunction,
    /// A `/* tidepool: … */` hint or `tidepool.route` setting decided.
    Hint,
    /// A read sent to a standby.
    Read,
    /// A read on the primary because every standby up was too far behind.
    LagFallback,
    /// A read on the primary because no standby was up.
    NoStandby,
    /// A read on the primary because no standby had replayed the client's last write yet.
    ReadYourWrites,
}

impl RouteReason {
    pub const ALL: [RouteReason; 8] = [
        RouteReason::Write,
        RouteReason::InTransaction,
        RouteReason::WriteFunction,
        RouteReason::Hint,
        RouteReason::Read,
        RouteReason::LagFallback,
        RouteReason::NoStandby,
        RouteReason::ReadYourWrites,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RouteReason::Write => "write",
            RouteReason::InTransaction => "in_transaction",
            RouteReason::WriteFunction => "write_function",
            RouteReason::Hint => "hint",
            RouteReason::Read => "read",
            RouteReason::LagFallback => "lag_fallback",
            RouteReason::NoStandby => "no_standby",
            RouteReason::ReadYourWrites => "read_your_writes",
        }
    }
}

/// Routing decisions counted by reason: one relaxed atomic add per routed transaction.
#[derive(Debug, Default)]
pub struct RouteCounters([AtomicU64; RouteReason::ALL.len()]);

impl RouteCounters {
    pub fn record(&self, reason: RouteReason) {
        self.0[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, reason: RouteReason) -> u64 {
        self.0[reason as usize].load(Ordering::Relaxed)
    }
}

/// The reason to record for a node picked by `router::pick`.
pub fn route_reason(
    why: super::Why,
    decision: &super::Decision,
    view: &crate::health::TopologyView,
    min_lsn: bool,
) -> RouteReason {
    use super::{Reason, Why};
    match why {
        Why::Hint => RouteReason::Hint,
        Why::Read => RouteReason::Read,
        Why::Write | Why::SingleNode => match decision.reason {
            Reason::WriteFunction => RouteReason::WriteFunction,
            Reason::Control => RouteReason::InTransaction,
            _ => RouteReason::Write,
        },
        Why::NoStandby if min_lsn => RouteReason::ReadYourWrites,
        Why::NoStandby if view.nodes.iter().any(|n| n.is_usable_standby()) => RouteReason::LagFallback,
        Why::NoStandby => RouteReason::NoStandby,
    }
}

/// A connection-wide route setting acts like a hint on every statement without one.
pub fn apply_route(mut decision: super::Decision, route: super::RouteSetting) -> super::Decision {
    use super::{Hint, RouteSetting};
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
pub fn write_decision() -> super::Decision {
    super::Decision {
        access: super::Access::Write,
        reason: super::Reason::Write,
        control: None,
        hint: None,
        max_lag: None,
    }
}
