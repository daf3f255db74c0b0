use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

macro_rules! prefixed_id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Uuid);

        impl $name {
            /// A new time-ordered id (UUIDv7 keeps inserts at the end of the index).
            pub fn new() -> Self {
                Self(Uuid::now_v7())
            }
            pub fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }
            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::new()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "_{}"), self.0.simple())
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            /// Accepts the prefixed form and, for convenience, a bare UUID.
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let bare = s.strip_prefix(concat!($prefix, "_")).unwrap_or(s);
                Uuid::parse_str(bare).map(Self)
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
    };
}

prefixed_id!(
    /// An OTP, shown as `otp_<32 hex digits>`.
    OtpId,
    "otp"
);
impl OtpId {
    /// The id of the OTP a producer's request id names: a UUIDv8 from SHA-256(app, request id),
    /// so every send of that request, concurrent ones included, agrees on it.
    pub fn for_request(app: &str, request_id: &str) -> Self {
        use sha2::{Digest, Sha256};
        let digest = Sha256::new()
            .chain_update(b"otp-courier/otp-id/v1\0")
            .chain_update(app.as_bytes())
            .chain_update([0])
            .chain_update(request_id.as_bytes())
            .finalize();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        Self(Uuid::new_v8(bytes))
    }
}

prefixed_id!(
    /// A status event; its id is the `webhook-id` of the callback, stable across retries.
    EventId,
    "evt"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_otp_id_round_trips_through_its_prefixed_form() {
        let id = OtpId::new();
        let shown = id.to_string();
        assert!(shown.starts_with("otp_") && shown.len() == 36, "{shown}");
        assert_eq!(shown.parse::<OtpId>().expect("parses"), id);
        assert_eq!(id.as_uuid().to_string().parse::<OtpId>().expect("bare uuid"), id);
        assert!("otp_nothex".parse::<OtpId>().is_err());
    }

    #[test]
    fn a_request_id_always_names_the_same_otp_id_within_its_app() {
        assert_eq!(OtpId::for_request("shop", "r-1"), OtpId::for_request("shop", "r-1"));
        assert_ne!(OtpId::for_request("shop", "r-1"), OtpId::for_request("bank", "r-1"));
        assert_ne!(OtpId::for_request("shop", "r-1"), OtpId::for_request("shop", "r-2"));
        assert_eq!(OtpId::for_request("shop", "r-1").as_uuid().get_version_num(), 8);
    }
}
