//! Health checking wiring: a checker set per cluster with more than one node, the login it
//! checks with, and the watcher that retires a node's connections when its role changes.

use super::pool_settings::backend_secret;
use super::{HealthMap, Shared, Snapshot};
use crate::backend::{BackendLogin, BackendSecret};
use crate::health::Health;
use crate::shutdown::{Shutdown, Stage};
use std::sync::Arc;

/// Health checkers for every cluster of `snapshot` with more than one node.
pub(crate) fn start_healths(snapshot: &Snapshot, shutdown: &Shutdown) -> HealthMap {
    (snapshot.views())
        .filter_map(|(name, view)| Some((name.to_string(), Arc::new(start_health(view, shutdown)?))))
        .collect()
}

/// With several nodes, a checker per node of the cluster `view` is of finds the primary and
/// measures lag. It logs in as the first configured user that has a password usable toward
/// PostgreSQL.
pub(crate) fn start_health(view: &Snapshot, shutdown: &Shutdown) -> Option<Health> {
    let (nodes, login) = health_plan(view)?;
    let config = &view.config;
    // Validated with the config, so nothing is dropped here.
    let patroni = (config.routing.patroni_api.iter())
        .filter_map(|url| crate::health::PatroniUrl::parse(url).ok())
        .map(|url| url.with_access(view.patroni.clone()))
        .collect();
    let stop = shutdown.subscribe();
    let stopped = async move {
        let mut stop = stop;
        // Draining clients (WAIT_FOR_CLIENTS) still routes: checks go on until clients are closed.
        let _ = stop.wait_for(|stage| *stage >= Stage::Graceful).await;
    };
    Some(Health::spawn_with_patroni(
        nodes,
        login,
        config.health.clone(),
        patroni,
        stopped,
    ))
}

/// The nodes of the cluster `view` is of and the login to check them with; `None` when there
/// is nothing to choose between (a single node). Reload restarts the checkers when this, the
/// cluster's `[health]` or its Patroni endpoints change.
pub(crate) fn health_plan(view: &Snapshot) -> Option<(Vec<Arc<str>>, BackendLogin)> {
    let config = &view.config;
    if config.nodes.len() < 2 {
        return None;
    }
    let database = config.health_dbname(&view.cluster);
    let user = config
        .users
        .iter()
        .find(|u| !matches!(backend_secret(u), BackendSecret::None))
        .or_else(|| config.users.first())?;
    let login = BackendLogin {
        user: user.backend_user.clone().unwrap_or_else(|| user.name.clone()),
        database,
        secret: backend_secret(user),
        tls: view.backend_tls.clone(),
        keepalive: config.proxy.keepalive(),
    };
    let nodes = config.nodes.iter().map(|n| Arc::from(n.address())).collect();
    Some((nodes, login))
}

/// Starts [`retire_on_role_change`] for the current health checkers (at start, and after a
/// reload replaced them: the previous watcher ends with its checkers).
pub(crate) fn watch_role_changes(shared: &Arc<Shared>, health: &Health) {
    tokio::spawn(retire_on_role_change(health.subscribe(), Arc::downgrade(shared)));
}

/// When a node's role changes, its pooled connections are retired: a connection opened to a
/// primary must not serve as a standby's, nor the reverse. Ends when health checking stops;
/// holds the shared state weakly so that it never keeps the proxy alive.
async fn retire_on_role_change(
    mut changes: tokio::sync::watch::Receiver<Arc<crate::health::TopologyView>>,
    shared: std::sync::Weak<Shared>,
) {
    let mut before = changes.borrow_and_update().clone();
    while changes.changed().await.is_ok() {
        let now = changes.borrow_and_update().clone();
        let Some(shared) = shared.upgrade() else {
            return;
        };
        for node in now.role_changes(&before) {
            let addr = &now.nodes[node].addr;
            tracing::info!(node = %addr, "node changed role; retiring its connections");
            for pool in shared.pools.all().iter().filter(|p| p.key.node == *addr) {
                pool.retire_connections();
            }
        }
        before = now;
    }
}
