//! Who sent a notification: which client ran on each backend recently, by backend pid, so a
//! notification a backend sent is shown as sent by that client (the pid of its
//! BackendKeyData), as drivers that compare the pid with their own expect.
//!
//! A notification reaches the pool's listener after the sending transaction committed, and
//! possibly after its backend went back to the pool and on to another client. So each backend
//! remembers (`backend::Users`, lock-free) the client using it and the newest client whose
//! statement mentioned NOTIFY (or pg_notify), marked by the relay as it forwards it. A
//! notification is attributed to that notifier while its use runs or up to `LATE_DELIVERY`
//! after the next client took the backend, else to the current client (a notification sent by
//! a trigger or a function). Two clients that both NOTIFY through the same backend within
//! milliseconds can still be confused; one client and the next are not.

use crate::backend::{Millis, Users};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// Backends remembered at most; beyond, closed backends' entries are dropped.
const BACKENDS_LIMIT: usize = 65_536;
/// How long after a use ended its notifications may still arrive (they come within
/// milliseconds; more only under heavy load).
const LATE_DELIVERY: Duration = Duration::from_secs(2);

/// Every backend's `Users`, by backend pid. Locked once per backend connection (its first
/// checkout) and per notification, never per request.
#[derive(Debug)]
pub struct BackendUsers {
    by_backend_pid: Mutex<HashMap<i32, Arc<Users>>>,
    /// Where `Millis` count from.
    epoch: Instant,
}

impl Default for BackendUsers {
    fn default() -> Self {
        BackendUsers {
            by_backend_pid: Mutex::default(),
            epoch: Instant::now(),
        }
    }
}

impl BackendUsers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Arc<Users>>> {
        self.by_backend_pid.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Milliseconds since this registry began (wrapping).
    pub fn now(&self) -> Millis {
        self.epoch.elapsed().as_millis() as Millis
    }

    /// The `Users` of the backend `backend_pid`, new (a pid reused by a new backend starts
    /// afresh): the connection keeps it for its lifetime.
    pub(crate) fn register(&self, backend_pid: i32) -> Arc<Users> {
        let mut map = self.lock();
        if map.len() >= BACKENDS_LIMIT {
            // Only closed backends' entries are held by the map alone.
            map.retain(|_, users| Arc::strong_count(users) > 1);
            if map.len() >= BACKENDS_LIMIT {
                map.clear();
            }
        }
        let users = Arc::new(Users::default());
        map.insert(backend_pid, users.clone());
        users
    }

    /// The pid tidepool gave the client that sent a notification the backend `backend_pid`
    /// sent, if the backend is one of tidepool's.
    pub fn client_of(&self, backend_pid: i32) -> Option<i32> {
        let users = self.lock().get(&backend_pid)?.clone();
        users.sender(self.now(), LATE_DELIVERY.as_millis() as Millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_late_notification_goes_to_the_client_that_notified() {
        let registry = BackendUsers::default();
        let now = || registry.now();
        assert_eq!(registry.client_of(100), None, "not one of ours");
        let users = registry.register(100);
        assert_eq!(registry.client_of(100), None, "nobody used it yet");
        users.begin(1, now);
        assert_eq!(registry.client_of(100), Some(1), "the only use");
        users.mark_notifier(1);
        // The backend moves on to client 2, which sends no NOTIFY: a late one is still 1's.
        users.begin(2, now);
        assert_eq!(registry.client_of(100), Some(1));
        // Client 2 sends one: what comes now is 2's.
        users.mark_notifier(2);
        assert_eq!(registry.client_of(100), Some(2));
        // Long after, a notification (a trigger's, say) goes to whoever uses the backend now.
        users.begin(3, now);
        tokio::time::advance(LATE_DELIVERY).await;
        assert_eq!(registry.client_of(100), Some(3));
        // A notifier that keeps the backend (nobody else took it) stays the sender.
        users.mark_notifier(3);
        tokio::time::advance(LATE_DELIVERY * 3).await;
        assert_eq!(registry.client_of(100), Some(3));
        // Other backends are apart; a pid reused by a new backend starts afresh.
        registry.register(200).begin(4, now);
        assert_eq!(registry.client_of(200), Some(4));
        let reused = registry.register(100);
        assert_eq!(registry.client_of(100), None);
        reused.begin(5, now);
        assert_eq!(registry.client_of(100), Some(5));
    }

    #[test]
    fn closed_backends_are_forgotten_first() {
        let registry = BackendUsers::default();
        let kept: Vec<_> = (0..10).map(|pid| registry.register(pid)).collect();
        for pid in 10..BACKENDS_LIMIT as i32 + 5 {
            drop(registry.register(pid));
        }
        let map = registry.lock();
        assert!(map.len() < BACKENDS_LIMIT);
        assert!(
            (0..10).all(|pid| map.contains_key(&pid)),
            "live backends keep their entry"
        );
        drop(kept);
    }
}
