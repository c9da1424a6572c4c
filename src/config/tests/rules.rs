//! Validation rules: each one refused with its key path and the whole message, what the
//! rules allow, authentication rules, and settings that come in pairs.

use super::*;

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
