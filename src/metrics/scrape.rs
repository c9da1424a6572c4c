//! A scrape: reads the registries, pools, health view and counters, brings the exported
//! families up to date, and encodes the text exposition format.

use super::{catch_up, counter_vec, float_gauge_vec, gauge_vec};
use crate::app::Shared;
use crate::router::reasons::RouteReason;
use prometheus::{Encoder, GaugeVec, IntCounterVec, IntGaugeVec, Registry, TextEncoder};
use std::collections::HashMap;
use std::sync::atomic::Ordering;

/// Families whose values are computed at scrape time.
pub(super) struct Families {
    clients: IntGaugeVec,
    backends: IntGaugeVec,
    pool_transactions: IntCounterVec,
    pool_queries: IntCounterVec,
    pool_received: IntCounterVec,
    pool_sent: IntCounterVec,
    pool_connects: IntCounterVec,
    routes: IntCounterVec,
    errors: IntCounterVec,
    isolation_checks: IntCounterVec,
    node_up: IntGaugeVec,
    node_role: IntGaugeVec,
    node_fenced: IntGaugeVec,
    node_lag_bytes: IntGaugeVec,
    node_lag_seconds: GaugeVec,
    node_timeline: IntGaugeVec,
}

/// database, user, (node, cluster), state.
type ClientLabels = (String, String, (String, String), &'static str);

const POOL: &[&str] = &["database", "user", "node", "cluster"];

impl Families {
    pub(super) fn register(r: &Registry) -> Families {
        Families {
            clients: gauge_vec(
                r,
                "tidepool_clients",
                "Logged-in clients by state.",
                &["database", "user", "node", "cluster", "state"],
            ),
            backends: gauge_vec(
                r,
                "tidepool_backends",
                "Backend connections by state.",
                &["database", "user", "node", "cluster", "state"],
            ),
            pool_transactions: counter_vec(
                r,
                "tidepool_pool_transactions_total",
                "Transactions completed, per pool.",
                POOL,
            ),
            pool_queries: counter_vec(
                r,
                "tidepool_pool_queries_total",
                "Requests answered, per pool.",
                POOL,
            ),
            pool_received: counter_vec(
                r,
                "tidepool_pool_received_bytes_total",
                "Bytes received from clients, per pool.",
                POOL,
            ),
            pool_sent: counter_vec(
                r,
                "tidepool_pool_sent_bytes_total",
                "Bytes sent to clients, per pool.",
                POOL,
            ),
            pool_connects: counter_vec(
                r,
                "tidepool_pool_backend_connects_total",
                "Backend connections opened, per pool.",
                POOL,
            ),
            routes: counter_vec(
                r,
                "tidepool_routing_decisions_total",
                "Where transactions were routed, by reason.",
                &["reason"],
            ),
            errors: counter_vec(
                r,
                "tidepool_errors_total",
                "ErrorResponses relayed to clients, by SQLSTATE class.",
                &["class"],
            ),
            isolation_checks: counter_vec(
                r,
                "tidepool_isolation_checks_total",
                "Session-state checks after transactions that were not clean (transaction mode), by \
                 whether the backend was also reset.",
                &["reset"],
            ),
            node_up: gauge_vec(
                r,
                "tidepool_node_up",
                "1 when the node's health checks say up.",
                &["node", "cluster"],
            ),
            node_role: gauge_vec(
                r,
                "tidepool_node_role",
                "1 for the node's current role.",
                &["node", "cluster", "role"],
            ),
            node_fenced: gauge_vec(
                r,
                "tidepool_node_fenced",
                "1 when the node claims primary but is fenced.",
                &["node", "cluster"],
            ),
            node_lag_bytes: gauge_vec(
                r,
                "tidepool_node_lag_bytes",
                "WAL bytes the node is behind the primary.",
                &["node", "cluster"],
            ),
            node_lag_seconds: float_gauge_vec(
                r,
                "tidepool_node_lag_seconds",
                "Replay delay of the node.",
                &["node", "cluster"],
            ),
            node_timeline: gauge_vec(
                r,
                "tidepool_node_timeline",
                "The node's timeline.",
                &["node", "cluster"],
            ),
        }
    }
}

/// Encodes every metric of `shared` in the text exposition format.
pub fn render(shared: &Shared) -> String {
    let metrics = &shared.metrics;
    // Scrapes take turns; the data path never takes this lock.
    let _turn = metrics.scrape_lock.lock().unwrap_or_else(|p| p.into_inner());
    let f = &metrics.families;
    let snapshot = shared.snapshot();
    // A client's node index is one of its database's cluster's nodes.
    let node_of = |database: &str, i: usize| {
        let cluster = snapshot
            .config
            .cluster_of(database)
            .unwrap_or_default()
            .to_string();
        let node = (snapshot.nodes_for(database))
            .and_then(|nodes| nodes.get(i))
            .map(|n| n.address())
            .unwrap_or_default();
        (node, cluster)
    };

    // Gauges are rebuilt from scratch so that pools and clients that are gone disappear.
    f.clients.reset();
    let mut clients: HashMap<ClientLabels, i64> = HashMap::new();
    for entry in shared.sessions.all() {
        if crate::admin::is_console(&entry.database) {
            continue;
        }
        let key = (
            entry.database.clone(),
            entry.user.clone(),
            node_of(&entry.database, entry.node()),
            entry.state().as_str(),
        );
        *clients.entry(key).or_default() += 1;
    }
    for ((database, user, (node, cluster), state), n) in &clients {
        f.clients
            .with_label_values(&[database.as_str(), user, node, cluster, state])
            .set(*n);
    }

    f.backends.reset();
    for pool in shared.pools.all() {
        let key = &pool.key;
        let labels = [key.database.as_str(), key.user.as_str(), &key.node, &key.cluster];
        let (open, idle, _) = pool.counts();
        let connecting = pool.stats.connecting.load(Ordering::Relaxed);
        let active = open.saturating_sub(idle).saturating_sub(connecting);
        for (state, n) in [("idle", idle), ("active", active), ("connecting", connecting)] {
            let mut with_state = labels.to_vec();
            with_state.push(state);
            f.backends.with_label_values(&with_state).set(n as i64);
        }
        let stats = &pool.stats;
        for (family, count) in [
            (&f.pool_transactions, &stats.transactions),
            (&f.pool_queries, &stats.queries),
            (&f.pool_received, &stats.received),
            (&f.pool_sent, &stats.sent),
            (&f.pool_connects, &stats.connects),
        ] {
            catch_up(&family.with_label_values(&labels), count.load(Ordering::Relaxed));
        }
    }

    for reason in RouteReason::ALL {
        catch_up(
            &f.routes.with_label_values(&[reason.as_str()]),
            shared.stats.routes.get(reason),
        );
    }
    for (class, n) in metrics.errors.nonzero() {
        catch_up(&f.errors.with_label_values(&[&class]), n);
    }
    let checks = shared.stats.isolation_checks.load(Ordering::Relaxed);
    let resets = shared.stats.isolation_resets.load(Ordering::Relaxed);
    catch_up(&f.isolation_checks.with_label_values(&["true"]), resets);
    catch_up(
        &f.isolation_checks.with_label_values(&["false"]),
        checks.saturating_sub(resets),
    );

    f.node_role.reset();
    for (cluster, health) in shared.healths().iter() {
        node_families(f, cluster, &health.view());
    }

    let mut out = Vec::new();
    // Encoding into a Vec only fails on invalid metric data, which registration rules out.
    let _ = TextEncoder::new().encode(&metrics.registry.gather(), &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// The health view's families for one cluster.
fn node_families(f: &Families, cluster: &str, view: &crate::health::TopologyView) {
    for node in &view.nodes {
        let labels = [&*node.addr, cluster];
        f.node_up.with_label_values(&labels).set(node.is_up() as i64);
        let role = match node.role {
            crate::health::Role::Primary => "primary",
            crate::health::Role::Standby => "standby",
            crate::health::Role::Unknown => "unknown",
        };
        f.node_role
            .with_label_values(&[&*node.addr, cluster, role])
            .set(1);
        f.node_fenced.with_label_values(&labels).set(node.fenced as i64);
        if let Some(bytes) = node.lag_bytes {
            f.node_lag_bytes.with_label_values(&labels).set(bytes as i64);
        }
        if let Some(lag) = node.lag {
            f.node_lag_seconds
                .with_label_values(&labels)
                .set(lag.as_secs_f64());
        }
        if let Some(timeline) = node.timeline {
            f.node_timeline.with_label_values(&labels).set(timeline as i64);
        }
    }
}
