//! Generates the Rust code for `proto/kms/raft/v1/raft.proto` and `proto/kms/admin/v1/admin.proto`
//! with tonic-prost-build, using the protoc binary vendored by `protoc-bin-vendored` (no system
//! protoc needed). The protoc path is handed to prost-build's `Config::protoc_executable` rather
//! than through the `PROTOC` environment variable, which a build script cannot set without
//! `unsafe` in edition 2024.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest_dir.join("../../proto");
    let protos = [
        proto_root.join("kms/raft/v1/raft.proto"),
        proto_root.join("kms/admin/v1/admin.proto"),
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={}", p.display());
    }

    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);

    let includes = [proto_root, protoc_bin_vendored::include_path()?];
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // `bytes` fields as `prost::bytes::Bytes`: snapshot chunks are sliced out of one buffer and
        // payloads are re-sent without copying.
        .bytes(".")
        .compile_with_config(config, &protos, &includes)?;
    Ok(())
}
