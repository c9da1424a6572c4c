//! Backend connection caps shared by several pools: `max_db_connections` (every pool of one
//! database) and `max_user_connections` (every pool of one user).
//!
//! A connection holds one [`CapPermit`] per cap from before it is opened until it is dropped
//! (the permits live in its `ServerTicket`), so every way a connection ends gives its place
//! back. A pool that needs a new connection while a cap is full waits, in FIFO order, for a
//! place, within `query_wait_timeout`, as PgBouncer does; the janitor closes idle connections
//! of a full cap's pools so that a waiter of another pool is not stuck behind them.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;
use tokio::time::Instant;

/// One cap: how many connections are open under it, its maximum, and who waits.
#[derive(Debug, Default)]
pub struct ConnCap {
    state: Mutex<CapState>,
}

#[derive(Debug, Default)]
struct CapState {
    open: usize,
    /// 0 = no limit.
    max: usize,
    waiters: VecDeque<oneshot::Sender<CapPermit>>,
}

impl CapState {
    fn has_room(&self) -> bool {
        self.max == 0 || self.open < self.max
    }
}

/// A place under a cap; dropping it frees the place (or hands it to the first waiter).
#[derive(Debug)]
pub struct CapPermit {
    cap: Option<Arc<ConnCap>>,
}

impl Drop for CapPermit {
    fn drop(&mut self) {
        if let Some(cap) = self.cap.take() {
            cap.release();
        }
    }
}

impl ConnCap {
    /// The connections open under this cap and its maximum (0 = none).
    pub fn counts(&self) -> (usize, usize) {
        let state = self.lock();
        (state.open, state.max)
    }

    /// Whether someone waits for a place.
    pub fn has_waiters(&self) -> bool {
        self.lock().waiters.iter().any(|w| !w.is_closed())
    }

    /// A new maximum (reload); places freed by a larger one go to the waiters at once.
    pub fn set_max(self: &Arc<Self>, max: usize) {
        let mut state = self.lock();
        state.max = max;
        self.hand_out(&mut state);
    }

    /// A place now, or `None` when the cap is full (then [`ConnCap::acquire`] waits).
    pub fn try_acquire(self: &Arc<Self>) -> Option<CapPermit> {
        let mut state = self.lock();
        if !state.has_room() || !state.waiters.is_empty() {
            return None;
        }
        state.open += 1;
        Some(self.permit())
    }

    /// A place, waiting in line until `deadline` (`None`: no deadline); `None` at the deadline.
    pub async fn acquire(self: &Arc<Self>, deadline: Option<Instant>) -> Option<CapPermit> {
        if let Some(permit) = self.try_acquire() {
            return Some(permit);
        }
        let receiver = {
            let mut state = self.lock();
            let (sender, receiver) = oneshot::channel();
            state.waiters.push_back(sender);
            // The cap may have grown between the two locks.
            self.hand_out(&mut state);
            receiver
        };
        // A permit sent after the deadline is dropped with the receiver, which frees it again.
        match deadline {
            Some(at) => tokio::time::timeout_at(at, receiver).await.ok()?.ok(),
            None => receiver.await.ok(),
        }
    }

    fn release(self: &Arc<Self>) {
        let mut state = self.lock();
        state.open = state.open.saturating_sub(1);
        self.hand_out(&mut state);
    }

    /// Gives free places to waiters still waiting, first come first served.
    fn hand_out(self: &Arc<Self>, state: &mut CapState) {
        while state.has_room() {
            let Some(waiter) = state.waiters.pop_front() else {
                return;
            };
            state.open += 1;
            if let Err(mut permit) = waiter.send(self.permit()) {
                // That waiter gave up: the place stays free. Dropping the permit here would
                // take the lock again.
                permit.cap = None;
                state.open -= 1;
            }
        }
    }

    fn permit(self: &Arc<Self>) -> CapPermit {
        CapPermit {
            cap: Some(self.clone()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CapState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The caps of the process, per database and per user, created on first use.
#[derive(Debug, Default)]
pub struct ConnCaps {
    databases: Mutex<HashMap<String, Arc<ConnCap>>>,
    users: Mutex<HashMap<String, Arc<ConnCap>>>,
}

impl ConnCaps {
    /// The cap of every pool of `database`.
    pub fn database(&self, database: &str) -> Arc<ConnCap> {
        entry(&self.databases, database)
    }

    /// The cap of every pool of `user`.
    pub fn user(&self, user: &str) -> Arc<ConnCap> {
        entry(&self.users, user)
    }
}

impl ConnCaps {
    /// Sets the maxima of the caps a pool of (`database`, `user`) counts against from `config`:
    /// the database's or user's own value, else `[pool]`'s.
    pub fn configure(&self, config: &crate::config::Config, database: &str, user: &str) {
        let db = config.database(database).and_then(|db| db.max_db_connections);
        self.database(database)
            .set_max(db.unwrap_or(config.pool.max_db_connections));
        let own = config.user(user).and_then(|u| u.max_user_connections);
        self.user(user)
            .set_max(own.unwrap_or(config.pool.max_user_connections));
    }
}

fn entry(map: &Mutex<HashMap<String, Arc<ConnCap>>>, name: &str) -> Arc<ConnCap> {
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    map.entry(name.to_string()).or_default().clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_full_cap_makes_newcomers_wait_in_order() {
        let cap = Arc::new(ConnCap::default());
        cap.set_max(2);
        let a = cap.acquire(None).await.expect("room");
        let _b = cap.acquire(None).await.expect("room");
        assert_eq!(cap.counts(), (2, 2));
        // Full: the next one times out at its deadline, and leaves nothing behind.
        let soon = Instant::now() + Duration::from_secs(1);
        assert!(cap.acquire(Some(soon)).await.is_none());
        assert!(!cap.has_waiters());
        // Two waiters; a freed place goes to the first.
        let first = tokio::spawn({
            let cap = cap.clone();
            async move { cap.acquire(None).await }
        });
        tokio::task::yield_now().await;
        let second = tokio::spawn({
            let cap = cap.clone();
            async move { cap.acquire(None).await }
        });
        tokio::task::yield_now().await;
        assert!(cap.has_waiters());
        drop(a);
        let got = first.await.unwrap().expect("handed over");
        assert!(!second.is_finished());
        assert_eq!(cap.counts(), (2, 2));
        // A larger maximum lets the second in at once.
        cap.set_max(3);
        let _c = second.await.unwrap().expect("room after growing");
        assert_eq!(cap.counts(), (3, 3));
        drop(got);
        assert_eq!(cap.counts(), (2, 3));
    }

    #[tokio::test(start_paused = true)]
    async fn shrinking_closes_no_one_and_no_limit_means_none() {
        let cap = Arc::new(ConnCap::default());
        let permits: Vec<_> = futures_take(&cap, 5).await;
        assert_eq!(cap.counts(), (5, 0));
        cap.set_max(2);
        let soon = Instant::now() + Duration::from_secs(1);
        assert!(cap.acquire(Some(soon)).await.is_none(), "over the new maximum");
        drop(permits);
        assert_eq!(cap.counts(), (0, 2));
        let caps = ConnCaps::default();
        assert!(Arc::ptr_eq(&caps.database("a"), &caps.database("a")));
        assert!(!Arc::ptr_eq(&caps.database("a"), &caps.user("a")));
    }

    async fn futures_take(cap: &Arc<ConnCap>, n: usize) -> Vec<CapPermit> {
        let mut permits = Vec::new();
        for _ in 0..n {
            permits.push(cap.acquire(None).await.expect("no limit"));
        }
        permits
    }
}
