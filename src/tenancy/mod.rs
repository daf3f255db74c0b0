//! Tenants: apps with their routing, limits and callback secrets, the credentials that act
//! for them, and the sealing of those secrets at rest.

pub mod apps;
pub mod keys;
pub mod sealing;
