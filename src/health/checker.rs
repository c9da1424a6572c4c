//! The two kinds of task: a checker per node on a fixed interval, and the aggregator that turns
//! their results into the published topology.

use super::patroni::{self, PatroniUrl};
use super::probe::{CheckError, Probe};
use super::status::TopologyView;
use super::topology::{Observation, Topology, Update};
use arc_swap::ArcSwap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

/// Ticks every `interval`; a tick that comes late delays the next instead of bunching up.
fn ticker(interval: Duration) -> tokio::time::Interval {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ticks
}

/// Waits for the next tick; false once cancelled.
async fn next_tick(ticks: &mut tokio::time::Interval, cancel: &CancellationToken) -> bool {
    tokio::select! {
        biased;
        _ = cancel.cancelled() => false,
        _ = ticks.tick() => true,
    }
}

/// Checks one node every `interval` until cancelled or the aggregator is gone. Checks never
/// overlap: one that runs long delays the next instead of piling up.
pub(crate) async fn run_checker<P: Probe>(
    node: usize,
    addr: Arc<str>,
    mut probe: P,
    interval: Duration,
    timeout: Duration,
    results: mpsc::Sender<Update>,
    cancel: CancellationToken,
) {
    let mut ticks = ticker(interval);
    while next_tick(&mut ticks, &cancel).await {
        let outcome = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            outcome = tokio::time::timeout(timeout, probe.check()) => outcome,
        };
        let outcome = outcome.unwrap_or_else(|_| {
            Err(CheckError::Timeout {
                addr: addr.to_string(),
                after: timeout,
            })
        });
        let observation = Observation {
            node,
            at: Instant::now(),
            outcome,
        };
        if results.send(Update::Node(observation)).await.is_err() {
            break;
        }
    }
    probe.close().await;
}

/// Asks Patroni for its leader every `interval`, trying each URL in order until one answers
/// (any member's REST API knows the whole cluster); each try is bounded by `timeout`.
pub(crate) async fn run_patroni(
    urls: Vec<PatroniUrl>,
    interval: Duration,
    timeout: Duration,
    results: mpsc::Sender<Update>,
    cancel: CancellationToken,
) {
    let mut ticks = ticker(interval);
    while next_tick(&mut ticks, &cancel).await {
        let ask = async {
            let mut outcome = Ok(None);
            for url in &urls {
                outcome = patroni::leader(url, timeout).await;
                if outcome.is_ok() {
                    break;
                }
            }
            outcome
        };
        let outcome = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            outcome = ask => outcome,
        };
        if results.send(Update::Patroni(outcome)).await.is_err() {
            break;
        }
    }
}

/// Where the aggregator publishes: the lock-free snapshot the balancer loads per transaction,
/// and the channel that wakes waiters when the topology (not mere lag) changes.
pub(crate) struct Publisher {
    pub view: Arc<ArcSwap<TopologyView>>,
    pub changes: watch::Sender<Arc<TopologyView>>,
}

impl Publisher {
    fn publish(&self, view: TopologyView) {
        let view = Arc::new(view);
        self.view.store(view.clone());
        // Receivers always see the newest view, but are only notified when it matters.
        self.changes.send_if_modified(|current| {
            let changed = !current.same_topology(&view);
            *current = view;
            changed
        });
    }
}

/// Applies observations in arrival order and publishes after each. Ends when every checker has
/// ended; dropping `publisher` then wakes all waiters.
pub(crate) async fn run_aggregator(
    mut topology: Topology,
    mut results: mpsc::Receiver<Update>,
    publisher: Publisher,
) {
    while let Some(update) = results.recv().await {
        topology.apply_update(update);
        publisher.publish(topology.view());
    }
}
