//! Multi-process tests of edge replicas (`coffer edge`): real control planes (`coffer server`)
//! and edges, each a `coffer` process on `127.0.0.1:0` with its own temp data dir (helpers in
//! `common`). Every scenario is its own `#[test]`, so they run in parallel.
//!
//! Nothing here sleeps to assert: each wait polls with a deadline ([`harness::WAIT`]) and fails with what
//! it last saw, and the healthz and log tail of the edges involved.

#[path = "../common/mod.rs"]
mod common;
mod harness;

mod access_events;
mod bad_input;
mod convergence;
mod failover;
mod fleet;
mod revocation;
mod static_stability;
