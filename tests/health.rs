//! Health checking against a real primary and two streaming standbys: roles, replay lag, a
//! standby going down and coming back, a failover, and the old primary fenced when it returns.
//!
//! One test on purpose: the phases share one three-node cluster (starting it is most of the
//! cost) and the later ones change it for good.

use std::sync::Arc;
use std::time::Duration;
use tidepool::backend::{BackendLogin, BackendSecret};
use tidepool::cluster::{ClusterError, LocalCluster, NodeOptions, PgBinaries, StopMode};
use tidepool::config::ConfigDuration;
use tidepool::health::{Health, HealthConfig, HealthState, Lsn, Role, TopologyView};

const MONITOR_USER: &str = "health_monitor";
const MONITOR_PASSWORD: &str = "monitor-secret";
/// "About zero" lag: less than a WAL page or two of background records.
const CAUGHT_UP_BYTES: u64 = 64 << 10;

/// Cluster helpers block on child processes; keep them off the async workers' hands.
fn blocking<T>(work: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(work)
}

fn start_cluster() -> Result<LocalCluster, ClusterError> {
    let mut cluster = LocalCluster::start(&PgBinaries::locate()?, NodeOptions::default())?;
    // Before the standbys exist, so their base backups already contain the role.
    cluster.create_role(MONITOR_USER, MONITOR_PASSWORD)?;
    cluster.add_standby()?;
    cluster.add_standby()?;
    Ok(cluster)
}

/// Polls the view every 50 ms for up to 20 s.
async fn eventually(health: &Health, what: &str, check: impl Fn(&TopologyView) -> bool) -> Arc<TopologyView> {
    for _ in 0..400 {
        let view = health.view();
        if check(&view) {
            return view;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}; last view: {:#?}", health.view());
}

fn caught_up(view: &TopologyView, node: usize) -> bool {
    let n = &view.nodes[node];
    n.is_up() && n.lag_bytes.is_some_and(|b| b < CAUGHT_UP_BYTES) && n.lag == Some(Duration::ZERO)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_lag_down_up_failover_and_fencing() {
    let cluster = blocking(start_cluster).unwrap_or_else(|e| panic!("cannot start the cluster: {e}"));
    let (primary, standby1, standby2) = (&cluster.primary, &cluster.standbys[0], &cluster.standbys[1]);
    let nodes = cluster.nodes().map(|n| Arc::from(n.addr().to_string())).collect();
    let login = BackendLogin {
        user: MONITOR_USER.into(),
        database: "postgres".into(),
        secret: BackendSecret::Plain(MONITOR_PASSWORD.into()),
        tls: Default::default(),
        keepalive: Default::default(),
    };
    let config = HealthConfig {
        health_check_interval: ConfigDuration(Duration::from_millis(100)),
        health_check_timeout: ConfigDuration(Duration::from_secs(1)),
        fall: 3,
        rise: 2,
    };
    let health = Health::spawn(nodes, login, config, std::future::pending());

    // Roles. A committed write gives the standbys a last-replayed transaction to age from.
    let view = eventually(&health, "roles", |v| {
        v.primary() == Some(0) && v.nodes[1..].iter().all(|n| n.is_up() && n.role == Role::Standby)
    })
    .await;
    assert!(
        view.nodes.iter().all(|n| n.timeline == Some(1) && !n.fenced),
        "{view:#?}"
    );
    let seeded = "CREATE TABLE seed (id int); INSERT INTO seed VALUES (1); SELECT pg_current_wal_lsn()";
    let seeded = blocking(|| primary.psql("postgres", seeded)).unwrap();
    let seeded = Lsn::parse(&seeded).expect("an LSN");
    // Waiting for the exact LSN, not just "small lag": the seed is smaller than CAUGHT_UP_BYTES.
    eventually(&health, "standbys to replay the seed", |v| {
        v.nodes[1..]
            .iter()
            .all(|n| n.lsn.is_some_and(|l| l >= seeded) && n.lag == Some(Duration::ZERO))
    })
    .await;

    // Replay paused on standby 1 while the primary writes: its lag grows; standby 2 keeps up.
    blocking(|| standby1.psql("postgres", "SELECT pg_wal_replay_pause()")).unwrap();
    let write = "INSERT INTO seed SELECT generate_series(1, 20000)";
    blocking(|| primary.psql("postgres", write)).unwrap();
    let view = eventually(&health, "lag on the paused standby", |v| {
        let n = &v.nodes[1];
        n.lag_bytes.is_some_and(|b| b > 200_000) && n.lag.is_some_and(|l| l > Duration::ZERO)
    })
    .await;
    let first = view.nodes[1].lag_bytes.unwrap();
    blocking(|| primary.psql("postgres", write)).unwrap();
    eventually(&health, "the lag to grow", |v| {
        v.nodes[1].lag_bytes.is_some_and(|b| b > first)
    })
    .await;
    eventually(&health, "standby 2 to keep up", |v| caught_up(v, 2)).await;
    blocking(|| standby1.psql("postgres", "SELECT pg_wal_replay_resume()")).unwrap();
    eventually(&health, "the lag to return to about zero", |v| caught_up(v, 1)).await;

    // A standby crashes: down after `fall` failed checks, up after `rise` good ones.
    blocking(|| standby2.stop(StopMode::Immediate)).unwrap();
    let view = eventually(&health, "standby 2 down", |v| {
        v.nodes[2].health == HealthState::Down
    })
    .await;
    let node = &view.nodes[2];
    assert!(
        node.last_error.is_some() && node.role == Role::Standby,
        "{node:#?}"
    );
    assert!(view.nodes[..2].iter().all(|n| n.is_up()) && view.primary() == Some(0));
    blocking(|| standby2.start()).unwrap();
    let view = eventually(&health, "standby 2 up again", |v| v.nodes[2].is_up()).await;
    assert_eq!(
        (view.nodes[2].role, &view.nodes[2].last_error),
        (Role::Standby, &None)
    );

    // The primary crashes: no primary until standby 1 is promoted; writers wait for it.
    blocking(|| primary.stop(StopMode::Immediate)).unwrap();
    eventually(&health, "no primary", |v| {
        v.primary().is_none() && !v.nodes[0].is_up()
    })
    .await;
    let mut waiter = std::pin::pin!(health.wait_for_primary());
    let early = tokio::time::timeout(Duration::from_millis(300), &mut waiter).await;
    assert!(early.is_err(), "no primary may appear before the promotion");
    blocking(|| standby1.promote()).unwrap();
    let promoted = tokio::time::timeout(Duration::from_secs(20), waiter).await;
    assert_eq!(promoted.expect("a primary within 20 s"), Some(1));
    let view = health.view();
    let new_primary = &view.nodes[1];
    assert_eq!(
        (new_primary.role, new_primary.timeline),
        (Role::Primary, Some(2)),
        "{view:#?}"
    );
    // Standby 2 still follows the old timeline (it is not reconfigured), but it is up.
    assert!(view.nodes[2].is_usable_standby(), "{view:#?}");

    // The old primary comes back on timeline 1: split brain, and the higher timeline wins.
    blocking(|| primary.start()).unwrap();
    let view = eventually(&health, "the old primary fenced", |v| {
        v.nodes[0].is_up() && v.nodes[0].fenced
    })
    .await;
    assert_eq!(view.primary(), Some(1));
    assert_eq!(
        (view.nodes[0].role, view.nodes[0].timeline),
        (Role::Primary, Some(1))
    );

    health.stop().await;
    blocking(move || drop(cluster));
}
