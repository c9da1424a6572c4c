//! The Prometheus endpoint against real PostgreSQL: /metrics scraped before and after known
//! traffic and parsed with a text-format parser; counters and histograms move by the expected
//! amounts; /healthz, /readyz and bad requests.

mod common;

use common::*;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tidepool::cluster::{LocalCluster, NodeOptions, PgBinaries};
use tidepool::config::Config;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One sample of the text exposition format.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses the Prometheus text format (0.0.4): comments, `name{label="value",…} value`.
fn parse_exposition(text: &str) -> Vec<Sample> {
    let mut samples = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .unwrap_or_else(|| panic!("no value: {line}"));
        let name = line[..name_end].to_string();
        let mut rest = &line[name_end..];
        let mut labels = BTreeMap::new();
        if let Some(inner) = rest.strip_prefix('{') {
            let mut chars = inner.char_indices().peekable();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                if c == '}' {
                    end = Some(i);
                    break;
                }
                if c == ',' || c == ' ' {
                    continue;
                }
                // label name up to '=', then a quoted value with \\, \" and \n escapes
                let start = i;
                let mut eq = i;
                for (j, c) in chars.by_ref() {
                    if c == '=' {
                        eq = j;
                        break;
                    }
                }
                let key = inner[start..eq].to_string();
                assert_eq!(
                    chars.next().map(|(_, c)| c),
                    Some('"'),
                    "label value not quoted: {line}"
                );
                let mut value = String::new();
                while let Some((_, c)) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => match chars.next().map(|(_, c)| c) {
                            Some('n') => value.push('\n'),
                            Some(other) => value.push(other),
                            None => panic!("dangling escape: {line}"),
                        },
                        other => value.push(other),
                    }
                }
                labels.insert(key, value);
            }
            let end = end.unwrap_or_else(|| panic!("unclosed labels: {line}"));
            rest = &inner[end + 1..];
        }
        let value_text = rest
            .split_whitespace()
            .next()
            .unwrap_or_else(|| panic!("no value: {line}"));
        let value = match value_text {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            other => other
                .parse()
                .unwrap_or_else(|_| panic!("bad value {other:?} in {line}")),
        };
        samples.push(Sample { name, labels, value });
    }
    samples
}

struct Scrape(Vec<Sample>);

impl Scrape {
    /// The sum of the samples named `name` carrying all of `labels` (0 when there are none).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| {
                labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .sum()
    }

    fn has(&self, name: &str) -> bool {
        self.0.iter().any(|s| s.name == name)
    }
}

/// One HTTP/1.1 request; returns the status code and the body.
async fn http(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to metrics");
    stream.write_all(request).await.expect("send request");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read response");
    let text = String::from_utf8(response).expect("utf-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status code");
    (status, body.to_string())
}

async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    http(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes(),
    )
    .await
}

async fn scrape(addr: SocketAddr) -> Scrape {
    let (status, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    Scrape(parse_exposition(&body))
}

/// Scrapes until `ready` holds: a client sees its ReadyForQuery a moment before its session
/// records the exchange, so the counters may trail the client by one step.
async fn scrape_until(addr: SocketAddr, ready: impl Fn(&Scrape) -> bool) -> Scrape {
    for _ in 0..500 {
        let scrape = scrape(addr).await;
        if ready(&scrape) {
            return scrape;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    scrape(addr).await
}

fn with_metrics(toml: String) -> Config {
    Config::from_toml(&format!("{toml}\n[metrics]\nlisten = \"127.0.0.1:0\"\n")).expect("valid config")
}

#[tokio::test]
async fn counters_and_histograms_follow_known_traffic() {
    let proxy = start_proxy(with_metrics(base_config_toml(pg()))).await;
    let metrics = proxy.metrics_addr().expect("metrics listen");
    let client = connect(proxy.local_addr(), APP_USER, APP_PASSWORD, APP_DB).await;
    let node = format!("127.0.0.1:{}", pg().port);
    let pool = [("database", APP_DB), ("user", APP_USER), ("node", node.as_str())];
    let primary = [("route", "primary")];

    let before = scrape(metrics).await;
    for _ in 0..5 {
        client.simple_query("SELECT 1").await.expect("select");
    }
    let error = client
        .simple_query("SELECT * FROM no_such_table")
        .await
        .expect_err("42P01");
    assert_eq!(error.as_db_error().unwrap().code().code(), "42P01");
    let idle_client = [pool.as_slice(), &[("state", "idle")]].concat();
    let after = scrape_until(metrics, |s| {
        s.get("tidepool_transactions_total", &primary) - before.get("tidepool_transactions_total", &primary)
            >= 6.0
            && s.get("tidepool_clients", &idle_client) == 1.0
    })
    .await;

    let delta = |name: &str, labels: &[(&str, &str)]| after.get(name, labels) - before.get(name, labels);
    // Six autocommit statements: six transactions, six requests, six checkouts.
    assert_eq!(delta("tidepool_transactions_total", &primary), 6.0);
    assert_eq!(delta("tidepool_queries_total", &primary), 6.0);
    assert_eq!(delta("tidepool_pool_transactions_total", &pool), 6.0);
    assert_eq!(delta("tidepool_pool_queries_total", &pool), 6.0);
    assert_eq!(delta("tidepool_pool_wait_seconds_count", &pool), 6.0);
    assert_eq!(delta("tidepool_pool_query_duration_seconds_count", &pool), 6.0);
    assert_eq!(
        delta(
            "tidepool_role_query_duration_seconds_count",
            &[("role", "primary")]
        ),
        6.0
    );
    assert_eq!(
        delta("tidepool_role_wait_seconds_count", &[("role", "primary")]),
        6.0
    );
    assert_eq!(delta("tidepool_errors_total", &[("class", "42")]), 1.0);
    assert!(delta("tidepool_pool_received_bytes_total", &pool) > 0.0);
    assert!(delta("tidepool_pool_sent_bytes_total", &pool) > 0.0);
    assert!(delta("tidepool_pool_query_duration_seconds_sum", &pool) > 0.0);
    // The +Inf bucket counts every observation.
    let inf = [pool.as_slice(), &[("le", "+Inf")]].concat();
    assert_eq!(
        after.get("tidepool_pool_wait_seconds_bucket", &inf),
        after.get("tidepool_pool_wait_seconds_count", &pool)
    );

    // Gauges: the one client idles between transactions; its backend idles in the pool.
    assert_eq!(after.get("tidepool_clients", &idle_client), 1.0);
    let idle_backend = [pool.as_slice(), &[("state", "idle")]].concat();
    assert!(after.get("tidepool_backends", &idle_backend) >= 1.0);
    assert!(after.has("tidepool_routing_decisions_total"));

    drop(client);
    proxy.shutdown_within(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn health_readiness_and_bad_requests() {
    let proxy = start_proxy(with_metrics(base_config_toml(pg()))).await;
    let metrics = proxy.metrics_addr().expect("metrics listen");
    assert_eq!(get(metrics, "/healthz").await.0, 200);
    // One node, up: ready.
    assert_eq!(get(metrics, "/readyz").await.0, 200);
    assert_eq!(
        http(metrics, b"HEAD /metrics HTTP/1.1\r\n\r\n").await,
        (200, String::new())
    );
    assert_eq!(get(metrics, "/nowhere").await.0, 404);
    assert_eq!(http(metrics, b"POST /metrics HTTP/1.1\r\n\r\n").await.0, 405);
    assert_eq!(http(metrics, b"GET metrics\r\n\r\n").await.0, 400);
    let huge = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(10_000));
    assert_eq!(http(metrics, huge.as_bytes()).await.0, 431);
    proxy.shutdown_within(Duration::from_secs(5)).await;
}

/// `SHUTDOWN WAIT_FOR_CLIENTS`: not ready (so a load balancer stops sending), yet metrics and
/// connected clients are served until the last client leaves.
#[tokio::test]
async fn readiness_fails_while_draining_clients() {
    let proxy = start_proxy(with_metrics(base_config_toml(pg()))).await;
    let metrics = proxy.metrics_addr().expect("metrics listen");
    let client = connect(proxy.local_addr(), APP_USER, APP_PASSWORD, APP_DB).await;
    proxy.shared().shutdown.trigger_drain();
    let (status, body) = get(metrics, "/readyz").await;
    assert_eq!((status, body.as_str()), (503, "shutting down\n"));
    assert_eq!(get(metrics, "/metrics").await.0, 200);
    assert_eq!(first_value(&client.simple_query("SELECT 5").await.unwrap()), "5");
    drop(client);
    // Resolves once the client's connection is gone (bounded only against a hang).
    tokio::time::timeout(Duration::from_secs(60), proxy.clients_gone())
        .await
        .expect("the drain ends when the last client leaves");
    proxy.shutdown_within(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn readiness_fails_when_the_only_node_is_unreachable() {
    // A port nobody listens on: bind one and close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let toml = base_config_toml(pg()).replace(&format!("port = {}", pg().port), &format!("port = {port}"));
    let proxy = start_proxy(with_metrics(toml)).await;
    let metrics = proxy.metrics_addr().expect("metrics listen");
    assert_eq!(get(metrics, "/healthz").await.0, 200);
    assert_eq!(get(metrics, "/readyz").await.0, 503);
    proxy.shutdown_within(Duration::from_secs(5)).await;
}

/// A primary and one streaming standby: routes, roles and node gauges.
#[tokio::test]
async fn routing_decisions_roles_and_node_gauges() {
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
    let mut toml = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\n\n[health]\nhealth_check_interval = \"100ms\"\n\n\
         [routing]\nmax_lag = \"0\"\nmax_lag_bytes = \"0\"\n\n[databases.{APP_DB}]\n\n\
         [[users]]\nname = \"{APP_USER}\"\npassword = \"{APP_PASSWORD}\"\n"
    );
    for node in cluster.nodes() {
        toml.push_str(&format!(
            "\n[[nodes]]\nhost = \"127.0.0.1\"\nport = {}\n",
            node.port
        ));
    }
    let proxy = start_proxy(with_metrics(toml)).await;
    let metrics = proxy.metrics_addr().expect("metrics listen");
    let health = proxy.shared().health().expect("two nodes are checked");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(health.view().primary().is_some() && health.view().nodes.iter().any(|n| n.is_usable_standby())) {
        assert!(
            Instant::now() < deadline,
            "no primary and standby: {:?}",
            health.view()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(get(metrics, "/readyz").await.0, 200);

    let client = connect(proxy.local_addr(), APP_USER, APP_PASSWORD, APP_DB).await;
    let before = scrape(metrics).await;
    for _ in 0..4 {
        client.simple_query("SELECT 1").await.expect("read");
    }
    for _ in 0..2 {
        client
            .simple_query("SELECT txid_current()")
            .await
            .expect("write function");
    }
    let after = scrape(metrics).await;
    let delta = |name: &str, labels: &[(&str, &str)]| after.get(name, labels) - before.get(name, labels);
    assert_eq!(
        delta("tidepool_routing_decisions_total", &[("reason", "read")]),
        4.0
    );
    assert_eq!(
        delta(
            "tidepool_routing_decisions_total",
            &[("reason", "write_function")]
        ),
        2.0
    );
    assert_eq!(delta("tidepool_transactions_total", &[("route", "standby")]), 4.0);
    assert_eq!(delta("tidepool_transactions_total", &[("route", "primary")]), 2.0);
    assert_eq!(
        delta(
            "tidepool_role_query_duration_seconds_count",
            &[("role", "standby")]
        ),
        4.0
    );

    let primary = format!("127.0.0.1:{}", cluster.primary.port);
    let standby = format!("127.0.0.1:{}", cluster.standbys[0].port);
    assert_eq!(after.get("tidepool_node_up", &[("node", &primary)]), 1.0);
    assert_eq!(after.get("tidepool_node_up", &[("node", &standby)]), 1.0);
    assert_eq!(
        after.get("tidepool_node_role", &[("node", &primary), ("role", "primary")]),
        1.0
    );
    assert_eq!(
        after.get("tidepool_node_role", &[("node", &standby), ("role", "standby")]),
        1.0
    );
    assert_eq!(after.get("tidepool_node_fenced", &[("node", &standby)]), 0.0);
    assert_eq!(after.get("tidepool_node_timeline", &[("node", &primary)]), 1.0);
    drop(client);
    proxy.shutdown_within(Duration::from_secs(5)).await;
}

#[test]
fn the_parser_reads_labels_escapes_and_special_values() {
    let samples = parse_exposition(
        "# HELP x help\n# TYPE x counter\nx 3\ny{a=\"1\",b=\"q\\\"\\\\\\n\"} 2.5\nz_bucket{le=\"+Inf\"} +Inf\n",
    );
    assert_eq!(samples.len(), 3);
    assert_eq!(samples[0].value, 3.0);
    assert_eq!(samples[1].labels["b"], "q\"\\\n");
    assert_eq!(samples[1].value, 2.5);
    assert_eq!(samples[2].labels["le"], "+Inf");
    assert!(samples[2].value.is_infinite());
}
