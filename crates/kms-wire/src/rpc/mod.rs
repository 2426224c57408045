//! DCE/RPC connection-oriented PDUs and NDR stubs (PROTOCOL.md §3, §4).
