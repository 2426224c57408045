//! kms-wire integration tests: one binary, one module per concern.

mod common;
mod crypto_vectors;
mod kms_captured;
mod kms_malformed;
mod kms_props;
mod rpc_captured;
mod rpc_fragments;
mod rpc_host;
mod rpc_malformed;
mod rpc_props;
mod server_deterministic;
