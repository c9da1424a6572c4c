//! tidepool's own tables: NODES (health checker view), ROUTES (routing decisions by reason)
//! and PREPARED (transaction mode's statement cache).

use super::{s, Table, INT4, INT8, TEXT};
use crate::app::Shared;
use crate::router::reasons::RouteReason;

/// SHOW NODES: what the health checkers know, cluster by cluster (a cluster of one node has no
/// checker: its address only).
pub(super) fn nodes(shared: &Shared) -> Table {
    let mut t = Table::new(&[
        ("node", TEXT),
        ("role", TEXT),
        ("health", TEXT),
        ("lag_bytes", INT8),
        ("lag_seconds", TEXT),
        ("timeline", INT4),
        ("last_check_ms_ago", INT8),
        ("fenced", TEXT),
        ("weight", INT4),
        ("last_error", TEXT),
        ("cluster", TEXT),
    ]);
    let snapshot = shared.snapshot();
    for (cluster, view) in snapshot.views() {
        let Some(health) = shared.health_of(cluster) else {
            for node in &view.config.nodes {
                t.push(vec![
                    s(node.address()),
                    s("primary"),
                    s("unchecked"),
                    None,
                    None,
                    None,
                    None,
                    s("no"),
                    s(node.weight),
                    None,
                    s(cluster),
                ]);
            }
            continue;
        };
        for (i, node) in health.view().nodes.iter().enumerate() {
            let mut row = checked_node(node);
            row.insert(8, view.weights.get(i).map(|w| w.to_string()));
            row.push(s(cluster));
            t.push(row);
        }
    }
    t
}

/// A checked node's columns, without its weight and cluster.
fn checked_node(node: &crate::health::NodeStatus) -> Vec<Option<String>> {
    let role = match node.role {
        crate::health::Role::Primary => "primary",
        crate::health::Role::Standby => "standby",
        crate::health::Role::Unknown => "unknown",
    };
    let health_state = match node.health {
        crate::health::HealthState::Up => "up",
        crate::health::HealthState::Down => "down",
        crate::health::HealthState::Unknown => "unknown",
    };
    vec![
        s(&node.addr),
        s(role),
        s(health_state),
        node.lag_bytes.map(|b| b.to_string()),
        node.lag.map(|l| format!("{:.3}", l.as_secs_f64())),
        node.timeline.map(|tl| tl.to_string()),
        node.last_check.map(|at| at.elapsed().as_millis().to_string()),
        s(if node.fenced { "yes" } else { "no" }),
        node.last_error.clone(),
    ]
}

pub(super) fn routes(shared: &Shared) -> Table {
    let mut t = Table::new(&[("reason", TEXT), ("count", INT8)]);
    for reason in RouteReason::ALL {
        t.push(vec![s(reason.as_str()), s(shared.stats.routes.get(reason))]);
    }
    t
}

/// SHOW PREPARED: the process-wide statement cache of transaction mode.
pub(super) fn prepared(shared: &Shared) -> Table {
    let mut t = Table::new(&[("id", INT8), ("name", TEXT), ("holders", INT4), ("query", TEXT)]);
    for statement in shared.statements.live() {
        // Holders: the clients and backends that keep it alive (minus this listing's own).
        let holders = std::sync::Arc::strong_count(&statement).saturating_sub(1);
        t.push(vec![
            s(statement.id),
            s(&statement.backend_name),
            s(holders),
            s(statement.query()),
        ]);
    }
    t
}
