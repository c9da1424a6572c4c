//! Statement classification: decides whether SQL text may run on a standby or needs the primary.
//!
//! Pure and synchronous: no I/O, no clocks, no global state. The session layer calls
//! [`Classifier::classify`] once per statement (or once per Parse in the extended protocol)
//! and combines the [`Decision`] with its own transaction state and the cluster's health.
//!
//! The one rule that matters: **nothing that could write is ever classified as a read.** Every
//! uncertainty resolves to [`Access::Write`]. A statement is a read only when all of these agree:
//!
//! 1. `prescan`: its first keyword (after comments) is one that can start a read
//!    (`SELECT`, `WITH`, `VALUES`, `TABLE`, `SHOW`, `EXPLAIN`, `(`); any other keyword settles
//!    the statement as a write without tokenizing it.
//! 2. `lexical`: sqlparser's PostgreSQL tokenizer finds no write-function name anywhere (as a
//!    call, a qualified name or an attribute-notation call), no row-locking `FOR UPDATE|SHARE|
//!    NO KEY|KEY`, no `INTO`, no `INSERT`/`UPDATE`/`DELETE`/`MERGE` keyword, no `U&"…"`
//!    identifier. This pass looks at every token, so it does not depend on the parser's AST
//!    covering every place an expression can hide.
//! 3. `analyze`: sqlparser parses every statement in the string, and each is a plain query
//!    (no `SELECT INTO`, no locking clause, no data-modifying CTE), a `SHOW`, or an `EXPLAIN`
//!    of such a query. Text it cannot parse is a write.
//!
//! Known blind spots (the standby will refuse the write with an error, so they cost an error,
//! never a write on a standby): a view or a user-defined function that writes, a user-defined
//! operator backed by a writing function, and functions that run SQL given as text
//! (`query_to_xml`, PL/pgSQL `EXECUTE` inside a function). List such functions in
//! `write_functions`.
//!
//! Classifications are cached by statement text (see `cache`), so the parser's ~40 µs is paid
//! once per distinct statement.

mod analyze;
mod balance;
mod cache;
mod config;
mod lexical;
mod prescan;
pub mod reasons;

#[cfg(test)]
mod tests;

use std::time::Duration;

pub use balance::{
    pick, ReadsOnPrimary, RoundRobin, RoutingConfig, SessionRouting, Target, TransactionRouting, Why,
};
pub use cache::CacheStats;
pub use config::{ClassifierConfig, ClassifierError, DEFAULT_WRITE_FUNCTIONS};

use cache::Cache;
use config::Functions;
use prescan::Start;

/// Where a statement may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Access {
    /// Provably read-only: a standby may serve it.
    Read,
    /// Might write (or we could not prove otherwise): the primary must serve it.
    Write,
}

/// Why a statement got its [`Access`]; low-cardinality, meant as a metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Only whitespace, comments or semicolons; harmless anywhere.
    Empty,
    /// Parsed, and every statement is a read.
    Read,
    /// The first keyword (`INSERT`, `CREATE`, `COPY`, `CALL`, `DO`, …) settles it as a write.
    Shortcut,
    /// Transaction control or session state (`BEGIN`, `COMMIT`, `SET`, `RESET`, `DISCARD`…):
    /// it goes with the transaction or session, so it is never sent to a standby on its own.
    Control,
    /// Parsed as something other than a read (DDL, DML, `EXPLAIN ANALYZE` of a write, or a
    /// write hidden in a string of several statements).
    Write,
    /// A `WITH` query whose CTEs modify data.
    WritableCte,
    /// `FOR UPDATE`, `FOR NO KEY UPDATE`, `FOR SHARE` or `FOR KEY SHARE`.
    LockingRead,
    /// `SELECT … INTO new_table`.
    SelectInto,
    /// Calls (or names) a function on the `write_functions` list.
    WriteFunction,
    /// The tokenizer or parser rejected it, or it uses syntax we do not analyse.
    Unparsable,
}

impl Reason {
    /// Stable snake_case name for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Empty => "empty",
            Reason::Read => "read",
            Reason::Shortcut => "shortcut",
            Reason::Control => "control",
            Reason::Write => "write",
            Reason::WritableCte => "writable_cte",
            Reason::LockingRead => "locking_read",
            Reason::SelectInto => "select_into",
            Reason::WriteFunction => "write_function",
            Reason::Unparsable => "unparsable",
        }
    }
}

/// A route forced by a leading `/* tidepool: primary */` or `/* tidepool: standby */` comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hint {
    /// `/* tidepool: primary */`: run on the primary even if it is a read.
    Primary,
    /// `/* tidepool: standby */`: the application vouches that it is a read.
    Standby,
}

/// Value of `SET tidepool.route`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RouteSetting {
    /// Everything to the primary.
    Primary,
    /// Everything to a standby (writes will fail there).
    Standby,
    /// Classify each statement (the default).
    Auto,
}

/// Transaction-control and session-routing statements the routing layer must track.
///
/// Only reported when the string holds that one statement; in a multi-statement string the
/// session layer learns the transaction state from ReadyForQuery instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Control {
    /// `BEGIN` / `START TRANSACTION` without `READ ONLY`.
    Begin,
    /// `BEGIN READ ONLY` / `START TRANSACTION READ ONLY` (any isolation level).
    BeginReadOnly,
    /// `SET TRANSACTION READ ONLY`, which makes the already open transaction read-only.
    SetTransactionReadOnly,
    /// `COMMIT`, `END`, `ROLLBACK`, `ABORT` (also `… AND CHAIN`) and `PREPARE TRANSACTION`.
    /// Not `ROLLBACK TO SAVEPOINT`, `COMMIT PREPARED` or `ROLLBACK PREPARED`.
    End,
    /// `SET [SESSION|LOCAL] tidepool.route = 'primary'|'standby'|'auto'|DEFAULT`, and
    /// `RESET tidepool.route`, `RESET ALL`, `DISCARD ALL` (which mean `auto`).
    SetRoute {
        route: RouteSetting,
        /// `SET LOCAL`: only until the end of the current transaction.
        local: bool,
    },
}

/// The classifier's answer for one statement string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Where the statement may run.
    pub access: Access,
    /// Why; for metrics ("routing decisions by reason") and debug logs.
    pub reason: Reason,
    /// Set for a lone transaction-control or `tidepool.route` statement; `access` is then
    /// `Write`, because such statements travel with their transaction.
    pub control: Option<Control>,
    /// From a leading `/* tidepool: primary|standby */` comment; it overrides `access` for
    /// routing but does not change it.
    pub hint: Option<Hint>,
    /// From a leading `/* tidepool: max_lag=200ms */` comment: this statement's staleness
    /// bound, overriding `[routing] max_lag`. Zero means "no staleness at all".
    pub max_lag: Option<Duration>,
}

impl Decision {
    /// True when a standby may serve the statement (ignoring hints).
    pub fn is_read(&self) -> bool {
        self.access == Access::Read
    }
}

/// What a classification depends on besides the leading comments: the part that is cached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Verdict {
    access: Access,
    reason: Reason,
    control: Option<Control>,
}

impl Verdict {
    const fn write(reason: Reason) -> Self {
        Verdict {
            access: Access::Write,
            reason,
            control: None,
        }
    }
}

/// Classifies SQL text as read or write; cheap to share (`&self` everywhere, internally locked
/// cache), so one instance serves every session of a config generation.
pub struct Classifier {
    functions: Functions,
    cache: Cache,
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier")
            .field("cache", &self.cache.stats())
            .finish_non_exhaustive()
    }
}

impl Classifier {
    /// Builds a classifier; fails on an invalid `write_functions` / `read_only_functions` entry.
    pub fn new(config: &ClassifierConfig) -> Result<Self, ClassifierError> {
        Ok(Classifier {
            functions: Functions::new(config)?,
            cache: Cache::new(config.cache_bytes),
        })
    }

    /// Classifies one query string (which may hold several `;`-separated statements).
    pub fn classify(&self, sql: &str) -> Decision {
        let pre = prescan::scan(sql);
        let verdict = match pre.start {
            Start::Empty => Verdict {
                access: Access::Read,
                reason: Reason::Empty,
                control: None,
            },
            Start::Unterminated => Verdict::write(Reason::Unparsable),
            Start::Write => Verdict::write(Reason::Shortcut),
            // Leading comments are not part of the key: hints and tracing comments would
            // otherwise turn one hot statement into many cache entries.
            Start::Analyze(offset) => self.cached(&sql[offset..]),
        };
        Decision {
            access: verdict.access,
            reason: verdict.reason,
            control: verdict.control,
            hint: pre.hint,
            max_lag: pre.max_lag,
        }
    }

    /// Cache counters, for the admin console and metrics.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    fn cached(&self, body: &str) -> Verdict {
        if let Some(verdict) = self.cache.get(body) {
            return verdict;
        }
        let verdict = analyze::analyze(body, &self.functions);
        self.cache.insert(body, verdict);
        verdict
    }
}

/// Fuzz entry point: classifies arbitrary bytes (lossily decoded as UTF-8) and checks the
/// classifier's invariants: no panic, the cached answer equals the fresh one, and a control
/// statement is never a read.
pub fn fuzz_classify(data: &[u8]) {
    let sql = String::from_utf8_lossy(data);
    let classifier =
        Classifier::new(&ClassifierConfig::default()).expect("the default classifier config is valid");
    let first = classifier.classify(&sql);
    let second = classifier.classify(&sql);
    assert_eq!(first, second, "cached decision differs for {sql:?}");
    if first.control.is_some() {
        assert_eq!(
            first.access,
            Access::Write,
            "control statement classified as read: {sql:?}"
        );
    }
}
