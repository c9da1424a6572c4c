//! Named clusters (`[clusters.NAME]`) and how a database name finds its cluster and entry,
//! the `*` database included.
//!
//! The legacy form (global `[[nodes]]`, `[health]`, `[routing]`) is the cluster called
//! [`DEFAULT_CLUSTER`]; a database without `cluster` belongs to it.

use super::{Config, DatabaseConfig, NodeConfig};
use crate::health::HealthConfig;
use crate::router::RoutingConfig;
use serde::Deserialize;

/// The cluster made of the global `[[nodes]]`, and the one a database without `cluster` uses.
pub const DEFAULT_CLUSTER: &str = "default";

/// The database entry that serves every name not configured explicitly.
pub const WILDCARD_DATABASE: &str = "*";

/// `[clusters.NAME]`: one primary and its standbys, checked and routed on their own.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// The cluster's servers, as `[[nodes]]` entries.
    pub nodes: Vec<NodeConfig>,
    /// Replaces the global `[health]` for this cluster's checkers (keys left out take their
    /// defaults, not the global values). Reloadable.
    #[serde(default)]
    pub health: Option<HealthConfig>,
    /// Replaces the global `[routing]` for this cluster's databases (keys left out take their
    /// defaults). Reloadable.
    #[serde(default)]
    pub routing: Option<RoutingConfig>,
}

impl Config {
    /// The names of every cluster: the default one (when `[[nodes]]` is given) and the named.
    pub fn cluster_names(&self) -> Vec<&str> {
        let legacy = (!self.nodes.is_empty()).then_some(DEFAULT_CLUSTER);
        legacy
            .into_iter()
            .chain(self.clusters.keys().map(String::as_str))
            .collect()
    }

    /// The nodes of cluster `name`.
    pub fn cluster_nodes(&self, name: &str) -> Option<&[NodeConfig]> {
        match self.clusters.get(name) {
            Some(cluster) => Some(&cluster.nodes),
            None if name == DEFAULT_CLUSTER && !self.nodes.is_empty() => Some(&self.nodes),
            None => None,
        }
    }

    /// The entry serving database `name`: its own table, else the `*` one.
    pub fn database(&self, name: &str) -> Option<&DatabaseConfig> {
        self.databases
            .get(name)
            .or_else(|| self.databases.get(WILDCARD_DATABASE))
    }

    /// Whether `name` is served by the `*` entry rather than a table of its own.
    pub fn is_auto_database(&self, name: &str) -> bool {
        !self.databases.contains_key(name) && self.databases.contains_key(WILDCARD_DATABASE)
    }

    /// The cluster serving database `name`, if the database is served at all.
    pub fn cluster_of(&self, name: &str) -> Option<&str> {
        let db = self.database(name)?;
        Some(db.cluster.as_deref().unwrap_or(DEFAULT_CLUSTER))
    }

    /// The name of the database on the server for client-visible `name`.
    pub fn server_dbname(&self, name: &str) -> Option<String> {
        let db = self.database(name)?;
        Some(db.dbname.clone().unwrap_or_else(|| name.to_string()))
    }

    /// This config as one cluster sees it: `nodes`, `health` and `routing` are the cluster's;
    /// everything else is shared. Sessions of the cluster's databases read this view, so code
    /// written for one set of nodes works per cluster unchanged.
    pub fn cluster_view(&self, name: &str) -> Option<Config> {
        let mut view = self.clone();
        match self.clusters.get(name) {
            Some(cluster) => {
                view.nodes = cluster.nodes.clone();
                view.health = cluster.health.clone().unwrap_or_else(|| self.health.clone());
                view.routing = cluster.routing.clone().unwrap_or_else(|| self.routing.clone());
            }
            None if name == DEFAULT_CLUSTER && !self.nodes.is_empty() => {}
            None => return None,
        }
        Some(view)
    }

    /// The database a cluster's health checkers log in to: the first configured database of
    /// the cluster (its server-side name), else `postgres`.
    pub fn health_dbname(&self, cluster: &str) -> String {
        self.databases
            .iter()
            .filter(|(name, _)| name.as_str() != WILDCARD_DATABASE)
            .find(|(name, _)| self.cluster_of(name) == Some(cluster))
            .map(|(name, db)| db.dbname.clone().unwrap_or_else(|| name.clone()))
            .unwrap_or_else(|| "postgres".into())
    }
}
