//! The application side: accepting connections, startup, authentication, and each client's
//! session with the relay to its backend.

mod abandon;
mod accounting;
pub mod auth;
pub mod cancel;
pub mod conn;
mod drain;
mod follow;
pub mod keywords;
pub mod listener;
pub mod local_commands;
pub mod login;
pub mod params;
pub mod pinning;
pub mod registry;
pub mod relay;
mod reloaded;
pub mod routing;
pub mod session;
pub mod session_state;
pub mod startup;
pub mod statements;

pub use listener::ClientCounter;
