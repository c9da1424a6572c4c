//! tidepool's parameterised lookups on a backend (`auth_query`): one statement with text
//! parameters over the extended protocol, so a user name is never spliced into SQL.

use super::conn::{BackendConn, BackendState};
use super::reset::parse_data_row;
use super::BackendError;
use crate::protocol::error::BackendError as ServerError;
use crate::protocol::{frontend_msg, tag};
use bytes::BytesMut;

impl BackendConn {
    /// Runs `sql` with `params` bound as text; returns the first row (text values, `None` =
    /// NULL), `Ok(None)` when there is none. A statement error is returned as `Server`.
    pub async fn query_first_row(
        &mut self,
        sql: &str,
        params: &[&str],
    ) -> Result<Option<Vec<Option<String>>>, BackendError> {
        let mut out = BytesMut::with_capacity(sql.len() + 64);
        frontend_msg::parse_unnamed(&mut out, sql);
        frontend_msg::bind_text(&mut out, params);
        frontend_msg::execute_unnamed(&mut out);
        frontend_msg::sync(&mut out);
        self.set_state(BackendState::Busy);
        self.write_all(&out).await?;
        let mut first_row = None;
        let mut error = None;
        loop {
            let frame = self.read_frame().await?;
            if self.observe(&frame) {
                break;
            }
            match frame.tag {
                tag::DATA_ROW if first_row.is_none() => first_row = Some(parse_data_row(&frame.body)),
                tag::ERROR_RESPONSE if error.is_none() => error = Some(ServerError::parse(&frame)),
                _ => {}
            }
        }
        match error {
            Some(e) => Err(BackendError::Server {
                addr: self.addr.to_string(),
                fatal: e.is_fatal(),
                code: e.code,
                message: e.message,
            }),
            None => Ok(first_row),
        }
    }
}
