//! SQL-level `PREPARE` / `EXECUTE` / `DEALLOCATE` in transaction mode: each client's statements
//! follow it to whatever backend serves its next transaction, instead of pinning it.
//!
//! Design (the simplest one that is exact): during a transaction, the backend's SQL prepared
//! statements are exactly the client's. When a client is attached, the backend's set (name →
//! PREPARE text, known from earlier transactions) is brought to the client's: names the client
//! lacks, or holds with another text, are `DEALLOCATE`d, and the client's missing ones are
//! `PREPARE`d again from their original text; nothing runs when both already agree (the common
//! case: nobody uses SQL PREPARE, or one client keeps getting the same backend). PostgreSQL itself
//! then answers `EXECUTE`, `PREPARE` (42P05) and `DEALLOCATE` (26000) exactly as it would on a
//! direct connection, and no client can see another's names. After a transaction whose text may
//! have changed the set (the words PREPARE, DEALLOCATE or DISCARD), one query reads it back from
//! `pg_prepared_statements`; each statement's own text is cut out of the query string PostgreSQL
//! recorded (the whole client Query, which may hold several statements). A statement whose text
//! cannot be found unambiguously there pins the client instead, as before.

use crate::backend::quote_ident;
use crate::backend::{BackendConn, BackendError};
use crate::protocol::{frontend_msg, tag};
use bytes::BytesMut;
use std::collections::BTreeMap;
use std::sync::Arc;

/// SQL prepared statements: name (as PostgreSQL stores it) → the `PREPARE` statement that made
/// it. An empty text marks a statement tidepool cannot prepare again (it pins its client).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SqlPrepared {
    by_name: BTreeMap<String, Arc<str>>,
}

impl SqlPrepared {
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn clear(&mut self) {
        self.by_name.clear();
    }

    /// Statements that cannot be prepared again elsewhere.
    pub fn unmovable(&self) -> u32 {
        let n = self.by_name.values().filter(|t| t.is_empty()).count();
        u32::try_from(n).unwrap_or(u32::MAX)
    }

    /// Records `name` as prepared from `text`, or as not prepared.
    pub fn set(&mut self, name: String, text: Option<Arc<str>>) {
        match text {
            Some(text) => self.by_name.insert(name, text),
            None => self.by_name.remove(&name),
        };
    }

    /// The text of `name`, if held.
    pub fn text(&self, name: &str) -> Option<&str> {
        self.by_name.get(name).map(|t| &**t)
    }
}

/// Cheap test: might a statement text with these trigger words create or drop SQL prepared
/// statements?
pub fn may_change(words: crate::client::features::keywords::Words) -> bool {
    use crate::client::features::keywords::Word;
    words.any(&[Word::Prepare, Word::Deallocate, Word::Discard])
}

/// Reads the session's SQL prepared statements back from the server.
pub const LIST_SQL: &str =
    "SELECT name, statement FROM pg_catalog.pg_prepared_statements WHERE from_sql ORDER BY name";

/// Builds the set from `LIST_SQL` rows (name, query string PostgreSQL recorded).
pub fn from_rows(rows: &[Vec<Option<String>>]) -> SqlPrepared {
    let mut set = SqlPrepared::default();
    for row in rows {
        let (Some(Some(name)), Some(Some(source))) = (row.first(), row.get(1)) else {
            continue;
        };
        let text = own_text(name, source).unwrap_or("");
        set.by_name.insert(name.clone(), Arc::from(text));
    }
    set
}

/// The one `PREPARE name …` statement in `source` (a client's query string, possibly several
/// statements); `None` when there is none or more than one that could be it.
fn own_text<'a>(name: &str, source: &'a str) -> Option<&'a str> {
    let mut found = None;
    for (text, words) in crate::client::features::session_state::statement_spans(source) {
        let is_prepare = words.first().is_some_and(|w| w.eq_ignore_ascii_case("PREPARE"));
        // Unquoted names are folded to lower case, quoted ones are not: compare loosely, and
        // refuse ambiguity rather than guess.
        if is_prepare && words.get(1).is_some_and(|w| w.eq_ignore_ascii_case(name)) {
            if found.is_some() {
                return None;
            }
            found = Some(text);
        }
    }
    found
}

/// One statement run at attach.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Deallocate(String),
    Prepare(String, Arc<str>),
}

impl Step {
    fn sql(&self) -> String {
        match self {
            Step::Deallocate(name) => format!("DEALLOCATE {}", quote_ident(name)),
            Step::Prepare(_, text) => text.to_string(),
        }
    }
}

/// The statements that bring `backend`'s set to `client`'s: first the DEALLOCATEs, then the
/// PREPAREs.
fn sync_plan(client: &SqlPrepared, backend: &SqlPrepared) -> Vec<Step> {
    let mut plan = Vec::new();
    for (name, text) in &backend.by_name {
        if client.by_name.get(name) != Some(text) {
            plan.push(Step::Deallocate(name.clone()));
        }
    }
    for (name, text) in &client.by_name {
        if !text.is_empty() && backend.by_name.get(name) != Some(text) {
            plan.push(Step::Prepare(name.clone(), text.clone()));
        }
    }
    plan
}

/// Makes the backend's SQL prepared statements the client's (at attach, transaction mode).
/// Each statement is its own Query, so that one failure does not stop the others. A PREPARE
/// that fails now (say, its table was dropped) leaves the name unprepared: the client's
/// EXECUTE then fails with 26000. The attach calls it only when the two sets differ (equal
/// ones make an empty plan here too).
pub async fn sync(backend: &mut BackendConn, client: &SqlPrepared) -> Result<(), BackendError> {
    let mut plan = sync_plan(client, &backend.statements.sql);
    if plan.is_empty() {
        return Ok(());
    }
    // A client's statement named like one of tidepool's (`tp5`): tidepool's goes first, so the
    // PREPARE succeeds and the name is the client's alone.
    let taken: Vec<String> = plan
        .iter()
        .filter_map(|step| match step {
            Step::Prepare(name, _) if backend.statements.release_name(name) => Some(name.clone()),
            _ => None,
        })
        .collect();
    plan.splice(0..0, taken.into_iter().map(Step::Deallocate));
    let mut out = BytesMut::new();
    for step in &plan {
        frontend_msg::query(&mut out, &step.sql());
    }
    let results = run_pipelined(backend, &out, plan.len()).await?;
    let set = &mut backend.statements.sql.by_name;
    for (step, ok) in plan.into_iter().zip(results) {
        match step {
            // Gone either way (a failure means it was not there).
            Step::Deallocate(name) => {
                set.remove(&name);
            }
            Step::Prepare(name, text) if ok => {
                set.insert(name, text);
            }
            Step::Prepare(name, _) => {
                tracing::debug!(backend = backend.id, %name, "could not prepare a client's SQL statement again");
            }
        }
    }
    Ok(())
}

/// Sends `count` Query messages at once; returns, per query, whether it ran without error.
pub(crate) async fn run_pipelined(
    backend: &mut BackendConn,
    out: &[u8],
    count: usize,
) -> Result<Vec<bool>, BackendError> {
    backend.set_state(crate::backend::BackendState::Busy);
    backend.write_all(out).await?;
    let mut results = Vec::with_capacity(count);
    let mut ok = true;
    while results.len() < count {
        let frame = backend.read_frame().await?;
        if frame.tag == tag::ERROR_RESPONSE {
            if crate::protocol::error::BackendError::parse(&frame).is_fatal() {
                return Err(server_error(backend, &frame));
            }
            ok = false;
        }
        if backend.observe(&frame) {
            results.push(std::mem::replace(&mut ok, true));
        }
    }
    Ok(results)
}

/// A server error during tidepool's own exchange: the connection is not trusted any more.
fn server_error(backend: &mut BackendConn, frame: &crate::protocol::Frame) -> BackendError {
    let e = crate::protocol::error::BackendError::parse(frame);
    backend.set_state(crate::backend::BackendState::Broken);
    BackendError::Server {
        addr: backend.addr.to_string(),
        fatal: e.is_fatal(),
        code: e.code,
        message: e.message,
    }
}

/// Reads the backend's SQL prepared statements back (after a transaction that may have changed
/// them) and records them as the backend's.
pub async fn refresh(backend: &mut BackendConn) -> Result<&SqlPrepared, BackendError> {
    let mut out = BytesMut::new();
    frontend_msg::query(&mut out, LIST_SQL);
    backend.set_state(crate::backend::BackendState::Busy);
    backend.write_all(&out).await?;
    let mut rows = Vec::new();
    loop {
        let frame = backend.read_frame().await?;
        if backend.observe(&frame) {
            break;
        }
        match frame.tag {
            tag::DATA_ROW => rows.push(crate::backend::parse_data_row(&frame.body)),
            tag::ERROR_RESPONSE => return Err(server_error(backend, &frame)),
            _ => {}
        }
    }
    backend.statements.sql = from_rows(&rows);
    Ok(&backend.statements.sql)
}

impl crate::client::session::Session {
    /// After a transaction that may have prepared or deallocated SQL statements: the client's set
    /// is now what its backend holds. Statements that cannot move pin the client.
    pub(crate) async fn follow_sql_prepared(&mut self) -> Result<(), BackendError> {
        self.exchange.features.sql_prepared_may_have_changed = false;
        let backend = self.checkout.attached();
        let set = refresh(backend).await?.clone();
        let mut pins = self.pins;
        pins.sql_prepared = set.unmovable();
        self.statements.sql = set;
        self.set_pins(pins);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(name: &str, statement: &str) -> Vec<Option<String>> {
        vec![Some(name.to_string()), Some(statement.to_string())]
    }

    #[test]
    fn own_text_is_cut_out_of_multi_statement_strings() {
        let source = "SELECT 1; PREPARE a AS SELECT 1; /* x */ prepare B (int) AS SELECT $1 || ';'; SELECT 2";
        let set = from_rows(&[row("a", source), row("b", source)]);
        assert_eq!(set.text("a"), Some("PREPARE a AS SELECT 1"));
        assert_eq!(set.text("b"), Some("/* x */ prepare B (int) AS SELECT $1 || ';'"));
        assert_eq!(set.unmovable(), 0);
        let set = from_rows(&[row("q", "PREPARE \"q\" AS SELECT 1")]);
        assert_eq!(set.text("q"), Some("PREPARE \"q\" AS SELECT 1"));
    }

    #[test]
    fn ambiguous_or_missing_texts_cannot_move() {
        let set = from_rows(&[
            row("a", "PREPARE a AS SELECT 1; DEALLOCATE a; PREPARE a AS SELECT 2"),
            row("b", "SELECT make_it()"),
        ]);
        assert_eq!(set.text("a"), Some(""));
        assert_eq!(set.unmovable(), 2);
    }

    #[test]
    fn sync_plan_deallocates_foreign_names_then_prepares_missing_ones() {
        let client = from_rows(&[
            row("a", "PREPARE a AS SELECT 1"),
            row("b", "PREPARE b AS SELECT 2"),
        ]);
        let backend = from_rows(&[
            row("a", "PREPARE a AS SELECT 'other client'"),
            row("b", "PREPARE b AS SELECT 2"),
            row("c\"d", "PREPARE \"c\"\"d\" AS SELECT 3"),
        ]);
        let texts: Vec<String> = sync_plan(&client, &backend).iter().map(Step::sql).collect();
        assert_eq!(
            texts,
            [
                "DEALLOCATE \"a\"",
                "DEALLOCATE \"c\"\"d\"",
                "PREPARE a AS SELECT 1"
            ]
        );
        assert!(sync_plan(&client, &client).is_empty());
    }

    #[test]
    fn trigger_words() {
        assert!(may_change(crate::client::features::keywords::Words::scan(
            b"prepare x as select 1"
        )));
        assert!(may_change(crate::client::features::keywords::Words::scan(
            b"DEALLOCATE ALL"
        )));
        assert!(may_change(crate::client::features::keywords::Words::scan(
            b"discard all"
        )));
        assert!(!may_change(crate::client::features::keywords::Words::scan(
            b"EXECUTE x(1)"
        )));
    }
}
