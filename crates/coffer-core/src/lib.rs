//! Coffer domain (being written).
