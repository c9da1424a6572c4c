//! SHOW CONFIG: every scalar setting with its default and whether a reload can change it;
//! secrets (user passwords) are never part of it.

use super::{s, Table, TEXT};
use crate::app::Shared;
use crate::config::Config;

/// SHOW CONFIG: every scalar setting; secrets (user passwords) are never part of it.
pub(super) fn config(shared: &Shared) -> Table {
    let mut t = Table::new(&[
        ("key", TEXT),
        ("value", TEXT),
        ("default", TEXT),
        ("changeable", TEXT),
    ]);
    for (key, value, default, changeable) in rows(&shared.snapshot().config) {
        t.push(vec![
            s(key),
            s(value),
            s(default),
            s(if changeable { "yes" } else { "no" }),
        ]);
    }
    t
}

/// (key, value, default, reloadable) for every scalar setting of `c`.
fn rows(c: &Config) -> Vec<(&'static str, String, String, bool)> {
    let d = Config::default();
    let dur = |v: &crate::config::ConfigDuration| format!("{}ms", v.0.as_millis());
    let list = |v: &[String]| v.join(",");
    let mut rows: Vec<(&'static str, String, String, bool)> = vec![
        (
            "listen",
            c.proxy.listen.to_string(),
            d.proxy.listen.to_string(),
            false,
        ),
        (
            "runtime",
            c.proxy.runtime.as_str().into(),
            d.proxy.runtime.as_str().into(),
            false,
        ),
        (
            "workers",
            c.proxy.workers.to_string(),
            d.proxy.workers.to_string(),
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
    rows.extend(listeners_and_limits(c, &d));
    rows
}

/// The listener, keepalive, timeout and limit keys (PgBouncer's names).
fn listeners_and_limits(c: &Config, d: &Config) -> Vec<(&'static str, String, String, bool)> {
    let dur = |v: &crate::config::ConfigDuration| format!("{}ms", v.0.as_millis());
    let socket_dir = |c: &Config| {
        (c.proxy.unix_socket_dir.as_ref())
            .map(|p| p.display().to_string())
            .unwrap_or_default()
    };
    let (p, dp, pool, dpool) = (&c.proxy, &d.proxy, &c.pool, &d.pool);
    vec![
        ("unix_socket_dir", socket_dir(c), socket_dir(d), false),
        (
            "unix_socket_mode",
            p.unix_socket_mode.to_string(),
            dp.unix_socket_mode.to_string(),
            false,
        ),
        (
            "tcp_keepalive",
            p.tcp_keepalive.to_string(),
            dp.tcp_keepalive.to_string(),
            true,
        ),
        ("tcp_keepidle", dur(&p.tcp_keepidle), dur(&dp.tcp_keepidle), true),
        (
            "tcp_keepintvl",
            dur(&p.tcp_keepintvl),
            dur(&dp.tcp_keepintvl),
            true,
        ),
        (
            "tcp_keepcnt",
            p.tcp_keepcnt.to_string(),
            dp.tcp_keepcnt.to_string(),
            true,
        ),
        (
            "tcp_user_timeout",
            dur(&p.tcp_user_timeout),
            dur(&dp.tcp_user_timeout),
            true,
        ),
        (
            "query_timeout",
            dur(&p.query_timeout),
            dur(&dp.query_timeout),
            true,
        ),
        (
            "transaction_timeout",
            dur(&p.transaction_timeout),
            dur(&dp.transaction_timeout),
            true,
        ),
        (
            "max_db_connections",
            pool.max_db_connections.to_string(),
            dpool.max_db_connections.to_string(),
            true,
        ),
        (
            "max_user_connections",
            pool.max_user_connections.to_string(),
            dpool.max_user_connections.to_string(),
            true,
        ),
        (
            "server_login_retry",
            dur(&pool.server_login_retry),
            dur(&dpool.server_login_retry),
            true,
        ),
        (
            "autodb_idle_timeout",
            dur(&pool.autodb_idle_timeout),
            dur(&dpool.autodb_idle_timeout),
            true,
        ),
        (
            "max_auto_databases",
            pool.max_auto_databases.to_string(),
            dpool.max_auto_databases.to_string(),
            true,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listeners_keepalive_timeouts_and_limits_are_listed() {
        let config = Config::from_toml(
            "[proxy]\nlisten = [\"127.0.0.1:6432\", \"[::1]:6432\"]\n\
             unix_socket_dir = \"/run/tp\"\nunix_socket_mode = \"0770\"\n\
             tcp_keepidle = \"30s\"\ntcp_keepcnt = 3\ntcp_user_timeout = \"2500ms\"\n\
             query_timeout = \"1m\"\ntransaction_timeout = \"5m\"\n\
             [pool]\nmax_db_connections = 20\nmax_user_connections = 7\n\
             server_login_retry = \"5s\"\n\
             [[nodes]]\nhost = \"h\"\n[databases.d]\n",
        )
        .unwrap();
        let rows = rows(&config);
        let row = |key: &str| {
            let (_, value, default, changeable) =
                (rows.iter().find(|r| r.0 == key)).unwrap_or_else(|| panic!("{key} is not in SHOW CONFIG"));
            (value.as_str(), default.as_str(), *changeable)
        };
        assert_eq!(row("listen").0, "127.0.0.1:6432,[::1]:6432");
        assert_eq!(row("unix_socket_dir"), ("/run/tp", "", false));
        assert_eq!(row("unix_socket_mode"), ("0770", "0777", false));
        assert_eq!(row("tcp_keepalive"), ("true", "true", true));
        assert_eq!(row("tcp_keepidle"), ("30000ms", "0ms", true));
        assert_eq!(row("tcp_keepintvl"), ("0ms", "0ms", true));
        assert_eq!(row("tcp_keepcnt"), ("3", "0", true));
        assert_eq!(row("tcp_user_timeout"), ("2500ms", "0ms", true));
        assert_eq!(row("query_timeout"), ("60000ms", "0ms", true));
        assert_eq!(row("transaction_timeout"), ("300000ms", "0ms", true));
        assert_eq!(row("max_db_connections"), ("20", "0", true));
        assert_eq!(row("max_user_connections"), ("7", "0", true));
        assert_eq!(row("server_login_retry"), ("5000ms", "15000ms", true));
        assert_eq!(row("autodb_idle_timeout"), ("3600000ms", "3600000ms", true));
        assert_eq!(row("max_auto_databases"), ("100", "100", true));
        // Every key SHOW CONFIG calls changeable is one SET takes.
        for (key, value, _, changeable) in &rows {
            let mut copy = config.clone();
            let set = crate::admin::actions::set(&mut copy, key, value);
            if *changeable && !matches!(*key, "admin_users" | "stats_users") {
                assert!(set.is_ok(), "SET {key} = {value:?}: {set:?}");
            } else if !changeable {
                assert!(set.is_err(), "SET {key} is accepted but SHOW CONFIG says no");
            }
        }
    }
}
