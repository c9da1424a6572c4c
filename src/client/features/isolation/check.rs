//! The check after a transaction that was not clean: one simple Query that reads what the
//! session carries (and, after an opaque transaction, resets it to the pool's baseline and
//! possibly reads the catalog's hazards), and the merge of its answer into the client's state.

use super::catalog::{Hazards, BODY_SETTING_NAMES_SQL, HAZARDS_SQL};
use super::{Verdict, RESET_SQL};
use crate::backend::BackendError;
use crate::client::params::{literal, set};
use crate::client::session::Session;

/// Reads back session-sourced settings (by value as `SHOW` gives it), role and session
/// authorization (NULL when at their defaults) and the given custom settings by name.
/// With `from_bodies`, also the names user functions' bodies show, read from the catalog in the
/// same statement (the snapshot that lists them may not be loaded yet).
fn readback_sql(custom: &[String], from_bodies: bool) -> String {
    let mut sql = String::from(
        "SELECT 's', name, pg_catalog.current_setting(name) FROM pg_catalog.pg_settings \
         WHERE source = 'session' \
         UNION ALL SELECT 'a', 'role', NULLIF(pg_catalog.current_setting('role'), 'none') \
         UNION ALL SELECT 'a', 'session_authorization', NULLIF(\
         pg_catalog.current_setting('session_authorization'), \
         (SELECT a.usename::text FROM pg_catalog.pg_stat_activity a WHERE a.pid = pg_catalog.pg_backend_pid()))",
    );
    if !custom.is_empty() {
        let list: Vec<String> = custom.iter().map(|n| literal(n)).collect();
        sql.push_str(&format!(
            " UNION ALL SELECT 'c', n, pg_catalog.current_setting(n, true) \
             FROM pg_catalog.unnest(ARRAY[{}]::text[]) n",
            list.join(", ")
        ));
    }
    if from_bodies {
        sql.push_str(&format!(
            " UNION ALL SELECT 'c', n, pg_catalog.current_setting(n, true) FROM ({}) body_names(n)",
            BODY_SETTING_NAMES_SQL.trim_end()
        ));
    }
    sql
}

/// What the backend carries, from the readback rows: (name, value) of every setting the session
/// set, in the order to apply them (session authorization first: setting it resets the role).
fn carried(rows: &[Vec<Option<String>>]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut authorization = None;
    for row in rows.iter().filter(|r| r.len() == 3) {
        let (Some(kind), Some(name)) = (&row[0], &row[1]) else {
            continue;
        };
        let Some(value) = &row[2] else {
            continue;
        };
        match kind.as_str() {
            "a" if name == "session_authorization" => authorization = Some(value.clone()),
            // A custom setting reset or never set reads as '' (its placeholder lives on).
            "c" if value.is_empty() => {}
            "s" | "a" | "c" => set(&mut out, name.clone(), value.clone()),
            _ => {}
        }
    }
    if let Some(user) = authorization {
        out.insert(0, ("session_authorization".to_string(), user));
    }
    out
}

impl Session {
    /// After a transaction whose verdict was not clean: reads back what the session carries and
    /// makes it the client's; with `reset` (an opaque transaction, backend going back to the
    /// pool) also returns the backend to the pool's baseline in the same round trip, and asks
    /// whether code took something that cannot move (then it returns true: the client must be
    /// pinned, the pin probe's row is in `probed`).
    pub(crate) async fn check_effects(&mut self, reset: bool) -> Result<bool, BackendError> {
        let (sql, refresh) = self.check_sql(reset);
        let stats = &self.shared.stats;
        stats
            .isolation_checks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if reset {
            stats
                .isolation_resets
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        let backend = self.checkout.attached();
        let outcome = match backend.run_simple_rows(&sql).await {
            Ok(o) if o.error.is_none() => o,
            failed => {
                if refresh {
                    // The hazards were not read: the refresh is free to be claimed again.
                    self.hazard_slot.release();
                }
                let e = failed?.parsed_error().unwrap_or_default();
                // Not knowing what the session carries, the backend cannot be shared.
                backend.set_state(crate::backend::BackendState::Broken);
                return Err(BackendError::Server {
                    addr: backend.addr.to_string(),
                    code: e.code,
                    message: format!("session state check failed: {}", e.message),
                    fatal: false,
                });
            }
        };
        Ok(self.adopt_checked(outcome.rows, reset, refresh))
    }

    /// The check's SQL, and whether it claimed the catalog's hazards refresh.
    fn check_sql(&mut self, reset: bool) -> (String, bool) {
        let effects = &mut self.exchange.features.isolation;
        let opaque = effects.verdict == Verdict::Opaque;
        let mut names = std::mem::take(&mut effects.names);
        let backend = self.checkout.attached();
        let known = self.params.settings.iter().chain(backend.applied.iter());
        for (name, _) in known {
            if name.contains('.') && !names.contains(name) {
                names.push(name.clone());
            }
        }
        if opaque {
            for name in effects.hazards.iter().flat_map(|h| &h.setting_names) {
                if !names.contains(name) {
                    names.push(name.clone());
                }
            }
        }
        // Before the database's hazards are known, the names come from the catalog itself.
        let mut sql = readback_sql(&names, opaque && effects.hazards_id() == 0);
        if reset {
            sql.push_str("; ");
            sql.push_str(RESET_SQL);
            sql.push_str("; ");
            sql.push_str(crate::client::features::pinning::PROBE_SQL);
        }
        let refresh = effects.refresh_claimed;
        if refresh {
            sql.push_str("; ");
            sql.push_str(HAZARDS_SQL);
        }
        (sql, refresh)
    }

    /// Makes what the check read the client's state (and the backend's, unless it was reset);
    /// installs the hazards it read. True when the pin probe says the client must be pinned.
    fn adopt_checked(&mut self, rows: Vec<Vec<Option<String>>>, reset: bool, refresh: bool) -> bool {
        let now = carried(&rows);
        // The client's state: its startup values (what RESET returns to), then what it set.
        let mut settings = self.params.startup_settings.clone();
        for (name, value) in &now {
            set(&mut settings, name.clone(), value.clone());
        }
        if let Some(i) = settings.iter().position(|(n, _)| n == "session_authorization") {
            let entry = settings.remove(i);
            settings.insert(0, entry);
        }
        self.params.settings = settings;
        self.checkout.attached().applied = if reset { Vec::new() } else { now };
        if refresh {
            let hazard_rows = rows
                .iter()
                .filter(|r| r.len() == 2)
                .filter_map(|r| match (&r[0], &r[1]) {
                    (Some(kind), Some(name)) => Some((kind.as_str(), name.as_str())),
                    _ => None,
                });
            let hazards = Hazards::from_rows(hazard_rows);
            tracing::debug!(database = %self.params.database, "session-state hazards read from the catalog");
            self.hazard_slot.install(hazards);
            self.exchange.features.isolation.refresh_claimed = false;
        }
        let probed = rows.into_iter().find(|r| r.len() == 4).unwrap_or_default();
        let pinned = reset && crate::client::features::pinning::Pins::from_row(&probed).any();
        self.exchange.features.isolation.probed = probed;
        self.exchange.features.isolation.checked();
        pinned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(kind: &str, name: &str, value: Option<&str>) -> Vec<Option<String>> {
        vec![Some(kind.into()), Some(name.into()), value.map(String::from)]
    }

    #[test]
    fn carried_settings_in_apply_order() {
        let rows = vec![
            row("s", "search_path", Some("x")),
            row("a", "role", Some("low")),
            row("a", "session_authorization", Some("acc")),
            row("c", "app.tenant", Some("42")),
            row("c", "app.unset", Some("")),
            row("c", "app.never", None),
            vec![Some("r".into()), Some("trg".into())],
        ];
        assert_eq!(
            carried(&rows),
            vec![
                ("session_authorization".to_string(), "acc".to_string()),
                ("search_path".to_string(), "x".to_string()),
                ("role".to_string(), "low".to_string()),
                ("app.tenant".to_string(), "42".to_string()),
            ]
        );
        assert!(
            carried(&[row("a", "role", None)]).is_empty(),
            "role at its default"
        );
    }

    #[test]
    fn readback_names_custom_settings_as_literals() {
        let sql = readback_sql(&["app.tenant".to_string()], false);
        assert!(sql.contains("ARRAY[E'app.tenant']"));
        assert!(!readback_sql(&[], false).contains("unnest"));
        assert!(readback_sql(&[], true).contains("prosrc"));
    }
}
