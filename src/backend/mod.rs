//! One connection to PostgreSQL: connect and log in (`connect`), its state (`conn`), running
//! tidepool's own statements on it and cleaning it between clients (`reset`).

mod conn;
mod connect;
mod error;
mod reset;
mod tls;

pub(crate) use conn::record_parameter;
pub use conn::{BackendConn, BackendKey, BackendState};
pub use connect::{connect, BackendLogin, BackendSecret};
pub use error::BackendError;
pub use reset::QueryOutcome;
