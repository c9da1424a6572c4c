//! What follows a client from one backend to the next in transaction mode, decided after each
//! transaction: settings it changed, state that pins it, and the WAL position of its last write.

use crate::backend::BackendError;
use crate::client::params::follow_reported;
use crate::client::session::Session;

impl Session {
    /// Settings the client changed during the exchange follow it to its next backend.
    pub(crate) fn follow_settings(&mut self) {
        if self.exchange.reported.is_empty() {
            return;
        }
        let reported = std::mem::take(&mut self.exchange.reported);
        follow_reported(&mut self.params.settings, &reported);
        if let Some(backend) = self.checkout.server_mut() {
            follow_reported(&mut backend.applied, &reported);
        }
    }

    pub(crate) fn read_your_writes(&self) -> bool {
        self.routes_per_transaction() && self.has_health() && self.snapshot.config.routing.read_your_writes
    }

    /// After a write transaction: where the primary's WAL is now, so that this client's reads
    /// only go to standbys that replayed that far.
    pub(crate) async fn record_write_position(&mut self) -> Result<(), BackendError> {
        self.routed_write = false;
        let backend = self.checkout.attached();
        let outcome = backend
            .run_simple("SELECT pg_catalog.pg_current_wal_lsn()")
            .await?;
        let lsn = outcome
            .first_row
            .and_then(|row| row.into_iter().next().flatten())
            .and_then(|text| crate::health::Lsn::parse(&text));
        if lsn.is_some() {
            self.ryw_lsn = lsn;
        }
        Ok(())
    }

    /// Asks the backend what the client holds that cannot move (locks, temp tables, cursors,
    /// LISTEN); while it holds any, the backend stays with the client.
    pub(crate) async fn probe_pins(&mut self) -> Result<(), BackendError> {
        self.exchange.features.pins_may_have_changed = false;
        let backend = self.checkout.attached();
        let outcome = backend
            .run_simple(crate::client::features::pinning::PROBE_SQL)
            .await?;
        let row = outcome.first_row.unwrap_or_default();
        let mut pins = crate::client::features::pinning::Pins::from_row(&row);
        pins.sql_prepared = self.pins.sql_prepared;
        pins.loaded_modules = self.pins.loaded_modules;
        self.set_pins(pins);
        Ok(())
    }

    /// Records what pins the client now, counting pinned clients.
    pub(crate) fn set_pins(&mut self, pins: crate::client::features::pinning::Pins) {
        let backend_id = self.checkout.server().map(|b| b.id);
        if pins.any() != self.pins.any() {
            let peer = self.client.peer;
            if pins.any() {
                self.shared
                    .stats
                    .pinned_clients
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::debug!(%peer, backend = backend_id, "client pinned to its backend: {}", pins.describe());
            } else {
                self.shared
                    .stats
                    .pinned_clients
                    .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                tracing::debug!(%peer, backend = backend_id, "client unpinned");
            }
        }
        self.pins = pins;
        self.exchange.features.pinned = pins.any();
    }

    /// Between transactions, before the backend can serve anyone else (released to the pool) or
    /// the client can move to another node's backend (parked): if what ran was not clean, ask
    /// PostgreSQL what the session carries now (see `isolation`). Also takes a due refresh of the
    /// database's hazards, which rides on the same check.
    pub(crate) async fn check_before_sharing(&mut self) -> Result<(), BackendError> {
        use crate::client::features::isolation::Verdict;
        if !self.exchange.features.track_settings {
            return Ok(());
        }
        if std::mem::take(&mut self.exchange.features.isolation.loads_module) {
            let mut pins = self.pins;
            pins.loaded_modules = 1;
            self.set_pins(pins);
        }
        if self.pins.any() {
            // A pinned client keeps its backend: what it did is checked when it lets go, and in
            // full, so nothing of what ran while pinned depends on each transaction's verdict.
            self.exchange.features.isolation.verdict = Verdict::Opaque;
            return Ok(());
        }
        let releasing = self.mode == crate::config::PoolMode::Transaction;
        let effects = &mut self.exchange.features.isolation;
        if releasing && self.hazard_slot.claim_refresh() {
            effects.refresh_claimed = true;
            effects.verdict = effects.verdict.max(Verdict::Settings);
        }
        if effects.verdict == Verdict::Clean {
            return Ok(());
        }
        let reset = releasing && effects.verdict == Verdict::Opaque;
        if Box::pin(self.check_effects(reset)).await? {
            // Code the text did not show took something that cannot move: the client keeps
            // this backend, which the check reset, so its settings go back on.
            let mut pins =
                crate::client::features::pinning::Pins::from_row(&self.exchange.features.isolation.probed);
            pins.sql_prepared = self.pins.sql_prepared;
            self.set_pins(pins);
            let backend = self.checkout.attached();
            if let Some(sql) =
                crate::client::params::settings_diff_sql(&backend.applied, &self.params.settings)
            {
                let outcome = Box::pin(backend.run_simple(&sql)).await?;
                if outcome.error.is_some() {
                    backend.set_state(crate::backend::BackendState::Broken);
                    return Err(BackendError::Closed {
                        addr: backend.addr.to_string(),
                    });
                }
                backend.applied = self.params.settings.clone();
            }
        }
        Ok(())
    }
}
