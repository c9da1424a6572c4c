//! `runtime = "per_core"`: clients served by current-thread runtimes, one per worker thread,
//! each accepting on its own SO_REUSEPORT socket, over pools shared by all of them.

mod common;

use common::*;
use tidepool::config::Config;

fn per_core_config(workers: usize) -> Config {
    let text = base_config_toml(pg()).replacen(
        "[proxy]\n",
        &format!("[proxy]\nruntime = \"per_core\"\nworkers = {workers}\n"),
        1,
    );
    Config::from_toml(&text).unwrap_or_else(|e| panic!("config: {e}\n{text}"))
}

#[tokio::test]
async fn per_core_workers_serve_queries_over_shared_pools() {
    let proxy = start_proxy(per_core_config(2)).await;
    let addr = proxy.local_addr();
    // More clients than workers and than the pool: the kernel spreads them over both
    // workers' sockets, and backends opened on one worker's runtime serve clients of the other.
    let mut sessions = Vec::new();
    for n in 0..16i64 {
        sessions.push(tokio::spawn(async move {
            let client = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
            client
                .simple_query(&format!("SET application_name = 'per_core_{n}'"))
                .await
                .expect("SET runs");
            let statement = client.prepare("SELECT $1::bigint * 2").await.expect("prepares");
            for i in 0..50i64 {
                let simple = client
                    .simple_query(&format!("SELECT {i} + {n}"))
                    .await
                    .expect("simple query");
                assert_eq!(first_value(&simple), (i + n).to_string());
                let row = client
                    .query_one(&statement, &[&(i + n)])
                    .await
                    .expect("extended query");
                assert_eq!(row.get::<_, i64>(0), 2 * (i + n));
            }
            // The client's setting followed it from backend to backend.
            let name = client
                .simple_query("SHOW application_name")
                .await
                .expect("SHOW runs");
            assert_eq!(first_value(&name), format!("per_core_{n}"));
            client
                .batch_execute("BEGIN; CREATE TEMP TABLE IF NOT EXISTS t (x int); ROLLBACK")
                .await
                .expect("a transaction runs");
        }));
    }
    for session in sessions {
        session.await.expect("the session's queries all succeed");
    }
    proxy.shutdown().await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "after shutdown no worker accepts any more"
    );
}

#[tokio::test]
async fn per_core_with_one_worker_per_cpu() {
    let proxy = start_proxy(per_core_config(0)).await;
    let client = connect(proxy.local_addr(), APP_USER, APP_PASSWORD, APP_DB).await;
    assert_eq!(
        first_value(&client.simple_query("SELECT 40 + 2").await.expect("query runs")),
        "42"
    );
    drop(client);
    proxy.shutdown().await;
}
