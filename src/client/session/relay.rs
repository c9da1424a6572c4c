//! Pumps frames between a client and its backend until something needs the session's attention.
//!
//! One future drives both sockets in both directions (like `copy_bidirectional`), so a slow
//! reader on one side never blocks the other direction, and each side's pending output is written
//! with one syscall for all the frames that are ready. Frames pass as raw bytes: only headers are
//! read, plus the bodies of ReadyForQuery, ParameterStatus and ErrorResponse from the server.
//! Rows and COPY data of any size stream through with bounded buffers. All state lives in the
//! structs passed in, so the future can be dropped (by `select!`) at any point without loss.

use crate::backend::{record_parameter, BackendConn, BackendError, BackendState};
use crate::protocol::error::BackendError as ServerError;
use crate::protocol::frame::peek_header;
use crate::protocol::tracker::{Direction, Step, Tracker};
use crate::protocol::{tag, FrameError, TransactionStatus};
use bytes::{Buf, BytesMut};
use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use tokio_util::io::{poll_read_buf, poll_write_buf};

use crate::client::conn::{ClientConn, ClientIoError};
use crate::client::features::keywords::{Word, Words};
use crate::client::features::schema_retry::Retry;
use crate::client::features::statements::{
    self, ClientStatements, Disposition, Pipeline, RewriteContext, StatementCache,
};

/// Stop reading a side while this much output for the other side is waiting to be written.
const HIGH_WATER: usize = 256 * 1024;
/// Read at least this much space at a time.
const READ_RESERVE: usize = 16 * 1024;
/// Server frames are streamed; this only bounds the length field we accept as sane.
const SERVER_FRAME_LIMIT: u32 = 1 << 30;

/// Where the current request/response exchange stands. Lives in the session, not the future.
#[derive(Debug, Default)]
pub struct Exchange {
    /// Requests outstanding, batch open, COPY, transaction status: the protocol's state.
    pub tracker: Tracker,
    /// Bytes of a server frame still to be streamed to the client.
    passthrough: usize,
    /// The quiet state was already reported to the session; cleared by client activity.
    quiet_reported: bool,
    /// Parameters the server reported during the exchange (the client changed them).
    pub reported: Vec<(String, String)>,
    /// What the client's requests may have left on the backend (transaction mode: see
    /// `isolation`); survives `restart` while the client keeps its backend.
    pub isolation: crate::client::features::isolation::Effects,
    /// Whether to judge requests for that (transaction mode only: a session keeps its backend).
    pub track_settings: bool,
    /// A statement may have taken or released something that pins the client to its backend.
    pub pins_may_have_changed: bool,
    /// The client is pinned now (then more kinds of statement may release it).
    pub pinned: bool,
    /// A statement may have prepared or deallocated SQL-level prepared statements.
    pub sql_prepared_may_have_changed: bool,
    /// The client's pid (its BackendKeyData's) to mark the backend's notifier with when a
    /// statement mentioning NOTIFY (or pg_notify) is forwarded: notifications the backend sends
    /// are then this client's (`notify_senders.rs`; transaction mode). 0: no marking.
    pub notify_as: i32,
    /// The client's current batch, kept for a retry after a schema change (transaction mode).
    pub(crate) batch: crate::client::features::schema_retry::BatchCopy,
    /// Trigger words of the Query/Parse frame at the head of the client's input, with that
    /// frame's length, when the session scanned it already (one scan per request, not one per
    /// consumer); the relay takes it for the frame at offset 0.
    pub(crate) head_words: Option<(usize, Words)>,
    /// The databases the request at the head of the client's input needs to itself, found
    /// when the relay stopped before it; then `database_ddl_freed` once the session freed them.
    database_ddl_ahead: Vec<String>,
    pub(crate) database_ddl_freed: bool,
    /// Accounting the session moves to the metrics at each event (plain fields: no atomics
    /// in the poll loop). Requests forwarded (Query, Sync, FunctionCall):
    pub requests: u32,
    /// Parse and Bind messages from the client (SHOW STATS), and Parses forwarded to the
    /// server as they came (statement renaming, when on, counts its own in `Pipeline`).
    pub parses: u32,
    pub binds: u32,
    pub forwarded_parses: u32,
    /// When the first request since the last quiet point was forwarded.
    pub busy_since: Option<tokio::time::Instant>,
    /// Bytes forwarded from the client and to it.
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// SQLSTATE classes of the ErrorResponses relayed (allocates only when errors happen).
    pub error_classes: Vec<[u8; 2]>,
}

impl Exchange {
    /// True when every request was answered and no batch is open.
    pub fn is_quiet(&self) -> bool {
        self.tracker.is_quiet() && self.passthrough == 0
    }

    /// Status of the last ReadyForQuery.
    pub fn status(&self) -> TransactionStatus {
        self.tracker.status()
    }

    /// Marks the current quiet state as already seen by the session.
    /// A fresh exchange for a newly attached backend. Keeps the batch buffer's allocation and
    /// the scan of the request about to be relayed.
    pub fn restart(&mut self) {
        let head_words = self.head_words.take();
        let batch = std::mem::take(&mut self.batch).emptied();
        let isolation = std::mem::take(&mut self.isolation);
        *self = Exchange {
            head_words,
            batch,
            isolation,
            ..Exchange::default()
        };
    }

    pub fn mark_quiet_reported(&mut self) {
        self.quiet_reported = true;
    }

    /// A request that expects a ReadyForQuery was forwarded.
    fn note_request(&mut self) {
        self.requests += 1;
        if self.busy_since.is_none() {
            self.busy_since = Some(tokio::time::Instant::now());
        }
    }
}

/// Why the relay stopped.
#[derive(Debug)]
pub enum RelayEvent {
    /// All requests answered and the server is idle, outside a transaction.
    Idle,
    /// All requests answered, but inside a (possibly failed) transaction.
    IdleInTransaction,
    /// Outside a transaction, every request answered, but the client flushed a batch of only
    /// Parse/Describe/Close (as asyncpg prepares) without a Sync yet: nothing ties it to this
    /// backend, which may go back to the pool once tidepool closes the batch itself.
    IdleUnsynced,
    /// The client sent Terminate.
    ClientTerminated,
    ClientFailed(ClientIoError),
    BackendFailed(BackendError),
    /// The server sent a FATAL error (the frame, not yet forwarded) and is closing.
    BackendFatal(bytes::Bytes),
    /// The batch failed with 0A000 (this error, held back) because a schema change altered a
    /// prepared statement's result; nothing reached the client and the server is idle again.
    SchemaChanged(bytes::Bytes),
    /// The client's next request needs these databases to itself (`database_ddl.rs`); it is
    /// not forwarded until the session sets `database_ddl_freed`.
    DatabaseDdl(Vec<String>),
}

/// Statement renaming for transaction mode (see `statements`).
pub struct Rewrite<'a> {
    pub cache: &'a StatementCache,
    pub client: &'a mut ClientStatements,
    pub pipe: &'a mut Pipeline,
    pub capacity: usize,
}

/// Runs until an event; cancel-safe.
pub async fn relay(
    client: &mut ClientConn,
    backend: &mut BackendConn,
    ex: &mut Exchange,
    mut rewrite: Option<Rewrite<'_>>,
) -> RelayEvent {
    poll_fn(|cx| poll_relay(cx, client, backend, ex, rewrite.as_mut())).await
}

pub(crate) fn poll_relay(
    cx: &mut Context<'_>,
    client: &mut ClientConn,
    backend: &mut BackendConn,
    ex: &mut Exchange,
    mut rewrite: Option<&mut Rewrite<'_>>,
) -> Poll<RelayEvent> {
    // Every socket poll costs (readiness check, waker registration): the loop goes round again
    // only when a read brought bytes or a write left some behind, not for a write that finished
    // (the reads below it in the same round already saw what it may have caused).
    loop {
        let mut again = false;

        // Client-bound bytes first: they free the server to send more.
        if !client.wbuf.is_empty() {
            match poll_write_buf(Pin::new(&mut client.stream), cx, &mut client.wbuf) {
                Poll::Ready(Ok(0)) => return Poll::Ready(RelayEvent::ClientFailed(ClientIoError::Closed)),
                Poll::Ready(Ok(_)) => again |= !client.wbuf.is_empty(),
                Poll::Ready(Err(e)) => return Poll::Ready(RelayEvent::ClientFailed(e.into())),
                Poll::Pending => {}
            }
        }
        // Frames already buffered (read before the backend was attached, or held back by a
        // full server buffer) join the server-bound bytes before the write below.
        if backend.wbuf.len() < HIGH_WATER {
            if let Some(event) = forward_client(client, backend, ex, rewrite.as_deref_mut()) {
                return Poll::Ready(event);
            }
        }
        if !backend.wbuf.is_empty() {
            match poll_write_buf(Pin::new(&mut backend.stream), cx, &mut backend.wbuf) {
                Poll::Ready(Ok(0)) => return Poll::Ready(RelayEvent::BackendFailed(closed(backend))),
                Poll::Ready(Ok(_)) => again |= !backend.wbuf.is_empty(),
                Poll::Ready(Err(e)) => return Poll::Ready(RelayEvent::BackendFailed(io(backend, e))),
                Poll::Pending => {}
            }
        }
        // TLS keeps records the socket did not take; push them out (plain TCP: nothing to do).
        if client.stream.is_tls() {
            if let Poll::Ready(Err(e)) = Pin::new(&mut client.stream).poll_flush(cx) {
                return Poll::Ready(RelayEvent::ClientFailed(e.into()));
            }
        }
        if backend.stream.is_tls() {
            if let Poll::Ready(Err(e)) = Pin::new(&mut backend.stream).poll_flush(cx) {
                return Poll::Ready(RelayEvent::BackendFailed(io(backend, e)));
            }
        }

        if client.wbuf.len() < HIGH_WATER {
            if backend.rbuf.capacity() - backend.rbuf.len() < READ_RESERVE / 4 {
                backend.rbuf.reserve(READ_RESERVE);
            }
            match poll_read_buf(Pin::new(&mut backend.stream), cx, &mut backend.rbuf) {
                Poll::Ready(Ok(0)) => return Poll::Ready(RelayEvent::BackendFailed(closed(backend))),
                Poll::Ready(Ok(_)) => {
                    again = true;
                    if let Some(event) = scan_server(backend, client, ex, rewrite.as_deref_mut()) {
                        return Poll::Ready(event);
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(RelayEvent::BackendFailed(io(backend, e))),
                Poll::Pending => {}
            }
        }

        // The answer is complete and the client sent nothing more: the session takes over
        // (it reads the client itself); no poll of the client socket here.
        let hand_over =
            !ex.quiet_reported && ex.is_quiet() && backend.wbuf.is_empty() && client.rbuf.is_empty();
        if backend.wbuf.len() < HIGH_WATER && !hand_over {
            crate::client::conn::make_read_room(&mut client.rbuf, READ_RESERVE);
            match poll_read_buf(Pin::new(&mut client.stream), cx, &mut client.rbuf) {
                Poll::Ready(Ok(0)) => return Poll::Ready(RelayEvent::ClientFailed(ClientIoError::Closed)),
                Poll::Ready(Ok(_)) => {
                    again = true;
                    if let Some(event) = forward_client(client, backend, ex, rewrite.as_deref_mut()) {
                        return Poll::Ready(event);
                    }
                }
                Poll::Ready(Err(e)) => return Poll::Ready(RelayEvent::ClientFailed(e.into())),
                Poll::Pending => {}
            }
        }

        let statement_only_batch = rewrite.as_deref().is_some_and(|rw| rw.pipe.queue.is_empty())
            && ex.tracker.statement_only_batch()
            && ex.passthrough == 0;
        if statement_only_batch && backend.wbuf.is_empty() && !ex.quiet_reported {
            ex.quiet_reported = true;
            return Poll::Ready(RelayEvent::IdleUnsynced);
        }
        if ex.is_quiet() && backend.wbuf.is_empty() && !ex.quiet_reported {
            ex.quiet_reported = true;
            return Poll::Ready(match ex.tracker.status() {
                TransactionStatus::Idle => RelayEvent::Idle,
                _ => RelayEvent::IdleInTransaction,
            });
        }
        if !again {
            return Poll::Pending;
        }
    }
}

fn closed(backend: &BackendConn) -> BackendError {
    BackendError::Closed {
        addr: backend.addr.to_string(),
    }
}

fn io(backend: &BackendConn, source: std::io::Error) -> BackendError {
    BackendError::Io {
        addr: backend.addr.to_string(),
        source,
    }
}

/// Moves every whole client frame to the server's output, counting requests. Returns true on
/// Terminate (not forwarded: the server connection outlives the client).
/// Forwards the whole client frames at hand; the event that stops the relay, if one does.
fn forward_client(
    client: &mut ClientConn,
    backend: &mut BackendConn,
    ex: &mut Exchange,
    rewrite: Option<&mut Rewrite<'_>>,
) -> Option<RelayEvent> {
    match scan_client(client, backend, ex, rewrite) {
        Ok(true) => return Some(RelayEvent::ClientTerminated),
        Ok(false) => {}
        Err(e) => return Some(RelayEvent::ClientFailed(e.into())),
    }
    // A statement that needs its database to itself waits for the session (database_ddl.rs).
    (!ex.database_ddl_ahead.is_empty())
        .then(|| RelayEvent::DatabaseDdl(std::mem::take(&mut ex.database_ddl_ahead)))
}

fn scan_client(
    client: &mut ClientConn,
    backend: &mut BackendConn,
    ex: &mut Exchange,
    mut rewrite: Option<&mut Rewrite<'_>>,
) -> Result<bool, FrameError> {
    let limit = client.decoder.max_len();
    let buf = &client.rbuf[..];
    let mut pos = 0;
    let mut copied = 0;
    let mut terminated = false;
    while let Some((tag, total)) = peek_header(&buf[pos..], limit)? {
        if buf.len() - pos < total {
            break;
        }
        let sql_request = matches!(tag, tag::QUERY | tag::PARSE);
        // The trigger words of this Query/Parse (transaction mode scans them for the isolation
        // checks anyway); the session's scan of the head request serves when it is this frame.
        let mut words = None;
        if ex.track_settings && sql_request {
            words = Some(match ex.head_words.take() {
                Some((len, words)) if pos == 0 && len == total => words,
                _ => Words::scan(sql_start(tag, &buf[pos + 5..pos + total])),
            });
        }
        // Without the word DATABASE it cannot be CREATE/DROP/ALTER DATABASE: no second look.
        let may_be_database_ddl = sql_request && words.is_none_or(|w| w.has(Word::Database));
        if may_be_database_ddl && !(pos == 0 && std::mem::take(&mut ex.database_ddl_freed)) {
            let databases = crate::client::features::database_ddl::databases_needing_exclusive_use(
                &buf[pos..pos + total],
            );
            if !databases.is_empty() {
                // Not forwarded before the session freed them (frames ahead of it go now).
                ex.database_ddl_ahead = databases;
                break;
            }
        }
        if ex.track_settings && tag != tag::TERMINATE {
            // Transaction mode keeps small batches for a retry after a schema change.
            let starts = ex.tracker.between_requests();
            let idle = ex.tracker.is_idle();
            ex.batch.client_frame(&buf[pos..pos + total], starts, idle);
        }
        let step = ex.tracker.step(Direction::Frontend, tag, &[]);
        let ignored_by_server = step == Step::IgnoredByServer;
        match step {
            Step::Terminate => {
                terminated = true;
                break;
            }
            Step::Request => ex.note_request(),
            _ if ignored_by_server => {}
            _ => match tag {
                tag::BIND => ex.binds += 1,
                tag::PARSE => {
                    ex.parses += 1;
                    if rewrite.is_none() {
                        ex.forwarded_parses += 1;
                    }
                }
                _ => {}
            },
        }
        if ex.track_settings && ex.isolation.verdict != crate::client::features::isolation::Verdict::Opaque {
            judge_frame(
                tag,
                &buf[pos + 5..pos + total],
                rewrite.as_deref(),
                &mut ex.isolation,
            );
        }
        if let Some(scanned) = words {
            note_setting_changes(scanned, ex, backend);
        }
        if let Some(rw) = rewrite.as_deref_mut().filter(|_| !ignored_by_server) {
            // Statement names are per client: rename, inject or answer (transaction mode).
            backend.wbuf.extend_from_slice(&buf[copied..pos]);
            let mut ctx = RewriteContext {
                cache: rw.cache,
                client: rw.client,
                backend: &mut backend.statements,
                capacity: rw.capacity,
                words,
            };
            let answers_before = client.wbuf.len();
            statements::client_frame(
                &buf[pos..pos + total],
                &mut ctx,
                rw.pipe,
                &mut backend.wbuf,
                &mut client.wbuf,
            );
            if client.wbuf.len() != answers_before {
                if tag == tag::PARSE && client.wbuf[answers_before..] == *b"1\0\0\0\x04" {
                    // Its ParseComplete, made up for a statement the backend has already.
                    ex.batch.parse_answered_locally(total);
                } else {
                    ex.batch.mark_answered();
                }
            }
            copied = pos + total;
        }
        pos += total;
    }
    if pos > 0 {
        ex.bytes_in += pos as u64;
        backend.wbuf.extend_from_slice(&buf[copied..pos]);
        client.rbuf.advance(pos);
        ex.quiet_reported = false;
        backend.set_state(BackendState::Busy);
    }
    if terminated {
        client.rbuf.clear();
    } else if let Ok(Some((_, total))) = peek_header(&client.rbuf, limit) {
        // Make room for the whole next frame so one read can complete it.
        client.rbuf.reserve(total.saturating_sub(client.rbuf.len()));
    }
    Ok(terminated)
}

/// Judges what a client frame may leave on the backend (see `isolation`): a Query's text, a
/// Bind's statement (the unnamed one as last parsed, a named one by its text), a FunctionCall.
fn judge_frame(
    tag: u8,
    body: &[u8],
    rewrite: Option<&Rewrite<'_>>,
    effects: &mut crate::client::features::isolation::Effects,
) {
    use crate::client::features::isolation::Verdict;
    match tag {
        tag::QUERY => {
            effects.judge_text(body);
        }
        tag::PARSE if body.first() == Some(&0) => {
            // The unnamed statement runs only at a later Bind: judged now, counted then.
            let sql = query_text(tag, body);
            effects.unnamed = effects.judge(sql);
            if effects.unnamed > Verdict::Clean {
                // Names (and a LOAD) count now, the verdict when a Bind runs it.
                let verdict = std::mem::replace(&mut effects.verdict, Verdict::Clean);
                effects.raise(effects.unnamed, sql);
                effects.verdict = verdict;
            }
        }
        tag::BIND => {
            let statement = body
                .iter()
                .position(|&b| b == 0)
                .map(|end| &body[end + 1..])
                .and_then(|rest| rest.iter().position(|&b| b == 0).map(|end| &rest[..end]));
            match statement {
                Some([]) => effects.verdict = effects.verdict.max(effects.unnamed),
                Some(name) => {
                    let known = rewrite.and_then(|rw| {
                        let name = std::str::from_utf8(name).ok()?;
                        rw.client.by_name.get(name).cloned()
                    });
                    match known {
                        Some(stmt) => {
                            let v = match &effects.hazards {
                                Some(hazards) => stmt.verdict(hazards),
                                None => Verdict::Opaque,
                            };
                            if v > Verdict::Clean {
                                effects.raise(v, stmt.query().as_bytes());
                            }
                        }
                        // Not renamed by us: nothing says what it runs.
                        None => effects.verdict = Verdict::Opaque,
                    }
                }
                None => effects.verdict = Verdict::Opaque,
            }
        }
        tag::FUNCTION_CALL => effects.verdict = Verdict::Opaque,
        _ => {}
    }
}

/// Records whether a Query or Parse may pin the client to its backend or change its SQL-level
/// prepared statements.
fn note_setting_changes(words: Words, ex: &mut Exchange, backend: &BackendConn) {
    if words.is_empty() {
        return;
    }
    ex.pins_may_have_changed |= crate::client::features::pinning::may_change_pins(words, ex.pinned);
    ex.sql_prepared_may_have_changed |= crate::client::features::sql_prepared::may_change(words);
    if ex.notify_as != 0 && words.has(crate::client::features::keywords::Word::Notify) {
        if let Some(users) = &backend.users {
            users.mark_notifier(ex.notify_as);
        }
    }
}

/// Where the SQL text of a Query or Parse body starts (after a Parse's statement name), up to
/// the end of the body: enough for `Words::scan`, which stops at the text's NUL.
pub(crate) fn sql_start(tag: u8, body: &[u8]) -> &[u8] {
    if tag != tag::PARSE {
        return body;
    }
    match body.iter().position(|&b| b == 0) {
        Some(name_end) => &body[name_end + 1..],
        None => &[],
    }
}

/// The SQL text of a Query or Parse body, up to its NUL (empty if there is none to find).
pub(crate) fn query_text(tag: u8, body: &[u8]) -> &[u8] {
    let sql = sql_start(tag, body);
    &sql[..sql.iter().position(|&b| b == 0).unwrap_or(sql.len())]
}

/// Streams server bytes to the client's output, watching ReadyForQuery, ParameterStatus and
/// ErrorResponse frames (and, with statement rewriting, every message that ends a request).
fn scan_server(
    backend: &mut BackendConn,
    client: &mut ClientConn,
    ex: &mut Exchange,
    mut rewrite: Option<&mut Rewrite<'_>>,
) -> Option<RelayEvent> {
    // A pinned client may LISTEN on its own backend: its own notifications carry its pid.
    let own_pids = ex.pinned && client.key_pid.is_some_and(|pid| pid != backend.key.pid);
    if own_pids {
        let (start, pid) = (ex.passthrough, client.key_pid.unwrap_or_default());
        crate::notify::rewrite_own_pids(&mut backend.rbuf, start, backend.key.pid, pid);
    }
    let buf = &backend.rbuf[..];
    if client.wbuf.capacity() == 0 {
        // A cheap first allocation; answers that need more grow it.
        client
            .wbuf
            .reserve(crate::client::conn::FIRST_BUFFER.max(buf.len()));
    }
    let mut pos = 0;
    let mut copied = 0;
    let mut event = None;
    if ex.passthrough > 0 {
        let n = ex.passthrough.min(buf.len());
        pos = n;
        ex.passthrough -= n;
    }
    while ex.passthrough == 0 {
        let (tag, total) = match peek_header(&buf[pos..], SERVER_FRAME_LIMIT) {
            Ok(Some(header)) => header,
            Ok(None) => break,
            Err(source) => {
                event = Some(RelayEvent::BackendFailed(BackendError::Protocol {
                    addr: backend.addr.to_string(),
                    source,
                }));
                break;
            }
        };
        let watched = matches!(
            tag,
            tag::READY_FOR_QUERY
                | tag::PARAMETER_STATUS
                | tag::ERROR_RESPONSE
                | tag::COPY_IN_RESPONSE
                | tag::COPY_OUT_RESPONSE
                | tag::COPY_BOTH_RESPONSE
                | tag::COPY_DONE
        ) || (rewrite.is_some()
            && (total == 5 || matches!(tag, tag::COMMAND_COMPLETE | tag::ROW_DESCRIPTION | b't')))
            || (own_pids && tag == tag::NOTIFICATION_RESPONSE);
        if !watched {
            // Rows, COPY data and the like end no request: stream them.
            ex.batch.mark_answered();
            let n = total.min(buf.len() - pos);
            pos += n;
            ex.passthrough = total - n;
            continue;
        }
        if buf.len() - pos < total {
            break;
        }
        let body = &buf[pos + 5..pos + total];
        match ex.tracker.step(Direction::Backend, tag, body) {
            Step::Ready { status, quiet: true } if backend.state != BackendState::Broken => {
                backend.state = BackendState::Ready(status);
            }
            Step::BadReady => backend.state = BackendState::Broken,
            Step::CopyIn { swallowed } => {
                // Syncs sent between the Execute and its COPY data went into the COPY.
                if let Some(rw) = rewrite.as_deref_mut().filter(|_| swallowed > 0) {
                    rw.pipe.forget_ready_after_head(swallowed as usize);
                }
            }
            _ if tag == tag::PARAMETER_STATUS => {
                if let Some((name, value)) = record_parameter(&mut backend.reported, body) {
                    ex.reported.push((name.to_string(), value.to_string()));
                }
            }
            Step::Error => {
                if let Some(class) = crate::metrics::class_of(body) {
                    ex.error_classes.push(class);
                }
                let frame = crate::protocol::Frame {
                    tag,
                    body: bytes::Bytes::copy_from_slice(body),
                };
                if ServerError::parse(&frame).is_fatal() {
                    // Forward what came before; the session decides what the client sees.
                    client.wbuf.extend_from_slice(&buf[copied..pos]);
                    backend.rbuf.advance(pos + total);
                    backend.state = BackendState::Broken;
                    let mut whole = BytesMut::with_capacity(total);
                    frame.write_to(&mut whole);
                    return Some(RelayEvent::BackendFatal(whole.freeze()));
                }
            }
            _ => {}
        }
        let retry = if ex.track_settings {
            ex.batch.server_frame(&buf[pos..pos + total], ex.tracker.status())
        } else {
            Retry::Pass
        };
        let mut swallow = matches!(retry, Retry::Hold | Retry::Replay(_));
        if let Retry::Release(held) = &retry {
            client.wbuf.extend_from_slice(&buf[copied..pos]);
            client.wbuf.extend_from_slice(held);
            copied = pos;
        }
        if let Some(rw) = rewrite.as_deref_mut() {
            let disposition = statements::server_message(
                &buf[pos..pos + total],
                rw.pipe,
                rw.client,
                &mut backend.statements,
            );
            swallow |= disposition == Disposition::Swallow;
            if swallow || rw.pipe.has_made_at_head() {
                let end = if swallow { pos } else { pos + total };
                client.wbuf.extend_from_slice(&buf[copied..end]);
                copied = pos + total;
                if rw.pipe.has_made_at_head() {
                    ex.batch.mark_answered();
                }
                statements::deliver_made(rw.pipe, rw.client, &mut client.wbuf);
            }
        } else if swallow {
            client.wbuf.extend_from_slice(&buf[copied..pos]);
            copied = pos + total;
        }
        pos += total;
        if let Retry::Replay(held) = retry {
            event = Some(RelayEvent::SchemaChanged(held));
            break;
        }
    }
    client.wbuf.extend_from_slice(&buf[copied..pos]);
    backend.rbuf.advance(pos);
    ex.bytes_out += pos as u64;
    event
}
