//! What is known about each node (role, up/down, lag) and the snapshot the balancer reads.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// What a node said it is at its last successful check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Never answered a check yet.
    Unknown,
    /// Not in recovery: accepts writes.
    Primary,
    /// In recovery (`pg_is_in_recovery()`): read-only.
    Standby,
}

/// The verdict of the fall/rise rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthState {
    /// No check has finished yet.
    Unknown,
    Up,
    Down,
}

/// A WAL position, as PostgreSQL's `pg_lsn` (`16/B374D848`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Lsn(pub u64);

impl Lsn {
    /// Parses PostgreSQL's text form: two hex numbers, high and low 32 bits.
    pub fn parse(text: &str) -> Option<Lsn> {
        let (high, low) = text.split_once('/')?;
        let high = u32::from_str_radix(high, 16).ok()?;
        let low = u32::from_str_radix(low, 16).ok()?;
        Some(Lsn((u64::from(high) << 32) | u64::from(low)))
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// HAProxy-style hysteresis: `fall` failed checks in a row take an up node down, `rise` good
/// checks in a row bring a down node back.
///
/// The very first result decides at once (good → up, failed → down): at startup there is no
/// history to protect, and waiting `rise` checks would only keep tidepool unusable longer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FallRise {
    state: HealthState,
    since: Instant,
    /// Consecutive results that disagree with `state`.
    streak: u32,
}

impl FallRise {
    pub(crate) fn new(at: Instant) -> FallRise {
        FallRise {
            state: HealthState::Unknown,
            since: at,
            streak: 0,
        }
    }

    pub(crate) fn state(&self) -> HealthState {
        self.state
    }

    pub(crate) fn since(&self) -> Instant {
        self.since
    }

    pub(crate) fn streak(&self) -> u32 {
        self.streak
    }

    /// The one transition function: records a check result taken at `at`; true when the
    /// state changed.
    pub(crate) fn record(&mut self, ok: bool, at: Instant, fall: u32, rise: u32) -> bool {
        let next = match (self.state, ok) {
            (HealthState::Unknown, true) => Some(HealthState::Up),
            (HealthState::Unknown, false) => Some(HealthState::Down),
            (HealthState::Up, true) | (HealthState::Down, false) => {
                self.streak = 0;
                None
            }
            (HealthState::Up, false) => {
                self.streak = self.streak.saturating_add(1);
                (self.streak >= fall).then_some(HealthState::Down)
            }
            (HealthState::Down, true) => {
                self.streak = self.streak.saturating_add(1);
                (self.streak >= rise).then_some(HealthState::Up)
            }
        };
        let Some(next) = next else {
            return false;
        };
        self.state = next;
        self.since = at;
        self.streak = 0;
        true
    }
}

/// One node as the balancer sees it.
///
/// Measurements (`lsn`, `timeline`, replay lag) come from the last *successful* check, so on a
/// down node they are stale; `health` says whether to trust them.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeStatus {
    /// `host:port` as configured.
    pub addr: Arc<str>,
    /// Role at the last successful check.
    pub role: Role,
    pub health: HealthState,
    /// When `health` last changed (when checking started, while `Unknown`).
    pub since: Instant,
    /// Consecutive check results that disagree with `health`: the node flips when this
    /// reaches `fall` (while up) or `rise` (while down).
    pub streak: u32,
    /// Claims to be primary but lost to a node on a higher timeline (or one seen earlier):
    /// never route anything to it.
    pub fenced: bool,
    /// Current WAL insert position on a primary, last replayed position on a standby.
    pub lsn: Option<Lsn>,
    /// How far this node's `lsn` is behind the current primary's latest observed `lsn`.
    /// `Some(0)` on the primary; `None` when there is no primary or the node is fenced.
    pub lag_bytes: Option<u64>,
    /// Replay delay (see [`replay_lag`](crate::health::replay_lag)); zero on the primary, `None`
    /// when fenced or when no transaction was replayed yet.
    pub lag: Option<Duration>,
    pub timeline: Option<u32>,
    /// When the last check (good or bad) finished.
    pub last_check: Option<Instant>,
    /// Why the most recent check failed; `None` when it succeeded.
    pub last_error: Option<String>,
}

impl NodeStatus {
    /// True when the fall/rise rules say the node is up.
    pub fn is_up(&self) -> bool {
        self.health == HealthState::Up
    }

    /// Up, a standby, and not fenced: fit for reads.
    pub fn is_usable_standby(&self) -> bool {
        self.is_up() && self.role == Role::Standby && !self.fenced
    }
}

/// An immutable snapshot of every node, replaced whole after each check.
#[derive(Debug, Clone, PartialEq)]
pub struct TopologyView {
    /// In the order the nodes were given to [`Health::spawn`](crate::health::Health::spawn).
    pub nodes: Vec<NodeStatus>,
    pub(crate) primary: Option<usize>,
    /// What Patroni says, when `patroni_api` is configured.
    pub patroni: Option<PatroniStatus>,
}

/// Patroni's view, as last asked (`routing.patroni_api`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PatroniStatus {
    /// Patroni answered lately (fewer than `fall` failed asks since); while false there is no
    /// primary.
    pub known: bool,
    /// `host:port` of the leader's PostgreSQL per Patroni; `None` during a leader race.
    pub leader: Option<Arc<str>>,
    /// Why the last ask failed; `None` when it succeeded.
    pub last_error: Option<String>,
}

impl TopologyView {
    /// Index of the node to send writes to: up, claiming primary, not fenced.
    pub fn primary(&self) -> Option<usize> {
        self.primary
    }

    /// The status of [`primary`](Self::primary).
    pub fn primary_status(&self) -> Option<&NodeStatus> {
        self.primary.map(|i| &self.nodes[i])
    }

    /// Why there is no primary although Patroni is asked: it cannot be reached, or it and the
    /// nodes' `pg_is_in_recovery()` disagree. `None` when there is a primary or no Patroni.
    pub fn patroni_disagreement(&self) -> Option<String> {
        let patroni = self.patroni.as_ref().filter(|_| self.primary.is_none())?;
        let claims: Vec<&str> = self
            .nodes
            .iter()
            .filter(|n| n.is_up() && n.role == Role::Primary)
            .map(|n| &*n.addr)
            .collect();
        Some(match (&patroni.leader, patroni.known) {
            (_, false) => format!(
                "Patroni cannot be asked who the leader is ({}).",
                patroni.last_error.as_deref().unwrap_or("no answer yet")
            ),
            (None, true) => "Patroni reports no leader (a failover is under way).".to_string(),
            (Some(leader), true) => format!(
                "Patroni names {leader} the leader, but the nodes not in recovery are [{}].",
                claims.join(", ")
            ),
        })
    }

    /// Nodes whose role changed since `before` (primary to standby or back, both known), or that
    /// were fenced since: their pooled connections must not be reused.
    pub fn role_changes(&self, before: &TopologyView) -> Vec<usize> {
        self.nodes
            .iter()
            .zip(&before.nodes)
            .enumerate()
            .filter(|(_, (now, then))| {
                let flipped =
                    now.role != then.role && now.role != Role::Unknown && then.role != Role::Unknown;
                flipped || (now.fenced && !then.fenced)
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// Indexes of nodes that claim to be primary but must not be used (split brain).
    pub fn fenced(&self) -> impl Iterator<Item = usize> + '_ {
        self.nodes
            .iter()
            .enumerate()
            .filter(|(_, n)| n.fenced)
            .map(|(i, _)| i)
    }

    /// True when both views agree on the primary and on every node's role, health and fencing;
    /// measurements (lag, LSN, check times) are ignored. Waiters are woken only when this
    /// changes.
    pub fn same_topology(&self, other: &TopologyView) -> bool {
        self.primary == other.primary
            && self.patroni.as_ref().map(|p| (p.known, &p.leader))
                == other.patroni.as_ref().map(|p| (p.known, &p.leader))
            && self.nodes.len() == other.nodes.len()
            && self.nodes.iter().zip(&other.nodes).all(|(a, b)| {
                a.addr == b.addr && a.role == b.role && a.health == b.health && a.fenced == b.fenced
            })
    }
}
