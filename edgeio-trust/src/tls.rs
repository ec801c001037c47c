//! The workspace's one TLS crypto provider.

use rustls::crypto::CryptoProvider;
use std::sync::Arc;

/// rustls on ring: every TLS endpoint of edgeio uses this provider.
///
/// rustls 0.23.48 deprecates ring's provider because it offers no post-quantum key exchange.
/// aws-lc-rs does, but building it needs cmake and a C toolchain beyond the linker, which
/// breaks the promise that a machine with only a Rust toolchain builds edgeio. ring it is,
/// knowingly, until ring gains ML-KEM or that promise changes; X25519 and the NIST curves are
/// what the deployment negotiates.
#[allow(deprecated)]
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
