//! The server's integration tests: the router in-process (`tower::ServiceExt::oneshot`) over a
//! real data dir (file KEK, SQLite), one module per concern, plus a few over real TCP.

mod account_kek;
mod account_rk;
mod accounts;
mod accounts_admin;
mod at_rest;
mod audit;
mod auth;
mod bad_body;
mod bad_fields;
mod bad_paths;
mod binding_rules;
mod bindings_audit;
mod concurrency;
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
