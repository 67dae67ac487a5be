//! The dashboard's tests: the server's router in-process (`oneshot`) over a real data dir.

mod pages;
mod security;
mod sign_in;
mod support;
