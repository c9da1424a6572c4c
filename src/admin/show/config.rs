//! SHOW CONFIG: every scalar setting with its default and whether a reload can change it;
//! secrets (user passwords) are never part of it.

use super::{s, Table, TEXT};
use crate::app::Shared;

/// SHOW CONFIG: every scalar setting; secrets (user passwords) are never part of it.
pub(super) fn config(shared: &Shared) -> Table {
    let snapshot = shared.snapshot();
    let c = &snapshot.config;
    let d = crate::config::Config::default();
    let dur = |v: &crate::config::ConfigDuration| format!("{}ms", v.0.as_millis());
    let list = |v: &[String]| v.join(",");
    let rows: Vec<(&str, String, String, bool)> = vec![
        (
            "listen",
            c.proxy.listen.to_string(),
            d.proxy.listen.to_string(),
            false,
        ),
        (
            "pool_mode",
            c.proxy.pool_mode.as_str().into(),
            d.proxy.pool_mode.as_str().into(),
            true,
        ),
        (
            "max_client_conn",
            c.proxy.max_client_conn.to_string(),
            d.proxy.max_client_conn.to_string(),
            true,
        ),
        (
            "client_login_timeout",
            dur(&c.proxy.client_login_timeout),
            dur(&d.proxy.client_login_timeout),
            true,
        ),
        (
            "client_idle_timeout",
            dur(&c.proxy.client_idle_timeout),
            dur(&d.proxy.client_idle_timeout),
            true,
        ),
        (
            "idle_transaction_timeout",
            dur(&c.proxy.idle_transaction_timeout),
            dur(&d.proxy.idle_transaction_timeout),
            true,
        ),
        (
            "max_message_size",
            c.proxy.max_message_size.0.to_string(),
            d.proxy.max_message_size.0.to_string(),
            true,
        ),
        (
            "shutdown_timeout",
            dur(&c.proxy.shutdown_timeout),
            dur(&d.proxy.shutdown_timeout),
            true,
        ),
        (
            "sigterm_timeout",
            dur(&c.proxy.sigterm_timeout),
            dur(&d.proxy.sigterm_timeout),
            true,
        ),
        (
            "show_legacy_columns",
            c.proxy.show_legacy_columns.to_string(),
            d.proxy.show_legacy_columns.to_string(),
            true,
        ),
        (
            "stats_period",
            dur(&c.proxy.stats_period),
            dur(&d.proxy.stats_period),
            true,
        ),
        ("admin_users", list(&c.proxy.admin_users), String::new(), true),
        ("stats_users", list(&c.proxy.stats_users), String::new(), true),
        (
            "default_pool_size",
            c.pool.default_pool_size.to_string(),
            d.pool.default_pool_size.to_string(),
            true,
        ),
        (
            "min_pool_size",
            c.pool.min_pool_size.to_string(),
            d.pool.min_pool_size.to_string(),
            true,
        ),
        (
            "reserve_pool_size",
            c.pool.reserve_pool_size.to_string(),
            d.pool.reserve_pool_size.to_string(),
            true,
        ),
        (
            "reserve_pool_timeout",
            dur(&c.pool.reserve_pool_timeout),
            dur(&d.pool.reserve_pool_timeout),
            true,
        ),
        (
            "query_wait_timeout",
            dur(&c.pool.query_wait_timeout),
            dur(&d.pool.query_wait_timeout),
            true,
        ),
        (
            "server_connect_timeout",
            dur(&c.pool.server_connect_timeout),
            dur(&d.pool.server_connect_timeout),
            true,
        ),
        (
            "server_idle_timeout",
            dur(&c.pool.server_idle_timeout),
            dur(&d.pool.server_idle_timeout),
            true,
        ),
        (
            "server_lifetime",
            dur(&c.pool.server_lifetime),
            dur(&d.pool.server_lifetime),
            true,
        ),
        (
            "server_reset_query",
            c.pool.server_reset_query.clone(),
            d.pool.server_reset_query.clone(),
            true,
        ),
        (
            "server_check_query",
            c.pool.server_check_query.clone(),
            d.pool.server_check_query.clone(),
            true,
        ),
        (
            "server_check_delay",
            dur(&c.pool.server_check_delay),
            dur(&d.pool.server_check_delay),
            true,
        ),
        (
            "max_prepared_statements",
            c.pool.max_prepared_statements.to_string(),
            d.pool.max_prepared_statements.to_string(),
            true,
        ),
        ("max_lag", dur(&c.routing.max_lag), dur(&d.routing.max_lag), true),
        (
            "max_lag_bytes",
            c.routing.max_lag_bytes.0.to_string(),
            d.routing.max_lag_bytes.0.to_string(),
            true,
        ),
        (
            "failover_timeout",
            dur(&c.routing.failover_timeout),
            dur(&d.routing.failover_timeout),
            true,
        ),
        (
            "read_your_writes",
            c.routing.read_your_writes.to_string(),
            d.routing.read_your_writes.to_string(),
            true,
        ),
        (
            "ryw_wait",
            dur(&c.routing.ryw_wait),
            dur(&d.routing.ryw_wait),
            true,
        ),
        (
            "metrics_listen",
            c.metrics.listen.map(|a| a.to_string()).unwrap_or_default(),
            String::new(),
            false,
        ),
    ];
    let mut t = Table::new(&[
        ("key", TEXT),
        ("value", TEXT),
        ("default", TEXT),
        ("changeable", TEXT),
    ]);
    for (key, value, default, changeable) in rows {
        t.push(vec![
            s(key),
            s(value),
            s(default),
            s(if changeable { "yes" } else { "no" }),
        ]);
    }
    t
}
