//! TLS for the HTTP and WebSocket links: server configurations from PEM (with a certificate
//! that can be replaced while the server runs), client configurations that trust a CA, and
//! the first-contact verifier that trusts a CA pinned by the SHA-256 of its certificate.
//!
//! Every configuration uses one crypto provider, rustls on ring ([`provider`]): the workspace
//! builds no aws-lc and no OpenSSL. Certificates and keys come in as PEM bytes, so this crate
//! needs nothing from the crate that issues them.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use std::fmt;
use std::sync::{Arc, RwLock};

/// How long a client may take from TCP accept to a finished TLS handshake at
/// [`serve_tls`](crate::serve_tls).
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Only HTTP/1.1 is offered: the WebSocket upgrade needs it, and neither side speaks h2.
const ALPN_HTTP1: &[u8] = b"http/1.1";

/// Why a TLS configuration could not be built. The message names the input (`the
/// certificate chain`, `the private key`, `the CA`), what was found, and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {problem}")]
pub struct TlsError {
    /// The input at fault, e.g. `the certificate chain (PEM)`.
    pub what: String,
    /// What is wrong with it and what was expected.
    pub problem: String,
}

impl TlsError {
    fn new(what: &str, problem: impl Into<String>) -> TlsError {
        TlsError {
            what: what.to_string(),
            problem: problem.into(),
        }
    }
}

/// rustls on ring: the one crypto provider of every TLS endpoint in edgeio.
///
/// rustls 0.23.48 deprecates ring's provider (no post-quantum key exchange); aws-lc-rs would
/// need cmake and a C toolchain, which edgeio does not ask of a build machine.
#[allow(deprecated)]
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The SHA-256 of a certificate's DER encoding: how a join token names the CA to trust before
/// the joiner has its certificate (kubeadm's discovery hash).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CertHash(pub [u8; 32]);

impl CertHash {
    /// The hash of `cert` (DER).
    pub fn of(cert: &[u8]) -> CertHash {
        let digest = ring::digest::digest(&ring::digest::SHA256, cert);
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(digest.as_ref());
        CertHash(bytes)
    }

    /// Parses 64 hex digits (upper or lower case), optionally after `sha256:`.
    pub fn from_hex(text: &str) -> Result<CertHash, TlsError> {
        let hex = text.strip_prefix("sha256:").unwrap_or(text);
        let bad = |rule: &str| TlsError::new("the certificate hash", format!("{text:?} {rule}"));
        if hex.len() != 64 {
            return Err(bad(&format!(
                "has {} characters; expected 64 hex digits (SHA-256)",
                hex.len()
            )));
        }
        let mut bytes = [0u8; 32];
        for (i, pair) in hex.as_bytes().chunks(2).enumerate() {
            let pair = std::str::from_utf8(pair).map_err(|_| bad("is not hex"))?;
            bytes[i] = u8::from_str_radix(pair, 16).map_err(|_| bad("is not hex"))?;
        }
        Ok(CertHash(bytes))
    }

    /// Lower-case hex, 64 digits.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for CertHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.to_hex())
    }
}

impl fmt::Display for CertHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.to_hex())
    }
}

/// Every certificate in `pem`, in order; an error names `what` when there is none or one is
/// damaged.
pub fn certs_from_pem(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::new(what, format!("is not valid PEM: {e}")))?;
    if certs.is_empty() {
        return Err(TlsError::new(
            what,
            "holds no certificate; expected one or more \"-----BEGIN CERTIFICATE-----\" blocks",
        ));
    }
    Ok(certs)
}

/// A certificate chain (end certificate first) and its private key, checked against each
/// other, ready to be served.
pub fn certified_key_from_pem(
    chain_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<CertifiedKey>, TlsError> {
    let chain = certs_from_pem(chain_pem, "the certificate chain (PEM)")?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
        TlsError::new(
            "the private key (PEM)",
            format!(
                "cannot be read ({e}); expected one \"-----BEGIN PRIVATE KEY-----\" (PKCS#8), \
                 \"EC PRIVATE KEY\" or \"RSA PRIVATE KEY\" block"
            ),
        )
    })?;
    let certified = CertifiedKey::from_der(chain, key, &provider()).map_err(|e| {
        TlsError::new(
            "the private key (PEM)",
            format!(
                "does not fit the certificate chain ({e}); expected the key of the first (end) \
                 certificate, of a kind ring signs with (ECDSA P-256/P-384, Ed25519, RSA)"
            ),
        )
    })?;
    Ok(Arc::new(certified))
}

/// The server's certificate, replaceable while the server runs: a renewed certificate is
/// [`ServerCert::replace_pem`]d and every handshake after that presents it, while the
/// connections already open keep theirs. Give [`ServerCert::server_config`] to
/// [`serve_tls`](crate::serve_tls).
pub struct ServerCert {
    current: RwLock<Arc<CertifiedKey>>,
}

impl fmt::Debug for ServerCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let current = self.current();
        let hash = current.cert.first().map(|c| CertHash::of(c));
        f.debug_struct("ServerCert")
            .field("end_certificate", &hash)
            .field("chain_length", &current.cert.len())
            .finish()
    }
}

impl ServerCert {
    /// The certificate chain (PEM, end certificate first) and its private key (PEM).
    pub fn from_pem(chain_pem: &[u8], key_pem: &[u8]) -> Result<Arc<ServerCert>, TlsError> {
        Ok(Arc::new(ServerCert {
            current: RwLock::new(certified_key_from_pem(chain_pem, key_pem)?),
        }))
    }

    /// Replaces the certificate for every handshake from now on. A chain or key that does not
    /// read leaves the current certificate in place and says why.
    pub fn replace_pem(&self, chain_pem: &[u8], key_pem: &[u8]) -> Result<(), TlsError> {
        let next = certified_key_from_pem(chain_pem, key_pem)?;
        self.replace(next);
        Ok(())
    }

    /// Replaces the certificate with one already read.
    pub fn replace(&self, next: Arc<CertifiedKey>) {
        let hash = next.cert.first().map(|c| CertHash::of(c));
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = next;
        tracing::info!(end_certificate = ?hash, "server certificate replaced");
    }

    /// The certificate presented now.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A server configuration (ring, TLS 1.2 and 1.3, HTTP/1.1, no client certificates) that
    /// presents this certificate as it is at each handshake.
    pub fn server_config(self: &Arc<Self>) -> Arc<ServerConfig> {
        server_config_with_resolver(self.clone())
    }
}

impl ResolvesServerCert for ServerCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

fn server_config_with_resolver(resolver: Arc<dyn ResolvesServerCert>) -> Arc<ServerConfig> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports TLS 1.2 and 1.3")
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Arc::new(config)
}

/// A server configuration for a fixed certificate: the chain (PEM, end certificate first) and
/// its private key (PEM). For a certificate renewed while running, use [`ServerCert`].
pub fn server_config_from_pem(
    chain_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<ServerConfig>, TlsError> {
    Ok(ServerCert::from_pem(chain_pem, key_pem)?.server_config())
}

/// How a client decides to trust the server it dials.
#[derive(Clone, PartialEq, Eq)]
pub enum ServerTrust {
    /// The server's chain must lead to one of these CA certificates (PEM): the normal case,
    /// once a member holds its deployment's CA.
    CaPem(Vec<u8>),
    /// First contact (a joiner holding only a join token): the server's chain must contain a
    /// certificate with this hash, and the end certificate must chain to that one. See
    /// [`PinnedVerifier`].
    Pinned(CertHash),
}

impl fmt::Debug for ServerTrust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerTrust::CaPem(pem) => write!(f, "CaPem({} bytes)", pem.len()),
            ServerTrust::Pinned(hash) => write!(f, "Pinned({hash})"),
        }
    }
}

/// A client configuration (ring, TLS 1.2 and 1.3, HTTP/1.1) that trusts servers as `trust`
/// says, and no system roots: edgeio's links are to its own servers.
pub fn client_config(trust: &ServerTrust) -> Result<Arc<ClientConfig>, TlsError> {
    let verifier: Arc<dyn ServerCertVerifier> = match trust {
        ServerTrust::CaPem(pem) => {
            let roots = roots_from(certs_from_pem(pem, "the CA (PEM)")?, "the CA (PEM)")?;
            WebPkiServerVerifier::builder_with_provider(roots, provider())
                .build()
                .map_err(|e| TlsError::new("the CA (PEM)", format!("cannot verify with it: {e}")))?
        }
        ServerTrust::Pinned(hash) => Arc::new(PinnedVerifier::new(*hash)),
    };
    let mut config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports TLS 1.2 and 1.3")
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_HTTP1.to_vec()];
    Ok(Arc::new(config))
}

fn roots_from(
    certs: Vec<CertificateDer<'static>>,
    what: &str,
) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for (i, cert) in certs.into_iter().enumerate() {
        roots.add(cert).map_err(|e| {
            TlsError::new(
                what,
                format!("certificate {} cannot be a trust anchor: {e}", i + 1),
            )
        })?;
    }
    Ok(Arc::new(roots))
}

/// Trusts a server on first contact by a pinned certificate hash instead of a CA file.
///
/// A join token carries the SHA-256 of the deployment's CA certificate (DER). The joiner
/// accepts the server's chain iff
/// 1. one certificate the server sent (the end certificate or an intermediate) hashes to the
///    pin — so the server must send its CA along in its chain, and
/// 2. the end certificate verifies, for the name dialed and at this time, with that
///    certificate as the only trust anchor (rustls' own [`WebPkiServerVerifier`]).
///
/// So a server that merely copies the CA certificate into its chain without a certificate
/// issued under it is refused, and so is any chain under another CA. Signatures of the
/// handshake are checked as usual. Once joined, the member keeps the CA and dials with
/// [`ServerTrust::CaPem`].
#[derive(Debug)]
pub struct PinnedVerifier {
    pin: CertHash,
    provider: Arc<CryptoProvider>,
}

impl PinnedVerifier {
    /// Trusts the CA whose certificate hashes to `pin`.
    pub fn new(pin: CertHash) -> PinnedVerifier {
        PinnedVerifier {
            pin,
            provider: provider(),
        }
    }
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let pinned = std::iter::once(end_entity)
            .chain(intermediates)
            .find(|cert| CertHash::of(cert) == self.pin)
            .ok_or_else(|| refusal(PinRefusal::NotInChain(self.pin)))?;
        let roots = roots_from(vec![pinned.clone().into_owned()], "the pinned certificate")
            .map_err(|e| rustls::Error::General(e.to_string()))?;
        let verifier = WebPkiServerVerifier::builder_with_provider(roots, self.provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(format!("pinned certificate: {e}")))?;
        match verifier.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            // Said in the pin's terms: the fix is the token, not a CA file.
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::UnknownIssuer | rustls::CertificateError::BadSignature,
            )) => Err(refusal(PinRefusal::NotIssuedUnder(self.pin))),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Why [`PinnedVerifier`] refused a chain.
#[derive(Debug)]
enum PinRefusal {
    /// No certificate of the chain has the pinned hash.
    NotInChain(CertHash),
    /// The chain carries the pinned certificate, but the end certificate is not issued under it.
    NotIssuedUnder(CertHash),
}

fn refusal(why: PinRefusal) -> rustls::Error {
    rustls::Error::InvalidCertificate(rustls::CertificateError::Other(rustls::OtherError(
        Arc::new(why),
    )))
}

impl fmt::Display for PinRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PinRefusal::NotInChain(pin) => write!(
                f,
                "no certificate in the server's chain has the pinned hash {pin} (the join token's CA)"
            ),
            PinRefusal::NotIssuedUnder(pin) => write!(
                f,
                "the server's certificate is not issued under the pinned CA {pin}, though its \
                 chain carries that CA"
            ),
        }
    }
}

impl std::error::Error for PinRefusal {}

/// Words for a failed handshake of a client, naming the fix where there is one; `ca` names
/// the trusted CA (e.g. `the CA in ca.crt`).
pub(crate) fn explain_handshake_error(e: &rustls::Error, ca: &str) -> String {
    use rustls::CertificateError as C;
    match e {
        rustls::Error::InvalidCertificate(C::UnknownIssuer)
        | rustls::Error::InvalidCertificate(C::BadSignature) => format!(
            "the server's certificate is not signed by {ca} — pass the deployment's CA with \
             --ca FILE / EDGEIO_CA"
        ),
        rustls::Error::InvalidCertificate(C::NotValidForName)
        | rustls::Error::InvalidCertificate(C::NotValidForNameContext { .. }) => format!(
            "the server's certificate does not name the host dialed ({e}) — dial a name or \
             address the certificate was issued for"
        ),
        rustls::Error::InvalidCertificate(C::Expired)
        | rustls::Error::InvalidCertificate(C::ExpiredContext { .. }) => format!(
            "the server's certificate has expired ({e}) — renew it, or check this machine's clock"
        ),
        rustls::Error::InvalidCertificate(C::NotValidYet)
        | rustls::Error::InvalidCertificate(C::NotValidYetContext { .. }) => {
            format!("the server's certificate is not valid yet ({e}) — check this machine's clock")
        }
        rustls::Error::InvalidCertificate(C::Other(other)) => format!(
            "the server's certificate is refused: {} — check the join token's CA hash",
            other
        ),
        other => format!("tls handshake failed: {other}"),
    }
}

/// The first rustls error in `e`'s chain, looking inside `io::Error`s (whose `source` skips
/// the error they wrap).
pub(crate) fn find_rustls_error<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> Option<&'a rustls::Error> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = current {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(inner) = io.get_ref() {
                if let Some(tls) = inner.downcast_ref::<rustls::Error>() {
                    return Some(tls);
                }
                if let Some(found) = find_rustls_error(inner) {
                    return Some(found);
                }
            }
        }
        current = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cert_hashes_read_back_from_hex() {
        let hash = CertHash::of(b"not really a certificate");
        assert_eq!(CertHash::from_hex(&hash.to_hex()).unwrap(), hash);
        assert_eq!(
            CertHash::from_hex(&format!("sha256:{}", hash.to_hex().to_uppercase())).unwrap(),
            hash
        );
        let short = CertHash::from_hex("abcd").unwrap_err().to_string();
        assert!(
            short.contains("\"abcd\"") && short.contains("expected 64 hex digits"),
            "{short}"
        );
        let not_hex = CertHash::from_hex(&"zz".repeat(32))
            .unwrap_err()
            .to_string();
        assert!(not_hex.contains("is not hex"), "{not_hex}");
    }

    #[test]
    fn pem_problems_name_the_input() {
        let none = certs_from_pem(b"hello", "the CA (PEM)")
            .unwrap_err()
            .to_string();
        assert!(
            none.starts_with("the CA (PEM): holds no certificate"),
            "{none}"
        );
        let key = certified_key_from_pem(b"", b"").unwrap_err().to_string();
        assert!(key.starts_with("the certificate chain (PEM)"), "{key}");
        let broken = "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n";
        let bad = certs_from_pem(broken.as_bytes(), "the CA (PEM)")
            .unwrap_err()
            .to_string();
        assert!(bad.contains("is not valid PEM"), "{bad}");
        let trust = client_config(&ServerTrust::CaPem(b"x".to_vec())).unwrap_err();
        assert_eq!(trust.what, "the CA (PEM)");
    }
}
