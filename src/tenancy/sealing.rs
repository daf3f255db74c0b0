//! Webhook signing secrets at rest: sealed with XChaCha20-Poly1305 under a key from
//! configuration (`[secrets]`), the app id bound in as associated data so a sealed value
//! copied to another app's row does not open. They are opened only to sign.
//!
//! A sealed value reads `enc:v1:<key id>:<base64 of nonce ‖ ciphertext>`. Values written
//! before a key was configured (or with none) are in clear and read as they are;
//! `otp-courier secrets reseal` seals them, and re-seals under a new active key, so keys can
//! be rotated: add the new key, make it active, reseal, then drop the old one.

use std::collections::HashMap;
use std::fmt;

use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;

use crate::platform::config::{decode_sealing_key, SecretsConfig};

const PREFIX: &str = "enc:v1:";

/// Why a stored secret cannot be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    #[error("sealed with key `{0}`, which is not under [secrets.keys]")]
    UnknownKey(String),
    #[error("the sealed value is damaged, or belongs to another app")]
    Damaged,
}

/// The configured sealing keys, and the one new secrets are sealed with (none: in clear).
#[derive(Clone, Default)]
pub struct Sealer {
    active: Option<String>,
    keys: HashMap<String, [u8; 32]>,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field("active", &self.active)
            .field("keys", &self.keys.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Sealer {
    /// Expects a validated configuration (every key 32 bytes of hex, the active one present).
    pub fn from_config(config: &SecretsConfig) -> Self {
        let keys = config
            .keys
            .iter()
            .filter_map(|(id, hex_key)| Some((id.clone(), decode_sealing_key(hex_key.expose())?)))
            .collect();
        Self {
            active: Some(config.active_key.clone()).filter(|k| !k.is_empty()),
            keys,
        }
    }

    /// Whether new secrets are sealed.
    pub fn is_active(&self) -> bool {
        self.active.is_some()
    }

    /// `secret` as it is to be stored for `app`: sealed under the active key, or in clear
    /// when no key is configured.
    pub fn seal(&self, app: &str, secret: &str) -> String {
        let Some((id, key)) = self.active.as_ref().and_then(|id| Some((id, self.keys.get(id)?))) else {
            return secret.to_string();
        };
        let mut nonce = [0u8; 24];
        rand::rng().fill_bytes(&mut nonce);
        let cipher = XChaCha20Poly1305::new(key.into());
        let sealed = cipher
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: secret.as_bytes(),
                    aad: app.as_bytes(),
                },
            )
            .expect("XChaCha20-Poly1305 seals any input of this size");
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        format!(
            "{PREFIX}{id}:{}",
            base64::engine::general_purpose::STANDARD_NO_PAD.encode(out)
        )
    }

    /// The secret a stored value of `app` holds.
    pub fn open(&self, app: &str, stored: &str) -> Result<String, SealError> {
        let Some(rest) = stored.strip_prefix(PREFIX) else {
            return Ok(stored.to_string());
        };
        let (id, encoded) = rest.split_once(':').ok_or(SealError::Damaged)?;
        let key = self.keys.get(id).ok_or_else(|| SealError::UnknownKey(id.to_string()))?;
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(encoded)
            .map_err(|_| SealError::Damaged)?;
        if bytes.len() < 24 {
            return Err(SealError::Damaged);
        }
        let (nonce, sealed) = bytes.split_at(24);
        let opened = XChaCha20Poly1305::new(key.into())
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: app.as_bytes(),
                },
            )
            .map_err(|_| SealError::Damaged)?;
        String::from_utf8(opened).map_err(|_| SealError::Damaged)
    }

    /// Whether a stored value is already sealed under the active key (nothing to reseal).
    pub fn is_current(&self, stored: &str) -> bool {
        match &self.active {
            Some(id) => stored.starts_with(&format!("{PREFIX}{id}:")),
            None => !stored.starts_with(PREFIX),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::config::Secret;

    fn sealer(active: &str, keys: &[(&str, u8)]) -> Sealer {
        Sealer::from_config(&SecretsConfig {
            active_key: active.into(),
            keys: keys
                .iter()
                .map(|(id, byte)| (id.to_string(), Secret::new(hex::encode([*byte; 32]))))
                .collect(),
        })
    }

    #[test]
    fn a_sealed_secret_opens_for_its_app_only_and_never_shows_in_clear() {
        let sealer = sealer("k1", &[("k1", 1)]);
        let stored = sealer.seal("shop", "whsec_abc");
        assert!(
            stored.starts_with("enc:v1:k1:") && !stored.contains("whsec_abc"),
            "{stored}"
        );
        assert_ne!(stored, sealer.seal("shop", "whsec_abc"), "a fresh nonce each time");
        assert_eq!(sealer.open("shop", &stored).as_deref(), Ok("whsec_abc"));
        assert_eq!(sealer.open("bank", &stored), Err(SealError::Damaged));
        assert!(!format!("{sealer:?}").contains(&hex::encode([1u8; 32])));
    }

    #[test]
    fn clear_values_read_as_they_are_and_old_keys_still_open() {
        let old = sealer("k1", &[("k1", 1)]);
        let stored = old.seal("shop", "whsec_abc");
        let rotated = sealer("k2", &[("k1", 1), ("k2", 2)]);
        assert_eq!(rotated.open("shop", &stored).as_deref(), Ok("whsec_abc"));
        assert!(!rotated.is_current(&stored));
        assert_eq!(rotated.open("shop", "whsec_plain").as_deref(), Ok("whsec_plain"));
        assert_eq!(
            sealer("k2", &[("k2", 2)]).open("shop", &stored),
            Err(SealError::UnknownKey("k1".into()))
        );
        assert_eq!(
            Sealer::default().seal("shop", "whsec_abc"),
            "whsec_abc",
            "no key: in clear"
        );
    }
}
