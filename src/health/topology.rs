//! Turning check results into a topology: fall/rise per node, primary selection with split-brain
//! fencing, and lag. Pure bookkeeping, owned by the aggregator task; no I/O, no clock reads.

use super::probe::CheckError;
use super::status::{FallRise, HealthState, Lsn, NodeStatus, Role, TopologyView};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// What one successful check read from a node.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sample {
    /// `Primary` or `Standby`, never `Unknown`.
    pub role: Role,
    /// `pg_current_wal_lsn()` on a primary, `pg_last_wal_replay_lsn()` on a standby.
    pub lsn: Option<Lsn>,
    /// `pg_last_wal_receive_lsn()` on a standby (`None` on a primary, or when the standby never
    /// streamed).
    pub receive_lsn: Option<Lsn>,
    pub timeline: Option<u32>,
    /// `now() - pg_last_xact_replay_timestamp()`, both read on the node itself (no clock skew);
    /// `None` when no transaction was replayed since the node started.
    pub replay_age: Option<Duration>,
}

/// One finished check, sent by a node's checker task to the aggregator.
#[derive(Debug)]
pub(crate) struct Observation {
    pub node: usize,
    /// When the check finished.
    pub at: Instant,
    pub outcome: Result<Sample, CheckError>,
}

/// How far a node's replay is behind, as time.
///
/// PostgreSQL's usual monitoring rule: a standby that has replayed everything it received
/// (receive LSN ≤ replay LSN, or nothing received by streaming) is not behind, so its lag is
/// zero however long ago the last transaction was; otherwise the lag is the age of the last
/// replayed transaction. So an idle primary does not make standbys look late, and a standby
/// whose replay is paused shows a growing lag only once there is WAL it has not replayed.
/// Caveat (inherent in the rule): after a long idle period, the first new transaction briefly
/// shows the whole idle time as lag, until it is replayed.
pub fn replay_lag(
    role: Role,
    replay: Option<Lsn>,
    receive: Option<Lsn>,
    replay_age: Option<Duration>,
) -> Option<Duration> {
    match role {
        Role::Unknown => None,
        Role::Primary => Some(Duration::ZERO),
        Role::Standby => match (receive, replay) {
            (Some(received), Some(replayed)) if received > replayed => replay_age,
            _ => Some(Duration::ZERO),
        },
    }
}

/// Bytes of WAL between the primary's position and a node's; zero when the node looks ahead,
/// which happens when the primary's sample is older than the node's.
pub fn lag_bytes(primary: Option<Lsn>, node: Option<Lsn>) -> Option<u64> {
    Some(primary?.0.saturating_sub(node?.0))
}

/// Chooses the primary among the up nodes claiming it, given as `(index, timeline)`.
///
/// Only a claim on the highest timeline ever seen on an up primary (`highest`, updated here)
/// can win: after a failover the new primary is on a higher timeline, so a resurrected old
/// primary is fenced, even once the new one is down. Among equal timelines (two standbys
/// promoted from the same one both pick the next number) the current primary keeps its place,
/// else the first in configuration order wins. Every other claimant is fenced.
pub(crate) fn select_primary(
    claims: &[(usize, u32)],
    previous: Option<usize>,
    highest: &mut u32,
) -> Option<usize> {
    *highest = claims.iter().map(|&(_, tl)| tl).fold(*highest, u32::max);
    let top = || claims.iter().filter(|&&(_, tl)| tl == *highest).map(|&(i, _)| i);
    top().find(|&i| Some(i) == previous).or_else(|| top().min())
}

/// Everything the aggregator remembers about one node.
#[derive(Debug)]
struct NodeRecord {
    addr: Arc<str>,
    health: FallRise,
    last: Option<Sample>,
    last_check: Option<Instant>,
    last_error: Option<String>,
}

/// The aggregator's state: one record per node plus the primary choice.
#[derive(Debug)]
pub(crate) struct Topology {
    nodes: Vec<NodeRecord>,
    fall: u32,
    rise: u32,
    primary: Option<usize>,
    fenced: Vec<bool>,
    /// Highest timeline an up primary ever had (see [`select_primary`]).
    highest_timeline: u32,
}

impl Topology {
    /// Every node `Unknown` since `at`.
    pub(crate) fn new(addrs: &[Arc<str>], fall: u32, rise: u32, at: Instant) -> Topology {
        let nodes = addrs
            .iter()
            .map(|addr| NodeRecord {
                addr: addr.clone(),
                health: FallRise::new(at),
                last: None,
                last_check: None,
                last_error: None,
            })
            .collect();
        Topology {
            nodes,
            fall,
            rise,
            primary: None,
            fenced: vec![false; addrs.len()],
            highest_timeline: 0,
        }
    }

    /// Records one check and re-chooses the primary.
    pub(crate) fn apply(&mut self, observation: Observation) {
        let (fall, rise) = (self.fall, self.rise);
        let Some(node) = self.nodes.get_mut(observation.node) else {
            return;
        };
        node.last_check = Some(observation.at);
        let ok = observation.outcome.is_ok();
        match observation.outcome {
            Ok(sample) => {
                node.last_error = None;
                node.last = Some(sample);
            }
            Err(error) => node.last_error = Some(error.to_string()),
        }
        if node.health.record(ok, observation.at, fall, rise) {
            log_transition(node, fall, rise);
        }
        self.choose_primary();
    }

    fn choose_primary(&mut self) {
        let claims: Vec<(usize, u32)> = self
            .nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.health.state() == HealthState::Up)
            .filter_map(|(i, n)| {
                let sample = n.last.as_ref()?;
                (sample.role == Role::Primary).then_some((i, sample.timeline.unwrap_or(0)))
            })
            .collect();
        let chosen = select_primary(&claims, self.primary, &mut self.highest_timeline);
        for (i, fenced) in self.fenced.iter_mut().enumerate() {
            let now = claims.iter().any(|&(c, _)| c == i) && Some(i) != chosen;
            if now && !*fenced {
                tracing::error!(
                    node = %self.nodes[i].addr,
                    highest_timeline = self.highest_timeline,
                    "node claims to be primary on an older timeline or beside the current primary; \
                     fenced"
                );
            }
            *fenced = now;
        }
        if chosen != self.primary {
            match chosen {
                Some(i) => tracing::info!(node = %self.nodes[i].addr, "primary selected"),
                None => tracing::warn!("no primary available; writes must wait"),
            }
            self.primary = chosen;
        }
    }

    /// The snapshot to publish.
    pub(crate) fn view(&self) -> TopologyView {
        let primary_lsn = self
            .primary
            .and_then(|i| self.nodes[i].last.as_ref())
            .and_then(|s| s.lsn);
        let nodes = self
            .nodes
            .iter()
            .zip(&self.fenced)
            .map(|(node, &fenced)| {
                let sample = node.last.as_ref();
                let role = sample.map_or(Role::Unknown, |s| s.role);
                let lsn = sample.and_then(|s| s.lsn);
                NodeStatus {
                    addr: node.addr.clone(),
                    role,
                    health: node.health.state(),
                    since: node.health.since(),
                    streak: node.health.streak(),
                    fenced,
                    lsn,
                    lag_bytes: if fenced { None } else { lag_bytes(primary_lsn, lsn) },
                    lag: sample
                        .filter(|_| !fenced)
                        .and_then(|s| replay_lag(s.role, s.lsn, s.receive_lsn, s.replay_age)),
                    timeline: sample.and_then(|s| s.timeline),
                    last_check: node.last_check,
                    last_error: node.last_error.clone(),
                }
            })
            .collect();
        TopologyView {
            nodes,
            primary: self.primary,
        }
    }
}

fn log_transition(node: &NodeRecord, fall: u32, rise: u32) {
    let error = node.last_error.as_deref().unwrap_or("");
    match node.health.state() {
        HealthState::Up => tracing::info!(node = %node.addr, rise, "node is up"),
        HealthState::Down => tracing::warn!(node = %node.addr, fall, %error, "node is down"),
        HealthState::Unknown => {}
    }
}
