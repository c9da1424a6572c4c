//! How a session ends when tidepool shuts down: at its next idle point, with PostgreSQL's own
//! FATAL 57P01, never in the middle of a request. A client waiting for a server (held by PAUSE,
//! or queued for a full pool) is at such a point: its request was not sent anywhere.

use crate::client::login::CloseReason;
use crate::client::registry::ClientTicket;
use crate::client::session::Session;
use crate::protocol::{ErrorFields, SqlState};
use crate::shutdown::{Shutdown, Stage};
use std::time::Duration;

/// How long a client that has logged in but not yet been answered once may take to send its
/// first request after a shutdown began. A client that connects as the shutdown starts (or
/// whose connection sat in the listen backlog) is served rather than turned away; one that
/// never sends anything is closed after this.
const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(5);

/// Resolves when a shutdown of at least `stage` asks the session holding `ticket` to close at
/// its next idle point (an idle wait, or a wait for the pool). It subscribes to nothing: the
/// app wakes every client when the stop moves on (`app::wake_clients_on_stop`) and this looks
/// at the stage then. `first`: the client was not answered yet (see `FIRST_REQUEST_GRACE`).
pub(crate) async fn stop_due(ticket: &ClientTicket, shutdown: &Shutdown, stage: Stage, first: bool) {
    // Graceful or Fast; a drain (WAIT_FOR_CLIENTS) closes nobody.
    let stage = stage.max(Stage::Graceful);
    ticket.until(|| shutdown.stage() >= stage).await;
    if first {
        // Boxed: rare, and inline it would size every wait that may see a shutdown.
        Box::pin(tokio::time::sleep(FIRST_REQUEST_GRACE)).await;
    }
}

impl Session {
    /// How far a shutdown must be before a client waiting for a server is closed: graceful,
    /// unless a `BEGIN` was answered for it already (`first_statement`): then it is inside a
    /// transaction as far as it knows, which only a fast stop may cut short.
    pub(crate) fn shutdown_stage_for_waiting(&self) -> Stage {
        if self.ha.deferred_begin.is_some() {
            Stage::Fast
        } else {
            Stage::Graceful
        }
    }

    /// Closes a client whose request waited for a server when the shutdown reached it.
    pub(crate) async fn close_waiting_for_shutdown(&mut self) -> CloseReason {
        tracing::debug!(
            client = self.ticket.id(),
            "shutdown: closing a client waiting for a server"
        );
        self.client
            .send_fatal(
                ErrorFields::fatal(
                    SqlState::ADMIN_SHUTDOWN,
                    "terminating connection due to administrator command",
                )
                .with_detail("tidepool is shutting down; the request was not sent to any server."),
            )
            .await;
        CloseReason::Shutdown
    }

    /// Says goodbye the way PostgreSQL does when its administrator shuts it down.
    pub(crate) async fn close_for_shutdown(&mut self) -> CloseReason {
        self.client
            .send_fatal(ErrorFields::fatal(
                SqlState::ADMIN_SHUTDOWN,
                "terminating connection due to administrator command",
            ))
            .await;
        CloseReason::Shutdown
    }
}
