//! otp-courier: one-time passwords by SMS and WhatsApp, from a RabbitMQ job to a provider
//! request, with PostgreSQL state and an outbox of status events. See DESIGN in the README.
//!
//! The folders follow the roles: [`otp`] is the lifecycle of a code, [`message`] what the
//! phone receives, [`callbacks`] the signed status events, [`tenancy`] the apps and their
//! credentials, [`ops`] the operator actions, [`platform`] the shared plumbing; [`worker`],
//! [`api`] and [`cli`] are the entry points, [`provider`] the SMS and WhatsApp adapters and
//! [`domain`] the values parsed once at the edge.

pub mod api;
pub mod callbacks;
pub mod cli;
pub mod console;
pub mod domain;
pub mod message;
pub mod ops;
pub mod otp;
pub mod platform;
pub mod provider;
pub mod tenancy;
pub mod worker;

pub use worker::Worker;
