//! Real tools through the proxy binary: psql's meta-commands (`\d`, `\copy`, `\watch`), and
//! COPY of more than 100 MB each way while the proxy's memory stays flat.

mod common;

use common::*;
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The tidepool binary running with a config file; killed when dropped.
struct ProxyProcess {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_binary(pool_mode: &str) -> ProxyProcess {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let toml = base_config_toml(pg())
        .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"))
        .replace(
            "pool_mode = \"transaction\"",
            &format!("pool_mode = \"{pool_mode}\""),
        );
    let path = dir.path().join("pool.toml");
    std::fs::write(&path, toml).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_tidepool"))
        .args(["--config", path.to_str().unwrap()])
        .env("TIDEPOOL_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let started = Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "tidepool did not start listening"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    ProxyProcess {
        child,
        addr,
        _dir: dir,
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Samples the RSS of `pid` every 20 ms until stopped; returns the peak.
fn watch_rss(pid: u32) -> (Arc<AtomicBool>, std::thread::JoinHandle<u64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let peak = Arc::new(AtomicU64::new(0));
    let handle = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                peak.fetch_max(rss_kib(pid), Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(20));
            }
            peak.load(Ordering::Relaxed)
        })
    };
    (stop, handle)
}

fn psql(addr: SocketAddr, args: &[&str]) -> String {
    let out = psql_cmd(addr, APP_USER, APP_DB).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "psql {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn psql_meta_commands_work_through_the_proxy() {
    let proxy = start_binary("transaction");
    let addr = proxy.addr;
    psql(
        addr,
        &[
            "-c",
            "DROP TABLE IF EXISTS psql_t; CREATE TABLE psql_t (id int primary key, name text)",
        ],
    );
    let described = psql(addr, &["-c", "\\d psql_t"]);
    assert!(
        described.contains("id|integer||not null|") && described.contains("name|text|"),
        "{described}"
    );

    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.csv");
    std::fs::write(&input, "1,one\n2,two\n3,three\n").unwrap();
    psql(
        addr,
        &[
            "-c",
            &format!("\\copy psql_t FROM '{}' WITH (FORMAT csv)", input.display()),
        ],
    );
    let output = dir.path().join("out.csv");
    psql(
        addr,
        &[
            "-c",
            &format!(
                "\\copy (SELECT * FROM psql_t ORDER BY id) TO '{}' WITH (FORMAT csv)",
                output.display()
            ),
        ],
    );
    assert_eq!(
        std::fs::read_to_string(&output).unwrap(),
        "1,one\n2,two\n3,three\n"
    );

    // \watch repeats until interrupted: let it run, then Ctrl-C it (SIGINT to that psql only,
    // by pid), as a person would; psql then reads the next command and exits at end of input.
    let mut watch = psql_cmd(addr, APP_USER, APP_DB)
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = watch.stdin.take().unwrap();
    stdin
        .write_all(b"SELECT count(*) FROM psql_t \\watch 0.2\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    let status = Command::new("kill")
        .args(["-INT", &watch.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    stdin.write_all(b"SELECT 'after-watch';\n").unwrap();
    drop(stdin);
    let out = watch.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let repeats = text.lines().filter(|l| l.trim() == "3").count();
    assert!(repeats >= 3, "\\watch ran {repeats} times: {text}");
    assert!(
        text.contains("after-watch"),
        "psql kept working after Ctrl-C: {text}"
    );
}

#[test]
fn copy_over_100_mb_each_way_keeps_proxy_memory_flat() {
    let proxy = start_binary("transaction");
    let addr = proxy.addr;
    psql(
        addr,
        &[
            "-c",
            "DROP TABLE IF EXISTS big_copy; CREATE UNLOGGED TABLE big_copy (id int, payload text)",
        ],
    );
    let pid = proxy.child.id();
    let baseline = rss_kib(pid);
    let (stop, watcher) = watch_rss(pid);

    // COPY FROM STDIN: 120 MB generated on the fly into psql's stdin.
    let mut copy_in = psql_cmd(addr, APP_USER, APP_DB)
        .args(["-c", "\\copy big_copy FROM STDIN"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = copy_in.stdin.take().unwrap();
        let payload = "x".repeat(1000);
        let mut chunk = String::new();
        for i in 0..120_000 {
            chunk.push_str(&format!("{i}\t{payload}\n"));
            if chunk.len() > 1 << 20 {
                stdin.write_all(chunk.as_bytes()).unwrap();
                chunk.clear();
            }
        }
        stdin.write_all(chunk.as_bytes()).unwrap();
    }
    assert!(copy_in.wait().unwrap().success());
    assert_eq!(
        psql(addr, &["-c", "SELECT count(*) FROM big_copy"]).trim(),
        "120000"
    );

    // COPY TO STDOUT: the same 120 MB back, counted as it streams.
    let mut copy_out = psql_cmd(addr, APP_USER, APP_DB)
        .args(["-c", "COPY big_copy TO STDOUT"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut received = 0u64;
    let mut stdout = copy_out.stdout.take().unwrap();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = std::io::Read::read(&mut stdout, &mut buf).unwrap();
        if n == 0 {
            break;
        }
        received += n as u64;
    }
    assert!(copy_out.wait().unwrap().success());
    assert!(received > 100 << 20, "received only {received} bytes");

    stop.store(true, Ordering::Relaxed);
    let peak = watcher.join().unwrap();
    let growth_mib = peak.saturating_sub(baseline) / 1024;
    assert!(peak > 0, "could not read the proxy's RSS");
    assert!(
        growth_mib < 50,
        "proxy RSS grew by {growth_mib} MiB (baseline {baseline} KiB, peak {peak} KiB)"
    );
    psql(addr, &["-c", "DROP TABLE big_copy"]);
}
