//! Plumbing every role shares: configuration, the broker and database connections, batching,
//! metrics, logs and traces.

pub mod amqp;
pub mod batch;
pub mod config;
pub mod db;
pub mod observability;
pub mod telemetry;
