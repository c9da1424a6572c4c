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
    assert_eq!(config.proxy.listen.to_string(), "0.0.0.0:6543");
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
    assert_eq!(config.hba.len(), 1);
    assert_eq!(config.hba[0].method, "scram-sha-256");
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
    assert!(
        config.databases.contains_key("forced"),
        "kept without its forced user"
    );
    assert!(!config.databases.contains_key("other"), "another server");
    let app = config.user("app").expect("[users] app");
    assert_eq!(app.pool_size, Some(4));
    assert!(config.user("admin").is_some() && config.user("stats").is_some());
}

#[test]
fn every_key_not_mapped_is_listed_with_its_reason() {
    let (imported, _) = imported();
    assert!(reason(&imported, "pgbouncer.logfile").contains("stderr"));
    assert!(reason(&imported, "pgbouncer.tcp_keepalive").contains("keepalive"));
    assert!(reason(&imported, "pgbouncer.frobnicate").contains("no tidepool equivalent"));
    assert!(reason(&imported, "pgbouncer.server_tls_sslmode").contains("prefer"));
    assert!(reason(&imported, "databases.*").contains("`*`"));
    assert!(reason(&imported, "databases.other").contains("other servers"));
    assert!(reason(&imported, "databases.forced").contains("forced server login"));
    assert!(reason(&imported, "users.app").contains("max_user_connections=10"));
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
    assert_eq!(config.proxy.listen.to_string(), "10.0.0.5:6432");
    assert!(reason(&imported, "pgbouncer.listen_addr").contains("10.0.0.6"));
    assert!(reason(&imported, "pgbouncer.pool_mode").contains("transaction kept"));
    assert_eq!(config.proxy.pool_mode, PoolMode::Transaction);
}
