//! Adapters: one per backend. They translate between the ports and a backend's
//! API, and decide nothing.

#[cfg(feature = "aws")]
pub mod aws;
pub mod memory;
#[cfg(feature = "sqlite")]
pub mod sqlite;
