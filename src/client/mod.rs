//! The application side: accepting connections, startup, authentication, and each client's
//! session with the relay to its backend.

mod abandon;
mod accounting;
mod attach;
pub mod auth;
pub mod cancel;
pub mod conn;
pub mod database_ddl;
mod drain;
mod follow;
pub mod isolation;
pub mod keywords;
pub mod listen;
pub mod listener;
pub mod local_commands;
pub mod login;
pub mod notify;
mod notify_senders;
pub mod params;
pub mod peers;
pub mod pinning;
pub mod registry;
pub mod relay;
mod reloaded;
pub mod routing;
pub(crate) mod schema_retry;
pub mod session;
pub mod session_state;
pub mod sql_prepared;
pub mod startup;
pub mod statements;
mod timeouts;
pub mod unix_socket;

pub use listener::ClientCounter;

/// Bytes one logged-in client takes however it is used (SHOW MEM): its session, its registry
/// entry and its cancel slot. Its read and write buffers come on top while it is busy; they
/// grow with its messages and are released while it idles, so they have no fixed size.
pub fn client_size() -> usize {
    std::mem::size_of::<session::Session>()
        + std::mem::size_of::<registry::ClientEntry>()
        + std::mem::size_of::<cancel::CancelSlot>()
}
