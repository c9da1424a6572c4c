//! Prometheus metrics: the families, the handles the data path records into, and the scrape.
//!
//! Design: everything recorded per request or per transaction is either a plain relaxed atomic
//! (pool counters in `PoolStats`, [`ErrorClasses`], the routing counters) or a histogram handle
//! resolved once (per pool when the pool is created, per role at startup), so recording costs a
//! few atomic operations and never a lock or an allocation. A scrape (`render`) reads those
//! atomics and the registries and brings the exported families up to date under its own lock,
//! which no data-path task ever takes: a slow scrape cannot stall traffic.

mod errors;
pub mod http;
mod latency;
pub mod readiness;
mod scrape;

pub use scrape::render;

pub use errors::{class_of, ErrorClasses};
pub use latency::Latency;
use latency::{bounds_in_nanos, LatencyVec};

use prometheus::{GaugeVec, Registry};
use prometheus::{IntCounter, IntCounterVec, IntGaugeVec, Opts};
use std::sync::{Arc, Mutex};

/// Buckets for the wait for a backend (seconds): mostly zero, sometimes long.
static WAIT_BUCKETS: [u64; 16] = bounds_in_nanos([
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
]);
/// Buckets for query duration (seconds).
static QUERY_BUCKETS: [u64; 17] = bounds_in_nanos([
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0,
]);

/// The role of the node serving a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Primary = 0,
    Standby = 1,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Standby => "standby",
        }
    }
}

/// Handles for one role (route), resolved at startup.
pub struct RoleMetrics {
    pub transactions: IntCounter,
    pub queries: IntCounter,
    pub wait: Arc<Latency>,
    pub query_duration: Arc<Latency>,
}

/// Handles for one pool, resolved when the pool is created.
#[derive(Clone)]
pub struct PoolMetrics {
    pub wait: Arc<Latency>,
    pub query_duration: Arc<Latency>,
}

/// Every metric family of a proxy; one per `Shared` (no global registry, so tests can run
/// several proxies in one process).
pub struct Metrics {
    registry: Registry,
    roles: [RoleMetrics; 2],
    pub errors: ErrorClasses,
    pool_wait: LatencyVec,
    pool_query: LatencyVec,
    families: scrape::Families,
    /// Serialises scrapes (they update the exported families); never taken by the data path.
    scrape_lock: Mutex<()>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let role_counter = |name: &str, help: &str| {
            let vec = IntCounterVec::new(Opts::new(name, help), &["route"]).expect("valid metric");
            registry.register(Box::new(vec.clone())).expect("unique metric");
            vec
        };
        let transactions = role_counter(
            "tidepool_transactions_total",
            "Transactions completed, by the role of the node that served them.",
        );
        let queries = role_counter(
            "tidepool_queries_total",
            "Requests (Query, Sync, FunctionCall) answered, by the role of the node that served them.",
        );
        let histogram = |name: &str, help: &str, labels: &[&str], buckets: &'static [u64]| {
            let vec = LatencyVec::new(name, help, labels, buckets);
            registry.register(Box::new(vec.clone())).expect("unique metric");
            vec
        };
        let role_wait = histogram(
            "tidepool_role_wait_seconds",
            "Time clients waited for a backend, by the role of its node.",
            &["role"],
            &WAIT_BUCKETS,
        );
        let role_query = histogram(
            "tidepool_role_query_duration_seconds",
            "Time from a request reaching a backend to its last answer, by the role of its node.",
            &["role"],
            &QUERY_BUCKETS,
        );
        let pool_labels = &["database", "user", "node", "cluster"];
        let pool_wait = histogram(
            "tidepool_pool_wait_seconds",
            "Time clients waited for a backend, per pool.",
            pool_labels,
            &WAIT_BUCKETS,
        );
        let pool_query = histogram(
            "tidepool_pool_query_duration_seconds",
            "Time from a request reaching a backend to its last answer, per pool.",
            pool_labels,
            &QUERY_BUCKETS,
        );
        let role = |role: Role| RoleMetrics {
            transactions: transactions.with_label_values(&[role.as_str()]),
            queries: queries.with_label_values(&[role.as_str()]),
            wait: role_wait.with_label_values(&[role.as_str()]),
            query_duration: role_query.with_label_values(&[role.as_str()]),
        };
        let roles = [role(Role::Primary), role(Role::Standby)];
        let families = scrape::Families::register(&registry);
        Metrics {
            registry,
            roles,
            errors: ErrorClasses::default(),
            pool_wait,
            pool_query,
            families,
            scrape_lock: Mutex::new(()),
        }
    }

    /// The handles of a role.
    pub fn role(&self, role: Role) -> &RoleMetrics {
        &self.roles[role as usize]
    }

    /// Resolves a new pool's handles (once, at pool creation).
    pub fn pool(&self, database: &str, user: &str, node: &str, cluster: &str) -> PoolMetrics {
        let labels = [database, user, node, cluster];
        PoolMetrics {
            wait: self.pool_wait.with_label_values(&labels),
            query_duration: self.pool_query.with_label_values(&labels),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Families set at scrape time from gauges and counters kept elsewhere.
pub(crate) fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let vec = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry.register(Box::new(vec.clone())).expect("unique metric");
    vec
}

pub(crate) fn float_gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> GaugeVec {
    let vec = GaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry.register(Box::new(vec.clone())).expect("unique metric");
    vec
}

pub(crate) fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let vec = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry.register(Box::new(vec.clone())).expect("unique metric");
    vec
}

/// Brings a scrape-time counter up to `value` (the source only grows).
pub(crate) fn catch_up(counter: &IntCounter, value: u64) {
    let current = counter.get();
    if value > current {
        counter.inc_by(value - current);
    }
}
