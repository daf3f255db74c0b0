//! Values the rest of the code can trust: each is parsed once at the edge and cannot
//! hold an invalid value afterwards.

mod ids;
mod job;
mod phone;
mod values;
mod workflow;

pub use ids::{EventId, OtpId};
pub use job::{JobError, RawJob, SendJob, TemplateSet};
pub use phone::{NumberKind, PhoneError, PhoneNumber};
pub use values::{AppId, CallbackUrl, Channel, MaxAttempts, Metadata, RequestId, Sender, Ttl};
pub use workflow::{Step, Workflow};
