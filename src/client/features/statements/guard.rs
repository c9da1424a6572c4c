//! SQL that names a prepared statement (`EXECUTE`, `EXPLAIN EXECUTE`, `CREATE TABLE … AS
//! EXECUTE`, `DEALLOCATE`, `PREPARE`), seen in a Query or a Parse in transaction mode.
//!
//! A backend is shared: besides the attached client's own SQL statements it holds tidepool's
//! `tp<id>` statements, prepared for any client of the pool. The rule, by construction: a name
//! reaches the backend only if it is the client's own. A client's SQL statement passes as it
//! is; a client's protocol statement is renamed to its `tp<id>` (so psycopg's `DEALLOCATE
//! _pg3_0` works); any other name that is one of tidepool's is first closed on the backend (a
//! protocol Close, which never fails; the next client needing it gets it prepared again), so
//! PostgreSQL answers exactly as on a direct connection (26000 `prepared statement "tp5" does
//! not exist`, or a successful `PREPARE tp5`). The same holds for an unnamed Parse (run in its
//! batch, on this backend); a named one is executed later, maybe on another backend, so one that
//! mentions a foreign `tp<id>` is refused at once with that same 26000 (PostgreSQL would refuse
//! it at Describe or Execute).

use super::refs::{self, NameRef, RefKind};
use super::{ensure_prepared, Expect, Made, Pipeline, Request, RewriteContext, Statement};
use crate::protocol::backend_msg::{begin, finish, put_cstr};
use crate::protocol::{tag, ErrorFields, SqlState};
use bytes::{BufMut, BytesMut};
use std::sync::Arc;

/// The name a simple-query `DEALLOCATE` of a client's protocol statement is pointed at when
/// the backend lacks that statement: prepared just before it in the same query string.
const STAND_IN: &str = "\"tidepool: deallocated protocol statement\"";

/// Tidepool's statement id when `name` is one of its backend names (`tp<id>`).
pub(super) fn own_id(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("tp")?;
    let id: u64 = digits.parse().ok()?;
    (digits.len() == id.to_string().len()).then_some(id)
}

/// The cheap filter: the trigger words the relay scanned already, when it did (a statement
/// name can only follow EXECUTE, DEALLOCATE or PREPARE, each starting a letter run).
fn may_refer(ctx: &RewriteContext<'_>, sql: &[u8]) -> bool {
    use crate::client::features::keywords::Word;
    match ctx.words {
        Some(words) => words.any(&[Word::Execute, Word::Deallocate, Word::Prepare]),
        None => refs::may_refer(sql),
    }
}

/// A Query's SQL: returns the frame to send instead, when it had to change. Protective Closes
/// and the expectations they need are queued here, ahead of the Query's own.
pub(super) fn query(
    frame: &[u8],
    ctx: &mut RewriteContext<'_>,
    pipe: &mut Pipeline,
    to_server: &mut BytesMut,
) -> Option<BytesMut> {
    let body = &frame[5..];
    let text = body.strip_suffix(&[0]).unwrap_or(body);
    if !may_refer(ctx, text) {
        return None;
    }
    let sql = std::str::from_utf8(text).ok()?;
    let mut edits: Vec<(std::ops::Range<usize>, String)> = Vec::new();
    let mut stand_in = false;
    for r in refs::scan(sql) {
        if r.kind == RefKind::DeallocateAll {
            deallocate_all(ctx);
            continue;
        }
        if ctx.client.sql.text(&r.name).is_some() {
            continue;
        }
        if let Some(stmt) = protocol_statement(ctx, &r) {
            if ctx.backend.has(stmt.id) {
                edits.push((r.span.clone(), stmt.backend_name.clone()));
                if r.kind == RefKind::Deallocate {
                    forget_deallocated(ctx, &r.name, &stmt);
                }
                continue;
            }
            if r.kind == RefKind::Deallocate && r.statement == 0 {
                // PREPARE then DEALLOCATE a stand-in: the client sees DEALLOCATE succeed and
                // the backend's copy stays for the others. The PREPARE's CommandComplete is
                // swallowed (it comes first: this is the query string's first statement).
                edits.push((r.span.clone(), STAND_IN.to_string()));
                ctx.client.by_name.remove(&r.name);
                stand_in = true;
                continue;
            }
        }
        protect(&r.name, ctx, pipe, to_server);
    }
    if edits.is_empty() && !stand_in {
        return None;
    }
    let mut sql = sql.to_string();
    for (span, name) in edits.iter().rev() {
        sql.replace_range(span.clone(), name);
    }
    if stand_in {
        sql.insert_str(0, &format!("PREPARE {STAND_IN} AS SELECT; "));
        pipe.queue.push_back(Expect::Injected(Request::Execute));
    }
    let mut out = BytesMut::with_capacity(sql.len() + 6);
    let s = begin(&mut out, tag::QUERY);
    put_cstr(&mut out, &sql);
    finish(&mut out, s);
    Some(out)
}

/// What a Parse's SQL needs.
pub(super) enum ParseGuard {
    Pass,
    /// Send this text instead (an unnamed statement naming the client's protocol statements).
    Rewritten(String),
    /// Answer with this error; nothing reaches the backend.
    Refused(ErrorFields),
}

/// A Parse's SQL (`named`: the Parse creates a named statement).
pub(super) fn parse(
    sql: &[u8],
    named: bool,
    ctx: &mut RewriteContext<'_>,
    pipe: &mut Pipeline,
    to_server: &mut BytesMut,
) -> ParseGuard {
    if !may_refer(ctx, sql) {
        return ParseGuard::Pass;
    }
    let Ok(text) = std::str::from_utf8(sql) else {
        return ParseGuard::Pass;
    };
    let mut edits: Vec<(std::ops::Range<usize>, String)> = Vec::new();
    let found = refs::scan(text);
    for r in &found {
        if r.kind == RefKind::DeallocateAll {
            deallocate_all(ctx);
            continue;
        }
        if ctx.client.sql.text(&r.name).is_some() {
            continue;
        }
        if let Some(stmt) = protocol_statement(ctx, r).filter(|_| !named) {
            ensure_prepared(&stmt, ctx, pipe, to_server);
            edits.push((r.span.clone(), stmt.backend_name.clone()));
            if r.kind == RefKind::Deallocate {
                forget_deallocated(ctx, &r.name, &stmt);
            }
            continue;
        }
        if !named {
            // Executed in this batch, on this backend: closing tidepool's copy first suffices.
            protect(&r.name, ctx, pipe, to_server);
        } else if own_id(&r.name).is_some() {
            return ParseGuard::Refused(ErrorFields::error(
                SqlState::new("26000"),
                format!("prepared statement \"{}\" does not exist", r.name),
            ));
        }
    }
    if edits.is_empty() {
        return ParseGuard::Pass;
    }
    let mut text = text.to_string();
    for (span, name) in edits.iter().rev() {
        text.replace_range(span.clone(), name);
    }
    ParseGuard::Rewritten(text)
}

/// The client's protocol statement this mention names (not a `PREPARE`: that creates one).
fn protocol_statement(ctx: &RewriteContext<'_>, r: &NameRef) -> Option<Arc<Statement>> {
    if r.kind == RefKind::Prepare {
        return None;
    }
    ctx.client.by_name.get(&r.name).cloned()
}

/// `DEALLOCATE tp<id>` goes to the backend: the client's name and the backend's copy go. The
/// statement may also survive (the query string may fail before it): closed before it is next
/// prepared there.
fn forget_deallocated(ctx: &mut RewriteContext<'_>, name: &str, stmt: &Arc<Statement>) {
    ctx.client.by_name.remove(name);
    ctx.backend.forget(stmt.id);
    ctx.backend.uncertain.insert(stmt.id);
}

/// `DEALLOCATE ALL` anywhere: the client's names and the backend's statements go (the ones the
/// backend may keep, if the statement does not run, are closed before being prepared again).
pub(super) fn deallocate_all(ctx: &mut RewriteContext<'_>) {
    super::discard_client_statements(ctx.client);
    let ids: Vec<u64> = ctx.backend.prepared.keys().copied().collect();
    ctx.backend.uncertain.extend(ids);
    ctx.backend.clear();
}

/// Makes sure the backend holds no tidepool statement called `name` when the client's SQL
/// gets there.
fn protect(name: &str, ctx: &mut RewriteContext<'_>, pipe: &mut Pipeline, to_server: &mut BytesMut) {
    let Some(id) = own_id(name) else {
        return;
    };
    let held = ctx.backend.prepared.contains_key(&id) || ctx.backend.uncertain.remove(&id);
    if !held {
        return;
    }
    ctx.backend.forget(id);
    write_close(to_server, name);
    pipe.queue
        .push_back(Expect::Injected(Request::Close { evicted: None }));
}

/// A protocol Close of statement `name`.
pub(super) fn write_close(to_server: &mut BytesMut, name: &str) {
    let s = begin(to_server, tag::CLOSE);
    to_server.put_u8(b'S');
    put_cstr(to_server, name);
    finish(to_server, s);
}

/// Queues a made-up error for a refused Parse (the guard's, or 42P05); the client's messages up
/// to Sync are skipped, as PostgreSQL skips them after an error.
pub(super) fn refuse(error: ErrorFields, pipe: &mut Pipeline) {
    pipe.queue.push_back(Expect::Made(Made {
        frame: error.to_bytes(),
        drop_name: None,
        is_error: true,
    }));
    pipe.skipping = true;
}

/// A named statement the client does not have: its name (`None` for the unnamed one, or a
/// body too short to say).
pub(super) fn foreign_name<'a>(read: Option<(&'a str, &[u8])>) -> Option<&'a str> {
    read.map(|(name, _)| name).filter(|name| !name.is_empty())
}

/// Answers a Bind or Describe of a statement the client never prepared as PostgreSQL does.
pub(super) fn refuse_unknown(
    name: &str,
    ctx: &mut RewriteContext<'_>,
    pipe: &mut Pipeline,
    to_client: &mut BytesMut,
) {
    let error = ErrorFields::error(
        SqlState::new("26000"),
        format!("prepared statement \"{name}\" does not exist"),
    );
    refuse(error, pipe);
    super::deliver_made(pipe, ctx.client, to_client);
}

/// Fuzzing: the statement-name scan of `sql` yields names PostgreSQL could look up, at spans
/// that can be replaced in the text.
pub fn fuzz_statement_refs(sql: &str) {
    for r in refs::scan(sql) {
        assert!(r.name.len() <= 63, "{r:?}");
        assert!(
            r.span.end <= sql.len() && sql.is_char_boundary(r.span.start) && sql.is_char_boundary(r.span.end)
        );
        if r.kind != RefKind::DeallocateAll {
            assert!(!r.span.is_empty(), "{r:?}");
        }
    }
    let _ = refs::may_refer(sql.as_bytes());
}
#[cfg(test)]
mod tests {
    use super::own_id;

    #[test]
    fn only_tidepool_spellings_are_its_names() {
        assert_eq!(own_id("tp5"), Some(5));
        assert_eq!(own_id("tp123"), Some(123));
        assert_eq!(own_id("tp05"), None);
        assert_eq!(own_id("TP5"), None);
        assert_eq!(own_id("tp"), None);
        assert_eq!(own_id("tp5x"), None);
    }
}
