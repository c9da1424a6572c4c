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
}
