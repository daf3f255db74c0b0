//! Integration tests against the real PostgreSQL and RabbitMQ; providers are faked on loopback.

mod api;
mod api_verify;
mod apps;
mod bad_input;
mod callbacks;
mod compat;
mod console;
mod console_browser;
mod crash;
mod dead_letters;
mod fraud;
mod harness;
mod limits;
mod logs;
mod metrics;
mod ops;
mod pipeline;
mod providers;
mod receipts;
mod retries;
mod schemas;
mod secrecy;
mod security;
mod ssrf;
mod voice;
mod workflows;
