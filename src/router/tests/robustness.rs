//! Never hide code, never panic: tokenizer assumptions pinned for sqlparser upgrades, random
//! bytes and token soup, and deep nesting refused within a small stack.

use super::*;
use crate::fuzzing::XorShift;

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
