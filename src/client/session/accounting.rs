//! What a session records for SHOW STATS and the metrics: wait for a backend, requests,
//! transactions, query time, bytes, Parse/Bind messages and error classes. A few relaxed
//! atomic adds and histogram observations per transaction; the relay itself only bumps plain
//! fields in `Exchange`.

use crate::client::session::relay::RelayEvent;
use crate::client::session::Session;
use crate::metrics::Role;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Whole microseconds without 128-bit division (this runs on every transaction).
fn micros(d: Duration) -> u64 {
    d.as_secs()
        .saturating_mul(1_000_000)
        .saturating_add(u64::from(d.subsec_micros()))
}

/// Moves a plain counter into a pool counter (nothing when it is zero, the usual case).
fn add(total: &AtomicU64, count: &mut u32) {
    if *count > 0 {
        total.fetch_add(u64::from(std::mem::take(count)), Ordering::Relaxed);
    }
}

impl Session {
    /// Parses answered without a backend (statements PostgreSQL already accepted) count as the
    /// client's too.
    pub(crate) fn account_local_parses(&mut self) {
        add(
            &self.checkout.pool().stats.client_parses,
            &mut self.statements.answered_parses,
        );
    }

    /// The role of the node serving the client now.
    fn role(&self) -> Role {
        if self.on_standby {
            Role::Standby
        } else {
            Role::Primary
        }
    }

    /// A backend was checked out after `waited`.
    pub(crate) fn account_checkout(&self, waited: Duration) {
        self.checkout.pool().metrics.wait.observe(waited);
        self.shared.metrics.role(self.role()).wait.observe(waited);
        self.checkout
            .pool()
            .stats
            .wait_time_us
            .fetch_add(micros(waited), Ordering::Relaxed);
    }

    /// Moves what the relay noted into the pool's counters and the metrics.
    pub(crate) fn account_relay(&mut self, event: &RelayEvent) {
        let role = self.role();
        let stats = &self.checkout.pool().stats;
        let metrics = self.shared.metrics.role(role);
        let ex = &mut self.exchange;
        if ex.stats.bytes_in > 0 {
            stats
                .received
                .fetch_add(std::mem::take(&mut ex.stats.bytes_in), Ordering::Relaxed);
        }
        if ex.stats.bytes_out > 0 {
            stats
                .sent
                .fetch_add(std::mem::take(&mut ex.stats.bytes_out), Ordering::Relaxed);
        }
        for class in ex.stats.error_classes.drain(..) {
            self.shared.metrics.errors.record(class);
        }
        if ex.stats.requests > 0 {
            let n = std::mem::take(&mut ex.stats.requests) as u64;
            stats.queries.fetch_add(n, Ordering::Relaxed);
            metrics.queries.inc_by(n);
        }
        // Extended protocol (SHOW STATS parse/bind columns): plain fields until here.
        add(&stats.client_parses, &mut ex.stats.parses);
        add(&stats.binds, &mut ex.stats.binds);
        add(&stats.server_parses, &mut ex.stats.forwarded_parses);
        add(&stats.server_parses, &mut self.pipeline.server_parses);
        let mut quiet_at = None;
        if matches!(event, RelayEvent::Idle | RelayEvent::IdleInTransaction) {
            if let Some(since) = ex.stats.busy_since.take() {
                // The one clock read of the quiet point: also the backend's last use if it is
                // released now.
                let now = tokio::time::Instant::now();
                quiet_at = Some(now);
                let took = now.saturating_duration_since(since);
                self.checkout.pool().metrics.query_duration.observe(took);
                metrics.query_duration.observe(took);
                stats.query_time_us.fetch_add(micros(took), Ordering::Relaxed);
            }
        }
        if matches!(event, RelayEvent::Idle) {
            stats.transactions.fetch_add(1, Ordering::Relaxed);
            metrics.transactions.inc();
        }
        if let Some(at) = quiet_at {
            self.checkout.set_quiet_at(at);
        }
    }
}
