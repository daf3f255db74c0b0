//! The OTP lifecycle: from a send job to a verified, expired, cancelled or failed OTP.
//! Intake records the job, delivery sends it with retry and backoff, verify checks codes,
//! the sweeper expires what is left, and the rate limits guard each step.

pub mod delivery;
pub mod intake;
pub mod lifecycle;
pub mod ratelimit;
pub mod sweeper;
pub mod verify;
