//! Defaults: absent keys take the documented values; per-user and per-database overrides.

use super::*;
use std::time::Duration;

#[test]
fn absent_keys_take_the_documented_defaults() {
    let config = Parts::default().parse().expect("valid");
    let proxy = &config.proxy;
    assert_eq!(proxy.listen, "127.0.0.1:6432".parse().unwrap());
    assert_eq!(proxy.pool_mode, PoolMode::Transaction);
    assert_eq!(proxy.max_client_conn, 10_000);
    assert_eq!(proxy.client_login_timeout.0, Duration::from_secs(60));
    assert_eq!(proxy.client_idle_timeout.non_zero(), None);
    assert_eq!(proxy.idle_transaction_timeout.non_zero(), None);
    assert_eq!(proxy.max_message_size, ByteSize(64 << 20));

    let pool = &config.pool;
    assert_eq!(
        (pool.default_pool_size, pool.min_pool_size, pool.reserve_pool_size),
        (20, 0, 0)
    );
    let secs = |d: ConfigDuration| d.0.as_secs();
    assert_eq!(secs(pool.reserve_pool_timeout), 5);
    assert_eq!(secs(pool.query_wait_timeout), 120);
    assert_eq!(secs(pool.server_connect_timeout), 15);
    assert_eq!(secs(pool.server_idle_timeout), 600);
    assert_eq!(secs(pool.server_lifetime), 3600);
    assert_eq!(secs(pool.server_check_delay), 30);
    assert_eq!(pool.server_reset_query, "DISCARD ALL");
    assert_eq!(pool.server_check_query, "SELECT 1");
    assert_eq!(pool.max_prepared_statements, 500);

    assert_eq!(config.nodes[0].port, 5432);
    assert_eq!(config.databases["app"], DatabaseConfig::default());
    let user = &config.users[0];
    assert_eq!(user.method(), AuthMethod::ScramSha256);
    assert_eq!(
        (&user.backend_user, &user.backend_password, user.pool_size),
        (&None, &None, None)
    );
    assert_eq!(config.pool_mode_for("app"), PoolMode::Transaction);
    assert_eq!(config.pool_size_for("app", user), 20);
}

#[test]
fn pool_size_and_mode_overrides_apply_user_then_database_then_default() {
    let mut parts = Parts::with(Pool, "default_pool_size = 7");
    parts.0[Databases as usize] =
        "[databases.app]\npool_size = 5\npool_mode = \"session\"\n[databases.other]\n".into();
    parts.0[Users as usize] = "[[users]]\nname = \"a\"\npassword = \"p\"\npool_size = 2\n\
        [[users]]\nname = \"b\"\npassword = \"p\"\n"
        .into();
    let config = parts.parse().expect("valid");
    let (a, b) = (config.user("a").unwrap(), config.user("b").unwrap());
    assert_eq!(config.pool_size_for("app", a), 2);
    assert_eq!(config.pool_size_for("app", b), 5);
    assert_eq!(config.pool_size_for("other", b), 7);
    assert_eq!(config.pool_mode_for("app"), PoolMode::Session);
    assert_eq!(config.pool_mode_for("other"), PoolMode::Transaction);
    assert!(config.user("c").is_none());
}
