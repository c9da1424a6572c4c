//! Statements PostgreSQL refuses while other sessions are connected to a database:
//! `CREATE DATABASE … [TEMPLATE t]` (the template, `template1` by default), `DROP DATABASE x
//! [WITH (FORCE)]`, `ALTER DATABASE x RENAME TO …` / `SET TABLESPACE …`. On a direct
//! connection nobody else is connected; through tidepool, its own idle pooled connections are
//! (55006 `source database "template1" is being accessed by other users`). Before such a
//! statement is forwarded (the relay stops before it, in either pool mode), tidepool holds
//! every pool of that database (any user, any node) until the statement is answered: idle
//! connections close at once, busy ones when released (never mid-transaction), and none opens
//! in between (`pool/hold.rs`). PostgreSQL waits up to 5 s for other sessions to go, so the
//! statement then runs as it would directly. A connection serving another client stays until
//! that client is done with it: on a direct connection that session would be there too.

use crate::app::Shared;
use crate::pool::CheckoutHold;
use crate::protocol::tag;

/// The databases the first frame of `input` (a Query or Parse) needs free of other sessions.
///
/// Only a text that opens with CREATE, DROP or ALTER (or a comment) is parsed: this runs on
/// every request. A DATABASE statement behind another one in the same Query is not seen;
/// CREATE and DROP DATABASE refuse to run there anyway (25001).
pub fn databases_needing_exclusive_use(input: &[u8]) -> Vec<String> {
    let Some(text) = request_text(input) else {
        return Vec::new();
    };
    let first = text.iter().find(|b| !b.is_ascii_whitespace());
    if !matches!(first, Some(b'c' | b'C' | b'd' | b'D' | b'a' | b'A' | b'/' | b'-')) {
        return Vec::new();
    }
    // Cheap filter first: every statement we look for says DATABASE.
    if !text.windows(8).any(|w| w.eq_ignore_ascii_case(b"database")) {
        return Vec::new();
    }
    let Ok(sql) = std::str::from_utf8(text) else {
        return Vec::new();
    };
    crate::client::features::statements::statement_tokens(sql, 64)
        .iter()
        .filter_map(|tokens| target(tokens))
        .collect()
}

/// The SQL text of a Query or Parse at the head of `input`, if it is whole.
fn request_text(input: &[u8]) -> Option<&[u8]> {
    let tag = *input.first()?;
    let len = u32::from_be_bytes(input.get(1..5)?.try_into().ok()?) as usize;
    let body = input.get(5..1 + len)?;
    let text = match tag {
        tag::QUERY => body,
        tag::PARSE => &body[body.iter().position(|&b| b == 0)? + 1..],
        _ => return None,
    };
    Some(&text[..text.iter().position(|&b| b == 0).unwrap_or(text.len())])
}

type Tokens = [Option<(String, bool)>];

fn word(tokens: &Tokens, i: usize, kw: &str) -> bool {
    matches!(tokens.get(i), Some(Some((value, false))) if value == kw)
}

fn name(tokens: &Tokens, i: usize) -> Option<String> {
    tokens.get(i)?.as_ref().map(|(value, _)| value.clone())
}

/// The database one statement needs to itself, if it is one of the forms above.
fn target(tokens: &Tokens) -> Option<String> {
    if word(tokens, 0, "create") && word(tokens, 1, "database") {
        // TEMPLATE [=] name among the options; template1 when none is named.
        let at = (3..tokens.len()).find(|&i| word(tokens, i, "template"));
        return Some(match at {
            Some(i) if tokens.get(i + 1) == Some(&None) => name(tokens, i + 2)?,
            Some(i) => name(tokens, i + 1)?,
            None => "template1".to_string(),
        });
    }
    if word(tokens, 0, "drop") && word(tokens, 1, "database") {
        let at = if word(tokens, 2, "if") && word(tokens, 3, "exists") {
            4
        } else {
            2
        };
        return name(tokens, at);
    }
    if word(tokens, 0, "alter") && word(tokens, 1, "database") {
        let exclusive =
            word(tokens, 3, "rename") || (word(tokens, 3, "set") && word(tokens, 4, "tablespace"));
        return if exclusive { name(tokens, 2) } else { None };
    }
    None
}

/// Holds every pool connected to one of `databases` (see `pool/hold.rs`): its idle
/// connections close now, the others (being cleaned after a session-mode client left, or
/// serving a client) when released, and none opens until the holds are dropped, which the
/// session does once the statement is answered.
pub fn free_databases(shared: &Shared, databases: &[String]) -> Vec<CheckoutHold> {
    let holds: Vec<CheckoutHold> = shared
        .pools
        .all()
        .iter()
        .filter(|pool| databases.contains(&pool.settings().login.database))
        .map(|pool| pool.hold_for_exclusive_use())
        .collect();
    tracing::info!(databases = ?databases, pools = holds.len(), "closing pooled connections before a statement that needs the database to itself");
    holds
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(sql: &str) -> Vec<u8> {
        let mut out = vec![b'Q'];
        out.extend_from_slice(&((sql.len() + 5) as u32).to_be_bytes());
        out.extend_from_slice(sql.as_bytes());
        out.push(0);
        out
    }

    fn targets(sql: &str) -> Vec<String> {
        databases_needing_exclusive_use(&query(sql))
    }

    #[test]
    fn finds_the_database_each_statement_needs() {
        assert_eq!(targets("CREATE DATABASE d TEMPLATE template1"), ["template1"]);
        assert_eq!(
            targets("create database d with owner = x template = \"App\""),
            ["App"]
        );
        assert_eq!(targets("CREATE DATABASE d"), ["template1"]);
        assert_eq!(targets("DROP DATABASE x"), ["x"]);
        assert_eq!(targets("DROP DATABASE IF EXISTS x WITH (FORCE)"), ["x"]);
        assert_eq!(targets("ALTER DATABASE x RENAME TO y"), ["x"]);
        assert_eq!(targets("ALTER DATABASE x SET TABLESPACE t"), ["x"]);
        assert!(targets("ALTER DATABASE x SET work_mem = '1MB'").is_empty());
        assert!(targets("SELECT 'CREATE DATABASE d'").is_empty());
        assert!(targets("SELECT current_database()").is_empty());
        assert_eq!(targets("  /* x */ DROP DATABASE x"), ["x"]);
        assert!(targets("COMMIT").is_empty());
    }
}
