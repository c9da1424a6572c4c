//! Unit tests for the parts of the cluster helper that need no PostgreSQL server.

use super::binaries::newest_first;
use super::conf::{conf_quote, render_hba, render_node_conf, sh_quote, sql_ident, sql_literal};
use super::scratch::reaper_script;
use super::{ClusterError, NodeOptions, PgBinaries};
use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A fresh empty directory under the system temp dir, removed by the caller.
fn scratch(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos();
    let dir = std::env::temp_dir().join(format!("tidepool-unit-{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

#[test]
fn versions_sort_numerically_newest_first() {
    let names = ["9.6", "15", "10", "main", "16", "9.10"].map(String::from);
    assert_eq!(newest_first(names), ["16", "15", "10", "9.10", "9.6"]);
}

#[test]
fn fixed_hba_rules_come_before_test_rules() {
    let opts = NodeOptions {
        hba_rules: vec!["host all md5user 127.0.0.1/32 md5".into()],
        extra_conf: vec![],
    };
    let hba = render_hba(&opts);
    let lines: Vec<&str> = hba.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        lines,
        [
            "local all all trust",
            "host all postgres 127.0.0.1/32 trust",
            "host replication all 127.0.0.1/32 trust",
            "host all md5user 127.0.0.1/32 md5",
        ]
    );
}

#[test]
fn default_options_require_scram_for_everyone_else() {
    let hba = render_hba(&NodeOptions::default());
    assert!(hba.ends_with("host all all 127.0.0.1/32 scram-sha-256\n"));
}

#[test]
fn node_conf_has_port_socket_and_extras_last() {
    let opts = NodeOptions {
        extra_conf: vec!["max_connections = 50".into()],
        ..NodeOptions::default()
    };
    let text = render_node_conf("node1", 54321, Path::new("/tmp/it's"), &opts);
    assert!(text.contains("\nport = 54321\n"));
    assert!(text.contains("unix_socket_directories = '/tmp/it''s'\n"));
    assert!(text.contains("listen_addresses = '127.0.0.1'\n"));
    assert!(text.contains("cluster_name = 'node1'\n"));
    // Later lines win in postgresql.conf, so the caller's extras must follow ours.
    let ours = text.find("max_connections = 300").expect("default present");
    let theirs = text.find("max_connections = 50").expect("extra present");
    assert!(theirs > ours);
}

#[test]
fn quoting() {
    assert_eq!(conf_quote(r"a'b\c"), r"'a''b\\c'");
    assert_eq!(sql_literal("it's"), "'it''s'");
    assert_eq!(sql_ident("My\"Role"), "\"My\"\"Role\"");
    assert_eq!(sh_quote(&OsString::from("a'b c")), r"'a'\''b c'");
}

#[test]
fn missing_binaries_error_says_how_to_install() {
    let dir = scratch("nobin");
    let error = PgBinaries::at(&dir).expect_err("an empty dir has no initdb");
    assert!(matches!(error, ClusterError::BinariesNotFound { .. }));
    assert!(error.to_string().contains("apt-get install -y postgresql"));
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn failure_messages_carry_the_log_tail() {
    let status = Command::new("false").status().expect("run false");
    let error = ClusterError::CommandFailed {
        command: "pg_ctl start".into(),
        status,
        output: "could not start server".into(),
        log_tail: "FATAL:  could not create any TCP/IP sockets".into(),
    };
    let text = error.to_string();
    assert!(text.contains("could not start server"));
    assert!(text.contains("--- server log (last lines) ---\nFATAL:  could not create"));
}

/// Runs the reaper script with a fake pg_ctl and an already-closed stdin, as after our exit.
#[test]
fn reaper_stops_every_running_node_by_data_dir_then_deletes_the_root() {
    let work = scratch("reaper");
    let calls = work.join("calls.txt");
    let fake_pg_ctl = work.join("pg_ctl");
    std::fs::write(
        &fake_pg_ctl,
        format!("#!/bin/sh\necho \"$@\" >> '{}'\n", calls.display()),
    )
    .expect("write fake pg_ctl");
    std::fs::set_permissions(&fake_pg_ctl, std::fs::Permissions::from_mode(0o755))
        .expect("make fake pg_ctl executable");

    let root = work.join("cluster with 'quotes'");
    for (node, running) in [("node0", true), ("node1", false), ("node2", true)] {
        let data = root.join(node).join("data");
        std::fs::create_dir_all(&data).expect("create data dir");
        if running {
            std::fs::write(data.join("postmaster.pid"), "12345\n").expect("write pid file");
        }
    }

    let script = reaper_script(&[fake_pg_ctl.into_os_string()], &root);
    let status = Command::new("/bin/sh")
        .arg("-c")
        .arg(&script)
        .stdin(Stdio::null())
        .status()
        .expect("run reaper script");
    assert!(status.success());

    let calls = std::fs::read_to_string(&calls).expect("pg_ctl was called");
    let expected: Vec<String> = ["node0", "node2"]
        .iter()
        .map(|n| format!("stop -D {}/{n}/data -m immediate -w -t 30", root.display()))
        .collect();
    assert_eq!(calls.lines().collect::<Vec<_>>(), expected);
    assert!(!root.exists(), "the reaper deletes the cluster directory");
    std::fs::remove_dir_all(&work).expect("cleanup");
}
