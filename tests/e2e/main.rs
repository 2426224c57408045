//! End-to-end tests: real `kmsd` processes on 127.0.0.1, real clients over TCP.
//!
//! One test binary for the whole tier (link time dominates a cold build on two cores).

mod harness;
