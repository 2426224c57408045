//! End-to-end tests: real `kmsd` processes on 127.0.0.1, real clients over TCP.
//!
//! One test binary for the whole tier (link time dominates a cold build on two cores).
//!
//! * [`counting`] — the client count as clients see it: thresholds, repeats, pools, caps.
//! * [`persistence`] — counts and host identity across a clean restart.
//! * [`crash`] — `kill -9` under load loses no acknowledged client; sustained load.
//! * [`refusals`] — KMS refusals with the right HRESULT; the connection stays usable.
//! * [`protocol`] — v4/v5/v6 × NDR32/NDR64 × BTFN × requests per connection.
//! * [`bad_input`] — malformed input on every path and the connection limits, while a good
//!   client keeps being served.
//! * [`operations`] — HTTP endpoints, configuration (flags, TOML, `KMSD_*`), SIGTERM, startup
//!   failures.
//! * [`admin`] — operating a node and a three-node cluster with kmsctl: status, inventory,
//!   configuration, identity, backup and restore, events, leader transfer, member removal.
//!
//! [`harness`] starts and stops the processes; [`kms`] is the client side.

mod admin;
mod bad_input;
mod cluster;
mod counting;
mod crash;
mod dns;
mod fault;
mod harness;
mod kms;
mod netns;
mod operations;
mod persistence;
mod protocol;
mod refusals;
