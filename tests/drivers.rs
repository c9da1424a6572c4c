//! Real drivers unchanged in transaction mode: psycopg 3 (`prepare_threshold=0`), asyncpg and
//! node-postgres named queries, installed from PyPI and npm on first run (cached under
//! `target/drivers/`), each driven by a small script in `tests/drivers/` that checks its results.

mod common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use tidepool::config::Config;

fn drivers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("drivers")
}

fn run_ok(command: &mut Command, what: &str) -> String {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} failed:\n{text}");
    text
}

/// A virtualenv with psycopg and asyncpg.
fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let venv = drivers_dir().join("venv");
        let python = venv.join("bin").join("python");
        if !python.exists() {
            run_ok(
                Command::new("python3").args(["-m", "venv"]).arg(&venv),
                "python3 -m venv",
            );
        }
        let check = Command::new(&python)
            .args(["-c", "import psycopg, asyncpg"])
            .output()
            .unwrap();
        if !check.status.success() {
            run_ok(
                Command::new(&python).args([
                    "-m",
                    "pip",
                    "install",
                    "-q",
                    "psycopg[binary]==3.*",
                    "asyncpg==0.*",
                ]),
                "pip install psycopg asyncpg",
            );
        }
        python
    })
}

/// node_modules with pg.
fn node_modules() -> &'static Path {
    static NODE: OnceLock<PathBuf> = OnceLock::new();
    NODE.get_or_init(|| {
        let dir = drivers_dir().join("node");
        if !dir.join("node_modules").join("pg").exists() {
            std::fs::create_dir_all(&dir).unwrap();
            run_ok(
                Command::new("npm")
                    .args(["install", "--silent", "--no-audit", "--no-fund", "--prefix"])
                    .arg(&dir)
                    .arg("pg@8"),
                "npm install pg",
            );
        }
        dir.join("node_modules")
    })
}

async fn proxy() -> tidepool::app::Proxy {
    let toml = base_config_toml(tokio::task::block_in_place(pg))
        .replace("default_pool_size = 10", "default_pool_size = 2");
    start_proxy(Config::from_toml(&toml).unwrap()).await
}

fn dsn(addr: std::net::SocketAddr) -> String {
    format!(
        "postgresql://{APP_USER}:{APP_PASSWORD}@{}:{}/{APP_DB}?sslmode=disable",
        addr.ip(),
        addr.port()
    )
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("drivers")
        .join(name)
}

fn assert_ok(output: &str, expected: usize) {
    let line = output
        .lines()
        .find(|l| l.starts_with("OK "))
        .unwrap_or_else(|| panic!("no OK line:\n{output}"));
    assert_eq!(line, format!("OK {expected}"), "{output}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg3_with_prepare_threshold_zero() {
    let proxy = proxy().await;
    let dsn = dsn(proxy.local_addr());
    let out = tokio::task::spawn_blocking(move || {
        run_ok(
            Command::new(python())
                .arg(script("psycopg_check.py"))
                .env("TIDEPOOL_DSN", dsn),
            "psycopg script",
        )
    })
    .await
    .unwrap();
    assert_ok(&out, 240);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asyncpg_prepares_everything() {
    let proxy = proxy().await;
    let dsn = dsn(proxy.local_addr());
    let out = tokio::task::spawn_blocking(move || {
        run_ok(
            Command::new(python())
                .arg(script("asyncpg_check.py"))
                .env("TIDEPOOL_DSN", dsn),
            "asyncpg script",
        )
    })
    .await
    .unwrap();
    assert_ok(&out, 360);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres_named_queries() {
    let proxy = proxy().await;
    let dsn = dsn(proxy.local_addr());
    let out = tokio::task::spawn_blocking(move || {
        run_ok(
            Command::new("node")
                .arg(script("node_pg_check.js"))
                .env("TIDEPOOL_DSN", dsn)
                .env("NODE_PATH", node_modules()),
            "node-postgres script",
        )
    })
    .await
    .unwrap();
    assert_ok(&out, 240);
    proxy.shutdown().await;
}

/// Issue 15, item 6: a type dropped (rolled back) and created again under psycopg's prepared
/// statements, in both modes and on a direct connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psycopg3_types_that_change_under_prepared_statements() {
    let direct = dsn(tokio::task::block_in_place(pg).addr());
    for mode in ["transaction", "session"] {
        let toml = base_config_toml(tokio::task::block_in_place(pg))
            .replace("pool_mode = \"transaction\"", &format!("pool_mode = \"{mode}\""))
            // Transaction mode: two backends, both used by the script's pairs of clients;
            // session mode: two more for the connections held throughout.
            .replace(
                "default_pool_size = 10",
                if mode == "session" {
                    "default_pool_size = 4"
                } else {
                    "default_pool_size = 2"
                },
            );
        let proxy = start_proxy(Config::from_toml(&toml).unwrap()).await;
        for (what, target) in [("direct", direct.clone()), (mode, dsn(proxy.local_addr()))] {
            let out = tokio::task::spawn_blocking(move || {
                run_ok(
                    Command::new(python())
                        .arg(script("psycopg_types_check.py"))
                        .env("TIDEPOOL_DSN", target),
                    &format!("psycopg types script ({what})"),
                )
            })
            .await
            .unwrap();
            assert_ok(&out, 25);
        }
        proxy.shutdown().await;
    }
}

/// Issue 15, item 6: node-postgres named statements when a column's type changes under them.
/// Directly, each client's statement fails with 0A000 from then on (node-postgres keeps it),
/// while a new client's first execution gets the new rows;
/// session mode is the same; transaction mode prepares it again and retries (README: schema
/// changes), so every execution returns the current rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_postgres_named_statements_across_a_column_type_change() {
    let direct = dsn(tokio::task::block_in_place(pg).addr());
    let run = |what: String, target: String| {
        run_ok(
            Command::new("node")
                .arg(script("node_pg_types_check.js"))
                .env("TIDEPOOL_DSN", target)
                .env("NODE_PATH", node_modules()),
            &format!("node-postgres types script ({what})"),
        )
    };
    let expected = tokio::task::spawn_blocking({
        let direct = direct.clone();
        move || run("direct".into(), direct)
    })
    .await
    .unwrap();
    assert_eq!(expected.matches("error 0A000").count(), 9, "{expected}");
    for mode in ["transaction", "session"] {
        let toml = base_config_toml(tokio::task::block_in_place(pg))
            .replace("pool_mode = \"transaction\"", &format!("pool_mode = \"{mode}\""))
            .replace("default_pool_size = 10", "default_pool_size = 5");
        let proxy = start_proxy(Config::from_toml(&toml).unwrap()).await;
        let target = dsn(proxy.local_addr());
        let got = tokio::task::spawn_blocking(move || run(mode.into(), target))
            .await
            .unwrap();
        if mode == "session" {
            assert_eq!(got, expected, "{mode}");
        } else {
            assert!(!got.contains("error"), "{got}");
            assert_eq!(got.matches(r#"{"id":1,"v":"10"}"#).count(), 7, "{got}");
            assert_eq!(got.matches(r#"{"id":1,"v":"10","w":5}"#).count(), 3, "{got}");
        }
        proxy.shutdown().await;
    }
}
