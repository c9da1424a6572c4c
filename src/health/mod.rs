//! Per-node health checking: which node is the primary, which nodes are up, how far standbys lag.
//!
//! Design: [`Health::spawn`] starts one checker task per node plus one aggregator task (N + 1,
//! and one more that only waits for the caller's shutdown signal). Each checker owns a
//! persistent monitoring connection to its node and, every `health_check_interval`, runs one
//! query bounded by `health_check_timeout` (`probe.rs`), then sends the result to the aggregator
//! over an mpsc channel. The aggregator alone owns the state (fall/rise counters, the primary
//! choice, `topology.rs`), so nothing is locked. After each result it stores a fresh
//! [`TopologyView`] in an `ArcSwap`, which the balancer loads per transaction without locking,
//! and, only when a role, an up/down verdict, a fencing or the primary changed, notifies a
//! `watch` channel: that is what wakes writes paused during a failover ([`Health::changed`],
//! [`Health::wait_for_primary`]). Lag-only changes wake nobody. With `patroni_api`, one more
//! task asks Patroni's REST API for its leader on the same interval and sends the answer to the
//! same aggregator, which then requires Patroni and the nodes to agree on the primary.
//!
//! Shutdown (the caller's future, [`Health::stop`], or dropping `Health`) cancels the checkers;
//! they close their connections and drop their senders, the aggregator's channel ends, it drops
//! the watch sender, and every waiter wakes.

mod checker;
mod config;
pub mod patroni;
mod probe;
mod status;
#[cfg(test)]
mod tests;
mod topology;

pub use config::{HealthConfig, InvalidHealthConfig};
pub use patroni::{PatroniAccess, PatroniUrl};
pub use probe::CheckError;
pub use status::{HealthState, Lsn, NodeStatus, PatroniStatus, Role, TopologyView};
pub use topology::{lag_bytes, replay_lag};

use crate::backend::BackendLogin;
use arc_swap::ArcSwap;
use checker::{run_aggregator, run_checker, run_patroni, Publisher};
use probe::{Monitor, Probe};
use std::future::Future;
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use topology::Topology;

/// Handle on the running checkers: read the topology, wait for it to change, stop.
#[derive(Debug)]
pub struct Health {
    view: Arc<ArcSwap<TopologyView>>,
    /// Template receiver; every subscriber gets a clone marked as up to date.
    changes: watch::Receiver<Arc<TopologyView>>,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

impl Health {
    /// Starts checking `nodes` (`host:port`), logging in as `login` on one dedicated connection
    /// per node. Checking stops when `shutdown` resolves, on [`stop`](Self::stop), or when the
    /// handle is dropped. Must be called inside a tokio runtime.
    ///
    /// Every node starts [`HealthState::Unknown`] and takes the verdict of its first check at
    /// once; after that the `fall`/`rise` rules apply.
    pub fn spawn(
        nodes: Vec<Arc<str>>,
        login: BackendLogin,
        config: HealthConfig,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Health {
        Health::spawn_with_patroni(nodes, login, config, Vec::new(), shutdown)
    }

    /// [`spawn`](Self::spawn), and with `patroni` non-empty one more task asks Patroni's REST API
    /// for its leader every `health_check_interval`; the primary is then the node that Patroni
    /// names leader *and* that says it is not in recovery (none while they disagree).
    pub fn spawn_with_patroni(
        nodes: Vec<Arc<str>>,
        login: BackendLogin,
        config: HealthConfig,
        patroni: Vec<PatroniUrl>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Health {
        let probes = nodes
            .iter()
            .map(|addr| Monitor::new(addr.clone(), login.clone(), config.timeout()))
            .collect();
        Health::start(nodes, probes, &config, patroni, shutdown)
    }

    /// [`spawn`](Self::spawn) with any probe, so the scheduling can be tested without a server.
    #[cfg(test)]
    pub(crate) fn spawn_with<P: Probe>(
        nodes: Vec<Arc<str>>,
        probes: Vec<P>,
        config: &HealthConfig,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Health {
        Health::start(nodes, probes, config, Vec::new(), shutdown)
    }

    fn start<P: Probe>(
        nodes: Vec<Arc<str>>,
        probes: Vec<P>,
        config: &HealthConfig,
        patroni: Vec<PatroniUrl>,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Health {
        let mut topology = Topology::new(&nodes, config.fall, config.rise, Instant::now());
        if !patroni.is_empty() {
            topology = topology.with_patroni();
        }
        let initial = Arc::new(topology.view());
        let view = Arc::new(ArcSwap::new(initial.clone()));
        let (changes_tx, changes) = watch::channel(initial);
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();

        // Each checker has at most one result in flight, so this never makes one wait long.
        let (results_tx, results_rx) = mpsc::channel(nodes.len() + 1);
        for (node, (addr, probe)) in nodes.iter().zip(probes).enumerate() {
            tasks.spawn(run_checker(
                node,
                addr.clone(),
                probe,
                config.interval(),
                config.timeout(),
                results_tx.clone(),
                cancel.clone(),
            ));
        }
        if !patroni.is_empty() {
            tasks.spawn(run_patroni(
                patroni,
                config.interval(),
                config.timeout(),
                results_tx.clone(),
                cancel.clone(),
            ));
        }
        drop(results_tx);
        let publisher = Publisher {
            view: view.clone(),
            changes: changes_tx,
        };
        tasks.spawn(run_aggregator(topology, results_rx, publisher));
        let stop = cancel.clone();
        tasks.spawn(async move {
            tokio::select! {
                _ = shutdown => stop.cancel(),
                _ = stop.cancelled() => {}
            }
        });
        tasks.close();
        Health {
            view,
            changes,
            cancel,
            tasks,
        }
    }

    /// The latest snapshot; lock-free, cheap enough to call per transaction.
    pub fn view(&self) -> Arc<TopologyView> {
        self.view.load_full()
    }

    /// A receiver notified at each topology change (roles, up/down, fencing, primary) from now
    /// on; its value is always the newest view. It reports an error once checking has stopped.
    pub fn subscribe(&self) -> watch::Receiver<Arc<TopologyView>> {
        let mut receiver = self.changes.clone();
        receiver.mark_unchanged();
        receiver
    }

    /// Resolves at the next topology change after this call (or when checking stops). Call it
    /// *before* inspecting [`view`](Self::view), then await it, and no change is missed.
    pub fn changed(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut receiver = self.subscribe();
        async move {
            // An error means checking stopped: nothing more will change, so waiting is over.
            let _ = receiver.changed().await;
        }
    }

    /// The primary's index, waiting for one to appear if there is none; `None` when checking
    /// stopped first. Callers bound the wait with their own timeout.
    pub async fn wait_for_primary(&self) -> Option<usize> {
        let mut receiver = self.subscribe();
        let view = receiver.wait_for(|view| view.primary().is_some()).await.ok()?;
        view.primary()
    }

    /// Stops checking and waits until every task has finished and closed its connection.
    pub async fn stop(&self) {
        self.cancel.cancel();
        self.tasks.wait().await;
    }
}

impl Drop for Health {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
