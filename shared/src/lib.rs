//! The Eye's core library.

pub mod domain;
