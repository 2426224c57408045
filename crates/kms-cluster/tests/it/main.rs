//! Integration tests of kms-cluster: one binary, modules per topic, a shared harness.

mod bad_input;
mod cluster;
mod harness;
mod sim_cluster;
mod wire;
