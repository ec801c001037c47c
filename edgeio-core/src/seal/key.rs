//! The key a parent issues to a child at registration.

use super::SealError;
use crate::wire::Secret;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};
use std::fmt;
use std::str::FromStr;

/// Length of a [`SigningKey`] in bytes (HMAC-SHA256's block-safe key size).
pub const KEY_BYTES: usize = 32;

/// A link's HMAC-SHA256 key: 32 random bytes shared by one parent and one child.
///
/// Its text form (`Display`, `FromStr`, serde) is 64 lower-case hex digits, for the data folder
/// and the registration reply ([`SigningKey::to_secret`]). `Debug` prints only a [fingerprint](SigningKey::fingerprint),
/// so a key in a log line or a panic message is never the key itself.
#[derive(Clone)]
pub struct SigningKey {
    bytes: [u8; KEY_BYTES],
    hmac: hmac::Key,
}

impl SigningKey {
    /// A new key from the operating system's random source.
    pub fn generate() -> Result<SigningKey, SealError> {
        let mut bytes = [0u8; KEY_BYTES];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| SealError::NoRandomness)?;
        Ok(SigningKey::from_bytes(bytes))
    }

    /// The key made of these bytes (tests, and keys read back from storage).
    pub fn from_bytes(bytes: [u8; KEY_BYTES]) -> SigningKey {
        SigningKey {
            hmac: hmac::Key::new(hmac::HMAC_SHA256, &bytes),
            bytes,
        }
    }

    /// A short public name of the key (the first 8 bytes of SHA-256 over it, in hex): tells
    /// two keys apart in logs and in persisted replay state without revealing either.
    pub fn fingerprint(&self) -> String {
        let digest = ring::digest::digest(&ring::digest::SHA256, &self.bytes);
        hex(&digest.as_ref()[..8])
    }

    /// The key as [`Credentials::signing_key`](crate::wire::Credentials::signing_key)
    /// carries it in a registration reply (its text form, hidden from `Debug`).
    pub fn to_secret(&self) -> Secret {
        Secret::new(self.to_string())
    }

    /// The key a registration reply carried; [`SealError::InvalidKey`] when it is not one.
    pub fn from_secret(secret: &Secret) -> Result<SigningKey, SealError> {
        secret.expose().parse()
    }

    pub(crate) fn hmac(&self) -> &hmac::Key {
        &self.hmac
    }
}

impl PartialEq for SigningKey {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for SigningKey {}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey(fingerprint {})", self.fingerprint())
    }
}

/// The 64 hex digits of the key: this IS the secret, for the data folder (mode 0600) and
/// the registration reply only.
impl fmt::Display for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex(&self.bytes))
    }
}

impl FromStr for SigningKey {
    type Err = SealError;

    fn from_str(text: &str) -> Result<SigningKey, SealError> {
        let text = text.trim();
        let bytes = unhex(text).ok_or_else(|| SealError::InvalidKey {
            reason: format!(
                "expected {} hex digits, found {} characters{}",
                2 * KEY_BYTES,
                text.chars().count(),
                if text.chars().all(|c| c.is_ascii_hexdigit()) {
                    ""
                } else {
                    " with a non-hex character"
                }
            ),
        })?;
        let bytes: [u8; KEY_BYTES] =
            bytes
                .try_into()
                .map_err(|b: Vec<u8>| SealError::InvalidKey {
                    reason: format!(
                        "expected {} hex digits, found {}",
                        2 * KEY_BYTES,
                        2 * b.len()
                    ),
                })?;
        Ok(SigningKey::from_bytes(bytes))
    }
}

impl serde::Serialize for SigningKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for SigningKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(2 * bytes.len());
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

/// The bytes of an even-length hex text (either case); `None` for anything else.
pub(crate) fn unhex(text: &str) -> Option<Vec<u8>> {
    // from_str_radix alone would take a sign ("+f"), which is not hex
    if text.len() % 2 != 0 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    text.as_bytes()
        .chunks(2)
        .map(|pair| {
            let pair = std::str::from_utf8(pair).ok()?;
            u8::from_str_radix(pair, 16).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips_and_debug_hides_the_key() {
        let key = SigningKey::generate().expect("randomness");
        let text = key.to_string();
        assert_eq!(text.len(), 64);
        assert_eq!(text.parse::<SigningKey>().expect("parses"), key);
        let debug = format!("{key:?}");
        assert!(!debug.contains(&text), "{debug}");
        assert!(!debug.contains(&text[..16]), "{debug}");
        assert!(debug.contains(&key.fingerprint()));
    }

    #[test]
    fn two_generated_keys_differ() {
        let a = SigningKey::generate().expect("randomness");
        let b = SigningKey::generate().expect("randomness");
        assert_ne!(a, b);
        assert_ne!(a.fingerprint(), b.fingerprint());
    }

    #[test]
    fn serde_uses_the_text_form() {
        let key = SigningKey::from_bytes([7; 32]);
        let json = serde_json::to_string(&key).expect("encodes");
        assert_eq!(json, format!("\"{}\"", "07".repeat(32)));
        let back: SigningKey = serde_json::from_str(&json).expect("decodes");
        assert_eq!(back, key);
    }

    #[test]
    fn a_key_travels_in_the_registration_credentials() {
        let key = SigningKey::generate().expect("randomness");
        let credentials = crate::wire::Credentials {
            ca_pem: String::new(),
            credential: Secret::new("cred"),
            ca_cert_pem: None,
            ca_key_pem: None,
            ca_not_after: None,
            mqtt_password: None,
            signing_key: Some(key.to_secret()),
        };
        let json = serde_json::to_string(&credentials).expect("encodes");
        let back: crate::wire::Credentials = serde_json::from_str(&json).expect("decodes");
        let carried = back.signing_key.as_ref().expect("a key");
        assert_eq!(SigningKey::from_secret(carried).expect("a key"), key);
        assert!(!format!("{back:?}").contains(&key.to_string()));
        assert!(matches!(
            SigningKey::from_secret(&Secret::new("sign-secret")),
            Err(SealError::InvalidKey { .. })
        ));
    }

    #[test]
    fn malformed_text_names_the_rule() {
        let short = "ab".parse::<SigningKey>().unwrap_err();
        assert_eq!(
            short.to_string(),
            "invalid signing key: expected 64 hex digits, found 2"
        );
        let odd = "abc".parse::<SigningKey>().unwrap_err();
        assert_eq!(
            odd.to_string(),
            "invalid signing key: expected 64 hex digits, found 3 characters"
        );
        let bad = "zz".repeat(32).parse::<SigningKey>().unwrap_err();
        assert_eq!(
            bad.to_string(),
            "invalid signing key: expected 64 hex digits, found 64 characters with a non-hex character"
        );
        // the message never echoes the text, which may be a (mistyped) secret
        assert!(!bad.to_string().contains("zzzz"));
    }
}
