//! TLS and credentials of the MQTT link: what the secure [`crate::EmbeddedBroker`] checks
//! and what [`crate::MqttParent`] / [`crate::MqttChild`] present.
//!
//! **The topic rule** of a secure broker: a client authenticated as node `N` (user name `N`,
//! client id `N`) may subscribe only `edgeio/nodes/N/control` and publish only
//! `edgeio/nodes/N/info`, `edgeio/nodes/N/events` and `edgeio/nodes/N/will` (its last will
//! included); the one cluster identity may do everything. Filters are compared as sent, so
//! a wildcard (`edgeio/nodes/+/control`, `#`) or a shared subscription is refused to a node.
//!
//! **Secrets** are kept as SHA-256 digests and compared digest to digest; no secret is
//! logged or printed by `Debug`. One crypto provider for everything here: ring.

use crate::config::validate_id;
use edgeio_core::transport::TransportError;
use edgeio_core::wire::Topics;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// The prefix of every parent's MQTT client id ([`crate::ParentConfig::client_id`]); a node
/// id with it is refused at CONNECT.
const PARENT_CLIENT_ID_PREFIX: &str = "edgeio-cluster-";

/// The one rustls crypto provider of the workspace (ring), as `edgeio-trust`'s
/// `tls::provider` (not a dependency: implementation crates never depend on each other).
/// rustls 0.23.48 deprecates it for its lack of post-quantum key exchange; aws-lc-rs, which
/// has one, needs cmake and a C toolchain beyond the linker, so ring it is, knowingly.
#[allow(deprecated)]
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn invalid(reason: String) -> TransportError {
    TransportError::Invalid { reason, id: None }
}

/// A secret's SHA-256 digest: what is kept and compared instead of the secret.
pub fn secret_digest(secret: &str) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

/// Compares two digests without stopping at the first difference, so the time taken says
/// nothing about how much of a guess was right.
fn digests_equal(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The broker's TLS identity: a certificate chain (leaf first) and its private key, as PEM
/// bytes, so callers hand over what edgeio's CA issued without writing files.
#[derive(Clone)]
pub struct BrokerTls {
    server: Arc<ServerConfig>,
    leaf: CertificateDer<'static>,
}

impl BrokerTls {
    /// Builds the rustls server configuration (ring, TLS 1.2 and 1.3, no client
    /// certificates: clients authenticate with user name and secret).
    ///
    /// [`TransportError::Invalid`] names the field and why: no certificate in
    /// `cert_chain_pem`, no or several keys in `key_pem`, a key that does not match.
    pub fn from_pem(cert_chain_pem: &[u8], key_pem: &[u8]) -> Result<BrokerTls, TransportError> {
        let chain = CertificateDer::pem_slice_iter(cert_chain_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| {
                invalid(format!(
                    "broker tls cert_chain_pem is invalid: {e}: it must be PEM CERTIFICATE blocks, leaf first"
                ))
            })?;
        let Some(leaf) = chain.first().cloned() else {
            return Err(invalid(
                "broker tls cert_chain_pem holds no certificate: it must be PEM CERTIFICATE blocks, leaf first"
                    .to_string(),
            ));
        };
        // The error of the key parser is not shown: it could quote key material.
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|_| {
            invalid(
                "broker tls key_pem is invalid: it must hold one PEM private key (PKCS#8, SEC1 or PKCS#1)"
                    .to_string(),
            )
        })?;
        let server = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
            .map_err(|e| {
                invalid(format!(
                    "broker tls key_pem does not fit cert_chain_pem: {e}: the key must be the leaf certificate's"
                ))
            })?;
        Ok(BrokerTls {
            server: Arc::new(server),
            leaf,
        })
    }

    /// The rustls server configuration.
    pub fn server_config(&self) -> &Arc<ServerConfig> {
        &self.server
    }

    /// A client configuration that trusts exactly this broker's leaf certificate, whatever
    /// name it is reached by: for the broker's own start probe, which dials the address it
    /// just bound.
    pub(crate) fn pinned_client(&self) -> Result<Arc<ClientConfig>, String> {
        let provider = provider();
        let verifier = PinnedLeaf {
            leaf: self.leaf.clone(),
            provider: provider.clone(),
        };
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(verifier))
            .with_no_client_auth();
        Ok(Arc::new(config))
    }
}

impl fmt::Debug for BrokerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerTls")
            .field("leaf_der_bytes", &self.leaf.len())
            .finish_non_exhaustive()
    }
}

/// Trusts one certificate, compared byte for byte; signatures are still checked.
#[derive(Debug)]
struct PinnedLeaf {
    leaf: CertificateDer<'static>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedLeaf {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.leaf.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "the broker presented another certificate than the one it was started with"
                    .to_string(),
            ))
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

/// The nodes' credentials as the secure broker checks them. Consulted at every CONNECT
/// (`verify`) and, on the broker's router thread, for every SUBSCRIBE and PUBLISH of a node
/// (`is_current`): both must be quick and must not block.
pub trait BrokerCredentials: Send + Sync {
    /// Whether `secret` is the secret of node `node`.
    fn verify(&self, node: &str, secret: &str) -> bool;

    /// Whether node `node` still holds credentials. A connected node that no longer does is
    /// refused its next subscription or publish, which closes its connection.
    fn is_current(&self, node: &str) -> bool;
}

/// Node credentials kept in memory as SHA-256 digests, changeable while the broker runs
/// (nodes register and are removed at run time). Cheap to clone: clones share one map, so
/// the caller keeps a clone and the broker sees every change at once.
#[derive(Clone, Default)]
pub struct NodeCredentials {
    digests: Arc<RwLock<HashMap<String, [u8; 32]>>>,
}

impl NodeCredentials {
    /// An empty set: no node can connect yet.
    pub fn new() -> NodeCredentials {
        NodeCredentials::default()
    }

    fn read(&self) -> RwLockReadGuard<'_, HashMap<String, [u8; 32]>> {
        // A panic elsewhere must not make every later check panic too.
        self.digests.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<String, [u8; 32]>> {
        self.digests.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Gives node `node` the secret `secret` (replacing an earlier one); only its digest is
    /// kept. [`TransportError::Invalid`] for a node id that cannot stand in a topic or an
    /// empty secret.
    pub fn insert(&self, node: &str, secret: &str) -> Result<(), TransportError> {
        if secret.is_empty() {
            return Err(invalid(format!(
                "secret of node {node:?} is empty: it must be at least 1 byte"
            )));
        }
        self.insert_digest(node, secret_digest(secret))
    }

    /// Gives node `node` the secret whose SHA-256 digest is `sha256`, for callers that keep
    /// only digests. [`TransportError::Invalid`] for a node id that cannot stand in a topic.
    pub fn insert_digest(&self, node: &str, sha256: [u8; 32]) -> Result<(), TransportError> {
        validate_id("node id", node)?;
        self.write().insert(node.to_string(), sha256);
        Ok(())
    }

    /// Takes node `node`'s credentials away; true when it had some. New connections with
    /// them are refused from now on; a connected node is refused its next subscription or
    /// publish, which closes its connection.
    pub fn remove(&self, node: &str) -> bool {
        self.write().remove(node).is_some()
    }

    /// Whether node `node` holds credentials.
    pub fn contains(&self, node: &str) -> bool {
        self.read().contains_key(node)
    }

    /// How many nodes hold credentials.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether no node holds credentials.
    pub fn is_empty(&self) -> bool {
        self.read().is_empty()
    }
}

impl BrokerCredentials for NodeCredentials {
    fn verify(&self, node: &str, secret: &str) -> bool {
        let given = secret_digest(secret);
        match self.read().get(node) {
            Some(kept) => digests_equal(kept, &given),
            None => false,
        }
    }

    fn is_current(&self, node: &str) -> bool {
        self.contains(node)
    }
}

impl fmt::Debug for NodeCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut nodes: Vec<String> = self.read().keys().cloned().collect();
        nodes.sort();
        f.debug_struct("NodeCredentials")
            .field("nodes", &nodes)
            .finish()
    }
}

/// What a secure [`crate::EmbeddedBroker`] enforces: TLS only, the cluster identity, the
/// nodes' credentials and the topic rule (see the [module documentation](self)).
#[derive(Clone)]
pub struct BrokerSecurity {
    tls: BrokerTls,
    cluster_username: String,
    cluster_secret: String,
    cluster_digest: [u8; 32],
    nodes: Arc<dyn BrokerCredentials>,
}

impl BrokerSecurity {
    /// TLS with `tls`; the cluster's own client logs in as `cluster_username` with
    /// `cluster_secret` and may do everything; every other client is a node checked against
    /// `nodes`, and must connect with its node id as client id (so it cannot take over
    /// another client's session, which would also fire that client's will); a node id that
    /// starts with `edgeio-cluster-`, the prefix of the parents' client ids, is refused. The cluster
    /// identity is never looked up in `nodes`, so a node registered under the same name
    /// gains nothing.
    ///
    /// The secret is also kept as given: the broker's start probe logs in with it.
    /// [`TransportError::Invalid`] for a user name that is not a valid id or an empty secret.
    pub fn new(
        tls: BrokerTls,
        cluster_username: impl Into<String>,
        cluster_secret: impl Into<String>,
        nodes: Arc<dyn BrokerCredentials>,
    ) -> Result<BrokerSecurity, TransportError> {
        let cluster_username = cluster_username.into();
        let cluster_secret = cluster_secret.into();
        validate_id("broker cluster_username", &cluster_username)?;
        if cluster_secret.is_empty() {
            return Err(invalid(format!(
                "broker cluster secret of {cluster_username:?} is empty: it must be at least 1 byte"
            )));
        }
        Ok(BrokerSecurity {
            tls,
            cluster_digest: secret_digest(&cluster_secret),
            cluster_username,
            cluster_secret,
            nodes,
        })
    }

    /// The broker's TLS identity.
    pub fn tls(&self) -> &BrokerTls {
        &self.tls
    }

    /// The user name of the cluster identity.
    pub fn cluster_username(&self) -> &str {
        &self.cluster_username
    }

    pub(crate) fn cluster_secret(&self) -> &str {
        &self.cluster_secret
    }

    /// The CONNECT check: the cluster identity with its secret (any client id), or a node
    /// with its secret whose client id is its node id (so no node can take over, and fire
    /// the will of, another client's session).
    pub(crate) fn authenticate(&self, client_id: &str, username: &str, secret: &str) -> bool {
        if username == self.cluster_username {
            return digests_equal(&self.cluster_digest, &secret_digest(secret));
        }
        // A node under a parent's client id could take the cluster's own session over.
        client_id == username
            && !client_id.starts_with(PARENT_CLIENT_ID_PREFIX)
            && self.nodes.verify(username, secret)
    }

    /// The topic rule (see the [module documentation](self)).
    pub(crate) fn allows(&self, username: Option<&str>, access: rumqttd::Access<'_>) -> bool {
        let Some(user) = username else {
            return false;
        };
        if user == self.cluster_username {
            return true;
        }
        if validate_id("node id", user).is_err() || !self.nodes.is_current(user) {
            return false;
        }
        let topics = Topics::for_node(user);
        match access {
            rumqttd::Access::Subscribe(filter) => filter == topics.control,
            rumqttd::Access::Publish(topic) => {
                topic == topics.info || topic == topics.events || topic == topics.will
            }
        }
    }
}

impl fmt::Debug for BrokerSecurity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokerSecurity")
            .field("tls", &self.tls)
            .field("cluster_username", &self.cluster_username)
            .field("cluster_secret", &"<redacted>")
            .finish_non_exhaustive()
    }
}

/// TLS for a link: the rustls client configuration it dials the broker with (its trust
/// anchors decide which broker certificates are accepted). Compared by identity.
#[derive(Clone)]
pub struct LinkTls {
    config: Arc<ClientConfig>,
}

impl LinkTls {
    /// Uses `config` as it is (it should be built on the ring provider, as everything in
    /// this workspace is).
    pub fn new(config: Arc<ClientConfig>) -> LinkTls {
        LinkTls { config }
    }

    /// Trusts the CA certificates in `ca_pem` (PEM, one or more), with the ring provider and
    /// no client certificate. [`TransportError::Invalid`] when `ca_pem` holds no usable
    /// certificate.
    pub fn from_ca_pem(ca_pem: &[u8]) -> Result<LinkTls, TransportError> {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem) {
            let cert = cert.map_err(|e| {
                invalid(format!(
                    "link tls ca_pem is invalid: {e}: it must be PEM CERTIFICATE blocks"
                ))
            })?;
            roots.add(cert).map_err(|e| {
                invalid(format!(
                    "link tls ca_pem holds a certificate that cannot be a trust anchor: {e}"
                ))
            })?;
        }
        if roots.is_empty() {
            return Err(invalid(
                "link tls ca_pem holds no certificate: it must be PEM CERTIFICATE blocks"
                    .to_string(),
            ));
        }
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(format!("link tls cannot be built: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(LinkTls::new(Arc::new(config)))
    }

    /// The rustls client configuration.
    pub fn client_config(&self) -> &Arc<ClientConfig> {
        &self.config
    }
}

impl PartialEq for LinkTls {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.config, &other.config)
    }
}

impl Eq for LinkTls {}

impl fmt::Debug for LinkTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinkTls").finish_non_exhaustive()
    }
}

/// The user name and secret a link logs in with (MQTT CONNECT). `Debug` shows the user
/// name only.
#[derive(Clone, PartialEq, Eq)]
pub struct LinkCredentials {
    /// The user name: a node's id, or the cluster identity's name.
    pub username: String,
    password: String,
}

impl LinkCredentials {
    /// Logs in as `username` with `password`.
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> LinkCredentials {
        LinkCredentials {
            username: username.into(),
            password: password.into(),
        }
    }

    pub(crate) fn password(&self) -> &str {
        &self.password
    }
}

impl fmt::Debug for LinkCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinkCredentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttd::Access;

    fn security(nodes: &NodeCredentials) -> BrokerSecurity {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let tls =
            BrokerTls::from_pem(cert.pem().as_bytes(), key.serialize_pem().as_bytes()).unwrap();
        BrokerSecurity::new(tls, "cluster", "s3cret", Arc::new(nodes.clone())).unwrap()
    }

    #[test]
    fn a_node_may_use_only_its_own_topics_and_the_cluster_everything() {
        let nodes = NodeCredentials::new();
        nodes.insert("n1", "a").unwrap();
        nodes.insert("n2", "b").unwrap();
        let s = security(&nodes);
        let n1 = Some("n1");
        assert!(s.allows(n1, Access::Subscribe("edgeio/nodes/n1/control")));
        for filter in [
            "edgeio/nodes/n2/control",
            "edgeio/nodes/+/control",
            "edgeio/nodes/n1/+",
            "edgeio/nodes/n1/#",
            "#",
            "+/+/+/+",
            "$share/g/edgeio/nodes/n1/control",
            "edgeio/nodes/n1/info",
        ] {
            assert!(!s.allows(n1, Access::Subscribe(filter)), "{filter}");
        }
        for kind in ["info", "events", "will"] {
            assert!(s.allows(n1, Access::Publish(&format!("edgeio/nodes/n1/{kind}"))));
            assert!(!s.allows(n1, Access::Publish(&format!("edgeio/nodes/n2/{kind}"))));
        }
        assert!(!s.allows(n1, Access::Publish("edgeio/nodes/n1/control")));
        assert!(!s.allows(n1, Access::Publish("edgeio/nodes/n1/info/x")));
        assert!(!s.allows(None, Access::Publish("edgeio/nodes/n1/info")));
        assert!(s.allows(Some("cluster"), Access::Subscribe("#")));
        assert!(s.allows(Some("cluster"), Access::Publish("edgeio/nodes/n2/control")));
        nodes.remove("n1");
        assert!(!s.allows(n1, Access::Publish("edgeio/nodes/n1/info")));
    }

    #[test]
    fn logins_compare_digests_and_bind_a_node_to_its_client_id() {
        let nodes = NodeCredentials::new();
        nodes.insert("n1", "a").unwrap();
        let s = security(&nodes);
        assert!(s.authenticate("n1", "n1", "a"));
        assert!(!s.authenticate("n1", "n1", "b"));
        assert!(!s.authenticate("n2", "n1", "a"), "another client id");
        assert!(s.authenticate("anything", "cluster", "s3cret"));
        assert!(!s.authenticate("anything", "cluster", "a"));
        nodes.insert("edgeio-cluster-a", "p").unwrap();
        assert!(
            !s.authenticate("edgeio-cluster-a", "edgeio-cluster-a", "p"),
            "a node under a parent's client id"
        );
        nodes.insert("cluster", "x").unwrap();
        assert!(!s.authenticate("cluster", "cluster", "x"), "never the map");
        nodes.remove("n1");
        assert!(!s.authenticate("n1", "n1", "a"));
    }

    #[test]
    fn nothing_secret_is_printed() {
        let creds = LinkCredentials::new("n1", "hunter2");
        assert!(!format!("{creds:?}").contains("hunter2"));
        let s = security(&NodeCredentials::new());
        assert!(!format!("{s:?}").contains("s3cret"));
    }

    #[test]
    fn bad_pem_is_invalid_and_names_the_field() {
        for (chain, key, field) in [
            (&b""[..], &b""[..], "cert_chain_pem"),
            (b"not pem", b"", "cert_chain_pem"),
        ] {
            let err = BrokerTls::from_pem(chain, key).unwrap_err().to_string();
            assert!(err.contains(field), "{err}");
        }
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["x".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let err = BrokerTls::from_pem(cert.pem().as_bytes(), b"junk")
            .unwrap_err()
            .to_string();
        assert!(err.contains("key_pem"), "{err}");
        let other = rcgen::KeyPair::generate().unwrap();
        let err = BrokerTls::from_pem(cert.pem().as_bytes(), other.serialize_pem().as_bytes())
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not fit"), "{err}");
        assert!(LinkTls::from_ca_pem(b"").is_err());
        assert!(LinkTls::from_ca_pem(cert.pem().as_bytes()).is_ok());
        assert!(NodeCredentials::new().insert("a/b", "x").is_err());
        assert!(NodeCredentials::new().insert("a", "").is_err());
    }
}
