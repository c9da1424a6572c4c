//! What `/readyz` answers: whether this tidepool should get new clients, and per cluster.
//!
//! Why not "every cluster has a primary": a load balancer or Kubernetes takes an unready
//! tidepool out for *all* of its databases, and every replica of tidepool sees the same
//! clusters, so one cluster failing over (or a cluster no database uses yet) would take every
//! cluster's clients offline. So the plain `/readyz` is ready while at least one cluster that
//! serves a database has its primary; with one cluster that is the old rule. A probe that cares
//! about one cluster asks `/readyz?cluster=NAME`. See docs/deploy.md.

use crate::app::Shared;
use std::collections::BTreeSet;
use std::time::Duration;
use tokio::net::TcpStream;

/// One cluster's state as readiness sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterState {
    /// Writes can be served: a primary is known (or the only node accepts connections).
    Primary,
    /// Checked nodes and none of them is a primary now.
    NoPrimary,
    /// The cluster's only node does not accept connections.
    Unreachable,
}

impl ClusterState {
    fn why(self) -> &'static str {
        match self {
            ClusterState::Primary => "primary known",
            ClusterState::NoPrimary => "no primary known",
            ClusterState::Unreachable => "the node does not accept connections",
        }
    }
}

/// What was asked: the whole proxy, or one cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Question<'a> {
    Proxy,
    Cluster(&'a str),
}

/// The answer: ready or not, and a text body (first line the verdict).
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    Ready(String),
    NotReady(String),
    UnknownCluster(String),
}

/// The decision, without I/O. `clusters` are those that serve a database, with their state.
pub fn decide(shutting_down: bool, clusters: &[(String, ClusterState)], question: Question<'_>) -> Answer {
    if shutting_down {
        return Answer::NotReady("shutting down\n".into());
    }
    match question {
        Question::Cluster(name) => match clusters.iter().find(|(n, _)| n == name) {
            Some((_, ClusterState::Primary)) => Answer::Ready("ready\n".into()),
            Some((_, state)) => Answer::NotReady(format!("{}\n", state.why())),
            None => Answer::UnknownCluster(format!("no cluster {name:?} serves a database\n")),
        },
        Question::Proxy => {
            let down: Vec<_> = (clusters.iter())
                .filter(|(_, state)| *state != ClusterState::Primary)
                .collect();
            // A single cluster: its reason alone, as before clusters existed.
            if let [(_, state)] = clusters {
                if *state != ClusterState::Primary {
                    return Answer::NotReady(format!("{}\n", state.why()));
                }
            }
            let detail: String = (down.iter())
                .map(|(name, state)| format!("cluster {name}: {}\n", state.why()))
                .collect();
            if clusters.is_empty() || down.len() < clusters.len() {
                Answer::Ready(format!("ready\n{detail}"))
            } else {
                Answer::NotReady(format!("no cluster has a primary\n{detail}"))
            }
        }
    }
}

/// The `/readyz` answer for `shared` now. A single-node cluster (no checker) is probed with a
/// TCP connect bounded by one second.
pub async fn check(shared: &Shared, question: Question<'_>) -> Answer {
    let shutting_down = shared.shutdown.is_triggered();
    let snapshot = shared.snapshot();
    let config = &snapshot.config;
    // Clusters some database entry (`*` included) points to; a cluster defined for later
    // does not count.
    let served: BTreeSet<&str> = (config.databases.keys())
        .filter_map(|db| config.cluster_of(db))
        .collect();
    let mut clusters = Vec::new();
    for (name, view) in snapshot.views() {
        if !served.contains(name) || question.is_other_than(name) || shutting_down {
            continue;
        }
        let state = match shared.health_of(name) {
            Some(health) if health.view().primary().is_some() => ClusterState::Primary,
            Some(_) => ClusterState::NoPrimary,
            None => match view.config.nodes.first() {
                Some(node) => {
                    let connect = TcpStream::connect(node.address());
                    match tokio::time::timeout(Duration::from_secs(1), connect).await {
                        Ok(Ok(_)) => ClusterState::Primary,
                        _ => ClusterState::Unreachable,
                    }
                }
                None => continue,
            },
        };
        clusters.push((name.to_string(), state));
    }
    decide(shutting_down, &clusters, question)
}

impl Question<'_> {
    fn is_other_than(&self, name: &str) -> bool {
        matches!(self, Question::Cluster(asked) if *asked != name)
    }
}

/// `cluster=NAME` from a query string (`None`: the whole proxy).
pub fn question(query: Option<&str>) -> Question<'_> {
    (query.unwrap_or_default().split('&'))
        .find_map(|pair| pair.strip_prefix("cluster="))
        .map_or(Question::Proxy, Question::Cluster)
}

#[cfg(test)]
mod tests {
    use super::ClusterState::*;
    use super::*;

    fn states(list: &[(&str, ClusterState)]) -> Vec<(String, ClusterState)> {
        list.iter().map(|(n, s)| (n.to_string(), *s)).collect()
    }

    #[test]
    fn one_cluster_keeps_the_single_cluster_rule() {
        let up = states(&[("default", Primary)]);
        assert_eq!(
            decide(false, &up, Question::Proxy),
            Answer::Ready("ready\n".into())
        );
        let down = states(&[("default", NoPrimary)]);
        assert_eq!(
            decide(false, &down, Question::Proxy),
            Answer::NotReady("no primary known\n".into())
        );
        let gone = states(&[("default", Unreachable)]);
        assert_eq!(
            decide(false, &gone, Question::Proxy),
            Answer::NotReady("the node does not accept connections\n".into())
        );
        assert_eq!(
            decide(true, &up, Question::Proxy),
            Answer::NotReady("shutting down\n".into())
        );
    }

    #[test]
    fn several_clusters_are_ready_while_one_has_a_primary() {
        let mixed = states(&[("a", Primary), ("b", NoPrimary)]);
        assert_eq!(
            decide(false, &mixed, Question::Proxy),
            Answer::Ready("ready\ncluster b: no primary known\n".into())
        );
        let none = states(&[("a", Unreachable), ("b", NoPrimary)]);
        assert!(matches!(
            decide(false, &none, Question::Proxy),
            Answer::NotReady(_)
        ));
        assert_eq!(
            decide(false, &[], Question::Proxy),
            Answer::Ready("ready\n".into())
        );
    }

    #[test]
    fn one_cluster_can_be_asked_alone() {
        let mixed = states(&[("a", Primary), ("b", NoPrimary)]);
        assert_eq!(
            decide(false, &mixed, Question::Cluster("a")),
            Answer::Ready("ready\n".into())
        );
        assert!(matches!(
            decide(false, &mixed, Question::Cluster("b")),
            Answer::NotReady(_)
        ));
        assert!(matches!(
            decide(false, &mixed, Question::Cluster("c")),
            Answer::UnknownCluster(_)
        ));
        assert!(matches!(
            decide(true, &mixed, Question::Cluster("a")),
            Answer::NotReady(_)
        ));
    }

    #[test]
    fn the_query_names_the_cluster() {
        assert_eq!(question(None), Question::Proxy);
        assert_eq!(question(Some("x=1")), Question::Proxy);
        assert_eq!(question(Some("x=1&cluster=b")), Question::Cluster("b"));
    }
}
