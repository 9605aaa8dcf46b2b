//! The Eye's core library: the pure [`domain`], the [`ports`] it needs, the
//! [`adapters`] that implement them, the use cases ([`processor`]) and the one
//! HTTP handler ([`http`]) that both the local server and the Lambda run.

pub mod adapters;
pub mod config;
pub mod domain;
pub mod http;
pub mod ports;
pub mod processor;
pub mod worker;
