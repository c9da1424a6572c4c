//! Chaos under load: the real tidepool binary in front of a primary and two synchronous standbys,
//! writers and readers (and pgbench) running through it, while standbys and the primary fail in
//! the ways production sees, and hostile clients crowd the listener.
//!
//! Faults, in order (each waits for every worker to make progress again before the next):
//! standby stopped (immediate) and restarted; a standby frozen with SIGSTOP; 50 slowloris
//! logins; 5,000 simultaneous connection attempts; then on the primary: a backend killed with
//! SIGKILL (PostgreSQL restarts every backend), a restart, and a failover to the standby that
//! received the most WAL.
//!
//! What must hold: tidepool stays up with bounded memory; writers see no error from the standby
//! faults and the hostile clients, and at most their in-flight statement's error per primary
//! fault; readers see errors only from the standby that was stopped under them, and keep reading
//! while there is no primary at all; pgbench sees no failed transaction; every INSERT
//! PostgreSQL acknowledged is on the final primary (commits are synchronous to at least one
//! standby, so a failover must not lose them).

#[path = "chaos/attacks.rs"]
mod attacks;
mod common;
#[path = "chaos/process.rs"]
mod process;
#[path = "chaos/workload.rs"]
mod workload;

use common::*;
use process::{ChildGuard, Frozen, Tidepool};
use std::collections::{BTreeMap, HashSet};
use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::Duration;
use tidepool::cluster::{LocalCluster, LocalNode, NodeOptions, PgBinaries, StopMode};
use workload::{Failure, Target, Workload};

const WRITERS: usize = 4;
const READERS: usize = 2;
/// tidepool's health checks (see `config`): a node is down after 2 failed checks 200 ms apart.
const HEALTH_INTERVAL: Duration = Duration::from_millis(200);
/// Upper bound for recovery after any fault: failover_timeout (30 s) plus slack for a loaded
/// machine. Not a performance claim; it only keeps a stuck proxy from hanging the test.
const RECOVERY_LIMIT: Duration = Duration::from_secs(45);
const SLOWLORIS_CLIENTS: usize = 50;
const STORM_ATTEMPTS: usize = 5_000;
/// A generous fixed bound on tidepool's resident memory.
const RSS_LIMIT: u64 = 256 << 20;

/// The faults, numbered as the workers record them.
const FAULTS: [&str; 8] = [
    "none (warm-up)",
    "standby stopped (immediate) and restarted",
    "standby frozen (SIGSTOP) and thawed",
    "slowloris logins",
    "connection storm",
    "primary backend killed (SIGKILL: crash restart)",
    "primary restarted",
    "failover to a promoted standby",
];
const STANDBY_STOP: usize = 1;
const STANDBY_FREEZE: usize = 2;
const SLOWLORIS: usize = 3;
const STORM: usize = 4;
const BACKEND_KILL: usize = 5;
const PRIMARY_RESTART: usize = 6;
const FAILOVER: usize = 7;
/// Faults of the primary: a writer may lose its in-flight statement to each.
const PRIMARY_FAULTS: std::ops::RangeInclusive<usize> = BACKEND_KILL..=FAILOVER;

fn start_cluster() -> LocalCluster {
    let bins = PgBinaries::locate().unwrap();
    let opts = NodeOptions {
        // A standby whose primary restarted reconnects quickly (default 5 s), so synchronous
        // commits do not stall for long.
        extra_conf: vec!["wal_retrieve_retry_interval = '200ms'".to_string()],
        ..NodeOptions::default()
    };
    let mut cluster = LocalCluster::start(&bins, opts).unwrap();
    cluster.create_role(APP_USER, APP_PASSWORD).unwrap();
    cluster.create_database(APP_DB, APP_USER).unwrap();
    cluster
        .primary
        .psql(
            APP_DB,
            "CREATE TABLE chaos_log (writer int NOT NULL, seq bigint NOT NULL, PRIMARY KEY (writer, seq));\n\
             ALTER TABLE chaos_log OWNER TO app;",
        )
        .unwrap();
    let init = pgbench(&cluster, cluster.primary.addr())
        .args(["-i", "-q", "-s", "1"])
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "pgbench -i: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    // Tables exist before the base backups, so the standbys have them from the start.
    cluster.add_standby().unwrap();
    cluster.add_standby().unwrap();
    // Every acknowledged commit is then flushed on at least one standby. Set now (ALTER SYSTEM
    // writes only the primary's own file), since until the standbys exist no commit could end.
    cluster
        .primary
        .psql(
            "postgres",
            "ALTER SYSTEM SET synchronous_standby_names = 'ANY 1 (*)';\nSELECT pg_reload_conf();",
        )
        .unwrap();
    wait_until("both standbys to be synchronous candidates", || {
        cluster
            .primary
            .psql(
                "postgres",
                "SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'quorum'",
            )
            .is_ok_and(|n| n == "2")
    });
    cluster
}

/// pgbench as `app` against `addr`.
fn pgbench(cluster: &LocalCluster, addr: std::net::SocketAddr) -> Command {
    let mut command = Command::new(cluster.binaries().tool("pgbench"));
    command
        .env("PGHOST", addr.ip().to_string())
        .env("PGPORT", addr.port().to_string())
        .env("PGUSER", APP_USER)
        .env("PGPASSWORD", APP_PASSWORD)
        .env("PGDATABASE", APP_DB)
        .env("PGSSLMODE", "disable")
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::null());
    command
}

fn config(cluster: &LocalCluster) -> String {
    let mut toml = format!(
        r#"[proxy]
listen = "127.0.0.1:0"
pool_mode = "transaction"
max_client_conn = 10000
client_login_timeout = "3s"

[pool]
default_pool_size = 10
server_connect_timeout = "3s"
query_wait_timeout = "60s"

[health]
health_check_interval = "{interval}ms"
health_check_timeout = "500ms"
fall = 2
rise = 1

[routing]
failover_timeout = "30s"

[databases.{APP_DB}]

[[users]]
name = "{APP_USER}"
password = "{APP_PASSWORD}"
"#,
        interval = HEALTH_INTERVAL.as_millis()
    );
    for node in cluster.nodes() {
        toml.push_str(&format!(
            "\n[[nodes]]\nhost = \"127.0.0.1\"\nport = {}\n",
            node.port
        ));
    }
    toml
}

/// Polls `check` every 100 ms for up to 60 s (blocking).
fn wait_until(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..600 {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

/// This process's soft limit on open files (tidepool inherits it).
fn open_files_limit() -> u64 {
    let limits = std::fs::read_to_string("/proc/self/limits").expect("/proc/self/limits");
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    let soft = line.split_whitespace().nth(3).expect("the soft limit");
    soft.parse().unwrap_or(u64::MAX) // "unlimited"
}

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// Waits until the primary reports `standby` streaming (its application_name is its
/// cluster_name).
fn wait_streaming(primary: &LocalNode, standby: &LocalNode) {
    let sql = format!(
        "SELECT count(*) FROM pg_stat_replication WHERE application_name = '{}' AND state = 'streaming'",
        standby.name
    );
    wait_until(&format!("{} to stream again", standby.name), || {
        primary.psql("postgres", &sql).is_ok_and(|n| n == "1")
    });
}

/// The test's state between phases.
struct Chaos {
    cluster: LocalCluster,
    tidepool: Tidepool,
    workload: Workload,
    /// (fault, seconds until every worker made progress again).
    recovery: Vec<(usize, f64)>,
    /// A client that only reads, for reads while there is no primary.
    reader_probe: tokio_postgres::Client,
}

impl Chaos {
    fn begin(&self, fault: usize) {
        eprintln!("==== fault {fault}: {}", FAULTS[fault]);
        self.workload.board.fault.store(fault, Ordering::SeqCst);
    }

    async fn recovered(&mut self, fault: usize) {
        let took = self
            .workload
            .wait_for_progress(FAULTS[fault], RECOVERY_LIMIT)
            .await;
        eprintln!("     recovered in {took:?}");
        self.recovery.push((fault, took.as_secs_f64()));
        assert!(
            self.tidepool.process.is_running(),
            "tidepool exited during: {}",
            FAULTS[fault]
        );
    }

    /// Standby faults and hostile clients: nobody but readers of the stopped standby may notice.
    async fn standby_faults(&mut self) {
        let slowloris_packet_len = wire::startup_packet(&[("user", "app"), ("database", "app")]).len();

        self.begin(STANDBY_STOP);
        let stopped_down = format!("node is down node={}", self.cluster.standbys[0].addr());
        blocking(|| self.cluster.standbys[0].stop(StopMode::Immediate).unwrap());
        // While it is down, everyone (readers too, on the other standby) keeps going.
        tokio::time::sleep(HEALTH_INTERVAL * 5).await;
        self.workload
            .wait_for_progress("standby 0 down", RECOVERY_LIMIT)
            .await;
        assert_eq!(
            self.tidepool.log_count(&stopped_down),
            1,
            "health checks noticed the stopped standby"
        );
        blocking(|| {
            self.cluster.standbys[0].start().unwrap();
            wait_streaming(&self.cluster.primary, &self.cluster.standbys[0]);
        });
        self.recovered(STANDBY_STOP).await;

        // pgbench's clients abort at their first error, so it runs only through faults that
        // must not cause any.
        let bench_out = tempfile::NamedTempFile::new().unwrap();
        let mut bench = ChildGuard {
            child: pgbench(&self.cluster, self.tidepool.addr)
                .args(["-n", "-S", "-c", "4", "-j", "1", "-T", "20"])
                .stdout(bench_out.reopen().unwrap())
                .stderr(bench_out.reopen().unwrap())
                .spawn()
                .unwrap(),
        };

        self.begin(STANDBY_FREEZE);
        let frozen_down = format!("node is down node={}", self.cluster.standbys[1].addr());
        let downs_before = self.tidepool.log_count(&frozen_down);
        let postmaster = self.cluster.standbys[1].pid().expect("standby 1 runs");
        let frozen = Frozen::freeze(postmaster);
        tokio::time::sleep(HEALTH_INTERVAL * 10).await;
        // Writers commit through the other standby meanwhile; readers stuck on the frozen one
        // just wait.
        self.workload
            .wait_for_writers("standby 1 frozen", RECOVERY_LIMIT)
            .await;
        frozen.thaw();
        self.recovered(STANDBY_FREEZE).await;
        assert!(
            self.tidepool.log_count(&frozen_down) > downs_before,
            "health checks noticed the frozen standby ({frozen_down:?})"
        );

        self.begin(SLOWLORIS);
        let mut loris = attacks::slowloris(
            self.tidepool.addr,
            SLOWLORIS_CLIENTS,
            Duration::from_secs(1),
            Duration::from_secs(60),
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        // A newcomer logs in and queries while the slow ones hold their logins open.
        let newcomer = tokio::time::timeout(
            Duration::from_secs(30),
            connect(self.tidepool.addr, APP_USER, APP_PASSWORD, APP_DB),
        )
        .await
        .expect("a login completes while slowloris clients trickle");
        assert_eq!(
            first_value(&newcomer.simple_query("SELECT 1").await.unwrap()),
            "1"
        );
        self.workload.wait_for_progress("slowloris", RECOVERY_LIMIT).await;
        let mut endings = Vec::new();
        while let Some(end) = loris.join_next().await {
            endings.push(end.unwrap());
        }
        let cut_short = endings
            .iter()
            .filter(|e| matches!(e, attacks::Slowloris::ClosedBy { bytes_sent } if *bytes_sent < slowloris_packet_len))
            .count();
        assert_eq!(
            cut_short, SLOWLORIS_CLIENTS,
            "client_login_timeout closes every slowloris client: {endings:?}"
        );
        self.recovered(SLOWLORIS).await;

        self.begin(STORM);
        let storm = attacks::storm(self.tidepool.addr, STORM_ATTEMPTS, Duration::from_secs(30)).await;
        eprintln!("     storm: {storm:?}");
        assert_eq!(
            (storm.answered, &storm.failures),
            (STORM_ATTEMPTS, &BTreeMap::new()),
            "every attempt of the storm is answered"
        );
        self.recovered(STORM).await;
        let rss = self.tidepool.rss_bytes();
        eprintln!("     tidepool RSS after the storm: {} KiB", rss >> 10);
        assert!(rss < RSS_LIMIT, "tidepool RSS after the storm: {rss} bytes");

        let status = blocking(|| bench.wait_timeout(Duration::from_secs(60))).expect("pgbench ends");
        let report = std::fs::read_to_string(bench_out.path()).unwrap();
        eprintln!("     pgbench:\n{report}");
        assert!(
            status.success(),
            "pgbench failed through the standby faults:\n{report}"
        );
        assert!(
            report.contains("number of failed transactions: 0 "),
            "pgbench saw failed transactions:\n{report}"
        );
    }

    /// Primary faults: writers lose at most their in-flight statement to each.
    /// Returns the index of the promoted standby.
    async fn primary_faults(&mut self) -> usize {
        self.begin(BACKEND_KILL);
        blocking(|| {
            let primary = &self.cluster.primary;
            let pid = primary
                .psql(
                    "postgres",
                    "SELECT pid FROM pg_stat_activity WHERE usename = 'app' AND backend_type = 'client backend' \
                     ORDER BY (query LIKE 'INSERT INTO chaos_log%') DESC, pid LIMIT 1",
                )
                .unwrap();
            let pid: u32 = pid.parse().expect("a backend serving tidepool");
            process::signal("KILL", &[pid]);
            wait_until("the primary to come back from crash recovery", || {
                primary.psql("postgres", "SELECT 1").is_ok()
            });
        });
        self.recovered(BACKEND_KILL).await;

        self.begin(PRIMARY_RESTART);
        blocking(|| self.cluster.primary.restart().unwrap());
        self.recovered(PRIMARY_RESTART).await;

        self.begin(FAILOVER);
        blocking(|| self.cluster.primary.stop(StopMode::Immediate).unwrap());
        // With no primary at all, a read-only client keeps working, statement closes included
        // (tokio-postgres prepares each &str query and closes the statement afterwards).
        for _ in 0..5 {
            let read = self
                .reader_probe
                .query_one("SELECT count(*) FROM pgbench_branches", &[]);
            let read = tokio::time::timeout(RECOVERY_LIMIT, read).await;
            let row = read
                .expect("a read with no primary completes")
                .unwrap_or_else(|e| panic!("a read with no primary failed: {}", workload::describe(&e)));
            assert_eq!(row.get::<_, i64>(0), 1);
        }
        let promoted = blocking(|| {
            // The standby that received the most WAL has every acknowledged commit.
            let received: Vec<String> = self
                .cluster
                .standbys
                .iter()
                .map(|s| {
                    s.psql("postgres", "SELECT pg_last_wal_receive_lsn() - '0/0'")
                        .unwrap()
                })
                .collect();
            let lsn = |i: usize| received[i].parse::<f64>().unwrap();
            let best = if lsn(0) >= lsn(1) { 0 } else { 1 };
            eprintln!("     received WAL {received:?}: promoting standby {best}");
            self.cluster.standbys[best].promote().unwrap();
            best
        });
        self.recovered(FAILOVER).await;
        promoted
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_under_load() {
    let fds = open_files_limit();
    assert!(
        fds > STORM_ATTEMPTS as u64 + 1_000,
        "the storm needs more than {} file descriptors here and in tidepool; the soft limit is \
         {fds}: raise it (`ulimit -n`; scripts/test.sh raises it to the hard limit)",
        STORM_ATTEMPTS + 1_000
    );
    let cluster = tokio::task::spawn_blocking(start_cluster).await.unwrap();
    let tidepool = blocking(|| Tidepool::start(&config(&cluster)));
    let target = Target {
        addr: tidepool.addr,
        user: APP_USER,
        password: APP_PASSWORD,
        db: APP_DB,
    };
    let workload = Workload::start(target, WRITERS, READERS, 1);
    let reader_probe = connect(tidepool.addr, APP_USER, APP_PASSWORD, APP_DB).await;
    let mut chaos = Chaos {
        cluster,
        tidepool,
        workload,
        recovery: Vec::new(),
        reader_probe,
    };
    chaos.recovered(0).await;
    chaos.standby_faults().await;
    let promoted = chaos.primary_faults().await;
    // A little load on the new primary before stopping.
    chaos
        .workload
        .wait_for_progress("after the failover", RECOVERY_LIMIT)
        .await;

    let Chaos {
        cluster,
        tidepool,
        workload,
        recovery,
        ..
    } = chaos;
    let (board, acked) = workload.stop().await;
    let mut tidepool = tidepool;
    assert!(tidepool.process.is_running(), "tidepool is still running");
    let (rss, peak) = (tidepool.rss_bytes(), tidepool.peak_rss_bytes());
    eprintln!(
        "tidepool RSS at the end: {} KiB (peak {} KiB)",
        rss >> 10,
        peak >> 10
    );
    assert!(rss < RSS_LIMIT, "tidepool RSS at the end: {rss} bytes");
    assert!(peak < RSS_LIMIT, "tidepool's peak RSS: {peak} bytes");
    eprintln!("recovery (fault, seconds): {recovery:?}");
    for (fault, gap) in board.write_gaps() {
        eprintln!("longest write gap, {}: {gap:?}", FAULTS[fault]);
    }

    check_failures(&board.failures());

    // Every acknowledged INSERT survived the crash, the restart and the failover.
    let rows = blocking(|| {
        cluster.standbys[promoted]
            .psql(APP_DB, "SELECT writer, seq FROM chaos_log")
            .unwrap()
    });
    let stored: HashSet<(usize, i64)> = rows
        .lines()
        .map(|line| {
            let (w, s) = line.split_once('|').expect("writer|seq");
            (w.parse().unwrap(), s.parse().unwrap())
        })
        .collect();
    let total: usize = acked.iter().map(Vec::len).sum();
    let lost: Vec<(usize, i64)> = acked
        .iter()
        .enumerate()
        .flat_map(|(w, seqs)| seqs.iter().map(move |&s| (w, s)))
        .filter(|key| !stored.contains(key))
        .collect();
    eprintln!(
        "{total} acknowledged inserts, {} rows on the final primary",
        stored.len()
    );
    assert!(total > 0, "the writers got work done");
    assert!(
        lost.is_empty(),
        "acknowledged inserts missing after the faults: {lost:?}"
    );
    drop(tidepool);
    drop(cluster);
}

/// Writers: no error outside the primary faults, at most one per primary fault. Readers: errors
/// only while the standby under them is stopped, at most one each.
///
/// A killed backend is two events for the writer it served: its own statement fails, and the one
/// it sends next may reach a live backend that PostgreSQL's crash restart (tens of ms later, when
/// the postmaster has reaped the victim) kills in flight. So that fault allows one writer a
/// second error, and no more than one.
fn check_failures(failures: &[Failure]) {
    let mut per: BTreeMap<(usize, &str), usize> = BTreeMap::new();
    for f in failures {
        *per.entry((f.fault, f.who.as_str())).or_default() += 1;
    }
    let all: Vec<String> = failures
        .iter()
        .map(|f| format!("[fault {}] {}: {}", f.fault, f.who, f.message))
        .collect();
    let mut victims = 0;
    for ((fault, who), count) in per {
        let allowed = match who.starts_with("writer") {
            true if fault == BACKEND_KILL => 2,
            true if PRIMARY_FAULTS.contains(&fault) => 1,
            true => 0,
            false if fault == STANDBY_STOP => 1,
            false => 0,
        };
        assert!(
            count <= allowed,
            "{who} saw {count} errors during \"{}\" (allowed {allowed}); all failures: {all:#?}",
            FAULTS[fault]
        );
        if fault == BACKEND_KILL && count == 2 {
            victims += 1;
        }
    }
    assert!(
        victims <= 1,
        "more than one writer saw two errors when one backend was killed: {all:#?}"
    );
}
