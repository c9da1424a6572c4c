//! What is prepared where: the process-wide interned statements, each client's names for
//! them, and each backend's LRU of the ones it holds under tidepool's names.

use crate::protocol::backend_msg::{begin, finish, put_cstr, read_cstr};
use crate::protocol::tag;
use bytes::{Bytes, BytesMut};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// One distinct statement: the Parse body after the name (query text and parameter types).
#[derive(Debug)]
pub struct Statement {
    pub id: u64,
    /// The name tidepool gives it on backends.
    pub backend_name: String,
    /// `query\0` + parameter count + type OIDs, exactly as the client sent them.
    pub definition: Bytes,
    /// PostgreSQL accepted it once: a later Parse can be answered without a backend.
    pub(super) parsed_ok: AtomicBool,
    /// Its isolation verdict and the id of the hazards snapshot it was judged against
    /// (`id << 2 | verdict`; 0: not judged).
    pub(super) verdict: AtomicU64,
    /// ParameterDescription + RowDescription/NoData as PostgreSQL sent them, for answering a
    /// Describe without a backend.
    pub(super) description: OnceLock<Bytes>,
    /// A schema change altered its result (PostgreSQL said 0A000): new Parses of the same text
    /// get a new statement; the clients that hold this one keep it, as their sessions would.
    pub(super) stale: AtomicBool,
}

impl Statement {
    /// A Parse message preparing this statement under its backend name.
    pub(super) fn write_parse(&self, out: &mut BytesMut) {
        let s = begin(out, tag::PARSE);
        put_cstr(out, &self.backend_name);
        out.extend_from_slice(&self.definition);
        finish(out, s);
    }

    /// What executing it may leave on a backend (see `isolation`), judged once per hazards
    /// snapshot.
    pub fn verdict(
        &self,
        hazards: &crate::client::features::isolation::Hazards,
    ) -> crate::client::features::isolation::Verdict {
        use crate::client::features::isolation::Verdict;
        let cached = self.verdict.load(Ordering::Relaxed);
        if hazards.id != 0 && cached >> 2 == hazards.id {
            return match cached & 3 {
                0 => Verdict::Clean,
                1 => Verdict::Settings,
                _ => Verdict::Opaque,
            };
        }
        let verdict = crate::client::features::isolation::verdict::judge(self.query().as_bytes(), hazards);
        if hazards.id != 0 {
            self.verdict
                .store(hazards.id << 2 | verdict as u64, Ordering::Relaxed);
        }
        verdict
    }

    /// See `stale`.
    pub fn mark_stale(&self) {
        self.stale.store(true, Ordering::Relaxed);
    }

    pub(super) fn is_fresh(&self) -> bool {
        !self.stale.load(Ordering::Relaxed)
    }

    /// The query text, for logs and the admin console.
    pub fn query(&self) -> &str {
        read_cstr(&self.definition).map(|(q, _)| q).unwrap_or("")
    }
}

/// Process-wide interning of statements, so that the same text prepared by many clients is one
/// statement on each backend. Entries die with the last client that holds them.
#[derive(Default)]
pub struct StatementCache {
    pub(super) by_definition: Mutex<HashMap<Bytes, Weak<Statement>>>,
    pub(super) next_id: AtomicU64,
}

impl StatementCache {
    pub fn intern(&self, definition: &[u8]) -> Arc<Statement> {
        let mut map = self.by_definition.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(stmt) = map
            .get(definition)
            .and_then(Weak::upgrade)
            .filter(|s| s.is_fresh())
        {
            return stmt;
        }
        if map.len() >= 1024 && map.len().is_power_of_two() {
            map.retain(|_, w| w.strong_count() > 0);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let definition = Bytes::copy_from_slice(definition);
        let stmt = Arc::new(Statement {
            id,
            backend_name: format!("tp{id}"),
            definition: definition.clone(),
            parsed_ok: AtomicBool::new(false),
            verdict: AtomicU64::new(0),
            description: OnceLock::new(),
            stale: AtomicBool::new(false),
        });
        map.insert(definition, Arc::downgrade(&stmt));
        stmt
    }

    /// The (fresh) statement with this definition, if some client holds it.
    pub fn lookup(&self, definition: &[u8]) -> Option<Arc<Statement>> {
        let map = self.by_definition.lock().unwrap_or_else(|p| p.into_inner());
        map.get(definition)
            .and_then(Weak::upgrade)
            .filter(|s| s.is_fresh())
    }

    /// Live distinct statements (admin console).
    pub fn len(&self) -> usize {
        let map = self.by_definition.lock().unwrap_or_else(|p| p.into_inner());
        map.values().filter(|w| w.strong_count() > 0).count()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every statement some client or backend still holds, in id order (SHOW PREPARED).
    pub fn live(&self) -> Vec<Arc<Statement>> {
        let map = self.by_definition.lock().unwrap_or_else(|p| p.into_inner());
        let mut live: Vec<_> = map.values().filter_map(Weak::upgrade).collect();
        live.sort_by_key(|s| s.id);
        live
    }
}

/// A client's named statements.
#[derive(Debug, Default)]
pub struct ClientStatements {
    pub by_name: HashMap<String, Arc<Statement>>,
    /// Parses answered without a backend, not yet added to SHOW STATS.
    pub answered_parses: u32,
    /// Its SQL-level `PREPARE`d statements (see `sql_prepared`).
    pub sql: crate::client::features::sql_prepared::SqlPrepared,
}

/// The statements a backend has prepared, least recently used first out.
#[derive(Debug, Default)]
pub struct BackendStatements {
    /// Statement id → (the statement, last use tick).
    pub(super) prepared: HashMap<u64, (Arc<Statement>, u64)>,
    /// Use counter for the LRU order.
    pub(super) tick: u64,
    /// Statements recorded as prepared so far (`add` calls).
    pub(super) added: u64,
    /// The SQL-level `PREPARE`d statements it holds (see `sql_prepared`).
    pub sql: crate::client::features::sql_prepared::SqlPrepared,
    /// Statements a client's SQL `DEALLOCATE` was sent for that may still be there (its query
    /// string may have failed before it ran): closed before being prepared again.
    pub(super) uncertain: HashSet<u64>,
}

impl BackendStatements {
    pub(super) fn has(&mut self, id: u64) -> bool {
        self.tick += 1;
        match self.prepared.get_mut(&id) {
            Some(entry) => {
                entry.1 = self.tick;
                true
            }
            None => false,
        }
    }

    /// Records a statement as prepared.
    pub(super) fn add(&mut self, stmt: &Arc<Statement>) {
        self.tick += 1;
        self.added += 1;
        self.prepared.insert(stmt.id, (stmt.clone(), self.tick));
    }

    /// The least recently used statement, taken out, while more than `capacity` are held.
    pub(super) fn take_excess(&mut self, capacity: usize) -> Option<Arc<Statement>> {
        if self.prepared.len() <= capacity.max(1) {
            return None;
        }
        let (&oldest, _) = self.prepared.iter().min_by_key(|(_, (_, used))| *used)?;
        self.prepared.remove(&oldest).map(|(s, _)| s)
    }

    /// Gives up tidepool's statement called `name` (`tp<id>`), if this backend may hold it, so
    /// that a client's SQL `PREPARE` of that name can succeed; true when the caller must
    /// deallocate it.
    pub fn release_name(&mut self, name: &str) -> bool {
        let Some(id) = super::guard::own_id(name) else {
            return false;
        };
        let held = self.prepared.remove(&id).is_some();
        self.uncertain.remove(&id) || held
    }

    pub(super) fn forget(&mut self, id: u64) {
        self.prepared.remove(&id);
    }

    /// A Close that never ran: the backend still has the statement.
    pub(super) fn reinstate(&mut self, stmt: &Arc<Statement>) {
        self.prepared.insert(stmt.id, (stmt.clone(), 0));
    }

    /// After DISCARD ALL / DEALLOCATE ALL the backend has none left.
    pub fn clear(&mut self) {
        self.prepared.clear();
        self.sql.clear();
    }

    pub fn len(&self) -> usize {
        self.prepared.len()
    }

    /// How many statements tidepool has prepared here so far.
    pub fn added(&self) -> u64 {
        self.added
    }

    pub fn is_empty(&self) -> bool {
        self.prepared.is_empty()
    }
}
