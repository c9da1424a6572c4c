//! The pool's bookkeeping, with no I/O and no async: idle list, open count, FIFO waiters.
//!
//! Callers hold the pool's mutex around every method and never across an `.await`. Anything that
//! needs I/O (connecting, closing, checking) is returned as an instruction for the caller.

use std::collections::VecDeque;
use tokio::sync::oneshot;
use tokio::time::{Duration, Instant};

/// What a connection must match to serve a client: `None` = any connection will do (transaction
/// mode applies settings itself); `Some(sig)` = only one opened with these startup parameters.
pub type Want = Option<u64>;

/// Something the pool stores: it knows its startup signature and when it was opened.
pub trait Pooled {
    fn signature(&self) -> u64;
    fn created(&self) -> Instant;
}

/// What a waiting client is given.
#[derive(Debug)]
pub enum Grant<B> {
    /// A ready connection.
    Conn(B),
    /// A slot: the client opens a new connection itself (counted as open already).
    Slot,
}

/// The answer to an acquire attempt.
#[derive(Debug)]
pub enum Acquire<B> {
    Idle(B),
    /// Open a new connection; the slot is already counted.
    Connect,
    /// Close this idle connection (it has the wrong parameters) and open one in its slot.
    Replace(B),
    /// Pool exhausted: wait on the receiver.
    Wait {
        waiter: u64,
        grant: oneshot::Receiver<Grant<B>>,
    },
}

struct IdleEntry<B> {
    conn: B,
    since: Instant,
}

struct Waiter<B> {
    id: u64,
    want: Want,
    tx: oneshot::Sender<Grant<B>>,
}

/// Sizes the core enforces; replaced on reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub pool_size: usize,
    pub reserve_size: usize,
    pub min_size: usize,
}

/// The synchronous state of one pool.
pub struct PoolCore<B> {
    limits: Limits,
    /// Connections open or being opened, idle or in use.
    open: usize,
    /// Most recently used last: checkout pops from the end (warm caches, and idle ones age out).
    idle: Vec<IdleEntry<B>>,
    waiters: VecDeque<Waiter<B>>,
    next_waiter: u64,
    /// Connections opened at or before this instant close as they come back: their node's role
    /// changed, or the node went down under them. Kept under the same lock as `idle`, so a
    /// release racing a retirement cannot slip a doomed connection into the idle list.
    retired_before: Option<Instant>,
}

/// What a release decided; `Close` connections are the caller's to close.
#[derive(Debug)]
pub enum Released<B> {
    Stored,
    HandedOff,
    /// The waiter wanted other parameters: close this and the waiter opens its own.
    Close(B),
}

impl<B: Pooled> PoolCore<B> {
    pub fn new(limits: Limits) -> Self {
        PoolCore {
            limits,
            open: 0,
            idle: Vec::new(),
            waiters: VecDeque::new(),
            next_waiter: 1,
            retired_before: None,
        }
    }

    /// New sizes (reload). A pool that grew hands its new slots to waiting clients at once;
    /// one that shrank closes the surplus as connections come back.
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
        self.grant_free_slots();
    }

    /// Gives free slots (below `pool_size`) to the first live waiters.
    fn grant_free_slots(&mut self) {
        while self.open < self.limits.pool_size {
            let Some(waiter) = self.waiters.pop_front() else {
                break;
            };
            if waiter.tx.send(Grant::Slot).is_ok() {
                self.open += 1;
            }
        }
    }

    pub fn open(&self) -> usize {
        self.open
    }

    pub fn idle_count(&self) -> usize {
        self.idle.len()
    }

    /// Idle connections released at or before `at`.
    pub fn idle_released_by(&self, at: Instant) -> usize {
        self.idle.iter().filter(|e| e.since <= at).count()
    }

    pub fn waiting(&self) -> usize {
        self.waiters.len()
    }

    /// First step of a checkout.
    pub fn acquire(&mut self, want: Want) -> Acquire<B> {
        if let Some(conn) = self.take_idle(want, |_| true) {
            return Acquire::Idle(conn);
        }
        if self.open < self.limits.pool_size {
            self.open += 1;
            return Acquire::Connect;
        }
        if want.is_some() && !self.idle.is_empty() {
            // Oldest idle connection gives up its slot.
            return Acquire::Replace(self.idle.remove(0).conn);
        }
        let (tx, rx) = oneshot::channel();
        let id = self.next_waiter;
        self.next_waiter += 1;
        self.waiters.push_back(Waiter { id, want, tx });
        Acquire::Wait {
            waiter: id,
            grant: rx,
        }
    }

    /// The idle connection a checkout for `want` would get (the most recently released one that
    /// matches), if `accept` takes it; otherwise nothing changes.
    pub fn take_idle(&mut self, want: Want, accept: impl FnOnce(&mut B) -> bool) -> Option<B> {
        let i = match want {
            None => self.idle.len().checked_sub(1),
            Some(sig) => self.idle.iter().rposition(|e| e.conn.signature() == sig),
        }?;
        accept(&mut self.idle[i].conn).then(|| self.idle.remove(i).conn)
    }

    /// A waiter that waited `reserve_pool_timeout` may open a connection beyond the pool size.
    /// Returns true (and removes the waiter) when the reserve has room.
    pub fn try_reserve(&mut self, waiter: u64) -> bool {
        if self.open >= self.limits.pool_size + self.limits.reserve_size {
            return false;
        }
        let Some(pos) = self.waiters.iter().position(|w| w.id == waiter) else {
            return false;
        };
        self.waiters.remove(pos);
        self.open += 1;
        true
    }

    /// A waiter gave up (timeout, cancel, client gone). False if it was already granted.
    pub fn cancel_wait(&mut self, waiter: u64) -> bool {
        match self.waiters.iter().position(|w| w.id == waiter) {
            Some(pos) => {
                self.waiters.remove(pos);
                true
            }
            None => false,
        }
    }

    /// A healthy connection comes back.
    pub fn release(&mut self, conn: B, now: Instant) -> Released<B> {
        if self.retired_before.is_some_and(|at| conn.created() <= at) {
            self.forget();
            return Released::Close(conn);
        }
        let mut conn = conn;
        while let Some(waiter) = self.waiters.pop_front() {
            let matches = waiter.want.is_none_or(|sig| sig == conn.signature());
            if self.open > self.limits.pool_size + self.limits.reserve_size {
                // Over the limit after a shrink on reload: let this one go.
                self.waiters.push_front(waiter);
                self.open -= 1;
                return Released::Close(conn);
            }
            if matches {
                match waiter.tx.send(Grant::Conn(conn)) {
                    Ok(()) => return Released::HandedOff,
                    Err(Grant::Conn(back)) => conn = back,
                    Err(Grant::Slot) => unreachable!("sent a connection"),
                }
            } else if waiter.tx.send(Grant::Slot).is_ok() {
                // The slot moves to the waiter; this connection is closed.
                return Released::Close(conn);
            }
        }
        if self.open > self.limits.pool_size {
            self.open -= 1;
            return Released::Close(conn);
        }
        self.idle.push(IdleEntry { conn, since: now });
        Released::Stored
    }

    /// A connection was closed or failed to open: its slot goes to the first live waiter.
    pub fn forget(&mut self) {
        self.open = self.open.saturating_sub(1);
        self.grant_free_slots();
    }

    /// Takes out idle connections past `idle_timeout` (beyond `min_size`) or past `lifetime`;
    /// the caller closes them.
    pub fn expire(
        &mut self,
        now: Instant,
        idle_timeout: Option<Duration>,
        lifetime: Option<Duration>,
    ) -> Vec<B> {
        let mut expired = Vec::new();
        let mut i = 0;
        while i < self.idle.len() {
            let entry = &self.idle[i];
            let too_old = lifetime.is_some_and(|l| now.duration_since(entry.conn.created()) >= l);
            let too_idle = idle_timeout.is_some_and(|t| now.duration_since(entry.since) >= t)
                && self.open - expired.len() > self.limits.min_size;
            if too_old || too_idle {
                expired.push(self.idle.remove(i).conn);
            } else {
                i += 1;
            }
        }
        self.open -= expired.len();
        expired
    }

    /// How many connections to open now to reach `min_size`; they are counted as open.
    pub fn prewarm(&mut self) -> usize {
        let missing = self.limits.min_size.saturating_sub(self.open);
        self.open += missing;
        missing
    }

    /// Takes out every idle connection (RECONNECT, shutdown, retired pool).
    pub fn drain_idle(&mut self) -> Vec<B> {
        let all: Vec<B> = self.idle.drain(..).map(|e| e.conn).collect();
        self.open -= all.len();
        all
    }

    /// Retires every connection open at `now`: the idle ones are returned (counted as closed)
    /// for the caller to close, the busy ones close when released.
    pub fn retire_open(&mut self, now: Instant) -> Vec<B> {
        self.retired_before = Some(now);
        let idle = self.drain_idle();
        self.grant_free_slots();
        idle
    }

    /// Removes and returns the idle connections `stale` picks (RECONNECT); they count as closed.
    pub fn drain_idle_where(&mut self, stale: impl Fn(&B) -> bool) -> Vec<B> {
        let (gone, kept): (Vec<_>, Vec<_>) = self.idle.drain(..).partition(|e| stale(&e.conn));
        self.idle = kept;
        self.open -= gone.len();
        gone.into_iter().map(|e| e.conn).collect()
    }
}

#[cfg(test)]
mod tests;
