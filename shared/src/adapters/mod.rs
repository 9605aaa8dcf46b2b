//! Adapters: one per backend. They translate between the ports and a backend's
//! API, and decide nothing.

pub mod memory;
#[cfg(feature = "sqlite")]
pub mod sqlite;
