//! # kms-api — code generated from kmsd's `proto/`
//!
//! What this crate is for: the tonic + prost code for the two gRPC packages kmsd speaks on its
//! gRPC port (1689), generated at build time by `build.rs` with a vendored protoc.
//!
//! * [`raft::v1`] — `kms.raft.v1`, the `RaftPeer` service between cluster members (Raft
//!   messages, snapshot streaming, write forwarding, health probes, joins).
//! * [`admin::v1`] — `kms.admin.v1`, the `Admin` service `kmsctl` talks to.
//!
//! What this crate must never do: contain anything but generated code. Conversions between these
//! messages and domain types live in `kms-cluster` (peers) and `kmsd` (admin).

/// Raft peer protocol (`proto/kms/raft/v1/raft.proto`).
pub mod raft {
    /// Version 1 of the package (`kms.raft.v1`).
    #[allow(missing_docs)]
    pub mod v1 {
        tonic::include_proto!("kms.raft.v1");
    }
}

/// Operator API (`proto/kms/admin/v1/admin.proto`).
pub mod admin {
    /// Version 1 of the package (`kms.admin.v1`).
    #[allow(missing_docs)]
    pub mod v1 {
        tonic::include_proto!("kms.admin.v1");
    }
}
