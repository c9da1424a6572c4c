//! One connection to PostgreSQL: connect and log in (`connect`), its state (`conn`), running
//! tidepool's own statements on it and cleaning it between clients (`reset`).

mod conn;
mod connect;
mod error;
mod reset;

pub(crate) use conn::record_parameter;
pub use conn::{BackendConn, BackendKey, BackendState};
pub use connect::{connect, BackendLogin, BackendSecret};
pub use error::BackendError;
pub(crate) use reset::parse_data_row;
pub use reset::QueryOutcome;
