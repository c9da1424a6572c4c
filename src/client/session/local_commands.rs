//! Requests tidepool answers itself between transactions, without a backend: `SHOW tidepool.lsn`,
//! `SET tidepool.min_lsn = '…'` (the client's read-your-writes position) and, with
//! `transaction_routing = "first_statement"`, a lone `BEGIN`, which is held back and sent later
//! with the transaction's first statement.

use crate::client::session::Session;
use crate::health::Lsn;
use crate::protocol::{backend_msg, tag, ErrorFields, SqlState};
use crate::router::{Control, TransactionRouting};
use bytes::Buf;

/// A statement about the client's WAL position (exact forms only; anything else, including the
/// same text with comments, goes to PostgreSQL as usual).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LsnCommand {
    /// `SHOW tidepool.lsn`
    Show,
    /// `SET [SESSION] tidepool.min_lsn { = | TO } '<lsn>'`: the value, or the text that is not one.
    SetMin(Result<Lsn, String>),
}

/// Recognises an [`LsnCommand`]; keywords are case-insensitive, one trailing `;` is allowed.
pub fn parse_lsn_command(sql: &str) -> Option<LsnCommand> {
    let text = sql.trim();
    let text = text.strip_suffix(';').unwrap_or(text).trim_end();
    if let Some(rest) = keyword(text, "show") {
        return rest
            .eq_ignore_ascii_case("tidepool.lsn")
            .then_some(LsnCommand::Show);
    }
    let rest = keyword(text, "set")?;
    let rest = keyword(rest, "session").unwrap_or(rest);
    let name = "tidepool.min_lsn";
    let after = rest.get(name.len()..)?;
    if !rest[..name.len()].eq_ignore_ascii_case(name) {
        return None;
    }
    let after = after.trim_start();
    let value = match after.strip_prefix('=') {
        Some(value) => value.trim_start(),
        None => keyword(after, "to")?,
    };
    let raw = match value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')) {
        Some(inner) if !inner.contains('\'') => inner,
        Some(_) => return None,
        None if !value.is_empty() && !value.contains(char::is_whitespace) && !value.contains('\'') => value,
        None => return None,
    };
    Some(LsnCommand::SetMin(Lsn::parse(raw).ok_or_else(|| raw.to_string())))
}

/// `text` without its leading keyword `word` (case-insensitive, followed by whitespace or the
/// end), and without the whitespace after it.
fn keyword<'a>(text: &'a str, word: &str) -> Option<&'a str> {
    let head = text.get(..word.len())?;
    let rest = &text[word.len()..];
    (head.eq_ignore_ascii_case(word) && (rest.is_empty() || rest.starts_with(char::is_whitespace)))
        .then(|| rest.trim_start())
}

impl Session {
    /// With no backend attached: answers the request at the head of the read buffer if it is one
    /// of ours. True when it was answered (and consumed).
    pub(crate) fn answer_locally(&mut self) -> bool {
        let Ok(Some((tag::QUERY, total))) =
            crate::protocol::frame::peek_header(&self.client.rbuf, self.client.decoder.max_len())
        else {
            return false;
        };
        if self.client.rbuf.len() < total || self.checkout.is_attached() {
            return false;
        }
        let body = &self.client.rbuf[5..total];
        // Runs before every simple Query between transactions: look closer only at what may be
        // `SHOW tidepool.lsn`, `SET tidepool.min_lsn` or a BEGIN / START TRANSACTION.
        use crate::client::features::keywords::{Word, Words};
        let words = match self.exchange.features.head_words {
            Some((len, words)) if len == total => words,
            _ => Words::scan(body),
        };
        if !words.any(&[Word::Tidepool, Word::Begin, Word::Start]) {
            return false;
        }
        let sql = String::from_utf8_lossy(&body[..body.iter().position(|&b| b == 0).unwrap_or(body.len())])
            .into_owned();
        let status = if self.ha.deferred_begin.is_some() {
            b'T'
        } else {
            b'I'
        };
        match parse_lsn_command(&sql) {
            Some(LsnCommand::Show) => {
                let lsn = self.ryw_lsn.unwrap_or(Lsn(0)).to_string();
                let out = &mut self.client.wbuf;
                backend_msg::row_description(out, &[("tidepool.lsn", TEXT_OID)]);
                backend_msg::data_row(out, &[Some(&lsn)]);
                backend_msg::command_complete(out, "SHOW");
            }
            Some(LsnCommand::SetMin(Ok(lsn))) => {
                // Never backwards: the client's own writes still count.
                self.ryw_lsn = self.ryw_lsn.max(Some(lsn));
                backend_msg::command_complete(&mut self.client.wbuf, "SET");
            }
            Some(LsnCommand::SetMin(Err(raw))) => {
                let error = ErrorFields::error(
                    SqlState::new("22023"),
                    format!("invalid value for parameter \"tidepool.min_lsn\": \"{raw}\""),
                )
                .with_hint("A WAL position looks like 0/3000060 (what SHOW tidepool.lsn returns).");
                self.client.queue_error(&error);
            }
            None if self.defers_begin(&sql) => {
                self.ha.deferred_begin = Some(sql);
                backend_msg::command_complete(&mut self.client.wbuf, "BEGIN");
                self.client.rbuf.advance(total);
                self.exchange.features.head_words = None;
                backend_msg::ready_for_query(&mut self.client.wbuf, b'T');
                return true;
            }
            None => return false,
        }
        self.client.rbuf.advance(total);
        self.exchange.features.head_words = None;
        backend_msg::ready_for_query(&mut self.client.wbuf, status);
        true
    }

    /// A lone `BEGIN` (not `READ ONLY`, which goes to a standby anyway) under first-statement
    /// routing, from a client that routes per transaction and holds nothing on a backend.
    fn defers_begin(&self, sql: &str) -> bool {
        self.snapshot.config.routing.transaction_routing == TransactionRouting::FirstStatement
            && self.routes_per_transaction()
            && self.has_health()
            && self.ha.deferred_begin.is_none()
            && !self.pins.any()
            && self.snapshot.classifier.classify(sql).control == Some(Control::Begin)
    }
}

/// `pg_type` oid of `text`: what PostgreSQL's own SHOW returns.
const TEXT_OID: u32 = 25;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_commands() {
        use LsnCommand::*;
        let lsn = |s| SetMin(Ok(Lsn::parse(s).unwrap()));
        for (sql, want) in [
            ("SHOW tidepool.lsn", Some(Show)),
            ("  show TIDEPOOL.LSN ; ", Some(Show)),
            ("SHOW tidepool.lsnx", None),
            ("SHOWtidepool.lsn", None),
            ("SET tidepool.min_lsn = '0/3000060'", Some(lsn("0/3000060"))),
            (
                "set session tidepool.min_lsn to '16/B374D848';",
                Some(lsn("16/B374D848")),
            ),
            ("SET tidepool.min_lsn='0/1'", Some(lsn("0/1"))),
            ("SET tidepool.min_lsn TO 0/1", Some(lsn("0/1"))),
            ("SET tidepool.min_lsn = 'soon'", Some(SetMin(Err("soon".into())))),
            ("SET tidepool.min_lsn = ''", Some(SetMin(Err(String::new())))),
            ("SET tidepool.min_lsn = 'a'b'", None),
            ("SET tidepool.min_lsn", None),
            ("SET tidepool.min_lsnx = '0/1'", None),
            ("SET LOCAL tidepool.min_lsn = '0/1'", None),
            ("SET tidepool.route = 'primary'", None),
            ("SELECT 1", None),
            ("SET tidepool.min_lsn = '0/1'; SELECT 1", None),
        ] {
            assert_eq!(parse_lsn_command(sql), want, "{sql}");
        }
    }
}
