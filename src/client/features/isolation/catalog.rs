//! What the database's catalog says can run code behind a plain statement's back: functions
//! from outside the core catalog, and relations whose triggers, rules, defaults, identity
//! columns, constraints, policies or index expressions run such code or a core function that
//! changes session state (see `hazards.sql`). One snapshot per database, read by the check after
//! an opaque transaction (no round trip of its own) and refreshed every [`REFRESH_EVERY`]: the
//! janitor marks the slots due, and the next transaction on each database is then checked.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;

/// How often each database's hazards are read again (DDL that runs through tidepool refreshes
/// them at once: it is opaque, and its check reads them).
pub const REFRESH_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Custom setting names that user functions' bodies show (`'app.x'`, `SET app.x`): one column.
pub const BODY_SETTING_NAMES_SQL: &str = include_str!("setting_names.sql");

/// The query whose rows (`kind`, `name`) make a [`Hazards`].
pub const HAZARDS_SQL: &str = concat!(
    include_str!("hazards.sql"),
    "UNION SELECT 'n', n FROM (",
    include_str!("setting_names.sql"),
    ") body_names(n)"
);

/// Names that make a statement opaque, for one database.
#[derive(Debug)]
pub struct Hazards {
    /// A Bloom filter (two bits of [`fold_hash`] each) over `names` and the core functions that
    /// change session state, so that almost every word of a clean statement costs one hash.
    bloom: [u64; 16],
    /// Unique per snapshot (0: not read yet), so verdicts cached on statements know whether
    /// they were judged against this one.
    pub id: u64,
    /// Lower-case names of hazardous functions and relations.
    names: HashSet<Box<[u8]>>,
    /// Custom setting names found in function bodies: read back after opaque transactions.
    pub setting_names: Vec<String>,
    /// Code runs where no word names it (user-defined operators or casts), or the catalog was
    /// not read yet: every statement is opaque.
    pub opaque_everywhere: bool,
    /// A random key per snapshot for hashing texts whose verdicts a session remembers
    /// (`Effects::judge_parse`): without it nobody can make two texts hash alike.
    pub text_key: std::hash::RandomState,
}

impl Default for Hazards {
    /// No hazards from the catalog; the dangerous core functions are always there.
    fn default() -> Hazards {
        let mut hazards = Hazards {
            bloom: [0; 16],
            id: 0,
            names: HashSet::new(),
            setting_names: Vec::new(),
            opaque_everywhere: false,
            text_key: std::hash::RandomState::new(),
        };
        for name in super::verdict::DANGEROUS_BUILTINS {
            hazards.add_to_bloom(name);
        }
        hazards
    }
}

/// A hash of a word as PostgreSQL folds it (ASCII letters lower-cased; `| 0x20` changes no
/// other byte that can matter here, and both sides of a comparison fold the same way).
pub fn fold_hash(word: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in word {
        h = (h ^ (b | 0x20) as u32).wrapping_mul(0x0100_0193);
    }
    h
}

impl Hazards {
    fn add_to_bloom(&mut self, lower: &[u8]) {
        let h = fold_hash(lower);
        for bit in [h & 1023, (h >> 10) & 1023] {
            self.bloom[(bit >> 6) as usize] |= 1 << (bit & 63);
        }
    }

    /// False if no hazard (and no dangerous core function) can have this [`fold_hash`].
    pub fn may_name(&self, h: u32) -> bool {
        [h & 1023, (h >> 10) & 1023]
            .iter()
            .all(|bit| self.bloom[(bit >> 6) as usize] & (1 << (bit & 63)) != 0)
    }

    /// Before the catalog was read: nothing is known to be clean.
    pub fn unknown() -> Hazards {
        Hazards {
            opaque_everywhere: true,
            ..Hazards::default()
        }
    }

    /// True if `lower` (a lower-case word) names a hazardous function or relation.
    pub fn names(&self, lower: &[u8]) -> bool {
        !self.names.is_empty() && self.names.contains(lower)
    }

    /// Builds a snapshot from the rows of [`HAZARDS_SQL`] (`kind`, `name`).
    pub fn from_rows<'a>(rows: impl IntoIterator<Item = (&'a str, &'a str)>) -> Hazards {
        let mut hazards = Hazards::default();
        for (kind, name) in rows {
            match kind {
                "r" | "f" => {
                    hazards.add_to_bloom(name.as_bytes());
                    hazards.names.insert(name.as_bytes().into());
                }
                "n" => hazards.setting_names.push(name.to_string()),
                "o" => hazards.opaque_everywhere = true,
                _ => {}
            }
        }
        hazards
    }
}

/// One database's snapshot and its refresh state.
#[derive(Debug)]
pub struct HazardSlot {
    current: ArcSwap<Hazards>,
    /// Snapshot ids, shared by every slot of the process.
    ids: Arc<AtomicU64>,
    /// Set when the catalog should be read again: never read yet, or the refresh period passed.
    due: AtomicBool,
    /// A session took the refresh and will read the catalog in its next check.
    claimed: AtomicBool,
}

impl HazardSlot {
    fn new(ids: Arc<AtomicU64>) -> HazardSlot {
        HazardSlot {
            current: ArcSwap::from_pointee(Hazards::unknown()),
            ids,
            due: AtomicBool::new(true),
            claimed: AtomicBool::new(false),
        }
    }

    pub fn load(&self) -> Arc<Hazards> {
        self.current.load_full()
    }

    /// True if the caller should read the catalog in its check (then it must call
    /// [`HazardSlot::install`] or [`HazardSlot::release`]); at most one session at a time.
    pub fn claim_refresh(&self) -> bool {
        self.due.load(Ordering::Relaxed)
            && self
                .claimed
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
    }

    /// A check read the catalog.
    pub fn install(&self, mut hazards: Hazards) {
        hazards.id = self.ids.fetch_add(1, Ordering::Relaxed) + 1;
        self.current.store(Arc::new(hazards));
        self.due.store(false, Ordering::Relaxed);
        self.claimed.store(false, Ordering::Release);
    }

    /// A claimed refresh did not happen (the check failed): another session may take it.
    pub fn release(&self) {
        self.claimed.store(false, Ordering::Release);
    }

    /// Asks for a refresh (the period passed, or DDL ran).
    pub fn mark_due(&self) {
        self.due.store(true, Ordering::Relaxed);
    }
}

/// Every database's slot, created on first use.
#[derive(Debug, Default)]
pub struct HazardCatalogs {
    slots: Mutex<HashMap<String, Arc<HazardSlot>>>,
    ids: Arc<AtomicU64>,
}

impl HazardCatalogs {
    /// The slot of `database` (looked up once per login, not per transaction).
    pub fn slot(&self, database: &str) -> Arc<HazardSlot> {
        let mut slots = self.slots.lock().expect("hazard slots");
        slots
            .entry(database.to_string())
            .or_insert_with(|| Arc::new(HazardSlot::new(self.ids.clone())))
            .clone()
    }

    /// Marks every database due for a refresh (the janitor, every [`REFRESH_EVERY`]).
    pub fn mark_all_due(&self) {
        for slot in self.slots.lock().expect("hazard slots").values() {
            slot.mark_due();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_make_names_and_flags() {
        let h = Hazards::from_rows([("r", "trg"), ("f", "tenant"), ("n", "app.tenant")]);
        assert!(h.names(b"trg") && h.names(b"tenant") && !h.names(b"plain"));
        assert!(h.may_name(fold_hash(b"TRG")) && h.may_name(fold_hash(b"set_config")));
        assert_eq!(h.setting_names, vec!["app.tenant".to_string()]);
        assert!(!h.opaque_everywhere);
        assert!(Hazards::from_rows([("o", "")]).opaque_everywhere);
        assert!(Hazards::unknown().opaque_everywhere);
    }

    #[test]
    fn one_refresh_at_a_time_until_installed() {
        let slot = HazardSlot::new(Arc::default());
        assert!(slot.claim_refresh(), "never read: due");
        assert!(!slot.claim_refresh(), "claimed once");
        slot.release();
        assert!(slot.claim_refresh(), "released: claimable again");
        slot.install(Hazards::default());
        assert!(!slot.claim_refresh(), "fresh");
        assert!(!slot.load().opaque_everywhere);
        assert_eq!(slot.load().id, 1);
        slot.mark_due();
        assert!(slot.claim_refresh());
    }
}
