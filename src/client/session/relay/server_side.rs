//! Server → client: server bytes stream to the client's output. Only the headers are read, and
//! the bodies of the frames the tracker or an interceptor watches (ReadyForQuery,
//! ParameterStatus, ErrorResponse, COPY responses; with statement renaming, every frame that
//! ends a request). Rows and COPY data of any size pass through with bounded buffers.

use super::{interceptors, Exchange, RelayEvent, Rewrite};
use crate::backend::{record_parameter, BackendConn, BackendError, BackendState};
use crate::client::conn::ClientConn;
use crate::protocol::error::BackendError as ServerError;
use crate::protocol::frame::peek_header;
use crate::protocol::tag;
use crate::protocol::tracker::{Direction, Step};
use bytes::{Buf, Bytes, BytesMut};

/// Server frames are streamed; this only bounds the length field we accept as sane.
const SERVER_FRAME_LIMIT: u32 = 1 << 30;

/// Streams the server bytes at hand to the client's output; the event that stops the relay, if
/// one does.
pub(super) fn scan(
    backend: &mut BackendConn,
    client: &mut ClientConn,
    ex: &mut Exchange,
    mut rewrite: Option<&mut Rewrite<'_>>,
) -> Option<RelayEvent> {
    let own_pids = prepare(backend, client, ex);
    let buf = &backend.rbuf[..];
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
        let renaming = rewrite
            .as_ref()
            .is_some_and(|rw| !rw.pipe.head_ends_only_at_ready());
        if !watched(tag, total, renaming, own_pids) {
            // Rows, COPY data and the like end no request: stream them.
            ex.features.batch.mark_answered();
            let n = total.min(buf.len() - pos);
            pos += n;
            ex.passthrough = total - n;
            continue;
        }
        if buf.len() - pos < total {
            break;
        }
        let body = &buf[pos + 5..pos + total];
        if let Some(fatal) = track(
            tag,
            body,
            &mut backend.state,
            &mut backend.reported,
            ex,
            rewrite.as_deref_mut(),
        ) {
            // Forward what came before; the session decides what the client sees.
            client.wbuf.extend_from_slice(&buf[copied..pos]);
            backend.rbuf.advance(pos + total);
            return Some(RelayEvent::BackendFatal(fatal));
        }
        let replay = interceptors::server_frame(
            buf,
            pos,
            total,
            &mut copied,
            ex.tracker.status(),
            &mut ex.features,
            rewrite.as_deref_mut(),
            &mut backend.statements,
            &mut client.wbuf,
        );
        pos += total;
        if let Some(held) = replay {
            event = Some(RelayEvent::SchemaChanged(held));
            break;
        }
    }
    client.wbuf.extend_from_slice(&buf[copied..pos]);
    backend.rbuf.advance(pos);
    ex.stats.bytes_out += pos as u64;
    event
}

/// Before a scan: a pinned client's own notifications get its pid (it may LISTEN on its own
/// backend; true when that applies), and the client's output gets its first buffer.
#[inline]
fn prepare(backend: &mut BackendConn, client: &mut ClientConn, ex: &Exchange) -> bool {
    let own_pids = ex.features.pinned && client.key_pid.is_some_and(|pid| pid != backend.key.pid);
    if own_pids {
        let (start, pid) = (ex.passthrough, client.key_pid.unwrap_or_default());
        crate::notify::rewrite_own_pids(&mut backend.rbuf, start, backend.key.pid, pid);
    }
    if client.wbuf.capacity() == 0 {
        // Room for what is already read; answers that need more grow it.
        client.wbuf = crate::client::buffers::take_for(backend.rbuf.len());
    }
    own_pids
}

/// Whether a server frame needs its body read (the rest is streamed unread).
#[inline]
fn watched(tag: u8, total: usize, renaming: bool, own_pids: bool) -> bool {
    matches!(
        tag,
        tag::READY_FOR_QUERY
            | tag::PARAMETER_STATUS
            | tag::ERROR_RESPONSE
            | tag::COPY_IN_RESPONSE
            | tag::COPY_OUT_RESPONSE
            | tag::COPY_BOTH_RESPONSE
            | tag::COPY_DONE
    ) || (renaming && (total == 5 || matches!(tag, tag::COMMAND_COMPLETE | tag::ROW_DESCRIPTION | b't')))
        || (own_pids && tag == tag::NOTIFICATION_RESPONSE)
}

/// One whole watched server frame through the tracker: the backend's state, reported
/// parameters, error classes. Returns the frame of a FATAL error (the backend is then broken).
#[inline]
fn track(
    tag: u8,
    body: &[u8],
    state: &mut BackendState,
    reported: &mut Vec<(String, String)>,
    ex: &mut Exchange,
    rewrite: Option<&mut Rewrite<'_>>,
) -> Option<Bytes> {
    match ex.tracker.step(Direction::Backend, tag, body) {
        Step::Ready { status, quiet: true } if *state != BackendState::Broken => {
            *state = BackendState::Ready(status);
        }
        Step::BadReady => *state = BackendState::Broken,
        Step::CopyIn { swallowed } => {
            // Syncs sent between the Execute and its COPY data went into the COPY.
            if let Some(rw) = rewrite.filter(|_| swallowed > 0) {
                rw.pipe.forget_ready_after_head(swallowed as usize);
            }
        }
        _ if tag == tag::PARAMETER_STATUS => {
            if let Some((name, value)) = record_parameter(reported, body) {
                ex.reported.push((name.to_string(), value.to_string()));
            }
        }
        Step::Error => return error_frame(tag, body, state, ex),
        _ => {}
    }
    None
}

/// Counts an ErrorResponse's class; the whole frame when it is FATAL.
#[cold]
fn error_frame(tag: u8, body: &[u8], state: &mut BackendState, ex: &mut Exchange) -> Option<Bytes> {
    if let Some(class) = crate::metrics::class_of(body) {
        ex.stats.error_classes.push(class);
    }
    let frame = crate::protocol::Frame {
        tag,
        body: Bytes::copy_from_slice(body),
    };
    if !ServerError::parse(&frame).is_fatal() {
        return None;
    }
    *state = BackendState::Broken;
    let mut whole = BytesMut::with_capacity(frame.body.len() + 5);
    frame.write_to(&mut whole);
    Some(whole.freeze())
}
