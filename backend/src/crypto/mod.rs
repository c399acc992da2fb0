//! Cryptographic formats of our own making, built only from reviewed constructions.

pub mod audit_chain;
pub mod keys;
pub mod sealed_object;
