//! Table tests of node choice: no network, hand-made topologies.

use super::*;
use crate::health::{HealthState, NodeStatus, Role};
use crate::router::{Access, Reason};
use std::sync::Arc;
use tokio::time::Instant;

fn node(role: Role, up: bool, lag_ms: Option<u64>, lag_bytes: Option<u64>) -> NodeStatus {
    NodeStatus {
        addr: Arc::from("127.0.0.1:1"),
        role,
        health: if up { HealthState::Up } else { HealthState::Down },
        since: Instant::now(),
        streak: 0,
        fenced: false,
        lsn: None,
        lag_bytes,
        lag: lag_ms.map(Duration::from_millis),
        timeline: Some(1),
        last_check: None,
        last_error: None,
    }
}

fn view(nodes: Vec<NodeStatus>) -> TopologyView {
    let primary = nodes.iter().position(|n| n.role == Role::Primary && n.is_up());
    TopologyView {
        nodes,
        primary,
        patroni: None,
    }
}

fn decision(access: Access) -> Decision {
    Decision {
        access,
        reason: Reason::Read,
        control: None,
        hint: None,
        max_lag: None,
    }
}

fn targets(d: &Decision, v: &TopologyView, config: &RoutingConfig, weights: &[u32], n: usize) -> Vec<Target> {
    let rr = RoundRobin::default();
    (0..n).map(|_| pick(d, v, config, weights, &rr, None)).collect()
}

fn node_of(t: Target) -> Option<usize> {
    match t {
        Target::Node { index, .. } => Some(index),
        _ => None,
    }
}

#[test]
fn writes_go_to_the_primary_and_reads_round_robin_over_standbys() {
    let v = view(vec![
        node(Role::Standby, true, Some(0), Some(0)),
        node(Role::Primary, true, None, None),
        node(Role::Standby, true, Some(0), Some(0)),
    ]);
    let config = RoutingConfig::default();
    let writes = targets(&decision(Access::Write), &v, &config, &[], 4);
    assert!(writes.iter().all(|t| node_of(*t) == Some(1)));
    let reads: Vec<_> = targets(&decision(Access::Read), &v, &config, &[], 4)
        .into_iter()
        .map(node_of)
        .collect();
    assert_eq!(reads, [Some(0), Some(2), Some(0), Some(2)]);
}

#[test]
fn lagging_down_or_unmeasured_standbys_get_no_reads() {
    let config = RoutingConfig::default();
    let v = view(vec![
        node(Role::Primary, true, None, None),
        node(Role::Standby, true, Some(60_000), Some(0)),
        node(Role::Standby, true, Some(0), Some(1 << 30)),
        node(Role::Standby, false, Some(0), Some(0)),
        node(Role::Standby, true, None, None),
    ]);
    let t = targets(&decision(Access::Read), &v, &config, &[], 3);
    assert!(
        t.iter().all(|t| *t
            == Target::Node {
                index: 0,
                why: Why::NoStandby
            }),
        "{t:?}"
    );
    // Without limits, the lagging and unmeasured ones qualify again.
    let relaxed = RoutingConfig {
        max_lag: ConfigDuration::secs(0),
        max_lag_bytes: ByteSize(0),
        ..RoutingConfig::default()
    };
    let picked: std::collections::HashSet<_> = targets(&decision(Access::Read), &v, &relaxed, &[], 8)
        .into_iter()
        .filter_map(node_of)
        .collect();
    assert_eq!(picked, [1, 2, 4].into_iter().collect());
}

#[test]
fn per_statement_max_lag_overrides_the_global_bound() {
    let v = view(vec![
        node(Role::Primary, true, None, None),
        node(Role::Standby, true, Some(500), Some(0)),
    ]);
    let mut d = decision(Access::Read);
    d.max_lag = Some(Duration::from_millis(200));
    assert_eq!(
        node_of(pick(
            &d,
            &v,
            &RoutingConfig::default(),
            &[],
            &RoundRobin::default(),
            None
        )),
        Some(0)
    );
    d.max_lag = Some(Duration::from_secs(1));
    assert_eq!(
        node_of(pick(
            &d,
            &v,
            &RoutingConfig::default(),
            &[],
            &RoundRobin::default(),
            None
        )),
        Some(1)
    );
}

#[test]
fn hints_weights_and_reads_on_primary_modes() {
    let v = view(vec![
        node(Role::Primary, true, None, None),
        node(Role::Standby, true, Some(0), Some(0)),
        node(Role::Standby, true, Some(0), Some(0)),
    ]);
    let config = RoutingConfig::default();
    let mut d = decision(Access::Read);
    d.hint = Some(Hint::Primary);
    assert_eq!(
        pick(&d, &v, &config, &[], &RoundRobin::default(), None),
        Target::Node {
            index: 0,
            why: Why::Hint
        }
    );
    let mut w = decision(Access::Write);
    w.hint = Some(Hint::Standby);
    assert!(matches!(
        pick(&w, &v, &config, &[], &RoundRobin::default(), None),
        Target::Node {
            index: 1 | 2,
            why: Why::Hint
        }
    ));
    // Weights: node 2 gets three reads for each of node 1's; weight 0 takes node 1 out.
    let reads: Vec<_> = targets(&decision(Access::Read), &v, &config, &[1, 1, 3], 8)
        .into_iter()
        .filter_map(node_of)
        .collect();
    assert_eq!(reads.iter().filter(|&&i| i == 2).count(), 6);
    let reads: Vec<_> = targets(&decision(Access::Read), &v, &config, &[1, 0, 1], 4)
        .into_iter()
        .filter_map(node_of)
        .collect();
    assert!(reads.iter().all(|&i| i == 2));
    // Always: the primary joins the rotation.
    let always = RoutingConfig {
        reads_on_primary: ReadsOnPrimary::Always,
        ..RoutingConfig::default()
    };
    let picked: std::collections::HashSet<_> = targets(&decision(Access::Read), &v, &always, &[], 6)
        .into_iter()
        .filter_map(node_of)
        .collect();
    assert_eq!(picked.len(), 3);
}

#[test]
fn no_primary_and_no_standby() {
    let only_standby = view(vec![node(Role::Standby, true, Some(0), Some(0))]);
    let config = RoutingConfig::default();
    assert_eq!(
        pick(
            &decision(Access::Write),
            &only_standby,
            &config,
            &[],
            &RoundRobin::default(),
            None
        ),
        Target::NoPrimary
    );
    let only_primary = view(vec![node(Role::Primary, true, None, None)]);
    let never = RoutingConfig {
        reads_on_primary: ReadsOnPrimary::Never,
        ..RoutingConfig::default()
    };
    assert_eq!(
        pick(
            &decision(Access::Read),
            &only_primary,
            &never,
            &[],
            &RoundRobin::default(),
            None
        ),
        Target::NoStandby
    );
    // A standby never takes a write, even when it is the only node up.
    let down_primary = view(vec![
        node(Role::Primary, false, None, None),
        node(Role::Standby, true, Some(0), Some(0)),
    ]);
    assert_eq!(
        pick(
            &decision(Access::Write),
            &down_primary,
            &config,
            &[],
            &RoundRobin::default(),
            None
        ),
        Target::NoPrimary
    );
}

#[test]
fn read_your_writes_skips_standbys_that_have_not_replayed_the_write() {
    let mut behind = node(Role::Standby, true, Some(0), Some(0));
    behind.lsn = Some(crate::health::Lsn(100));
    let mut caught_up = node(Role::Standby, true, Some(0), Some(0));
    caught_up.lsn = Some(crate::health::Lsn(200));
    let v = view(vec![node(Role::Primary, true, None, None), behind, caught_up]);
    let config = RoutingConfig::default();
    let rr = RoundRobin::default();
    let d = decision(Access::Read);
    for _ in 0..4 {
        assert_eq!(
            node_of(pick(&d, &v, &config, &[], &rr, Some(crate::health::Lsn(150)))),
            Some(2)
        );
    }
    assert_eq!(
        pick(&d, &v, &config, &[], &rr, Some(crate::health::Lsn(300))),
        Target::Node {
            index: 0,
            why: Why::NoStandby
        }
    );
}
