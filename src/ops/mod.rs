//! Operator actions: replaying failed deliveries and callbacks, and the dead-letter queue.

pub mod dlq;
pub mod replay;
