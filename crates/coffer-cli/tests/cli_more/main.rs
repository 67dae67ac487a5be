//! `coffer` against a real `coffer server`, one module per concern (helpers in `common`):
//! names wherever ids are taken and the account from the token, values stored byte for byte,
//! a CLI that reads well, and deployed services that nothing breaks silently.

#[path = "../common/mod.rs"]
mod common;

mod account_kek;
mod bound_services;
mod conventions;
mod kek;
mod metrics;
mod names;
mod operator;
mod values;
