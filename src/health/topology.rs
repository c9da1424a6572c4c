//! Turning check results into a topology: fall/rise per node, primary selection with split-brain
//! fencing, and lag. Pure bookkeeping, owned by the aggregator task; no I/O, no clock reads.

use super::patroni::PatroniError;
use super::probe::CheckError;
use super::status::{FallRise, HealthState, Lsn, NodeStatus, PatroniStatus, Role, TopologyView};
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

/// What the aggregator receives: a node's check, or Patroni's answer.
#[derive(Debug)]
pub(crate) enum Update {
    Node(Observation),
    /// The leader's `host:port` per Patroni (`None`: no leader now), or why asking failed.
    Patroni(Result<Option<String>, PatroniError>),
}

/// What Patroni said lately, when `patroni_api` is configured.
#[derive(Debug, Default)]
struct PatroniRecord {
    /// Patroni's leader is known: it answered, and fewer than `fall` asks failed since.
    known: bool,
    /// The leader's PostgreSQL `host:port` (as Patroni reports it).
    leader: Option<Arc<str>>,
    /// Consecutive failed asks.
    failures: u32,
    last_error: Option<String>,
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
    /// `Some` when `patroni_api` is configured: then Patroni names the primary (see
    /// [`Topology::choose_primary`]).
    patroni: Option<PatroniRecord>,
    /// The WAL position of the last primary seen. With no primary up, standbys' byte lag is
    /// measured against it: the old primary wrote nothing after it, so a standby that has
    /// caught up is still fresh enough to serve reads (otherwise every read would wait for a
    /// primary under the default `max_lag_bytes`).
    last_primary_lsn: Option<Lsn>,
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
            patroni: None,
            last_primary_lsn: None,
        }
    }

    /// From now on the primary must also be Patroni's leader; until Patroni answers there is
    /// none.
    pub(crate) fn with_patroni(mut self) -> Topology {
        self.patroni = Some(PatroniRecord::default());
        self
    }

    /// Records a node check or a Patroni answer and re-chooses the primary.
    pub(crate) fn apply_update(&mut self, update: Update) {
        match update {
            Update::Node(observation) => self.apply(observation),
            Update::Patroni(outcome) => {
                let fall = self.fall;
                let Some(record) = self.patroni.as_mut() else {
                    return;
                };
                match outcome {
                    Ok(leader) => {
                        let leader: Option<Arc<str>> = leader.map(Arc::from);
                        if !record.known || record.leader != leader {
                            tracing::info!(leader = ?leader.as_deref(), "Patroni's leader");
                        }
                        *record = PatroniRecord {
                            known: true,
                            leader,
                            failures: 0,
                            last_error: None,
                        };
                    }
                    Err(error) => {
                        record.failures = record.failures.saturating_add(1);
                        // The same hysteresis as a node's: one lost answer does not stop writes.
                        if record.known && record.failures >= fall {
                            tracing::warn!(%error, "Patroni cannot be asked; writes wait until it answers");
                            record.known = false;
                            record.leader = None;
                        }
                        record.last_error = Some(error.to_string());
                    }
                }
                self.choose_primary();
            }
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
        let (chosen, fence_others) = match &self.patroni {
            None => (
                select_primary(&claims, self.primary, &mut self.highest_timeline),
                true,
            ),
            Some(patroni) => self.patroni_choice(patroni, &claims),
        };
        for (i, fenced) in self.fenced.iter_mut().enumerate() {
            let now = fence_others && claims.iter().any(|&(c, _)| c == i) && Some(i) != chosen;
            if now && !*fenced {
                tracing::error!(
                    node = %self.nodes[i].addr,
                    highest_timeline = self.highest_timeline,
                    "node claims to be primary on an older timeline, beside the current primary, \
                     or against Patroni; fenced"
                );
            }
            *fenced = now;
        }
        if let Some(lsn) = chosen.and_then(|i| self.nodes[i].last.as_ref()?.lsn) {
            self.last_primary_lsn = Some(lsn);
        }
        if chosen != self.primary {
            match chosen {
                Some(i) => tracing::info!(node = %self.nodes[i].addr, "primary selected"),
                None => tracing::warn!("no primary available; writes must wait"),
            }
            self.primary = chosen;
        }
    }

    /// With Patroni, the primary is the node that both Patroni names leader and that says it is
    /// not in recovery; while they disagree (or Patroni's answer is unknown) there is none, so
    /// writes wait. Patroni is the authority on timelines too: its leader wins even over a
    /// node on a higher timeline (which is fenced). Nothing is fenced while Patroni's answer
    /// is unknown: there is no authority to fence by.
    fn patroni_choice(&self, patroni: &PatroniRecord, claims: &[(usize, u32)]) -> (Option<usize>, bool) {
        if !patroni.known {
            return (None, false);
        }
        let chosen = patroni.leader.as_ref().and_then(|leader| {
            claims
                .iter()
                .map(|&(i, _)| i)
                .find(|&i| *self.nodes[i].addr == **leader)
        });
        (chosen, true)
    }

    /// The snapshot to publish.
    pub(crate) fn view(&self) -> TopologyView {
        let primary_lsn = self
            .primary
            .and_then(|i| self.nodes[i].last.as_ref())
            .and_then(|s| s.lsn)
            .or(self.last_primary_lsn);
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
            patroni: self.patroni.as_ref().map(|p| PatroniStatus {
                known: p.known,
                leader: p.leader.clone(),
                last_error: p.last_error.clone(),
            }),
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
