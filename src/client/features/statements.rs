//! Named prepared statements in transaction mode.
//!
//! A client's statement names mean nothing to the next backend it gets, so tidepool keeps them:
//! each client maps its names to interned `Statement`s (query text + parameter types, shared by
//! every client that prepares the same thing), and each backend remembers which statements it has
//! prepared, under tidepool's own names (`tp<id>`), in an LRU bounded by `max_prepared_statements`.
//! Parse of a statement the backend already has is answered by tidepool; Bind and Describe of one
//! it lacks get a Parse injected in front. Since answers must reach the client in request order,
//! every request that expects an answer is queued (`Expect`): the server's answers pop the queue,
//! answers to injected requests are swallowed, and made-up answers wait their turn.

use crate::protocol::backend_msg::{begin, finish, put_cstr, read_cstr};
use crate::protocol::{tag, ErrorFields, SqlState};
use bytes::{BufMut, Bytes, BytesMut};
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// What a request expects back, in order.
#[derive(Debug)]
pub enum Expect {
    /// The answer to a client request: forwarded.
    Client(Request),
    /// The answer to a request tidepool injected: swallowed (errors still reach the client).
    Injected(Request),
    /// An answer tidepool made up, sent when it reaches the head of the queue.
    Made(Made),
}

/// A request on the wire, by the answer that completes it.
#[derive(Debug)]
pub enum Request {
    /// ParseComplete. `registered` is the client name to drop and `prepared` the statement to
    /// unmark if the Parse fails or is skipped.
    Parse {
        registered: Option<String>,
        prepared: Option<Arc<Statement>>,
    },
    Bind,
    /// ParameterDescription then RowDescription or NoData; captured for the statement.
    DescribeStatement {
        stmt: Option<Arc<Statement>>,
        captured: Vec<u8>,
    },
    /// RowDescription or NoData.
    DescribePortal,
    /// CommandComplete, EmptyQueryResponse or PortalSuspended.
    Execute,
    /// CloseComplete. For tidepool's own Close of an evicted statement, the statement to count as
    /// prepared again if the Close is skipped after an error.
    Close {
        evicted: Option<Arc<Statement>>,
    },
    /// ReadyForQuery (Sync, Query and FunctionCall alike).
    Ready,
}

/// A made-up answer, with what to do to the client's names once it is delivered.
#[derive(Debug)]
pub struct Made {
    pub frame: Bytes,
    /// Close of a client statement: the name goes when the CloseComplete is delivered (an error
    /// earlier in the batch means PostgreSQL would never have closed it).
    pub drop_name: Option<String>,
    /// Made-up errors make the client's later messages up to Sync skipped, as PostgreSQL does.
    pub is_error: bool,
}

/// Per-attach state of the statement machinery.
#[derive(Debug, Default)]
pub struct Pipeline {
    pub queue: VecDeque<Expect>,
    /// A made-up error was queued: drop client messages until its Sync.
    pub skipping: bool,
    /// Parses written to the backend (the client's unnamed ones, named ones it lacked, and
    /// injected ones), not yet added to SHOW STATS.
    pub server_parses: u32,
}

impl Pipeline {
    /// Empty again for a new backend; the queue keeps its allocation.
    pub fn reset(&mut self) {
        self.queue.clear();
        self.skipping = false;
    }

    /// Drops the first `n` ReadyForQuery expectations after the head (Syncs that a COPY swallowed).
    pub fn forget_ready_after_head(&mut self, mut n: usize) {
        let mut i = 1;
        while n > 0 && i < self.queue.len() {
            if matches!(self.queue[i], Expect::Client(Request::Ready)) {
                self.queue.remove(i);
                n -= 1;
            } else {
                i += 1;
            }
        }
    }

    /// True when the next answer due is one tidepool makes up.
    pub fn has_made_at_head(&self) -> bool {
        matches!(self.queue.front(), Some(Expect::Made(_)))
    }
}

/// Everything the client-side rewrite needs.
pub struct RewriteContext<'a> {
    pub cache: &'a StatementCache,
    pub client: &'a mut ClientStatements,
    pub backend: &'a mut BackendStatements,
    pub capacity: usize,
    /// Trigger words of this frame's SQL text, when the caller scanned it already.
    pub words: Option<crate::client::features::keywords::Words>,
}

fn simple(tag: u8) -> Bytes {
    Bytes::from(vec![tag, 0, 0, 0, 4])
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
                    Some(name) => return guard::refuse_unknown(name, ctx, pipe, to_client),
                    None => to_server.extend_from_slice(frame),
                },
            }
            pipe.queue.push_back(Expect::Client(Request::Bind));
        }
        tag::DESCRIBE => {
            let kind = body.first().copied();
            let stmt = match (kind, read_cstr(body.get(1..).unwrap_or(&[]))) {
                (Some(b'S'), Some((name, _))) if !name.is_empty() => ctx.client.by_name.get(name).cloned(),
                _ => None,
            };
            let stmt_for_capture = stmt.clone();
            if stmt.is_none() && kind == Some(b'S') {
                if let Some(name) = guard::foreign_name(read_cstr(body.get(1..).unwrap_or(&[]))) {
                    return guard::refuse_unknown(name, ctx, pipe, to_client);
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
        }
        tag::CLOSE => match (body.first(), read_cstr(body.get(1..).unwrap_or(&[]))) {
            (Some(b'S'), Some((name, _))) if !name.is_empty() => {
                // The backend's copy stays for other clients; closing an unknown name is not an
                // error in PostgreSQL either.
                pipe.queue.push_back(Expect::Made(Made {
                    frame: simple(b'3'),
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
                discard_client_statements(ctx.client);
                ctx.backend.clear();
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
    let text = read_cstr(definition).map_or("", |(text, _)| text);
    match guard::parse(text.as_bytes(), !name.is_empty(), ctx, pipe, to_server) {
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
        pipe.queue.push_back(Expect::Made(Made {
            frame: error.to_bytes(),
            drop_name: None,
            is_error: true,
        }));
        pipe.skipping = true;
        return;
    }
    let stmt = ctx.cache.intern(definition);
    ctx.client.by_name.insert(name.to_string(), stmt.clone());
    if ctx.backend.has(stmt.id) {
        pipe.queue.push_back(Expect::Made(Made {
            frame: simple(b'1'),
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
fn ensure_prepared(
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
        let s = begin(to_server, tag::CLOSE);
        to_server.put_u8(b'S');
        put_cstr(to_server, &old.backend_name);
        finish(to_server, s);
        pipe.queue
            .push_back(Expect::Injected(Request::Close { evicted: Some(old) }));
    }
}

/// The client dropped all its statements (`DEALLOCATE ALL`, `DISCARD ALL`): they become stale,
/// so that preparing the same texts again makes new statements, resolved anew on every backend.
/// Drivers do this after a ROLLBACK or a DROP (psycopg 3) precisely because a type or table of
/// the same name may come back with another OID: an old statement of the same text, prepared
/// on other backends, would then fail (XX000 `cache lookup failed for type …`).
fn discard_client_statements(client: &mut ClientStatements) {
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

/// Sends made-up answers now at the head of the queue.
pub fn deliver_made(pipe: &mut Pipeline, client: &mut ClientStatements, to_client: &mut BytesMut) {
    while let Some(Expect::Made(_)) = pipe.queue.front() {
        let Some(Expect::Made(made)) = pipe.queue.pop_front() else {
            unreachable!("checked above")
        };
        to_client.extend_from_slice(&made.frame);
        if let Some(name) = made.drop_name {
            client.by_name.remove(&name);
        }
        if made.is_error {
            skip_to_sync(pipe, client, None);
        }
    }
}

/// What to do with one server message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    Forward,
    Swallow,
}

/// Accounts for one server message (by tag) against the queue.
pub fn server_message(
    frame: &[u8],
    pipe: &mut Pipeline,
    client: &mut ClientStatements,
    backend: &mut BackendStatements,
) -> Disposition {
    use crate::protocol::tag as t;
    let tag = frame[0];
    if tag == b't' {
        if let Some(Expect::Client(Request::DescribeStatement { captured, .. })) = pipe.queue.front_mut() {
            captured.extend_from_slice(frame);
        }
    }
    let head_ends = match (pipe.queue.front(), tag) {
        // Asynchronous messages belong to no request.
        (_, t::NOTICE_RESPONSE | t::PARAMETER_STATUS | t::NOTIFICATION_RESPONSE) => false,
        (None, _) => false,
        (Some(Expect::Client(r) | Expect::Injected(r)), _) => match (r, tag) {
            (Request::Ready, t::READY_FOR_QUERY) => true,
            (Request::Ready, _) => false,
            (_, t::ERROR_RESPONSE) => true,
            (Request::Parse { .. }, b'1') | (Request::Bind, b'2') | (Request::Close { .. }, b'3') => true,
            (Request::DescribeStatement { .. } | Request::DescribePortal, b'T' | b'n') => true,
            (Request::Execute, b'C' | b'I' | b's') => true,
            _ => false,
        },
        (Some(Expect::Made(_)), _) => false,
    };
    if !head_ends {
        return Disposition::Forward;
    }
    let mut head = pipe.queue.pop_front().expect("head checked");
    remember_success(&mut head, tag, frame);
    let (injected, request) = match head {
        Expect::Client(r) => (false, r),
        Expect::Injected(r) => (true, r),
        Expect::Made(_) => unreachable!("made-up answers never end by a server message"),
    };
    let mut disposition = if injected {
        Disposition::Swallow
    } else {
        Disposition::Forward
    };
    if tag == t::ERROR_RESPONSE {
        // The client must hear of a failed injected Parse: its own request fails with it.
        disposition = Disposition::Forward;
        rollback(&request, client, backend);
        skip_to_sync(pipe, client, Some(backend));
    }
    disposition
}

/// Records what a successful answer teaches about a statement.
fn remember_success(head: &mut Expect, tag: u8, frame: &[u8]) {
    match head {
        Expect::Client(Request::Parse {
            prepared: Some(stmt), ..
        })
        | Expect::Injected(Request::Parse {
            prepared: Some(stmt), ..
        }) if tag == b'1' => {
            stmt.parsed_ok.store(true, Ordering::Relaxed);
        }
        Expect::Client(Request::DescribeStatement {
            stmt: Some(stmt),
            captured,
        }) if (tag == b'T' || tag == b'n') && !captured.is_empty() => {
            captured.extend_from_slice(frame);
            let _ = stmt.description.set(Bytes::from(std::mem::take(captured)));
        }
        _ => {}
    }
}

/// Answers `Parse`/`Describe` of statements PostgreSQL already accepted, and `Close` of named
/// statements, up to a `Sync`, with no backend at all, so a client preparing between transactions
/// never waits for the pool (a driver that prepares synchronously would otherwise stall the
/// clients sharing its thread) and closing statements needs no node.
/// Returns the bytes consumed from `input`, or `None` when a backend is needed.
pub fn answer_without_backend(
    input: &[u8],
    cache: &StatementCache,
    client: &mut ClientStatements,
    to_client: &mut BytesMut,
) -> Option<usize> {
    let mut pos = 0;
    let mut registrations: Vec<(String, Arc<Statement>)> = Vec::new();
    // Names the batch closes; the client's map forgets them only if the whole batch is answered.
    let mut closes: Vec<String> = Vec::new();
    let mut reply = BytesMut::new();
    let mut parses = 0;
    loop {
        let rest = &input[pos..];
        if rest.len() < 5 {
            return None;
        }
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        if len < 4 || rest.len() < 1 + len {
            return None;
        }
        let body = &rest[5..1 + len];
        match rest[0] {
            tag::PARSE => {
                let (name, definition) = read_cstr(body)?;
                if name.is_empty()
                    || client.by_name.contains_key(name) && !closes.iter().any(|n| n == name)
                    || registrations.iter().any(|(n, _)| n == name)
                {
                    return None;
                }
                let stmt = cache.lookup(definition)?;
                if !stmt.parsed_ok.load(Ordering::Relaxed) {
                    return None;
                }
                registrations.push((name.to_string(), stmt));
                reply.extend_from_slice(&[b'1', 0, 0, 0, 4]);
                parses += 1;
            }
            tag::DESCRIBE if body.first() == Some(&b'S') => {
                let (name, _) = read_cstr(&body[1..])?;
                let stmt = registrations
                    .iter()
                    .find(|(n, _)| n == name)
                    .map(|(_, s)| s)
                    .or_else(|| {
                        client
                            .by_name
                            .get(name)
                            .filter(|_| !closes.iter().any(|n| n == name))
                    })?;
                reply.extend_from_slice(stmt.description.get()?);
            }
            // Closing a named statement only forgets the client's name (the backend's copy
            // stays for other clients), so a batch of Closes, as drivers send when statements
            // are dropped, needs no backend either, and no particular node.
            tag::CLOSE if body.first() == Some(&b'S') => {
                let (name, _) = read_cstr(&body[1..])?;
                if name.is_empty() {
                    return None;
                }
                match registrations.iter().position(|(n, _)| n == name) {
                    Some(i) => drop(registrations.remove(i)),
                    None => closes.push(name.to_string()),
                }
                reply.extend_from_slice(&[b'3', 0, 0, 0, 4]);
            }
            tag::SYNC | tag::FLUSH => {
                pos += 1 + len;
                if rest[0] == tag::SYNC {
                    crate::protocol::backend_msg::ready_for_query(&mut reply, b'I');
                }
                break;
            }
            _ => return None,
        }
        pos += 1 + len;
    }
    for name in &closes {
        client.by_name.remove(name);
    }
    client.by_name.extend(registrations);
    client.answered_parses += parses;
    to_client.extend_from_slice(&reply);
    Some(pos)
}

/// After an error PostgreSQL ignores everything up to Sync: so do the queue and the names.
fn skip_to_sync(
    pipe: &mut Pipeline,
    client: &mut ClientStatements,
    mut backend: Option<&mut BackendStatements>,
) {
    while let Some(head) = pipe.queue.front() {
        if matches!(head, Expect::Client(Request::Ready)) {
            break;
        }
        if let Some(Expect::Client(r) | Expect::Injected(r)) = pipe.queue.pop_front() {
            if let Some(b) = backend.as_deref_mut() {
                rollback(&r, client, b);
            }
        }
    }
}

fn rollback(request: &Request, client: &mut ClientStatements, backend: &mut BackendStatements) {
    match request {
        Request::Parse { registered, prepared } => {
            if let Some(name) = registered {
                client.by_name.remove(name);
            }
            if let Some(stmt) = prepared {
                backend.forget(stmt.id);
            }
        }
        Request::Close { evicted: Some(stmt) } => backend.reinstate(stmt),
        _ => {}
    }
}

mod guard;
mod refs;
mod store;
pub use guard::fuzz_statement_refs;
pub(crate) use refs::statement_tokens;
pub use store::{BackendStatements, ClientStatements, Statement, StatementCache};

#[cfg(test)]
mod tests;
