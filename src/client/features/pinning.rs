//! Session state that cannot move between backends (session advisory locks, temporary tables,
//! WITH HOLD cursors, LISTEN, SQL-level PREPAREs that `sql_prepared` cannot move): while a client
//! holds any, transaction mode keeps it on its backend, and lets go as soon as it holds none.
//!
//! A lexical look at each statement says whether it might create or drop such state; after a
//! transaction where one did, one probe query asks the backend what the client holds now. The
//! probe is exact (rolled-back work, functions that lock, `ON COMMIT DROP` all come out right)
//! and costs a round trip only after such transactions.

use crate::client::features::keywords::{Word, Words};

/// Words after which a client may hold something that pins it.
const PIN_TRIGGERS: &[Word] = &[Word::Advisory, Word::Temp, Word::Hold, Word::Listen];
/// Words after which a pinned client may have let go (checked only while pinned).
const UNPIN_TRIGGERS: &[Word] = &[
    Word::Advisory,
    Word::Discard,
    Word::Close,
    Word::Drop,
    Word::Listen,
    Word::Unlisten,
    Word::Rollback,
    Word::Abort,
];

/// Cheap test: might a statement text with these trigger words take (or, when `pinned`,
/// release) something that pins?
pub fn may_change_pins(words: Words, pinned: bool) -> bool {
    words.any(if pinned { UNPIN_TRIGGERS } else { PIN_TRIGGERS })
}

/// One round trip that counts what the session holds, by kind.
pub const PROBE_SQL: &str = "SELECT \
    (SELECT count(*) FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND pid = pg_catalog.pg_backend_pid()), \
    (SELECT count(*) FROM pg_catalog.pg_class WHERE relnamespace = pg_catalog.pg_my_temp_schema()), \
    (SELECT count(*) FROM pg_catalog.pg_cursors WHERE is_holdable), \
    (SELECT count(*) FROM pg_catalog.pg_listening_channels())";

/// What pins a client to its backend.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pins {
    pub advisory_locks: u32,
    pub temp_relations: u32,
    pub hold_cursors: u32,
    pub listens: u32,
    /// SQL-level `PREPARE`s whose text tidepool could not isolate (the others follow the client,
    /// see `sql_prepared`); counted by `Session::follow_sql_prepared`, not by the probe.
    pub sql_prepared: u32,
    /// Modules loaded with `LOAD`: nothing unloads them, so the backend is closed, not reused,
    /// when the client leaves.
    pub loaded_modules: u32,
}

impl Pins {
    /// Reads the probe's row; missing or odd values count as pinned, to be safe. `sql_prepared`
    /// is left at 0 (the caller keeps its own count).
    pub fn from_row(row: &[Option<String>]) -> Pins {
        let get = |i: usize| {
            row.get(i)
                .and_then(|v| v.as_deref())
                .and_then(|v| v.parse().ok())
                .unwrap_or(1)
        };
        Pins {
            advisory_locks: get(0),
            temp_relations: get(1),
            hold_cursors: get(2),
            listens: get(3),
            sql_prepared: 0,
            loaded_modules: 0,
        }
    }

    pub fn any(&self) -> bool {
        (self.advisory_locks
            | self.temp_relations
            | self.hold_cursors
            | self.listens
            | self.sql_prepared
            | self.loaded_modules)
            != 0
    }

    /// Short description for logs and the admin console.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        for (n, what) in [
            (self.advisory_locks, "advisory lock"),
            (self.temp_relations, "temporary relation"),
            (self.hold_cursors, "WITH HOLD cursor"),
            (self.listens, "LISTEN channel"),
            (self.sql_prepared, "SQL prepared statement"),
            (self.loaded_modules, "LOADed module"),
        ] {
            if n > 0 {
                parts.push(format!("{n} {what}{}", if n == 1 { "" } else { "s" }));
            }
        }
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn triggers() {
        for sql in [
            "SELECT pg_advisory_unlock(1)",
            "SELECT pg_advisory_unlock_all()",
            "UNLISTEN *",
            "DISCARD TEMP",
            "CLOSE c",
            "DROP TABLE t",
        ] {
            assert!(may_change_pins(Words::scan(sql.as_bytes()), true), "{sql}");
        }
        for sql in [
            "SELECT pg_advisory_lock(1)",
            "create temporary table t (x int)",
            "LISTEN jobs",
        ] {
            assert!(may_change_pins(Words::scan(sql.as_bytes()), false), "{sql}");
        }
        assert!(
            !may_change_pins(Words::scan(b"DROP TABLE t"), false),
            "nothing to release when not pinned"
        );
        assert!(!may_change_pins(
            Words::scan(b"SELECT abalance FROM pgbench_accounts WHERE aid = $1"),
            false
        ));
        assert!(!may_change_pins(
            Words::scan(b"UPDATE pgbench_branches SET bbalance = bbalance + $1"),
            true
        ));
    }

    #[test]
    fn probe_rows() {
        let row = |v: [&str; 4]| v.iter().map(|s| Some(s.to_string())).collect::<Vec<_>>();
        assert!(!Pins::from_row(&row(["0", "0", "0", "0"])).any());
        let pins = Pins::from_row(&row(["2", "0", "1", "0"]));
        assert!(pins.any());
        assert_eq!(pins.describe(), "2 advisory locks, 1 WITH HOLD cursor");
        assert!(Pins::from_row(&[]).any(), "an unreadable probe pins, to be safe");
    }
}
