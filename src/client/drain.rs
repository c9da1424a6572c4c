//! How a session ends when tidepool shuts down: at its next idle point, with PostgreSQL's own
//! FATAL 57P01, never in the middle of a request.

use super::login::CloseReason;
use super::session::Session;
use crate::protocol::{ErrorFields, SqlState};
use crate::shutdown::Stage;
use std::future::Future;
use std::time::Duration;

/// How long a client that has logged in but not yet been answered once may take to send its
/// first request after a shutdown began. A client that connects as the shutdown starts (or
/// whose connection sat in the listen backlog) is served rather than turned away; one that
/// never sends anything is closed after this.
const FIRST_REQUEST_GRACE: Duration = Duration::from_secs(5);

impl Session {
    /// Resolves when a shutdown of at least `stage` asks this session to close at its next idle
    /// point (the caller checks that it is idle). Owns what it needs, so that it can sit in a
    /// `select!` beside the relay's borrows.
    pub(super) fn shutdown_due(&self, stage: Stage) -> impl Future<Output = ()> + Send + 'static {
        let shared = self.shared.clone();
        let first = self.awaiting_first_request;
        async move {
            match stage {
                Stage::Fast => shared.shutdown.wait_fast().await,
                _ => shared.shutdown.wait().await,
            }
            if first {
                tokio::time::sleep(FIRST_REQUEST_GRACE).await;
            }
        }
    }

    /// Says goodbye the way PostgreSQL does when its administrator shuts it down.
    pub(super) async fn close_for_shutdown(&mut self) -> CloseReason {
        self.client
            .send_fatal(ErrorFields::fatal(
                SqlState::ADMIN_SHUTDOWN,
                "terminating connection due to administrator command",
            ))
            .await;
        CloseReason::Shutdown
    }
}
