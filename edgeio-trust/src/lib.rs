//! edgeio's trust root: one certificate authority per deployment, an intermediate CA for each
//! cluster under it, server certificates for the tiers' listeners, and join tokens that carry
//! the hash of the CA that issued them, so a joiner needs nothing but the token to know it
//! reached the right parent (as kubeadm's `--discovery-token-ca-cert-hash` does).
//!
//! Certificates are made with rcgen on ring (ECDSA P-256); ring is the one crypto provider
//! of the workspace ([`tls::provider`]). Tokens are kept only as SHA-256 hashes of their secrets
//! ([`TokenRecord`]).
//!
//! The reference root, cluster and worker (the facade's `roles`) use all of it: the root's
//! CA, admin and join tokens, the clusters' intermediate CAs, the members' credentials and the
//! API's tokens ([`ApiTokens`]). What is here is
//! complete for what it does and tested against a real rustls handshake.
//!
//! ```
//! use edgeio_trust::{CertificateAuthority, JoinToken};
//!
//! let now = 1_796_000_000; // seconds since the epoch
//! let root = CertificateAuthority::create_root("edgeio deployment", now).unwrap();
//! let cluster = root.intermediate("cluster c1", now).unwrap();
//! let server = cluster.issue_server(&["c1.example".into(), "10.0.0.5".into()], now).unwrap();
//! assert!(server.chain_pem.contains("BEGIN CERTIFICATE"));
//!
//! let (token, record) = JoinToken::issue(&cluster, "worker", now, None, None).unwrap();
//! let parsed: JoinToken = token.to_string().parse().unwrap();
//! assert!(parsed.pins(&cluster));
//! assert!(record.check(&parsed.secret, now).is_ok());
//! ```

mod api_tokens;
mod ca;
mod error;
mod folder;
mod members;
pub mod tls;
mod token;

pub use api_tokens::{ApiTokens, API_TOKENS_KEY, API_TOKEN_PREFIX, BOOTSTRAP, MAX_NAME, MAX_TTL_S};
pub use ca::{CaHash, CertificateAuthority, Issued, CA_DAYS, SERVER_DAYS};
pub use error::TrustError;
pub use folder::{write_secret_file, TrustFolder};
pub use members::{MemberRecord, CREDENTIAL_PREFIX};
pub use token::{random_secret, JoinToken, TokenRecord, TOKEN_PREFIX};
