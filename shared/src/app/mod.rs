//! The use cases, over the ports only:
//! - [`ingest`]: check a request and queue its events durably (the 202);
//! - [`process`]: judge queued events, store the valid ones, record the
//!   invalid ones, and say which messages to retry;
//! - [`consume`]: the embedded consumer, which takes batches off a pull queue
//!   and hands them to the processor, as the SQS trigger does on AWS.

pub mod consume;
pub mod ingest;
pub mod process;
