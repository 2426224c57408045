//! kms-dns integration tests: one binary, a real server on 127.0.0.1:0 per test, queried with
//! raw UDP/TCP clients that encode and decode with hickory-proto (and with `dig` when it is
//! installed).

mod harness;

mod answers;
mod dig;
mod hickory_server_compat;
mod limits;
mod never_panics;
mod transfer;
mod updates;
