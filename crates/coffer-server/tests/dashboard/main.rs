//! The dashboard's (`coffer-dashboard`) tests that need the server: its router in-process
//! (`oneshot`) over a real data dir, the dashboard mounted as `serve` mounts it, behind the
//! API's failed-authentication limit; and the dashboard alone behind a stub guard. Here, not in
//! coffer-dashboard, which the server depends on (ARCHITECTURE.md: no cycle).

mod audit;
mod operator;
mod pages;
mod security;
mod services;
mod sign_in;
mod support;
mod tokens;
