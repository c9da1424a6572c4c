//! One connection to PostgreSQL: connect and log in (`connect`, SCRAM pass-through in `scram`),
//! its state (`conn`), running tidepool's own statements on it and cleaning it between clients
//! (`reset`), parameterised lookups such as auth_query (`lookup`).

mod conn;
mod connect;
mod error;
mod lookup;
mod reset;
mod scram;
mod tls;
mod users;

pub(crate) use conn::record_parameter;
pub use conn::{BackendConn, BackendKey, BackendState, READ_BUFFER};
pub use connect::{connect, BackendLogin, BackendSecret};
pub use error::BackendError;
pub(crate) use reset::parse_data_row;
pub use reset::{quote_ident, QueryOutcome, BASELINE_SQL, LEFTOVERS_SQL};
pub use scram::{PassThroughError, ScramKeys};
pub use users::{Millis, Users};
