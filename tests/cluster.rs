//! Integration tests for `tidepool::cluster` against real PostgreSQL binaries.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use tidepool::cluster::{LocalCluster, LocalNode, NodeOptions, PgBinaries, StopMode};

fn binaries() -> PgBinaries {
    PgBinaries::locate().unwrap_or_else(|error| panic!("{error}"))
}

/// Polls `check` every 100 ms for up to 20 s.
fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..200 {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

/// Runs `sql` through psql as `user` with a password, over TCP.
fn psql_as(node: &LocalNode, user: &str, password: &str, sql: &str) -> std::process::Output {
    Command::new(node.binaries().tool("psql"))
        .args(["-X", "-A", "-t", "-h", "127.0.0.1", "-p", &node.port.to_string()])
        .args(["-U", user, "-d", "postgres", "-c", sql])
        .env("PGPASSWORD", password)
        .output()
        .expect("run psql")
}

#[test]
fn primary_and_standby_replicate() {
    let mut cluster = LocalCluster::start(&binaries(), NodeOptions::default()).expect("primary");
    assert!(!cluster.primary.is_in_recovery().expect("query primary"));

    cluster.add_standby().expect("standby streams");
    let (primary, standby) = (&cluster.primary, &cluster.standbys[0]);
    assert_ne!(standby.port, primary.port);
    assert!(standby.is_in_recovery().expect("query standby"));

    primary
        .psql(
            "postgres",
            "CREATE TABLE t (id int); INSERT INTO t VALUES (1), (2);",
        )
        .expect("write on primary");
    let lsn = primary
        .psql("postgres", "SELECT pg_current_wal_lsn()")
        .expect("lsn");
    let replayed = format!("SELECT pg_last_wal_replay_lsn() >= '{lsn}'::pg_lsn");
    eventually("the standby to replay the table", || {
        standby.psql("postgres", &replayed).is_ok_and(|out| out == "t")
    });
    assert_eq!(standby.psql("postgres", "SELECT count(*) FROM t").unwrap(), "2");
    let error = standby
        .psql("postgres", "INSERT INTO t VALUES (3)")
        .expect_err("read-only");
    assert!(error.to_string().contains("read-only"), "{error}");

    let root = cluster.root_dir().to_path_buf();
    assert!(root.join("node1/data/standby.signal").exists());
    drop(cluster);
    assert!(!root.exists(), "dropping the cluster deletes its directory");
}

#[test]
fn stop_start_promote_and_password_rules() {
    let mut cluster = LocalCluster::start(&binaries(), NodeOptions::default()).expect("primary");
    cluster.create_role("alice", "alice-pw").expect("create role");
    cluster
        .create_database("alicedb", "alice")
        .expect("create database");
    let primary = &cluster.primary;

    // Non-superusers go through the default scram-sha-256 rule.
    let ok = psql_as(primary, "alice", "alice-pw", "SELECT current_user");
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let bad = psql_as(primary, "alice", "wrong", "SELECT 1");
    assert!(String::from_utf8_lossy(&bad.stderr).contains("password authentication failed"));

    // A stopped node keeps its port and data.
    let (port, pid) = (primary.port, primary.pid().expect("running server has a pid"));
    primary.stop(StopMode::Fast).expect("stop");
    assert!(!primary.is_running() && primary.pid().is_none());
    primary
        .stop(StopMode::Fast)
        .expect("stopping a stopped node is fine");
    primary.start().expect("start again");
    assert_eq!(primary.port, port);
    assert_ne!(primary.pid(), Some(pid));
    assert!(primary.psql("postgres", "SELECT 1").is_ok());
    primary.restart().expect("restart");

    // An immediate stop is a crash; the next start recovers.
    primary.stop(StopMode::Immediate).expect("crash");
    primary.start().expect("recover");

    cluster.add_standby().expect("standby");
    let standby = &cluster.standbys[0];
    standby.promote().expect("promote");
    assert!(!standby.is_in_recovery().expect("query promoted node"));
    standby
        .psql("postgres", "CREATE TABLE after_promotion (id int)")
        .expect("a promoted node accepts writes");
}

#[test]
fn startup_failure_reports_the_server_log() {
    let opts = NodeOptions {
        extra_conf: vec!["shared_buffers = 'plenty'".into()],
        ..NodeOptions::default()
    };
    let error = LocalCluster::start(&binaries(), opts).expect_err("bad setting");
    let text = error.to_string();
    assert!(text.contains("--- server log"), "{text}");
    assert!(text.contains("shared_buffers"), "{text}");
}

/// Child half of `cluster_is_reaped_when_the_process_exits`; does nothing unless run by it.
#[test]
fn reaper_child() {
    if std::env::var_os(REAPER_CHILD_ENV).is_none() {
        return;
    }
    let cluster = LocalCluster::start(&binaries(), NodeOptions::default()).expect("primary");
    println!("ROOT={}", cluster.root_dir().display());
    println!("PID={}", cluster.primary.pid().expect("pid"));
    // Skips every destructor, like a cluster kept in a static at the end of a test binary.
    std::process::exit(0);
}

const REAPER_CHILD_ENV: &str = "TIDEPOOL_TEST_REAPER_CHILD";

#[test]
fn cluster_is_reaped_when_the_process_exits() {
    let exe = std::env::current_exe().expect("test binary path");
    let out = Command::new(exe)
        .args(["--exact", "reaper_child", "--nocapture", "--test-threads=1"])
        .env(REAPER_CHILD_ENV, "1")
        .output()
        .expect("run child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let field = |key: &str| {
        stdout
            .lines()
            // libtest may print "test reaper_child ... " before our first line.
            .find_map(|line| line.split_once(key).map(|(_, value)| value))
            .unwrap_or_else(|| {
                panic!(
                    "child printed no {key}: {stdout}\n{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            })
            .to_string()
    };
    let root = PathBuf::from(field("ROOT="));
    let pid = field("PID=");
    eventually("the reaper to delete the cluster directory", || !root.exists());
    eventually("the postmaster to exit", || process_gone(&pid));
}

/// True when `pid` no longer runs; a zombie counts as gone (PID 1 in a container may not reap).
fn process_gone(pid: &str) -> bool {
    match std::fs::read_to_string(Path::new("/proc").join(pid).join("stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}
