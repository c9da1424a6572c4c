//! Health logic without a server: fall/rise, primary selection, lag, config, and the checker
//! schedule under paused tokio time with scripted probes.

use super::probe::{CheckError, Probe};
use super::status::FallRise;
use super::topology::{select_primary, Observation, Sample, Topology};
use super::*;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::{sleep, Instant};

const MS: Duration = Duration::from_millis(1);

fn primary(timeline: u32, lsn: u64) -> Sample {
    Sample {
        role: Role::Primary,
        lsn: Some(Lsn(lsn)),
        receive_lsn: None,
        timeline: Some(timeline),
        replay_age: None,
    }
}

fn standby(replay: u64, receive: u64, age_secs: u64) -> Sample {
    Sample {
        role: Role::Standby,
        lsn: Some(Lsn(replay)),
        receive_lsn: Some(Lsn(receive)),
        timeline: Some(1),
        replay_age: Some(Duration::from_secs(age_secs)),
    }
}

fn refused() -> CheckError {
    CheckError::Query {
        addr: "fake".into(),
        code: "57P03".into(),
        message: "the database system is starting up".into(),
    }
}

// ---- fall / rise ----

#[test]
fn first_result_decides_then_fall_and_rise_apply() {
    let t0 = Instant::now();
    let at = |n: u64| t0 + 100 * MS * n as u32;
    let mut fr = FallRise::new(t0);
    assert_eq!(fr.state(), HealthState::Unknown);

    assert!(fr.record(false, at(1), 3, 2), "first failure: down at once");
    assert_eq!((fr.state(), fr.since()), (HealthState::Down, at(1)));
    assert!(!fr.record(true, at(2), 3, 2));
    assert_eq!(fr.streak(), 1);
    assert!(!fr.record(false, at(3), 3, 2), "a failure resets the rise count");
    assert_eq!(fr.streak(), 0);
    assert!(!fr.record(true, at(4), 3, 2));
    assert!(fr.record(true, at(5), 3, 2), "rise = 2 good checks in a row");
    assert_eq!((fr.state(), fr.since(), fr.streak()), (HealthState::Up, at(5), 0));

    assert!(!fr.record(false, at(6), 3, 2));
    assert!(!fr.record(false, at(7), 3, 2));
    assert!(!fr.record(true, at(8), 3, 2), "a success resets the fall count");
    for n in 9..11 {
        assert!(!fr.record(false, at(n), 3, 2));
    }
    assert!(fr.record(false, at(11), 3, 2), "fall = 3 failures in a row");
    assert_eq!((fr.state(), fr.since()), (HealthState::Down, at(11)));
}

#[test]
fn first_success_is_up_at_once_and_one_means_flip_every_time() {
    let t0 = Instant::now();
    let mut fr = FallRise::new(t0);
    assert!(fr.record(true, t0, 3, 2));
    assert_eq!(fr.state(), HealthState::Up);
    assert!(fr.record(false, t0, 1, 1));
    assert!(fr.record(true, t0, 1, 1));
    assert_eq!(fr.state(), HealthState::Up);
}

// ---- primary selection ----

#[test]
fn higher_timeline_wins_and_ties_keep_the_current_primary() {
    let mut highest = 0;
    assert_eq!(select_primary(&[], None, &mut highest), None);
    assert_eq!(select_primary(&[(2, 1)], None, &mut highest), Some(2));
    assert_eq!(select_primary(&[(0, 1), (2, 2)], Some(0), &mut highest), Some(2));
    assert_eq!(highest, 2);
    assert_eq!(
        select_primary(&[(0, 2), (2, 2)], Some(2), &mut highest),
        Some(2),
        "sticky"
    );
    assert_eq!(
        select_primary(&[(2, 2), (0, 2)], None, &mut highest),
        Some(0),
        "config order"
    );
    // The old primary comes back on timeline 1 while the timeline-2 one is down: not trusted.
    assert_eq!(select_primary(&[(0, 1)], Some(2), &mut highest), None);
    assert_eq!(highest, 2, "never decreases");
}

// ---- lag ----

#[test]
fn lag_rules() {
    assert_eq!(lag_bytes(Some(Lsn(1000)), Some(Lsn(400))), Some(600));
    assert_eq!(
        lag_bytes(Some(Lsn(400)), Some(Lsn(1000))),
        Some(0),
        "stale primary sample"
    );
    assert_eq!(lag_bytes(None, Some(Lsn(1))), None);
    assert_eq!(lag_bytes(Some(Lsn(1)), None), None);

    let age = Some(Duration::from_secs(7));
    let (lo, hi) = (Some(Lsn(10)), Some(Lsn(20)));
    assert_eq!(replay_lag(Role::Primary, hi, None, age), Some(Duration::ZERO));
    assert_eq!(
        replay_lag(Role::Standby, lo, hi, age),
        age,
        "WAL waiting to be replayed"
    );
    assert_eq!(
        replay_lag(Role::Standby, hi, hi, age),
        Some(Duration::ZERO),
        "caught up"
    );
    assert_eq!(
        replay_lag(Role::Standby, hi, None, age),
        Some(Duration::ZERO),
        "never streamed"
    );
    assert_eq!(
        replay_lag(Role::Standby, lo, hi, None),
        None,
        "nothing replayed yet"
    );
    assert_eq!(replay_lag(Role::Unknown, lo, hi, age), None);
}

// ---- topology ----

fn observe(topology: &mut Topology, node: usize, at: Instant, outcome: Result<Sample, CheckError>) {
    topology.apply(Observation { node, at, outcome });
}

#[test]
fn topology_tracks_lag_failover_and_fencing() {
    let t0 = Instant::now();
    let addrs: Vec<Arc<str>> = ["a:1", "b:1", "c:1"].map(Arc::from).to_vec();
    let mut topology = Topology::new(&addrs, 1, 1, t0);
    let view = topology.view();
    assert_eq!(view.primary(), None);
    assert!(view
        .nodes
        .iter()
        .all(|n| n.health == HealthState::Unknown && n.since == t0));

    observe(&mut topology, 0, t0, Ok(primary(1, 1000)));
    observe(&mut topology, 1, t0, Ok(standby(400, 600, 2)));
    observe(&mut topology, 2, t0, Ok(standby(1000, 1000, 30)));
    let view = topology.view();
    assert_eq!(view.primary(), Some(0));
    let lags: Vec<_> = view.nodes.iter().map(|n| (n.lag_bytes, n.lag)).collect();
    let secs = |s| Some(Duration::from_secs(s));
    assert_eq!(
        lags,
        [(Some(0), secs(0)), (Some(600), secs(2)), (Some(0), secs(0))]
    );
    assert!(view.nodes[1].is_usable_standby());

    // Node 1 is promoted while the old primary still answers: split brain, timeline decides.
    observe(&mut topology, 1, t0, Ok(primary(2, 1100)));
    let view = topology.view();
    assert_eq!(view.primary(), Some(1));
    assert_eq!(view.fenced().collect::<Vec<_>>(), [0]);
    assert_eq!((view.nodes[0].lag_bytes, view.nodes[0].lag), (None, None));
    assert_eq!(
        view.nodes[2].lag_bytes,
        Some(100),
        "measured against the new primary"
    );

    // The new primary fails; the old one must not take over again.
    observe(&mut topology, 1, t0, Err(refused()));
    let view = topology.view();
    assert_eq!(view.primary(), None);
    assert!(view.nodes[0].fenced && !view.nodes[1].fenced);
    assert_eq!(view.nodes[1].health, HealthState::Down);
    assert!(view.nodes[1]
        .last_error
        .as_deref()
        .unwrap()
        .contains("starting up"));
    assert_eq!(view.nodes[1].role, Role::Primary, "last known role is kept");
    // With no primary up, standbys are measured against the last primary's position, so
    // reads keep going to a standby that is fresh enough (the chaos test's failover).
    assert_eq!(
        view.nodes[2].lag_bytes,
        Some(100),
        "measured against the last primary seen"
    );
    assert!(view.nodes[2].is_usable_standby());

    observe(&mut topology, 1, t0, Ok(primary(2, 1200)));
    assert_eq!(topology.view().primary(), Some(1));
    assert_eq!(topology.view().nodes[1].last_error, None);
}

#[test]
fn same_topology_ignores_measurements() {
    let t0 = Instant::now();
    let addrs: Vec<Arc<str>> = vec![Arc::from("a:1"), Arc::from("b:1")];
    let mut topology = Topology::new(&addrs, 3, 2, t0);
    observe(&mut topology, 0, t0, Ok(primary(1, 10)));
    observe(&mut topology, 1, t0, Ok(standby(5, 10, 1)));
    let before = topology.view();
    observe(&mut topology, 0, t0 + MS, Ok(primary(1, 99)));
    observe(&mut topology, 1, t0 + MS, Err(refused()));
    let after = topology.view();
    assert_ne!(before, after);
    assert!(
        before.same_topology(&after),
        "one failure below fall changes no verdict"
    );
    observe(&mut topology, 1, t0 + MS, Ok(primary(1, 99)));
    assert!(!before.same_topology(&topology.view()));
}

// ---- config ----

#[test]
fn config_defaults_parsing_and_validation() {
    let parsed: HealthConfig = toml::from_str("").unwrap();
    assert_eq!(parsed, HealthConfig::default());
    assert_eq!(
        (parsed.interval(), parsed.timeout()),
        (Duration::from_secs(1), Duration::from_secs(1))
    );
    assert_eq!((parsed.fall, parsed.rise), (3, 2));
    assert!(parsed.validate().is_ok());

    let text = "health_check_interval = \"250ms\"\nhealth_check_timeout = \"2s\"\nfall = 1\nrise = 5";
    let parsed: HealthConfig = toml::from_str(text).unwrap();
    assert_eq!(parsed.interval(), 250 * MS);
    assert!(
        parsed.validate().is_ok(),
        "a timeout above the interval is allowed"
    );

    assert!(
        toml::from_str::<HealthConfig>("falls = 2").is_err(),
        "unknown keys are refused"
    );
    for (text, key) in [
        ("health_check_interval = \"0\"", "health_check_interval"),
        ("health_check_timeout = \"0s\"", "health_check_timeout"),
        ("fall = 0", "fall"),
        ("rise = 0", "rise"),
    ] {
        let error = toml::from_str::<HealthConfig>(text)
            .unwrap()
            .validate()
            .unwrap_err();
        assert_eq!(error.key, key);
        assert!(error.to_string().starts_with(&format!("health.{key}: ")));
    }
}

// ---- the checker schedule, under paused time ----

#[derive(Debug, Clone)]
enum Script {
    Answer(Sample),
    Fail,
    /// Never answers, like a server that accepted the connection and froze.
    Hang,
}

/// A probe whose answers a test changes as it goes.
#[derive(Clone)]
struct Fake {
    script: Arc<Mutex<Script>>,
    checks: Arc<AtomicU32>,
    closed: Arc<AtomicBool>,
}

impl Fake {
    fn new(script: Script) -> Fake {
        Fake {
            script: Arc::new(Mutex::new(script)),
            checks: Arc::new(AtomicU32::new(0)),
            closed: Arc::new(AtomicBool::new(false)),
        }
    }

    fn set(&self, script: Script) {
        *self.script.lock().unwrap() = script;
    }
}

impl Probe for Fake {
    fn check(&mut self) -> impl std::future::Future<Output = Result<Sample, CheckError>> + Send {
        self.checks.fetch_add(1, Ordering::Relaxed);
        let script = self.script.lock().unwrap().clone();
        async move {
            match script {
                Script::Answer(sample) => Ok(sample),
                Script::Fail => Err(refused()),
                Script::Hang => std::future::pending().await,
            }
        }
    }

    async fn close(&mut self) {
        self.closed.store(true, Ordering::Relaxed);
    }
}

fn fast_config() -> HealthConfig {
    HealthConfig {
        health_check_interval: crate::config::ConfigDuration(100 * MS),
        health_check_timeout: crate::config::ConfigDuration(50 * MS),
        fall: 3,
        rise: 2,
    }
}

fn start(probes: &[Fake]) -> Health {
    let addrs = (0..probes.len())
        .map(|i| Arc::from(format!("node{i}:5432")))
        .collect();
    Health::spawn_with(addrs, probes.to_vec(), &fast_config(), std::future::pending())
}

/// Sleeps until `offset` after `t0` (checks run at whole multiples of 100 ms).
async fn at(t0: Instant, offset: Duration) {
    tokio::time::sleep_until(t0 + offset).await;
}

#[tokio::test(start_paused = true)]
async fn down_after_fall_checks_and_up_after_rise_checks() {
    let t0 = Instant::now();
    let probes = [
        Fake::new(Script::Answer(primary(1, 10))),
        Fake::new(Script::Answer(standby(10, 10, 0))),
    ];
    let health = start(&probes);
    at(t0, 50 * MS).await;
    let view = health.view();
    assert_eq!(view.primary(), Some(0));
    assert!(view.nodes.iter().all(NodeStatus::is_up));

    probes[1].set(Script::Fail);
    at(t0, 250 * MS).await;
    let node = health.view().nodes[1].clone();
    assert_eq!(
        (node.health, node.streak),
        (HealthState::Up, 2),
        "two failures are not enough"
    );
    assert!(node.last_error.is_some());
    at(t0, 350 * MS).await;
    let node = health.view().nodes[1].clone();
    assert_eq!(node.health, HealthState::Down);
    assert_eq!(node.since, t0 + 300 * MS, "the third failed check, at 300 ms");

    probes[1].set(Script::Answer(standby(10, 10, 0)));
    at(t0, 450 * MS).await;
    assert_eq!(health.view().nodes[1].health, HealthState::Down);
    at(t0, 550 * MS).await;
    let node = health.view().nodes[1].clone();
    assert_eq!((node.health, node.since), (HealthState::Up, t0 + 500 * MS));
    assert_eq!(
        probes[1].checks.load(Ordering::Relaxed),
        6,
        "one check per interval"
    );
}

#[tokio::test(start_paused = true)]
async fn a_hanging_check_times_out_and_counts_as_failed() {
    let t0 = Instant::now();
    let probes = [Fake::new(Script::Hang)];
    let health = start(&probes);
    at(t0, 60 * MS).await;
    let node = health.view().nodes[0].clone();
    assert_eq!(
        node.health,
        HealthState::Down,
        "the first result decides, even a timeout"
    );
    assert_eq!(node.last_check, Some(t0 + 50 * MS));
    assert!(node.last_error.unwrap().contains("timed out after 50ms"));

    probes[0].set(Script::Answer(primary(1, 1)));
    at(t0, 250 * MS).await;
    assert_eq!(
        health.view().nodes[0].health,
        HealthState::Up,
        "checks at 100 and 200 ms"
    );
}

#[tokio::test(start_paused = true)]
async fn waiters_wake_on_topology_changes_only() {
    let t0 = Instant::now();
    let probes = [
        Fake::new(Script::Answer(primary(1, 10))),
        Fake::new(Script::Answer(standby(10, 10, 0))),
    ];
    let health = start(&probes);
    assert_eq!(health.wait_for_primary().await, Some(0));

    // LSNs move, nothing else: nobody is woken.
    let changed = health.changed();
    probes[0].set(Script::Answer(primary(1, 500)));
    let quiet = tokio::time::timeout(450 * MS, changed).await;
    assert!(quiet.is_err(), "lag-only changes must not wake waiters");
    assert_eq!(
        health.view().nodes[1].lag_bytes,
        Some(490),
        "but the view is current"
    );

    // The primary dies; writes wait until the standby is promoted.
    let mut topology = health.subscribe();
    probes[0].set(Script::Fail);
    topology.changed().await.unwrap();
    assert_eq!(topology.borrow_and_update().primary(), None);
    let failed_at = Instant::now();
    assert_eq!(failed_at - t0, 700 * MS, "checks at 500, 600, 700 ms failed");

    probes[1].set(Script::Answer(primary(2, 600)));
    assert_eq!(health.wait_for_primary().await, Some(1));
    assert!(
        Instant::now() - failed_at <= 100 * MS,
        "seen by the next check at the latest"
    );

    // The old primary returns on the old timeline: fenced, the primary stays.
    probes[0].set(Script::Answer(primary(1, 500)));
    health.changed().await;
    let view = health.view();
    assert_eq!(
        (view.primary(), view.fenced().collect::<Vec<_>>()),
        (Some(1), vec![0])
    );
}

#[tokio::test(start_paused = true)]
async fn shutdown_stops_checkers_closes_probes_and_releases_waiters() {
    let probes = [Fake::new(Script::Fail), Fake::new(Script::Hang)];
    let (trigger, stopped) = tokio::sync::oneshot::channel::<()>();
    let addrs = vec![Arc::from("a:1"), Arc::from("b:1")];
    let health = Health::spawn_with(addrs, probes.to_vec(), &fast_config(), async move {
        let _ = stopped.await;
    });
    sleep(120 * MS).await;
    let waiter = {
        let changed = health.changed();
        tokio::spawn(changed)
    };
    trigger.send(()).unwrap();
    health.stop().await;
    assert!(probes.iter().all(|p| p.closed.load(Ordering::Relaxed)));
    waiter.await.unwrap();
    assert_eq!(health.wait_for_primary().await, None, "checking stopped");
}

// ---- Patroni ----

fn patroni_says(topology: &mut Topology, leader: Option<&str>) {
    topology.apply_update(super::topology::Update::Patroni(Ok(leader.map(String::from))));
}

fn patroni_unreachable(topology: &mut Topology) {
    let error = super::patroni::PatroniError::Status {
        at: Arc::from("p:8008"),
        status: 503,
    };
    topology.apply_update(super::topology::Update::Patroni(Err(error)));
}

#[test]
fn with_patroni_the_primary_needs_both_to_agree() {
    let t0 = Instant::now();
    let addrs: Vec<Arc<str>> = ["a:1", "b:1", "c:1"].map(Arc::from).to_vec();
    let mut topology = Topology::new(&addrs, 2, 1, t0).with_patroni();
    observe(&mut topology, 0, t0, Ok(primary(1, 1000)));
    observe(&mut topology, 1, t0, Ok(standby(1000, 1000, 0)));
    let view = topology.view();
    assert_eq!(view.primary(), None, "no primary before Patroni answers");
    assert_eq!(view.fenced().count(), 0, "nothing fenced without an authority");
    assert!(view.patroni_disagreement().unwrap().contains("cannot be asked"));

    patroni_says(&mut topology, Some("a:1"));
    assert_eq!(topology.view().primary(), Some(0));
    assert_eq!(topology.view().patroni_disagreement(), None);

    // Patroni moves the leader key before node 1 is promoted: no primary, node 0 fenced.
    patroni_says(&mut topology, Some("b:1"));
    let view = topology.view();
    assert_eq!(view.primary(), None);
    assert_eq!(view.fenced().collect::<Vec<_>>(), [0]);
    let why = view.patroni_disagreement().unwrap();
    assert!(why.contains("b:1") && why.contains("a:1"), "{why}");
    observe(&mut topology, 1, t0, Ok(primary(2, 1100)));
    assert_eq!(topology.view().primary(), Some(1));

    // Patroni's leader wins even over a higher timeline.
    observe(&mut topology, 2, t0, Ok(primary(3, 1200)));
    let view = topology.view();
    assert_eq!(view.primary(), Some(1));
    assert_eq!(view.fenced().collect::<Vec<_>>(), [0, 2]);

    // One failed ask changes nothing (fall = 2); two make the leader unknown.
    patroni_unreachable(&mut topology);
    assert_eq!(topology.view().primary(), Some(1));
    patroni_unreachable(&mut topology);
    let view = topology.view();
    assert_eq!(view.primary(), None);
    assert!(!view.patroni.as_ref().unwrap().known);
    patroni_says(&mut topology, None);
    assert!(topology
        .view()
        .patroni_disagreement()
        .unwrap()
        .contains("no leader"));
    patroni_says(&mut topology, Some("b:1"));
    assert_eq!(topology.view().primary(), Some(1));
}
