//! Which client uses a backend connection now, and which one last sent NOTIFY through it: read
//! by the notification listener (another task) to tell whose a notification is, written by
//! the session at each checkout with plain atomic stores (no lock, no allocation per request).

use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

/// Milliseconds on the reader's clock (see `client::notify_senders`); wraps after 49 days,
/// which only ages are computed from.
pub type Millis = u32;

#[derive(Debug, Default)]
pub struct Users {
    /// The client pid (the one tidepool gave it) using the connection now or last; 0: none yet.
    current: AtomicI32,
    /// The newest client that sent NOTIFY here (high 32 bits) and when another client took the
    /// connection after it (low 32 bits, `Millis` + 1; 0 while nobody did). One word, so a
    /// reader never pairs a client with another's end.
    notifier: AtomicU64,
}

impl Users {
    /// `client_pid` takes the connection. `now` is read only if a notifier's use ends here.
    pub fn begin(&self, client_pid: i32, now: impl FnOnce() -> Millis) {
        if self.current.swap(client_pid, Ordering::Relaxed) == client_pid {
            return;
        }
        let notifier = self.notifier.load(Ordering::Relaxed);
        let (pid, ended) = unpack(notifier);
        if pid != 0 && pid != client_pid && ended == 0 {
            let ended = now().wrapping_add(1).max(1);
            let _ = self.notifier.compare_exchange(
                notifier,
                pack(pid, ended),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// The current client sent a statement that mentions NOTIFY.
    pub fn mark_notifier(&self, client_pid: i32) {
        self.notifier.store(pack(client_pid, 0), Ordering::Relaxed);
    }

    /// Whose a notification sent now is: the newest notifier while its use runs or ended less
    /// than `late` ms ago, else the current client (a trigger's or function's notification).
    pub fn sender(&self, now: Millis, late: Millis) -> Option<i32> {
        let (pid, ended) = unpack(self.notifier.load(Ordering::Relaxed));
        if pid != 0 && (ended == 0 || now.wrapping_add(1).wrapping_sub(ended) < late) {
            return Some(pid);
        }
        Some(self.current.load(Ordering::Relaxed)).filter(|&pid| pid != 0)
    }
}

fn pack(pid: i32, ended: Millis) -> u64 {
    (u64::from(pid as u32) << 32) | u64::from(ended)
}

fn unpack(word: u64) -> (i32, Millis) {
    ((word >> 32) as u32 as i32, word as u32)
}
