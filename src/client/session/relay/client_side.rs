//! Client → server: whole client frames at hand move to the server's output. The fast path is
//! the header, the tracker and the counters; the interceptors run only where the session engaged
//! them (transaction mode, statement renaming).

use super::{interceptors, Exchange, RelayEvent, Rewrite};
use crate::backend::{BackendConn, BackendState};
use crate::client::conn::ClientConn;
use crate::protocol::frame::peek_header;
use crate::protocol::tracker::{Direction, Step};
use crate::protocol::FrameError;
use bytes::Buf;

/// Forwards the whole client frames at hand; the event that stops the relay, if one does.
pub(super) fn forward(
    client: &mut ClientConn,
    backend: &mut BackendConn,
    ex: &mut Exchange,
    rewrite: Option<&mut Rewrite<'_>>,
) -> Option<RelayEvent> {
    match scan(client, backend, ex, rewrite) {
        Ok(true) => return Some(RelayEvent::ClientTerminated),
        Ok(false) => {}
        Err(e) => return Some(RelayEvent::ClientFailed(e.into())),
    }
    // A statement that needs its database to itself waits for the session (database_ddl.rs).
    let held = &mut ex.features.database_ddl_ahead;
    (!held.is_empty()).then(|| RelayEvent::DatabaseDdl(std::mem::take(held)))
}

/// Moves every whole client frame to the server's output. True on Terminate (not forwarded:
/// the server connection outlives the client).
fn scan(
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
        let frame = &buf[pos..pos + total];
        let Some(words) = interceptors::before_client_frame(tag, frame, pos == 0, ex) else {
            // Held for the session (frames ahead of it go now).
            break;
        };
        let step = ex.tracker.step(Direction::Frontend, tag, &[]);
        if step == Step::Terminate {
            terminated = true;
            break;
        }
        ex.stats.count_client_frame(step, tag, rewrite.is_some());
        if ex.features.track_settings {
            interceptors::after_client_step(tag, frame, words, rewrite.as_deref(), &mut ex.features, backend);
        }
        if let Some(rw) = rewrite.as_deref_mut().filter(|_| step != Step::IgnoredByServer) {
            // Statement names are per client: rename, inject or answer (transaction mode).
            backend.wbuf.extend_from_slice(&buf[copied..pos]);
            interceptors::rename_client_frame(
                frame,
                words,
                rw,
                &mut ex.features.batch,
                backend,
                &mut client.wbuf,
            );
            copied = pos + total;
        }
        pos += total;
    }
    if pos > 0 {
        ex.stats.bytes_in += pos as u64;
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
