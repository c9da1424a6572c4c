//! The shipped examples parse: `pool.toml.example` (with every optional key switched on, and
//! every key documented), its clusters and hba blocks, and the README's authentication example.

use super::*;

const EXAMPLE: &str = include_str!("../../../pool.toml.example");

/// The example with its disabled optional keys (`#key = value` lines) switched on.
fn example_with_every_key() -> String {
    EXAMPLE
        .lines()
        .map(|line| match line.strip_prefix('#') {
            // Exclusive with users.auth_method, which this example switches on.
            Some(rest) if rest.starts_with("auth_hba_file") => line,
            Some(rest) if rest.starts_with(|c: char| c.is_ascii_lowercase()) => rest,
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn example_file_is_valid_and_shows_the_defaults() {
    let config = Config::from_toml(EXAMPLE).unwrap_or_else(|e| panic!("pool.toml.example: {e}"));
    // Its [proxy] and [pool] values are the defaults, so the comments cannot drift from the code.
    assert_eq!(
        format!("{:?}", config.proxy),
        format!("{:?}", ProxyConfig::default())
    );
    assert_eq!(
        format!("{:?}", config.pool),
        format!("{:?}", PoolConfig::default())
    );
    assert_eq!(config.nodes[0].address(), "127.0.0.1:5432");
    assert!(config.databases.contains_key("app"));
    assert!(config.user("app").is_some());

    let full = example_with_every_key();
    let config = Config::from_toml(&full).unwrap_or_else(|e| panic!("example with every key: {e}"));
    let user = config.user("app").expect("app");
    assert!(user.auth_method.is_some() && user.backend_user.is_some() && user.backend_password.is_some());
    assert!(user.pool_size.is_some());
    // `[metrics] listen` is off by default and documented (commented out) in the example.
    assert!(config.metrics.listen.is_some());
    let db = &config.databases["app"];
    assert!(db.dbname.is_some() && db.pool_mode.is_some() && db.pool_size.is_some());
}

#[test]
fn example_file_documents_every_key() {
    let full = example_with_every_key();
    let keys = [
        "listen",
        "pool_mode",
        "max_client_conn",
        "client_login_timeout",
        "client_idle_timeout",
        "idle_transaction_timeout",
        "transaction_timeout",
        "query_timeout",
        "max_message_size",
        "shutdown_timeout",
        "sigterm_timeout",
        "show_legacy_columns",
        "stats_period",
        "default_pool_size",
        "min_pool_size",
        "reserve_pool_size",
        "reserve_pool_timeout",
        "query_wait_timeout",
        "server_connect_timeout",
        "server_idle_timeout",
        "server_lifetime",
        "server_reset_query",
        "server_check_query",
        "server_check_delay",
        "max_prepared_statements",
        "autodb_idle_timeout",
        "max_db_connections",
        "max_user_connections",
        "server_login_retry",
        "max_auto_databases",
        "cluster",
        "user",
        "health_check_interval",
        "health_check_timeout",
        "fall",
        "rise",
        "max_lag",
        "max_lag_bytes",
        "reads_on_primary",
        "failover_timeout",
        "write_functions",
        "read_only_functions",
        "read_your_writes",
        "ryw_wait",
        "unix_socket_dir",
        "patroni_ca_file",
        "patroni_cert_file",
        "patroni_key_file",
        "patroni_user",
        "patroni_password",
        "tls_cert_file",
        "tls_key_file",
        "basic_auth_user",
        "basic_auth_password",
        "unix_socket_mode",
        "tcp_keepalive",
        "tcp_keepidle",
        "tcp_keepintvl",
        "tcp_keepcnt",
        "tcp_user_timeout",
        "instance_id",
        "instances",
        "host",
        "port",
        "weight",
        "dbname",
        "pool_size",
        "name",
        "password",
        "auth_method",
        "backend_user",
        "backend_password",
        "auth_file",
        "#auth_hba_file",
        "auth_user",
        "auth_query",
        "auth_dbname",
        "auth_query_cache_ttl",
        "auth_query_miss_ttl",
        "allow_cleartext_without_tls",
        "admin_users",
        "stats_users",
        "client_tls_mode",
        "client_tls_cert_file",
        "client_tls_key_file",
        "client_tls_ca_file",
        "server_tls_mode",
        "server_tls_ca_file",
        "server_tls_server_name",
    ];
    for key in keys {
        let line = format!("\n{key} = ");
        let at = full
            .find(&line)
            .unwrap_or_else(|| panic!("pool.toml.example lacks {key}"));
        // The line before a key is its comment.
        let before = full[..at].lines().last().unwrap_or("");
        assert!(before.starts_with("# "), "{key} has no comment above it");
    }
}

#[test]
fn example_clusters_are_valid() {
    // The [clusters.NAME] and `*` examples are `# | ` lines; un-comment them and parse them.
    let block: String = EXAMPLE
        .lines()
        .filter_map(|l| l.strip_prefix("# | ").or(l.strip_prefix("# |")))
        .map(|l| format!("{l}\n"))
        .collect();
    let config = Parts::with(Databases, format!("[databases.app]\n{block}"))
        .parse()
        .unwrap_or_else(|e| panic!("clusters example: {e}\n{block}"));
    assert_eq!(config.cluster_names(), ["default", "reports"]);
    assert_eq!(config.cluster_of("app"), Some("default"));
    assert_eq!(config.cluster_of("reports"), Some("reports"));
    // Any other name goes through `*`, to its cluster, under its own name.
    assert_eq!(config.cluster_of("made_up"), Some("reports"));
    assert_eq!(config.server_dbname("made_up").as_deref(), Some("made_up"));
    assert!(config.is_auto_database("made_up") && !config.is_auto_database("app"));
    let view = config.cluster_view("reports").expect("view");
    assert_eq!(view.nodes.len(), 2);
    assert_eq!(view.health.fall, 2);
    assert_eq!(view.health.rise, crate::health::HealthConfig::default().rise);
    assert_eq!(
        view.routing.reads_on_primary,
        crate::router::ReadsOnPrimary::Never
    );
    assert_eq!(config.health_dbname("reports"), "reports");
    assert_eq!(
        config.cluster_view("default").expect("default").nodes,
        config.nodes
    );
    assert!(config.cluster_view("nope").is_none());
}

#[test]
fn example_hba_table_is_valid_and_documented() {
    // The [[hba]] example is indented inside comments; un-comment it and parse it.
    let block: String = EXAMPLE
        .lines()
        .filter_map(|l| l.strip_prefix("#   "))
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(block.starts_with("[[hba]]"), "{block}");
    let config = Parts::with(
        Users,
        format!("[[users]]\nname = \"app\"\npassword = \"pw\"\n{block}"),
    )
    .parse()
    .unwrap_or_else(|e| panic!("[[hba]] example: {e}"));
    assert_eq!(config.hba.len(), 1);
    for key in ["type", "database", "user", "address", "method"] {
        assert!(
            EXAMPLE.contains(&format!("\n#   {key} = ")),
            "[[hba]] example lacks {key}"
        );
    }
    assert_eq!(config.auth, AuthConfig::default());
}

#[test]
fn readme_authentication_example_is_valid() {
    let readme = include_str!("../../../README.md");
    let section = &readme[readme
        .find("### Authentication")
        .expect("README has ### Authentication")..];
    let start = section.find("```toml\n").expect("a toml example") + "```toml\n".len();
    let example = &section[start..start + section[start..].find("```").expect("closed")];
    let text = format!("{}\n{example}", Parts::default().render());
    let config = Config::from_toml(&text).unwrap_or_else(|e| panic!("README example: {e}"));
    assert_eq!(config.hba.len(), 2);
    assert!(config.auth.auth_user.is_some() && config.auth.auth_file.is_some());
}
