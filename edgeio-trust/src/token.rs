//! Join tokens: `edgeio1.ID.SECRET.CAHASH`. The id names the token in logs and lists; the
//! secret proves it; the hash pins the CA that issued it, so a joiner that dials its parent
//! over TLS knows, from the token alone, whether the certificate it was shown is the right
//! one. The parent keeps only a [`TokenRecord`]: the secret's SHA-256, never the secret.

use crate::{CaHash, CertificateAuthority, TrustError};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// What every token starts with (and the format's version).
pub const TOKEN_PREFIX: &str = "edgeio1";
const ID_LEN: usize = 8;
const SECRET_LEN: usize = 32;
pub(crate) const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";

/// A join token as a joiner holds it.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinToken {
    /// Its id: 8 lowercase letters or digits.
    pub id: String,
    /// Its secret: 32 lowercase letters or digits (about 165 bits).
    pub secret: String,
    /// The hash of the CA that issued it.
    pub ca: CaHash,
}

impl fmt::Debug for JoinToken {
    // the secret never reaches a log
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinToken")
            .field("id", &self.id)
            .field("ca", &self.ca.to_string())
            .finish_non_exhaustive()
    }
}

impl fmt::Display for JoinToken {
    /// The whole token, secret included: for the one place it is handed over.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{TOKEN_PREFIX}.{}.{}.{}", self.id, self.secret, self.ca)
    }
}

impl FromStr for JoinToken {
    type Err = TrustError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let malformed = |part: &'static str, rule: &str| TrustError::Malformed {
            part,
            rule: rule.to_string(),
        };
        let parts: Vec<&str> = text.split('.').collect();
        let [prefix, id, secret, ca] = parts[..] else {
            return Err(malformed(
                "token",
                &format!("must be {TOKEN_PREFIX}.ID.SECRET.CAHASH (four parts joined by '.')"),
            ));
        };
        if prefix != TOKEN_PREFIX {
            return Err(malformed(
                "prefix",
                &format!("must be {TOKEN_PREFIX} (is this an edgeio join token?)"),
            ));
        }
        let plain =
            |s: &str, len: usize| s.len() == len && s.bytes().all(|b| ALPHABET.contains(&b));
        if !plain(id, ID_LEN) {
            return Err(malformed("id", "must be 8 lowercase letters or digits"));
        }
        if !plain(secret, SECRET_LEN) {
            return Err(malformed(
                "secret",
                "must be 32 lowercase letters or digits",
            ));
        }
        Ok(JoinToken {
            id: id.to_string(),
            secret: secret.to_string(),
            ca: ca.parse()?,
        })
    }
}

impl JoinToken {
    /// A new token issued by `ca` for `name` (for people: what or whom it is for), with an
    /// optional time to live in seconds and number of uses; returns it and the record the
    /// issuer keeps.
    pub fn issue(
        ca: &CertificateAuthority,
        name: &str,
        now: i64,
        ttl_s: Option<i64>,
        uses: Option<u32>,
    ) -> Result<(JoinToken, TokenRecord), TrustError> {
        let token = JoinToken {
            id: random_text(ID_LEN)?,
            secret: random_text(SECRET_LEN)?,
            ca: ca.hash(),
        };
        let record = TokenRecord {
            id: token.id.clone(),
            name: name.to_string(),
            secret_sha256: hex(&sha256(token.secret.as_bytes())),
            created: now,
            expires: ttl_s.map(|ttl| now.saturating_add(ttl)),
            uses_left: uses,
        };
        Ok((token, record))
    }

    /// Whether `ca` is the CA this token pins.
    pub fn pins(&self, ca: &CertificateAuthority) -> bool {
        self.ca == ca.hash()
    }

    /// Whether one of the certificates a parent presented (DER, as a TLS handshake gives
    /// them) is the CA this token pins.
    pub fn pins_any(&self, certificates: &[&[u8]]) -> bool {
        certificates
            .iter()
            .any(|der| CaHash::of_der(der) == self.ca)
    }
}

/// What the issuer keeps of a join token: never the secret, only its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// The token's id.
    pub id: String,
    /// What or whom it is for.
    pub name: String,
    /// The SHA-256 of its secret, hexadecimal.
    pub secret_sha256: String,
    /// When it was issued, seconds since the epoch.
    pub created: i64,
    /// When it expires, if it does.
    pub expires: Option<i64>,
    /// How many more joins it allows, if limited.
    pub uses_left: Option<u32>,
}

impl TokenRecord {
    /// Whether `secret` is this token's and it may still be used at `now`. Only digests are
    /// compared, so the comparison's time says nothing about the secret.
    pub fn check(&self, secret: &str, now: i64) -> Result<(), TrustError> {
        if hex(&sha256(secret.as_bytes())) != self.secret_sha256 {
            return Err(TrustError::Refused {
                id: self.id.clone(),
            });
        }
        if self.expires.is_some_and(|at| now >= at) {
            return Err(TrustError::Expired {
                id: self.id.clone(),
            });
        }
        if self.uses_left == Some(0) {
            return Err(TrustError::UsedUp {
                id: self.id.clone(),
            });
        }
        Ok(())
    }

    /// Checks `secret` as [`Self::check`] does and, when it passes, counts one use.
    pub fn spend(&mut self, secret: &str, now: i64) -> Result<(), TrustError> {
        self.check(secret, now)?;
        if let Some(left) = self.uses_left.as_mut() {
            *left -= 1;
        }
        Ok(())
    }
}

pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    CaHash::of_der(bytes).0
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A random secret of `len` lowercase letters and digits (about 5.2 bits each) from the
/// system's random source.
pub fn random_secret(len: usize) -> Result<String, TrustError> {
    random_text(len)
}

/// `len` characters of [`ALPHABET`] from the system's random source, without modulo bias.
pub(crate) fn random_text(len: usize) -> Result<String, TrustError> {
    let rng = SystemRandom::new();
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        rng.fill(&mut buf)
            .map_err(|_| TrustError::Certificate("the system's random source failed".into()))?;
        // 252 = 7 × 36: bytes above are dropped so every character is equally likely
        for b in buf.iter().filter(|b| **b < 252) {
            if out.len() == len {
                break;
            }
            out.push(ALPHABET[usize::from(*b % 36)] as char);
        }
    }
    Ok(out)
}
