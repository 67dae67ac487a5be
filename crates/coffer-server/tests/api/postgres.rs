//! The API suite (main.rs) on PostgreSQL: every instance gets a database of its own on the
//! cluster `COFFER_TEST_DATABASE_URL` names (`scripts/pg-test-cluster start DIR` makes one;
//! `scripts/test` and `.ci/run` start one and export it). Without the variable the binary
//! exits mid-run with success at the first test that makes an instance, after one line on
//! stderr saying why (a test cannot skip its siblings; the tests that ran before it passed
//! for real, the rest never run). Under CI (`CI` set to anything but empty, `false` or `0`)
//! every such test fails instead.

include!("main.rs");
