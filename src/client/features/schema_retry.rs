//! Schema changes under prepared statements (transaction mode): a statement that fails with
//! 0A000 `cached plan must not change result type` outside a transaction block is prepared
//! again and its batch replayed once, so the client sees only the successful result.
//!
//! The relay keeps a copy of the client's current batch (from the first message after a
//! ReadyForQuery with status idle to its Sync or Query), only while it is small and alone on the
//! wire. If the 0A000 is the first thing the server answers to that batch, the error is held
//! back along with everything up to ReadyForQuery; if that ReadyForQuery says idle (the implicit
//! transaction rolled back, nothing reached the client), the session gives the client fresh
//! statements for the stale ones (SQL ones are prepared again) and puts the batch back in front
//! of the client's input, where the relay sends it again and prepares what it names, as after
//! any backend switch. Otherwise the held error goes to the client as PostgreSQL sent it.
//!
//! Only a batch that shows the client the new columns is replayed: one with a Describe (libpq,
//! hence psycopg 3, and node-postgres describe the portal at every execution) or a simple
//! Query. A driver that executes on a description it cached earlier (tokio-postgres) would
//! reject or misread rows of the new shape, so it gets PostgreSQL's 0A000 and prepares again;
//! its statement is marked stale all the same, so that its new Parse gets a new statement.

use crate::backend::BackendError;
use crate::client::features::sql_prepared::{self, SqlPrepared};
use crate::client::session::Session;
use crate::protocol::backend_msg::{self, read_cstr};
use crate::protocol::error::BackendError as ServerError;
use crate::protocol::{frontend_msg, tag, Frame, TransactionStatus};
use bytes::{Bytes, BytesMut};
use std::sync::Arc;

/// Batches larger than this are not kept (their errors pass through).
const MAX_BATCH: usize = 64 * 1024;

/// The copy of the client's current batch, and what the server answered to it so far.
#[derive(Debug, Default)]
pub struct BatchCopy {
    frames: BytesMut,
    state: CopyState,
    /// Something of this batch already reached the client: replaying would repeat it.
    answered: bool,
    /// This batch is a replay: no second retry.
    replayed: bool,
    /// The session put a replay in front of the client's input.
    replay_next: bool,
    /// The 0A000 held back until the batch's ReadyForQuery.
    held_error: Option<Bytes>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum CopyState {
    /// No batch kept.
    #[default]
    Off,
    /// Copying frames; the batch is not complete yet.
    Recording,
    /// The batch ended with Sync or Query and nothing followed it.
    Complete,
}

/// What to do with one server message.
#[derive(Debug, PartialEq, Eq)]
pub enum Retry {
    /// Forward it.
    Pass,
    /// Hold it back (the 0A000, and what follows it up to ReadyForQuery).
    Hold,
    /// Hold back this ReadyForQuery too: the batch is to be replayed.
    Replay(Bytes),
    /// Send the held error first, then this message (the retry is off).
    Release(Bytes),
}

impl BatchCopy {
    /// A client message is being forwarded. `idle_start` says a new batch starts with it:
    /// nothing is in flight and the transaction status is idle. `starts` says a batch starts
    /// (nothing in flight), whatever the status.
    pub fn client_frame(&mut self, frame: &[u8], starts: bool, idle: bool) {
        if starts {
            self.frames.clear();
            self.answered = false;
            self.replayed = std::mem::take(&mut self.replay_next);
            self.state = if idle {
                CopyState::Recording
            } else {
                CopyState::Off
            };
        }
        match self.state {
            CopyState::Off => return,
            CopyState::Complete => return self.off(),
            CopyState::Recording => {}
        }
        if self.frames.len() + frame.len() > MAX_BATCH {
            return self.off();
        }
        self.frames.extend_from_slice(frame);
        if matches!(frame[0], tag::SYNC | tag::QUERY) {
            self.state = CopyState::Complete;
        } else if !matches!(
            frame[0],
            tag::PARSE | tag::BIND | tag::DESCRIBE | tag::EXECUTE | tag::FLUSH | tag::CLOSE
        ) {
            // COPY data, FunctionCall and the like are not replayed.
            self.off();
        }
    }

    /// Fresh again: keeps the buffer (when not oversized).
    #[inline]
    pub fn clear(&mut self) {
        self.off();
        let frames = std::mem::take(&mut self.frames);
        *self = BatchCopy {
            frames,
            ..BatchCopy::default()
        };
    }

    fn off(&mut self) {
        self.state = CopyState::Off;
        if self.frames.capacity() > MAX_BATCH {
            self.frames = BytesMut::new();
        } else {
            self.frames.clear();
        }
    }

    /// Something reached the client on behalf of the current batch.
    pub fn mark_answered(&mut self) {
        self.answered = true;
    }

    /// tidepool answered the named Parse just copied (`frame_len` bytes) with a ParseComplete of
    /// its own, the backend having that statement: not the server's answer, so the batch may
    /// still be replayed, without that Parse (the client has its ParseComplete, and the name).
    /// A node-postgres client's first execution after a schema change is such a batch.
    pub fn parse_answered_locally(&mut self, frame_len: usize) {
        let start = self.frames.len().checked_sub(frame_len);
        match start {
            Some(at) if self.state == CopyState::Recording && self.frames[at] == tag::PARSE => {
                self.frames.truncate(at)
            }
            _ => self.answered = true,
        }
    }

    /// A server message `frame` (whole) arrives; `status` is the transaction status after it.
    pub fn server_frame(&mut self, frame: &[u8], status: TransactionStatus) -> Retry {
        let tag = frame[0];
        if self.held_error.is_some() {
            if tag != tag::READY_FOR_QUERY {
                return Retry::Hold;
            }
            let held = self.held_error.take().expect("checked");
            return if status == TransactionStatus::Idle {
                Retry::Replay(held)
            } else {
                self.off();
                Retry::Release(held)
            };
        }
        if tag == tag::ERROR_RESPONSE
            && self.state == CopyState::Complete
            && !self.answered
            && !self.replayed
            && is_result_type_change(frame)
        {
            self.held_error = Some(Bytes::copy_from_slice(frame));
            return Retry::Hold;
        }
        if tag != tag::READY_FOR_QUERY {
            self.answered = true;
        }
        Retry::Pass
    }
}

/// 0A000 `cached plan must not change result type`, PostgreSQL's answer to a statement prepared
/// before a schema change that alters its result columns; and XX000 `cache lookup failed for
/// type …`, its answer to a statement prepared before a type it uses was dropped (and maybe
/// created again under a new OID): a client that just prepared the same text through tidepool
/// got the shared statement, and on a direct connection its own would resolve the new type.
fn is_result_type_change(frame: &[u8]) -> bool {
    let e = ServerError::parse(&Frame {
        tag: frame[0],
        body: Bytes::copy_from_slice(&frame[5..]),
    });
    (e.code == "0A000" && e.message == "cached plan must not change result type")
        || (e.code == "XX000" && e.message.starts_with("cache lookup failed for type "))
}

/// What a batch uses.
#[derive(Debug, Default, PartialEq, Eq)]
struct Used {
    /// The client's protocol-level statement names (Bind, Describe).
    protocol: Vec<String>,
    /// SQL-level names (`EXECUTE name` in a Query).
    sql: Vec<String>,
    /// The batch makes the server describe its result (Describe, or a simple Query).
    describes: bool,
}

fn names_used(frames: &[u8]) -> Used {
    let mut used = Used::default();
    let (protocol, sql) = (&mut used.protocol, &mut used.sql);
    let mut pos = 0;
    while frames.len() >= pos + 5 {
        let len =
            u32::from_be_bytes([frames[pos + 1], frames[pos + 2], frames[pos + 3], frames[pos + 4]]) as usize;
        let Some(body) = frames.get(pos + 5..pos + 1 + len) else {
            break;
        };
        match frames[pos] {
            tag::BIND => {
                if let Some((_, rest)) = read_cstr(body) {
                    if let Some((name, _)) = read_cstr(rest) {
                        protocol.push(name.to_string());
                    }
                }
            }
            tag::DESCRIBE => {
                used.describes = true;
                if body.first() == Some(&b'S') {
                    if let Some((name, _)) = read_cstr(&body[1..]) {
                        protocol.push(name.to_string());
                    }
                }
            }
            tag::QUERY => {
                used.describes = true;
                let text = String::from_utf8_lossy(body.strip_suffix(&[0]).unwrap_or(body));
                for (_, words) in crate::client::features::session_state::statement_spans(&text) {
                    if words[0].eq_ignore_ascii_case("EXECUTE") {
                        if let Some(name) = words.get(1) {
                            sql.push(name.clone());
                        }
                    }
                }
            }
            _ => {}
        }
        pos += 1 + len;
    }
    used
}

/// The SQL statement a name in `EXECUTE name` refers to (unquoted names fold to lower case).
fn sql_name(set: &SqlPrepared, word: &str) -> Option<(String, Arc<str>)> {
    [word.to_string(), word.to_lowercase()]
        .into_iter()
        .find_map(|n| set.text(&n).filter(|t| !t.is_empty()).map(|t| (n, Arc::from(t))))
}

impl Session {
    /// The batch failed with 0A000 and nothing reached the client: prepare its statements again
    /// and replay it, or deliver the error after all (nothing to prepare again, or the client
    /// would not learn the new columns from the replay).
    ///
    /// A protocol-level statement is not prepared again under its old name: it is marked stale,
    /// so that Parses of the same text from now on get a new statement (and name) everywhere,
    /// and a replayed client's name moves to that new statement. Clients still holding the old
    /// one get PostgreSQL's 0A000 where their backend has it, as their own sessions would.
    pub(crate) async fn retry_after_schema_change(&mut self, error: Bytes) -> Result<(), BackendError> {
        let frames = std::mem::take(&mut self.exchange.features.batch.frames);
        let Used {
            protocol,
            sql,
            describes,
        } = names_used(&frames);
        let mut stale = Vec::new();
        if self.max_prepared > 0 {
            for name in protocol {
                if let Some(stmt) = self.statements.by_name.get(&name) {
                    stmt.mark_stale();
                    stale.push((name, stmt.definition.clone()));
                }
            }
        }
        let backend = self.checkout.attached();
        let mut out = BytesMut::new();
        let mut again = Vec::new();
        for word in &sql {
            if let Some((name, text)) = sql_name(&self.statements.sql, word) {
                frontend_msg::query(
                    &mut out,
                    &format!("DEALLOCATE {}", crate::backend::quote_ident(&name)),
                );
                frontend_msg::query(&mut out, &text);
                again.push((name, text));
            }
        }
        let mut sql_ok = true;
        if !again.is_empty() {
            let results = sql_prepared::run_pipelined(backend, &out, 2 * again.len()).await?;
            for (i, (name, text)) in again.iter().enumerate() {
                let prepared = results.get(2 * i + 1).copied().unwrap_or(false);
                backend
                    .statements
                    .sql
                    .set(name.clone(), prepared.then(|| text.clone()));
                sql_ok &= prepared;
            }
        }
        let replay = describes && sql_ok && (!stale.is_empty() || !again.is_empty());
        if replay {
            tracing::debug!(
                backend = backend.id,
                "schema changed under a prepared statement; retrying the batch"
            );
            for (name, definition) in stale {
                let fresh = self.shared.statements.intern(&definition);
                self.statements.by_name.insert(name, fresh);
            }
            let mut input = BytesMut::from(&frames[..]);
            input.extend_from_slice(&self.client.rbuf);
            self.client.rbuf = input;
            self.exchange.features.batch.replay_next = true;
        } else {
            self.client.wbuf.extend_from_slice(&error);
            backend_msg::ready_for_query(&mut self.client.wbuf, b'I');
        }
        Ok(())
    }
}

/// Fuzz entry (`fuzzing::client_batches`): client frames back to back go through the batch
/// copy as the relay feeds it (a new batch after each Sync or Query), then a stale-plan error and
/// a ReadyForQuery; the copy stays whole frames within its bound, and its names are read.
pub fn fuzz_batch_copy(data: &[u8]) {
    let mut copy = BatchCopy::default();
    let mut pos = 0;
    let mut starts = true;
    while let Ok(Some((tag, total))) = crate::protocol::frame::peek_header(&data[pos..], 1 << 20) {
        let Some(frame) = data.get(pos..pos + total) else {
            break;
        };
        copy.client_frame(frame, starts, true);
        starts = matches!(tag, tag::SYNC | tag::QUERY);
        assert!(copy.frames.len() <= MAX_BATCH, "the copy outgrew its bound");
        assert!(whole(&copy.frames), "the copy is not whole frames");
        pos += total;
    }
    let error = crate::protocol::ErrorFields::error(
        crate::protocol::SqlState::FEATURE_NOT_SUPPORTED,
        "cached plan must not change result type",
    )
    .to_bytes();
    let _ = copy.server_frame(&error, TransactionStatus::Idle);
    if let Retry::Replay(held) = copy.server_frame(b"Z\0\0\0\x05I", TransactionStatus::Idle) {
        assert_eq!(held, error);
        let _ = names_used(&copy.frames);
    }
}

/// Whether `frames` hold whole messages (the copy is always cut at frame bounds).
fn whole(frames: &[u8]) -> bool {
    use bytes::Buf;
    let mut b = frames;
    while b.len() >= 5 {
        let len = u32::from_be_bytes([b[1], b[2], b[3], b[4]]) as usize;
        if b.len() < 1 + len {
            return false;
        }
        b.advance(1 + len);
    }
    b.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ErrorFields, SqlState};

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    fn stale_plan_error() -> Vec<u8> {
        ErrorFields::error(
            SqlState::FEATURE_NOT_SUPPORTED,
            "cached plan must not change result type",
        )
        .to_bytes()
        .to_vec()
    }

    fn bind_execute_sync(copy: &mut BatchCopy) {
        copy.client_frame(&msg(tag::BIND, b"\0s1\0\0\0\0\0\0\0"), true, true);
        copy.client_frame(&msg(tag::EXECUTE, b"\0\0\0\0\0"), false, true);
        copy.client_frame(&msg(tag::SYNC, b""), false, true);
    }

    #[test]
    fn first_answer_0a000_outside_a_transaction_is_replayed() {
        let mut copy = BatchCopy::default();
        bind_execute_sync(&mut copy);
        assert!(whole(&copy.frames));
        assert_eq!(
            copy.server_frame(&stale_plan_error(), TransactionStatus::Idle),
            Retry::Hold
        );
        let ready = msg(tag::READY_FOR_QUERY, b"I");
        assert!(matches!(
            copy.server_frame(&ready, TransactionStatus::Idle),
            Retry::Replay(_)
        ));
        let used = names_used(&copy.frames);
        assert_eq!((used.protocol, used.describes), (vec!["s1".to_string()], false));
        // The replay gets no second chance.
        copy.replay_next = true;
        bind_execute_sync(&mut copy);
        assert_eq!(
            copy.server_frame(&stale_plan_error(), TransactionStatus::Idle),
            Retry::Pass
        );
    }

    #[test]
    fn a_parse_tidepool_answered_is_replayed_without_it() {
        let mut copy = BatchCopy::default();
        let parse = msg(tag::PARSE, b"s1\0SELECT 1\0\0\0");
        copy.client_frame(&parse, true, true);
        copy.parse_answered_locally(parse.len());
        copy.client_frame(&msg(tag::BIND, b"\0s1\0\0\0\0\0\0\0"), false, true);
        copy.client_frame(&msg(b'D', b"P\0"), false, true);
        copy.client_frame(&msg(tag::EXECUTE, b"\0\0\0\0\0"), false, true);
        copy.client_frame(&msg(tag::SYNC, b""), false, true);
        assert_eq!(
            copy.server_frame(&stale_plan_error(), TransactionStatus::Idle),
            Retry::Hold
        );
        let ready = msg(tag::READY_FOR_QUERY, b"I");
        assert!(matches!(
            copy.server_frame(&ready, TransactionStatus::Idle),
            Retry::Replay(_)
        ));
        assert_eq!(copy.frames[0], tag::BIND, "the Parse is not sent again");
        let used = names_used(&copy.frames);
        assert_eq!((used.protocol, used.describes), (vec!["s1".to_string()], true));
        // Not the Parse just copied (the copy is off): an answer like any other.
        let mut copy = BatchCopy::default();
        copy.client_frame(&msg(tag::QUERY, &vec![b'x'; MAX_BATCH + 1]), true, true);
        copy.parse_answered_locally(parse.len());
        assert!(copy.answered);
    }

    #[test]
    fn no_retry_after_answers_in_a_transaction_or_when_pipelined() {
        let mut copy = BatchCopy::default();
        bind_execute_sync(&mut copy);
        copy.server_frame(&msg(b'2', b""), TransactionStatus::Idle);
        assert_eq!(
            copy.server_frame(&stale_plan_error(), TransactionStatus::Idle),
            Retry::Pass
        );
        // Status was not idle when the batch began.
        copy.client_frame(&msg(tag::QUERY, b"EXECUTE s\0"), true, false);
        assert_eq!(
            copy.server_frame(&stale_plan_error(), TransactionStatus::Idle),
            Retry::Pass
        );
        // More sent after the Sync.
        bind_execute_sync(&mut copy);
        copy.client_frame(&msg(tag::QUERY, b"SELECT 1\0"), false, true);
        assert_eq!(
            copy.server_frame(&stale_plan_error(), TransactionStatus::Idle),
            Retry::Pass
        );
        // The error left a failed transaction block: it goes to the client after all.
        copy.client_frame(&msg(tag::QUERY, b"BEGIN; EXECUTE s\0"), true, true);
        assert_eq!(
            copy.server_frame(&stale_plan_error(), TransactionStatus::Idle),
            Retry::Hold
        );
        let ready = msg(tag::READY_FOR_QUERY, b"E");
        assert!(matches!(
            copy.server_frame(&ready, TransactionStatus::Failed),
            Retry::Release(_)
        ));
        assert!(copy.frames.is_empty());
    }

    #[test]
    fn sql_execute_names_and_big_batches() {
        let frames = msg(
            tag::QUERY,
            b"SELECT 1; execute Stale_One (1); EXPLAIN EXECUTE x\0",
        );
        let used = names_used(&frames);
        assert_eq!((used.sql, used.describes), (vec!["Stale_One".to_string()], true));
        let mut copy = BatchCopy::default();
        copy.client_frame(&msg(tag::QUERY, &vec![b'x'; MAX_BATCH + 1]), true, true);
        assert_eq!(copy.state, CopyState::Off);
    }
}
