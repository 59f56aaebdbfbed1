//! The herd: who the servers are and how they link up.

pub mod config;
pub mod store;
