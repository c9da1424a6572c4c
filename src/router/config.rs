//! Classifier settings and the compiled `write_functions` / `read_only_functions` lists.

use std::collections::HashSet;

use regex_lite::{Regex, RegexBuilder};

/// Functions that write, take locks, or depend on per-session state that only the primary
/// connection has. Entries are matched case-insensitively, with or without a schema.
///
/// * sequences: `currval` and `lastval` only read, but they read *this session's* last
///   `nextval`, which a standby session never called (it errors there), so they follow the
///   writes to the primary;
/// * advisory locks: a lock only excludes other sessions on the same node;
/// * `set_config`, `pg_export_snapshot`: session state the next statement expects to find;
/// * large objects: an `lo_open` descriptor lives in one backend, so `loread`/`lo_lseek` must
///   follow it (`lo_get` stands alone and stays a read);
/// * `pg_terminate_backend`/`pg_cancel_backend`/…: the pid comes from the primary's
///   `pg_stat_activity`; on a standby it would signal an unrelated backend;
/// * `pg_promote`: run on a standby it *promotes* it; `pg_wal_replay_*` on the primary fails
///   harmlessly instead of pausing a random standby;
/// * `dblink*`: runs arbitrary SQL, often against the local node.
pub const DEFAULT_WRITE_FUNCTIONS: &[&str] = &[
    "nextval",
    "setval",
    "currval",
    "lastval",
    "/^pg_(try_)?advisory_/",
    "set_config",
    "lo_creat",
    "lo_create",
    "lo_import",
    "lo_export",
    "lo_unlink",
    "lo_open",
    "lo_close",
    "lo_put",
    "lo_from_bytea",
    "/^lo_(truncate|lseek|tell)(64)?$/",
    "lowrite",
    "loread",
    "txid_current",
    "pg_current_xact_id",
    "pg_notify",
    "dblink",
    "dblink_exec",
    "dblink_send_query",
    "pg_switch_wal",
    "pg_create_restore_point",
    "/^pg_(start|stop)_backup$/",
    "/^pg_backup_(start|stop)$/",
    "pg_export_snapshot",
    "pg_log_standby_snapshot",
    "pg_logical_emit_message",
    "pg_logical_slot_get_changes",
    "pg_logical_slot_get_binary_changes",
    "/^pg_(create|drop|copy)_.*replication_slot$/",
    "pg_replication_slot_advance",
    "/^pg_replication_origin_(create|drop|advance|session_setup|session_reset|xact_setup|xact_reset)$/",
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_log_backend_memory_contexts",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_promote",
    "pg_wal_replay_pause",
    "pg_wal_replay_resume",
    "/^pg_stat_reset/",
    "/^pg_file_(write|sync|rename|unlink)$/",
    "pg_import_system_collations",
    "/^brin_(summarize_new_values|summarize_range|desummarize_range)$/",
    "gin_clean_pending_list",
    "pg_truncate_visibility_map",
];

/// `[routing]` settings the classifier uses. Not reloadable in place: a reload builds a new
/// [`super::Classifier`] (with an empty cache) and swaps it in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassifierConfig {
    /// Functions whose use sends a statement to the primary. Each entry is an exact name
    /// (`nextval`, or schema-qualified `myschema.audit_log`, which also matches the unqualified
    /// call because `search_path` may resolve it) or a regex between slashes
    /// (`/^my_.*_writer$/`) tried on both the bare and the qualified name. Case-insensitive.
    /// Names match wherever they appear as identifiers, so a column called `nextval` also
    /// sends a query to the primary (safe, slightly pessimistic).
    /// Default: [`DEFAULT_WRITE_FUNCTIONS`].
    pub write_functions: Vec<String>,
    /// Same syntax; a function matching here is never a write function, even if it matches
    /// `write_functions` (e.g. `/^pg_stat_reset/` listed and `pg_stat_reset_single_table_counters`
    /// whitelisted). Default: empty.
    pub read_only_functions: Vec<String>,
    /// Memory budget of the classification cache, in bytes (keys plus overhead); 0 disables
    /// caching. Default 8 MiB.
    pub cache_bytes: usize,
}

impl Default for ClassifierConfig {
    fn default() -> Self {
        ClassifierConfig {
            write_functions: DEFAULT_WRITE_FUNCTIONS.iter().map(|s| s.to_string()).collect(),
            read_only_functions: Vec::new(),
            cache_bytes: 8 << 20,
        }
    }
}

impl ClassifierConfig {
    /// Checks every list entry (regex syntax, empty names) without building a classifier.
    pub fn validate(&self) -> Result<(), ClassifierError> {
        Functions::new(self).map(|_| ())
    }
}

/// Why a classifier config was refused.
#[derive(Debug, thiserror::Error)]
pub enum ClassifierError {
    #[error("{list} entry {entry:?} is not a valid regex")]
    BadRegex {
        list: &'static str,
        entry: String,
        #[source]
        source: regex_lite::Error,
    },
    #[error("{list} entry {entry:?} is not a function name (expected `name`, `schema.name` or `/regex/`)")]
    BadName { list: &'static str, entry: String },
}

/// One compiled list: exact names split by qualification, plus regexes.
#[derive(Debug, Default)]
struct NameList {
    /// Unqualified entries: match any call of that name, in any schema.
    bare: HashSet<String>,
    /// Qualified entries, `schema.name`.
    qualified: HashSet<String>,
    /// Function-name parts of the qualified entries: an unqualified call may resolve to them.
    qualified_tails: HashSet<String>,
    regexes: Vec<Regex>,
}

impl NameList {
    fn new(list: &'static str, entries: &[String]) -> Result<Self, ClassifierError> {
        let mut out = NameList::default();
        for entry in entries {
            let trimmed = entry.trim();
            if let Some(pattern) = trimmed.strip_prefix('/').and_then(|p| p.strip_suffix('/')) {
                let regex = RegexBuilder::new(pattern)
                    .case_insensitive(true)
                    .build()
                    .map_err(|source| ClassifierError::BadRegex {
                        list,
                        entry: entry.clone(),
                        source,
                    })?;
                out.regexes.push(regex);
                continue;
            }
            let name = trimmed.to_lowercase();
            let bad = || ClassifierError::BadName {
                list,
                entry: entry.clone(),
            };
            let valid_part = |p: &str| !p.is_empty() && !p.contains(|c: char| c.is_whitespace() || c == '(');
            match name.rsplit_once('.') {
                None if valid_part(&name) => {
                    out.bare.insert(name);
                }
                Some((schema, tail)) if valid_part(schema) && valid_part(tail) => {
                    out.qualified_tails.insert(tail.to_string());
                    out.qualified.insert(name);
                }
                _ => return Err(bad()),
            }
        }
        Ok(out)
    }

    /// `bare` is the lowercased function name, `qualified` the lowercased `schema.name` when
    /// the statement wrote one.
    fn matches(&self, bare: &str, qualified: Option<&str>) -> bool {
        let exact = match qualified {
            Some(q) => self.bare.contains(bare) || self.qualified.contains(q),
            None => self.bare.contains(bare) || self.qualified_tails.contains(bare),
        };
        exact
            || self
                .regexes
                .iter()
                .any(|r| r.is_match(bare) || qualified.is_some_and(|q| r.is_match(q)))
    }
}

/// The compiled `write_functions` minus `read_only_functions`.
#[derive(Debug)]
pub(super) struct Functions {
    write: NameList,
    read_only: NameList,
}

impl Functions {
    pub(super) fn new(config: &ClassifierConfig) -> Result<Self, ClassifierError> {
        Ok(Functions {
            write: NameList::new("write_functions", &config.write_functions)?,
            read_only: NameList::new("read_only_functions", &config.read_only_functions)?,
        })
    }

    /// True when the (lowercased) name is a write function and not whitelisted.
    pub(super) fn is_write(&self, bare: &str, qualified: Option<&str>) -> bool {
        self.write.matches(bare, qualified) && !self.read_only.matches(bare, qualified)
    }
}
