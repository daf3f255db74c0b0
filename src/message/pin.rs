//! PINs are derived, never stored: `HMAC-SHA256(key, app ‖ otp_id ‖ salt ‖ generation)`
//! mapped onto the PIN alphabet without bias; the salt is random per OTP and stored.
//! Retries and redeliveries re-derive the same PIN, so a code the user already holds stays
//! valid; verification re-derives and compares in constant time.

use std::collections::HashMap;
use std::fmt;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::domain::OtpId;
pub use crate::platform::config::PinKeyError;
use crate::platform::config::{decode_pin_key, PinConfig};

type HmacSha256 = Hmac<Sha256>;

/// Which characters a PIN is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PinType {
    #[default]
    Numbers,
    /// Upper-case A-Z; verification ignores case.
    Letters,
    /// 0-9 and upper-case A-Z; verification ignores case.
    Alphanumeric,
}

impl PinType {
    pub fn parse(input: &str) -> Result<Self, &'static str> {
        match input {
            "numbers" => Ok(Self::Numbers),
            "letters" => Ok(Self::Letters),
            "alphanumeric" => Ok(Self::Alphanumeric),
            _ => Err("pinType must be \"numbers\", \"letters\" or \"alphanumeric\""),
        }
    }
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Numbers => "numbers",
            Self::Letters => "letters",
            Self::Alphanumeric => "alphanumeric",
        }
    }
    fn alphabet(&self) -> &'static [u8] {
        match self {
            Self::Numbers => b"0123456789",
            Self::Letters => b"ABCDEFGHIJKLMNOPQRSTUVWXYZ",
            Self::Alphanumeric => b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ",
        }
    }
}

/// PIN length: 4 to 10, default 6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinLength(u8);

impl PinLength {
    pub const DEFAULT: PinLength = PinLength(6);
    pub fn parse(value: i64) -> Result<Self, &'static str> {
        match u8::try_from(value) {
            Ok(v) if (4..=10).contains(&v) => Ok(Self(v)),
            _ => Err("pinLength must be between 4 and 10"),
        }
    }
    pub fn get(&self) -> u8 {
        self.0
    }
}

/// A PIN derivation key: at least 32 bytes, given as hex.
#[derive(Clone)]
pub struct PinKey(Vec<u8>);

impl PinKey {
    pub fn parse(hex_key: &str) -> Result<Self, PinKeyError> {
        decode_pin_key(hex_key).map(Self)
    }
}

impl fmt::Debug for PinKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PinKey(***)")
    }
}

/// The configured keys by id, and the one new OTPs use.
#[derive(Debug, Clone)]
pub struct PinKeys {
    active: String,
    keys: HashMap<String, PinKey>,
}

impl PinKeys {
    /// Expects a validated configuration (`Config::require_pin_key`).
    pub fn from_config(config: &PinConfig) -> Result<Self, PinKeyError> {
        let keys = config
            .keys
            .iter()
            .map(|(id, key)| Ok((id.clone(), PinKey::parse(key.expose())?)))
            .collect::<Result<_, PinKeyError>>()?;
        Ok(Self {
            active: config.active_key.clone(),
            keys,
        })
    }
    pub fn active_id(&self) -> &str {
        &self.active
    }
    pub fn get(&self, id: &str) -> Option<&PinKey> {
        self.keys.get(id)
    }
}

/// A PIN. It has no `Display`, and its `Debug` hides it, so it cannot slip into a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct Pin(String);

impl Pin {
    /// A given PIN, for tests elsewhere in the crate.
    #[cfg(test)]
    pub(crate) fn from_digits_for_tests(pin: &str) -> Self {
        Self(pin.to_string())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison; case-insensitive, since only digits and upper-case letters are used.
    pub fn matches(&self, candidate: &str) -> bool {
        let candidate = candidate.trim().to_ascii_uppercase();
        self.0.as_bytes().ct_eq(candidate.as_bytes()).into()
    }
}

impl fmt::Debug for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pin(***)")
    }
}

/// What a PIN is derived for: one generation of one OTP of one app.
#[derive(Debug, Clone, Copy)]
pub struct PinInput<'a> {
    pub app_id: &'a str,
    /// The OTP's stored random salt (not secret): an OTP id that comes back after the
    /// retention prune does not bring its code back. Empty for OTPs from before salts,
    /// which keep the input they were sent with.
    pub salt: &'a [u8],
    pub otp: OtpId,
    pub generation: u32,
}

/// Derives the PIN of one generation of one OTP.
pub fn derive(key: &PinKey, input: &PinInput<'_>, pin_type: PinType, length: PinLength) -> Pin {
    let alphabet = pin_type.alphabet();
    let n = alphabet.len();
    // Bytes at or above `limit` are dropped so that every character is equally likely.
    let limit = 256 - 256 % n;
    let mut pin = String::with_capacity(length.get().into());
    let mut block: u32 = 0;
    while pin.len() < usize::from(length.get()) {
        for byte in stream_block(key, input, block) {
            if usize::from(byte) < limit {
                pin.push(char::from(alphabet[usize::from(byte) % n]));
                if pin.len() == usize::from(length.get()) {
                    break;
                }
            }
        }
        block += 1;
    }
    Pin(pin)
}

/// Block 0 is exactly `HMAC(key, input)`; the rare PIN that needs more bytes continues with
/// `HMAC(key, input ‖ block)`. The input is `"otp-courier/pin/v2" 0x00 ‖ len(app) as u16 ‖ app
/// ‖ otp_id ‖ len(salt) as u8 ‖ salt ‖ generation` (lengths and numbers big-endian), or for
/// an unsalted OTP the earlier `otp_id ‖ generation`.
fn stream_block(key: &PinKey, input: &PinInput<'_>, block: u32) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(&key.0).expect("HMAC takes keys of any length");
    if input.salt.is_empty() {
        mac.update(input.otp.as_uuid().as_bytes());
    } else {
        let app = input.app_id.as_bytes();
        mac.update(b"otp-courier/pin/v2\0");
        mac.update(&u16::try_from(app.len()).unwrap_or(u16::MAX).to_be_bytes());
        mac.update(app);
        mac.update(input.otp.as_uuid().as_bytes());
        mac.update(&[u8::try_from(input.salt.len()).unwrap_or(u8::MAX)]);
        mac.update(input.salt);
    }
    mac.update(&input.generation.to_be_bytes());
    if block > 0 {
        mac.update(&block.to_be_bytes());
    }
    mac.finalize().into_bytes().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    fn key() -> PinKey {
        PinKey::parse(&"0123456789abcdef".repeat(4)).expect("valid key")
    }

    /// The input of an OTP from before salts.
    fn unsalted(otp: OtpId, generation: u32) -> PinInput<'static> {
        PinInput {
            app_id: "shop",
            salt: &[],
            otp,
            generation,
        }
    }

    fn otp() -> OtpId {
        OtpId::from_uuid(Uuid::parse_str("0190f3a1-2b3c-7d4e-8f50-6a7b8c9d0e1f").expect("uuid"))
    }

    #[test]
    fn fixed_vectors_match_an_independent_hmac_computation() {
        // Computed outside Rust with Python's hmac module and the same mapping rule.
        assert_eq!(
            derive(&key(), &unsalted(otp(), 1), PinType::Numbers, PinLength(6)).expose(),
            VECTOR_NUMBERS
        );
        assert_eq!(
            derive(&key(), &unsalted(otp(), 2), PinType::Numbers, PinLength(6)).expose(),
            VECTOR_NUMBERS_GEN2
        );
        assert_eq!(
            derive(&key(), &unsalted(otp(), 1), PinType::Letters, PinLength(8)).expose(),
            VECTOR_LETTERS
        );
        assert_eq!(
            derive(&key(), &unsalted(otp(), 1), PinType::Alphanumeric, PinLength(10)).expose(),
            VECTOR_ALNUM
        );
    }

    #[test]
    fn a_salted_input_matches_an_independent_hmac_computation() {
        // Computed with Python's hmac module, as above.
        let input = PinInput {
            app_id: "shop",
            salt: &[7; 16],
            otp: otp(),
            generation: 1,
        };
        assert_eq!(
            derive(&key(), &input, PinType::Numbers, PinLength(6)).expose(),
            VECTOR_SALTED
        );
        let other_app = PinInput {
            app_id: "bank",
            ..input
        };
        let other_salt = PinInput {
            salt: &[8; 16],
            ..input
        };
        for changed in [other_app, other_salt] {
            assert_ne!(
                derive(&key(), &changed, PinType::Numbers, PinLength(10)),
                derive(&key(), &input, PinType::Numbers, PinLength(10))
            );
        }
    }

    const VECTOR_SALTED: &str = "314841";
    const VECTOR_NUMBERS: &str = "653700";
    const VECTOR_NUMBERS_GEN2: &str = "877293";
    const VECTOR_LETTERS: &str = "WXNXMKWE";
    const VECTOR_ALNUM: &str = "IPDJIWCGLF";

    #[test]
    fn the_same_inputs_give_the_same_pin_and_a_new_generation_a_different_one() {
        let a = derive(&key(), &unsalted(otp(), 1), PinType::Numbers, PinLength(6));
        assert_eq!(a, derive(&key(), &unsalted(otp(), 1), PinType::Numbers, PinLength(6)));
        assert_ne!(
            a,
            derive(&key(), &unsalted(OtpId::new(), 1), PinType::Numbers, PinLength(6))
        );
        assert_eq!(a.expose().len(), 6);
    }

    #[test]
    fn every_length_and_type_yields_only_alphabet_characters() {
        for pin_type in [PinType::Numbers, PinType::Letters, PinType::Alphanumeric] {
            for len in 4..=10 {
                let pin = derive(&key(), &unsalted(OtpId::new(), 1), pin_type, PinLength(len));
                assert_eq!(pin.expose().len(), usize::from(len));
                assert!(
                    pin.expose().bytes().all(|b| pin_type.alphabet().contains(&b)),
                    "{pin_type:?}"
                );
            }
        }
    }

    /// Chi-square over many derived characters. A plain `byte % n` mapping would fail this:
    /// for digits it makes 0-5 about 4% likelier than 6-9.
    #[test]
    fn characters_are_uniformly_distributed() {
        for (pin_type, critical) in [(PinType::Numbers, 27.88), (PinType::Alphanumeric, 66.62)] {
            let n = pin_type.alphabet().len();
            let mut counts = vec![0u64; n];
            let pins = 2_000 * n;
            for i in 0..pins {
                let id = OtpId::from_uuid(Uuid::from_u128(i as u128));
                for b in derive(&key(), &unsalted(id, 1), pin_type, PinLength(10))
                    .expose()
                    .bytes()
                {
                    counts[pin_type.alphabet().iter().position(|&a| a == b).expect("in alphabet")] += 1;
                }
            }
            let expected = (pins * 10) as f64 / n as f64;
            let chi2: f64 = counts.iter().map(|&c| (c as f64 - expected).powi(2) / expected).sum();
            // critical: chi-square at p = 0.001 for n - 1 degrees of freedom.
            assert!(chi2 < critical, "{pin_type:?}: chi2 = {chi2}, counts = {counts:?}");
        }
    }

    #[test]
    fn matching_ignores_case_and_surrounding_space_but_not_content() {
        let pin = Pin("AB12CD".into());
        assert!(pin.matches("ab12cd"));
        assert!(pin.matches(" AB12CD "));
        assert!(!pin.matches("AB12CE"));
        assert!(!pin.matches("AB12C"));
        assert_eq!(format!("{pin:?}"), "Pin(***)");
    }

    #[test]
    fn keys_must_be_long_hex() {
        assert_eq!(PinKey::parse("zz").expect_err("not hex"), PinKeyError::NotHex);
        assert_eq!(PinKey::parse("ab").expect_err("too short"), PinKeyError::TooShort);
    }
}
