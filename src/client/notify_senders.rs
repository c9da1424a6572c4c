//! Who sent a notification: which client ran on each backend recently, by backend pid, so a
//! notification a backend sent is shown as sent by that client (the pid of its
//! BackendKeyData), as drivers that compare the pid with their own expect.
//!
//! A notification reaches the pool's listener after the sending transaction committed, and
//! possibly after its backend went back to the pool and on to another client. So each backend
//! keeps its last few uses; a use is marked by the relay as soon as it forwards a statement
//! that mentions NOTIFY (or pg_notify). A notification is attributed to the newest marked use
//! that is still running or ended within `LATE_DELIVERY`, else to the newest use (a
//! notification sent by a trigger or a function). Two clients that both NOTIFY through the same
//! backend within milliseconds can still be confused; one client and the next are not.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Backends remembered at most; beyond, the map starts over (old backends are mostly gone).
const BACKENDS_LIMIT: usize = 65_536;
/// Uses remembered per backend.
const USES_PER_BACKEND: usize = 4;
/// How long after a use ended its notifications may still arrive (they come within
/// milliseconds; more only under heavy load).
const LATE_DELIVERY: Duration = Duration::from_secs(2);

#[derive(Debug)]
struct Use {
    client_pid: i32,
    /// Set by the relay when the use forwards a statement mentioning NOTIFY.
    notifies: Arc<AtomicBool>,
    /// When the client released the backend.
    ended: Option<Instant>,
}

#[derive(Debug, Default)]
pub struct BackendUsers {
    by_backend_pid: Mutex<HashMap<i32, VecDeque<Use>>>,
}

impl BackendUsers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, VecDeque<Use>>> {
        self.by_backend_pid.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The client `client_pid` starts using the backend `backend_pid` (once per checkout).
    /// Returns the use's mark, for the relay to set (see above).
    pub(super) fn record(&self, backend_pid: i32, client_pid: i32) -> Arc<AtomicBool> {
        let mut map = self.lock();
        if map.len() >= BACKENDS_LIMIT && !map.contains_key(&backend_pid) {
            map.clear();
        }
        let uses = map.entry(backend_pid).or_default();
        if uses.len() >= USES_PER_BACKEND {
            uses.pop_front();
        }
        let notifies = Arc::new(AtomicBool::new(false));
        uses.push_back(Use {
            client_pid,
            notifies: notifies.clone(),
            ended: None,
        });
        notifies
    }

    /// The client released the backend.
    pub(super) fn end(&self, backend_pid: i32, client_pid: i32) {
        let mut map = self.lock();
        let current = map
            .get_mut(&backend_pid)
            .and_then(|uses| uses.back_mut())
            .filter(|u| u.client_pid == client_pid && u.ended.is_none());
        if let Some(u) = current {
            u.ended = Some(Instant::now());
        }
    }

    /// The pid tidepool gave the client that sent a notification the backend `backend_pid`
    /// sent, if the backend is one of tidepool's.
    pub fn client_of(&self, backend_pid: i32) -> Option<i32> {
        let map = self.lock();
        let uses = map.get(&backend_pid)?;
        let now = Instant::now();
        let notifier = uses.iter().rev().find(|u| {
            u.notifies.load(Ordering::Relaxed)
                && u.ended.is_none_or(|at| now.duration_since(at) < LATE_DELIVERY)
        });
        notifier.or(uses.back()).map(|u| u.client_pid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_late_notification_goes_to_the_client_that_notified() {
        let users = BackendUsers::default();
        assert_eq!(users.client_of(100), None, "not one of ours");
        let first = users.record(100, 1);
        assert_eq!(users.client_of(100), Some(1), "the only use");
        first.store(true, Ordering::Relaxed);
        users.end(100, 1);
        // The backend moves on to client 2, which sends no NOTIFY: a late one is still 1's.
        let second = users.record(100, 2);
        assert_eq!(users.client_of(100), Some(1));
        // Client 2 sends one: what comes now is 2's.
        second.store(true, Ordering::Relaxed);
        assert_eq!(users.client_of(100), Some(2));
        users.end(100, 2);
        // Long after, a notification (a trigger's, say) goes to whoever uses the backend now.
        users.record(100, 3);
        tokio::time::advance(LATE_DELIVERY).await;
        assert_eq!(users.client_of(100), Some(3));
        // Other backends are apart; old uses are forgotten.
        users.record(200, 4);
        for client in 5..5 + USES_PER_BACKEND as i32 {
            users.record(100, client);
        }
        assert_eq!(users.lock()[&100].len(), USES_PER_BACKEND);
        assert_eq!(users.client_of(200), Some(4));
    }
}
