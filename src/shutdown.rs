//! Process-wide stop signal: set once, observed by the listener, sessions and background tasks.
//!
//! Three speeds, after PgBouncer 1.23 and PostgreSQL, each a [`Stage`] the stop only moves
//! forward through:
//!
//! - **drain clients** (SIGTERM, admin `SHUTDOWN WAIT_FOR_CLIENTS`): the listener closes (another
//!   tidepool on the same `SO_REUSEPORT` port takes new connections) and nothing else changes:
//!   connected clients are served as usual, health checks and pools keep running, `/readyz`
//!   says not ready. The process exits once every client has disconnected on its own; there is
//!   no deadline, as in PgBouncer. A later signal or `SHUTDOWN` moves on to a faster stage.
//! - **graceful** (SIGINT, `SHUTDOWN WAIT_FOR_SERVERS`): also closes each client at its next
//!   idle point, between transactions, and at once a client waiting for a server (held by
//!   PAUSE, or queued for a full pool), whose request was not sent anywhere.
//! - **fast** (SIGQUIT, plain `SHUTDOWN`, a repeated signal): also closes clients idle *inside* a transaction
//!   (their backend is rolled back); only requests that are running are waited for. PgBouncer's
//!   plain `SHUTDOWN` exits at once; tidepool still lets running statements answer, because
//!   cutting them off gains a few milliseconds and costs clients an 08006 instead of a 57P01.
//!
//! From graceful on, the process exits after `proxy.shutdown_timeout` at the latest. A SIGTERM
//! drain has no deadline unless `proxy.sigterm_timeout` sets one (for Kubernetes, whose
//! SIGKILL follows SIGTERM): then it turns graceful when that runs out.

use tokio::sync::watch;

/// How far the stop has gone; only ever moves forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Stage {
    Running,
    /// No new connections; connected clients are served until they leave on their own.
    DrainClients,
    /// Close clients between transactions, and those waiting for a server at once.
    Graceful,
    /// Close clients as soon as no request is running, even inside a transaction.
    Fast,
}

/// A flag that goes from running to stopping: draining, graceful, fast (stages may be skipped).
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
    /// Stops accepting and waits for clients to leave (`SHUTDOWN WAIT_FOR_CLIENTS`); never
    /// slows down a shutdown that is further along.
    pub fn trigger_drain(&self) {
        self.advance(Stage::DrainClients);
    }

    /// Starts a graceful shutdown; idempotent, and never slows down a fast one.
    pub fn trigger(&self) {
        self.advance(Stage::Graceful);
    }

    /// Starts (or speeds up to) a fast shutdown.
    pub fn trigger_fast(&self) {
        self.advance(Stage::Fast);
    }

    /// Moves the stop on to `to`; never back.
    pub fn advance(&self, to: Stage) {
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

    /// Resolves once clients are to be closed: a graceful or fast shutdown (at once if it
    /// already is). Draining clients does not count: everything keeps running then.
    pub async fn wait(&self) {
        self.reached(Stage::Graceful).await;
    }

    /// Resolves once a fast shutdown has started.
    pub async fn wait_fast(&self) {
        self.reached(Stage::Fast).await;
    }

    /// Resolves once the stop is at `stage` or further.
    pub async fn reached(&self, stage: Stage) {
        let mut rx = self.tx.subscribe();
        // Only fails if the sender is gone, which means the process is stopping anyway.
        let _ = rx.wait_for(|now| *now >= stage).await;
    }
}

/// A stop request from the operating system, as PgBouncer 1.23+ defines them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGTERM: stop accepting and wait for clients to leave (`SHUTDOWN WAIT_FOR_CLIENTS`).
    Terminate,
    /// SIGINT: graceful, clients closed between transactions (`SHUTDOWN WAIT_FOR_SERVERS`).
    Interrupt,
    /// SIGQUIT: PgBouncer's immediate shutdown, which is tidepool's fast stop (`SHUTDOWN`).
    Quit,
}

impl StopSignal {
    /// The stage this signal asks for when it is the first one.
    pub fn stage(self) -> Stage {
        match self {
            StopSignal::Terminate => Stage::DrainClients,
            StopSignal::Interrupt => Stage::Graceful,
            StopSignal::Quit => Stage::Fast,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            StopSignal::Terminate => "SIGTERM",
            StopSignal::Interrupt => "SIGINT",
            StopSignal::Quit => "SIGQUIT",
        }
    }
}

/// What to do with a stop signal, given how far the stop has gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalAction {
    /// Move the stop on to this stage.
    Advance(Stage),
    /// Exit now, with a failure status: clients are cut off.
    ExitNow,
}

/// PgBouncer 1.23+'s rule: the first stop signal picks the stop; any stop signal while a stop
/// (of any kind, console `SHUTDOWN` included) is under way means "immediate", which is
/// tidepool's fast stop; once fast, a further one exits at once.
pub fn on_signal(now: Stage, signal: StopSignal) -> SignalAction {
    match now {
        Stage::Running => SignalAction::Advance(signal.stage()),
        Stage::Fast => SignalAction::ExitNow,
        Stage::DrainClients | Stage::Graceful => SignalAction::Advance(Stage::Fast),
    }
}

/// SIGTERM, SIGINT and SIGQUIT, installed once; [`StopSignals::recv`] yields each delivery.
pub struct StopSignals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    quit: tokio::signal::unix::Signal,
}

impl StopSignals {
    /// Installs the handlers (from now on these signals no longer kill the process).
    pub fn install() -> std::io::Result<StopSignals> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(StopSignals {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
            quit: signal(SignalKind::quit())?,
        })
    }

    /// The next stop signal.
    pub async fn recv(&mut self) -> StopSignal {
        tokio::select! {
            _ = self.term.recv() => StopSignal::Terminate,
            _ = self.int.recv() => StopSignal::Interrupt,
            _ = self.quit.recv() => StopSignal::Quit,
        }
    }
}

/// Resolves at the first SIGINT (Ctrl-C), SIGTERM or SIGQUIT.
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

    #[test]
    fn signals_follow_pgbouncer_and_a_second_means_immediate() {
        use SignalAction::{Advance, ExitNow};
        use Stage::*;
        use StopSignal::*;
        let cases = [
            (Running, Terminate, Advance(DrainClients)),
            (Running, Interrupt, Advance(Graceful)),
            (Running, Quit, Advance(Fast)),
            // Any stop signal during a stop is PgBouncer's immediate shutdown.
            (DrainClients, Interrupt, Advance(Fast)),
            (DrainClients, Terminate, Advance(Fast)),
            (Graceful, Interrupt, Advance(Fast)),
            (Graceful, Terminate, Advance(Fast)),
            (DrainClients, Quit, Advance(Fast)),
            (Fast, Quit, ExitNow),
            (Fast, Terminate, ExitNow),
            (Fast, Interrupt, ExitNow),
        ];
        for (now, signal, expected) in cases {
            assert_eq!(on_signal(now, signal), expected, "{signal:?} during {now:?}");
        }
    }

    #[test]
    fn stages_are_ordered_from_running_to_fast() {
        let order = [Stage::Running, Stage::DrainClients, Stage::Graceful, Stage::Fast];
        for pair in order.windows(2) {
            assert!(pair[0] < pair[1], "{:?} < {:?}", pair[0], pair[1]);
        }
        // What the rest of the code relies on: draining is a shutdown (readyz, SHOW STATE)
        // but does not close clients nor stop health checks (those wait for Graceful).
        assert!(Stage::DrainClients > Stage::Running);
        assert!(Stage::DrainClients < Stage::Graceful);
    }

    #[tokio::test]
    async fn draining_is_a_shutdown_that_closes_nobody_until_escalated() {
        let shutdown = Shutdown::default();
        shutdown.trigger_drain();
        assert!(shutdown.is_triggered());
        assert_eq!(shutdown.stage(), Stage::DrainClients);
        shutdown.reached(Stage::DrainClients).await;
        let closing = shutdown.wait();
        tokio::pin!(closing);
        assert!(
            futures_poll_once(closing.as_mut()).await.is_none(),
            "draining closes no client"
        );
        shutdown.trigger();
        closing.await;
        shutdown.trigger_drain();
        assert_eq!(
            shutdown.stage(),
            Stage::Graceful,
            "a drain request never slows a stop down"
        );
        shutdown.trigger_fast();
        shutdown.trigger_drain();
        assert_eq!(shutdown.stage(), Stage::Fast);
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
