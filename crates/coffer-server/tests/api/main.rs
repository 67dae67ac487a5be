// The server's integration tests: the router in-process (`tower::ServiceExt::oneshot`) over a
// real data dir (file KEK), one module per concern, plus a few over real TCP.
//
// This file is the root of two test targets: `api` (here; the embedded SQLite store) and
// `api_postgres` (postgres.rs, which `include!`s this file; PostgreSQL). Plain comments, not
// `//!`: an included file cannot carry inner doc comments. The modules are declared here so
// that `cargo fmt` checks them (it does not follow `include!`). `support::backend` tells the
// two targets apart, and `support::SqliteOnly` lists what runs on SQLite only, and why.

mod account_kek;
mod account_rk;
mod accounts;
mod accounts_admin;
mod at_rest;
mod audit;
mod audit_tamper;
mod auth;
mod backend;
mod bad_body;
mod bad_fields;
mod bad_paths;
mod binding_rules;
mod bindings_audit;
mod concurrency;
mod health;
mod kek;
mod limits;
mod listener;
mod lists;
mod mutations;
mod node_keys;
mod nodes;
mod ops;
mod permissions;
mod replication;
mod runtime;
mod runtime_front;
mod runtime_limits;
mod secrecy;
mod services;
mod signed_feed;
mod snapshot_limits;
mod support;
mod tcp;
mod tls_reload;
mod tokens;
mod user;
