//! Hot reload: pgbench keeps running while the config file changes three times (pool size, a
//! new user, a node's weight); a broken file is refused and the old config keeps serving;
//! backend changes retire connections at release, not mid-transaction; SIGHUP on the real
//! binary.

mod common;

use common::process::Tidepool;
use common::*;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tidepool::app::Proxy;
use tidepool::config::Config;

const NEW_USER: &str = "reload_user";
const NEW_PASSWORD: &str = "reload-secret";

/// The role the "new user" step logs in as, created once on the test server.
fn create_new_user() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        pg().psql(
            "postgres",
            &format!("CREATE ROLE {NEW_USER} LOGIN PASSWORD '{NEW_PASSWORD}';"),
        )
        .expect("create role");
    });
}

/// The base test config with a pool size, a node weight, and optionally the new user.
fn config_text(pool_size: usize, weight: u32, with_new_user: bool) -> String {
    let mut text = base_config_toml(pg())
        .replace(
            "default_pool_size = 10",
            &format!("default_pool_size = {pool_size}"),
        )
        .replace(
            &format!("port = {}\n", pg().port),
            &format!("port = {}\nweight = {weight}\n", pg().port),
        );
    if with_new_user {
        text.push_str(&format!(
            "\n[[users]]\nname = \"{NEW_USER}\"\npassword = \"{NEW_PASSWORD}\"\n"
        ));
    }
    text
}

/// Starts a proxy in process from a config file, as `tidepool --config FILE` would.
async fn start_from_file(file: &Path) -> Proxy {
    let config = Config::load(file).expect("valid config");
    let proxy = start_proxy(config).await;
    proxy.shared().set_config_path(file.to_path_buf());
    proxy
}

fn write(file: &Path, text: &str) {
    std::fs::write(file, text).expect("write config");
}

/// The pool of (app, app) on the only node.
fn app_pool(proxy: &Proxy) -> Arc<tidepool::pool::Pool> {
    proxy
        .shared()
        .pools
        .all()
        .into_iter()
        .find(|p| p.key.user == APP_USER && p.key.database == APP_DB)
        .expect("the app pool exists")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_pgbench_applies_pool_size_new_user_and_weight() {
    tokio::task::spawn_blocking(create_new_user).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tidepool.toml");
    write(&file, &config_text(2, 1, false));
    let proxy = start_from_file(&file).await;
    let addr = proxy.local_addr();

    let init = tokio::task::spawn_blocking(move || {
        pg_tool_cmd("pgbench", addr, APP_USER, APP_PASSWORD, APP_DB)
            .args(["-i", "-q", "-s", "1"])
            .output()
            .expect("pgbench -i")
    })
    .await
    .unwrap();
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));

    // Before the reload the new user cannot log in.
    assert!(try_connect(addr, NEW_USER, NEW_PASSWORD, APP_DB).await.is_err());

    let bench = tokio::task::spawn_blocking(move || {
        pg_tool_cmd("pgbench", addr, APP_USER, APP_PASSWORD, APP_DB)
            .args(["-c", "8", "-j", "2", "-T", "20", "-M", "extended"])
            .output()
            .expect("pgbench runs")
    });

    // Wait until pgbench is queueing on the pool of 2, so the reloads happen under load.
    let pool = loop {
        let found = proxy
            .shared()
            .pools
            .all()
            .into_iter()
            .find(|p| p.key.user == APP_USER && p.counts().2 > 0);
        if let Some(pool) = found {
            break pool;
        }
        assert!(!bench.is_finished(), "pgbench ended before it queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(pool.counts().0 <= 2, "pool of 2 has {:?}", pool.counts());

    // 1. Pool size 2 -> 6: the waiting clients get the new slots at once.
    write(&file, &config_text(6, 1, false));
    let report = tidepool::reload::reload(proxy.shared()).await.expect("reload 1");
    assert!(report.notes.is_empty(), "{:?}", report.notes);
    assert_eq!(report.pools_retired, 0, "a size change keeps the pool");
    assert_eq!(pool.settings().limits.pool_size, 6);
    let mut most_open = 0;
    for _ in 0..200 {
        most_open = most_open.max(pool.counts().0);
        if most_open > 2 || bench.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(most_open > 2, "the pool never grew past 2 after the reload");

    // 2. A new user, who then logs in and works.
    write(&file, &config_text(6, 1, true));
    tidepool::reload::reload(proxy.shared()).await.expect("reload 2");
    let client = connect(addr, NEW_USER, NEW_PASSWORD, APP_DB).await;
    let who = client.simple_query("SELECT current_user").await.unwrap();
    assert_eq!(first_value(&who), NEW_USER);

    // 3. The node's weight.
    write(&file, &config_text(6, 3, true));
    tidepool::reload::reload(proxy.shared()).await.expect("reload 3");
    assert_eq!(proxy.shared().snapshot().weights, vec![3]);
    assert!(
        !bench.is_finished(),
        "pgbench ended before the last reload; the test proves less than it should"
    );

    let out = bench.await.unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("number of failed transactions: 0 (0.000%)"),
        "{text}"
    );
    assert_eq!(app_pool(&proxy).settings().limits.pool_size, 6);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_config_is_refused_and_the_old_one_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tidepool.toml");
    write(&file, &config_text(4, 1, false));
    let proxy = start_from_file(&file).await;
    let addr = proxy.local_addr();
    let client = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;

    // Files the config names are part of it: a bad line or a missing certificate refuses it too.
    let userlist = dir.path().join("userlist.txt");
    write(&userlist, "\"app\" \"secret\"\nnot a userlist line\n");
    let hba = dir.path().join("pg_hba.conf");
    write(
        &hba,
        "host all all 127.0.0.1/32 scram-sha-256\nhost all all all no-such-method\n",
    );
    let missing_cert = dir.path().join("missing.crt");
    let broken = [
        (config_text(0, 1, false), "pool.default_pool_size: must be > 0".to_string()),
        (config_text(4, 1, false).replace("[pool]", "[pool\n"), "line".to_string()),
        (config_text(4, 1, false) + "\n[proxy2]\n", "unknown field".to_string()),
        (
            config_text(4, 1, false) + &format!("\n[auth]\nauth_file = {:?}\n", userlist.display().to_string()),
            "line 2".to_string(),
        ),
        (
            config_text(4, 1, false) + &format!("\n[auth]\nauth_hba_file = {:?}\n", hba.display().to_string()),
            "line 2".to_string(),
        ),
        (
            config_text(4, 1, false)
                + &format!(
                    "\n[tls]\nclient_tls_mode = \"require\"\nclient_tls_cert_file = {0:?}\nclient_tls_key_file = {0:?}\n",
                    missing_cert.display().to_string()
                ),
            "client_tls_cert_file".to_string(),
        ),
    ];
    for (text, expected) in broken {
        write(&file, &text);
        let error = tidepool::reload::reload(proxy.shared())
            .await
            .expect_err("a broken config is refused");
        assert!(
            error.to_string().contains(&expected),
            "{error} lacks {expected:?}"
        );
        // Still the old config, still serving, old and new clients alike.
        assert_eq!(proxy.shared().snapshot().config.pool.default_pool_size, 4);
        let rows = client.simple_query("SELECT 41 + 1").await.unwrap();
        assert_eq!(first_value(&rows), "42");
        let fresh = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
        assert_eq!(first_value(&fresh.simple_query("SELECT 1").await.unwrap()), "1");
    }

    // A missing file too.
    std::fs::remove_file(&file).unwrap();
    let error = tidepool::reload::reload(proxy.shared())
        .await
        .expect_err("no file");
    assert!(error.to_string().contains("tidepool.toml"), "{error}");
    assert_eq!(first_value(&client.simple_query("SELECT 1").await.unwrap()), "1");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_that_cannot_change_are_reported_and_a_config_in_memory_has_no_file() {
    let proxy = start_proxy(base_config(pg())).await;
    let error = tidepool::reload::reload(proxy.shared())
        .await
        .expect_err("no file");
    assert!(
        matches!(error, tidepool::reload::ReloadError::NoConfigFile),
        "{error}"
    );

    let mut config = base_config(pg());
    config.proxy.listen = "127.0.0.1:1".parse().unwrap();
    config.proxy.log_format = tidepool::config::LogFormat::Json;
    config.pool.default_pool_size = 7;
    let report = tidepool::reload::apply(proxy.shared(), config)
        .await
        .expect("applied");
    assert_eq!(
        report.notes,
        vec![
            "proxy.listen cannot change at runtime; restart to apply".to_string(),
            "proxy.log_format cannot change at runtime; restart to apply".to_string(),
        ]
    );
    // An invalid value (as an admin SET could make) is refused like a broken file.
    let mut invalid = base_config(pg());
    invalid.pool.default_pool_size = 0;
    let error = tidepool::reload::apply(proxy.shared(), invalid)
        .await
        .expect_err("invalid");
    assert_eq!(error.to_string(), "pool.default_pool_size: must be > 0");
    // The rest applied; the listener did not move.
    assert_eq!(proxy.shared().snapshot().config.pool.default_pool_size, 7);
    let client = connect(proxy.local_addr(), APP_USER, APP_PASSWORD, APP_DB).await;
    assert_eq!(first_value(&client.simple_query("SELECT 1").await.unwrap()), "1");
    proxy.shutdown().await;
}

/// A change of backend settings (here the server database) retires the pool: the transaction
/// in flight finishes on its backend, which is then closed instead of reused; the client's next
/// transaction runs on a new backend with the new settings, and the client never notices.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changed_backend_settings_retire_connections_at_release_not_mid_transaction() {
    let mut config = base_config(pg());
    config.pool.default_pool_size = 2;
    let proxy = start_proxy(config.clone()).await;
    let addr = proxy.local_addr();
    let client = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    client.simple_query("BEGIN").await.unwrap();
    let old_pid = first_value(&client.simple_query("SELECT pg_backend_pid()").await.unwrap());

    config.databases.get_mut(APP_DB).unwrap().dbname = Some("postgres".into());
    let report = tidepool::reload::apply(proxy.shared(), config)
        .await
        .expect("applied");
    assert_eq!(report.pools_retired, 1);

    // Same transaction, same backend, old database.
    let rows = client
        .simple_query("SELECT pg_backend_pid()::text || ' ' || current_database()")
        .await
        .unwrap();
    assert_eq!(first_value(&rows), format!("{old_pid} {APP_DB}"));
    client.simple_query("COMMIT").await.unwrap();

    // Next transaction: the new settings, on another backend.
    let rows = client
        .simple_query("SELECT pg_backend_pid()::text || ' ' || current_database()")
        .await
        .unwrap();
    let value = first_value(&rows);
    let (pid, db) = value.split_once(' ').unwrap();
    assert_eq!(db, "postgres");
    assert_ne!(pid, old_pid);

    // The old backend was closed at release.
    let mut gone = false;
    for _ in 0..100 {
        let rows = client
            .simple_query(&format!(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = {old_pid}"
            ))
            .await
            .unwrap();
        if first_value(&rows) == "0" {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone, "backend {old_pid} of the retired pool is still open");
    proxy.shutdown().await;
}

#[test]
fn sighup_reloads_the_file_and_refuses_a_broken_one() {
    create_new_user();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("tidepool.toml");
    let json = |text: String| text.replace("[proxy]\n", "[proxy]\nlog_format = \"json\"\n");
    write(&file, &json(config_text(3, 1, false)));
    let mut tidepool = Tidepool::start(&file);
    let addr = tidepool.addr();
    let runtime = tokio::runtime::Runtime::new().unwrap();

    runtime.block_on(async {
        assert!(try_connect(addr, NEW_USER, NEW_PASSWORD, APP_DB).await.is_err());
    });
    write(&file, &json(config_text(3, 1, true)));
    tidepool.signal("HUP");
    tidepool.wait_for_line("configuration reloaded");
    runtime.block_on(async {
        let client = connect(addr, NEW_USER, NEW_PASSWORD, APP_DB).await;
        assert_eq!(
            first_value(&client.simple_query("SELECT current_user").await.unwrap()),
            NEW_USER
        );
    });

    write(&file, &json(config_text(0, 1, true)));
    tidepool.signal("HUP");
    let refused = tidepool.wait_for_line("reload refused");
    assert!(
        refused.contains("pool.default_pool_size: must be > 0"),
        "{refused}"
    );
    runtime.block_on(async {
        let client = connect(addr, NEW_USER, NEW_PASSWORD, APP_DB).await;
        assert_eq!(first_value(&client.simple_query("SELECT 1").await.unwrap()), "1");
    });

    tidepool.signal("TERM");
    let status = tidepool.wait();
    assert!(status.success(), "{status}");
    // Never a secret in the logs.
    let all = tidepool.lines().join("\n");
    assert!(
        !all.contains(APP_PASSWORD) && !all.contains(NEW_PASSWORD),
        "{all}"
    );
}

/// Nodes follow reloads: adding a standby starts health checking and reads move to it, weight
/// 0 takes it out of the read rotation, removing it stops checking; one client stays connected
/// throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_added_reweighted_and_removed_by_reload() {
    use tidepool::cluster::{LocalCluster, NodeOptions, PgBinaries};
    let cluster = tokio::task::spawn_blocking(|| {
        let bins = PgBinaries::locate().unwrap();
        let mut cluster = LocalCluster::start(&bins, NodeOptions::default()).unwrap();
        cluster.create_role(APP_USER, APP_PASSWORD).unwrap();
        cluster.create_database(APP_DB, APP_USER).unwrap();
        cluster.add_standby().unwrap();
        cluster
    })
    .await
    .unwrap();
    let ports: Vec<u16> = cluster.nodes().map(|n| n.port).collect();
    let config = |nodes: &[(u16, u32)]| {
        let mut toml = format!(
            "[proxy]\nlisten = \"127.0.0.1:0\"\n\n[pool]\ndefault_pool_size = 4\n\n\
             [health]\nhealth_check_interval = \"100ms\"\nfall = 2\nrise = 1\n\n\
             [databases.{APP_DB}]\n\n[[users]]\nname = \"{APP_USER}\"\npassword = \"{APP_PASSWORD}\"\n"
        );
        for (port, weight) in nodes {
            toml.push_str(&format!(
                "\n[[nodes]]\nhost = \"127.0.0.1\"\nport = {port}\nweight = {weight}\n"
            ));
        }
        Config::from_toml(&toml).unwrap()
    };
    let proxy = start_proxy(config(&[(ports[0], 1)])).await;
    assert!(proxy.shared().health().is_none());
    let client = connect(proxy.local_addr(), APP_USER, APP_PASSWORD, APP_DB).await;
    let in_recovery =
        || async { first_value(&client.simple_query("SELECT pg_is_in_recovery()").await.unwrap()) };
    assert_eq!(in_recovery().await, "f");

    // Add the standby: checking starts, and reads go there once it is seen up.
    let report = tidepool::reload::apply(proxy.shared(), config(&[(ports[0], 1), (ports[1], 1)]))
        .await
        .unwrap();
    assert!(report.health_restarted);
    let health = proxy.shared().health().expect("checking two nodes");
    assert_eq!(health.view().nodes.len(), 2);
    let mut on_standby = false;
    for _ in 0..500 {
        if in_recovery().await == "t" {
            on_standby = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(on_standby, "reads never reached the added standby");
    // Writes still go to the primary.
    let rows = client
        .simple_query("SELECT pg_is_in_recovery(), txid_current()")
        .await
        .unwrap();
    assert_eq!(first_value(&rows), "f");

    // Weight 0: no more reads on the standby (they fall back to the primary). Checking goes on.
    let report = tidepool::reload::apply(proxy.shared(), config(&[(ports[0], 1), (ports[1], 0)]))
        .await
        .unwrap();
    assert!(
        !report.health_restarted,
        "a weight is not a reason to restart checking"
    );
    for _ in 0..10 {
        assert_eq!(in_recovery().await, "f");
    }

    // Remove the standby: no checking, one node, the client carries on.
    let report = tidepool::reload::apply(proxy.shared(), config(&[(ports[0], 1)]))
        .await
        .unwrap();
    assert!(report.health_restarted);
    assert!(report.pools_retired >= 1, "the standby's pool is retired");
    assert!(proxy.shared().health().is_none());
    for _ in 0..10 {
        assert_eq!(in_recovery().await, "f");
    }
    proxy.shutdown().await;
    drop(cluster);
}
