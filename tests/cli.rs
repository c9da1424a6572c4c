//! The `tidepool check` command, run as a process: exit status and what it prints.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output};

const EXAMPLE: &str = include_str!("../pool.toml.example");

fn check(config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tidepool"))
        .arg("check")
        .arg("--config")
        .arg(config)
        .env_remove("TIDEPOOL_LOG")
        .output()
        .expect("run tidepool")
}

/// A temporary config file holding `text`, removed when dropped.
fn config_file(text: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new()
        .suffix(".toml")
        .tempfile()
        .expect("temp file");
    file.write_all(text.as_bytes()).expect("write config");
    file
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn check_accepts_the_example_config() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("pool.toml.example");
    let out = check(&example);
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert!(text(&out.stdout).contains("OK"), "stdout: {}", text(&out.stdout));
}

#[test]
fn check_refuses_an_invalid_config_naming_the_key() {
    let invalid = EXAMPLE.replace("default_pool_size = 20", "default_pool_size = 0");
    assert_ne!(
        invalid, EXAMPLE,
        "the example no longer sets default_pool_size = 20"
    );
    let file = config_file(&invalid);
    let out = check(file.path());
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("pool.default_pool_size: must be > 0"),
        "stderr: {stderr}"
    );
    assert!(
        stderr.contains(&file.path().display().to_string()),
        "names the file: {stderr}"
    );
}

#[test]
fn check_refuses_a_missing_file_and_a_missing_flag() {
    let out = check(Path::new("/nonexistent/tidepool.toml"));
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("/nonexistent/tidepool.toml"));

    let out = Command::new(env!("CARGO_BIN_EXE_tidepool"))
        .arg("check")
        .output()
        .expect("run tidepool");
    assert_eq!(out.status.code(), Some(2), "stderr: {}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--config"));
}

#[test]
fn check_reads_the_auth_files_and_names_the_bad_line() {
    let mut userlist = tempfile::NamedTempFile::new().expect("temp file");
    userlist
        .write_all(b"\"app\" \"app-secret\"\n\"bob\" \"unterminated-secret\n")
        .expect("write userlist");
    let with_file = EXAMPLE.replace(
        "#auth_file = \"userlist.txt\"",
        &format!("auth_file = \"{}\"", userlist.path().display()),
    );
    assert_ne!(with_file, EXAMPLE, "the example no longer shows auth_file");
    let file = config_file(&with_file);
    let out = check(file.path());
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    let expected = format!(
        "auth.auth_file {}: line 2: unterminated quoted string",
        userlist.path().display()
    );
    assert!(stderr.contains(&expected), "stderr: {stderr}");
    assert!(!stderr.contains("unterminated-secret"), "stderr: {stderr}");
}
