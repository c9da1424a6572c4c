//! Control statements (BEGIN, COMMIT, SET tidepool.route, …) and routing hints, which count
//! only in leading comments.

use std::time::Duration;

use super::*;

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
