//! Process-wide stop signal: set once, observed by the listener, sessions and background tasks.

use tokio::sync::watch;

/// A flag that goes from running to stopping exactly once.
#[derive(Debug)]
pub struct Shutdown {
    tx: watch::Sender<bool>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown {
            tx: watch::channel(false).0,
        }
    }
}

impl Shutdown {
    /// Starts the shutdown; idempotent.
    pub fn trigger(&self) {
        self.tx.send_replace(true);
    }

    pub fn is_triggered(&self) -> bool {
        *self.tx.borrow()
    }

    /// A receiver that sees the flag change.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.tx.subscribe()
    }

    /// Resolves once shutdown has started (at once if it already has).
    pub async fn wait(&self) {
        let mut rx = self.tx.subscribe();
        // Only fails if the sender is gone, which means the process is stopping anyway.
        let _ = rx.wait_for(|stopping| *stopping).await;
    }
}

/// Resolves at the first SIGINT (Ctrl-C) or SIGTERM.
pub async fn stop_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result,
        _ = term.recv() => Ok(()),
    }
}
