//! Status events to signed callbacks: the outbox rows each state change writes, the
//! dispatcher that delivers them, the Standard Webhooks signing and the SSRF guard on the
//! callback URLs; sms.cx's `otp_update` body for apps that choose it.

pub mod dispatcher;
pub mod outbox;
pub mod smscx;
pub mod ssrf;
pub mod webhook;
