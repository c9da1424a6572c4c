//! Importing pgbouncer.ini files: what is mapped, and what is listed as not mapped.

use super::*;
use crate::config::{Config, PoolMode};
use std::time::Duration;

const INI: &str = r#"
[databases]
app = host=10.0.0.1,10.0.0.2 port=5433 dbname=app_prod pool_size=15
reports = host=10.0.0.1,10.0.0.2 port=5433 pool_mode=session
other = host=10.9.9.9 dbname=x
forced = host=10.0.0.1,10.0.0.2 port=5433 user=svc password=secret
* = host=10.0.0.1

[users]
app = pool_size=4 max_user_connections=10

[peers]
2 = host=10.0.0.12 port=6432

[pgbouncer]
listen_addr = *
listen_port = 6543
auth_type = scram-sha-256
auth_file = userlist.txt
admin_users = admin
stats_users = stats, app
pool_mode = transaction
max_client_conn = 500
default_pool_size = 20
reserve_pool_timeout = 2.5
server_lifetime = 1800
server_reset_query = DISCARD ALL
client_tls_sslmode = require
client_tls_cert_file = /etc/ssl/pgb.crt
client_tls_key_file = /etc/ssl/pgb.key
server_tls_sslmode = allow
logfile = /var/log/pgbouncer.log
tcp_keepalive = 1
peer_id = 1
frobnicate = 3
"#;

fn imported() -> (Imported, Config) {
    // The TLS files need not exist: loading a Config does not read them.
    let imported = import_text(INI, Path::new("/etc/pgbouncer")).expect("imports");
    let config = Config::from_toml(&imported.toml).expect("the output loads");
    (imported, config)
}

fn reason<'a>(imported: &'a Imported, key: &str) -> &'a str {
    imported
        .unmapped
        .iter()
        .find(|u| u.key == key)
        .map(|u| u.reason.as_str())
        .unwrap_or_else(|| panic!("{key} is not listed: {:#?}", imported.unmapped))
}

#[test]
fn settings_map_to_their_tidepool_keys_and_units() {
    let (_, config) = imported();
    // `*`: every IPv4 and IPv6 address, as PgBouncer binds.
    assert_eq!(config.proxy.listen.to_string(), "0.0.0.0:6543,[::]:6543");
    assert_eq!(config.proxy.pool_mode, PoolMode::Transaction);
    assert_eq!(config.proxy.max_client_conn, 500);
    assert_eq!(config.pool.default_pool_size, 20);
    assert_eq!(config.pool.reserve_pool_timeout.0, Duration::from_millis(2500));
    assert_eq!(config.pool.server_lifetime.0, Duration::from_secs(1800));
    assert_eq!(config.pool.server_reset_query, "DISCARD ALL");
    assert_eq!(
        config.auth.auth_file.as_deref(),
        Some("/etc/pgbouncer/userlist.txt")
    );
    assert_eq!(config.proxy.admin_users, ["admin"]);
    assert_eq!(config.proxy.stats_users, ["stats", "app"]);
    assert_eq!(config.tls.client_tls_mode.as_str(), "require");
    assert_eq!(config.tls.server_tls_mode.as_str(), "prefer");
    // auth_type covers TCP and the Unix socket, as in PgBouncer.
    let rules: Vec<(&str, &str)> = (config.hba.iter())
        .map(|r| (r.conn_type.as_str(), r.method.as_str()))
        .collect();
    assert_eq!(rules, [("host", "scram-sha-256"), ("local", "scram-sha-256")]);
    assert_eq!(config.peers.instance_id, 1);
    assert_eq!(config.peers.instances["2"], "10.0.0.12:6432");
}

#[test]
fn databases_users_and_nodes() {
    let (_, config) = imported();
    let nodes: Vec<String> = config.nodes.iter().map(|n| n.address()).collect();
    assert_eq!(nodes, ["10.0.0.1:5433", "10.0.0.2:5433"]);
    assert_eq!(config.databases["app"].dbname.as_deref(), Some("app_prod"));
    assert_eq!(config.databases["app"].pool_size, Some(15));
    assert_eq!(config.databases["reports"].pool_mode, Some(PoolMode::Session));
    // The servers of the first database are the default cluster; the others get their own.
    assert_eq!(config.cluster_of("app"), Some("default"));
    assert_eq!(config.cluster_of("reports"), Some("default"));
    assert_eq!(config.cluster_of("other"), Some("other"));
    let other: Vec<String> = (config.cluster_nodes("other").unwrap().iter())
        .map(|n| n.address())
        .collect();
    assert_eq!(other, ["10.9.9.9:5432"]);
    assert_eq!(config.databases["other"].dbname.as_deref(), Some("x"));
    // The forced server login is carried over.
    let forced = &config.databases["forced"];
    assert_eq!(forced.user.as_deref(), Some("svc"));
    assert_eq!(forced.password.as_deref(), Some("secret"));
    assert_eq!(config.cluster_of("forced"), Some("default"));
    // `*`: any other name, on its own server (a cluster named for it).
    assert!(config.is_auto_database("tenant_42"));
    assert_eq!(config.cluster_of("tenant_42"), Some("autodb"));
    let autodb: Vec<String> = (config.cluster_nodes("autodb").unwrap().iter())
        .map(|n| n.address())
        .collect();
    assert_eq!(autodb, ["10.0.0.1:5432"]);
    let app = config.user("app").expect("[users] app");
    assert_eq!(app.pool_size, Some(4));
    assert_eq!(app.max_user_connections, Some(10));
    assert!(config.user("admin").is_some() && config.user("stats").is_some());
}

#[test]
fn every_key_not_mapped_is_listed_with_its_reason() {
    let (imported, _) = imported();
    assert!(reason(&imported, "pgbouncer.logfile").contains("stderr"));
    assert!(reason(&imported, "pgbouncer.frobnicate").contains("no tidepool equivalent"));
    assert!(reason(&imported, "pgbouncer.server_tls_sslmode").contains("prefer"));
    // What now maps is not listed.
    for key in [
        "pgbouncer.tcp_keepalive",
        "databases.*",
        "databases.other",
        "databases.forced",
        "users.app",
    ] {
        let listed = imported.unmapped.iter().find(|u| u.key == key);
        assert!(listed.is_none(), "{key} is listed: {listed:?}");
    }
    // And they head the written file, so the operator sees them there too.
    assert!(
        imported.toml.contains("#   pgbouncer.logfile (line 32): "),
        "{}",
        imported.toml
    );
}

#[test]
fn defaults_and_bad_input() {
    // No listen_addr: PgBouncer listens on its socket only; tidepool needs TCP.
    let imported = import_text("[databases]\nd = host=h\n", Path::new("/")).unwrap();
    assert!(reason(&imported, "pgbouncer.listen_addr").contains("127.0.0.1"));
    let config = Config::from_toml(&imported.toml).unwrap();
    assert_eq!(config.proxy.listen.to_string(), "127.0.0.1:6432");
    // PgBouncer's default auth_type is md5.
    assert_eq!(config.hba[0].method, "md5");
    assert!(matches!(
        import_text("[pgbouncer]\nnot a setting\n", Path::new("/")),
        Err(ImportError::Syntax { .. })
    ));
    // A value tidepool refuses is dropped and listed, so the file still loads.
    let ini = "[databases]\nd = host=h\n[pgbouncer]\nmax_client_conn = 0\nmax_packet_size = 2147483647\n\
               client_login_timeout = 0\ndefault_pool_size = 7\nserver_lifetime = 0\n";
    let imported = import_text(ini, Path::new("/")).unwrap();
    let config = Config::from_toml(&imported.toml).unwrap();
    assert!(reason(&imported, "pgbouncer.max_client_conn").contains("must be > 0"));
    assert!(reason(&imported, "pgbouncer.max_packet_size").contains("1GB"));
    assert!(reason(&imported, "pgbouncer.client_login_timeout").contains("refuses"));
    assert_eq!(config.proxy.max_client_conn, 10_000, "the default");
    assert_eq!(config.pool.default_pool_size, 7, "the rest is kept");
    assert!(reason(&imported, "pgbouncer.server_lifetime").contains("used once"));
    assert_eq!(config.pool.server_lifetime.0, Duration::from_secs(3600));
}

#[test]
fn auth_query_hba_file_and_server_tls() {
    let ini = "[databases]\nd = host=db\n[pgbouncer]\nlisten_addr = 10.0.0.5, 10.0.0.6\n\
               auth_type = hba\nauth_hba_file = hba.conf\nauth_user = lookup\n\
               auth_query = SELECT usename, passwd FROM my_shadow($1)\nauth_dbname = postgres\n\
               server_tls_sslmode = verify-full\nserver_tls_ca_file = /etc/ssl/ca.crt\n\
               pool_mode = statement\n";
    let imported = import_text(ini, Path::new("/srv/pgb")).unwrap();
    let config = Config::from_toml(&imported.toml).unwrap();
    assert_eq!(config.auth.auth_hba_file.as_deref(), Some("/srv/pgb/hba.conf"));
    assert!(config.hba.is_empty(), "auth_type = hba: the file has the rules");
    assert_eq!(config.auth.auth_user.as_deref(), Some("lookup"));
    assert_eq!(
        config.auth.auth_query,
        "SELECT usename, passwd FROM my_shadow($1)"
    );
    assert_eq!(config.auth.auth_dbname.as_deref(), Some("postgres"));
    assert_eq!(config.tls.server_tls_mode.as_str(), "verify-full");
    assert_eq!(
        config.tls.server_tls_ca_file.as_deref(),
        Some(Path::new("/etc/ssl/ca.crt"))
    );
    assert_eq!(config.proxy.listen.to_string(), "10.0.0.5:6432,10.0.0.6:6432");
    assert!(reason(&imported, "pgbouncer.pool_mode").contains("transaction kept"));
    assert_eq!(config.proxy.pool_mode, PoolMode::Transaction);
}

/// Loads an import of `ini`, which must succeed.
fn load(ini: &str) -> (Imported, Config) {
    let imported = import_text(ini, Path::new("/etc/pgbouncer")).expect("imports");
    let config = Config::from_toml(&imported.toml)
        .unwrap_or_else(|e| panic!("the output loads: {e}\n{}", imported.toml));
    (imported, config)
}

#[test]
fn databases_on_other_servers_become_clusters() {
    let ini = "[databases]\n\
               main = host=pg-a,pg-b port=5433\n\
               billing = host=pg-c dbname=billing_prod user=billing password='b''s'\n\
               ledger = host=pg-c\n\
               main_ro = host=pg-b,pg-a port=5433 max_db_connections=8\n\
               * = host=pg-d port=6000\n\
               [pgbouncer]\nlisten_addr = 127.0.0.1\nauth_file = users.txt\n";
    let (imported, config) = load(ini);
    // TOML out: one [[nodes]] list, one table per other set of servers.
    assert!(imported.toml.contains("[databases.billing]"), "{}", imported.toml);
    assert!(
        imported.toml.contains("cluster = \"billing\""),
        "{}",
        imported.toml
    );
    assert!(imported.toml.contains("[databases.\"*\"]"), "{}", imported.toml);
    assert_eq!(config.cluster_names(), ["default", "autodb", "billing"]);
    let addresses = |cluster: &str| -> Vec<String> {
        (config.cluster_nodes(cluster).unwrap().iter())
            .map(|n| n.address())
            .collect()
    };
    assert_eq!(addresses("default"), ["pg-a:5433", "pg-b:5433"]);
    assert_eq!(addresses("billing"), ["pg-c:5432"]);
    assert_eq!(addresses("autodb"), ["pg-d:6000"]);
    // The same servers in another order are the same cluster.
    assert_eq!(config.cluster_of("main_ro"), Some("default"));
    assert_eq!(config.databases["main_ro"].max_db_connections, Some(8));
    assert_eq!(config.cluster_of("ledger"), Some("billing"));
    assert_eq!(config.cluster_of("anything"), Some("autodb"));
    assert_eq!(config.server_dbname("anything").as_deref(), Some("anything"));
    let billing = &config.databases["billing"];
    assert_eq!(billing.dbname.as_deref(), Some("billing_prod"));
    assert_eq!(billing.user.as_deref(), Some("billing"));
    assert_eq!(billing.password.as_deref(), Some("b's"));
    assert!(imported.unmapped.iter().all(|u| u.key != "databases.billing"));
}

#[test]
fn cluster_names_do_not_collide_and_odd_entries_are_listed() {
    // A database called `default` on another server cannot take the default cluster's name.
    let ini = "[databases]\nfirst = host=a\ndefault = host=b\nsecond = host=c\n\
               solo = host=a user=svc\n* = host=a dbname=fixed\nnopw = host=a password=x\n\
               [pgbouncer]\nlisten_addr = 127.0.0.1\nauth_file = users.txt\n";
    let (imported, config) = load(ini);
    assert_eq!(config.cluster_of("default"), Some("default_2"));
    assert_eq!(config.cluster_of("second"), Some("second"));
    // `*` on the first servers: the default cluster; its dbname cannot be carried over.
    assert_eq!(config.cluster_of("zzz"), Some("default"));
    assert!(config.databases["*"].dbname.is_none());
    assert!(reason(&imported, "databases.*").contains("dbname=fixed"));
    // A forced user without a password: mapped, with where its password must come from.
    assert_eq!(config.databases["solo"].user.as_deref(), Some("svc"));
    assert!(reason(&imported, "databases.solo").contains("[[users]] entry \"svc\""));
    assert!(config.databases["nopw"].password.is_none());
    assert!(reason(&imported, "databases.nopw").contains("password without user"));
}

#[test]
fn limits_timeouts_and_keepalive_keep_their_units() {
    let ini = "[databases]\nd = host=h\n[users]\nu = max_user_connections=3 pool_mode=session\n\
               [pgbouncer]\nlisten_addr = 127.0.0.1\nauth_file = users.txt\n\
               max_db_connections = 50\nmax_user_connections = 40\nquery_timeout = 30\n\
               transaction_timeout = 0.5\nserver_login_retry = 5\nautodb_idle_timeout = 600\n\
               tcp_keepalive = 0\ntcp_keepidle = 60\ntcp_keepintvl = 10\ntcp_keepcnt = 5\n\
               tcp_user_timeout = 2500\n";
    let (imported, config) = load(ini);
    for line in [
        "max_db_connections = 50",
        "query_timeout = \"30s\"",
        "transaction_timeout = \"500ms\"",
        "tcp_keepalive = false",
        "tcp_keepidle = \"60s\"",
        "tcp_keepcnt = 5",
        "tcp_user_timeout = \"2500ms\"",
    ] {
        assert!(imported.toml.contains(line), "{line}: {}", imported.toml);
    }
    assert_eq!(config.pool.max_db_connections, 50);
    assert_eq!(config.pool.max_user_connections, 40);
    assert_eq!(config.proxy.query_timeout.0, Duration::from_secs(30));
    assert_eq!(config.proxy.transaction_timeout.0, Duration::from_millis(500));
    assert_eq!(config.pool.server_login_retry.0, Duration::from_secs(5));
    assert_eq!(config.pool.autodb_idle_timeout.0, Duration::from_secs(600));
    let keepalive = config.proxy.keepalive();
    assert!(!keepalive.enabled);
    assert_eq!(keepalive.idle.0, Duration::from_secs(60));
    assert_eq!(keepalive.interval.0, Duration::from_secs(10));
    assert_eq!(keepalive.count, 5);
    // Milliseconds in PgBouncer, not seconds.
    assert_eq!(keepalive.user_timeout.0, Duration::from_millis(2500));
    let u = config.user("u").unwrap();
    assert_eq!(u.max_user_connections, Some(3));
    assert!(reason(&imported, "users.u").contains("per-user pool_mode"));
    // A negative count is refused by the import, not left for the TOML reader.
    let imported = import_text(
        "[databases]\nd = host=h\n[pgbouncer]\nlisten_addr = ::1\ntcp_keepcnt = -1\n",
        Path::new("/"),
    )
    .unwrap();
    assert!(reason(&imported, "pgbouncer.tcp_keepcnt").contains(">= 0"));
}

#[test]
fn listen_addresses_and_the_unix_socket() {
    let ini = "[databases]\nd = host=h\n[pgbouncer]\nlisten_port = 7000\n\
               listen_addr = 127.0.0.1, ::1, localhost, db.example.com\n\
               unix_socket_dir = run\nunix_socket_mode = 0770\nunix_socket_group = pg\n";
    let (imported, config) = load(ini);
    assert_eq!(config.proxy.listen.to_string(), "127.0.0.1:7000,[::1]:7000");
    assert!(reason(&imported, "pgbouncer.listen_addr").contains("db.example.com left out"));
    let socket = config.proxy.unix_socket().expect("a socket");
    assert_eq!(socket.path(7000), Path::new("/etc/pgbouncer/run/.s.PGSQL.7000"));
    assert_eq!(socket.mode.0, 0o770);
    assert!(imported.toml.contains("unix_socket_mode = \"0770\""));
    assert!(reason(&imported, "pgbouncer.unix_socket_group").contains("Group="));
    // A certificate exists on TLS connections only: `cert` is one hostssl rule.
    let (_, config) = load("[databases]\nd = host=h\n[pgbouncer]\nauth_type = cert\n");
    assert_eq!(config.hba.len(), 1);
    assert_eq!(
        (config.hba[0].conn_type.as_str(), config.hba[0].method.as_str()),
        ("hostssl", "cert")
    );

    // PgBouncer's defaults: the socket in /tmp; an empty value: no socket.
    let (imported, config) = load("[databases]\nd = host=h\n[pgbouncer]\nlisten_addr = 10.1.1.1\n");
    assert_eq!(config.proxy.unix_socket_dir.as_deref(), Some(Path::new("/tmp")));
    assert!(reason(&imported, "pgbouncer.unix_socket_dir").contains("/tmp written"));
    let (_, config) =
        load("[databases]\nd = host=h\n[pgbouncer]\nunix_socket_dir =\nunix_socket_mode = 511\n");
    assert!(config.proxy.unix_socket().is_none());
    assert_eq!(config.proxy.unix_socket_mode.0, 0o777, "decimal 511");
    let (imported, config) =
        load("[databases]\nd = host=h\n[pgbouncer]\nunix_socket_dir = @pgb\nunix_socket_mode = 0999\n");
    assert!(config.proxy.unix_socket().is_none());
    assert!(reason(&imported, "pgbouncer.unix_socket_dir").contains("abstract"));
    assert!(reason(&imported, "pgbouncer.unix_socket_mode").contains("0777"));
}
