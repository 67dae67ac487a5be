//! The server's integration tests: the router in-process (`tower::ServiceExt::oneshot`) over a
//! real data dir (file KEK), one module per concern, plus a few over real TCP.
//!
//! This target runs them on the embedded SQLite store; `api_postgres` (postgres.rs) runs the
//! same modules on PostgreSQL. `support::backend` tells the two apart, and
//! `support::SqliteOnly` lists what runs on SQLite only, and why.

include!("modules.rs");
