//! A session follows configuration reloads: at each transaction it takes the current snapshot
//! (the view of its database's cluster), and when that changed, its user entry and the pools it
//! cached are found again.

use crate::client::session::Session;
use std::sync::Arc;

impl Session {
    /// Takes the current snapshot (once per transaction). After a reload: the user's new entry
    /// (its pool size, backend password), and new pools in place of retired ones. A client whose
    /// user was removed keeps its session under the entry it logged in with.
    pub(crate) fn take_snapshot(&mut self) {
        // Nothing reloaded since the last transaction (the common case): no lookup at all.
        let generation = self.shared.generation();
        if self.followed.generation == generation {
            return;
        }
        self.follow_snapshot();
        self.followed = Followed {
            generation,
            health: self.shared.health_of(&self.snapshot.cluster),
        };
    }

    fn follow_snapshot(&mut self) {
        // A database no longer configured keeps the view it had: its client stays on its pool.
        let Some(current) = self.shared.snapshot().view_for(&self.params.database) else {
            return;
        };
        if Arc::ptr_eq(&current, &self.snapshot) {
            return;
        }
        let same_nodes = node_addresses(&current) == node_addresses(&self.snapshot);
        self.snapshot = current;
        let user = self.snapshot.users.lookup(&self.user.config.name);
        let relocate = user.is_some();
        if let Some(user) = user {
            self.user = user;
        }
        if same_nodes {
            for slot in &mut self.node_pools {
                if slot.as_ref().is_some_and(|p| p.is_retired()) {
                    *slot = None;
                }
            }
        } else {
            // Node indexes now mean other nodes.
            self.node_pools = vec![None; self.snapshot.config.nodes.len()];
        }
        if relocate && self.checkout.pool().is_retired() {
            let index = node_addresses(&self.snapshot)
                .iter()
                .position(|addr| **addr == *self.checkout.pool().key.node)
                .unwrap_or(0);
            let snapshot = self.snapshot.clone();
            if let Some(pool) = self
                .shared
                .pool_for(&snapshot, &self.params.database, &self.user, index)
            {
                self.checkout.set_pool(pool);
            }
        }
    }
}

impl Session {
    /// The health checkers of this session's cluster (`None` with a single node).
    pub(crate) fn health(&self) -> Option<Arc<crate::health::Health>> {
        self.followed.health.clone()
    }

    /// Whether this session's cluster has health checking (several nodes).
    pub(crate) fn has_health(&self) -> bool {
        self.followed.health.is_some()
    }
}

/// What the session last took from `Shared`, and which versions it took it from.
#[derive(Default)]
pub(crate) struct Followed {
    /// `Shared::generation` when the session last looked (0: never; it starts at 1).
    generation: usize,
    /// The health checkers of the session's cluster, as of then.
    health: Option<Arc<crate::health::Health>>,
}

/// `host:port` of each node, in order: what node indexes refer to.
pub(crate) fn node_addresses(snapshot: &crate::app::Snapshot) -> Vec<String> {
    snapshot.config.nodes.iter().map(|n| n.address()).collect()
}
