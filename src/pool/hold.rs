//! A pool's hold on new connections while a client's statement needs the pool's database to
//! itself (CREATE DATABASE … TEMPLATE, DROP DATABASE, ALTER DATABASE … RENAME: see
//! `client/database_ddl.rs`). While held, the pool opens no connection (checkouts that would
//! open one wait, prewarming skips) and closes connections as they are released, so none is
//! connected to the database when PostgreSQL looks for other sessions.

use std::sync::Arc;
use tokio::sync::watch;
use tokio::time::Instant;

/// How many statements hold the pool now; a watch, so waiters learn when it drops to zero.
#[derive(Debug)]
pub(super) struct Hold {
    holders: watch::Sender<usize>,
}

impl Default for Hold {
    fn default() -> Self {
        Hold {
            holders: watch::channel(0).0,
        }
    }
}

impl Hold {
    pub(super) fn is_held(&self) -> bool {
        *self.holders.borrow() > 0
    }

    fn take(&self) {
        self.holders.send_modify(|n| *n += 1);
    }

    fn give_back(&self) {
        self.holders.send_modify(|n| *n = n.saturating_sub(1));
    }

    /// Resolves once nobody holds the pool; false if `deadline` came first.
    pub(super) async fn wait_released(&self, deadline: Option<Instant>) -> bool {
        let mut rx = self.holders.subscribe();
        let released = rx.wait_for(|n| *n == 0);
        match deadline {
            // The sender lives as long as the pool.
            Some(at) => tokio::time::timeout_at(at, released).await.is_ok(),
            None => released.await.is_ok(),
        }
    }
}

/// One statement's hold on a pool; dropping it lets the pool open connections again.
#[must_use = "the hold ends when this is dropped"]
pub struct CheckoutHold {
    pool: Arc<super::Pool>,
}

impl CheckoutHold {
    pub(super) fn new(pool: Arc<super::Pool>) -> Self {
        pool.hold.take();
        CheckoutHold { pool }
    }
}

impl Drop for CheckoutHold {
    fn drop(&mut self) {
        self.pool.hold.give_back();
    }
}

impl std::fmt::Debug for CheckoutHold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CheckoutHold({})", self.pool.key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn waiters_go_when_the_last_holder_leaves_or_at_their_deadline() {
        let hold = Hold::default();
        assert!(hold.wait_released(None).await);
        hold.take();
        hold.take();
        assert!(hold.is_held());
        let soon = Instant::now() + Duration::from_secs(1);
        assert!(!hold.wait_released(Some(soon)).await);
        hold.give_back();
        assert!(hold.is_held());
        hold.give_back();
        assert!(!hold.is_held());
        assert!(hold.wait_released(Some(Instant::now())).await);
    }
}
