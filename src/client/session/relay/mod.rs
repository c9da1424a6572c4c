//! Pumps frames between a client and its backend until something needs the session's attention.
//!
//! One future drives both sockets in both directions (like `copy_bidirectional`), so a slow
//! reader on one side never blocks the other direction, and each side's pending output is written
//! with one syscall for all the frames that are ready. Frames pass as raw bytes: only headers are
//! read, plus the few server bodies the session must know (`server_side.rs` lists them).
//! Rows and COPY data of any size stream through with bounded buffers. All state lives in the
//! structs passed in, so the future can be dropped (by `select!`) at any point without loss.

use crate::backend::{BackendConn, BackendError};
use crate::client::conn::{ClientConn, ClientIoError};
use crate::client::features::statements::{ClientStatements, Pipeline, StatementCache};
use crate::protocol::TransactionStatus;
use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::AsyncWrite;
use tokio_util::io::{poll_read_buf, poll_write_buf};

mod client_side;
mod exchange;
mod interceptors;
mod server_side;
pub use exchange::Exchange;
pub(crate) use interceptors::sql_start;

/// Stop reading a side while this much output for the other side is waiting to be written.
const HIGH_WATER: usize = 256 * 1024;
/// Read at least this much space at a time.
const READ_RESERVE: usize = 16 * 1024;

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

/// Runs until an event; cancel-safe. A plain future of the references (not an async fn, whose
/// future would keep its arguments twice): it is part of every client's task.
pub fn relay<'a>(
    client: &'a mut ClientConn,
    backend: &'a mut BackendConn,
    ex: &'a mut Exchange,
    mut rewrite: Option<Rewrite<'a>>,
) -> impl std::future::Future<Output = RelayEvent> + 'a {
    poll_fn(move |cx| poll_relay(cx, client, backend, ex, rewrite.as_mut()))
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
        if let Some(event) = write_client(cx, client, &mut again) {
            return Poll::Ready(event);
        }
        // Frames already buffered (read before the backend was attached, or held back by a
        // full server buffer) join the server-bound bytes before the write below.
        if backend.wbuf.len() < HIGH_WATER {
            if let Some(event) = client_side::forward(client, backend, ex, rewrite.as_deref_mut()) {
                return Poll::Ready(event);
            }
        }
        if let Some(event) = write_backend(cx, backend, &mut again) {
            return Poll::Ready(event);
        }
        if let Some(event) = flush_tls(cx, client, backend) {
            return Poll::Ready(event);
        }
        if client.wbuf.len() < HIGH_WATER {
            if let Some(event) = read_backend(cx, client, backend, ex, rewrite.as_deref_mut(), &mut again) {
                return Poll::Ready(event);
            }
        }
        // The answer is complete and the client sent nothing more: the session takes over
        // (it reads the client itself); no poll of the client socket here.
        let hand_over =
            !ex.quiet_reported && ex.is_quiet() && backend.wbuf.is_empty() && client.rbuf.is_empty();
        if backend.wbuf.len() < HIGH_WATER && !hand_over {
            if let Some(event) = read_client(cx, client, backend, ex, rewrite.as_deref_mut(), &mut again) {
                return Poll::Ready(event);
            }
        }
        if let Some(event) = quiet_event(ex, backend, rewrite.as_deref()) {
            return Poll::Ready(event);
        }
        if !again {
            return Poll::Pending;
        }
    }
}

/// Writes the client-bound bytes; `again` when the socket left some.
#[inline(always)]
fn write_client(cx: &mut Context<'_>, client: &mut ClientConn, again: &mut bool) -> Option<RelayEvent> {
    if client.wbuf.is_empty() {
        return None;
    }
    match poll_write_buf(Pin::new(&mut client.stream), cx, &mut client.wbuf) {
        Poll::Ready(Ok(0)) => Some(RelayEvent::ClientFailed(ClientIoError::Closed)),
        Poll::Ready(Ok(_)) => {
            *again |= !client.wbuf.is_empty();
            None
        }
        Poll::Ready(Err(e)) => Some(RelayEvent::ClientFailed(e.into())),
        Poll::Pending => None,
    }
}

/// Writes the server-bound bytes; `again` when the socket left some.
#[inline(always)]
fn write_backend(cx: &mut Context<'_>, backend: &mut BackendConn, again: &mut bool) -> Option<RelayEvent> {
    if backend.wbuf.is_empty() {
        return None;
    }
    match poll_write_buf(Pin::new(&mut backend.stream), cx, &mut backend.wbuf) {
        Poll::Ready(Ok(0)) => Some(RelayEvent::BackendFailed(closed(backend))),
        Poll::Ready(Ok(_)) => {
            *again |= !backend.wbuf.is_empty();
            None
        }
        Poll::Ready(Err(e)) => Some(RelayEvent::BackendFailed(io(backend, e))),
        Poll::Pending => None,
    }
}

/// TLS keeps records the socket did not take; push them out (plain TCP: nothing to do).
#[inline(always)]
fn flush_tls(cx: &mut Context<'_>, client: &mut ClientConn, backend: &mut BackendConn) -> Option<RelayEvent> {
    if client.stream.is_tls() {
        if let Poll::Ready(Err(e)) = Pin::new(&mut client.stream).poll_flush(cx) {
            return Some(RelayEvent::ClientFailed(e.into()));
        }
    }
    if backend.stream.is_tls() {
        if let Poll::Ready(Err(e)) = Pin::new(&mut backend.stream).poll_flush(cx) {
            return Some(RelayEvent::BackendFailed(io(backend, e)));
        }
    }
    None
}

/// Reads what the server sent and streams it to the client's output.
#[inline(always)]
fn read_backend(
    cx: &mut Context<'_>,
    client: &mut ClientConn,
    backend: &mut BackendConn,
    ex: &mut Exchange,
    rewrite: Option<&mut Rewrite<'_>>,
    again: &mut bool,
) -> Option<RelayEvent> {
    if backend.rbuf.capacity() - backend.rbuf.len() < READ_RESERVE / 4 {
        backend.rbuf.reserve(READ_RESERVE);
    }
    match poll_read_buf(Pin::new(&mut backend.stream), cx, &mut backend.rbuf) {
        Poll::Ready(Ok(0)) => Some(RelayEvent::BackendFailed(closed(backend))),
        Poll::Ready(Ok(_)) => {
            *again = true;
            server_side::scan(backend, client, ex, rewrite)
        }
        Poll::Ready(Err(e)) => Some(RelayEvent::BackendFailed(io(backend, e))),
        Poll::Pending => None,
    }
}

/// Reads what the client sent and forwards its whole frames.
#[inline(always)]
fn read_client(
    cx: &mut Context<'_>,
    client: &mut ClientConn,
    backend: &mut BackendConn,
    ex: &mut Exchange,
    rewrite: Option<&mut Rewrite<'_>>,
    again: &mut bool,
) -> Option<RelayEvent> {
    crate::client::conn::make_read_room(&mut client.rbuf, READ_RESERVE);
    match poll_read_buf(Pin::new(&mut client.stream), cx, &mut client.rbuf) {
        Poll::Ready(Ok(0)) => Some(RelayEvent::ClientFailed(ClientIoError::Closed)),
        Poll::Ready(Ok(_)) => {
            *again = true;
            client_side::forward(client, backend, ex, rewrite)
        }
        Poll::Ready(Err(e)) => Some(RelayEvent::ClientFailed(e.into())),
        Poll::Pending => None,
    }
}

/// The quiet point the session has not seen yet: every request answered (or only a
/// statement-only batch open), the server's output written.
#[inline(always)]
fn quiet_event(
    ex: &mut Exchange,
    backend: &BackendConn,
    rewrite: Option<&Rewrite<'_>>,
) -> Option<RelayEvent> {
    if ex.quiet_reported || !backend.wbuf.is_empty() {
        return None;
    }
    let statement_only_batch = rewrite.is_some_and(|rw| rw.pipe.queue.is_empty())
        && ex.tracker.statement_only_batch()
        && ex.passthrough == 0;
    if statement_only_batch {
        ex.quiet_reported = true;
        return Some(RelayEvent::IdleUnsynced);
    }
    if ex.is_quiet() {
        ex.quiet_reported = true;
        return Some(match ex.tracker.status() {
            TransactionStatus::Idle => RelayEvent::Idle,
            _ => RelayEvent::IdleInTransaction,
        });
    }
    None
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
