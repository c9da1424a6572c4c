//! tidepool: a PostgreSQL connection pooler and read/write load-balancing proxy.
//!
//! Data flow (see docs/ARCHITECTURE.md): `client::listener` accepts → `client::startup` reads
//! the startup packet → `client::auth` checks the password → `client::session` serves queries,
//! checking a backend out of `pool` per transaction (or per session) and relaying frames with
//! `client::relay`; `backend` owns each PostgreSQL connection.
#![forbid(unsafe_code)]

pub mod admin;
pub mod app;
pub mod auth;
pub mod backend;
pub mod client;
pub mod cluster;
pub mod config;
pub(crate) mod crypto;
pub mod demo;
pub mod fuzzing;
pub mod health;
pub mod health_command;
pub mod import;
pub mod listener;
pub mod metrics;
pub mod notify;
pub mod pool;
pub mod protocol;
pub mod reload;
pub mod router;
pub mod service;
pub mod shutdown;
pub mod tls;
