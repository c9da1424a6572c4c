//! A client leaves: its backend is rolled back (or cancelled and drained) and cleaned, then
//! returned to the pool, or closed when that cannot be done quickly.

use crate::backend::{BackendConn, BackendError};
use crate::client::cancel::CancelTarget;
use crate::client::session::checkout::Event;
use crate::client::session::relay::Exchange;
use crate::client::session::Session;
use crate::config::PoolMode;
use crate::protocol::tracker::Direction;
use crate::protocol::{backend_msg, tag};
use std::time::Duration;

impl Session {
    /// Returns or closes the backend when the client leaves.
    pub(crate) async fn finish(&mut self) {
        let settings = self.checkout.pool().settings();
        let Some(backend) = self.checkout.server() else {
            self.checkout.handle(Event::Left { cleaned: false });
            return;
        };
        if let Some(ticket) = &backend.ticket {
            // Being cleaned for the next client (SHOW POOLS sv_tested); release makes it idle.
            ticket.set_state(crate::pool::ServerState::Tested);
            ticket.link(0);
        }
        let quiet = self.exchange.is_quiet() && backend.wbuf.is_empty();
        let (mode, pinned) = (self.mode, self.pins.any());
        if self.pins.loaded_modules > 0 {
            // Nothing unloads a module: this connection serves no one else.
            self.checkout.handle(Event::Left { cleaned: false });
            return;
        }
        let exchange = &mut self.exchange;
        let backend = self.checkout.attached();
        let cleanup = async {
            if !quiet {
                // Abandoned mid-request: cancel it and read to the end, so that the connection
                // can serve someone else.
                drain_abandoned(backend, exchange).await?;
            }
            if !exchange.tracker.is_idle() {
                backend.run_simple("ROLLBACK").await?;
            }
            if mode == PoolMode::Session {
                backend.reset(&settings.reset_query).await?;
            } else if pinned {
                // Locks, temp tables, cursors and LISTENs must not outlive their client.
                backend.reset("DISCARD ALL").await?;
            } else {
                if exchange.features.isolation.verdict != crate::client::features::isolation::Verdict::Clean {
                    // Unchecked effects (also of a rolled-back transaction: sequence state is
                    // not transactional) must not reach the next client.
                    let outcome = backend
                        .run_simple(crate::client::features::isolation::RESET_SQL)
                        .await?;
                    if let Some(e) = outcome.parsed_error() {
                        return Err(BackendError::Server {
                            addr: backend.addr.to_string(),
                            code: e.code,
                            message: e.message,
                            fatal: false,
                        });
                    }
                    backend.applied.clear();
                }
                if exchange.features.sql_prepared_may_have_changed {
                    // The next client must find the backend's SQL prepared statements as recorded.
                    crate::client::features::sql_prepared::refresh(backend).await?;
                }
            }
            Ok::<(), BackendError>(())
        };
        // Bounded: a statement that ignores cancel is not worth waiting for.
        let cleaned = matches!(
            tokio::time::timeout(Duration::from_secs(5), cleanup).await,
            Ok(Ok(()))
        );
        self.checkout.handle(Event::Left { cleaned });
    }
}

/// Finishes what a departed client left running: sends what was buffered, ends an open COPY or
/// batch, cancels the running statement, and reads until every request is answered.
async fn drain_abandoned(backend: &mut BackendConn, ex: &mut Exchange) -> Result<(), BackendError> {
    use crate::protocol::frontend_msg;
    let mut out = std::mem::take(&mut backend.wbuf);
    if ex.tracker.in_copy_in() {
        let s = backend_msg::begin(&mut out, tag::COPY_FAIL);
        backend_msg::put_cstr(&mut out, "client disconnected");
        backend_msg::finish(&mut out, s);
        ex.tracker.step(Direction::Frontend, tag::COPY_FAIL, &[]);
    }
    if ex.tracker.batch_open() {
        frontend_msg::sync(&mut out);
        ex.tracker.step(Direction::Frontend, tag::SYNC, &[]);
    }
    backend.write_all(&out).await?;
    if ex.tracker.pending() > 0 {
        let target = CancelTarget {
            addr: backend.addr.clone(),
            key: backend.key,
        };
        // Not a client's request: counted nowhere.
        let counts = crate::pool::CancelCounts::default();
        tokio::spawn(async move { crate::client::cancel::send_cancel_to(&target, &counts).await });
    }
    while ex.tracker.pending() > 0 {
        let frame = backend.read_frame().await?;
        backend.observe(&frame);
        ex.tracker.step(Direction::Backend, frame.tag, &frame.body);
    }
    Ok(())
}
