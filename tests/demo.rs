//! `tidepool demo`: starts PostgreSQL and the proxy, prints a working psql line, and on Ctrl-C
//! stops and deletes exactly what it started.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn demo_prints_a_working_connection_string_and_cleans_up_on_ctrl_c() {
    let mut demo = Command::new(env!("CARGO_BIN_EXE_tidepool"))
        .arg("demo")
        .env("TIDEPOOL_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = demo.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let started = Instant::now();
    let mut url = None;
    let mut data_dir = None;
    while url.is_none() {
        let line = rx
            .recv_timeout(Duration::from_secs(90).saturating_sub(started.elapsed()))
            .expect("the demo prints a connection string");
        if let Some(rest) = line.trim().strip_prefix("psql \"") {
            url = Some(rest.trim_end_matches('"').to_string());
        }
        if let Some(start) = line.find("(data in ") {
            data_dir = Some(line[start + 9..].trim_end_matches(')').to_string());
        }
    }
    let url = url.unwrap();
    let data_dir = data_dir.expect("the banner names the data directory");
    assert!(std::path::Path::new(&data_dir).exists());

    let psql = tidepool::cluster::PgBinaries::locate().unwrap().tool("psql");
    let out = Command::new(psql)
        .args([
            url.as_str(),
            "-X",
            "-A",
            "-t",
            "-c",
            "SELECT 'hello through tidepool'",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "hello through tidepool"
    );

    // Ctrl-C, sent to the demo process only.
    assert!(Command::new("kill")
        .args(["-INT", &demo.id().to_string()])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = demo.try_wait().unwrap() {
            assert!(status.success(), "demo exited with {status}");
            break;
        }
        assert!(Instant::now() < deadline, "demo did not stop after Ctrl-C");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !std::path::Path::new(&data_dir).exists(),
        "{data_dir} was left behind"
    );
}
