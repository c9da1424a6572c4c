//! Where a client/server conversation stands, from its frames alone.
//!
//! The relay forwards bytes; what it must know to decide when a backend can be let go lives here,
//! behind one transition function, [`Tracker::step`], fed with every frame's direction and tag
//! (and the body of the few frames whose body matters). Nothing here touches a socket, so every
//! rule is unit-tested on frame sequences (`tracker/tests.rs`).
//!
//! The rules are the server's (PostgreSQL docs, "Message Flow"): every Query, FunctionCall and
//! Sync is answered by exactly one ReadyForQuery, except a Sync or Flush sent while the server
//! reads COPY data, which it ignores; an extended-protocol batch is open from its first message
//! to its Sync; after an error the server skips to the Sync.

use super::{tag, TransactionStatus};

/// Which way a frame travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Client to server.
    Frontend,
    /// Server to client.
    Backend,
}

/// What a frame meant, for whoever forwards it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing to act on.
    Pass,
    /// A client request that one ReadyForQuery will answer (Query, FunctionCall, Sync).
    Request,
    /// A Sync or Flush the server will ignore: it is reading COPY data.
    IgnoredByServer,
    /// The client ends the conversation (not for the server: its connection outlives the client).
    Terminate,
    /// A ReadyForQuery; `quiet` when it answered the last outstanding request.
    Ready { status: TransactionStatus, quiet: bool },
    /// A ReadyForQuery whose status byte is none of I, T, E: the connection cannot be trusted.
    BadReady,
    /// The server started reading COPY data; `swallowed` Syncs sent after the Execute that
    /// started it will get no ReadyForQuery (the COPY took them as data).
    CopyIn { swallowed: u32 },
    /// An ErrorResponse.
    Error,
}

/// The protocol state of one conversation (one client on one backend, or one backend alone).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tracker {
    /// Requests forwarded whose ReadyForQuery has not come back.
    pending: u32,
    /// Extended-protocol messages forwarded since the last Sync: the batch is open.
    unsynced: bool,
    /// A Bind or Execute since the last Sync: the open batch has portals on this backend.
    portals: bool,
    /// Status of the last ReadyForQuery.
    status: TransactionStatus,
    /// An ErrorResponse since the last ReadyForQuery.
    error: bool,
    copy: Copy,
}

/// COPY bookkeeping. PostgreSQL ignores Sync and Flush while it reads COPY data, and a driver
/// may send a Sync right after the Execute that turns out to start a COPY.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Copy {
    /// The last request was an extended-protocol Execute (not a simple Query).
    after_execute: bool,
    /// Syncs sent since that Execute and before any CopyDone/CopyFail.
    syncs_since_execute: u32,
    /// CopyDone or CopyFail was sent since that Execute.
    ended_since_execute: bool,
    /// The server reads COPY data: Syncs now get no answer.
    reading: bool,
    /// The server sends COPY data (COPY TO STDOUT) until its CopyDone.
    writing: bool,
}

impl Default for Tracker {
    fn default() -> Self {
        Tracker {
            pending: 0,
            unsynced: false,
            portals: false,
            status: TransactionStatus::Idle,
            error: false,
            copy: Copy::default(),
        }
    }
}

impl Tracker {
    /// A tracker for a backend found in this transaction status with nothing outstanding.
    pub fn at(status: TransactionStatus) -> Self {
        Tracker {
            status,
            ..Tracker::default()
        }
    }

    /// The one transition function: the state after `frame` went `direction`.
    /// `body` matters only for ReadyForQuery (its status byte); others may pass `&[]`.
    pub fn step(&mut self, direction: Direction, frame_tag: u8, body: &[u8]) -> Step {
        match direction {
            Direction::Frontend => self.frontend(frame_tag),
            Direction::Backend => self.backend(frame_tag, body),
        }
    }

    fn frontend(&mut self, frame_tag: u8) -> Step {
        if self.copy.reading && matches!(frame_tag, tag::SYNC | tag::FLUSH) {
            return Step::IgnoredByServer;
        }
        match frame_tag {
            tag::TERMINATE => return Step::Terminate,
            tag::SYNC => {
                self.pending += 1;
                self.unsynced = false;
                self.portals = false;
                if !self.copy.ended_since_execute {
                    self.copy.syncs_since_execute += 1;
                }
                return Step::Request;
            }
            tag::QUERY | tag::FUNCTION_CALL => {
                self.pending += 1;
                self.copy.after_execute = false;
                return Step::Request;
            }
            tag::EXECUTE => {
                self.unsynced = true;
                self.portals = true;
                self.copy.after_execute = true;
                self.copy.syncs_since_execute = 0;
                self.copy.ended_since_execute = false;
            }
            tag::BIND => {
                self.unsynced = true;
                self.portals = true;
            }
            tag::PARSE | tag::DESCRIBE | tag::CLOSE | tag::FLUSH => self.unsynced = true,
            tag::COPY_DONE | tag::COPY_FAIL => {
                self.copy.reading = false;
                self.copy.ended_since_execute = true;
            }
            _ => {}
        }
        Step::Pass
    }

    fn backend(&mut self, frame_tag: u8, body: &[u8]) -> Step {
        match frame_tag {
            tag::READY_FOR_QUERY => {
                self.pending = self.pending.saturating_sub(1);
                self.error = false;
                self.copy.reading = false;
                self.copy.writing = false;
                match body.first().and_then(|&b| TransactionStatus::from_byte(b)) {
                    Some(status) => {
                        self.status = status;
                        Step::Ready {
                            status,
                            quiet: self.pending == 0,
                        }
                    }
                    None => Step::BadReady,
                }
            }
            tag::COPY_IN_RESPONSE => {
                let mut swallowed = 0;
                if self.copy.after_execute {
                    // Syncs sent between the Execute and its COPY data went into the COPY.
                    swallowed = std::mem::take(&mut self.copy.syncs_since_execute);
                    self.pending = self.pending.saturating_sub(swallowed);
                    // The batch is open again until a Sync after the COPY data.
                    self.unsynced |= swallowed > 0;
                }
                // Data already ended (CopyDone/CopyFail sent ahead) means the server will not wait.
                self.copy.reading = !self.copy.ended_since_execute || !self.copy.after_execute;
                Step::CopyIn { swallowed }
            }
            tag::COPY_OUT_RESPONSE | tag::COPY_BOTH_RESPONSE => {
                self.copy.writing = true;
                Step::Pass
            }
            tag::COPY_DONE => {
                self.copy.writing = false;
                Step::Pass
            }
            tag::ERROR_RESPONSE => {
                // A failed COPY stops reading COPY data: Syncs are answered again.
                self.copy.reading = false;
                self.copy.writing = false;
                self.error = true;
                Step::Error
            }
            _ => Step::Pass,
        }
    }

    /// Every request answered and no batch open: the backend may be let go (if idle).
    pub fn is_quiet(&self) -> bool {
        self.pending == 0 && !self.unsynced && !self.copy.reading
    }

    /// The next client frame starts a new request (nothing outstanding, no batch open).
    pub fn between_requests(&self) -> bool {
        self.is_quiet()
    }

    /// Outside a transaction with every request answered, the open batch holds only
    /// Parse/Describe/Close/Flush (as asyncpg prepares): nothing in it is tied to this backend
    /// beyond prepared statements, so tidepool may close it with its own Sync.
    pub fn statement_only_batch(&self) -> bool {
        self.pending == 0
            && self.unsynced
            && !self.portals
            && !self.copy.reading
            && self.status == TransactionStatus::Idle
    }

    /// Requests forwarded and not yet answered.
    pub fn pending(&self) -> u32 {
        self.pending
    }

    /// An extended-protocol batch is open (messages since the last Sync).
    pub fn batch_open(&self) -> bool {
        self.unsynced
    }

    /// The server reads COPY data from the client.
    pub fn in_copy_in(&self) -> bool {
        self.copy.reading
    }

    /// The server sends COPY data to the client.
    pub fn in_copy_out(&self) -> bool {
        self.copy.writing
    }

    /// An ErrorResponse came since the last ReadyForQuery (the server skips to the Sync).
    pub fn error_seen(&self) -> bool {
        self.error
    }

    /// Status of the last ReadyForQuery.
    pub fn status(&self) -> TransactionStatus {
        self.status
    }

    /// Outside a transaction block (as of the last ReadyForQuery).
    pub fn is_idle(&self) -> bool {
        self.status == TransactionStatus::Idle
    }
}

#[cfg(test)]
mod tests;
