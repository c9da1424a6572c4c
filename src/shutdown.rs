//! Process-wide stop signal: set once, observed by the listener, sessions and background tasks.
//!
//! Two speeds, after PgBouncer and PostgreSQL: a graceful stop (SIGTERM, admin `SHUTDOWN`) lets
//! each client finish its transaction and closes it at its next idle point; a fast stop
//! (SIGINT) also closes clients idle *inside* a transaction (their backend is rolled back) and
//! only waits for requests that are running. Either way the listener stops at once and the
//! process exits after `proxy.shutdown_timeout` at the latest.

use tokio::sync::watch;

/// How far the stop has gone; only ever moves forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    Running,
    /// Close clients between transactions.
    Graceful,
    /// Close clients as soon as no request is running, even inside a transaction.
    Fast,
}

/// A flag that goes from running to stopping, graceful then possibly fast.
#[derive(Debug)]
pub struct Shutdown {
    tx: watch::Sender<Stage>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Shutdown {
            tx: watch::channel(Stage::Running).0,
        }
    }
}

impl Shutdown {
    /// Starts a graceful shutdown; idempotent, and never slows down a fast one.
    pub fn trigger(&self) {
        self.advance(Stage::Graceful);
    }

    /// Starts (or speeds up to) a fast shutdown.
    pub fn trigger_fast(&self) {
        self.advance(Stage::Fast);
    }

    fn advance(&self, to: Stage) {
        self.tx.send_if_modified(|stage| {
            let forward = *stage < to;
            if forward {
                *stage = to;
            }
            forward
        });
    }

    pub fn is_triggered(&self) -> bool {
        self.stage() > Stage::Running
    }

    pub fn stage(&self) -> Stage {
        *self.tx.borrow()
    }

    /// A receiver that sees the stage change.
    pub fn subscribe(&self) -> watch::Receiver<Stage> {
        self.tx.subscribe()
    }

    /// Resolves once shutdown has started (at once if it already has).
    pub async fn wait(&self) {
        self.wait_for(Stage::Graceful).await;
    }

    /// Resolves once a fast shutdown has started.
    pub async fn wait_fast(&self) {
        self.wait_for(Stage::Fast).await;
    }

    async fn wait_for(&self, stage: Stage) {
        let mut rx = self.tx.subscribe();
        // Only fails if the sender is gone, which means the process is stopping anyway.
        let _ = rx.wait_for(|now| *now >= stage).await;
    }
}

/// A stop request from the operating system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGTERM: graceful.
    Terminate,
    /// SIGINT (Ctrl-C): fast.
    Interrupt,
}

/// SIGTERM and SIGINT, installed once; [`StopSignals::recv`] yields each delivery.
pub struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Installs the handlers (from now on these signals no longer kill the process).
    pub fn install() -> std::io::Result<StopSignals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(StopSignals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// The next stop signal.
    pub async fn recv(&mut self) -> StopSignal {
        tokio::select! {
            _ = self.term.recv() => StopSignal::Terminate,
            _ = self.int.recv() => StopSignal::Interrupt,
        }
    }
}

/// Resolves at the first SIGINT (Ctrl-C) or SIGTERM.
pub async fn stop_signal() -> std::io::Result<()> {
    StopSignals::install()?.recv().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stages_only_move_forward_and_wake_their_waiters() {
        let shutdown = Shutdown::default();
        assert!(!shutdown.is_triggered());
        shutdown.trigger_fast();
        shutdown.trigger();
        assert_eq!(shutdown.stage(), Stage::Fast, "graceful does not undo fast");
        shutdown.wait().await;
        shutdown.wait_fast().await;

        let graceful = Shutdown::default();
        graceful.trigger();
        assert_eq!(graceful.stage(), Stage::Graceful);
        let fast = graceful.wait_fast();
        tokio::pin!(fast);
        assert!(futures_poll_once(fast.as_mut()).await.is_none(), "not fast yet");
        graceful.trigger_fast();
        fast.await;
    }

    /// Polls a future once without blocking.
    async fn futures_poll_once<F: std::future::Future + Unpin>(f: F) -> Option<F::Output> {
        tokio::select! {
            biased;
            out = f => Some(out),
            _ = std::future::ready(()) => None,
        }
    }
}
