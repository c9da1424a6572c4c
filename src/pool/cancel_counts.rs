//! Cancel requests in flight for one pool's clients (SHOW POOLS); counted by `client/cancel.rs`.

use std::sync::atomic::AtomicUsize;

/// Cancel requests for one pool's clients in flight (SHOW POOLS): a relaxed counter per phase.
#[derive(Debug, Default)]
pub struct CancelCounts {
    /// Opening the connection to PostgreSQL: not forwarded yet (cl_waiting_cancel_req).
    pub waiting: AtomicUsize,
    /// Sent; PostgreSQL has not closed the connection yet (cl_active_cancel_req, and
    /// sv_active_cancel: the connection carrying it).
    pub active: AtomicUsize,
}
