//! The API suite (main.rs) on PostgreSQL: every instance gets a database of its own on the
//! cluster `COFFER_TEST_DATABASE_URL` names (`scripts/pg-test-cluster start DIR` makes one;
//! `scripts/test` and `.ci/run` start one and export it). Without the variable the run skips,
//! saying so in one line; under `CI=true` it fails instead.

include!("main.rs");
