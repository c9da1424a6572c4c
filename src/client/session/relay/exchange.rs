//! Where the current request/response exchange stands: the protocol's state, what the
//! interceptors found, and the counters the session moves to the metrics. Lives in the session,
//! not in the relay's future, so the future can be dropped at any point without loss.

use crate::client::features::isolation::Effects;
use crate::client::features::keywords::Words;
use crate::client::features::schema_retry::BatchCopy;
use crate::protocol::tracker::{Step, Tracker};
use crate::protocol::{tag, TransactionStatus};

#[derive(Debug, Default)]
pub struct Exchange {
    /// Requests outstanding, batch open, COPY, transaction status: the protocol's state.
    pub tracker: Tracker,
    /// Bytes of a server frame still to be streamed to the client.
    pub(super) passthrough: usize,
    /// The quiet state was already reported to the session; cleared by client activity.
    pub(super) quiet_reported: bool,
    /// Parameters the server reported during the exchange (the client changed them).
    pub reported: Vec<(String, String)>,
    /// The per-frame interceptors' state (`interceptors.rs`).
    pub features: Features,
    /// Accounting the session moves to the metrics at each event.
    pub stats: Stats,
}

/// What the interceptors of transaction mode keep between frames. With `track_settings` off
/// (session mode) none of them runs beyond the database-DDL check.
#[derive(Debug, Default)]
pub struct Features {
    /// Engages the transaction-mode interceptors: isolation verdict, settings, pins, SQL-level
    /// prepared statements, notification senders, the schema-change retry (a session keeps its
    /// backend, so it needs none of them).
    pub track_settings: bool,
    /// What the client's requests may have left on the backend (see `isolation`); survives
    /// `restart` while the client keeps its backend.
    pub isolation: Effects,
    /// A statement may have taken or released something that pins the client to its backend.
    pub pins_may_have_changed: bool,
    /// The client is pinned now (then more kinds of statement may release it).
    pub pinned: bool,
    /// A statement may have prepared or deallocated SQL-level prepared statements.
    pub sql_prepared_may_have_changed: bool,
    /// The client's pid (its BackendKeyData's) to mark the backend's notifier with when a
    /// statement mentioning NOTIFY (or pg_notify) is forwarded: notifications the backend sends
    /// are then this client's (`notify/senders.rs`). 0: no marking.
    pub notify_as: i32,
    /// The client's current batch, kept for a retry after a schema change.
    pub(crate) batch: BatchCopy,
    /// Trigger words of the Query/Parse frame at the head of the client's input, with that
    /// frame's length, when the session scanned it already (one scan per request, not one per
    /// consumer); the relay takes it for the frame at offset 0.
    pub(crate) head_words: Option<(usize, Words)>,
    /// The databases the request at the head of the client's input needs to itself, found
    /// when the relay stopped before it; then `database_ddl_freed` once the session freed them.
    pub(super) database_ddl_ahead: Vec<String>,
    pub(crate) database_ddl_freed: bool,
}

/// Plain counters (no atomics in the poll loop), moved to the shared metrics by the session.
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests forwarded (Query, Sync, FunctionCall).
    pub requests: u32,
    /// Parse and Bind messages from the client (SHOW STATS), and Parses forwarded to the
    /// server as they came (statement renaming, when on, counts its own in `Pipeline`).
    pub parses: u32,
    pub binds: u32,
    pub forwarded_parses: u32,
    /// When the first request since the last quiet point was forwarded.
    pub busy_since: Option<tokio::time::Instant>,
    /// Bytes forwarded from the client and to it.
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// SQLSTATE classes of the ErrorResponses relayed (allocates only when errors happen).
    pub error_classes: Vec<[u8; 2]>,
}

impl Exchange {
    /// True when every request was answered and no batch is open.
    pub fn is_quiet(&self) -> bool {
        self.tracker.is_quiet() && self.passthrough == 0
    }

    /// Status of the last ReadyForQuery.
    pub fn status(&self) -> TransactionStatus {
        self.tracker.status()
    }

    /// A fresh exchange for a newly attached backend, reset in place (no drop and rebuild of
    /// the whole struct: this runs once per transaction). Keeps the buffers' allocations, the
    /// isolation effects and the scan of the request about to be relayed.
    pub fn restart(&mut self) {
        // Destructured in full, so that a new field cannot be forgotten here.
        let Exchange {
            tracker,
            passthrough,
            quiet_reported,
            reported,
            features,
            stats,
        } = self;
        *tracker = Tracker::default();
        *passthrough = 0;
        *quiet_reported = false;
        reported.clear();
        let Features {
            track_settings,
            isolation: _,
            pins_may_have_changed,
            pinned,
            sql_prepared_may_have_changed,
            notify_as,
            batch,
            head_words: _,
            database_ddl_ahead,
            database_ddl_freed,
        } = features;
        *track_settings = false;
        *pins_may_have_changed = false;
        *pinned = false;
        *sql_prepared_may_have_changed = false;
        *notify_as = 0;
        batch.clear();
        database_ddl_ahead.clear();
        *database_ddl_freed = false;
        let Stats {
            requests,
            parses,
            binds,
            forwarded_parses,
            busy_since,
            bytes_in,
            bytes_out,
            error_classes,
        } = stats;
        (*requests, *parses, *binds, *forwarded_parses) = (0, 0, 0, 0);
        *busy_since = None;
        (*bytes_in, *bytes_out) = (0, 0);
        error_classes.clear();
    }

    /// Marks the current quiet state as already seen by the session.
    pub fn mark_quiet_reported(&mut self) {
        self.quiet_reported = true;
    }
}

impl Stats {
    /// Counts one client frame the tracker took as `step` (`renaming`: statement renaming
    /// counts the Parses it forwards itself).
    #[inline]
    pub(super) fn count_client_frame(&mut self, step: Step, tag: u8, renaming: bool) {
        match step {
            Step::Request => {
                self.requests += 1;
                if self.busy_since.is_none() {
                    self.busy_since = Some(tokio::time::Instant::now());
                }
            }
            Step::IgnoredByServer => {}
            _ => match tag {
                tag::BIND => self.binds += 1,
                tag::PARSE => {
                    self.parses += 1;
                    if !renaming {
                        self.forwarded_parses += 1;
                    }
                }
                _ => {}
            },
        }
    }
}
