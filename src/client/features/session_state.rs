//! Which session settings a client changes with SQL (`SET`, `RESET`, `DISCARD ALL`), found by a
//! quick lexical scan of its statements, so that transaction mode can carry them to the client's
//! next backend and keep them away from everyone else's.
//!
//! Only names are extracted here; the values are read back from the server after the
//! transaction (`current_setting`), which is exact whatever syntax, quoting, rollback or
//! function-call route the client took.

use crate::client::features::keywords::{Word, Words};

/// Settings touched by a batch of statements.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SessionChanges {
    /// Lower-case names given to `SET [SESSION] name …`.
    pub set: Vec<String>,
    /// Lower-case names given to `RESET name`.
    pub reset: Vec<String>,
    /// `RESET ALL`, `DISCARD ALL` or `SET SESSION AUTHORIZATION DEFAULT`-like wholesale resets.
    pub reset_all: bool,
}

impl SessionChanges {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.reset.is_empty() && !self.reset_all
    }

    /// Adds what `sql` (one or more statements) changes.
    pub fn scan(&mut self, sql: &str) {
        for statement in Statements::new(sql) {
            self.scan_statement(&statement);
        }
    }

    fn scan_statement(&mut self, words: &[String]) {
        let upper = |i: usize| words.get(i).map(|w| w.to_ascii_uppercase());
        match upper(0).as_deref() {
            Some("SET") => {
                let mut i = 1;
                match upper(1).as_deref() {
                    // Transaction-scoped: gone at commit, nothing to carry.
                    Some("LOCAL") | Some("TRANSACTION") => return,
                    Some("SESSION") => {
                        if upper(2).as_deref() == Some("CHARACTERISTICS") {
                            self.push_set("default_transaction_isolation");
                            self.push_set("default_transaction_read_only");
                            self.push_set("default_transaction_deferrable");
                            return;
                        }
                        if upper(2).as_deref() == Some("AUTHORIZATION") {
                            self.push_set("session_authorization");
                            return;
                        }
                        i = 2;
                    }
                    _ => {}
                }
                match upper(i).as_deref() {
                    Some("TIME") if upper(i + 1).as_deref() == Some("ZONE") => self.push_set("timezone"),
                    Some("NAMES") => self.push_set("client_encoding"),
                    Some("SCHEMA") => self.push_set("search_path"),
                    Some("ROLE") => self.push_set("role"),
                    Some(_) => {
                        let name = words[i].to_ascii_lowercase();
                        self.push_set(&name);
                    }
                    None => {}
                }
            }
            Some("RESET") => match upper(1).as_deref() {
                Some("ALL") => self.reset_all = true,
                Some("TIME") if upper(2).as_deref() == Some("ZONE") => self.push_reset("timezone"),
                Some("SESSION") if upper(2).as_deref() == Some("AUTHORIZATION") => {
                    self.push_reset("session_authorization")
                }
                Some(_) => {
                    let name = words[1].to_ascii_lowercase();
                    self.push_reset(&name);
                }
                None => {}
            },
            Some("DISCARD") if upper(1).as_deref() == Some("ALL") => self.reset_all = true,
            _ => {}
        }
    }

    fn push_set(&mut self, name: &str) {
        if !self.set.iter().any(|n| n == name) {
            self.set.push(name.to_string());
        }
    }

    fn push_reset(&mut self, name: &str) {
        self.set.retain(|n| n != name);
        if !self.reset.iter().any(|n| n == name) {
            self.reset.push(name.to_string());
        }
    }
}

/// Cheap test for whether a statement batch may change session settings at all.
pub fn may_change_settings(words: Words) -> bool {
    // Any SET, RESET or DISCARD word (set_config too); false positives only cost a scan.
    words.any(&[Word::Set, Word::Reset, Word::Discard])
}

/// Each statement of `sql` as (its text, trimmed and without the `;`, and its first few words).
pub fn statement_spans(sql: &str) -> Vec<(&str, Vec<String>)> {
    let mut spans = Vec::new();
    let mut statements = Statements::new(sql);
    loop {
        let start = sql.len() - statements.rest.len();
        let Some(words) = statements.next() else {
            break;
        };
        let end = sql.len() - statements.rest.len();
        let text = sql[start..end].trim_end_matches(';').trim();
        if !words.is_empty() {
            spans.push((text, words));
        }
    }
    spans
}

/// Splits SQL into statements of their first few words, skipping comments and string bodies.
struct Statements<'a> {
    rest: &'a str,
}

impl<'a> Statements<'a> {
    fn new(sql: &'a str) -> Self {
        Statements { rest: sql }
    }
}

/// Words kept per statement: enough for `SET SESSION CHARACTERISTICS …` and names.
const WORDS_PER_STATEMENT: usize = 4;

impl Iterator for Statements<'_> {
    type Item = Vec<String>;

    fn next(&mut self) -> Option<Vec<String>> {
        if self.rest.is_empty() {
            return None;
        }
        let mut words = Vec::new();
        let mut word = String::new();
        let bytes = self.rest.as_bytes();
        let mut i = 0;
        let flush = |word: &mut String, words: &mut Vec<String>| {
            if !word.is_empty() && words.len() < WORDS_PER_STATEMENT {
                words.push(std::mem::take(word));
            }
            word.clear();
        };
        while i < bytes.len() {
            let c = bytes[i];
            match c {
                b';' => {
                    i += 1;
                    break;
                }
                b'-' if bytes.get(i + 1) == Some(&b'-') => {
                    flush(&mut word, &mut words);
                    while i < bytes.len() && bytes[i] != b'\n' {
                        i += 1;
                    }
                }
                b'/' if bytes.get(i + 1) == Some(&b'*') => {
                    flush(&mut word, &mut words);
                    i = skip_block_comment(bytes, i);
                    continue;
                }
                b'\'' => {
                    flush(&mut word, &mut words);
                    i = skip_quoted(bytes, i, b'\'');
                    // A string literal stands in for a word (values are read back later).
                    if words.len() < WORDS_PER_STATEMENT {
                        words.push("'…'".to_string());
                    }
                    continue;
                }
                b'"' => {
                    flush(&mut word, &mut words);
                    let (ident, end) = quoted_identifier(self.rest, i);
                    if words.len() < WORDS_PER_STATEMENT {
                        words.push(ident.replace("\"\"", "\""));
                    }
                    i = end;
                    continue;
                }
                b'$' => {
                    if let Some(end) = skip_dollar_quoted(bytes, i) {
                        flush(&mut word, &mut words);
                        i = end;
                        continue;
                    }
                    word.push('$');
                }
                c if c.is_ascii_whitespace() || c == b'=' || c == b',' || c == b'(' || c == b')' => {
                    flush(&mut word, &mut words);
                }
                _ => {
                    // Names may be dotted (custom settings like `app.user_id`).
                    let ch = self.rest[i..].chars().next().unwrap_or(' ');
                    word.push(ch);
                    i += ch.len_utf8();
                    continue;
                }
            }
            i += 1;
        }
        flush(&mut word, &mut words);
        self.rest = &self.rest[i.min(self.rest.len())..];
        Some(words)
    }
}

/// The quoted identifier starting at `i` (its case kept: GUC names are case-insensitive
/// anyway; doubled quotes still doubled, so nothing is allocated for a word that is not kept),
/// and where it ends.
fn quoted_identifier(text: &str, i: usize) -> (&str, usize) {
    let bytes = text.as_bytes();
    let end = skip_quoted(bytes, i, b'"');
    // An unterminated identifier runs to the end of the text (and `end - 1` could then split a
    // multi-byte character).
    let close = if end > i + 1 && bytes[end - 1] == b'"' {
        end - 1
    } else {
        end
    };
    (&text[i + 1..close], end)
}

fn skip_block_comment(bytes: &[u8], mut i: usize) -> usize {
    // Block comments nest in PostgreSQL.
    let mut depth = 0;
    while i < bytes.len() {
        if bytes[i] == b'/' && bytes.get(i + 1) == Some(&b'*') {
            depth += 1;
            i += 2;
        } else if bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    i
}

/// Index just past the closing quote (a doubled quote is part of the text).
fn skip_quoted(bytes: &[u8], start: usize, quote: u8) -> usize {
    let mut i = start + 1;
    while i < bytes.len() {
        if bytes[i] == quote {
            if bytes.get(i + 1) == Some(&quote) {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    i
}

/// `$tag$ … $tag$`: index past the end, or `None` if this `$` starts no dollar quote.
fn skip_dollar_quoted(bytes: &[u8], start: usize) -> Option<usize> {
    let tag_end = bytes[start + 1..].iter().position(|&b| b == b'$')? + start + 1;
    let tag = &bytes[start..=tag_end];
    if !tag[1..tag.len() - 1]
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || *b == b'_')
    {
        return None;
    }
    let body = tag_end + 1;
    let close = bytes[body..].windows(tag.len()).position(|w| w == tag)?;
    Some(body + close + tag.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(sql: &str) -> SessionChanges {
        let mut c = SessionChanges::default();
        c.scan(sql);
        c
    }

    #[test]
    fn finds_set_and_reset_names() {
        assert_eq!(scan("SET search_path = a, b").set, ["search_path"]);
        assert_eq!(scan("set SESSION TimeZone TO 'UTC'").set, ["timezone"]);
        assert_eq!(scan("SET TIME ZONE 'Europe/Paris'").set, ["timezone"]);
        assert_eq!(scan("SET NAMES 'LATIN1'").set, ["client_encoding"]);
        assert_eq!(scan("SET SCHEMA 'x'").set, ["search_path"]);
        assert_eq!(scan("SET app.user_id = 42").set, ["app.user_id"]);
        assert_eq!(scan("SET \"TimeZone\" = 'UTC'").set, ["timezone"]);
        assert_eq!(scan("RESET search_path").reset, ["search_path"]);
        assert!(scan("RESET ALL").reset_all);
        assert!(scan("discard all").reset_all);
        assert_eq!(
            scan("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY").set,
            [
                "default_transaction_isolation",
                "default_transaction_read_only",
                "default_transaction_deferrable"
            ]
        );
    }

    #[test]
    fn ignores_transaction_scoped_and_non_set_statements() {
        assert!(scan("SET LOCAL search_path = x").is_empty());
        assert!(scan("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE").is_empty());
        assert!(scan("SELECT 'SET search_path = x'").is_empty());
        assert!(scan("SELECT 1 -- SET x = 1").is_empty());
        assert!(scan("/* SET x = 1 */ SELECT 1").is_empty());
        assert!(scan("DO $$ BEGIN SET x = 1; END $$").is_empty());
        assert!(scan("UPDATE t SET a = 1").is_empty());
    }

    #[test]
    fn multi_statement_batches_and_comments() {
        let c = scan("BEGIN; /* note */ SET work_mem = '8MB'; SELECT 1; RESET statement_timeout; COMMIT");
        assert_eq!(c.set, ["work_mem"]);
        assert_eq!(c.reset, ["statement_timeout"]);
        // RESET after SET of the same name: only the reset counts.
        let c = scan("SET a.b = 1; RESET a.b");
        assert!(c.set.is_empty());
        assert_eq!(c.reset, ["a.b"]);
    }

    #[test]
    fn quick_filter_has_no_false_negatives_on_set_statements() {
        for sql in ["SET x = 1", "reset all", "Discard All", "select 1; sEt a = 2"] {
            assert!(may_change_settings(Words::scan(sql.as_bytes())), "{sql}");
        }
        assert!(!may_change_settings(Words::scan(b"SELECT 1")));
    }

    #[test]
    fn never_panics_on_odd_input() {
        for sql in [
            "$",
            "$$",
            "$a",
            "'",
            "\"",
            "/*",
            "--",
            "SET",
            "RESET",
            "SET \"",
            "ö SET ü",
            "SET $x$ y",
            "SET \"é",
        ] {
            scan(sql);
        }
        assert_eq!(scan("SET \"ü").set, ["ü"]);
    }
}
