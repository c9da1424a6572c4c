//! Unit tests for parsing and validation: every rule names its key, unknown keys are refused,
//! defaults are the documented ones, `pool.toml.example` is valid, and secrets stay hidden.

use super::*;
use std::time::Duration;

const EXAMPLE: &str = include_str!("../../pool.toml.example");

/// A config section a test may replace.
#[derive(Clone, Copy)]
enum Section {
    Proxy,
    Pool,
    Nodes,
    Databases,
    Users,
}
use Section::*;

/// A valid config split by section, so a test can replace one section and keep the rest.
struct Parts([String; 5]);

impl Default for Parts {
    fn default() -> Self {
        Parts([
            String::new(),
            String::new(),
            "[[nodes]]\nhost = \"127.0.0.1\"\n".into(),
            "[databases.app]\n".into(),
            "[[users]]\nname = \"app\"\npassword = \"app-secret\"\n".into(),
        ])
    }
}

impl Parts {
    /// The default config with one section's body replaced.
    fn with(section: Section, text: impl Into<String>) -> Parts {
        let mut parts = Parts::default();
        parts.0[section as usize] = text.into();
        parts
    }

    fn render(&self) -> String {
        let [proxy, pool, nodes, databases, users] = &self.0;
        format!("[proxy]\n{proxy}\n[pool]\n{pool}\n{nodes}\n{databases}\n{users}")
    }

    fn parse(&self) -> Result<Config, ConfigError> {
        Config::from_toml(&self.render())
    }
}

/// The message of a refused config; panics if it was accepted.
fn refused(text: &str) -> String {
    match Config::from_toml(text) {
        Ok(config) => panic!("accepted {config:?} from:\n{text}"),
        Err(error) => error.to_string(),
    }
}

/// RFC 7677's example verifier (password "pencil").
const SCRAM: &str = "SCRAM-SHA-256$4096:W22ZaJ0SNY7soEsUEjb6gQ==$\
    WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";
const MD5: &str = "md5a3556571e93b0d20722ba62be61e8c2d";

#[test]
fn each_rule_names_its_key() {
    let second_node = |body: &str| format!("[[nodes]]\nhost = \"a\"\n[[nodes]]\n{body}\n");
    let user = |body: &str| format!("[[users]]\nname = \"app\"\n{body}\n");
    // One rule per row: section to replace, its new body, the whole error message.
    #[rustfmt::skip]
    let cases = [
        (Proxy, "max_client_conn = 0".into(), "proxy.max_client_conn: must be > 0"),
        (Proxy, "client_login_timeout = \"0\"".into(), "proxy.client_login_timeout: must be > 0"),
        (Proxy, "stats_period = \"0s\"".into(), "proxy.stats_period: must be > 0"),
        (Proxy, "max_message_size = \"8191\"".into(), "proxy.max_message_size: must be between 8kB and 1GB"),
        (Proxy, "max_message_size = \"1025MB\"".into(), "proxy.max_message_size: must be between 8kB and 1GB"),
        (Proxy, "log_level = \"tidepool=loud\"".into(), "proxy.log_level: is not a valid filter (e.g. \"info\", \"tidepool=debug,warn\")"),
        (Pool, "default_pool_size = 0".into(), "pool.default_pool_size: must be > 0"),
        (Pool, "default_pool_size = 2\nmin_pool_size = 3".into(), "pool.min_pool_size: must not exceed pool.default_pool_size"),
        (Pool, "server_connect_timeout = \"0\"".into(), "pool.server_connect_timeout: must be > 0"),
        (Nodes, String::new(), "nodes: at least one [[nodes]] entry or [clusters.NAME] table is required"),
        (Nodes, "[[nodes]]\nhost = \"a\"\n[clusters.default]\nnodes = [{ host = \"b\" }]".into(), "clusters.default: the global [[nodes]] already form the cluster \"default\": use one or the other"),
        (Nodes, "[clusters.b]\nnodes = []".into(), "clusters.b.nodes: at least one node is required"),
        (Nodes, "[clusters.b]\nnodes = [{ host = \"b\", port = 0 }]".into(), "clusters.b.nodes[0].port: must be > 0"),
        (Nodes, "[clusters.b]\nnodes = [{ host = \"b\" }]\n[clusters.b.health]\nfall = 0".into(), "clusters.b.health.fall: must be ≥ 1"),
        (Nodes, "[clusters.b]\nnodes = [{ host = \"b\" }]".into(), "databases.app.cluster: no [[nodes]] are given: name one of the [clusters.NAME] tables"),
        (Databases, "[databases.app]\ncluster = \"nope\"".into(), "databases.app.cluster: \"nope\" is not a [clusters.NAME] table"),
        (Databases, "[databases.\"*\"]\ndbname = \"x\"".into(), "databases.*.dbname: cannot be set on \"*\": it forwards the name each client asks for"),
        (Databases, "[databases.app]\npassword = \"x\"".into(), "databases.app.password: needs databases.NAME.user"),
        (Nodes, second_node("host = \" \""), "nodes[1].host: must not be empty"),
        (Nodes, second_node("host = \"b\"\nport = 0"), "nodes[1].port: must be > 0"),
        (Databases, String::new(), "databases: at least one [databases.NAME] table is required"),
        (Databases, "[databases.app]\npool_size = 0".into(), "databases.app.pool_size: must be > 0"),
        (Databases, "[databases.app]\ndbname = \"\"".into(), "databases.app.dbname: must not be empty"),
        (Users, "[[users]]\nname = \"\"\nauth_method = \"trust\"".into(), "users[0].name: must not be empty"),
        (Users, user("auth_method = \"trust\"").repeat(2), "users[1].name: user \"app\" is listed twice"),
        (Users, user("password = \"x\"\npool_size = 0"), "users[0].pool_size: must be > 0"),
        (Users, user(""), "users[0].password: required for auth_method scram-sha-256"),
        (Users, user("auth_method = \"md5\""), "users[0].password: required for auth_method md5"),
        (Users, user("password = \"\""), "users[0].password: must not be empty"),
        (Users, user("password = \"SCRAM-SHA-256$4096:c2FsdA==\""), "users[0].password: expected SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>"),
        (Users, user(&format!("password = \"{SCRAM}\"\nauth_method = \"md5\"")), "users[0].auth_method: md5 cannot be checked against the stored kind of password"),
        (Users, user(&format!("password = \"{MD5}\"")), "users[0].auth_method: scram-sha-256 cannot be checked against the stored kind of password"),
        (Proxy, "admin_users = [\"nobody\"]".into(), "proxy.admin_users[0]: \"nobody\" is not a configured [[users]] name"),
        (Proxy, "stats_users = [\"app\", \"x\"]".into(), "proxy.stats_users[1]: \"x\" is not a configured [[users]] name"),
        (Databases, "[databases.app]\n[databases.pgbouncer]".into(), "databases.pgbouncer: this name is reserved for the admin console"),
        (Users, format!("{}[metrics]\nlisten = \"127.0.0.1:6432\"", user("password = \"x\"")), "metrics.listen: must differ from proxy.listen"),
    ];
    for (section, body, expected) in cases {
        let text = Parts::with(section, body).render();
        match Config::from_toml(&text) {
            Err(error @ ConfigError::Invalid { .. }) => {
                assert_eq!(error.to_string(), expected, "in:\n{text}")
            }
            other => panic!("expected {expected:?}, got {other:?} from:\n{text}"),
        }
    }
}

#[test]
fn what_the_rules_allow() {
    // Bounds are inclusive; trust needs no password; a SCRAM verifier also serves `password`.
    let ok = [
        Parts::with(Proxy, "max_message_size = \"8kB\""),
        Parts::with(Proxy, "max_message_size = \"1GB\""),
        Parts::with(Pool, "default_pool_size = 3\nmin_pool_size = 3"),
        Parts::with(Users, "[[users]]\nname = \"t\"\nauth_method = \"trust\""),
        Parts::with(
            Users,
            format!("[[users]]\nname = \"s\"\npassword = \"{SCRAM}\"\nauth_method = \"password\""),
        ),
        Parts::with(Users, ""),
    ];
    for parts in ok {
        if let Err(error) = parts.parse() {
            panic!("refused: {error}\n{}", parts.render());
        }
    }
}

#[test]
fn unknown_keys_are_refused_by_name() {
    let cases = [
        ("[proxy]\nlisten_addr = \"127.0.0.1:1\"", "listen_addr"),
        ("[pool]\npool_size = 3", "pool_size"),
        ("[poool]\ndefault_pool_size = 3", "poool"),
        ("[[nodes]]\nhost = \"h\"\nweigth = 2", "weigth"),
        ("[databases.app]\ndatabase = \"x\"", "database"),
        ("[[users]]\nname = \"u\"\nrole = \"x\"", "role"),
    ];
    for (text, key) in cases {
        let message = refused(text);
        assert!(
            message.contains(&format!("unknown field `{key}`")),
            "{key}: {message}"
        );
    }
}

#[test]
fn malformed_durations_sizes_and_types_are_refused() {
    let cases = [
        ("client_login_timeout = \"5\"", "has no unit"),
        ("client_login_timeout = \"5 fortnights\"", "unknown duration unit"),
        (
            "client_login_timeout = \"-5s\"",
            "does not start with a whole number",
        ),
        (
            "client_login_timeout = \"99999999999999999999d\"",
            "does not start with a whole number",
        ),
        ("client_login_timeout = \"9999999999999999d\"", "is too large"),
        ("client_login_timeout = 5", "expected a string"),
        ("max_message_size = \"64 parsecs\"", "unknown size unit"),
        ("max_message_size = \"MB\"", "does not start with a whole number"),
        ("max_message_size = \"99999999999TB\"", "is too large"),
        ("max_message_size = 65536", "expected a string"),
        ("listen = \"localhost\"", "invalid socket address"),
        ("pool_mode = \"statement\"", "unknown variant `statement`"),
        ("max_client_conn = -1", "max_client_conn"),
    ];
    for (line, why) in cases {
        let text = Parts::with(Proxy, line).render();
        let message = refused(&text);
        let key = line.split(' ').next().expect("key");
        assert!(message.contains(why), "{line}: {message}");
        assert!(message.contains(key), "{line} must name its key: {message}");
    }
}

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
fn auth_rules_name_their_key() {
    let hba = |body: &str| format!("[[users]]\nname = \"app\"\npassword = \"pw\"\n[[hba]]\n{body}\n");
    let rule = |t: &str, a: &str, m: &str| {
        hba(&format!(
            "type = \"{t}\"\ndatabase = \"all\"\nuser = \"all\"\naddress = \"{a}\"\nmethod = \"{m}\""
        ))
    };
    #[rustfmt::skip]
    let cases = [
        (rule("hots", "all", "md5"), "hba[0].type: unknown connection type \"hots\" (use local, host, hostssl or hostnossl)"),
        (rule("host", "10.0.0.0/40", "md5"), "hba[0].address: invalid address \"10.0.0.0/40\" (use all, a CIDR block like 10.0.0.0/8, or an address and a netmask)"),
        (rule("host", "all", "gss"), "hba[0].method: authentication method \"gss\" is not supported by tidepool"),
        (rule("host", "all", "cert"), "hba[0].method: cert authentication is only supported on hostssl connections"),
        ("[[users]]\nname = \"app\"\npassword = \"pw\"\nauth_method = \"md5\"\n[auth]\nauth_hba_file = \"x\"\n".to_string(),
            "users[0].auth_method: cannot be combined with [[hba]] or auth.auth_hba_file: the hba rules choose the method"),
        ("[[users]]\nname = \"app\"\n".to_string(), "users[0].password: required for auth_method scram-sha-256"),
        (format!("{}[auth]\nauth_hba_file = \"x\"\n", rule("host", "all", "md5")),
            "auth.auth_hba_file: cannot be combined with [[hba]] entries: use one or the other"),
        ("[[users]]\nname = \"a\"\npassword = \"pw\"\n[auth]\nauth_user = \"a\"\nauth_query = \" \"\n".to_string(),
            "auth.auth_query: must not be empty when auth.auth_user is set"),
        ("[[users]]\nname = \"a\"\npassword = \"pw\"\n[auth]\nauth_file = \"\"\n".to_string(), "auth.auth_file: must not be empty"),
    ];
    for (users, expected) in cases {
        let error = Parts::with(Users, users.clone())
            .parse()
            .expect_err(&users)
            .to_string();
        assert_eq!(error, expected);
    }
    // With an external source, a listed user needs no password (it comes from the file).
    let ok = "[[users]]\nname = \"app\"\npool_size = 3\n[auth]\nauth_file = \"userlist.txt\"\n";
    Parts::with(Users, ok).parse().expect("password from auth_file");
    let cert = "[[users]]\nname = \"app\"\nauth_method = \"cert\"\n";
    Parts::with(Users, cert).parse().expect("cert needs no password");
}

#[test]
fn secrets_never_reach_debug_output() {
    let users = format!(
        "[[users]]\nname = \"app\"\npassword = \"plain-secret-1\"\nbackend_password = \"backend-secret-2\"\n\
         [[users]]\nname = \"m\"\npassword = \"{MD5}\"\nauth_method = \"md5\"\n\
         [[users]]\nname = \"s\"\npassword = \"{SCRAM}\"\n"
    );
    let config = Parts::with(Users, users).parse().expect("valid");
    for shown in [format!("{config:?}"), format!("{config:#?}")] {
        let scram_keys = "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=";
        for secret in ["plain-secret-1", "backend-secret-2", &MD5[3..], scram_keys] {
            assert!(!shown.contains(secret), "{secret} leaked: {shown}");
        }
        assert!(shown.contains("<hidden>") && shown.contains("\"app\""));
    }
}

#[test]
fn load_names_a_missing_file() {
    let path = std::path::Path::new("/nonexistent/tidepool/pool.toml");
    let error = Config::load(path).expect_err("no such file");
    assert!(matches!(error, ConfigError::Read { .. }));
    assert!(
        error.to_string().contains("/nonexistent/tidepool/pool.toml"),
        "{error}"
    );
}

#[test]
fn syntax_errors_never_echo_secrets() {
    for bad in [
        "[[users]]\nname = \"u\"\npasswrd = \"hunter2-secret\"\n",
        "[[users]]\nname = \"u\"\npassword = [\"hunter2-secret\"]\n",
        "[[users]]\nname = \"u\"\npassword = \"hunter2-secret\n",
    ] {
        let err = Config::from_toml(bad).expect_err("invalid").to_string();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(err.starts_with("line 3"), "{err}");
    }
}

#[test]
fn readme_authentication_example_is_valid() {
    let readme = include_str!("../../README.md");
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

#[test]
fn listeners_unix_socket_and_keepalive_keys() {
    let defaults = Parts::default().parse().expect("valid");
    let proxy = &defaults.proxy;
    assert_eq!(proxy.listen.all(), ["127.0.0.1:6432".parse().unwrap()]);
    assert_eq!(proxy.unix_socket(), None);
    assert_eq!(proxy.keepalive(), super::Keepalive::default());
    assert!(proxy.keepalive().enabled, "PgBouncer's default: keepalive on");

    let text = "listen = [\"0.0.0.0:6432\", \"[::]:6432\"]\nunix_socket_dir = \"/run/tp\"\n\
                unix_socket_mode = \"0770\"\ntcp_keepidle = \"30s\"\ntcp_keepcnt = 3\n";
    let config = Parts::with(Proxy, text).parse().expect("valid");
    let proxy = &config.proxy;
    assert_eq!(proxy.listen.all().len(), 2);
    assert_eq!(proxy.listen.to_string(), "0.0.0.0:6432,[::]:6432");
    let unix = proxy.unix_socket().expect("a socket");
    assert_eq!(unix.path(6432), std::path::Path::new("/run/tp/.s.PGSQL.6432"));
    assert_eq!(unix.mode.0, 0o770);
    assert_eq!(proxy.keepalive().idle.0, Duration::from_secs(30));
    assert_eq!(proxy.keepalive().count, 3);
    // An integer mode is taken as written (TOML octal).
    let config = Parts::with(Proxy, "unix_socket_mode = 0o700")
        .parse()
        .expect("valid");
    assert_eq!(config.proxy.unix_socket_mode.0, 0o700);

    for (line, why) in [
        ("listen = []", "at least one address"),
        ("listen = [\"127.0.0.1:1\", \"127.0.0.1:1\"]", "listed twice"),
        (
            "listen = [\"127.0.0.1:1\", \"nope\"]",
            "invalid socket address \"nope\"",
        ),
        ("unix_socket_dir = \"relative/dir\"", "absolute"),
        ("unix_socket_mode = \"0999\"", "octal"),
        ("unix_socket_mode = \"01777\"", "at most 0777"),
        ("tcp_keepidle = 5", "expected a string"),
    ] {
        let message = refused(&Parts::with(Proxy, line).render());
        assert!(message.contains(why), "{line}: {message}");
        let key = line.split(' ').next().unwrap();
        assert!(message.contains(key), "{line} must name its key: {message}");
    }
}

#[test]
fn http_credentials_and_certificates_come_in_pairs() {
    let base = Parts::default().render();
    for (extra, expected) in [
        (
            "[metrics]\ntls_cert_file = \"m.crt\"\n",
            "metrics.tls_key_file: required with metrics.tls_cert_file",
        ),
        (
            "[metrics]\nbasic_auth_password = \"x\"\n",
            "metrics.basic_auth_user: required with metrics.basic_auth_password",
        ),
        (
            "[routing]\npatroni_user = \"p\"\n",
            "routing.patroni_password: required with routing.patroni_user",
        ),
        (
            "[routing]\npatroni_key_file = \"k\"\n",
            "routing.patroni_cert_file: required with routing.patroni_key_file",
        ),
    ] {
        assert_eq!(refused(&format!("{base}\n{extra}")), expected);
    }
    // Passwords stay out of Debug output (configs are logged with it).
    let config = Config::from_toml(&format!(
        "{base}\n[metrics]\nbasic_auth_user = \"u\"\nbasic_auth_password = \"hunter2\"\n"
    ))
    .expect("valid");
    assert!(!format!("{config:?}").contains("hunter2"));
}
