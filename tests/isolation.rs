//! Transaction mode never lets one client see another's session state, whatever route the
//! change took (issue 12): the leak matrix. Two clients share one backend (pool of one); for
//! every vector, client A changes its session, client B must see what a fresh PostgreSQL
//! session sees, and A must still see its own change in its next transaction where PostgreSQL
//! would keep it. Simple and extended protocol, plain and inside BEGIN … COMMIT / ROLLBACK /
//! ROLLBACK TO SAVEPOINT.

mod common;

use common::*;
use tidepool::config::Config;
use tokio_postgres::{Client, SimpleQueryMessage};

/// Objects the vectors use, made once per test binary by the superuser.
fn setup_schema() {
    static DONE: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    DONE.get_or_init(|| {
        pg().psql(
            APP_DB,
            &format!(
                "DO $$BEGIN CREATE ROLE probe_low NOLOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END$$;
                 GRANT probe_low TO {APP_USER};
                 CREATE SEQUENCE IF NOT EXISTS probe_seq;
                 GRANT USAGE ON SEQUENCE probe_seq TO {APP_USER};
                 CREATE OR REPLACE FUNCTION tenant_fn(t text) RETURNS text LANGUAGE sql
                     AS $f$ SELECT set_config('app.tenant', t, false) $f$;
                 CREATE OR REPLACE FUNCTION role_fn() RETURNS void LANGUAGE plpgsql
                     AS $f$ BEGIN PERFORM set_config('role', 'probe_low', false); END $f$;
                 CREATE OR REPLACE FUNCTION dynamic_fn(suffix text) RETURNS void LANGUAGE plpgsql
                     AS $f$ BEGIN PERFORM set_config('app.' || suffix, 'dyn', false); END $f$;
                 CREATE OR REPLACE FUNCTION set_clause_fn() RETURNS text LANGUAGE sql
                     SET search_path = pg_temp SET app.clause = 'inside'
                     AS $f$ SELECT current_setting('search_path') $f$;
                 CREATE OR REPLACE PROCEDURE tenant_proc(t text) LANGUAGE plpgsql
                     AS $f$ BEGIN PERFORM set_config('app.proc', t, false); END $f$;
                 CREATE TABLE IF NOT EXISTS audited(x int);
                 CREATE OR REPLACE FUNCTION audit_trg() RETURNS trigger LANGUAGE plpgsql
                     AS $f$ BEGIN PERFORM set_config('app.from_trigger', NEW.x::text, false); RETURN NEW; END $f$;
                 DROP TRIGGER IF EXISTS audit ON audited;
                 CREATE TRIGGER audit BEFORE INSERT ON audited FOR EACH ROW EXECUTE FUNCTION audit_trg();
                 CREATE TABLE IF NOT EXISTS with_serial(id serial, v int);
                 CREATE OR REPLACE VIEW role_view AS SELECT set_config('role', 'probe_low', false) AS r;
                 GRANT ALL ON audited, with_serial, role_view TO {APP_USER};
                 CREATE OR REPLACE FUNCTION make_temp() RETURNS void LANGUAGE plpgsql
                     AS $f$ BEGIN CREATE TEMP TABLE IF NOT EXISTS fn_temp(x int); END $f$;
                 DO $d$BEGIN CREATE ROLE iso_super SUPERUSER LOGIN PASSWORD 'iso-secret';
                     EXCEPTION WHEN duplicate_object THEN NULL; END$d$;
                 GRANT USAGE ON SEQUENCE with_serial_id_seq TO {APP_USER};"
            ),
        )
        .expect("isolation test schema");
    });
}

async fn proxy(pool_size: u32) -> tidepool::app::Proxy {
    let node = tokio::task::block_in_place(pg);
    tokio::task::block_in_place(setup_schema);
    let toml = base_config_toml(node).replace(
        "default_pool_size = 10",
        &format!("default_pool_size = {pool_size}"),
    );
    start_proxy(Config::from_toml(&toml).unwrap()).await
}

/// The first value of the first row, None for NULL (or an empty custom setting, which is what a
/// placeholder reset by RESET reads as: PostgreSQL itself cannot undefine it).
async fn value(c: &Client, sql: &str) -> Result<Option<String>, String> {
    let msgs = c.simple_query(sql).await.map_err(|e| sqlstate(&e))?;
    Ok(msgs
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0).map(str::to_string).filter(|v| !v.is_empty())),
            _ => None,
        })
        .flatten())
}

fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_string())
        .unwrap_or_else(|| e.to_string())
}

/// One vector: what A runs, the probe, what B must read, what A must read next.
struct Vector {
    name: &'static str,
    change: &'static str,
    probe: &'static str,
    fresh: Option<&'static str>,
    own: Option<&'static str>,
}

const PROBE_TENANT: &str = "SELECT current_setting('app.tenant', true)";
const PROBE_USER: &str = "SELECT current_user::text";

fn vectors() -> Vec<Vector> {
    let v = |name, change, probe, fresh, own| Vector {
        name,
        change,
        probe,
        fresh,
        own,
    };
    vec![
        v(
            "set_config custom",
            "SELECT set_config('app.tenant', '42', false)",
            PROBE_TENANT,
            None,
            Some("42"),
        ),
        v(
            "set_config role",
            "SELECT set_config('role', 'probe_low', false)",
            PROBE_USER,
            Some("app"),
            Some("probe_low"),
        ),
        v(
            "DO block role",
            "DO $$BEGIN PERFORM set_config('role', 'probe_low', false); END$$",
            PROBE_USER,
            Some("app"),
            Some("probe_low"),
        ),
        v(
            "qualified set_config",
            "SELECT pg_catalog.set_config('app.x', 'leak', false)",
            "SELECT current_setting('app.x', true)",
            None,
            Some("leak"),
        ),
        v(
            "user function",
            "SELECT tenant_fn('7')",
            PROBE_TENANT,
            None,
            Some("7"),
        ),
        v(
            "plpgsql function role",
            "SELECT role_fn()",
            PROBE_USER,
            Some("app"),
            Some("probe_low"),
        ),
        v(
            "procedure",
            "CALL tenant_proc('p')",
            "SELECT current_setting('app.proc', true)",
            None,
            Some("p"),
        ),
        v(
            "trigger",
            "INSERT INTO audited VALUES (5)",
            "SELECT current_setting('app.from_trigger', true)",
            None,
            Some("5"),
        ),
        v(
            "view",
            "SELECT r FROM role_view",
            PROBE_USER,
            Some("app"),
            Some("probe_low"),
        ),
        v(
            "SET ROLE",
            "SET ROLE probe_low",
            PROBE_USER,
            Some("app"),
            Some("probe_low"),
        ),
        v(
            "SET SESSION ROLE",
            "SET SESSION ROLE probe_low",
            PROBE_USER,
            Some("app"),
            Some("probe_low"),
        ),
        v(
            "SET custom",
            "SET app.tenant = 'set'",
            PROBE_TENANT,
            None,
            Some("set"),
        ),
        v(
            "search_path via set_config",
            "SELECT set_config('search_path', 'pg_temp', false)",
            "SHOW search_path",
            Some("\"$user\", public"),
            Some("pg_temp"),
        ),
        v(
            "session characteristics",
            "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
            "SHOW default_transaction_read_only",
            Some("off"),
            Some("on"),
        ),
        v(
            "statement_timeout via DO",
            "DO $$BEGIN PERFORM set_config('statement_timeout', '77s', false); END$$",
            "SHOW statement_timeout",
            Some("0"),
            Some("77s"),
        ),
        // A name built at run time: nothing shows it, so it cannot follow A, but the reset
        // after an opaque transaction keeps it from B.
        v(
            "dynamic custom name",
            "SELECT dynamic_fn('hidden')",
            "SELECT current_setting('app.hidden', true)",
            None,
            None,
        ),
        // Functions declared with SET clauses restore the settings themselves.
        v(
            "function SET clause",
            "SELECT set_clause_fn()",
            "SELECT current_setting('app.clause', true)",
            None,
            None,
        ),
    ]
}

/// Runs one vector as A on `a` (wrapped per `wrap`), then checks B and A.
async fn run_vector(a: &Client, b: &Client, vector: &Vector, wrap: &str) {
    let sql = match wrap {
        "plain" => vector.change.to_string(),
        "commit" => format!("BEGIN; {}; COMMIT", vector.change),
        "rollback" => format!("BEGIN; {}; ROLLBACK", vector.change),
        "savepoint" => format!(
            "BEGIN; SAVEPOINT s; {}; ROLLBACK TO SAVEPOINT s; COMMIT",
            vector.change
        ),
        _ => unreachable!(),
    };
    a.simple_query(&sql)
        .await
        .unwrap_or_else(|e| panic!("{}: {sql}: {e}", vector.name));
    let kept = matches!(wrap, "plain" | "commit");
    let b_sees = value(b, vector.probe).await;
    assert_eq!(
        b_sees,
        Ok(vector.fresh.map(String::from)),
        "{} ({wrap}): client B must see a fresh session's value",
        vector.name
    );
    let a_sees = value(a, vector.probe).await;
    let own = if kept { vector.own } else { vector.fresh };
    assert_eq!(
        a_sees,
        Ok(own.map(String::from)),
        "{} ({wrap}): client A's own view",
        vector.name
    );
    // Back to a fresh session for the next vector.
    a.simple_query("RESET ALL; RESET ROLE").await.unwrap();
    assert_eq!(value(a, PROBE_USER).await, Ok(Some("app".into())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leak_matrix_simple_protocol() {
    let proxy = proxy(1).await;
    let addr = proxy.local_addr();
    let a = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    let b = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    for vector in vectors() {
        for wrap in ["plain", "commit", "rollback", "savepoint"] {
            run_vector(&a, &b, &vector, wrap).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leak_matrix_extended_protocol() {
    let proxy = proxy(1).await;
    let addr = proxy.local_addr();
    let a = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    let b = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    // Parameters bound through the extended protocol: nothing in the text names the setting.
    for (wrap, kept) in [
        ("plain", true),
        ("commit", true),
        ("rollback", false),
        ("savepoint", false),
    ] {
        let set = a.prepare("SELECT set_config($1, $2, false)").await.unwrap();
        match wrap {
            "plain" => {
                a.query(&set, &[&"app.tenant", &"ext"]).await.unwrap();
            }
            "commit" | "rollback" => {
                a.batch_execute("BEGIN").await.unwrap();
                a.query(&set, &[&"app.tenant", &"ext"]).await.unwrap();
                a.batch_execute(if wrap == "commit" { "COMMIT" } else { "ROLLBACK" })
                    .await
                    .unwrap();
            }
            _ => {
                a.batch_execute("BEGIN; SAVEPOINT s").await.unwrap();
                a.query(&set, &[&"app.tenant", &"ext"]).await.unwrap();
                a.batch_execute("ROLLBACK TO SAVEPOINT s; COMMIT").await.unwrap();
            }
        }
        let probe = b.prepare("SELECT current_setting($1, true)").await.unwrap();
        let b_sees: Option<String> = b.query_one(&probe, &[&"app.tenant"]).await.unwrap().get(0);
        assert_eq!(
            b_sees.filter(|v| !v.is_empty()),
            None,
            "{wrap}: B sees A's setting"
        );
        let probe = a.prepare("SELECT current_setting($1, true)").await.unwrap();
        let a_sees: Option<String> = a.query_one(&probe, &[&"app.tenant"]).await.unwrap().get(0);
        let expected = kept.then(|| "ext".to_string());
        assert_eq!(
            a_sees.filter(|v| !v.is_empty()),
            expected,
            "{wrap}: A's own setting"
        );
        // The role through a bound parameter, and B's view of it.
        a.query(&set, &[&"role", &"probe_low"]).await.unwrap();
        let user: String = b
            .query_one("SELECT current_user::text", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(user, "app", "{wrap}: B runs as A's role");
        let user: String = a
            .query_one("SELECT current_user::text", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(user, "probe_low", "{wrap}: A lost its role");
        a.batch_execute("RESET ALL; RESET ROLE").await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequence_state_never_reaches_the_next_client() {
    let proxy = proxy(1).await;
    let addr = proxy.local_addr();
    let a = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    let b = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    for change in [
        "SELECT nextval('probe_seq')",
        "INSERT INTO with_serial(v) VALUES (1)",
        "BEGIN; SELECT nextval('probe_seq'); ROLLBACK",
    ] {
        a.simple_query(change).await.unwrap();
        assert_eq!(
            value(&b, "SELECT lastval()").await,
            Err("55000".to_string()),
            "{change}: B sees A's lastval"
        );
        assert_eq!(
            value(&b, "SELECT currval('probe_seq')").await,
            Err("55000".to_string()),
            "{change}: B sees A's currval"
        );
    }
    // Within one transaction sequence state works as usual.
    let msgs = a
        .simple_query("BEGIN; SELECT nextval('probe_seq'); SELECT currval('probe_seq') = lastval(); COMMIT")
        .await
        .unwrap();
    let same = msgs.iter().filter_map(|m| match m {
        SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
        _ => None,
    });
    assert_eq!(same.last().as_deref(), Some("t"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plain_traffic_costs_no_check() {
    let proxy = proxy(2).await;
    let addr = proxy.local_addr();
    let a = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    a.batch_execute("CREATE TABLE IF NOT EXISTS plain_t(k int primary key, v int)")
        .await
        .unwrap();
    a.batch_execute("INSERT INTO plain_t VALUES (1, 0) ON CONFLICT DO NOTHING")
        .await
        .unwrap();
    let checks = || {
        proxy
            .shared()
            .stats
            .isolation_checks
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let started = tokio::time::Instant::now();
    let before = checks();
    let update = a
        .prepare("UPDATE plain_t SET v = v + $1 WHERE k = 1")
        .await
        .unwrap();
    for i in 0..300 {
        a.simple_query("SELECT v FROM plain_t WHERE k = 1").await.unwrap();
        a.execute(&update, &[&1i32]).await.unwrap();
        a.batch_execute("BEGIN; UPDATE plain_t SET v = v - 1 WHERE k = 1; SELECT now(); COMMIT")
            .await
            .unwrap();
        if i % 100 == 0 {
            // One non-clean transaction per hundred: exactly one check each.
            a.simple_query("SELECT set_config('app.tenant', 'x', false)")
                .await
                .unwrap();
        }
    }
    let ran = checks() - before;
    // Besides the three set_config transactions, only the catalog refresh (one per database per
    // period, riding on an ordinary transaction) may add a check.
    let periods = started.elapsed().as_secs() / 10 + 1;
    assert!(
        ran >= 3 && ran <= 3 + periods,
        "{ran} checks for 900 clean and 3 opaque transactions over {periods} refresh periods"
    );
    println!(
        "isolation checks: {ran} for 903 transactions ({:.1} per 1,000)",
        ran as f64 * 1000.0 / 903.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn randomized_tenants_through_functions_never_cross() {
    // Many clients, two backends, each client's tenant set by a function (nothing in the text
    // names the setting), reads checked after every transaction.
    let proxy = proxy(2).await;
    let addr = proxy.local_addr();
    let mut tasks = Vec::new();
    for id in 0..12u64 {
        tasks.push(tokio::spawn(async move {
            let c = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
            let mut rng = tidepool::fuzzing::XorShift(0x5eed + id);
            let own = format!("tenant-{id}");
            let mut set = false;
            for round in 0..250 {
                let sql = match rng.next_u64() % 5 {
                    0 => format!("SELECT tenant_fn('{own}')"),
                    1 => format!("BEGIN; SELECT tenant_fn('{own}'); COMMIT"),
                    2 => "BEGIN; SELECT tenant_fn('intruder'); ROLLBACK".to_string(),
                    3 => "SELECT set_config('role', 'probe_low', false); RESET ROLE".to_string(),
                    _ => "SELECT 1".to_string(),
                };
                c.simple_query(&sql)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
                set |= sql.contains(&own) && !sql.contains("ROLLBACK");
                let seen = value(&c, PROBE_TENANT).await.unwrap();
                let expected = set.then(|| own.clone());
                assert_eq!(seen, expected, "client {id}, round {round}, after {sql}");
                assert_eq!(value(&c, PROBE_USER).await.unwrap().as_deref(), Some("app"));
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_mode_reuse_carries_nothing_over() {
    let node = tokio::task::block_in_place(pg);
    tokio::task::block_in_place(setup_schema);
    for reset in ["DISCARD ALL", ""] {
        let toml = base_config_toml(node)
            .replace("pool_mode = \"transaction\"", "pool_mode = \"session\"")
            .replace(
                "default_pool_size = 10",
                &format!("default_pool_size = 1\nserver_reset_query = \"{reset}\""),
            );
        let proxy = start_proxy(Config::from_toml(&toml).unwrap()).await;
        let addr = proxy.local_addr();
        let a = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
        let a_pid = value(&a, "SELECT pg_backend_pid()").await.unwrap();
        a.batch_execute(
            "SELECT nextval('probe_seq'); SELECT tenant_fn('a'); \
             SELECT set_config('role', 'probe_low', false); SET statement_timeout = '9s'",
        )
        .await
        .unwrap();
        drop(a);
        // The pool of one serves B once A's backend is back.
        let b = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
        assert_eq!(
            value(&b, PROBE_USER).await,
            Ok(Some("app".into())),
            "reset {reset:?}"
        );
        assert_eq!(value(&b, PROBE_TENANT).await, Ok(None), "reset {reset:?}");
        assert_eq!(
            value(&b, "SELECT lastval()").await,
            Err("55000".into()),
            "reset {reset:?}"
        );
        assert_eq!(
            value(&b, "SHOW statement_timeout").await,
            Ok(Some("0".into())),
            "reset {reset:?}"
        );
        assert_eq!(
            value(&b, "SELECT pg_backend_pid()").await.unwrap(),
            a_pid,
            "the backend is reused"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_cannot_move_pins_the_client_instead() {
    let proxy = proxy(2).await;
    let addr = proxy.local_addr();
    let a = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    let b = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    // A temporary table made inside a function: no word of the text shows it.
    a.simple_query("SELECT make_temp()").await.unwrap();
    let probe = "SELECT count(*) FROM pg_class WHERE relname = 'fn_temp' AND relpersistence = 't' \
                 AND pg_table_is_visible(oid)";
    for _ in 0..5 {
        assert_eq!(
            value(&b, probe).await,
            Ok(Some("0".into())),
            "B sees A's temp table"
        );
        assert_eq!(
            value(&a, probe).await,
            Ok(Some("1".into())),
            "A lost its temp table"
        );
    }
    let pinned = proxy
        .shared()
        .stats
        .pinned_clients
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(pinned, 1);
}

fn superuser_config(node: &tidepool::cluster::LocalNode) -> Config {
    let toml = base_config_toml(node).replace("default_pool_size = 10", "default_pool_size = 1")
        + "\n[[users]]\nname = \"iso_super\"\npassword = \"iso-secret\"\n";
    Config::from_toml(&toml).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_authorization_follows_its_client_only() {
    let node = tokio::task::block_in_place(pg);
    tokio::task::block_in_place(setup_schema);
    let proxy = start_proxy(superuser_config(node)).await;
    let addr = proxy.local_addr();
    let a = connect(addr, "iso_super", "iso-secret", APP_DB).await;
    let b = connect(addr, "iso_super", "iso-secret", APP_DB).await;
    let who = "SELECT session_user || '/' || current_user";
    for change in [
        "SET SESSION AUTHORIZATION app",
        "SELECT set_config('session_authorization', 'app', false)",
        "DO $$BEGIN PERFORM set_config('session_authorization', 'app', false); END$$",
    ] {
        a.simple_query(change).await.unwrap();
        assert_eq!(
            value(&b, who).await,
            Ok(Some("iso_super/iso_super".into())),
            "{change}"
        );
        assert_eq!(value(&a, who).await, Ok(Some("app/app".into())), "{change}");
        // A role on top of it, then back to the login user: the role goes with it.
        a.simple_query("SET ROLE probe_low").await.unwrap();
        assert_eq!(
            value(&b, who).await,
            Ok(Some("iso_super/iso_super".into())),
            "{change}"
        );
        assert_eq!(value(&a, who).await, Ok(Some("app/probe_low".into())), "{change}");
        a.simple_query("RESET SESSION AUTHORIZATION").await.unwrap();
        assert_eq!(
            value(&a, who).await,
            Ok(Some("iso_super/iso_super".into())),
            "{change}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loaded_module_pins_and_its_backend_is_not_reused() {
    let node = tokio::task::block_in_place(pg);
    tokio::task::block_in_place(setup_schema);
    let proxy = start_proxy(superuser_config(node)).await;
    let addr = proxy.local_addr();
    let a = connect(addr, "iso_super", "iso-secret", APP_DB).await;
    a.simple_query("LOAD 'auto_explain'").await.unwrap();
    let a_pid = value(&a, "SELECT pg_backend_pid()").await.unwrap();
    let pinned = proxy
        .shared()
        .stats
        .pinned_clients
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(pinned, 1, "LOAD pins");
    drop(a);
    let b = connect(addr, "iso_super", "iso-secret", APP_DB).await;
    let b_pid = value(&b, "SELECT pg_backend_pid()").await.unwrap();
    assert_ne!(
        a_pid, b_pid,
        "the backend that loaded a module served another client"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_cursor_is_checked_in_full_when_released() {
    let proxy = proxy(1).await;
    let addr = proxy.local_addr();
    let b = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    // A cursor held past its transaction pins its client; when the client lets go, the
    // backend is checked in full before anyone else gets it.
    let a = connect(addr, APP_USER, APP_PASSWORD, APP_DB).await;
    a.batch_execute(
        "BEGIN; DECLARE c CURSOR WITH HOLD FOR \
         SELECT set_config('app.tenant', 'cursor' || g, false) FROM generate_series(1, 3) g; COMMIT",
    )
    .await
    .unwrap();
    a.batch_execute("FETCH 2 FROM c").await.unwrap();
    a.batch_execute("CLOSE c").await.unwrap();
    assert_eq!(
        value(&b, PROBE_TENANT).await,
        Ok(None),
        "B sees what A's cursor set"
    );
    // A held cursor is materialized at COMMIT: every row ran by then, as directly.
    assert_eq!(value(&a, PROBE_TENANT).await, Ok(Some("cursor3".into())));
    drop(a);
}
