//! tidepool's own statements on a backend: the reset query, the check query, applying a client's
//! settings. Results are drained and discarded; only errors and ParameterStatus are kept.

use super::conn::{BackendConn, BackendState};
use super::BackendError;
use crate::protocol::error::BackendError as ServerError;
use crate::protocol::{frontend_msg, tag, Frame};
use bytes::BytesMut;

/// How one of tidepool's own statements went.
#[derive(Debug, Default)]
pub struct QueryOutcome {
    /// The first ErrorResponse, if the statement failed (the raw frame, so it can be relayed).
    pub error: Option<Frame>,
}

impl QueryOutcome {
    pub fn parsed_error(&self) -> Option<ServerError> {
        self.error.as_ref().map(ServerError::parse)
    }
}

impl BackendConn {
    /// Runs `sql` with the simple protocol and reads up to ReadyForQuery.
    pub async fn run_simple(&mut self, sql: &str) -> Result<QueryOutcome, BackendError> {
        let mut out = BytesMut::with_capacity(sql.len() + 6);
        frontend_msg::query(&mut out, sql);
        self.set_state(BackendState::Busy);
        self.write_all(&out).await?;
        let mut outcome = QueryOutcome::default();
        loop {
            let frame = self.read_frame().await?;
            if self.observe(&frame) {
                return Ok(outcome);
            }
            if frame.tag == tag::ERROR_RESPONSE {
                let parsed = ServerError::parse(&frame);
                if parsed.is_fatal() {
                    self.set_state(BackendState::Broken);
                    return Err(BackendError::Server {
                        addr: self.addr.to_string(),
                        code: parsed.code,
                        message: parsed.message,
                        fatal: true,
                    });
                }
                outcome.error.get_or_insert(frame);
            }
        }
    }

    /// Runs the reset query after a session; a failure means the connection is not reusable.
    pub async fn reset(&mut self, reset_query: &str) -> Result<(), BackendError> {
        if reset_query.is_empty() {
            return Ok(());
        }
        let outcome = self.run_simple(reset_query).await?;
        if let Some(e) = outcome.parsed_error() {
            self.set_state(BackendState::Broken);
            return Err(BackendError::Server {
                addr: self.addr.to_string(),
                code: e.code,
                message: e.message,
                fatal: false,
            });
        }
        // DISCARD ALL drops every setting and prepared statement.
        self.applied.clear();
        self.statements.clear();
        Ok(())
    }
}
