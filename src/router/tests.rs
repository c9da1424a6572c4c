//! Classifier tests: a table over every rule, control statements, hints, configurable
//! function lists, the cache, tokenizer assumptions, and never-panic properties.

use std::time::Duration;

use super::*;
use crate::fuzzing::XorShift;

const R: Access = Access::Read;
const W: Access = Access::Write;

fn classifier() -> Classifier {
    Classifier::new(&ClassifierConfig::default()).unwrap()
}

/// Runs a table, reporting every mismatch at once.
fn check_table(classifier: &Classifier, cases: &[(&str, Access, Reason)]) {
    let mut failures = Vec::new();
    for &(sql, access, reason) in cases {
        let got = classifier.classify(sql);
        if (got.access, got.reason) != (access, reason) {
            failures.push(format!("{sql:?}: expected {access:?}/{reason:?}, got {got:?}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[rustfmt::skip]
const STATEMENTS: &[(&str, Access, Reason)] = &[
    // Plain reads.
    ("SELECT 1", R, Reason::Read),
    ("select * from users where id = $1", R, Reason::Read),
    ("SELECT a, b FROM t JOIN u USING (id) WHERE x > 3 ORDER BY a LIMIT 10 OFFSET 5", R, Reason::Read),
    ("VALUES (1, 'a'), (2, 'b')", R, Reason::Read),
    ("SHOW search_path", R, Reason::Read),
    ("SHOW ALL", R, Reason::Read),
    ("show transaction_isolation", R, Reason::Read),
    // sqlparser 0.63 rejects `TABLE name`: a read in truth, sent to the primary.
    ("TABLE users", W, Reason::Unparsable),
    ("EXPLAIN SELECT * FROM t", R, Reason::Read),
    ("EXPLAIN ANALYZE SELECT * FROM t", R, Reason::Read),
    ("EXPLAIN (ANALYZE, BUFFERS) SELECT * FROM t WHERE id = 1", R, Reason::Read),
    ("EXPLAIN WITH x AS (SELECT 1) SELECT * FROM x", R, Reason::Read),
    ("WITH x AS (SELECT 1 AS a) SELECT a FROM x", R, Reason::Read),
    ("WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 10) SELECT sum(n) FROM r", R, Reason::Read),
    ("WITH x AS MATERIALIZED (SELECT 1) SELECT * FROM x", R, Reason::Read),
    ("SELECT count(*), max(price) FROM orders GROUP BY customer HAVING count(*) > 2", R, Reason::Read),
    ("(SELECT 1) UNION (SELECT 2)", R, Reason::Read),
    ("SELECT 1 UNION SELECT 2 INTERSECT SELECT 3 EXCEPT SELECT 4", R, Reason::Read),
    ("SELECT now(), current_timestamp, pg_is_in_recovery()", R, Reason::Read),
    ("SELECT * FROM t WHERE id IN (SELECT id FROM u)", R, Reason::Read),
    ("SELECT CASE WHEN a THEN 1 ELSE 2 END FROM t", R, Reason::Read),
    ("SELECT * FROM generate_series(1, 10) g", R, Reason::Read),
    ("SELECT x::int, y::text FROM t", R, Reason::Read),
    ("SELECT * FROM t WHERE a BETWEEN 1 AND 2", R, Reason::Read),
    ("SELECT pg_catalog.now()", R, Reason::Read),
    ("SELECT array_agg(x ORDER BY y) FROM t", R, Reason::Read),
    ("SELECT row_number() OVER (PARTITION BY a ORDER BY b) FROM t", R, Reason::Read),
    ("SELECT * FROM t WHERE j @> '{\"a\":1}'::jsonb", R, Reason::Read),
    ("SELECT DISTINCT ON (a) a, b FROM t ORDER BY a, b DESC", R, Reason::Read),
    ("SELECT lower(name) FROM users WHERE email ILIKE '%@example.com'", R, Reason::Read),
    ("SELECT lo_get(42)", R, Reason::Read),
    ("SELECT pg_sleep(0)", R, Reason::Read),
    ("SELECT nextval_count, \"currval_total\" FROM stats", R, Reason::Read),
    ("SELECT 1 AS \"for\", 2 AS \"update\", 3 AS \"into\"", R, Reason::Read),
    // Words that only look dangerous: strings, dollar quotes, comments.
    ("SELECT * FROM t WHERE note = 'nextval(''s'')'", R, Reason::Read),
    ("SELECT $$nextval('s')$$, $tag$ FOR UPDATE $tag$", R, Reason::Read),
    ("SELECT 'FOR UPDATE', 'INTO x', 'DELETE FROM t', E'it\\'s'", R, Reason::Read),
    ("SELECT 1 -- nextval('s')", R, Reason::Read),
    ("SELECT 1 /* FOR UPDATE /* nested */ INTO */", R, Reason::Read),
    // Leading comments, whitespace and case.
    ("/* hello */ SELECT 1", R, Reason::Read),
    ("-- comment\nSELECT 1", R, Reason::Read),
    ("/* a /* nested */ comment */ -- and a line\r\n  SELECT 1", R, Reason::Read),
    ("  \n\t\x0c SeLeCt\n1", R, Reason::Read),
    ("SELECT\t*\nFROM\r\nt", R, Reason::Read),
    // Several reads, semicolons.
    ("SELECT 1; SELECT 2", R, Reason::Read),
    ("SELECT 1;", R, Reason::Read),
    ("SELECT 1;;SELECT 2", R, Reason::Read),
    ("", R, Reason::Empty),
    ("  \n ", R, Reason::Empty),
    ("/* only a comment */", R, Reason::Empty),
    (";", R, Reason::Empty),
    // First keyword settles a write.
    ("INSERT INTO t VALUES (1)", W, Reason::Shortcut),
    ("update t set a = 1", W, Reason::Shortcut),
    ("DELETE FROM t", W, Reason::Shortcut),
    ("MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE", W, Reason::Shortcut),
    ("CREATE TABLE t (id int)", W, Reason::Shortcut),
    ("ALTER TABLE t ADD COLUMN x int", W, Reason::Shortcut),
    ("DROP TABLE t", W, Reason::Shortcut),
    ("TRUNCATE t", W, Reason::Shortcut),
    ("GRANT SELECT ON t TO bob", W, Reason::Shortcut),
    ("REVOKE ALL ON t FROM bob", W, Reason::Shortcut),
    ("VACUUM (ANALYZE) t", W, Reason::Shortcut),
    ("ANALYZE t", W, Reason::Shortcut),
    ("COPY t TO STDOUT", W, Reason::Shortcut),
    ("COPY (SELECT 1) TO STDOUT", W, Reason::Shortcut),
    ("CALL proc()", W, Reason::Shortcut),
    ("DO $$BEGIN PERFORM 1; END$$", W, Reason::Shortcut),
    ("LOCK TABLE t IN ACCESS EXCLUSIVE MODE", W, Reason::Shortcut),
    ("REFRESH MATERIALIZED VIEW mv", W, Reason::Shortcut),
    ("CLUSTER t", W, Reason::Shortcut),
    ("REINDEX TABLE t", W, Reason::Shortcut),
    ("LISTEN chan", W, Reason::Shortcut),
    ("NOTIFY chan, 'x'", W, Reason::Shortcut),
    ("UNLISTEN *", W, Reason::Shortcut),
    ("EXECUTE stmt(1)", W, Reason::Shortcut),
    ("DEALLOCATE ALL", W, Reason::Shortcut),
    ("DECLARE c CURSOR FOR SELECT 1", W, Reason::Shortcut),
    ("FETCH 10 FROM c", W, Reason::Shortcut),
    ("CHECKPOINT", W, Reason::Shortcut),
    ("SAVEPOINT s", W, Reason::Shortcut),
    ("COMMENT ON TABLE t IS 'x'", W, Reason::Shortcut),
    ("INSERT INTO t VALUES (1); SELECT 1", W, Reason::Shortcut),
    ("selectx 1", W, Reason::Shortcut),
    ("select$1", W, Reason::Shortcut),
    ("\"select\" 1", W, Reason::Shortcut),
    ("123", W, Reason::Shortcut),
    ("/* SELECT */ DELETE FROM t", W, Reason::Shortcut),
    // Session and transaction statements (details in `control_statements`).
    ("BEGIN", W, Reason::Control),
    ("SET search_path = public", W, Reason::Control),
    ("PREPARE q AS SELECT 1", W, Reason::Control),
    ("BEGIN; SELECT 1; COMMIT", W, Reason::Control),
    // Write functions, wherever they hide.
    ("SELECT nextval('s')", W, Reason::WriteFunction),
    ("SELECT NEXTVAL('s')", W, Reason::WriteFunction),
    ("SELECT pg_catalog.nextval('s')", W, Reason::WriteFunction),
    ("SELECT \"nextval\"('s')", W, Reason::WriteFunction),
    ("SELECT \"pg_catalog\" . \"nextval\" ('s')", W, Reason::WriteFunction),
    ("SELECT nextval /* c */ ('s')", W, Reason::WriteFunction),
    ("SELECT * FROM t WHERE id = (SELECT nextval('s'))", W, Reason::WriteFunction),
    ("SELECT CASE WHEN x THEN nextval('s') ELSE 0 END FROM t", W, Reason::WriteFunction),
    ("SELECT * FROM t ORDER BY nextval('s')", W, Reason::WriteFunction),
    ("SELECT * FROM nextval('s')", W, Reason::WriteFunction),
    ("SELECT * FROM ROWS FROM (nextval('s'))", W, Reason::WriteFunction),
    ("SELECT count(*) FILTER (WHERE nextval('s') > 0) FROM t", W, Reason::WriteFunction),
    ("SELECT 1 WHERE EXISTS (SELECT 1 FROM t WHERE a = setval('s', 1))", W, Reason::WriteFunction),
    ("SELECT max(x) OVER (ORDER BY nextval('s')) FROM t", W, Reason::WriteFunction),
    ("SELECT ('s'::regclass).nextval", W, Reason::WriteFunction),
    ("WITH x AS (SELECT nextval('s')) SELECT * FROM x", W, Reason::WriteFunction),
    ("VALUES (nextval('s'))", W, Reason::WriteFunction),
    ("EXPLAIN ANALYZE SELECT nextval('s')", W, Reason::WriteFunction),
    ("SELECT 1; SELECT nextval('s')", W, Reason::WriteFunction),
    ("SELECT currval('s')", W, Reason::WriteFunction),
    ("SELECT lastval()", W, Reason::WriteFunction),
    ("SELECT setval('s', 10, true)", W, Reason::WriteFunction),
    ("SELECT pg_advisory_lock(1)", W, Reason::WriteFunction),
    ("SELECT pg_try_advisory_xact_lock(1, 2)", W, Reason::WriteFunction),
    ("SELECT pg_advisory_unlock_all()", W, Reason::WriteFunction),
    ("SELECT set_config('search_path', 'x', false)", W, Reason::WriteFunction),
    ("SELECT lo_create(0)", W, Reason::WriteFunction),
    ("SELECT lo_import('/tmp/x')", W, Reason::WriteFunction),
    ("SELECT lo_unlink(1)", W, Reason::WriteFunction),
    ("SELECT lowrite(0, 'x')", W, Reason::WriteFunction),
    ("SELECT lo_lseek64(0, 0, 0)", W, Reason::WriteFunction),
    ("SELECT txid_current()", W, Reason::WriteFunction),
    ("SELECT pg_current_xact_id()", W, Reason::WriteFunction),
    ("SELECT pg_notify('c', 'x')", W, Reason::WriteFunction),
    ("SELECT dblink_exec('dbname=x', 'DELETE FROM t')", W, Reason::WriteFunction),
    ("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'x'", W, Reason::WriteFunction),
    ("SELECT pg_promote()", W, Reason::WriteFunction),
    ("SELECT pg_reload_conf()", W, Reason::WriteFunction),
    ("SELECT pg_switch_wal()", W, Reason::WriteFunction),
    ("SELECT pg_create_physical_replication_slot('s')", W, Reason::WriteFunction),
    ("SELECT pg_stat_reset()", W, Reason::WriteFunction),
    // Row locks.
    ("SELECT * FROM t FOR UPDATE", W, Reason::LockingRead),
    ("SELECT * FROM t FOR UPDATE NOWAIT", W, Reason::LockingRead),
    ("SELECT * FROM t FOR UPDATE SKIP LOCKED", W, Reason::LockingRead),
    ("SELECT * FROM t FOR UPDATE OF t", W, Reason::LockingRead),
    ("SELECT * FROM t FOR SHARE", W, Reason::LockingRead),
    ("SELECT * FROM t FOR NO KEY UPDATE", W, Reason::LockingRead),
    ("SELECT * FROM t FOR KEY SHARE", W, Reason::LockingRead),
    ("select * from t for\nupdate", W, Reason::LockingRead),
    ("SELECT * FROM t /* c */ FOR /* c */ UPDATE", W, Reason::LockingRead),
    ("SELECT * FROM (SELECT * FROM t FOR UPDATE) s", W, Reason::LockingRead),
    ("WITH x AS (SELECT * FROM t FOR UPDATE) SELECT * FROM x", W, Reason::LockingRead),
    // SELECT INTO.
    ("SELECT * INTO newt FROM t", W, Reason::SelectInto),
    ("SELECT a INTO TEMP x FROM t", W, Reason::SelectInto),
    ("WITH x AS (SELECT 1) SELECT * INTO y FROM x", W, Reason::SelectInto),
    // Data-modifying CTEs.
    ("WITH x AS (DELETE FROM t RETURNING *) SELECT * FROM x", W, Reason::WritableCte),
    ("WITH x AS (INSERT INTO t VALUES (1) RETURNING id) SELECT id FROM x", W, Reason::WritableCte),
    ("WITH x AS (UPDATE t SET a = 1 RETURNING *) SELECT count(*) FROM x", W, Reason::WritableCte),
    ("WITH a AS (SELECT 1), b AS (DELETE FROM t) SELECT * FROM a", W, Reason::WritableCte),
    ("WITH x AS (SELECT 1) DELETE FROM t", W, Reason::WritableCte),
    ("with x as (select 1) update t set a = 2", W, Reason::WritableCte),
    // EXPLAIN of writes.
    ("EXPLAIN ANALYZE INSERT INTO t VALUES (1)", W, Reason::Write),
    ("EXPLAIN (ANALYZE) DELETE FROM t", W, Reason::Write),
    ("EXPLAIN UPDATE t SET a = 1", W, Reason::Write),
    ("EXPLAIN ANALYZE CREATE TABLE x AS SELECT 1", W, Reason::Write),
    ("EXPLAIN EXECUTE q(1)", W, Reason::Write),
    // A write anywhere in a multi-statement string.
    ("SELECT 1; DELETE FROM t", W, Reason::Write),
    ("SELECT 1; BEGIN", W, Reason::Write),
    ("SELECT 1; COMMIT", W, Reason::Write),
    ("SELECT 1; CREATE TABLE t (a int)", W, Reason::Write),
    ("SHOW x; SET x = 1", W, Reason::Write),
    // What sqlparser cannot parse, or we refuse to trust.
    ("SELECT * FROM t WHERE a BETWEEN SYMMETRIC 2 AND 1", W, Reason::Unparsable),
    ("SELECT xmlelement(name foo)", W, Reason::Unparsable),
    ("SELECT (", W, Reason::Unparsable),
    ("SELECT 'unterminated", W, Reason::Unparsable),
    ("SELECT $$unterminated", W, Reason::Unparsable),
    ("/* unterminated comment SELECT 1", W, Reason::Unparsable),
    ("SELECT 1 /* unterminated", W, Reason::Unparsable),
    ("SELECT U&\"\\006Eextval\"('s')", W, Reason::Unparsable),
    ("select u&\"d\\0061ta\" from t", W, Reason::Unparsable),
];

#[test]
fn statement_table() {
    assert!(STATEMENTS.len() >= 100);
    check_table(&classifier(), STATEMENTS);
}

/// Whatever read we start from, adding a write to it must make it a write.
#[test]
fn adding_a_write_to_any_read_makes_a_write() {
    let classifier = classifier();
    let tails = [
        "\n FOR UPDATE",
        "\n FOR NO KEY UPDATE",
        "\n; SELECT nextval('s')",
        "\n; SELECT 1 FROM t WHERE x = pg_catalog.setval('s', 1)",
        "\n; DELETE FROM t",
        "\n; CREATE TABLE t2 (a int)",
        "\n; COMMIT",
    ];
    let reads = STATEMENTS.iter().filter(|(_, access, _)| *access == R);
    for (sql, ..) in reads {
        for tail in tails {
            let longer = format!("{sql}{tail}");
            assert_eq!(classifier.classify(&longer).access, W, "{longer:?}");
        }
    }
}

#[test]
fn control_statements() {
    use Control::*;
    use RouteSetting::*;
    let set = |route, local| Some(SetRoute { route, local });
    #[rustfmt::skip]
    let cases: &[(&str, Option<Control>)] = &[
        ("BEGIN", Some(Begin)),
        ("begin;", Some(Begin)),
        ("BEGIN WORK", Some(Begin)),
        ("BEGIN READ ONLY", Some(BeginReadOnly)),
        ("BEGIN TRANSACTION ISOLATION LEVEL SERIALIZABLE, READ ONLY, DEFERRABLE", Some(BeginReadOnly)),
        ("BEGIN ISOLATION LEVEL READ COMMITTED", Some(Begin)),
        ("BEGIN ISOLATION LEVEL READ COMMITTED READ ONLY", Some(BeginReadOnly)),
        ("BEGIN READ WRITE", Some(Begin)),
        ("START TRANSACTION READ ONLY", Some(BeginReadOnly)),
        ("start transaction", Some(Begin)),
        ("/* tidepool: standby */ BEGIN READ ONLY", Some(BeginReadOnly)),
        ("SET TRANSACTION READ ONLY", Some(SetTransactionReadOnly)),
        ("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ", None),
        ("SET TRANSACTION READ WRITE", None),
        ("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", None),
        ("COMMIT", Some(End)),
        ("commit work", Some(End)),
        ("END", Some(End)),
        ("ROLLBACK", Some(End)),
        ("ABORT", Some(End)),
        ("COMMIT AND CHAIN", Some(End)),
        ("ROLLBACK TO SAVEPOINT s", None),
        ("ROLLBACK WORK TO s", None),
        ("COMMIT PREPARED 'x'", None),
        ("ROLLBACK PREPARED 'x'", None),
        ("PREPARE TRANSACTION 'x'", Some(End)),
        ("PREPARE q AS SELECT 1", None),
        ("SET tidepool.route = 'standby'", set(Standby, false)),
        ("set tidepool.route to primary", set(Primary, false)),
        ("SET SESSION tidepool.route = 'Primary'", set(Primary, false)),
        ("SET LOCAL tidepool.route = 'auto'", set(Auto, true)),
        ("SET \"tidepool\".\"route\" = 'standby'", set(Standby, false)),
        ("SET tidepool.route = DEFAULT", set(Auto, false)),
        ("SET tidepool.route = 'bogus'", None),
        ("SET tidepool.route = 'standby' 'x'", None),
        ("SET tidepool.routes = 'standby'", None),
        ("RESET tidepool.route", set(Auto, false)),
        ("RESET ALL", set(Auto, false)),
        ("DISCARD ALL", set(Auto, false)),
        ("DISCARD PLANS", None),
        ("SET search_path = public", None),
        ("BEGIN; SELECT 1; COMMIT", None),
        ("COMMIT; BEGIN", None),
    ];
    let classifier = classifier();
    let mut failures = Vec::new();
    for &(sql, expected) in cases {
        let got = classifier.classify(sql);
        if got.control != expected || got.access != W || got.reason != Reason::Control {
            failures.push(format!("{sql:?}: expected {expected:?}, got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn hints_from_leading_comments_only() {
    let ms = Duration::from_millis;
    #[rustfmt::skip]
    let cases: &[(&str, Access, Option<Hint>, Option<Duration>)] = &[
        ("/* tidepool: primary */ SELECT 1", R, Some(Hint::Primary), None),
        ("/* tidepool: standby */ INSERT INTO t VALUES (1)", W, Some(Hint::Standby), None),
        ("/*tidepool:standby,max_lag=200ms*/SELECT 1", R, Some(Hint::Standby), Some(ms(200))),
        ("/* tidepool: standby max_lag=2s */ SELECT 1", R, Some(Hint::Standby), Some(ms(2000))),
        ("-- tidepool: max_lag=2s\nSELECT 1", R, None, Some(ms(2000))),
        ("/* tidepool: max_lag=0 */ SELECT 1", R, None, Some(ms(0))),
        ("/* other */ /* TIDEPOOL: Primary */ SELECT 1", R, Some(Hint::Primary), None),
        ("/* tidepool: standby */ /* tidepool: primary */ SELECT 1", R, Some(Hint::Primary), None),
        ("SELECT 1 /* tidepool: standby */", R, None, None),
        ("SELECT /* tidepool: standby */ 1", R, None, None),
        ("/* tidepool: max_lag=fast */ SELECT 1", R, None, None),
        ("/* tidepool: stand-by */ SELECT 1", R, None, None),
        ("/* not tidepool: standby */ SELECT 1", R, None, None),
        ("/* tidepool: standby */ SELECT nextval('s')", W, Some(Hint::Standby), None),
        ("/* tidepool: primary", W, None, None),
    ];
    let classifier = classifier();
    for &(sql, access, hint, max_lag) in cases {
        let got = classifier.classify(sql);
        assert_eq!(
            (got.access, got.hint, got.max_lag),
            (access, hint, max_lag),
            "{sql:?}"
        );
    }
}

/// 63 bytes: the longest name PostgreSQL keeps.
const LONG_NAME: &str = "a_function_name_of_sixty_three_bytes_which_is_postgres_maximum_";

fn custom() -> Classifier {
    let mut config = ClassifierConfig::default();
    config.write_functions.extend(
        [
            "/^my_.*_writer$/",
            "audit.log_event",
            "/^pg_stat_reset/",
            "  Bump_Counter ",
            LONG_NAME,
        ]
        .map(String::from),
    );
    config.read_only_functions = ["pg_stat_reset_single_table_counters", "nextval"]
        .map(String::from)
        .to_vec();
    config.validate().unwrap();
    Classifier::new(&config).unwrap()
}

#[test]
fn configurable_function_lists() {
    #[rustfmt::skip]
    let cases: &[(&str, Access, Reason)] = &[
        ("SELECT my_event_writer(1)", W, Reason::WriteFunction),
        ("SELECT public.MY_EVENT_WRITER(1)", W, Reason::WriteFunction),
        ("SELECT \"my_event_writer\"(1)", W, Reason::WriteFunction),
        ("SELECT my_event_reader(1)", R, Reason::Read),
        ("SELECT my_writer(1)", R, Reason::Read),
        ("SELECT audit.log_event('x')", W, Reason::WriteFunction),
        // Unqualified: search_path may resolve it to audit.log_event.
        ("SELECT log_event('x')", W, Reason::WriteFunction),
        ("SELECT other.log_event('x')", R, Reason::Read),
        ("SELECT bump_counter()", W, Reason::WriteFunction),
        ("SELECT pg_stat_reset_shared('io')", W, Reason::WriteFunction),
        ("SELECT pg_stat_reset_single_table_counters(1)", R, Reason::Read),
        ("SELECT nextval('s')", R, Reason::Read),
        ("SELECT pg_catalog.nextval('s')", R, Reason::Read),
        ("SELECT setval('s', 1)", W, Reason::WriteFunction),
    ];
    check_table(&custom(), cases);
    // PostgreSQL truncates longer identifiers to 63 bytes, and then calls LONG_NAME.
    assert_eq!(LONG_NAME.len(), 63);
    let call = format!("SELECT {LONG_NAME}xyz(1)");
    assert_eq!(custom().classify(&call).reason, Reason::WriteFunction);
    let multibyte = format!("SELECT {}é(1)", &LONG_NAME[..62]);
    assert_eq!(custom().classify(&multibyte).access, R);
}

#[test]
fn bad_config_entries_are_refused() {
    let config = |write: &str, read_only: &str| ClassifierConfig {
        write_functions: vec![write.to_string()],
        read_only_functions: if read_only.is_empty() {
            vec![]
        } else {
            vec![read_only.to_string()]
        },
        cache_bytes: 0,
    };
    for (write, read_only) in [
        ("/[/", ""),
        ("", ""),
        ("a b", ""),
        (".x", ""),
        ("x.", ""),
        ("ok", "/(/"),
    ] {
        let err = config(write, read_only).validate().unwrap_err();
        assert!(!err.to_string().is_empty());
        assert!(Classifier::new(&config(write, read_only)).is_err());
    }
    assert!(matches!(
        config("/(/", "").validate(),
        Err(ClassifierError::BadRegex {
            list: "write_functions",
            ..
        })
    ));
    assert!(matches!(
        config("ok", "a(b").validate(),
        Err(ClassifierError::BadName {
            list: "read_only_functions",
            ..
        })
    ));
    config("/^x$/", "s.f").validate().unwrap();
    ClassifierConfig::default().validate().unwrap();
}

#[test]
fn cache_hits_ignore_leading_comments() {
    let classifier = classifier();
    let sql = "SELECT * FROM t WHERE id = $1";
    let first = classifier.classify(sql);
    assert_eq!(classifier.cache_stats().misses, 1);
    assert_eq!(classifier.classify(sql), first);
    let hinted = classifier.classify(&format!("/* tidepool: standby */ {sql}"));
    assert_eq!(hinted.hint, Some(Hint::Standby));
    assert_eq!((hinted.access, hinted.reason), (first.access, first.reason));
    let stats = classifier.cache_stats();
    assert_eq!((stats.hits, stats.misses, stats.entries), (2, 1, 1));
    // Shortcut writes never touch the cache.
    classifier.classify("INSERT INTO t VALUES (1)");
    assert_eq!(classifier.cache_stats().entries, 1);
}

#[test]
fn cache_stays_within_budget() {
    let config = ClassifierConfig {
        cache_bytes: 16 * 1024,
        ..ClassifierConfig::default()
    };
    let classifier = Classifier::new(&config).unwrap();
    for i in 0..2000 {
        let sql = format!("SELECT {i} FROM t");
        assert_eq!(classifier.classify(&sql).access, R);
        assert!(classifier.cache_stats().bytes <= 16 * 1024);
    }
    let stats = classifier.cache_stats();
    assert!(stats.evictions > 0 && stats.entries > 0, "{stats:?}");
    // Too big to cache against this budget: classified, not stored.
    let big = format!("SELECT 1 FROM t WHERE a IN ({})", vec!["1"; 1000].join(","));
    assert_eq!(classifier.classify(&big).access, R);
    let disabled = Classifier::new(&ClassifierConfig {
        cache_bytes: 0,
        ..config
    })
    .unwrap();
    assert_eq!(disabled.classify("SELECT 1").access, R);
    assert_eq!(disabled.cache_stats(), CacheStats::default());
}

/// The lexical pass is only sound if sqlparser's tokenizer never sees a string or comment
/// where PostgreSQL sees code. These pin the behaviours that matter, for sqlparser upgrades.
#[test]
fn tokenizer_never_hides_code() {
    #[rustfmt::skip]
    let writes = [
        // standard_conforming_strings: a backslash does not escape the quote.
        "SELECT 'a\\', nextval('s'), 'b'",
        // `$` continues an identifier, so `x$$` does not open a dollar quote.
        "SELECT x$$ FROM t WHERE nextval('s') > 0 AND '$$' = '$$'",
        // Positional parameters are not dollar-quote tags.
        "SELECT $1 , nextval('s'), $2",
        // Nested comments close where PostgreSQL closes them.
        "SELECT 1 /* /* */ */ , nextval('s')",
        // E'' strings do take backslash escapes.
        "SELECT E'\\'', nextval('s'), ''",
        // A doubled quote inside a quoted identifier.
        "SELECT \"a\"\"b\", nextval('s')",
        // Line comment ends at a carriage return too.
        "SELECT 1 --x\r, nextval('s')",
        // `#` is PostgreSQL's XOR operator, not a MySQL comment.
        "SELECT 1 # nextval('s')",
        // `//` is two divisions (an error), not a Snowflake comment.
        "SELECT 4 // nextval('s')",
        // N'' strings follow the plain-string rules: no backslash escape.
        "SELECT N'\\', nextval(16384), N'\\'",
        // `'''` is a quote inside a string, not a triple-quoted string.
        "SELECT ''' ', nextval(16384), ' '''",
    ];
    let classifier = classifier();
    for sql in writes {
        assert_eq!(classifier.classify(sql).access, W, "{sql:?}");
    }
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for _ in 0..3000 {
        let len = rng.below(80);
        let bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        fuzz_classify(&bytes);
        let mut prefixed = b"SELECT ".to_vec();
        prefixed.extend_from_slice(&bytes);
        fuzz_classify(&prefixed);
    }
}

const SOUP: &[&str] = &[
    "SELECT",
    "WITH",
    "VALUES",
    "TABLE",
    "SHOW",
    "EXPLAIN",
    "ANALYZE",
    "FROM",
    "WHERE",
    "t",
    "x",
    "AS",
    "(",
    ")",
    ",",
    ";",
    ".",
    "*",
    "=",
    "'",
    "''",
    "\"",
    "$$",
    "$a$",
    "$1",
    "/*",
    "*/",
    "--",
    "\n",
    "E'\\'",
    "FOR",
    "UPDATE",
    "SHARE",
    "NO",
    "KEY",
    "INTO",
    "DELETE",
    "INSERT",
    "RETURNING",
    "nextval",
    "pg_catalog",
    "UNION",
    "SELECT 1",
    "BEGIN",
    "READ",
    "ONLY",
    "SET",
    "tidepool",
    "route",
    "COMMIT",
    "/* tidepool: standby */",
    "U&\"",
    "\\",
    "::",
    "[",
    "]",
    "CASE",
    "WHEN",
    "END",
    "1e",
    "0x",
    "é",
    "\0",
];

#[test]
fn token_soup_never_panics_and_never_reads_a_write() {
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    let classifier = classifier();
    for _ in 0..3000 {
        let words: Vec<&str> = (0..rng.below(24)).map(|_| SOUP[rng.below(SOUP.len())]).collect();
        let sql = words.join(if rng.below(2) == 0 { " " } else { "" });
        fuzz_classify(sql.as_bytes());
        // Appending a locking clause or a write call on its own line can only make a read
        // into a write (the line break ends any line comment; block comments, strings and
        // quotes left open make the whole text unparsable).
        if classifier.classify(&sql).is_read() {
            for tail in ["\n FOR UPDATE", "\n; SELECT nextval('s')", "\n; DELETE FROM t"] {
                let longer = format!("{sql}{tail}");
                assert_eq!(classifier.classify(&longer).access, W, "{longer:?}");
            }
        }
    }
}

#[test]
fn deep_nesting_is_refused_without_overflowing_the_stack() {
    let deep = format!("SELECT {}1{}", "(".repeat(5000), ")".repeat(5000));
    let comments = format!("{}SELECT 1", "/*".repeat(5000));
    let cte = format!("WITH {} SELECT 1", vec!["x AS (SELECT 1)"; 2000].join(","));
    // Tokio's worker threads have 2 MiB of stack; prove a quarter of that is enough.
    std::thread::Builder::new()
        .stack_size(512 * 1024)
        .spawn(move || {
            let classifier = classifier();
            assert_eq!(classifier.classify(&deep).access, W);
            assert_eq!(classifier.classify(&comments).access, W);
            assert_eq!(classifier.classify(&cte).access, R);
        })
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn reason_labels_are_distinct() {
    let reasons = [
        Reason::Empty,
        Reason::Read,
        Reason::Shortcut,
        Reason::Control,
        Reason::Write,
        Reason::WritableCte,
        Reason::LockingRead,
        Reason::SelectInto,
        Reason::WriteFunction,
        Reason::Unparsable,
    ];
    let labels: std::collections::HashSet<_> = reasons.iter().map(|r| r.as_str()).collect();
    assert_eq!(labels.len(), reasons.len());
}

#[test]
fn classifier_is_shareable_across_sessions() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Classifier>();
    assert!(format!("{:?}", classifier()).contains("Classifier"));
}
