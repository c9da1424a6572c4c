//! Where an exchange stopped, and what the session does then: between transactions the checks
//! before sharing and the checkout's verdict (release, park, keep); a statement-only batch
//! closed on the backend; a backend that failed.

use crate::backend::BackendError;
use crate::client::conn::ClientIoError;
use crate::client::login::CloseReason;
use crate::client::session::checkout::{Event, Sharing};
use crate::client::session::relay::RelayEvent;
use crate::client::session::Session;
use crate::config::PoolMode;
use crate::protocol::error::BackendError as ServerError;
use crate::protocol::tracker::{Direction, Step};
use crate::protocol::{backend_msg, tag, ErrorFields, SqlState};
use bytes::Bytes;

impl Session {
    /// Acts on where the relay stopped. Returns a reason when the client must go.
    pub(crate) async fn after_relay(&mut self, event: RelayEvent) -> Option<CloseReason> {
        self.account_relay(&event);
        if !matches!(event, RelayEvent::DatabaseDdl(_) | RelayEvent::SchemaChanged(_)) {
            // The statement that needed a database to itself was answered (or never will be).
            self.database_holds.clear();
        }
        match event {
            RelayEvent::DatabaseDdl(databases) => {
                let holds = crate::client::features::database_ddl::free_databases(&self.shared, &databases);
                self.database_holds.extend(holds);
                self.exchange.features.database_ddl_freed = true;
                None
            }
            RelayEvent::Idle => self.between_transactions().await,
            RelayEvent::IdleInTransaction => {
                self.awaiting_first_request = false;
                self.follow_settings();
                None
            }
            // A pinned client keeps its batch open, like its backend.
            RelayEvent::IdleUnsynced if self.pins.any() => None,
            RelayEvent::IdleUnsynced => {
                Box::pin(self.close_batch()).await;
                None
            }
            RelayEvent::SchemaChanged(error) => match Box::pin(self.retry_after_schema_change(error)).await {
                Ok(()) => None,
                Err(e) => Box::pin(self.backend_lost(None, e.to_string())).await,
            },
            RelayEvent::ClientTerminated => Some(CloseReason::Terminated),
            RelayEvent::ClientFailed(ClientIoError::Frame(e)) => {
                let error = ErrorFields::fatal(SqlState::PROTOCOL_VIOLATION, e.to_string());
                Box::pin(self.client.send_fatal(error)).await;
                Some(CloseReason::ClientIo(ClientIoError::Frame(e)))
            }
            RelayEvent::ClientFailed(e) => Some(CloseReason::ClientIo(e)),
            RelayEvent::BackendFailed(e) => Box::pin(self.backend_lost(None, e.to_string())).await,
            RelayEvent::BackendFatal(frame) => {
                let message = ServerError::parse(&crate::protocol::Frame {
                    tag: frame[0],
                    body: frame.slice(5..),
                })
                .message;
                Box::pin(self.backend_lost(Some(frame), message)).await
            }
        }
    }

    /// The client is between transactions: what follows it to its next backend, then the
    /// checks before sharing, then the backend is released, parked or kept.
    async fn between_transactions(&mut self) -> Option<CloseReason> {
        self.awaiting_first_request = false;
        self.follow_settings();
        if let Err(e) = self.checks_after_transaction().await {
            return Box::pin(self.backend_lost(None, e.to_string())).await;
        }
        let sharing = Sharing {
            transaction_mode: self.mode == PoolMode::Transaction,
            per_transaction: self.routes_per_transaction(),
            pinned: self.pins.any(),
        };
        if let Some(parked) = self.checkout.handle(Event::BetweenTransactions(sharing)) {
            self.park_backend(parked);
        }
        None
    }

    /// What a finished transaction may have changed on its backend, read back before anyone
    /// else (or another node) gets the client.
    async fn checks_after_transaction(&mut self) -> Result<(), BackendError> {
        if self.exchange.features.pins_may_have_changed {
            Box::pin(self.probe_pins()).await?;
        }
        if self.exchange.features.sql_prepared_may_have_changed {
            Box::pin(self.follow_sql_prepared()).await?;
        }
        self.check_before_sharing().await?;
        if self.routed_write && self.read_your_writes() {
            Box::pin(self.record_write_position()).await?;
        }
        Ok(())
    }

    /// Closes a statement-only batch on the backend ourselves; a lone Sync from the client
    /// later is answered without a backend.
    async fn close_batch(&mut self) {
        let backend = self.checkout.attached();
        let tracker = &mut self.exchange.tracker;
        let mut out = bytes::BytesMut::with_capacity(5);
        crate::protocol::frontend_msg::sync(&mut out);
        tracker.step(Direction::Frontend, tag::SYNC, &[]);
        let closed = async {
            backend.write_all(&out).await?;
            loop {
                let frame = backend.read_frame().await?;
                backend.observe(&frame);
                if let Step::Ready { quiet: true, .. } =
                    tracker.step(Direction::Backend, frame.tag, &frame.body)
                {
                    break;
                }
            }
            Ok::<(), BackendError>(())
        }
        .await;
        // What the batch ran is checked like any transaction's before sharing.
        let closed = match closed {
            Ok(()) => self.check_before_sharing().await,
            Err(e) => Err(e),
        };
        let (ok, pinned) = (closed.is_ok(), self.pins.any());
        self.checkout.handle(Event::BatchClosed { ok, pinned });
    }

    /// The backend died or sent FATAL. Returns a reason when the client must go too.
    pub(crate) async fn backend_lost(
        &mut self,
        fatal_frame: Option<Bytes>,
        message: String,
    ) -> Option<CloseReason> {
        let pool = self.checkout.pool();
        if let Some(backend) = self.checkout.server() {
            tracing::warn!(pool = %pool.key, backend = backend.id, "server connection lost: {message}");
        }
        self.checkout.handle(Event::Lost);
        if server_going_down(fatal_frame.as_ref()) {
            // Its siblings are about to die too (some may not have noticed yet, and the reactor
            // may not have told us of those that did): close the idle ones now and the busy ones
            // when released, so the next clients get fresh connections instead.
            self.checkout.pool().retire_connections();
        }
        let ex = std::mem::take(&mut self.exchange);
        if self.mode == PoolMode::Session {
            match fatal_frame {
                Some(frame) => self.client.wbuf.extend_from_slice(&frame),
                None => self.client.queue_error(&ErrorFields::fatal(
                    SqlState::CONNECTION_FAILURE,
                    "server closed the connection unexpectedly",
                )),
            }
            let _ = self.client.flush().await;
            return Some(CloseReason::BackendLost(message));
        }
        // Transaction mode: the client keeps its connection and learns its transaction is gone.
        let error = lost_error(fatal_frame.as_ref());
        if ex.tracker.pending() > 0 || ex.tracker.batch_open() {
            self.client.queue_error(&error);
            for _ in 0..ex.tracker.pending() {
                backend_msg::ready_for_query(&mut self.client.wbuf, b'I');
            }
            self.discard_until_sync = ex.tracker.batch_open();
        } else {
            self.pending_error = Some(Box::new(error));
        }
        None
    }
}

/// What a transaction-mode client is told when its backend was lost: the server's FATAL
/// demoted to an ERROR, or 08006.
fn lost_error(fatal_frame: Option<&Bytes>) -> ErrorFields {
    const DETAIL: &str = "The server connection was lost; any open transaction was rolled back.";
    match fatal_frame {
        Some(frame) => {
            let e = ServerError::parse(&crate::protocol::Frame {
                tag: frame[0],
                body: frame.slice(5..),
            });
            let mut fields = ErrorFields::error(
                SqlState::parse(&e.code).unwrap_or(SqlState::CONNECTION_FAILURE),
                e.message,
            );
            fields.detail = Some(DETAIL.into());
            fields
        }
        None => ErrorFields::error(
            SqlState::CONNECTION_FAILURE,
            "server closed the connection unexpectedly",
        )
        .with_detail(DETAIL),
    }
}

/// Whether a lost backend suggests its whole server is going down: the connection just dropped,
/// or the server said it is shutting down (57P01), restarting after a crash (57P02) or cannot
/// take connections (57P03).
fn server_going_down(fatal_frame: Option<&Bytes>) -> bool {
    let Some(frame) = fatal_frame else {
        return true;
    };
    let e = ServerError::parse(&crate::protocol::Frame {
        tag: frame[0],
        body: frame.slice(5..),
    });
    matches!(e.code.as_str(), "57P01" | "57P02" | "57P03")
}
