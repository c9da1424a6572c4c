//! Picks the node for a transaction from a classification and the current topology: writes to
//! the primary, reads round-robin over standbys that are up and fresh enough (honouring
//! weights), falling back to the primary. Pure: no I/O, table-tested.

use super::{Access, Decision, Hint};
use crate::config::{ByteSize, ConfigDuration};
use crate::health::{Lsn, TopologyView};
use serde::Deserialize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// When reads may use the primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ReadsOnPrimary {
    /// Only when no standby qualifies (default).
    #[default]
    Fallback,
    /// The primary is one more read target in the rotation.
    Always,
    /// Never: with no standby, a read fails with `no standby available`.
    Never,
}

/// `transaction_routing`: what decides where an explicit transaction runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TransactionRouting {
    /// `BEGIN` (not `READ ONLY`) sends the whole transaction to the primary (default).
    #[default]
    Whole,
    /// A lone `BEGIN` is answered by tidepool and sent later, with the transaction's first
    /// statement, to where that statement goes; a transaction started by a read is made
    /// `READ ONLY`, so a later write in it fails with 25006 wherever it runs.
    FirstStatement,
}

/// `session_routing`: how session-mode clients are routed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum SessionRouting {
    /// A session-mode client uses the primary for its whole session (default).
    #[default]
    PerSession,
    /// Each transaction is routed like in transaction mode; the client keeps one backend per
    /// node it used, for its whole session.
    PerTransaction,
}

/// `[routing]`: read/write splitting over the `[[nodes]]`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingConfig {
    /// A standby further behind the primary than this (replay time) gets no reads; 0 = no limit.
    pub max_lag: ConfigDuration,
    /// A standby further behind than this many bytes of WAL gets no reads; 0 = no limit.
    pub max_lag_bytes: ByteSize,
    pub reads_on_primary: ReadsOnPrimary,
    /// How long writes wait for a primary to appear (failover) before failing.
    pub failover_timeout: ConfigDuration,
    /// Functions whose use makes a statement a write (see `ClassifierConfig`); empty = defaults.
    pub write_functions: Vec<String>,
    /// Functions never counted as writes.
    pub read_only_functions: Vec<String>,
    /// After a client's write transaction, its reads go only to standbys that have replayed it
    /// (else to the primary). Costs one round trip after each write transaction.
    pub read_your_writes: bool,
    /// How long such a read may wait for a standby to catch up before using the primary.
    pub ryw_wait: ConfigDuration,
    pub transaction_routing: TransactionRouting,
    pub session_routing: SessionRouting,
    /// Patroni REST endpoints (`http://host:port` or `https://host:port`); when set, the
    /// primary must also be Patroni's leader, and writes wait while they disagree.
    pub patroni_api: Vec<String>,
    /// CA certificates (PEM) that sign the HTTPS endpoints' certificates; required for https.
    pub patroni_ca_file: Option<std::path::PathBuf>,
    /// Client certificate chain (PEM) shown to Patroni (its `restapi.verify_client`).
    pub patroni_cert_file: Option<std::path::PathBuf>,
    /// The key of `patroni_cert_file`.
    pub patroni_key_file: Option<std::path::PathBuf>,
    /// HTTP basic authentication toward Patroni (`restapi.authentication`).
    pub patroni_user: Option<String>,
    pub patroni_password: Option<crate::config::HiddenString>,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            max_lag: ConfigDuration::secs(10),
            max_lag_bytes: ByteSize(16 << 20),
            reads_on_primary: ReadsOnPrimary::Fallback,
            failover_timeout: ConfigDuration::secs(30),
            write_functions: Vec::new(),
            read_only_functions: Vec::new(),
            read_your_writes: false,
            ryw_wait: ConfigDuration::secs(0),
            transaction_routing: TransactionRouting::Whole,
            session_routing: SessionRouting::PerSession,
            patroni_api: Vec::new(),
            patroni_ca_file: None,
            patroni_cert_file: None,
            patroni_key_file: None,
            patroni_user: None,
            patroni_password: None,
        }
    }
}

impl RoutingConfig {
    /// The classifier's configuration derived from this one.
    pub fn classifier(&self) -> super::ClassifierConfig {
        let mut config = super::ClassifierConfig::default();
        if !self.write_functions.is_empty() {
            config.write_functions = self.write_functions.clone();
        }
        config.read_only_functions = self.read_only_functions.clone();
        config
    }

    /// The keys `PatroniAccess` is built from: views whose values are equal share one.
    pub fn patroni_access(&self) -> PatroniAccessKeys<'_> {
        (
            &self.patroni_ca_file,
            &self.patroni_cert_file,
            &self.patroni_key_file,
            &self.patroni_user,
            &self.patroni_password,
        )
    }
}

/// See [`RoutingConfig::patroni_access`].
pub type PatroniAccessKeys<'a> = (
    &'a Option<std::path::PathBuf>,
    &'a Option<std::path::PathBuf>,
    &'a Option<std::path::PathBuf>,
    &'a Option<String>,
    &'a Option<crate::config::HiddenString>,
);

/// Where a transaction goes, and why.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Node {
        index: usize,
        why: Why,
    },
    /// A write (or a read falling back) needs the primary and none is known now.
    NoPrimary,
    /// A read with `reads_on_primary = "never"` and no standby that qualifies.
    NoStandby,
}

/// Routing reasons, for logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    Write,
    Read,
    Hint,
    /// A read that went to the primary because no standby qualified (lag, health, or not yet
    /// replayed the client's own writes).
    NoStandby,
    /// Only one node is configured.
    SingleNode,
}

/// Round-robin position, shared by all sessions of a process.
#[derive(Debug, Default)]
pub struct RoundRobin(AtomicUsize);

impl RoundRobin {
    fn next(&self) -> usize {
        self.0.fetch_add(1, Ordering::Relaxed)
    }
}

/// Chooses a node. `weights` are per node (same order as the view); 0 takes a node out of the
/// read rotation. `min_lsn`: a standby must have replayed at least this far (read your writes).
pub fn pick(
    decision: &Decision,
    view: &TopologyView,
    config: &RoutingConfig,
    weights: &[u32],
    rr: &RoundRobin,
    min_lsn: Option<Lsn>,
) -> Target {
    let wants_standby = match decision.hint {
        Some(Hint::Primary) => false,
        Some(Hint::Standby) => true,
        None => decision.access == Access::Read,
    };
    let why_primary = if decision.hint == Some(Hint::Primary) {
        Why::Hint
    } else {
        Why::Write
    };
    let primary = view.primary();
    if !wants_standby {
        return primary.map_or(Target::NoPrimary, |index| Target::Node {
            index,
            why: why_primary,
        });
    }
    let max_lag = decision.max_lag.or(config.max_lag.non_zero());
    let max_bytes = (config.max_lag_bytes.0 > 0).then_some(config.max_lag_bytes.0);
    let mut candidates: Vec<(usize, u32)> = view
        .nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.is_usable_standby())
        .filter(|(_, n)| fresh_enough(n.lag, n.lag_bytes, max_lag, max_bytes))
        .filter(|(_, n)| min_lsn.is_none_or(|min| n.lsn.is_some_and(|lsn| lsn >= min)))
        .map(|(i, _)| (i, weights.get(i).copied().unwrap_or(1)))
        .filter(|(_, w)| *w > 0)
        .collect();
    if config.reads_on_primary == ReadsOnPrimary::Always {
        if let Some(p) = primary {
            candidates.push((p, weights.get(p).copied().unwrap_or(1).max(1)));
        }
    }
    let total: u64 = candidates.iter().map(|(_, w)| *w as u64).sum();
    if total > 0 {
        let mut slot = rr.next() as u64 % total;
        for (index, weight) in candidates {
            if slot < weight as u64 {
                let why = if decision.hint == Some(Hint::Standby) {
                    Why::Hint
                } else {
                    Why::Read
                };
                return Target::Node { index, why };
            }
            slot -= weight as u64;
        }
    }
    match (config.reads_on_primary, primary) {
        (ReadsOnPrimary::Never, _) => Target::NoStandby,
        (_, Some(index)) => Target::Node {
            index,
            why: Why::NoStandby,
        },
        (_, None) => Target::NoPrimary,
    }
}

/// Unknown lag counts as too much when a bound applies (a standby we cannot measure is not
/// known to be fresh).
fn fresh_enough(
    lag: Option<Duration>,
    lag_bytes: Option<u64>,
    max_lag: Option<Duration>,
    max_bytes: Option<u64>,
) -> bool {
    let time_ok = match (max_lag, lag) {
        (None, _) => true,
        (Some(limit), Some(lag)) => lag <= limit,
        (Some(_), None) => false,
    };
    let bytes_ok = match (max_bytes, lag_bytes) {
        (None, _) => true,
        (Some(limit), Some(bytes)) => bytes <= limit,
        (Some(_), None) => false,
    };
    time_ok && bytes_ok
}

#[cfg(test)]
mod tests;
