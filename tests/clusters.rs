//! Named clusters and the `*` database against two real PostgreSQL clusters: one tidepool
//! routes each database to its own cluster (pgbench on both at once), forwards names created
//! after it started through `*`, bounds and closes those, and labels metrics with the cluster.

mod common;

use common::console::{show, sqlstate, until, ADMIN};
use common::{connect, first_value, pg, pg_tool_cmd, try_connect, APP_DB, APP_PASSWORD, APP_USER};
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;
use tidepool::cluster::{LocalCluster, NodeOptions, PgBinaries};
use tidepool::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The database that lives only on the second cluster.
const REPORTS_DB: &str = "reports";

static SECOND: OnceLock<LocalCluster> = OnceLock::new();

/// A second throwaway cluster: role `app`, database `reports`, and none called `app`.
fn second() -> &'static LocalCluster {
    SECOND.get_or_init(|| {
        let bins = PgBinaries::locate().expect("PostgreSQL binaries");
        let cluster = LocalCluster::start(&bins, NodeOptions::default()).expect("second cluster starts");
        cluster.create_role(APP_USER, APP_PASSWORD).expect("role app");
        cluster
            .create_database(REPORTS_DB, APP_USER)
            .expect("database reports");
        cluster
    })
}

/// `app` on the harness cluster (the default one), `reports` and `*` on cluster `second`.
fn two_cluster_toml(extra_pool: &str) -> String {
    format!(
        r#"[proxy]
listen = "127.0.0.1:0"
pool_mode = "transaction"
admin_users = ["admin"]

[pool]
default_pool_size = 10
{extra_pool}

[metrics]
listen = "127.0.0.1:0"

[[nodes]]
host = "127.0.0.1"
port = {first}

[clusters.second]
nodes = [{{ host = "127.0.0.1", port = {second} }}]

[databases.{APP_DB}]

[databases.{REPORTS_DB}]
cluster = "second"

[databases."*"]
cluster = "second"

[[users]]
name = "{APP_USER}"
password = "{APP_PASSWORD}"

[[users]]
name = "admin"
password = "admin-secret"
"#,
        first = pg().port,
        second = second().primary.port,
    )
}

fn two_clusters(extra_pool: &str) -> Config {
    Config::from_toml(&two_cluster_toml(extra_pool)).expect("valid two-cluster config")
}

/// Runs a blocking command off the runtime (the proxy under test runs on it) and checks it.
async fn run(mut command: std::process::Command, what: &'static str) -> String {
    let out = tokio::task::spawn_blocking(move || command.stdin(Stdio::null()).output())
        .await
        .expect("join")
        .expect("the tool runs");
    assert!(
        out.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn pgbench(addr: SocketAddr, db: &str, args: &[&str]) -> std::process::Command {
    let mut command = pg_tool_cmd("pgbench", addr, APP_USER, APP_PASSWORD, db);
    command.args(args);
    command
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_reaches_two_clusters_through_one_tidepool() {
    let proxy = common::start_proxy(two_clusters("")).await;
    let addr = proxy.local_addr();
    let (app_node, reports_node) = (pg().addr(), second().primary.addr());
    // Tables made on each server directly, so that only the run goes through tidepool.
    run(
        pgbench(app_node, APP_DB, &["-i", "-q", "-s", "1"]),
        "pgbench -i app",
    )
    .await;
    run(
        pgbench(reports_node, REPORTS_DB, &["-i", "-q", "-s", "1"]),
        "pgbench -i reports",
    )
    .await;

    // Both runs at once: 4 clients × 25 transactions each, every one through the proxy.
    let args = ["-n", "-c", "4", "-j", "2", "-t", "25", "-M", "extended"];
    let app_run = run(pgbench(addr, APP_DB, &args), "pgbench app");
    let reports_run = run(pgbench(addr, REPORTS_DB, &args), "pgbench reports");
    let (app_out, reports_out) = tokio::join!(app_run, reports_run);
    for out in [&app_out, &reports_out] {
        assert!(
            out.contains("number of transactions actually processed: 100/100"),
            "{out}"
        );
    }
    // Each server saw exactly its own database's transactions.
    let history = "SELECT count(*) FROM pgbench_history";
    assert_eq!(pg().psql(APP_DB, history).unwrap().trim(), "100");
    assert_eq!(second().primary.psql(REPORTS_DB, history).unwrap().trim(), "100");

    // A client on each sees its own server.
    for (db, node) in [(APP_DB, app_node), (REPORTS_DB, reports_node)] {
        let client = connect(addr, APP_USER, APP_PASSWORD, db).await;
        let port = first_value(&client.simple_query("SELECT inet_server_port()").await.unwrap());
        assert_eq!(port, node.port().to_string(), "{db}");
    }

    // SHOW DATABASES gives each database its cluster's address.
    let console = connect(addr, ADMIN.0, "admin-secret", "tidepool").await;
    let databases = show(&console, "SHOW DATABASES").await;
    for (db, node) in [(APP_DB, app_node), (REPORTS_DB, reports_node)] {
        let row = databases.rows_where("name", db);
        assert_eq!(row.len(), 1, "{db} listed once");
        assert_eq!(
            databases.get(row[0], "port"),
            Some(node.port().to_string().as_str())
        );
        assert_eq!(databases.get(row[0], "host"), Some("127.0.0.1"));
    }
    assert!(
        databases.rows_where("name", "*").is_empty(),
        "`*` itself is not a database"
    );

    // /metrics labels each pool with its cluster.
    let body = http_get(proxy.metrics_addr().expect("metrics"), "/metrics").await;
    let has = |db: &str, cluster: &str| {
        body.lines().any(|l| {
            l.starts_with("tidepool_pool_transactions_total{")
                && l.contains(&format!("database=\"{db}\""))
                && l.contains(&format!("cluster=\"{cluster}\""))
        })
    };
    assert!(has(APP_DB, "default") && has(REPORTS_DB, "second"), "{body}");
    proxy.shutdown_within(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn star_serves_databases_created_later_bounds_and_closes_them() {
    let proxy = common::start_proxy(two_clusters(
        "autodb_idle_timeout = \"1s\"\nmax_auto_databases = 1",
    ))
    .await;
    let addr = proxy.local_addr();
    // Created after tidepool started.
    let node = &second().primary;
    node.psql("postgres", "CREATE DATABASE late_one OWNER app")
        .unwrap();
    node.psql("postgres", "CREATE DATABASE late_two OWNER app")
        .unwrap();

    let late = connect(addr, APP_USER, APP_PASSWORD, "late_one").await;
    let row = late
        .simple_query("SELECT current_database() || ':' || inet_server_port()")
        .await
        .unwrap();
    assert_eq!(first_value(&row), format!("late_one:{}", node.port));
    let console = connect(addr, ADMIN.0, "admin-secret", "tidepool").await;
    let databases = show(&console, "SHOW DATABASES").await;
    let row = databases.rows_where("name", "late_one");
    assert_eq!(row.len(), 1, "an open `*` database is listed");
    assert_eq!(
        databases.get(row[0], "port"),
        Some(node.port.to_string().as_str())
    );

    // One `*` database at a time: the second name is refused like too many connections.
    let over = refused(addr, "late_two").await;
    assert_eq!(sqlstate(&over), "53300", "{over}");

    // Its last client gone, late_one closes after autodb_idle_timeout, making room.
    drop(late);
    until(&console, "SHOW DATABASES", |t| {
        t.rows_where("name", "late_one").is_empty()
    })
    .await;
    let pools = show(&console, "SHOW POOLS").await;
    assert!(
        pools.rows_where("database", "late_one").is_empty(),
        "its pools are gone"
    );
    let two = connect(addr, APP_USER, APP_PASSWORD, "late_two").await;
    assert_eq!(
        first_value(&two.simple_query("SELECT current_database()").await.unwrap()),
        "late_two"
    );
    drop(two);
    until(&console, "SHOW DATABASES", |t| {
        t.rows_where("name", "late_two").is_empty()
    })
    .await;
    let missing = refused(addr, "never_created").await;
    assert_eq!(sqlstate(&missing), "3D000", "{missing}");
    proxy.shutdown_within(Duration::from_secs(5)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_can_log_in_as_its_own_server_user() {
    let node = &second().primary;
    node.psql(
        "postgres",
        "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'report_owner') THEN \
         CREATE ROLE report_owner LOGIN PASSWORD 'owner-secret'; END IF; END $$;\n\
         GRANT CONNECT ON DATABASE reports TO report_owner;",
    )
    .unwrap();
    let toml = two_cluster_toml("").replace(
        "[databases.reports]\ncluster = \"second\"\n",
        "[databases.reports]\ncluster = \"second\"\nuser = \"report_owner\"\npassword = \"owner-secret\"\n[databases.reports_alias]\ncluster = \"second\"\ndbname = \"reports\"\n",
    );
    let proxy = common::start_proxy(Config::from_toml(&toml).expect("valid")).await;
    let addr = proxy.local_addr();
    let forced = connect(addr, APP_USER, APP_PASSWORD, REPORTS_DB).await;
    let who = "SELECT current_user || '@' || current_database()";
    assert_eq!(
        first_value(&forced.simple_query(who).await.unwrap()),
        "report_owner@reports"
    );
    let alias = connect(addr, APP_USER, APP_PASSWORD, "reports_alias").await;
    assert_eq!(
        first_value(&alias.simple_query(who).await.unwrap()),
        "app@reports"
    );
    let console = connect(addr, ADMIN.0, "admin-secret", "tidepool").await;
    let databases = show(&console, "SHOW DATABASES").await;
    let row = databases.rows_where("name", REPORTS_DB);
    assert_eq!(databases.get(row[0], "force_user"), Some("report_owner"));
    let row = databases.rows_where("name", "reports_alias");
    assert_eq!(databases.get(row[0], "database"), Some("reports"));
    proxy.shutdown_within(Duration::from_secs(5)).await;
}

/// The error a login to `db` as `app` gets; panics if it succeeds.
async fn refused(addr: SocketAddr, db: &str) -> tokio_postgres::Error {
    match try_connect(addr, APP_USER, APP_PASSWORD, db).await {
        Ok(_) => panic!("a login to {db} was accepted"),
        Err(error) => error,
    }
}

/// A plain HTTP/1.1 GET; the body.
async fn http_get(addr: SocketAddr, path: &str) -> String {
    http_exchange(addr, path).await.1
}

/// GET `path`: the status code and the body.
async fn http_exchange(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("metrics connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8_lossy(&response).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = (text.split_once("\r\n\r\n"))
        .map(|(_, body)| body.to_string())
        .unwrap_or(text);
    (status, body)
}

/// /readyz with several clusters: one cluster without a reachable node does not take the
/// whole tidepool out of a load balancer (the others still serve their databases); asked by
/// name, that cluster is not ready, and a name no database uses is not found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_answers_for_the_proxy_and_for_each_cluster() {
    // A port nobody listens on: a cluster whose only node is down.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let toml = tokio::task::block_in_place(|| two_cluster_toml("")).replace(
        "[databases.\"*\"]",
        &format!(
            "[clusters.gone]\nnodes = [{{ host = \"127.0.0.1\", port = {dead} }}]\n\n\
             [databases.gone_db]\ncluster = \"gone\"\n\n[databases.\"*\"]"
        ),
    );
    let proxy = common::start_proxy(Config::from_toml(&toml).unwrap()).await;
    let metrics = proxy.metrics_addr().expect("metrics");
    let (status, body) = http_exchange(metrics, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.starts_with("ready\n") && body.contains("cluster gone: the node does not accept connections"),
        "{body}"
    );
    let (status, body) = http_exchange(metrics, "/readyz?cluster=gone").await;
    assert_eq!(status, 503, "{body}");
    let (status, body) = http_exchange(metrics, "/readyz?cluster=second").await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    let (status, body) = http_exchange(metrics, "/readyz?cluster=nope").await;
    assert_eq!(status, 404, "{body}");
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_cluster_has_its_own_health_checking_and_routing() {
    // A primary and a standby of their own, beside the harness's single-node default cluster.
    let replicated = tokio::task::spawn_blocking(|| {
        let bins = PgBinaries::locate().expect("PostgreSQL binaries");
        let mut cluster = LocalCluster::start(&bins, NodeOptions::default()).expect("cluster starts");
        cluster.create_role(APP_USER, APP_PASSWORD).expect("role app");
        cluster.create_database("replicated", APP_USER).expect("database");
        cluster.add_standby().expect("standby");
        cluster
    })
    .await
    .unwrap();
    let (primary, standby) = (replicated.primary.port, replicated.standbys[0].port);
    let toml = two_cluster_toml("").replace(
        "[databases.app]",
        &format!(
            "[clusters.replicated]\nnodes = [{{ host = \"127.0.0.1\", port = {primary} }}, {{ host = \"127.0.0.1\", port = {standby} }}]\n\
             [clusters.replicated.health]\nhealth_check_interval = \"100ms\"\n\n\
             [databases.replicated]\ncluster = \"replicated\"\n\n[databases.app]"
        ),
    );
    let proxy = common::start_proxy(Config::from_toml(&toml).expect("valid")).await;
    let addr = proxy.local_addr();
    assert!(
        proxy.shared().health_of("replicated").is_some(),
        "two nodes: checked"
    );
    assert!(
        proxy.shared().health_of("default").is_none(),
        "one node: not checked"
    );

    // SHOW NODES lists every cluster's nodes; the replicated one's roles come from its checks.
    let console = connect(addr, ADMIN.0, "admin-secret", "tidepool").await;
    let nodes = until(&console, "SHOW NODES", |t| {
        t.rows_where("cluster", "replicated")
            .iter()
            .any(|r| t.get(r, "role") == Some("standby") && t.get(r, "health") == Some("up"))
    })
    .await;
    assert_eq!(nodes.rows_where("cluster", "default").len(), 1);
    assert_eq!(nodes.rows_where("cluster", "second").len(), 1);
    let standby_row = nodes.rows_where("node", &format!("127.0.0.1:{standby}"));
    assert_eq!(nodes.get(standby_row[0], "cluster"), Some("replicated"));

    // Reads of the replicated database go to its standby, writes to its primary; the other
    // clusters' databases are served by their single node.
    let client = connect(addr, APP_USER, APP_PASSWORD, "replicated").await;
    let mut on_standby = false;
    for _ in 0..200 {
        let port = first_value(&client.simple_query("SELECT inet_server_port()").await.unwrap());
        if port == standby.to_string() {
            on_standby = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(on_standby, "reads never reached the replicated cluster's standby");
    let write = client
        .simple_query("SELECT inet_server_port(), txid_current()")
        .await
        .unwrap();
    assert_eq!(first_value(&write), primary.to_string());
    let app = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    let port = first_value(&app.simple_query("SELECT inet_server_port()").await.unwrap());
    assert_eq!(port, pg().port.to_string());

    // /metrics: node series carry their cluster.
    let body = http_get(proxy.metrics_addr().expect("metrics"), "/metrics").await;
    let up = format!("tidepool_node_up{{cluster=\"replicated\",node=\"127.0.0.1:{standby}\"}} 1");
    assert!(body.lines().any(|l| l == up), "{up} in\n{body}");
    drop((client, app));
    proxy.shutdown_within(Duration::from_secs(5)).await;
    drop(replicated);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_moves_a_database_to_another_cluster_under_its_clients() {
    for node in [pg(), &second().primary] {
        node.psql("postgres", "DROP DATABASE IF EXISTS on_both").unwrap();
        node.psql("postgres", "CREATE DATABASE on_both OWNER app")
            .unwrap();
    }
    let toml = two_cluster_toml("") + "\n[databases.moving]\ndbname = \"on_both\"\n";
    let proxy = common::start_proxy(Config::from_toml(&toml).expect("valid")).await;
    let addr = proxy.local_addr();
    let client = connect(addr, APP_USER, APP_PASSWORD, "moving").await;
    let port = || async { first_value(&client.simple_query("SELECT inet_server_port()").await.unwrap()) };
    assert_eq!(port().await, pg().port.to_string());

    let moved = Config::from_toml(&(toml.clone() + "cluster = \"second\"\n")).expect("valid");
    let report = tidepool::reload::apply(proxy.shared(), moved)
        .await
        .expect("reload");
    assert!(report.pools_retired >= 1, "the old cluster's pool is retired");
    assert!(!report.health_restarted, "no cluster's checked nodes changed");
    // The same client's next transaction runs on the other cluster.
    assert_eq!(port().await, second().primary.port.to_string());
    let console = connect(addr, ADMIN.0, "admin-secret", "tidepool").await;
    let databases = show(&console, "SHOW DATABASES").await;
    let row = databases.rows_where("name", "moving");
    assert_eq!(
        databases.get(row[0], "port"),
        Some(second().primary.port.to_string().as_str())
    );
    drop(client);
    proxy.shutdown_within(Duration::from_secs(5)).await;
}
