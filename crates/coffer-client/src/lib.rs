//! Coffer HTTP client (being written).
