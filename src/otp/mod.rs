//! The OTP lifecycle: from a send job to a verified, expired, cancelled or failed OTP.
//! Intake records the job, delivery sends it with retry and backoff, verify checks codes,
//! receipts tell what became of each message, the sweeper expires what is left, and the
//! rate limits guard each step.

pub mod activity;
pub mod delivery;
pub mod fraud;
pub mod intake;
pub mod lifecycle;
pub mod ratelimit;
pub mod receipts;
pub mod sweeper;
pub mod verify;
pub mod workflow;
