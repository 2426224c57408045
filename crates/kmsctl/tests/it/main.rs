//! kmsctl integration tests: one binary, a shared in-test KMS host ([`harness`]).

mod catalog;
mod cert;
mod cli;
mod e2e;
mod harness;
mod json;
mod products;
mod stats;
