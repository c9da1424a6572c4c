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

use bytes::{Bytes, BytesMut};
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

    /// True when only a ReadyForQuery (or nothing) can end the head request: then no server
    /// frame but ReadyForQuery and ErrorResponse (which the relay watches anyway) can concern
    /// renaming, and rows, RowDescription and CommandComplete stream past unread (a simple Query,
    /// a Sync's answer).
    pub fn head_ends_only_at_ready(&self) -> bool {
        matches!(self.queue.front(), None | Some(Expect::Client(Request::Ready)))
    }
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
mod rewrite;
mod store;
mod without_backend;
pub use guard::fuzz_statement_refs;
pub(crate) use refs::statement_tokens;
pub use rewrite::{client_frame, RewriteContext};
use rewrite::{discard_client_statements, ensure_prepared};
pub use store::{BackendStatements, ClientStatements, Statement, StatementCache};
pub use without_backend::answer_without_backend;

#[cfg(test)]
mod tests;
