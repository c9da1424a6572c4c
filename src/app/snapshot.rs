//! The configuration snapshot: an immutable view of the config and what is derived from it
//! (user directory, classifier, TLS, Patroni access), with one view per cluster.

use super::AppError;
use crate::auth::UserDirectory;
use crate::config::Config;
use crate::router::Classifier;
use crate::tls::{BackendTls, ClientTls};
use std::collections::BTreeMap;
use std::sync::Arc;

/// An immutable view of the configuration and what is derived from it; swapped whole on reload.
///
/// The snapshot of the whole config also holds one *view* per cluster: the same snapshot with
/// `config.nodes`, `config.health` and `config.routing` (and the weights and classifier derived
/// from them) being that cluster's. Sessions hold the view of their database's cluster.
pub struct Snapshot {
    pub config: Config,
    pub users: Arc<UserDirectory>,
    /// Read/write classification for this config's function lists (cached by statement text).
    pub classifier: Arc<Classifier>,
    /// `[[nodes]] weight`, in node order.
    pub weights: Vec<u32>,
    /// TLS toward clients (`None` = client_tls_mode disable), certificates read at build time.
    pub client_tls: Option<Arc<ClientTls>>,
    /// TLS toward PostgreSQL.
    pub backend_tls: BackendTls,
    /// The cluster whose nodes `config.nodes` are (`default` for the whole config's snapshot).
    pub cluster: Arc<str>,
    /// Per cluster name, its view (empty in a view).
    views: BTreeMap<String, Arc<Snapshot>>,
    /// How Patroni's REST API is reached (this `config.routing`'s `patroni_*`), certificates
    /// read at build time.
    pub patroni: Arc<crate::health::PatroniAccess>,
}

impl Snapshot {
    /// The view of the cluster serving `database`; `None` if no database entry serves it.
    pub fn view_for(&self, database: &str) -> Option<Arc<Snapshot>> {
        self.views.get(self.config.cluster_of(database)?).cloned()
    }

    /// Every cluster's view, by name.
    pub fn views(&self) -> impl Iterator<Item = (&str, &Arc<Snapshot>)> {
        self.views.iter().map(|(name, view)| (name.as_str(), view))
    }

    /// The nodes of the cluster serving `database`, from a view or the whole snapshot.
    pub fn nodes_for(&self, database: &str) -> Option<&[crate::config::NodeConfig]> {
        let cluster = self.config.cluster_of(database)?;
        if *self.cluster == *cluster {
            return Some(&self.config.nodes);
        }
        self.views.get(cluster).map(|view| view.config.nodes.as_slice())
    }
}

/// Validates what the config derives (the classifier) and prepares user secrets. Slow (key
/// derivation): call it on a blocking thread.
pub(crate) fn build_snapshot(config: Config) -> Result<Snapshot, AppError> {
    let backend_tls = BackendTls::build(&config.tls)?;
    let users = Arc::new(UserDirectory::build(&config, &backend_tls)?);
    let classifier =
        Arc::new(Classifier::new(&config.routing.classifier()).map_err(|e| AppError::Users(e.to_string()))?);
    let client_tls = ClientTls::build(&config.tls)?;
    let patroni = Arc::new(crate::health::PatroniAccess::build(&config.routing)?);
    let mut views = BTreeMap::new();
    for name in config.cluster_names() {
        let Some(view) = config.cluster_view(name) else {
            continue;
        };
        // Clusters without routing of their own share the whole config's classifier (and cache).
        let classifier = if view.routing.classifier() == config.routing.classifier() {
            classifier.clone()
        } else {
            Arc::new(Classifier::new(&view.routing.classifier()).map_err(|e| AppError::Users(e.to_string()))?)
        };
        // Likewise Patroni access: a cluster's own `[routing]` reads its own certificates.
        let patroni = if view.routing.patroni_access() == config.routing.patroni_access() {
            patroni.clone()
        } else {
            Arc::new(crate::health::PatroniAccess::build(&view.routing)?)
        };
        let view = Snapshot {
            patroni,
            weights: view.nodes.iter().map(|n| n.weight).collect(),
            config: view,
            users: users.clone(),
            classifier,
            client_tls: client_tls.clone(),
            backend_tls: backend_tls.clone(),
            cluster: Arc::from(name),
            views: BTreeMap::new(),
        };
        views.insert(name.to_string(), Arc::new(view));
    }
    Ok(Snapshot {
        weights: config.nodes.iter().map(|n| n.weight).collect(),
        patroni,
        config,
        users,
        classifier,
        client_tls,
        backend_tls,
        cluster: Arc::from(crate::config::DEFAULT_CLUSTER),
        views,
    })
}
