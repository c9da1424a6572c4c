//! The per-frame hooks of the transaction-mode features, one call per client frame and one per
//! watched server frame, so the relay's loops stay the fast path: statement renaming
//! (`statements`), the isolation verdict (`isolation`), settings, pins and SQL-level prepared
//! statements (`pinning`, `sql_prepared`), notification senders (`notify/senders.rs`), the
//! schema-change retry (`schema_retry`) and the database-DDL hold (`database_ddl`). Each is
//! engaged only when the session asked for it (`Features::track_settings`, a `Rewrite`) or the
//! frame's trigger words say it may matter.

use super::exchange::Features;
use super::{Exchange, Rewrite};
use crate::backend::BackendConn;
use crate::client::features::isolation::{Effects, Verdict};
use crate::client::features::keywords::{Word, Words};
use crate::client::features::schema_retry::{BatchCopy, Retry};
use crate::client::features::statements::{self, Disposition, RewriteContext};
use crate::client::features::{database_ddl, pinning, sql_prepared};
use crate::protocol::tag;
use crate::protocol::TransactionStatus;
use bytes::{Bytes, BytesMut};

/// Before the tracker sees a client frame: its trigger words (transaction mode, Query/Parse),
/// the batch copy for a retry, and the database-DDL hold. `None`: hold the frame back (the
/// session must first free the databases it names).
#[inline]
pub(super) fn before_client_frame(
    tag: u8,
    frame: &[u8],
    at_head: bool,
    ex: &mut Exchange,
) -> Option<Option<Words>> {
    let sql_request = matches!(tag, tag::QUERY | tag::PARSE);
    let features = &mut ex.features;
    // The trigger words of this Query/Parse (transaction mode scans them for the isolation
    // checks anyway); the session's scan of the head request serves when it is this frame.
    let mut words = None;
    if features.track_settings && sql_request {
        words = Some(match features.head_words.take() {
            Some((len, words)) if at_head && len == frame.len() => words,
            _ => Words::scan(sql_start(tag, &frame[5..])),
        });
    }
    // Without the word DATABASE it cannot be CREATE/DROP/ALTER DATABASE: no second look.
    let may_be_database_ddl = sql_request && words.is_none_or(|w| w.has(Word::Database));
    if may_be_database_ddl && !(at_head && std::mem::take(&mut features.database_ddl_freed)) {
        let databases = database_ddl::databases_needing_exclusive_use(frame);
        if !databases.is_empty() {
            features.database_ddl_ahead = databases;
            return None;
        }
    }
    if features.track_settings && tag != tag::TERMINATE {
        // Transaction mode keeps small batches for a retry after a schema change.
        let starts = ex.tracker.between_requests();
        let idle = ex.tracker.is_idle();
        features.batch.client_frame(frame, starts, idle);
    }
    Some(words)
}

/// After the tracker took a client frame, in transaction mode: what it may leave on the backend
/// (isolation), pins, SQL-level prepared statements, NOTIFY.
#[inline]
pub(super) fn after_client_step(
    tag: u8,
    frame: &[u8],
    words: Option<Words>,
    rewrite: Option<&Rewrite<'_>>,
    features: &mut Features,
    backend: &BackendConn,
) {
    if features.isolation.verdict != Verdict::Opaque {
        judge_frame(tag, &frame[5..], rewrite, &mut features.isolation);
    }
    if let Some(words) = words {
        note_setting_changes(words, features, backend);
    }
}

/// Statement renaming of one client frame: forwards it renamed (or injects, or answers) into
/// the backend's output and the client's; the retry's copy of the batch learns what was answered.
#[inline]
pub(super) fn rename_client_frame(
    frame: &[u8],
    words: Option<Words>,
    rw: &mut Rewrite<'_>,
    batch: &mut BatchCopy,
    backend: &mut BackendConn,
    to_client: &mut BytesMut,
) {
    let mut ctx = RewriteContext {
        cache: rw.cache,
        client: rw.client,
        backend: &mut backend.statements,
        capacity: rw.capacity,
        words,
    };
    let answers_before = to_client.len();
    statements::client_frame(frame, &mut ctx, rw.pipe, &mut backend.wbuf, to_client);
    if to_client.len() != answers_before {
        if frame[0] == tag::PARSE && to_client[answers_before..] == *b"1\0\0\0\x04" {
            // Its ParseComplete, made up for a statement the backend has already.
            batch.parse_answered_locally(frame.len());
        } else {
            batch.mark_answered();
        }
    }
}

/// Judges what a client frame may leave on the backend (see `isolation`): a Query's text, a
/// Bind's statement (the unnamed one as last parsed, a named one by its text), a FunctionCall.
fn judge_frame(tag: u8, body: &[u8], rewrite: Option<&Rewrite<'_>>, effects: &mut Effects) {
    match tag {
        tag::QUERY => {
            effects.judge_text(body);
        }
        tag::PARSE if body.first() == Some(&0) => {
            // The unnamed statement runs only at a later Bind: judged now, counted then.
            let sql = query_text(tag, body);
            effects.unnamed = effects.judge_parse(sql);
            if effects.unnamed > Verdict::Clean {
                // Names (and a LOAD) count now, the verdict when a Bind runs it.
                let verdict = std::mem::replace(&mut effects.verdict, Verdict::Clean);
                effects.raise(effects.unnamed, sql);
                effects.verdict = verdict;
            }
        }
        tag::BIND => judge_bind(body, rewrite, effects),
        tag::FUNCTION_CALL => effects.verdict = Verdict::Opaque,
        _ => {}
    }
}

fn judge_bind(body: &[u8], rewrite: Option<&Rewrite<'_>>, effects: &mut Effects) {
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

/// Records whether a Query or Parse may pin the client to its backend or change its SQL-level
/// prepared statements, and marks the backend's notifier for NOTIFY.
fn note_setting_changes(words: Words, features: &mut Features, backend: &BackendConn) {
    if words.is_empty() {
        return;
    }
    features.pins_may_have_changed |= pinning::may_change_pins(words, features.pinned);
    features.sql_prepared_may_have_changed |= sql_prepared::may_change(words);
    if features.notify_as != 0 && words.has(Word::Notify) {
        if let Some(users) = &backend.users {
            users.mark_notifier(features.notify_as);
        }
    }
}

/// One watched server frame through the schema-change retry and statement renaming. `copied`
/// is how far `buf` was already moved to `to_client`; frames before `pos` go out first when a
/// hook writes out of order. Returns the held batch when the schema-change retry replays it
/// (the relay stops after this frame).
#[inline]
#[allow(clippy::too_many_arguments)]
pub(super) fn server_frame(
    buf: &[u8],
    pos: usize,
    total: usize,
    copied: &mut usize,
    status: TransactionStatus,
    features: &mut Features,
    rewrite: Option<&mut Rewrite<'_>>,
    backend_statements: &mut statements::BackendStatements,
    to_client: &mut BytesMut,
) -> Option<Bytes> {
    let frame = &buf[pos..pos + total];
    let retry = if features.track_settings {
        features.batch.server_frame(frame, status)
    } else {
        Retry::Pass
    };
    let mut swallow = matches!(retry, Retry::Hold | Retry::Replay(_));
    if let Retry::Release(held) = &retry {
        to_client.extend_from_slice(&buf[*copied..pos]);
        to_client.extend_from_slice(held);
        *copied = pos;
    }
    if let Some(rw) = rewrite {
        let disposition = statements::server_message(frame, rw.pipe, rw.client, backend_statements);
        swallow |= disposition == Disposition::Swallow;
        let made = rw.pipe.has_made_at_head();
        if swallow || made {
            let end = if swallow { pos } else { pos + total };
            to_client.extend_from_slice(&buf[*copied..end]);
            *copied = pos + total;
            if made {
                features.batch.mark_answered();
            }
            statements::deliver_made(rw.pipe, rw.client, to_client);
        }
    } else if swallow {
        to_client.extend_from_slice(&buf[*copied..pos]);
        *copied = pos + total;
    }
    match retry {
        Retry::Replay(held) => Some(held),
        _ => None,
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
fn query_text(tag: u8, body: &[u8]) -> &[u8] {
    let sql = sql_start(tag, body);
    &sql[..sql.iter().position(|&b| b == 0).unwrap_or(sql.len())]
}
