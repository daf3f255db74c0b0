//! otp-courier: one-time passwords by SMS and WhatsApp, from a RabbitMQ job to a provider
//! request, with PostgreSQL state and an outbox of status events. See DESIGN in the README.

pub mod amqp;
pub mod api;
pub mod apps;
pub mod batch;
pub mod cli;
pub mod config;
pub mod db;
pub mod delivery;
pub mod dispatcher;
pub mod dlq;
pub mod domain;
pub mod intake;
pub mod keys;
pub mod lifecycle;
pub mod locale;
pub mod observability;
pub mod outbox;
pub mod pin;
pub mod provider;
pub mod ratelimit;
pub mod replay;
pub mod segments;
pub mod ssrf;
pub mod sweeper;
pub mod telemetry;
pub mod template;
pub mod verify;
pub mod webhook;
pub mod worker;

pub use worker::Worker;
