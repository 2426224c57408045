//! KMS v4/v5/v6 messages (PROTOCOL.md §5, §7).
