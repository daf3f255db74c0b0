//! Tenants: apps with their routing, limits and callback secrets, and the credentials that
//! act for them.

pub mod apps;
pub mod keys;
