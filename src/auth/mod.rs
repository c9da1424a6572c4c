//! Client authentication: which method a connection must use (`policy`, `hba`), where the
//! user's secret comes from (`directory`: `[[users]]` and `userlist`; `query`: auth_query), the
//! SCRAM and md5 exchanges as state machines. No sockets: `client/authenticate.rs` runs the
//! exchange with one client. A SCRAM login yields the client's key, which the user's pool uses
//! to log in to PostgreSQL (pass-through, see `backend/scram.rs`).

mod directory;
pub mod hba;
pub mod md5;
mod policy;
mod query;
pub mod scram;
mod secret;
pub mod userlist;

pub use directory::{backend_secret, unlisted_user, DirectoryError, SecretSource, UserAuth, UserDirectory};
pub use policy::{check_cert, choose_method, Connection, Refusal, RefusedAt};
pub use scram::{fuzz_scram_exchange, ChannelBinding, ScramError, ScramServer, ScramVerifier, ServerNonce};
pub use secret::{Secret, SecretError};
