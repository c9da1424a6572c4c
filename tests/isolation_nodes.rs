//! Isolation with a primary and a standby (issue 12, item 4): read routing moves clients
//! between backends more often, so every node's pool must keep clients' session state apart.

mod common;

use common::*;
use std::time::Duration;
use tidepool::cluster::{LocalCluster, NodeOptions, PgBinaries};
use tidepool::config::Config;
use tokio::time::Instant;
use tokio_postgres::{Client, SimpleQueryMessage};

fn start_cluster() -> LocalCluster {
    let bins = PgBinaries::locate().unwrap();
    let mut cluster = LocalCluster::start(&bins, NodeOptions::default()).unwrap();
    cluster.create_role(APP_USER, APP_PASSWORD).unwrap();
    cluster.create_database(APP_DB, APP_USER).unwrap();
    cluster
        .primary
        .psql(
            APP_DB,
            &format!(
                "CREATE FUNCTION tenant_fn(t text) RETURNS text LANGUAGE sql
                     AS $f$ SELECT set_config('app.tenant', t, false) $f$;
                 CREATE ROLE probe_low NOLOGIN; GRANT probe_low TO {APP_USER};"
            ),
        )
        .unwrap();
    cluster.add_standby().unwrap();
    cluster
}

fn config(cluster: &LocalCluster) -> Config {
    let mut toml = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\npool_mode = \"transaction\"\n\n[pool]\ndefault_pool_size = 1\n\n\
         [health]\nhealth_check_interval = \"100ms\"\nhealth_check_timeout = \"1s\"\nfall = 2\nrise = 1\n\n\
         [databases.{APP_DB}]\n\n[[users]]\nname = \"{APP_USER}\"\npassword = \"{APP_PASSWORD}\"\n"
    );
    for node in cluster.nodes() {
        toml.push_str(&format!(
            "\n[[nodes]]\nhost = \"127.0.0.1\"\nport = {}\n",
            node.port
        ));
    }
    Config::from_toml(&toml).unwrap()
}

async fn value(c: &Client, sql: &str) -> Option<String> {
    let msgs = c.simple_query(sql).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
    msgs.iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0).map(str::to_string).filter(|v| !v.is_empty())),
            _ => None,
        })
        .flatten()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_and_primary_pools_keep_session_state_apart() {
    let cluster = tokio::task::block_in_place(start_cluster);
    let proxy = start_proxy(config(&cluster)).await;
    let addr = proxy.local_addr();
    let standby_port = cluster.standbys[0].port.to_string();
    let a = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    let b = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    // Until health checks know the standby (and it replayed the function), reads may go to
    // the primary.
    let deadline = Instant::now() + Duration::from_secs(30);
    let on_standby = "/* tidepool: standby */ SELECT inet_server_port()::text || ':' || \
                      (SELECT count(*) FROM pg_proc WHERE proname = 'tenant_fn')";
    while value(&a, on_standby).await != Some(format!("{standby_port}:1")) {
        assert!(Instant::now() < deadline, "the standby never served reads");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut changed_on_standby = false;
    for hint in ["/* tidepool: standby */", "/* tidepool: primary */"] {
        for change in [
            "SELECT set_config('app.tenant', 'a', false)",
            "SELECT tenant_fn('a')",
            "SELECT set_config('role', 'probe_low', false)",
        ] {
            let msgs = a
                .simple_query(&format!("{hint} {change}, inet_server_port()::text"))
                .await
                .unwrap();
            let port = msgs.iter().find_map(|m| match m {
                SimpleQueryMessage::Row(r) => r.get(1).map(str::to_string),
                _ => None,
            });
            changed_on_standby |= port.as_deref() == Some(standby_port.as_str());
            for reader in ["/* tidepool: standby */", "/* tidepool: primary */"] {
                let tenant = value(
                    &b,
                    &format!("{reader} SELECT current_setting('app.tenant', true)"),
                )
                .await;
                assert_eq!(tenant, None, "{hint} {change}: B reads A's tenant on {reader}");
                let user = value(&b, &format!("{reader} SELECT current_user::text")).await;
                assert_eq!(
                    user.as_deref(),
                    Some(APP_USER),
                    "{hint} {change}: B runs as A's role on {reader}"
                );
            }
            // A's own state follows it to either node.
            for reader in ["/* tidepool: standby */", "/* tidepool: primary */"] {
                if change.contains("role") {
                    let user = value(&a, &format!("{reader} SELECT current_user::text")).await;
                    assert_eq!(
                        user.as_deref(),
                        Some("probe_low"),
                        "{hint} {change}: A on {reader}"
                    );
                } else {
                    let tenant = value(
                        &a,
                        &format!("{reader} SELECT current_setting('app.tenant', true)"),
                    )
                    .await;
                    assert_eq!(tenant.as_deref(), Some("a"), "{hint} {change}: A on {reader}");
                }
            }
            a.simple_query("RESET ALL; RESET ROLE").await.unwrap();
        }
    }
    assert!(
        changed_on_standby,
        "no change ran on the standby: the test did not test it"
    );
}
