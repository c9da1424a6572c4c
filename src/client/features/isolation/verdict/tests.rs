//! The verdict table: what must stay on the fast path, and every way state can change that
//! must not.

use super::super::catalog::Hazards;
use super::{judge, setting_names, Verdict};

fn catalog() -> Hazards {
    Hazards::from_rows([
        ("r", "audited"),
        ("r", "orders"),
        ("f", "tenant"),
        ("f", "my_lower"),
    ])
}

#[track_caller]
fn verdict(sql: &str) -> Verdict {
    judge(sql.as_bytes(), &catalog())
}

#[test]
fn plain_traffic_is_clean() {
    for sql in [
        "SELECT abalance FROM pgbench_accounts WHERE aid = 42;",
        "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2",
        "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 2, 3, 4, CURRENT_TIMESTAMP);",
        "BEGIN; SELECT count(*), max(x), coalesce(y, 'a.b') FROM t WHERE z = lower($1); END;",
        "begin isolation level serializable; commit",
        "(SELECT 1) UNION (SELECT 2)",
        "WITH x AS (SELECT now()) SELECT * FROM x",
        "SELECT current_setting('app.tenant', true)",
        "SELECT set_config('request.jwt', $1, true), set_config('role', 'web', true)",
        "SET LOCAL statement_timeout = '1s'",
        "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ",
        "SAVEPOINT a; ROLLBACK TO SAVEPOINT a; RELEASE a",
        "SELECT 'nextval(''s'')', \"select\" FROM t -- nextval('s')",
        "/* set_config('role','x',false) */ SELECT 1",
        "",
        ";;",
    ] {
        assert_eq!(verdict(sql), Verdict::Clean, "{sql}");
    }
}

#[test]
fn settings_statements_are_read_back_by_name() {
    for sql in [
        "SET search_path = app",
        "set session statement_timeout to 5",
        "RESET ALL",
        "SELECT 1; SET app.tenant_id = '7'",
        "DISCARD ALL",
        "SET ROLE low",
        "SET SESSION AUTHORIZATION acc",
        "reset role",
    ] {
        assert_eq!(verdict(sql), Verdict::Settings, "{sql}");
    }
}

#[test]
fn everything_else_is_opaque() {
    for sql in [
        // The issue's vectors.
        "SELECT set_config('app.tenant', '42', false)",
        "SELECT set_config('role', 'probe_low', false)",
        "DO $$BEGIN PERFORM set_config('role', 'probe_low', false); END$$",
        "SELECT pg_catalog.set_config('app.x', 'leak', false)",
        "SELECT nextval('probe_seq')",
        "SELECT setval('s', 5)",
        // set_config whose is_local is not the literal true.
        "SELECT set_config('a.b', 'c', $1)",
        "SELECT set_config('a.b', 'c', true OR false)",
        "SELECT set_config('a.b', nextval('s')::text, true)",
        "SELECT \"set_config\"('a.b', 'c', false)",
        // Functions and relations the catalog flags.
        "SELECT tenant('7')",
        "SELECT my_lower(x) FROM t",
        "SELECT t.tenant FROM t",
        "INSERT INTO audited VALUES (1)",
        "UPDATE \"Orders\" SET x = 1",
        "COPY orders FROM STDIN",
        // Statements that run code or change the session.
        "CALL p()",
        "LOAD 'auto_explain'",
        "EXECUTE stmt(1)",
        "CREATE TEMP TABLE t(x int)",
        "ALTER ROLE x SET search_path = y",
        "TRUNCATE orders",
        "SELECT 1; DO $x$ BEGIN END $x$",
        "SELECT 1; /* a comment */ CALL p()",
        "SELECT 1; -- line\n CALL p()",
        "SELECT 1;\x0bCALL p()",
        "\"select\" 1",
        "SELECT pg_advisory_lock(1)",
        "SELECT query_to_xml('select 1', true, true, '')",
        // What the lexer cannot be sure of.
        "SELECT 'a\\'; DO $$ $$; --'",
        "SELECT 'unterminated",
        "SELECT 1 /* unterminated",
        "SELECT $tag$ unterminated",
    ] {
        assert_eq!(verdict(sql), Verdict::Opaque, "{sql}");
    }
}

#[test]
fn long_identifiers_are_cut_like_postgresql() {
    let long = format!("tenant{}", "x".repeat(100));
    let h = Hazards::from_rows([("f", &long[..63])]);
    assert_eq!(judge(format!("SELECT {long}()").as_bytes(), &h), Verdict::Opaque);
}

#[test]
fn no_catalog_yet_means_nothing_is_clean() {
    assert_eq!(judge(b"SELECT 1", &Hazards::unknown()), Verdict::Opaque);
    let opaque = Hazards::from_rows([("o", "")]);
    assert_eq!(judge(b"SELECT a + b FROM t", &opaque), Verdict::Opaque);
}

#[test]
fn custom_setting_names_for_the_check() {
    let mut names = Vec::new();
    setting_names(
        b"SET app.tenant = 1; SELECT set_config('App.User', 'x', false)",
        &mut names,
    );
    setting_names(
        b"DO $$BEGIN PERFORM set_config('app.inner', '1', false); END$$",
        &mut names,
    );
    assert_eq!(names, vec!["app.tenant", "app.user", "app.inner"]);
    names.clear();
    setting_names(b"SELECT 'not a name', '1.5', 'x'", &mut names);
    assert!(names.is_empty(), "{names:?}");
}

/// The one-pass verdict takes the common statements, and wherever it answers it agrees with
/// the token verdict (the definition), on generated text mixing every construct either reads.
#[test]
fn the_fast_path_agrees_with_the_tokens() {
    let hazards = catalog();
    for sql in [
        "SELECT abalance FROM pgbench_accounts WHERE aid = 42;",
        "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2",
        "BEGIN; INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 2, 3, 4, now()); END;",
        "select count(*) from t where a >= 1.5e3 and b < 2",
    ] {
        let fast = super::fast::judge(sql.as_bytes(), &hazards);
        assert_eq!(fast, Some(Verdict::Clean), "{sql}");
    }
    const PIECES: &[&str] = &[
        "select",
        "SELECT",
        "set",
        "SET",
        "reset",
        "discard",
        "local",
        "insert",
        "do",
        "call",
        "audited",
        "tenant",
        "set_config",
        "nextval",
        "pg_advisory_lock",
        "orders",
        "t1",
        "x_y",
        "now",
        "e",
        "E",
        "u",
        "U",
        "b",
        "x",
        "é",
        "1",
        "12abc",
        "1.5e3",
        "$1",
        "$12x$",
        "$",
        "$$",
        "$a$",
        " ",
        "\n",
        "\t",
        "\u{b}",
        ";",
        "(",
        ")",
        ",",
        "=",
        "+",
        "-",
        "--",
        "*",
        "/",
        "/*",
        "*/",
        "'",
        "\"",
        "&",
        "\\",
        "\0",
        ".",
        ":",
        "::",
        "[",
        "]",
    ];
    let long = "a".repeat(70);
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut answered = 0;
    for _ in 0..200_000 {
        let mut sql = String::new();
        for _ in 0..(next() % 12 + 1) {
            let pick = (next() % (PIECES.len() as u64 + 1)) as usize;
            sql.push_str(PIECES.get(pick).copied().unwrap_or(&long));
            if next() % 3 == 0 {
                sql.push(' ');
            }
        }
        let Some(fast) = super::fast::judge(sql.as_bytes(), &hazards) else {
            continue;
        };
        answered += 1;
        assert_eq!(fast, super::judge_tokens(sql.as_bytes(), &hazards), "{sql:?}");
    }
    assert!(answered > 10_000, "the fast path answered only {answered} texts");
}
