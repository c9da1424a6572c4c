//! Checking a connection back in: a clean one goes to the first waiter or the idle list;
//! anything else (broken, retired, held, past its lifetime) is closed (connections older than
//! a retirement are caught by the core, under its lock) and its slot freed.

use super::core::Released;
use super::{Pool, Server, ServerState};
use tokio::time::Instant;

impl Pool {
    /// Returns a connection that is idle and clean; anything else is discarded.
    pub fn release(&self, conn: Server) {
        self.release_at(conn, Instant::now());
    }

    /// `release`, with the time the connection went idle already read by the caller (one clock
    /// read per transaction, not one per consumer).
    pub fn release_at(&self, mut conn: Server, now: Instant) {
        let close_needed = match &conn.ticket {
            Some(ticket) => {
                ticket.set_state(ServerState::Idle);
                ticket.link(0);
                ticket.entry().close_needed()
            }
            None => false,
        };
        if !conn.is_reusable() || close_needed || self.is_retired() || self.hold.is_held() {
            self.discard(conn);
            return;
        }
        let settings = self.settings.load();
        if settings
            .lifetime
            .is_some_and(|l| now.duration_since(conn.created) >= l)
        {
            self.discard(conn);
            return;
        }
        conn.last_used = now;
        let released = self.lock().release(conn, now);
        if let Released::Close(conn) = released {
            tokio::spawn(conn.terminate());
        }
    }

    /// Closes a connection that must not be reused and frees its slot.
    pub fn discard(&self, conn: Server) {
        self.lock().forget();
        tokio::spawn(conn.terminate());
    }
}
