//! Certificate authorities: the deployment's root, a cluster's intermediate, and the server
//! certificates they issue.

use crate::TrustError;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use std::fmt;
use std::str::FromStr;

/// How long a CA's certificate lasts, in days (ten years: re-rooting a deployment is rare
/// and disruptive; leaf certificates carry the churn).
pub const CA_DAYS: i64 = 3650;
/// How long a server certificate lasts, in days; it is renewed well before.
pub const SERVER_DAYS: i64 = 90;

/// Slack before "now" in every certificate: clocks of edge boards drift, and a certificate not
/// yet valid by a few seconds would fail a join for nothing.
const BACKDATE_S: i64 = 300;

/// The SHA-256 of a CA certificate's DER: what a join token pins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CaHash(pub [u8; 32]);

impl CaHash {
    /// The hash of a certificate given as DER.
    pub fn of_der(der: &[u8]) -> CaHash {
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        let mut hash = [0u8; 32];
        hash.copy_from_slice(digest.as_ref());
        CaHash(hash)
    }
}

impl fmt::Display for CaHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl FromStr for CaHash {
    type Err = TrustError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let malformed = |rule: &str| TrustError::Malformed {
            part: "ca hash",
            rule: rule.to_string(),
        };
        if text.len() != 64 {
            return Err(malformed("must be 64 hexadecimal digits (a SHA-256)"));
        }
        let mut hash = [0u8; 32];
        for (i, pair) in text.as_bytes().chunks(2).enumerate() {
            let pair = std::str::from_utf8(pair).map_err(|_| malformed("must be hexadecimal"))?;
            hash[i] = u8::from_str_radix(pair, 16).map_err(|_| malformed("must be hexadecimal"))?;
        }
        Ok(CaHash(hash))
    }
}

/// A certificate and its key, as PEM, with the chain a server presents.
#[derive(Clone, PartialEq, Eq)]
pub struct Issued {
    /// The certificate alone.
    pub cert_pem: String,
    /// The certificate followed by the intermediate CAs up to (not including) the root: what a
    /// TLS server sends.
    pub chain_pem: String,
    /// Its private key (PKCS#8): a secret, for a file of mode 0600.
    pub key_pem: String,
    /// The certificate's DER.
    pub cert_der: Vec<u8>,
    /// When it expires, in seconds since the epoch.
    pub not_after: i64,
}

impl fmt::Debug for Issued {
    // the key is a secret: never in a log
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Issued")
            .field("not_after", &self.not_after)
            .field("key_pem", &"(secret)")
            .finish_non_exhaustive()
    }
}

/// A certificate authority: the deployment's root, or an intermediate under it (a cluster's).
pub struct CertificateAuthority {
    name: String,
    key: KeyPair,
    constraints: BasicConstraints,
    cert: Issued,
    /// The intermediates above this one, up to (not including) the root, as PEM.
    parents_pem: String,
    /// The root's certificate (this one's, for the root).
    root_pem: String,
    root_der: Vec<u8>,
}

impl fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("name", &self.name)
            .field("hash", &self.hash().to_string())
            .field("not_after", &self.cert.not_after)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// A new root CA named `name`, valid from `now` (seconds since the epoch) for [`CA_DAYS`].
    pub fn create_root(name: &str, now: i64) -> Result<Self, TrustError> {
        let key = KeyPair::generate()?;
        let constraints = BasicConstraints::Unconstrained;
        let params = ca_params(name, constraints, Some((now, CA_DAYS)))?;
        let cert = params.self_signed(&key)?;
        let issued = issued(&cert, &key, String::new(), now + CA_DAYS * 86_400);
        Ok(CertificateAuthority {
            name: name.to_string(),
            root_pem: issued.cert_pem.clone(),
            root_der: issued.cert_der.clone(),
            key,
            constraints,
            cert: issued,
            parents_pem: String::new(),
        })
    }

    /// A new CA under this one (a cluster's), which may issue only end certificates.
    pub fn intermediate(&self, name: &str, now: i64) -> Result<Self, TrustError> {
        let key = KeyPair::generate()?;
        let constraints = BasicConstraints::Constrained(0);
        let not_after = (now + CA_DAYS * 86_400).min(self.cert.not_after);
        let days = (not_after - now) / 86_400;
        let params = ca_params(name, constraints, Some((now, days)))?;
        let cert = params.signed_by(&key, &self.issuer()?)?;
        let parents_pem = if self.is_root() {
            String::new()
        } else {
            format!("{}{}", self.cert.cert_pem, self.parents_pem)
        };
        Ok(CertificateAuthority {
            name: name.to_string(),
            cert: issued(&cert, &key, parents_pem.clone(), not_after),
            key,
            constraints,
            parents_pem,
            root_pem: self.root_pem.clone(),
            root_der: self.root_der.clone(),
        })
    }

    /// A server certificate for `names` (DNS names or IP addresses; the first is its common
    /// name), valid from `now` for [`SERVER_DAYS`] and never past this CA.
    pub fn issue_server(&self, names: &[String], now: i64) -> Result<Issued, TrustError> {
        let Some(first) = names.first() else {
            return Err(TrustError::Name {
                name: String::new(),
                rule: "a server certificate needs at least one name or address".into(),
            });
        };
        for name in names {
            check_name(name)?;
        }
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(names.to_vec()).map_err(|e| TrustError::Name {
            name: names.join(","),
            rule: e.to_string(),
        })?;
        let not_after = (now + SERVER_DAYS * 86_400).min(self.cert.not_after);
        params.distinguished_name = common_name(first);
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = at(now - BACKDATE_S)?;
        params.not_after = at(not_after)?;
        let cert = params.signed_by(&key, &self.issuer()?)?;
        Ok(issued(&cert, &key, self.chain_above_leaf(), not_after))
    }

    /// A CA read back from its parts (see [`crate::TrustFolder`]): its name, whether it is
    /// the root, its key and certificate as PEM, the intermediates above it, the root's
    /// certificate and when its own expires.
    pub fn from_parts(
        name: &str,
        root: bool,
        key_pem: &str,
        cert_pem: &str,
        parents_pem: &str,
        root_pem: &str,
        not_after: i64,
    ) -> Result<Self, TrustError> {
        use rustls::pki_types::pem::PemObject;
        let der = |pem: &str| {
            rustls::pki_types::CertificateDer::from_pem_slice(pem.as_bytes())
                .map(|d| d.to_vec())
                .map_err(|e| TrustError::Certificate(format!("not a PEM certificate: {e}")))
        };
        let key = KeyPair::from_pem(key_pem)?;
        let cert_der = der(cert_pem)?;
        let root_der = der(root_pem)?;
        if root != (cert_der == root_der) {
            return Err(TrustError::Certificate(
                "the certificate and the root's do not agree on whether it is the root".into(),
            ));
        }
        let cert = Issued {
            chain_pem: format!("{cert_pem}{parents_pem}"),
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
            cert_der,
            not_after,
        };
        Ok(CertificateAuthority {
            name: name.to_string(),
            key,
            constraints: if root {
                BasicConstraints::Unconstrained
            } else {
                BasicConstraints::Constrained(0)
            },
            cert,
            parents_pem: parents_pem.to_string(),
            root_pem: root_pem.to_string(),
            root_der,
        })
    }

    /// The intermediates above it, up to (not including) the root, as PEM.
    pub fn parents_pem(&self) -> &str {
        &self.parents_pem
    }

    /// Its name (the certificate's common name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its own certificate and key.
    pub fn certificate(&self) -> &Issued {
        &self.cert
    }

    /// The deployment's root certificate, as PEM: what every member trusts (`ca.crt`).
    pub fn root_pem(&self) -> &str {
        &self.root_pem
    }

    /// The deployment's root certificate, as DER.
    pub fn root_der(&self) -> &[u8] {
        &self.root_der
    }

    /// This CA's certificate followed by the intermediates above it, then the root: what a
    /// member of its part of the tree keeps as `ca.crt` (the chain to the one trust root).
    pub fn bundle_pem(&self) -> String {
        if self.is_root() {
            return self.root_pem.clone();
        }
        format!(
            "{}{}{}",
            self.cert.cert_pem, self.parents_pem, self.root_pem
        )
    }

    /// The hash of this CA's certificate: what the join tokens it issues pin.
    pub fn hash(&self) -> CaHash {
        CaHash::of_der(&self.cert.cert_der)
    }

    /// Whether it is the deployment's root.
    pub fn is_root(&self) -> bool {
        self.cert.cert_der == self.root_der
    }

    /// The intermediates a leaf it issues is sent with: this CA's certificate and those above
    /// it, unless it is the root (which clients already hold).
    fn chain_above_leaf(&self) -> String {
        if self.is_root() {
            String::new()
        } else {
            format!("{}{}", self.cert.cert_pem, self.parents_pem)
        }
    }

    /// Signs as this CA. The issuer is rebuilt from the same parameters the CA's certificate
    /// was made with (subject, key usages, key identifier method), which is all rcgen needs.
    fn issuer(&self) -> Result<Issuer<'static, &KeyPair>, TrustError> {
        let params = ca_params(&self.name, self.constraints, None)?;
        Ok(Issuer::new(params, &self.key))
    }
}

/// The parameters of a CA certificate named `name`; `validity` (from, days) when making one.
fn ca_params(
    name: &str,
    constraints: BasicConstraints,
    validity: Option<(i64, i64)>,
) -> Result<CertificateParams, TrustError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = common_name(name);
    params.is_ca = IsCa::Ca(constraints);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    if let Some((from, days)) = validity {
        params.not_before = at(from - BACKDATE_S)?;
        params.not_after = at(from + days * 86_400)?;
    }
    Ok(params)
}

fn common_name(name: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, name);
    dn
}

fn at(unix: i64) -> Result<time::OffsetDateTime, TrustError> {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .map_err(|e| TrustError::Certificate(format!("time {unix}: {e}")))
}

fn issued(cert: &rcgen::Certificate, key: &KeyPair, above: String, not_after: i64) -> Issued {
    let cert_pem = cert.pem();
    Issued {
        chain_pem: format!("{cert_pem}{above}"),
        cert_pem,
        key_pem: key.serialize_pem(),
        cert_der: cert.der().to_vec(),
        not_after,
    }
}

/// A name a certificate may carry: an IP address, or a DNS name of letters, digits, `-` and
/// `.` (a leading `*.` for a wildcard), at most 253 characters.
fn check_name(name: &str) -> Result<(), TrustError> {
    if name.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let host = name.strip_prefix("*.").unwrap_or(name);
    let ok = !host.is_empty()
        && name.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if ok {
        Ok(())
    } else {
        Err(TrustError::Name {
            name: name.to_string(),
            rule: "must be an IP address or a DNS name (letters, digits and '-' in labels of at most 63 characters joined by '.')".into(),
        })
    }
}
