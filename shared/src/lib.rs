//! The Eye's core library: the pure [`domain`], the [`ports`] it needs, the
//! use cases in [`app`], the [`adapters`] that implement the ports, and the one
//! HTTP handler ([`api`]) that both the local server and the Lambda run.
//! Every default is in [`config`].

pub mod adapters;
pub mod api;
pub mod app;
pub mod config;
pub mod domain;
#[cfg(feature = "aws")]
pub mod lambda;
pub mod ports;
