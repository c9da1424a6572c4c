//! What follows a client from one backend to the next in transaction mode, decided after each
//! transaction: settings it changed, state that pins it, and the WAL position of its last write.

use super::params::follow_reported;
use super::session::Session;
use crate::backend::BackendError;

impl Session {
    /// Settings the client changed during the exchange follow it to its next backend.
    pub(super) fn follow_settings(&mut self) {
        if self.exchange.reported.is_empty() {
            return;
        }
        let reported = std::mem::take(&mut self.exchange.reported);
        follow_reported(&mut self.params.settings, &reported);
        if let Some(backend) = self.backend.as_mut() {
            follow_reported(&mut backend.applied, &reported);
        }
    }

    pub(super) fn read_your_writes(&self) -> bool {
        self.routes_per_transaction()
            && self.health().is_some()
            && self.snapshot.config.routing.read_your_writes
    }

    /// After a write transaction: where the primary's WAL is now, so that this client's reads
    /// only go to standbys that replayed that far.
    pub(super) async fn record_write_position(&mut self) -> Result<(), BackendError> {
        self.routed_write = false;
        let backend = self.backend.as_mut().expect("attached");
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
    pub(super) async fn probe_pins(&mut self) -> Result<(), BackendError> {
        self.exchange.pins_may_have_changed = false;
        let backend = self.backend.as_mut().expect("attached");
        let outcome = backend.run_simple(super::pinning::PROBE_SQL).await?;
        let row = outcome.first_row.unwrap_or_default();
        let mut pins = super::pinning::Pins::from_row(&row);
        pins.sql_prepared = self.pins.sql_prepared;
        self.set_pins(pins);
        Ok(())
    }

    /// Records what pins the client now, counting pinned clients.
    pub(super) fn set_pins(&mut self, pins: super::pinning::Pins) {
        let backend_id = self.backend.as_ref().map(|b| b.id);
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
        self.exchange.pinned = pins.any();
    }

    /// After a transaction that ran SET/RESET/DISCARD ALL: reads back what the settings are now
    /// and records them as the client's (they follow it) and as the backend's (so the next client
    /// gets only its own). One round trip, only after such transactions.
    pub(super) async fn carry_setting_changes(&mut self) -> Result<(), BackendError> {
        let changes = std::mem::take(&mut self.exchange.changes);
        let backend = self.backend.as_mut().expect("attached");
        let settings = &mut self.params.settings;
        if changes.reset_all {
            // The backend went back to server defaults; the client to its startup values.
            *settings = self.params.startup_settings.clone();
            backend.applied.clear();
        }
        for name in &changes.reset {
            settings.retain(|(n, _)| n != name);
            if let Some((_, v)) = self.params.startup_settings.iter().find(|(n, _)| n == name) {
                settings.push((name.clone(), v.clone()));
            }
            backend.applied.retain(|(n, _)| n != name);
        }
        if changes.set.is_empty() {
            return Ok(());
        }
        let columns: Vec<String> = changes
            .set
            .iter()
            .map(|n| format!("pg_catalog.current_setting({}, true)", super::params::literal(n)))
            .collect();
        let outcome = backend
            .run_simple(&format!("SELECT {}", columns.join(", ")))
            .await?;
        let row = outcome.first_row.unwrap_or_default();
        for (name, value) in changes.set.iter().zip(row) {
            if let Some(value) = value {
                super::params::set(settings, name.clone(), value.clone());
                super::params::set(&mut backend.applied, name.clone(), value);
            }
        }
        Ok(())
    }
}
