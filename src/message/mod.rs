//! What the phone receives: the code, the template it is rendered into, the locale that
//! picks the template, and the SMS segments it costs.

pub mod locale;
pub mod pin;
pub mod segments;
pub mod template;
