//! The janitor: once a second, pool upkeep (eviction, prewarming, caps), pools brought in line
//! with the current snapshot, idle `*` databases closed, and the hazard catalogs marked due.

use super::{Shared, Snapshot};
use std::sync::Arc;
use std::time::Duration;

/// Once a second: idle and lifetime eviction, prewarming, and pools brought in line with the
/// current snapshot (one created from an older snapshot while a reload ran).
pub(super) async fn run(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let hazards_every = crate::client::features::isolation::catalog::REFRESH_EVERY
        .as_secs()
        .max(1);
    let mut ticks = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shared.shutdown.wait() => return,
        }
        ticks += 1;
        if ticks % hazards_every == 0 {
            shared.hazards.mark_all_due();
        }
        let snapshot = shared.snapshot();
        crate::reload::reconcile_pools(&shared, &snapshot);
        close_idle_auto_databases(&shared, &snapshot);
        for pool in shared.pools.all() {
            pool.yield_to_cap_waiters();
            pool.maintain();
        }
    }
}

/// Closes the databases served through `*` that no client used for `autodb_idle_timeout`:
/// their pools are retired (idle connections close now). A database is in use while a client
/// is logged in to it or one of its connections is borrowed.
fn close_idle_auto_databases(shared: &Shared, snapshot: &Snapshot) {
    let idle = snapshot.config.pool.autodb_idle_timeout.0;
    let pools = shared.pools.all();
    let mut in_use: std::collections::HashSet<String> =
        shared.sessions.all().iter().map(|c| c.database.clone()).collect();
    for pool in &pools {
        let (open, idle_count, waiting) = pool.counts();
        if open > idle_count || waiting > 0 {
            in_use.insert(pool.key.database.clone());
        }
    }
    for name in shared.pools.auto.expire(|name| in_use.contains(name), idle) {
        tracing::info!(database = %name, "database served through \"*\" closed: idle");
        for pool in pools.iter().filter(|p| p.key.database == name) {
            shared.pools.retire(pool);
        }
    }
}
