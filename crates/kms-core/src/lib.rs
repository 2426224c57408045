//! kms-core (being built).
