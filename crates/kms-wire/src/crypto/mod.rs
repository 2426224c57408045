//! Cryptography of the KMS protocol (PROTOCOL.md §6).
