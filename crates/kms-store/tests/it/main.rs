//! Integration tests of kms-store: one binary, modules per topic.

mod common;
mod journal;
mod raft_single_node;
mod restart;
mod restart_bench;
mod snapshot;
mod suite;
