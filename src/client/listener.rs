//! The accept loop: one task per client connection, until shutdown.

use crate::app::Shared;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

/// Counts client connections against `max_client_conn`.
#[derive(Debug, Default)]
pub struct ClientCounter {
    current: AtomicUsize,
}

impl ClientCounter {
    /// Takes a place if fewer than `limit` are taken.
    pub fn try_enter(&self, limit: usize) -> bool {
        self.current
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok()
    }

    pub fn leave(&self) {
        self.current.fetch_sub(1, Ordering::AcqRel);
    }

    pub fn current(&self) -> usize {
        self.current.load(Ordering::Acquire)
    }
}

/// Accepts clients until shutdown starts; each gets a task tracked by `tasks`.
///
/// At shutdown the listener is not simply dropped: with SO_REUSEPORT the kernel has already
/// queued connections on it (completed handshakes in its backlog), and closing it would reset
/// them, which a client sees as a refused connection during a binary upgrade. So the backlog is
/// accepted to the end first (those clients are served their first request, see `drain.rs`),
/// and only then is the listener closed; from that moment the kernel sends every new connection
/// to the other listener on the port.
pub async fn accept_loop(shared: Arc<Shared>, listener: TcpListener, tasks: TaskTracker) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shared.shutdown.wait() => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                tasks.spawn(super::login::serve(shared.clone(), stream, peer));
            }
            Err(e) => {
                // Out of file descriptors and similar: back off instead of spinning.
                tracing::error!(error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
    // Straight to the socket: the reactor may not have seen the latest arrivals yet.
    let drained = match listener.into_std() {
        Ok(listener) => drain_backlog(&shared, &listener, &tasks),
        Err(e) => {
            tracing::warn!(error = %e, "cannot drain the listen backlog");
            0
        }
    };
    tracing::info!(backlog = drained, "listener closed");
}

/// Accepts whatever the kernel has queued, without waiting for more, then closes the listener;
/// returns how many were accepted.
fn drain_backlog(shared: &Arc<Shared>, listener: &std::net::TcpListener, tasks: &TaskTracker) -> usize {
    let mut drained = 0;
    loop {
        let accepted = listener.accept().and_then(|(stream, peer)| {
            stream.set_nonblocking(true)?;
            Ok((tokio::net::TcpStream::from_std(stream)?, peer))
        });
        match accepted {
            Ok((stream, peer)) => {
                drained += 1;
                tasks.spawn(super::login::serve(shared.clone(), stream, peer));
            }
            // WouldBlock: the backlog is empty (the listener is non-blocking). Other errors (out
            // of descriptors, …) cannot be waited out during shutdown.
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return drained,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionAborted => continue,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed while draining the backlog");
                return drained;
            }
        }
    }
}
