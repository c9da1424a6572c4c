//! The client side of statement renaming: each client frame forwarded renamed, answered, or
//! preceded by what the backend lacks.

use super::{
    deliver_made, guard, BackendStatements, ClientStatements, Expect, Made, Pipeline, Request, Statement,
    StatementCache,
};
use crate::protocol::backend_msg::{begin, finish, put_cstr, read_cstr, CLOSE_COMPLETE, PARSE_COMPLETE};
use crate::protocol::{tag, ErrorFields, SqlState};
use bytes::{BufMut, Bytes, BytesMut};
use std::sync::Arc;

/// Everything the client-side rewrite needs.
pub struct RewriteContext<'a> {
    pub cache: &'a StatementCache,
    pub client: &'a mut ClientStatements,
    pub backend: &'a mut BackendStatements,
    pub capacity: usize,
    /// Trigger words of this frame's SQL text, when the caller scanned it already.
    pub words: Option<crate::client::features::keywords::Words>,
}

/// Handles one whole client frame in transaction mode: forwards it (renamed where needed) to
/// `to_server`, injects what the backend lacks, queues expectations. Made-up answers at the head
/// of the queue go to `to_client` at once.
pub fn client_frame(
    frame: &[u8],
    ctx: &mut RewriteContext<'_>,
    pipe: &mut Pipeline,
    to_server: &mut BytesMut,
    to_client: &mut BytesMut,
) {
    let tag = frame[0];
    let body = &frame[5..];
    if pipe.skipping {
        if tag != tag::SYNC {
            return;
        }
        pipe.skipping = false;
    }
    match tag {
        tag::PARSE => parse(frame, body, ctx, pipe, to_server),
        tag::BIND => {
            if !bind(frame, body, ctx, pipe, to_server, to_client) {
                return;
            }
        }
        tag::DESCRIBE => {
            if !describe(frame, body, ctx, pipe, to_server, to_client) {
                return;
            }
        }
        tag::CLOSE => match (body.first(), read_cstr(body.get(1..).unwrap_or(&[]))) {
            (Some(b'S'), Some((name, _))) if !name.is_empty() => {
                // The backend's copy stays for other clients; closing an unknown name is not an
                // error in PostgreSQL either.
                pipe.queue.push_back(Expect::Made(Made {
                    frame: Bytes::from_static(&CLOSE_COMPLETE),
                    drop_name: Some(name.to_string()),
                    is_error: false,
                }));
            }
            _ => {
                to_server.extend_from_slice(frame);
                pipe.queue
                    .push_back(Expect::Client(Request::Close { evicted: None }));
            }
        },
        tag::EXECUTE => {
            to_server.extend_from_slice(frame);
            pipe.queue.push_back(Expect::Client(Request::Execute));
        }
        tag::SYNC | tag::QUERY | tag::FUNCTION_CALL => {
            if tag == tag::QUERY && clears_statements(body, ctx.words) {
                // The backend's ids stay "uncertain", not gone: PostgreSQL may refuse the
                // command (in a transaction block, 25001) and keep them.
                guard::deallocate_all(ctx);
            }
            match (tag == tag::QUERY)
                .then(|| guard::query(frame, ctx, pipe, to_server))
                .flatten()
            {
                Some(rewritten) => to_server.extend_from_slice(&rewritten),
                None => to_server.extend_from_slice(frame),
            }
            pipe.queue.push_back(Expect::Client(Request::Ready));
        }
        // Flush, COPY data and anything else: no answer of their own.
        _ => to_server.extend_from_slice(frame),
    }
    deliver_made(pipe, ctx.client, to_client);
}

/// Bind, renamed when it names one of the client's statements (a Parse injected first if the
/// backend lacks it). False when refused (a name that is not the client's).
fn bind(
    frame: &[u8],
    body: &[u8],
    ctx: &mut RewriteContext<'_>,
    pipe: &mut Pipeline,
    to_server: &mut BytesMut,
    to_client: &mut BytesMut,
) -> bool {
    let renamed = read_cstr(body).and_then(|(portal, rest)| {
        let (name, tail) = read_cstr(rest)?;
        let stmt = (!name.is_empty()).then(|| ctx.client.by_name.get(name).cloned())??;
        Some((portal.to_string(), stmt, tail))
    });
    match renamed {
        Some((portal, stmt, tail)) => {
            ensure_prepared(&stmt, ctx, pipe, to_server);
            let s = begin(to_server, tag::BIND);
            put_cstr(to_server, &portal);
            put_cstr(to_server, &stmt.backend_name);
            to_server.extend_from_slice(tail);
            finish(to_server, s);
        }
        None => match guard::foreign_name(read_cstr(body).and_then(|(_, rest)| read_cstr(rest))) {
            // Not the client's: never sent (it could be one of tidepool's names).
            Some(name) => {
                guard::refuse_unknown(name, ctx, pipe, to_client);
                return false;
            }
            None => to_server.extend_from_slice(frame),
        },
    }
    pipe.queue.push_back(Expect::Client(Request::Bind));
    true
}

/// Describe, renamed like Bind; a statement's description is captured for answering later
/// Describes without a backend. False when refused.
fn describe(
    frame: &[u8],
    body: &[u8],
    ctx: &mut RewriteContext<'_>,
    pipe: &mut Pipeline,
    to_server: &mut BytesMut,
    to_client: &mut BytesMut,
) -> bool {
    let kind = body.first().copied();
    let stmt = match (kind, read_cstr(body.get(1..).unwrap_or(&[]))) {
        (Some(b'S'), Some((name, _))) if !name.is_empty() => ctx.client.by_name.get(name).cloned(),
        _ => None,
    };
    let stmt_for_capture = stmt.clone();
    if stmt.is_none() && kind == Some(b'S') {
        if let Some(name) = guard::foreign_name(read_cstr(body.get(1..).unwrap_or(&[]))) {
            guard::refuse_unknown(name, ctx, pipe, to_client);
            return false;
        }
    }
    match stmt {
        Some(stmt) => {
            ensure_prepared(&stmt, ctx, pipe, to_server);
            let s = begin(to_server, tag::DESCRIBE);
            to_server.put_u8(b'S');
            put_cstr(to_server, &stmt.backend_name);
            finish(to_server, s);
        }
        None => to_server.extend_from_slice(frame),
    }
    let request = if kind == Some(b'S') {
        Request::DescribeStatement {
            stmt: stmt_for_capture,
            captured: Vec::new(),
        }
    } else {
        Request::DescribePortal
    };
    pipe.queue.push_back(Expect::Client(request));
    true
}

fn parse(
    frame: &[u8],
    body: &[u8],
    ctx: &mut RewriteContext<'_>,
    pipe: &mut Pipeline,
    to_server: &mut BytesMut,
) {
    let Some((name, definition)) = read_cstr(body) else {
        // Malformed: let PostgreSQL say so.
        to_server.extend_from_slice(frame);
        pipe.server_parses += 1;
        pipe.queue.push_back(Expect::Client(Request::Parse {
            registered: None,
            prepared: None,
        }));
        return;
    };
    // Bytes: the guard reads UTF-8 only when the text may name a SQL-level statement.
    let text = definition
        .iter()
        .position(|&b| b == 0)
        .map_or(&[][..], |end| &definition[..end]);
    match guard::parse(text, !name.is_empty(), ctx, pipe, to_server) {
        guard::ParseGuard::Pass => {}
        guard::ParseGuard::Refused(error) => return guard::refuse(error, pipe),
        guard::ParseGuard::Rewritten(text) => {
            // Only unnamed statements are rewritten: the text is this Parse's alone.
            let params = read_cstr(definition).map_or(&[][..], |(_, rest)| rest);
            let s = begin(to_server, tag::PARSE);
            put_cstr(to_server, "");
            put_cstr(to_server, &text);
            to_server.extend_from_slice(params);
            finish(to_server, s);
            pipe.server_parses += 1;
            pipe.queue.push_back(Expect::Client(Request::Parse {
                registered: None,
                prepared: None,
            }));
            return;
        }
    }
    if name.is_empty() {
        to_server.extend_from_slice(frame);
        pipe.server_parses += 1;
        pipe.queue.push_back(Expect::Client(Request::Parse {
            registered: None,
            prepared: None,
        }));
        return;
    }
    if ctx.client.by_name.contains_key(name) {
        let error = ErrorFields::error(
            SqlState::new("42P05"),
            format!("prepared statement \"{name}\" already exists"),
        );
        return guard::refuse(error, pipe);
    }
    let stmt = ctx.cache.intern(definition);
    ctx.client.by_name.insert(name.to_string(), stmt.clone());
    if ctx.backend.has(stmt.id) {
        pipe.queue.push_back(Expect::Made(Made {
            frame: Bytes::from_static(&PARSE_COMPLETE),
            drop_name: None,
            is_error: false,
        }));
        return;
    }
    add_to_backend(&stmt, ctx, pipe, to_server);
    close_excess(ctx, pipe, to_server);
    stmt.write_parse(to_server);
    pipe.server_parses += 1;
    pipe.queue.push_back(Expect::Client(Request::Parse {
        registered: Some(name.to_string()),
        prepared: Some(stmt),
    }));
}

/// Records `stmt` as prepared on the backend, first closing a copy a client's `DEALLOCATE` may
/// have left there (a Close of a missing statement is no error).
fn add_to_backend(
    stmt: &Arc<Statement>,
    ctx: &mut RewriteContext<'_>,
    pipe: &mut Pipeline,
    to_server: &mut BytesMut,
) {
    if !ctx.backend.uncertain.is_empty() && ctx.backend.uncertain.remove(&stmt.id) {
        guard::write_close(to_server, &stmt.backend_name);
        pipe.queue
            .push_back(Expect::Injected(Request::Close { evicted: None }));
    }
    ctx.backend.add(stmt);
}

/// Injects a Parse if the backend lacks the statement.
pub(crate) fn ensure_prepared(
    stmt: &Arc<Statement>,
    ctx: &mut RewriteContext<'_>,
    pipe: &mut Pipeline,
    to_server: &mut BytesMut,
) {
    if ctx.backend.has(stmt.id) {
        return;
    }
    add_to_backend(stmt, ctx, pipe, to_server);
    close_excess(ctx, pipe, to_server);
    stmt.write_parse(to_server);
    pipe.server_parses += 1;
    pipe.queue.push_back(Expect::Injected(Request::Parse {
        registered: None,
        prepared: Some(stmt.clone()),
    }));
}

/// Closes least recently used statements until the backend holds at most `capacity`: one
/// after an add, or more when Closes that never ran (the batch failed before them) put their
/// statements back.
fn close_excess(ctx: &mut RewriteContext<'_>, pipe: &mut Pipeline, to_server: &mut BytesMut) {
    while let Some(old) = ctx.backend.take_excess(ctx.capacity) {
        guard::write_close(to_server, &old.backend_name);
        pipe.queue
            .push_back(Expect::Injected(Request::Close { evicted: Some(old) }));
    }
}

/// The client dropped all its statements (`DEALLOCATE ALL`, `DISCARD ALL`): they become stale,
/// so that preparing the same texts again makes new statements, resolved anew on every backend.
/// Drivers do this after a ROLLBACK or a DROP (psycopg 3) precisely because a type or table of
/// the same name may come back with another OID: an old statement of the same text, prepared
/// on other backends, would then fail (XX000 `cache lookup failed for type …`).
pub(crate) fn discard_client_statements(client: &mut ClientStatements) {
    for (_, stmt) in client.by_name.drain() {
        stmt.mark_stale();
    }
}

/// DISCARD ALL and DEALLOCATE ALL drop every prepared statement of the session.
fn clears_statements(body: &[u8], words: Option<crate::client::features::keywords::Words>) -> bool {
    // Every Query passes here: look closer only when the words may be there (the words of the
    // whole text are a superset of those of its first 64 bytes).
    let words =
        words.unwrap_or_else(|| crate::client::features::keywords::Words::scan(&body[..body.len().min(64)]));
    if !words.any(&[
        crate::client::features::keywords::Word::Discard,
        crate::client::features::keywords::Word::Deallocate,
    ]) {
        return false;
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(64)]).to_ascii_uppercase();
    let words: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || c == ';' || c == '\0')
        .filter(|w| !w.is_empty())
        .collect();
    matches!(
        words.as_slice(),
        ["DISCARD", "ALL", ..] | ["DEALLOCATE", "ALL", ..] | ["DEALLOCATE", "PREPARE", "ALL", ..]
    )
}
