//! What transaction mode adds so that a client can run on whichever backend is free: its
//! prepared statements (protocol and SQL level), its settings and other session state checked
//! after each transaction (`isolation`), pins for state that cannot move, LISTEN without a
//! backend, the schema-change retry, and the trigger-word scan that decides which of these a
//! request needs.

pub mod database_ddl;
pub mod isolation;
pub mod keywords;
pub mod listen;
pub mod pinning;
pub(crate) mod schema_retry;
pub mod session_state;
pub mod sql_prepared;
pub mod statements;
