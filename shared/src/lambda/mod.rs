//! What the Lambdas share beyond the HTTP handler: the SQS trigger's event
//! mapping ([`sqs_trigger`]) and the metric lines ([`emf`]).

pub mod emf;
pub mod sqs_trigger;
