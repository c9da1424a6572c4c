//! Transaction mode's isolation: no client ever sees another's session state.
//!
//! Per request, `verdict` judges the SQL text against what `catalog` knows of the database:
//! `Clean` (only statements and functions that cannot leave session state behind: the common
//! case, which costs nothing more), `Settings` (SET / RESET / DISCARD by names the text shows)
//! or `Opaque` (anything else: any other function, DO, CALL, LOAD, a relation with triggers or
//! sequence defaults, FunctionCall, a text the lexer cannot be sure of). After a transaction
//! that was not clean, before its backend goes back to the pool, `check` asks PostgreSQL what
//! the session carries now (settings by source, role, session authorization, custom settings
//! by name), adopts it as the client's state (so the client keeps its own `set_config` on its
//! next backend), and after an opaque one resets the backend to the pool's baseline in the same
//! round trip (`RESET ALL`, role, session authorization, `DISCARD SEQUENCES`), so that even a
//! custom setting whose name nothing showed cannot reach the next client.

pub mod catalog;
mod check;
pub mod lexer;
pub mod verdict;

pub use catalog::{HazardCatalogs, HazardSlot, Hazards};
pub use verdict::Verdict;

use std::sync::Arc;

/// What the requests of the current transaction(s) on this backend may have left behind.
#[derive(Debug)]
pub struct Effects {
    /// The worst verdict since the backend was last checked.
    pub verdict: Verdict,
    /// The catalog snapshot requests are judged against (taken at attach; None before the
    /// first attach: nothing is clean). An Option so that a new `Effects` allocates nothing.
    pub hazards: Option<Arc<Hazards>>,
    /// Verdict of the unnamed statement last parsed on this backend by this client; a Bind of the
    /// unnamed statement with none parsed since attach is opaque.
    pub unnamed: Verdict,
    /// Custom setting names the non-clean texts showed (read back by the check).
    pub names: Vec<String>,
    /// This check also reads the catalog (the slot was due and this session claimed it).
    pub refresh_claimed: bool,
    /// A `LOAD` ran: the client is pinned and its backend is never reused.
    pub loads_module: bool,
    /// The pin probe's row from the last reset check (see `check`).
    pub probed: Vec<Option<String>>,
    /// The last unnamed Parse's verdict: (keyed hash of its text, the snapshot's id, verdict).
    /// Boxed: clients of the simple protocol never parse, and it would size every session.
    last_parse: Option<Box<(u64, u64, Verdict)>>,
}

impl Default for Effects {
    fn default() -> Self {
        Effects {
            verdict: Verdict::Clean,
            hazards: None,
            unnamed: Verdict::Opaque,
            names: Vec::new(),
            refresh_claimed: false,
            loads_module: false,
            probed: Vec::new(),
            last_parse: None,
        }
    }
}

impl Effects {
    /// Judges a Query text (or the text of a statement being executed) and raises the verdict.
    pub fn judge_text(&mut self, sql: &[u8]) -> Verdict {
        if self.verdict == Verdict::Opaque {
            return Verdict::Opaque;
        }
        let v = self.judge(sql);
        self.raise(v, sql);
        v
    }

    /// The verdict of `sql` against the snapshot taken at attach (opaque without one).
    pub fn judge(&self, sql: &[u8]) -> Verdict {
        match &self.hazards {
            Some(hazards) => verdict::judge(sql, hazards),
            None => Verdict::Opaque,
        }
    }

    /// The verdict of an unnamed Parse's text. Drivers parse the same text again and again, so
    /// the last one's verdict is kept under a hash of the text keyed by the snapshot (a random
    /// key: no client can aim two texts at one hash), for the same snapshot only.
    pub fn judge_parse(&mut self, sql: &[u8]) -> Verdict {
        let Some(hazards) = &self.hazards else {
            return Verdict::Opaque;
        };
        if hazards.id == 0 {
            // Not a catalog snapshot (nothing read yet): nothing to remember it by.
            return verdict::judge(sql, hazards);
        }
        let hash = std::hash::BuildHasher::hash_one(&hazards.text_key, sql);
        match self.last_parse.as_deref_mut() {
            Some(&mut (h, id, v)) if h == hash && id == hazards.id => v,
            last => {
                let v = verdict::judge(sql, hazards);
                match last {
                    Some(kept) => *kept = (hash, hazards.id, v),
                    None => self.last_parse = Some(Box::new((hash, hazards.id, v))),
                }
                v
            }
        }
    }

    /// The id of the snapshot judged against (0: none, or not read yet).
    pub fn hazards_id(&self) -> u64 {
        self.hazards.as_ref().map_or(0, |h| h.id)
    }

    /// Raises the verdict to at least `v`; names in `sql` are kept when it is not clean.
    pub fn raise(&mut self, v: Verdict, sql: &[u8]) {
        if v > Verdict::Clean {
            verdict::setting_names(sql, &mut self.names);
            self.loads_module |= v == Verdict::Opaque && verdict::loads_module(sql);
        }
        self.verdict = self.verdict.max(v);
    }

    /// The backend was checked (or replaced): nothing is pending.
    pub fn checked(&mut self) {
        self.verdict = Verdict::Clean;
        self.names.clear();
    }
}

/// Statements that bring a backend back to the pool's baseline (see the backend's reset).
pub use crate::backend::BASELINE_SQL as RESET_SQL;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_parse_verdict_is_remembered_for_its_text_and_snapshot_only() {
        let snapshot = |id, rows: &[(&'static str, &'static str)]| {
            let mut h = Hazards::from_rows(rows.iter().copied());
            h.id = id;
            Some(Arc::new(h))
        };
        let mut e = Effects {
            hazards: snapshot(1, &[]),
            ..Effects::default()
        };
        let select = b"SELECT * FROM audited WHERE id = $1";
        assert_eq!(e.judge_parse(select), Verdict::Clean);
        assert_eq!(e.judge_parse(select), Verdict::Clean, "remembered");
        assert_eq!(
            e.judge_parse(b"SELECT nextval('s')"),
            Verdict::Opaque,
            "another text"
        );
        assert_eq!(e.judge_parse(select), Verdict::Clean);
        // A new snapshot in which the table runs code: judged again.
        e.hazards = snapshot(2, &[("r", "audited")]);
        assert_eq!(e.judge_parse(select), Verdict::Opaque);
        // Before the catalog was read (id 0) nothing is remembered.
        e.hazards = Some(Arc::new(Hazards::unknown()));
        assert_eq!(e.judge_parse(select), Verdict::Opaque);
        e.hazards = None;
        assert_eq!(e.judge_parse(select), Verdict::Opaque);
    }

    #[test]
    fn verdict_only_rises_until_checked() {
        let mut e = Effects {
            hazards: Some(Arc::new(Hazards::default())),
            ..Effects::default()
        };
        assert_eq!(e.judge_text(b"SELECT 1"), Verdict::Clean);
        assert_eq!(e.judge_text(b"SET app.tenant = '7'"), Verdict::Settings);
        assert_eq!(e.names, vec!["app.tenant".to_string()]);
        assert_eq!(e.judge_text(b"SELECT 2"), Verdict::Clean);
        assert_eq!(e.verdict, Verdict::Settings);
        e.judge_text(b"DO $$BEGIN PERFORM set_config('app.x', '1', false); END$$");
        assert_eq!(e.verdict, Verdict::Opaque);
        assert!(e.names.contains(&"app.x".to_string()));
        e.checked();
        assert_eq!(e.verdict, Verdict::Clean);
        assert!(e.names.is_empty());
    }
}
