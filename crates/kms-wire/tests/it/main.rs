//! kms-wire integration tests: one binary, one module per concern.

mod common;
