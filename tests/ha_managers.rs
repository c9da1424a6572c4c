//! Failover driven by real HA managers from Debian's packages, with tidepool in front: Patroni
//! with etcd (three members, the leader's PostgreSQL killed), and repmgr (`repmgr standby
//! promote`). Slower than the other routing tests, so they live in their own target.
//!
//! Everything runs on 127.0.0.1 on free ports, in temp dirs, as the `postgres` user when we are
//! root. Every child (etcd, Patroni, and PostgreSQL servers Patroni may leave behind) is killed
//! by pid when its guard drops, and every wait is bounded.

mod common;

use common::{connect, first_value, start_proxy, APP_DB, APP_PASSWORD, APP_USER};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tidepool::cluster::{LocalCluster, NodeOptions, PgBinaries, StopMode};
use tidepool::config::Config;

/// Health checks every 100 ms, down after 2 failures: failover is seen within a second.
const HEALTH: &str =
    "[health]\nhealth_check_interval = \"100ms\"\nhealth_check_timeout = \"1s\"\nfall = 2\nrise = 1\n";

// ---- processes ----

/// A child process killed (TERM, then KILL after 15 s) and reaped when dropped.
struct Spawned {
    name: String,
    child: Child,
}

impl Spawned {
    fn start(name: &str, mut command: Command, log: &Path) -> Spawned {
        let log = std::fs::File::create(log).expect("create log");
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Spawned {
            name: name.to_string(),
            child,
        }
    }

    fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        signal("TERM", self.child.id());
        for _ in 0..150 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("{} ignored SIGTERM; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.stop();
    }
}

fn signal(name: &str, pid: u32) {
    let _ = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .stderr(Stdio::null())
        .status();
}

/// The postmaster of `data_dir`, from its `postmaster.pid`.
fn postmaster_pid(data_dir: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    text.lines().next()?.trim().parse().ok()
}

fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn postgres_id(flag: &str) -> u32 {
    let out = Command::new("id").args([flag, "postgres"]).output().expect("id");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a postgres user")
}

/// `program` run as `postgres` when we are root (PostgreSQL refuses root), else as ourselves.
/// setpriv execs the program, so the child's pid is the program's.
fn server_command(program: &Path) -> Command {
    if running_as_root() {
        let mut command = Command::new("setpriv");
        command
            .args(["--reuid=postgres", "--regid=postgres", "--init-groups"])
            .arg(program);
        command
    } else {
        Command::new(program)
    }
}

/// Hands a directory we created to the server user.
fn hand_over(path: &Path) {
    if running_as_root() {
        std::os::unix::fs::chown(path, Some(postgres_id("-u")), Some(postgres_id("-g"))).expect("chown");
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    listener.local_addr().expect("addr").port()
}

fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// Polls `check` every 200 ms for up to `secs`; panics saying `what` (and `context()`) then.
fn wait_for(what: &str, secs: u64, mut check: impl FnMut() -> bool, context: impl Fn() -> String) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !check() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            context()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

// ---- a tiny HTTP client for Patroni's and etcd's REST APIs ----

fn http(port: u16, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!(
        // HTTP/1.0: the answer is never chunked and ends when the server closes.
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

// ---- the writer both tests run through tidepool ----

/// Inserts one row after another until told to stop; each row says whether it ran in recovery.
/// Returns (port of each accepted write, error messages).
fn spawn_writer(
    client: tokio_postgres::Client,
    stop: Arc<std::sync::atomic::AtomicBool>,
    accepted: Arc<std::sync::Mutex<Vec<u16>>>,
) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let mut errors = Vec::new();
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let insert = "INSERT INTO log (on_standby, port) \
                          VALUES (pg_is_in_recovery(), inet_server_port()) RETURNING port";
            match client.simple_query(insert).await {
                Ok(rows) => accepted.lock().unwrap().push(first_value(&rows).parse().unwrap()),
                Err(e) => errors.push(e.to_string()),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        errors
    })
}

/// Waits (up to 90 s) until 20 writes were accepted by `port` after the writer started, stops
/// the writer, and checks what it saw: at most the in-flight write failed.
async fn writes_resume_on(
    port: u16,
    writer: tokio::task::JoinHandle<Vec<String>>,
    stop: &std::sync::atomic::AtomicBool,
    accepted: &std::sync::Mutex<Vec<u16>>,
) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let on_new = accepted.lock().unwrap().iter().filter(|&&p| p == port).count();
        if on_new >= 20 {
            break;
        }
        if Instant::now() > deadline {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let errors = writer.await.unwrap();
            panic!("writes never resumed on port {port}: {on_new} there; errors: {errors:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let errors = tokio::time::timeout(Duration::from_secs(60), writer)
        .await
        .expect("the writer stops")
        .unwrap();
    assert!(
        errors.len() <= 3,
        "only in-flight writes may fail ({} errors: {errors:?})",
        errors.len()
    );
}

fn proxy_config(pg_ports: &[u16], routing_extra: &str) -> Config {
    let mut toml = format!(
        "[proxy]\nlisten = \"127.0.0.1:0\"\n\n[pool]\ndefault_pool_size = 4\n\n{HEALTH}\n\
         [routing]\nfailover_timeout = \"20s\"\n{routing_extra}\n\n[databases.{APP_DB}]\n\n\
         [[users]]\nname = \"{APP_USER}\"\npassword = \"{APP_PASSWORD}\"\n"
    );
    for port in pg_ports {
        toml.push_str(&format!("\n[[nodes]]\nhost = \"127.0.0.1\"\nport = {port}\n"));
    }
    Config::from_toml(&toml).unwrap()
}

/// Waits until tidepool's health view has a primary at `primary` and `standbys` usable standbys.
async fn wait_for_view(proxy: &tidepool::app::Proxy, primary: usize, standbys: usize) {
    let health = proxy.shared().health().expect("several nodes");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let view = health.view();
        let usable = view.nodes.iter().filter(|n| n.is_usable_standby()).count();
        if view.primary() == Some(primary) && usable >= standbys {
            return;
        }
        assert!(Instant::now() < deadline, "topology never settled: {view:#?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

// ---- Patroni + etcd ----

struct Member {
    rest_port: u16,
    pg_port: u16,
    data_dir: PathBuf,
    patroni: Spawned,
}

/// etcd and three Patroni members in one temp dir.
struct PatroniCluster {
    members: Vec<Member>,
    etcd: Spawned,
    dir: PathBuf,
    bins: PgBinaries,
}

impl PatroniCluster {
    fn start(patroni: &Path, etcd: &Path) -> PatroniCluster {
        let bins = PgBinaries::locate().expect("PostgreSQL binaries");
        let dir =
            std::env::temp_dir().join(format!("tidepool-patroni-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir(&dir).expect("temp dir");
        hand_over(&dir);
        let (client_port, peer_port) = (free_port(), free_port());
        let mut command = Command::new(etcd);
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        command
            .args(["--name", "e0", "--data-dir"])
            .arg(dir.join("etcd"))
            .args([
                "--listen-client-urls",
                &client_url,
                "--advertise-client-urls",
                &client_url,
            ])
            .args([
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
            ])
            // Patroni's etcd3 client speaks etcd's JSON gateway; the v2 API stays off.
            .args(["--initial-cluster", &format!("e0={peer_url}")]);
        let etcd = Spawned::start("etcd", command, &dir.join("etcd.log"));
        let mut cluster = PatroniCluster {
            members: Vec::new(),
            etcd,
            dir,
            bins,
        };
        wait_for(
            "etcd",
            30,
            || http(client_port, "GET", "/health", "").is_some_and(|(s, _)| s == 200),
            || cluster.log("etcd.log"),
        );
        for i in 0..3 {
            let member = cluster.start_member(patroni, i, client_port);
            cluster.members.push(member);
            // The first member bootstraps the cluster; the others then clone it.
            if i == 0 {
                wait_for(
                    "the first Patroni leader",
                    90,
                    || cluster.leader().is_some(),
                    || cluster.logs(),
                );
            }
        }
        wait_for(
            "a leader and two running replicas",
            120,
            || cluster.running_replicas() == 2,
            || cluster.logs(),
        );
        cluster
    }

    fn start_member(&self, patroni: &Path, i: usize, etcd_port: u16) -> Member {
        let (rest_port, pg_port) = (free_port(), free_port());
        let member_dir = self.dir.join(format!("m{i}"));
        std::fs::create_dir(&member_dir).expect("member dir");
        hand_over(&member_dir);
        let data_dir = member_dir.join("data");
        let yaml = format!(
            "scope: tidepool\nname: m{i}\n\
             restapi:\n  listen: 127.0.0.1:{rest_port}\n  connect_address: 127.0.0.1:{rest_port}\n\
             etcd3:\n  hosts: 127.0.0.1:{etcd_port}\n\
             bootstrap:\n  dcs:\n    ttl: 10\n    loop_wait: 1\n    retry_timeout: 3\n\
             \x20   primary_start_timeout: 0\n    maximum_lag_on_failover: 16777216\n\
             \x20   postgresql:\n      use_pg_rewind: false\n      parameters:\n        fsync: 'off'\n\
             \x20 initdb:\n  - encoding: UTF8\n  - locale: C\n\
             \x20 pg_hba:\n  - local all all trust\n  - host all postgres 127.0.0.1/32 trust\n\
             \x20 - host replication all 127.0.0.1/32 trust\n  - host all all 127.0.0.1/32 scram-sha-256\n\
             postgresql:\n  listen: 127.0.0.1:{pg_port}\n  connect_address: 127.0.0.1:{pg_port}\n\
             \x20 data_dir: {data}\n  bin_dir: {bin}\n  pgpass: {member}/pgpass\n\
             \x20 authentication:\n    superuser:\n      username: postgres\n      password: postgres\n\
             \x20   replication:\n      username: replicator\n      password: replicator\n\
             \x20 parameters:\n    unix_socket_directories: '{member}'\n    max_connections: 100\n",
            data = data_dir.display(),
            bin = self.bins.bin_dir.display(),
            member = member_dir.display(),
        );
        let config = member_dir.join("patroni.yml");
        std::fs::write(&config, yaml).expect("write patroni.yml");
        hand_over(&config);
        let mut command = server_command(patroni);
        command
            .arg(&config)
            .env("HOME", &member_dir)
            .current_dir(&member_dir);
        let patroni = Spawned::start(&format!("patroni m{i}"), command, &member_dir.join("patroni.log"));
        Member {
            rest_port,
            pg_port,
            data_dir,
            patroni,
        }
    }

    /// `/cluster` as JSON, asked of any member that answers.
    fn cluster_json(&self) -> Option<serde_json::Value> {
        self.members.iter().find_map(|m| {
            let (status, body) = http(m.rest_port, "GET", "/cluster", "")?;
            (status == 200).then(|| serde_json::from_str(&body).ok())?
        })
    }

    fn member_states(&self) -> Vec<(String, String, String)> {
        let Some(json) = self.cluster_json() else {
            return Vec::new();
        };
        let text = |v: &serde_json::Value, k: &str| v[k].as_str().unwrap_or_default().to_string();
        json["members"]
            .as_array()
            .map(|ms| {
                ms.iter()
                    .map(|m| (text(m, "name"), text(m, "role"), text(m, "state")))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Index of the running member holding the leader key.
    fn leader(&self) -> Option<usize> {
        self.member_states()
            .iter()
            .find(|(_, role, state)| role == "leader" && state == "running")
            .and_then(|(name, _, _)| name.strip_prefix('m')?.parse().ok())
    }

    fn running_replicas(&self) -> usize {
        if self.leader().is_none() {
            return 0;
        }
        (self.member_states().iter())
            .filter(|(_, role, state)| role == "replica" && state == "running")
            .count()
    }

    fn psql(&self, member: usize, sql: &str) -> String {
        self.psql_db(member, "postgres", sql)
    }

    fn psql_db(&self, member: usize, db: &str, sql: &str) -> String {
        let out = Command::new(self.bins.tool("psql"))
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
            ])
            .args([
                "-p",
                &self.members[member].pg_port.to_string(),
                "-d",
                db,
                "-c",
                sql,
            ])
            .env("PGCONNECT_TIMEOUT", "10")
            .output()
            .expect("psql");
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn log(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.dir.join(name)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    fn logs(&self) -> String {
        let mut all = format!("members: {:?}\n", self.member_states());
        for i in 0..self.members.len() {
            all.push_str(&format!("--- m{i}\n{}\n", self.log(&format!("m{i}/patroni.log"))));
        }
        all
    }
}

impl Drop for PatroniCluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            member.patroni.stop();
        }
        // A paused Patroni leaves PostgreSQL running when it exits, and a killed one always does.
        for member in &self.members {
            if let Some(pid) = postmaster_pid(&member.data_dir) {
                signal("KILL", pid);
            }
        }
        self.etcd.stop();
        // Let the killed servers' children exit before their directories go.
        std::thread::sleep(Duration::from_millis(500));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patroni_failover_and_disagreement() {
    let (Some(patroni), Some(etcd)) = (tool("patroni"), tool("etcd")) else {
        panic!("patroni and etcd are not installed; scripts/setup.sh installs them");
    };
    let cluster = tokio::task::spawn_blocking(move || PatroniCluster::start(&patroni, &etcd))
        .await
        .unwrap();
    let leader = cluster.leader().expect("a leader");
    tokio::task::block_in_place(|| {
        cluster.psql(
            leader,
            &format!("CREATE ROLE {APP_USER} LOGIN PASSWORD '{APP_PASSWORD}'"),
        );
        cluster.psql(leader, &format!("CREATE DATABASE {APP_DB} OWNER {APP_USER}"));
    });
    let pg_ports: Vec<u16> = cluster.members.iter().map(|m| m.pg_port).collect();
    let apis: Vec<String> = (cluster.members.iter())
        .map(|m| format!("\"http://127.0.0.1:{}\"", m.rest_port))
        .collect();
    let proxy = start_proxy(proxy_config(
        &pg_ports,
        &format!("patroni_api = [{}]", apis.join(", ")),
    ))
    .await;
    wait_for_view(&proxy, leader, 2).await;
    let addr = proxy.local_addr();
    let c = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    c.batch_execute("CREATE TABLE log (id serial primary key, on_standby bool, port int)")
        .await
        .unwrap();

    // Failover: the leader's PostgreSQL dies; Patroni promotes a replica; tidepool follows.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let accepted = Arc::new(std::sync::Mutex::new(Vec::new()));
    let writer = spawn_writer(c, stop.clone(), accepted.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = postmaster_pid(&cluster.members[leader].data_dir).expect("the leader's postmaster.pid");
    signal("KILL", pid);
    let mut new_leader = None;
    tokio::task::block_in_place(|| {
        wait_for(
            "Patroni to elect a new leader",
            90,
            || {
                new_leader = cluster.leader().filter(|&l| l != leader);
                new_leader.is_some()
            },
            || cluster.logs(),
        )
    });
    let new_leader = new_leader.expect("checked");
    writes_resume_on(pg_ports[new_leader], writer, &stop, &accepted).await;
    let c = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    let on_standby = c
        .simple_query("/* tidepool: primary */ SELECT count(*) FROM log WHERE on_standby")
        .await
        .unwrap();
    assert_eq!(first_value(&on_standby), "0", "no write ever ran in recovery");
    // Writes the old leader acknowledged but had not shipped may be lost (asynchronous
    // replication, Patroni's maximum_lag_on_failover); every write the new leader accepted stays.
    let new_port = pg_ports[new_leader];
    let on_new = accepted
        .lock()
        .unwrap()
        .iter()
        .filter(|&&p| p == new_port)
        .count();
    let stored = c
        .simple_query(&format!(
            "/* tidepool: primary */ SELECT count(*) FROM log WHERE port = {new_port}"
        ))
        .await
        .unwrap();
    assert_eq!(
        first_value(&stored),
        on_new.to_string(),
        "every write the new leader accepted"
    );

    // Disagreement: with Patroni paused (no automatic failover), the leader's Patroni dies; its
    // PostgreSQL keeps running as a primary, but once the leader key expires Patroni names no
    // leader. tidepool must refuse writes (wait, then fail saying why) although a node is
    // writable.
    let rest = cluster.members[new_leader].rest_port;
    let paused = http(rest, "PATCH", "/config", "{\"pause\": true}");
    assert!(paused.as_ref().is_some_and(|(s, _)| *s == 200), "{paused:?}");
    tokio::task::block_in_place(|| {
        wait_for(
            "the pause",
            30,
            || cluster.cluster_json().is_some_and(|j| j["pause"] == true),
            || cluster.logs(),
        )
    });
    signal("KILL", cluster.members[new_leader].patroni.child.id());
    tokio::task::block_in_place(|| {
        wait_for(
            "the leader key to expire",
            60,
            || {
                cluster.cluster_json().is_some_and(|j| {
                    (j["members"].as_array().into_iter().flatten()).all(|m| m["role"] != "leader")
                })
            },
            || cluster.logs(),
        )
    });
    let health = proxy.shared().health().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while health.view().primary().is_some() {
        assert!(
            Instant::now() < deadline,
            "tidepool kept a primary: {:#?}",
            health.view()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let view = health.view();
    let orphan = &view.nodes[new_leader];
    assert!(
        orphan.is_up() && orphan.role == tidepool::health::Role::Primary,
        "the node is still writable: {view:#?}"
    );
    let count = "SELECT count(*) FROM log";
    let before = tokio::task::block_in_place(|| cluster.psql_db(new_leader, APP_DB, count));
    let error = match c
        .simple_query("INSERT INTO log (on_standby, port) VALUES (false, 0) RETURNING inet_server_port()")
        .await
    {
        Ok(rows) => panic!(
            "a write ran on port {} while Patroni names no leader: {:#?}",
            first_value(&rows),
            health.view()
        ),
        Err(error) => error,
    };
    let db = error.as_db_error().unwrap_or_else(|| panic!("{error}"));
    assert_eq!(db.message(), "no primary server available");
    let detail = db.detail().unwrap_or_default();
    assert!(detail.contains("Patroni reports no leader"), "{detail}");
    let after = tokio::task::block_in_place(|| cluster.psql_db(new_leader, APP_DB, count));
    assert_eq!(before, after, "nothing was written meanwhile");

    proxy.shutdown().await;
    tokio::task::block_in_place(move || drop(cluster));
}

// ---- repmgr ----

/// A repmgr configuration file for `node` (repmgr node id `id`).
fn repmgr_conf(cluster: &LocalCluster, node: &tidepool::cluster::LocalNode, id: u32) -> PathBuf {
    let path = cluster.root_dir().join(format!("repmgr-{}.conf", node.name));
    let text = format!(
        "node_id={id}\nnode_name='{name}'\n\
         conninfo='host=127.0.0.1 port={port} user=postgres dbname=repmgr connect_timeout=2'\n\
         data_directory='{data}'\npg_bindir='{bin}'\nlog_level='INFO'\n\
         promote_check_timeout=60\nuse_replication_slots=true\n",
        name = node.name,
        port = node.port,
        data = node.data_dir.display(),
        bin = cluster.binaries().bin_dir.display(),
    );
    std::fs::write(&path, text).expect("write repmgr.conf");
    hand_over(&path);
    path
}

fn repmgr(cluster: &LocalCluster, conf: &Path, args: &[&str]) {
    let repmgr = cluster.binaries().tool("repmgr");
    let out = server_command(&repmgr)
        .arg("-f")
        .arg(conf)
        .args(args)
        .current_dir(cluster.root_dir())
        .stdin(Stdio::null())
        .output()
        .expect("repmgr");
    assert!(
        out.status.success(),
        "repmgr {args:?}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repmgr_standby_promote() {
    let bins = PgBinaries::locate().unwrap();
    assert!(
        bins.tool("repmgr").is_file(),
        "repmgr is not installed; scripts/setup.sh installs postgresql-15-repmgr"
    );
    let cluster = tokio::task::spawn_blocking(move || {
        let mut cluster = LocalCluster::start(&bins, NodeOptions::default()).unwrap();
        cluster.create_role(APP_USER, APP_PASSWORD).unwrap();
        cluster.create_database(APP_DB, APP_USER).unwrap();
        cluster.create_database("repmgr", "postgres").unwrap();
        let conf = repmgr_conf(&cluster, &cluster.primary, 1);
        repmgr(&cluster, &conf, &["primary", "register"]);
        cluster.add_standby().unwrap();
        let conf = repmgr_conf(&cluster, &cluster.standbys[0], 2);
        repmgr(&cluster, &conf, &["standby", "register", "--upstream-node-id=1"]);
        cluster
    })
    .await
    .unwrap();
    let ports: Vec<u16> = cluster.nodes().map(|n| n.port).collect();
    let proxy = start_proxy(proxy_config(&ports, "")).await;
    wait_for_view(&proxy, 0, 1).await;
    let addr = proxy.local_addr();
    let c = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    c.batch_execute("CREATE TABLE log (id serial primary key, on_standby bool, port int)")
        .await
        .unwrap();

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let accepted = Arc::new(std::sync::Mutex::new(Vec::new()));
    let writer = spawn_writer(c, stop.clone(), accepted.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    let standby_conf = cluster
        .root_dir()
        .join(format!("repmgr-{}.conf", cluster.standbys[0].name));
    tokio::task::block_in_place(|| {
        cluster.primary.stop(StopMode::Immediate).unwrap();
        repmgr(&cluster, &standby_conf, &["standby", "promote"]);
    });
    writes_resume_on(cluster.standbys[0].port, writer, &stop, &accepted).await;
    let c = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    let rows = c
        .simple_query("/* tidepool: primary */ SELECT count(*) FROM log WHERE on_standby")
        .await
        .unwrap();
    assert_eq!(first_value(&rows), "0", "no write ever ran in recovery");
    // repmgr's own view agrees: node 2 is the primary now.
    let role = tokio::task::block_in_place(|| {
        cluster.standbys[0].psql("repmgr", "SELECT type FROM repmgr.nodes WHERE node_id = 2")
    })
    .unwrap();
    assert_eq!(role, "primary");
    proxy.shutdown().await;
    tokio::task::block_in_place(move || drop(cluster));
}
