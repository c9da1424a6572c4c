//! The session's hold on the pool: which pool it draws from, its cancel slot, and the backend it
//! has checked out, if any. Every change of that state goes through one pure transition function
//! (`step`, table-tested in `checkout/tests.rs`); `Checkout` applies its effect, so a backend
//! can only go back to the pool it came from, its cancel slot is cleared whenever it leaves, and
//! a checkout dropped with a backend still attached closes it (it may be mid-request).

use crate::client::cancel::CancelSlot;
use crate::pool::{Pool, Server};
use std::sync::Arc;
use tokio::time::Instant;

#[cfg(test)]
mod tests;

/// Where a session stands with its backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// No backend: the next request needs a checkout.
    Idle,
    /// A backend serves the client: mid-request, idle in a transaction, or kept between
    /// transactions (session mode, pins; whether a request is running is the tracker's to say).
    Attached,
    /// The client left and its backend was returned or closed; nothing attaches any more.
    Closed,
}

/// What happened to the session's backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    /// A backend was checked out (or a parked one taken back) for the client.
    CheckedOut,
    /// The welcome was sent: in transaction mode, login needed the backend only to learn and
    /// apply the client's settings.
    Welcomed { transaction_mode: bool },
    /// The client is between transactions and its backend passed the checks before sharing.
    BetweenTransactions(Sharing),
    /// tidepool closed a statement-only batch on the backend itself; `ok`: that and the checks
    /// before sharing succeeded.
    BatchClosed { ok: bool, pinned: bool },
    /// The server refused the client's settings at attach: the backend itself is sound.
    Refused,
    /// The backend failed, sent FATAL, stopped being the primary, or could not be prepared.
    Lost,
    /// The client left; its backend was cleaned (`true`) or could not be in time.
    Left { cleaned: bool },
}

/// Who may use the backend once a transaction is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Sharing {
    pub transaction_mode: bool,
    /// Session mode routed per transaction (`session_routing = "per_transaction"`).
    pub per_transaction: bool,
    /// Something pins the client to this backend.
    pub pinned: bool,
}

/// What becomes of the backend in a transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Effect {
    /// Nothing: no backend moves.
    None,
    /// The incoming backend becomes the session's.
    Take,
    /// Back to its pool (which discards it if it cannot be reused).
    Release,
    /// Aside, still the session's, so the next transaction may use another node.
    Park,
    /// Closed.
    Discard,
    /// A backend arrived where none can be taken (attached already, or closed): it is closed,
    /// and the one attached stays. Never expected; a leak or a double release otherwise.
    DiscardIncoming,
}

/// The one transition function: where `event` takes a session in `phase`, and what happens to
/// its backend. Total: events that find no backend move nothing.
pub(crate) fn step(phase: Phase, event: Event) -> (Phase, Effect) {
    use Effect::*;
    use Phase::*;
    match (phase, event) {
        (Idle, Event::CheckedOut) => (Attached, Take),
        (Attached | Closed, Event::CheckedOut) => (phase, DiscardIncoming),
        (
            Attached,
            Event::Welcomed {
                transaction_mode: true,
            },
        ) => (Idle, Release),
        (
            Attached,
            Event::Welcomed {
                transaction_mode: false,
            },
        ) => (Attached, None),
        (Attached, Event::BetweenTransactions(s)) if s.pinned => (Attached, None),
        (Attached, Event::BetweenTransactions(s)) if s.transaction_mode => (Idle, Release),
        (Attached, Event::BetweenTransactions(s)) if s.per_transaction => (Idle, Park),
        (Attached, Event::BetweenTransactions(_)) => (Attached, None),
        (Attached, Event::BatchClosed { ok: false, .. }) => (Idle, Discard),
        (Attached, Event::BatchClosed { pinned: true, .. }) => (Attached, None),
        (Attached, Event::BatchClosed { .. }) => (Idle, Release),
        (Attached, Event::Refused) => (Idle, Release),
        (Attached, Event::Lost) => (Idle, Discard),
        (Attached, Event::Left { cleaned: true }) => (Closed, Release),
        (Attached, Event::Left { cleaned: false }) => (Closed, Discard),
        (Idle | Closed, Event::Left { .. }) => (Closed, None),
        (Idle | Closed, _) => (phase, None),
    }
}

/// The session's pool, cancel slot and backend. The pool changes only while no backend is
/// attached, so a backend always returns to the pool it came from.
pub(crate) struct Checkout {
    pool: Arc<Pool>,
    /// The client's cancel slot (from the welcome on): points at the backend while attached.
    cancel: Option<Arc<CancelSlot>>,
    phase: Phase,
    /// `Some` exactly in `Phase::Attached`.
    server: Option<Server>,
    /// When the backend's last answer completed, read once by the session's accounting at the
    /// quiet point: a release right after records it as the connection's last use.
    quiet_at: Option<Instant>,
}

impl Checkout {
    pub(crate) fn new(pool: Arc<Pool>) -> Self {
        Checkout {
            pool,
            cancel: None,
            phase: Phase::Idle,
            server: None,
            quiet_at: None,
        }
    }

    /// The attached backend answered its last request at `at` (see `quiet_at`).
    pub(crate) fn set_quiet_at(&mut self, at: Instant) {
        self.quiet_at = Some(at);
    }

    /// The pool the session draws from (and its backend, if any, came from).
    pub(crate) fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    /// Draws from `pool` from now on. Ignored while a backend is attached: it belongs to the
    /// current pool (never expected; attach chooses the node before checking out).
    pub(crate) fn set_pool(&mut self, pool: Arc<Pool>) {
        debug_assert!(self.server.is_none(), "pool changed under an attached backend");
        if self.server.is_none() {
            self.pool = pool;
        }
    }

    /// The client's cancel slot, once it has one.
    pub(crate) fn cancel_slot(&self) -> Option<&CancelSlot> {
        self.cancel.as_deref()
    }

    pub(crate) fn set_cancel_slot(&mut self, slot: Arc<CancelSlot>) {
        self.cancel = Some(slot);
    }

    pub(crate) fn is_attached(&self) -> bool {
        self.server.is_some()
    }

    pub(crate) fn server(&self) -> Option<&Server> {
        self.server.as_ref()
    }

    pub(crate) fn server_mut(&mut self) -> Option<&mut Server> {
        self.server.as_mut()
    }

    /// The attached backend; only where the session is attached by construction.
    pub(crate) fn attached(&mut self) -> &mut Server {
        self.server.as_mut().expect("attached")
    }

    /// Points the cancel slot at the attached backend (a request may start now). Costs one
    /// atomic swap when it points there already.
    pub(crate) fn arm_cancel(&self) {
        if let (Some(slot), Some(server)) = (&self.cancel, &self.server) {
            slot.arm(&server.addr, server.key);
        }
    }

    /// Attaches `server`, just checked out of `self.pool()` (or taken back from parking).
    pub(crate) fn attach(&mut self, server: Server) {
        self.apply(Event::CheckedOut, Some(server));
    }

    /// Applies `event`; returns the backend when the effect is to park it.
    pub(crate) fn handle(&mut self, event: Event) -> Option<Server> {
        self.apply(event, None)
    }

    fn apply(&mut self, event: Event, incoming: Option<Server>) -> Option<Server> {
        let (phase, effect) = step(self.phase, event);
        self.phase = phase;
        match effect {
            Effect::None => None,
            Effect::Take => {
                self.server = incoming;
                self.quiet_at = None;
                None
            }
            Effect::DiscardIncoming => {
                tracing::error!("a backend was checked out for a session that cannot take it");
                if let Some(server) = incoming {
                    self.pool.discard(server);
                }
                None
            }
            Effect::Release | Effect::Discard | Effect::Park => {
                if let Some(slot) = &self.cancel {
                    slot.set(None);
                }
                let quiet_at = self.quiet_at.take();
                let server = self.server.take()?;
                match effect {
                    Effect::Release => self
                        .pool
                        .release_at(server, quiet_at.unwrap_or_else(Instant::now)),
                    Effect::Discard => self.pool.discard(server),
                    _ => return Some(server),
                }
                None
            }
        }
    }
}

impl Drop for Checkout {
    /// A session that ends (or is killed) with a backend still attached: nobody knows what it is
    /// doing, so it is closed, never handed to another client.
    fn drop(&mut self) {
        if self.server.is_some() {
            self.handle(Event::Lost);
        }
    }
}
