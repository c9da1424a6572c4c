//! Transaction mode between transactions, no backend attached: flush, wait for the client's
//! next request (or a timeout, a shutdown, a notification), and answer locally what needs no
//! server (an owed error, Flush, Sync, Terminate, LISTEN, already-known Parse/Close).

use crate::client::conn::ClientIoError;
use crate::client::features::keywords::Words;
use crate::client::login::CloseReason;
use crate::client::session::{sleep_or_never, Session};
use crate::config::PoolMode;
use crate::protocol::{backend_msg, tag, ErrorFields, SqlState};
use crate::shutdown::Stage;
use bytes::Buf;
use tokio::time::Instant;

/// How much of a pipelining client's input routing waits for, to see its frames whole.
const ROUTING_LOOKAHEAD: usize = 64 * 1024;

impl Session {
    /// Waits until a whole request that needs a backend is at the head of the client's input,
    /// answering the rest along the way.
    pub(crate) async fn wait_for_request(&mut self) -> Result<(), CloseReason> {
        loop {
            self.deliver_notifications();
            self.client.flush().await?;
            if self.client.rbuf.is_empty() && !self.wait_for_input().await? {
                continue;
            }
            // The wait prefers input: a client sending back to back would never see its
            // shutdown branch.
            if !self.awaiting_first_request && self.shared.shutdown.stage() >= Stage::Graceful {
                return Err(Box::pin(self.close_for_shutdown()).await);
            }
            let (tag, total) =
                match crate::protocol::frame::peek_header(&self.client.rbuf, self.client.decoder.max_len()) {
                    Ok(Some((tag, total))) if self.client.rbuf.len() >= total => (tag, total),
                    Ok(_) => {
                        self.client.fill().await?;
                        continue;
                    }
                    Err(e) => {
                        let error = ErrorFields::fatal(SqlState::PROTOCOL_VIOLATION, e.to_string());
                        Box::pin(self.client.send_fatal(error)).await;
                        return Err(ClientIoError::Frame(e).into());
                    }
                };
            let Some(words) = self.answer_between(tag, total).await? else {
                continue;
            };
            // Routing reads every frame buffered behind this one and takes a frame cut by the
            // read for a write: complete it first (the client is in the middle of sending it),
            // but look no further than ROUTING_LOOKAHEAD into a client that keeps sending.
            while self.client.rbuf.len() < ROUTING_LOOKAHEAD
                && crate::protocol::frame::ends_with_partial_frame(
                    &self.client.rbuf,
                    self.client.decoder.max_len(),
                )
            {
                self.client.fill().await?;
            }
            self.exchange.features.head_words = words.map(|words| (total, words));
            return Ok(());
        }
    }

    /// Nothing buffered: waits for input. False: woken for something else (a notification);
    /// look again.
    async fn wait_for_input(&mut self) -> Result<bool, CloseReason> {
        let deadline = self.idle_timeout().map(|t| Instant::now() + t);
        let first = self.awaiting_first_request;
        let shutdown_due = crate::client::session::drain::stop_due(
            &self.ticket,
            &self.shared.shutdown,
            Stage::Graceful,
            first,
        );
        tokio::select! {
            biased;
            ready = self.client.wait_readable() => ready?,
            _ = crate::client::features::listen::notified(&self.listens) => return Ok(false),
            _ = sleep_or_never(deadline) => return Err(Box::pin(self.idle_timeout_hit()).await),
            _ = shutdown_due => return Err(Box::pin(self.close_for_shutdown()).await),
        }
        // Over TLS, waiting already read.
        if self.client.rbuf.is_empty() {
            self.client.fill().await?;
        }
        Ok(true)
    }

    /// The whole frame `tag` (`total` bytes) heads the input: answers it here when no backend
    /// is needed (`None`), else returns the scan of its text (Query, Parse in transaction mode)
    /// for every consumer (LISTEN, local commands, relay).
    async fn answer_between(&mut self, tag: u8, total: usize) -> Result<Option<Option<Words>>, CloseReason> {
        if tag == tag::TERMINATE {
            return Err(CloseReason::Terminated);
        }
        if let Some(error) = self.pending_error.take() {
            // A held-back BEGIN dies with the request that was to carry it (status I below).
            self.ha.deferred_begin = None;
            self.client.queue_error(&error);
            if matches!(tag, tag::QUERY | tag::FUNCTION_CALL | tag::SYNC) {
                self.client.rbuf.advance(total);
                backend_msg::ready_for_query(&mut self.client.wbuf, b'I');
            } else {
                self.discard_until_sync = true;
            }
            return Ok(None);
        }
        if self.discard_until_sync {
            self.client.rbuf.advance(total);
            if tag == tag::SYNC {
                self.discard_until_sync = false;
                backend_msg::ready_for_query(&mut self.client.wbuf, b'I');
            }
            return Ok(None);
        }
        let transaction_mode = self.mode == PoolMode::Transaction;
        let words = (transaction_mode && matches!(tag, tag::QUERY | tag::PARSE)).then(|| {
            Words::scan(crate::client::session::relay::sql_start(
                tag,
                &self.client.rbuf[5..total],
            ))
        });
        if words.is_some_and(|w| self.may_answer_listen(w)) && Box::pin(self.answer_listen()).await {
            return Ok(None);
        }
        if transaction_mode && self.max_prepared > 0 && (tag == tag::PARSE || tag == tag::CLOSE) {
            let answered = crate::client::features::statements::answer_without_backend(
                &self.client.rbuf,
                &self.shared.statements,
                &mut self.statements,
                &mut self.client.wbuf,
            );
            if let Some(used) = answered {
                self.account_local_parses();
                self.client.rbuf.advance(used);
                return Ok(None);
            }
        }
        if tag == tag::FLUSH || tag == tag::SYNC {
            // No backend means no transaction and no open batch: nothing to flush, and a
            // Sync (say, of a batch tidepool already closed on its backend) is answered
            // exactly as PostgreSQL would.
            self.client.rbuf.advance(total);
            if tag == tag::SYNC {
                backend_msg::ready_for_query(&mut self.client.wbuf, b'I');
            }
            return Ok(None);
        }
        Ok(Some(words))
    }

    pub(crate) async fn idle_timeout_hit(&mut self) -> CloseReason {
        let in_transaction = self.checkout.is_attached() && !self.exchange.tracker.is_idle();
        let (code, message, reason) = if in_transaction {
            (
                SqlState::IDLE_IN_TRANSACTION_TIMEOUT,
                "terminating connection due to idle-in-transaction timeout",
                CloseReason::IdleInTransactionTimeout,
            )
        } else {
            (
                SqlState::IDLE_SESSION_TIMEOUT,
                "terminating connection due to idle-session timeout",
                CloseReason::IdleTimeout,
            )
        };
        self.client.send_fatal(ErrorFields::fatal(code, message)).await;
        reason
    }
}
