//! Configurable function lists: write and read-only functions by name or pattern, and bad
//! entries refused.

use super::*;

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
