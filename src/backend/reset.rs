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
    /// The first row returned, as text values (`None` = NULL).
    pub first_row: Option<Vec<Option<String>>>,
    /// Every row, when asked for with [`BackendConn::run_simple_rows`].
    pub rows: Vec<Vec<Option<String>>>,
}

impl QueryOutcome {
    pub fn parsed_error(&self) -> Option<ServerError> {
        self.error.as_ref().map(ServerError::parse)
    }
}

impl BackendConn {
    /// Runs `sql` with the simple protocol and reads up to ReadyForQuery.
    pub async fn run_simple(&mut self, sql: &str) -> Result<QueryOutcome, BackendError> {
        self.run_simple_collecting(sql, false).await
    }

    /// Like [`BackendConn::run_simple`], keeping every row of every statement in `rows`.
    pub async fn run_simple_rows(&mut self, sql: &str) -> Result<QueryOutcome, BackendError> {
        self.run_simple_collecting(sql, true).await
    }

    async fn run_simple_collecting(
        &mut self,
        sql: &str,
        all_rows: bool,
    ) -> Result<QueryOutcome, BackendError> {
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
            if frame.tag == tag::DATA_ROW {
                if all_rows {
                    outcome.rows.push(parse_data_row(&frame.body));
                } else if outcome.first_row.is_none() {
                    outcome.first_row = Some(parse_data_row(&frame.body));
                }
                continue;
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

    /// Runs the reset query after a session, then brings settings, role and sequence state back
    /// to the connection's baseline whatever the reset query covered ([`BASELINE_SQL`]) and
    /// verifies that nothing else of the session is left ([`LEFTOVERS_SQL`]). A failure, or
    /// anything left, means the connection must not serve another session.
    pub async fn reset(&mut self, reset_query: &str) -> Result<(), BackendError> {
        if !reset_query.is_empty() {
            let outcome = self.run_simple(reset_query).await?;
            self.fail_on_error(&outcome)?;
            // DISCARD ALL drops every setting and prepared statement.
            self.applied.clear();
            self.statements.clear();
        }
        let outcome = self
            .run_simple(&format!("{BASELINE_SQL}; {LEFTOVERS_SQL}"))
            .await?;
        self.fail_on_error(&outcome)?;
        self.applied.clear();
        let left = outcome
            .first_row
            .and_then(|row| row.into_iter().next().flatten())
            .unwrap_or_default();
        if left != "0" {
            self.set_state(BackendState::Broken);
            return Err(BackendError::Server {
                addr: self.addr.to_string(),
                code: "55000".to_string(),
                message: format!(
                    "{left} prepared statements, cursors, LISTENs, temporary relations or advisory locks \
                     outlived the reset query: the connection is closed, not reused"
                ),
                fatal: false,
            });
        }
        Ok(())
    }

    fn fail_on_error(&mut self, outcome: &QueryOutcome) -> Result<(), BackendError> {
        match outcome.parsed_error() {
            None => Ok(()),
            Some(e) => {
                self.set_state(BackendState::Broken);
                Err(BackendError::Server {
                    addr: self.addr.to_string(),
                    code: e.code,
                    message: e.message,
                    fatal: false,
                })
            }
        }
    }
}

/// Brings a session's settings (also custom ones, whose names nothing may show), role, session
/// authorization and sequence state (`currval`/`lastval`) back to the connection's baseline;
/// allowed inside the implicit transaction of a multi-statement Query. `DISCARD ALL` covers it
/// too; a weaker `server_reset_query` may not.
pub const BASELINE_SQL: &str = "RESET ALL; RESET SESSION AUTHORIZATION; RESET ROLE; DISCARD SEQUENCES";

/// How many things of a session that cannot be reset piecemeal are still there.
pub const LEFTOVERS_SQL: &str = "SELECT \
    (SELECT count(*) FROM pg_catalog.pg_prepared_statements) \
    + (SELECT count(*) FROM pg_catalog.pg_cursors) \
    + (SELECT count(*) FROM pg_catalog.pg_listening_channels()) \
    + (SELECT count(*) FROM pg_catalog.pg_class WHERE relnamespace = pg_catalog.pg_my_temp_schema()) \
    + (SELECT count(*) FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND pid = pg_catalog.pg_backend_pid())";

/// Text values of a DataRow body; malformed input yields what could be read.
pub(crate) fn parse_data_row(body: &[u8]) -> Vec<Option<String>> {
    let mut values = Vec::new();
    if body.len() < 2 {
        return values;
    }
    let count = i16::from_be_bytes([body[0], body[1]]).max(0) as usize;
    let mut pos = 2;
    for _ in 0..count {
        let Some(len) = body.get(pos..pos + 4) else {
            break;
        };
        let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
        pos += 4;
        if len < 0 {
            values.push(None);
            continue;
        }
        let Some(value) = body.get(pos..pos + len as usize) else {
            break;
        };
        values.push(Some(String::from_utf8_lossy(value).into_owned()));
        pos += len as usize;
    }
    values
}

/// `name` as a quoted identifier, for the SQL tidepool writes itself.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}
