//! Authentication: every client method (success and failure, PostgreSQL's errors), hba rules,
//! auth_file, auth_query with a user created after startup and SCRAM pass-through, md5
//! pass-through, backend methods (scram, md5, password, trust, an unsupported one), and
//! malformed auth files rejecting the config. TLS-dependent decisions (hostssl, cert, password
//! over TLS) are unit-tested in `client::auth::policy`.

mod common;

use common::wire::{startup_packet, RawClient};
use common::*;
use std::net::SocketAddr;
use std::sync::OnceLock;
use tidepool::config::Config;

const PW_BACKEND_PASSWORD: &str = "pw-backend-secret";

/// Creates the roles the per-method pg_hba.conf rules of the harness name, once per binary.
fn roles() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let cluster = pg_cluster();
        cluster
            .create_role(PASSWORD_BACKEND_USER, PW_BACKEND_PASSWORD)
            .expect("role");
        cluster.create_role(TRUST_BACKEND_USER, "unused").expect("role");
        cluster.create_role(GSS_BACKEND_USER, "unused").expect("role");
    });
}

/// The harness config (user `app`) with `extra` TOML appended.
fn config(extra: &str) -> Config {
    let toml = tokio::task::block_in_place(|| {
        roles();
        base_config_toml(pg())
    });
    Config::from_toml(&format!("{toml}\n{extra}")).unwrap_or_else(|e| panic!("test config: {e}\n{extra}"))
}

async fn current_user(addr: SocketAddr, user: &str, password: &str) -> String {
    let client = connect(addr, user, password, APP_DB).await;
    first_value(&client.simple_query("SELECT current_user").await.unwrap())
}

/// Asserts that a login fails with this SQLSTATE and PostgreSQL's message.
async fn refused(addr: SocketAddr, user: &str, password: &str, db: &str, code: &str, message: &str) {
    let err = match try_connect(addr, user, password, db).await {
        Ok(_) => panic!("{user} logged in to {db}; expected {code}"),
        Err(e) => e,
    };
    let db_error = err.as_db_error().unwrap_or_else(|| panic!("{user}: {err}"));
    assert_eq!(
        (db_error.code().code(), db_error.message()),
        (code, message),
        "{user}"
    );
}

fn failed(user: &str) -> String {
    format!("password authentication failed for user \"{user}\"")
}

/// The code of the first authentication request tidepool sends `user` (3 cleartext, 5 md5,
/// 10 SASL), or the ErrorResponse's SQLSTATE.
async fn first_request(addr: SocketAddr, user: &str, db: &str) -> Result<i32, String> {
    let (user, db) = (user.to_string(), db.to_string());
    tokio::task::spawn_blocking(move || {
        let mut c = RawClient::connect(addr);
        c.send(&startup_packet(&[("user", &user), ("database", &db)]));
        let m = c.recv().expect("an answer");
        match m.tag {
            b'R' => Ok(i32::from_be_bytes(m.body[..4].try_into().unwrap())),
            _ => Err(m.sqlstate().unwrap_or_default()),
        }
    })
    .await
    .unwrap()
}

/// The stored password of `role` as PostgreSQL has it.
fn stored_password(role: &str) -> String {
    pg().psql(
        "postgres",
        &format!("SELECT passwd FROM pg_shadow WHERE usename = '{role}'"),
    )
    .expect("pg_shadow")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_method_succeeds_and_fails_like_postgres() {
    let proxy = start_proxy(config(&format!(
        "[auth]\nallow_cleartext_without_tls = true\n\
         [[users]]\nname = \"{MD5_USER}\"\npassword = \"{MD5_PASSWORD}\"\nauth_method = \"md5\"\n\
         [[users]]\nname = \"{PASSWORD_BACKEND_USER}\"\npassword = \"{PW_BACKEND_PASSWORD}\"\nauth_method = \"password\"\n\
         [[users]]\nname = \"{TRUST_BACKEND_USER}\"\nauth_method = \"trust\"\n"
    )))
    .await;
    let addr = proxy.local_addr();
    // scram-sha-256 (default) to a scram backend; md5 to an md5 backend; password (cleartext)
    // to a `password` backend; trust to a trust backend.
    assert_eq!(first_request(addr, APP_USER, APP_DB).await, Ok(10));
    assert_eq!(first_request(addr, MD5_USER, APP_DB).await, Ok(5));
    assert_eq!(first_request(addr, PASSWORD_BACKEND_USER, APP_DB).await, Ok(3));
    for (user, password) in [
        (APP_USER, APP_PASSWORD),
        (MD5_USER, MD5_PASSWORD),
        (PASSWORD_BACKEND_USER, PW_BACKEND_PASSWORD),
        (TRUST_BACKEND_USER, "anything"),
    ] {
        assert_eq!(current_user(addr, user, password).await, user);
    }
    for user in [APP_USER, MD5_USER, PASSWORD_BACKEND_USER, "nobody"] {
        refused(addr, user, "wrong", APP_DB, "28P01", &failed(user)).await;
    }
    // psql (libpq) the same way.
    let out = tokio::task::spawn_blocking(move || {
        let ok = psql_cmd_with_password(addr, MD5_USER, MD5_PASSWORD, APP_DB)
            .args(["-c", "SELECT current_user"])
            .output()
            .unwrap();
        let bad = psql_cmd_with_password(addr, PASSWORD_BACKEND_USER, "wrong", APP_DB)
            .args(["-c", "SELECT 1"])
            .output()
            .unwrap();
        (ok, bad)
    })
    .await
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.0.stdout).trim(), MD5_USER, "{out:?}");
    assert!(!out.1.status.success());
    assert!(String::from_utf8_lossy(&out.1.stderr).contains(&failed(PASSWORD_BACKEND_USER)));
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleartext_cert_and_reject_are_refused_without_tls() {
    let proxy = start_proxy(config(&format!(
        "[[users]]\nname = \"{PASSWORD_BACKEND_USER}\"\npassword = \"{PW_BACKEND_PASSWORD}\"\nauth_method = \"password\"\n\
         [[users]]\nname = \"certuser\"\nauth_method = \"cert\"\n\
         [[users]]\nname = \"banned\"\nauth_method = \"reject\"\n"
    )))
    .await;
    let addr = proxy.local_addr();
    // The password is never asked for: refused before the client would send it in clear.
    assert_eq!(
        first_request(addr, PASSWORD_BACKEND_USER, APP_DB).await,
        Err("28000".into())
    );
    refused(
        addr,
        PASSWORD_BACKEND_USER,
        PW_BACKEND_PASSWORD,
        APP_DB,
        "28000",
        "password authentication is not allowed on a connection without TLS",
    )
    .await;
    refused(
        addr,
        "certuser",
        "x",
        APP_DB,
        "28000",
        "connection requires a valid client certificate",
    )
    .await;
    refused(
        addr,
        "banned",
        "x",
        APP_DB,
        "28000",
        "pg_hba.conf rejects connection for host \"127.0.0.1\", user \"banned\", database \"app\", no encryption",
    )
    .await;
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hba_rules_first_match_wins_and_no_match_is_28000() {
    let rule = |user: &str, db: &str, address: &str, method: &str| {
        format!(
            "[[hba]]\ntype = \"host\"\ndatabase = \"{db}\"\nuser = \"{user}\"\naddress = \"{address}\"\nmethod = \"{method}\"\n"
        )
    };
    let proxy = start_proxy(config(&format!(
        "[[users]]\nname = \"{MD5_USER}\"\npassword = \"{MD5_PASSWORD}\"\n\
         [[users]]\nname = \"{TRUST_BACKEND_USER}\"\npassword = \"x\"\n\
         [[hba]]\ntype = \"hostssl\"\ndatabase = \"all\"\nuser = \"all\"\naddress = \"all\"\nmethod = \"cert\"\n\
         {}{}{}{}",
        rule(MD5_USER, "app", "127.0.0.1/32", "md5"),
        rule(TRUST_BACKEND_USER, "all", "all", "reject"),
        rule("all", "app", "10.0.0.0/8", "trust"),
        rule("all", "app", "127.0.0.0/8", "scram-sha-256"),
    )))
    .await;
    let addr = proxy.local_addr();
    // The md5 rule comes before the scram one, the hostssl one does not apply without TLS,
    // and the trust one is for another network.
    assert_eq!(first_request(addr, MD5_USER, APP_DB).await, Ok(5));
    assert_eq!(current_user(addr, MD5_USER, MD5_PASSWORD).await, MD5_USER);
    assert_eq!(first_request(addr, APP_USER, APP_DB).await, Ok(10));
    assert_eq!(current_user(addr, APP_USER, APP_PASSWORD).await, APP_USER);
    refused(addr, APP_USER, "wrong", APP_DB, "28P01", &failed(APP_USER)).await;
    // The reject rule wins over the later scram rule that would match too.
    refused(
        addr,
        TRUST_BACKEND_USER,
        "x",
        APP_DB,
        "28000",
        "pg_hba.conf rejects connection for host \"127.0.0.1\", user \"trust_backend\", database \"app\", no encryption",
    )
    .await;
    refused(
        addr,
        APP_USER,
        APP_PASSWORD,
        "postgres",
        "28000",
        "no pg_hba.conf entry for host \"127.0.0.1\", user \"app\", database \"postgres\", no encryption",
    )
    .await;
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_file_and_hba_file_from_disk_with_md5_pass_through() {
    let dir = tempfile::tempdir().unwrap();
    let md5_hash = tokio::task::block_in_place(|| stored_password(MD5_USER));
    assert!(md5_hash.starts_with("md5"), "{md5_hash}");
    let userlist = dir.path().join("userlist.txt");
    std::fs::write(
        &userlist,
        format!(
            "; migrated from PgBouncer\n\"{PASSWORD_BACKEND_USER}\" \"{PW_BACKEND_PASSWORD}\"\n\"{MD5_USER}\" \"{md5_hash}\"\n"
        ),
    )
    .unwrap();
    let hba = dir.path().join("pg_hba.conf");
    std::fs::write(
        &hba,
        format!(
            "# TYPE DATABASE USER ADDRESS METHOD\nlocal all all trust\n\
             host app {MD5_USER} 127.0.0.1/32 md5\nhost all all 127.0.0.1 255.255.255.255 scram-sha-256\n"
        ),
    )
    .unwrap();
    let proxy = start_proxy(config(&format!(
        "[auth]\nauth_file = \"{}\"\nauth_hba_file = \"{}\"\n",
        userlist.display(),
        hba.display()
    )))
    .await;
    let addr = proxy.local_addr();
    // Not in [[users]]: the plaintext from the file logs in to the `password` backend.
    assert_eq!(
        current_user(addr, PASSWORD_BACKEND_USER, PW_BACKEND_PASSWORD).await,
        PASSWORD_BACKEND_USER
    );
    // Only PostgreSQL's md5 hash is known: it checks the client and logs in to the md5 backend.
    assert_eq!(first_request(addr, MD5_USER, APP_DB).await, Ok(5));
    assert_eq!(current_user(addr, MD5_USER, MD5_PASSWORD).await, MD5_USER);
    refused(addr, MD5_USER, "wrong", APP_DB, "28P01", &failed(MD5_USER)).await;
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_auth_files_reject_the_config_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let userlist = dir.path().join("userlist.txt");
    std::fs::write(&userlist, "\"ok\" \"fine\"\n\"broken\" top-secret-value\n").unwrap();
    let error = tidepool::app::Proxy::start(config(&format!(
        "[auth]\nauth_file = \"{}\"\n",
        userlist.display()
    )))
    .await
    .err()
    .expect("malformed userlist refused");
    let text = error.to_string();
    assert_eq!(
        text,
        format!(
            "auth.auth_file {}: line 2: expected \"name\" \"secret\"",
            userlist.display()
        )
    );
    assert!(!text.contains("top-secret"));

    let hba = dir.path().join("pg_hba.conf");
    std::fs::write(
        &hba,
        "host all all 127.0.0.1/32 scram-sha-256\nhost all all 10.0.0.0/8 ldap\n",
    )
    .unwrap();
    let error = tidepool::app::Proxy::start(config(&format!(
        "[auth]\nauth_hba_file = \"{}\"\n",
        hba.display()
    )))
    .await
    .err()
    .expect("malformed hba file refused");
    assert_eq!(
        error.to_string(),
        format!(
            "auth.auth_hba_file {}: line 2: authentication method \"ldap\" is not supported by tidepool",
            hba.display()
        )
    );
    let missing = dir.path().join("nope.txt");
    let error = tidepool::app::Proxy::start(config(&format!(
        "[auth]\nauth_file = \"{}\"\n",
        missing.display()
    )))
    .await
    .err()
    .expect("missing file refused");
    assert!(
        error.to_string().starts_with("auth.auth_file: cannot read"),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_query_lets_in_a_user_created_later_with_scram_pass_through() {
    // auth_user is the harness superuser, trusted by PostgreSQL: no password anywhere here.
    // md5user is listed only for its method: its md5 hash comes from PostgreSQL too.
    let proxy = start_proxy(config(&format!(
        "[auth]\nauth_user = \"postgres\"\nauth_query_miss_ttl = \"0\"\n\
         [[users]]\nname = \"{MD5_USER}\"\nauth_method = \"md5\"\npool_size = 2\n"
    )))
    .await;
    let addr = proxy.local_addr();
    refused(
        addr,
        "late_user",
        "late-secret",
        APP_DB,
        "28P01",
        &failed("late_user"),
    )
    .await;
    tokio::task::block_in_place(|| pg_cluster().create_role("late_user", "late-secret")).unwrap();
    // Created after tidepool started, listed nowhere in its config: looked up, checked with
    // SCRAM, and the client's key logs the pool in to PostgreSQL (scram-sha-256 there too).
    assert_eq!(first_request(addr, "late_user", APP_DB).await, Ok(10));
    assert_eq!(current_user(addr, "late_user", "late-secret").await, "late_user");
    refused(addr, "late_user", "wrong", APP_DB, "28P01", &failed("late_user")).await;
    // psql as well, and many transactions on pooled backends opened with the client's key.
    let out = tokio::task::spawn_blocking(move || {
        psql_cmd_with_password(addr, "late_user", "late-secret", APP_DB)
            .args(["-c", "SELECT current_user, count(*) FROM generate_series(1, 3)"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "late_user|3",
        "{out:?}"
    );
    let clients: Vec<_> =
        futures_util::future::join_all((0..4).map(|_| connect(addr, "late_user", "late-secret", APP_DB)))
            .await;
    for c in &clients {
        assert_eq!(
            first_value(&c.simple_query("SELECT session_user").await.unwrap()),
            "late_user"
        );
    }
    // md5 pass-through: the hash from pg_shadow checks the client and logs in to the md5 backend.
    assert_eq!(first_request(addr, MD5_USER, APP_DB).await, Ok(5));
    assert_eq!(current_user(addr, MD5_USER, MD5_PASSWORD).await, MD5_USER);
    refused(addr, MD5_USER, "wrong", APP_DB, "28P01", &failed(MD5_USER)).await;
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pass_through_needs_the_same_verifier_as_postgresql() {
    // Same password, verifier derived by tidepool with its own salt: clients log in to tidepool,
    // but the key cannot log in to PostgreSQL, and the client is told why.
    let verifier = postgres_protocol::password::scram_sha_256(APP_PASSWORD.as_bytes());
    let toml = tokio::task::block_in_place(|| base_config_toml(pg())).replace(
        &format!("password = \"{APP_PASSWORD}\""),
        &format!("password = \"{verifier}\""),
    );
    let proxy = start_proxy(Config::from_toml(&toml).unwrap()).await;
    let err = try_connect(proxy.local_addr(), APP_USER, APP_PASSWORD, APP_DB)
        .await
        .expect_err("backend login impossible");
    let db = err.as_db_error().expect("ErrorResponse");
    assert_eq!(db.code().code(), "08006");
    assert!(
        db.message().contains("differs from tidepool's"),
        "{}",
        db.message()
    );
    proxy.shutdown().await;

    // PostgreSQL's own verifier in tidepool's config: pass-through works.
    let stored = tokio::task::block_in_place(|| stored_password(APP_USER));
    let toml = tokio::task::block_in_place(|| base_config_toml(pg())).replace(
        &format!("password = \"{APP_PASSWORD}\""),
        &format!("password = \"{stored}\""),
    );
    let proxy = start_proxy(Config::from_toml(&toml).unwrap()).await;
    assert_eq!(
        current_user(proxy.local_addr(), APP_USER, APP_PASSWORD).await,
        APP_USER
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_demanding_gss_gives_a_clear_fatal() {
    let proxy = start_proxy(config(&format!(
        "[[users]]\nname = \"{GSS_BACKEND_USER}\"\nauth_method = \"trust\"\n"
    )))
    .await;
    let err = try_connect(proxy.local_addr(), GSS_BACKEND_USER, "x", APP_DB)
        .await
        .expect_err("gss is not supported");
    let db = err.as_db_error().expect("ErrorResponse");
    assert_eq!(db.severity(), "FATAL");
    assert!(
        db.message()
            .contains("requested authentication method GSSAPI, which tidepool does not support"),
        "{}",
        db.message()
    );
    proxy.shutdown().await;
}
