//! The child's side of joining: on first start a join token (flag, file or environment) is
//! the only thing a cluster or worker needs — it pins its parent's CA, so the first TLS dial
//! trusts the right parent — and the credential the parent then issues is kept in the data
//! folder (`parent.credential`, mode 0600, and the CA chain in `parent-ca.crt`), so later
//! starts need no token.

use super::common::RoleError;
use super::trust::{read_token_file, write_secret};
use edgeio_core::wire::{Credentials, Secret};
use edgeio_transport_ws::tls::{client_config, CertHash, ServerTrust};
use edgeio_trust::JoinToken;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The file holding the credential a parent issued (one line, mode 0600).
pub const CREDENTIAL_FILE: &str = "parent.credential";
/// The file holding the CA chain a child trusts its parent by.
pub const PARENT_CA_FILE: &str = "parent-ca.crt";

/// How a child dials its parent: the TLS settings and what proves it.
pub(crate) struct Dial {
    /// Trusts the parent's CA (or, on first contact, the CA the join token pins).
    pub(crate) tls: Arc<rustls::ClientConfig>,
    /// The join token (first contact) or the credential (every later one).
    pub(crate) auth: Secret,
    /// Whether this is the first contact (a join token), so the reply must carry credentials.
    pub(crate) joining: bool,
}

/// The join token given by flag or environment (`token`) or in a file (`file`).
pub(crate) fn join_token(
    token: &Option<String>,
    file: &Option<PathBuf>,
) -> Result<Option<String>, RoleError> {
    match (token, file) {
        (Some(token), _) => Ok(Some(token.trim().to_string())),
        (None, Some(file)) => read_token_file(file)
            .map(Some)
            .map_err(|e| RoleError::new(format!("--join-token-file: {e}"))),
        (None, None) => Ok(None),
    }
}

/// Refuses a plain `http://` parent for a secure child, naming the fix.
pub(crate) fn require_https(url: &str, flag: &str) -> Result<(), RoleError> {
    for one in url.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        if !one.starts_with("https://") {
            return Err(RoleError::new(format!(
                "{flag} {one}: a secure {flag} URL is https://HOST:PORT (or start every tier with --insecure, for development on one host)"
            )));
        }
    }
    Ok(())
}

/// How to dial the parent from `data`: with the credential kept there, else with the join
/// token (`tier` and `flag` name the child and the flag in errors).
pub(crate) fn dial_parent(
    data: &Path,
    token: Option<String>,
    tier: &str,
    parent: &str,
) -> Result<Dial, RoleError> {
    let credential = data.join(CREDENTIAL_FILE);
    if credential.is_file() {
        let auth = read_token_file(&credential).map_err(RoleError::new)?;
        let ca_file = data.join(PARENT_CA_FILE);
        let ca = std::fs::read(&ca_file)
            .map_err(|e| RoleError::new(format!("cannot read {}: {e}", ca_file.display())))?;
        let tls = client_config(&ServerTrust::CaPem(ca))
            .map_err(|e| RoleError::new(format!("{}: {e}", ca_file.display())))?;
        return Ok(Dial {
            tls,
            auth: Secret::new(auth),
            joining: false,
        });
    }
    let Some(token) = token else {
        return Err(RoleError::new(format!(
            "this {tier} has not joined yet: start it once with --join-token TOKEN (or --join-token-file FILE) — the token is in {parent}'s data folder (join.token)"
        )));
    };
    let parsed: JoinToken = token
        .parse()
        .map_err(|e| RoleError::new(format!("--join-token: {e}")))?;
    let tls = client_config(&ServerTrust::Pinned(CertHash(parsed.ca.0)))
        .map_err(|e| RoleError::new(format!("--join-token: {e}")))?;
    Ok(Dial {
        tls,
        auth: Secret::new(token),
        joining: true,
    })
}

/// Keeps what a parent issued on joining: the credential (0600) and the CA chain.
pub(crate) fn keep_credentials(data: &Path, credentials: &Credentials) -> Result<(), RoleError> {
    let ca_file = data.join(PARENT_CA_FILE);
    std::fs::write(&ca_file, &credentials.ca_pem)
        .map_err(|e| RoleError::new(format!("cannot write {}: {e}", ca_file.display())))?;
    write_secret(&data.join(CREDENTIAL_FILE), credentials.credential.expose())?;
    tracing::info!(
        credential = %data.join(CREDENTIAL_FILE).display(),
        ca = %ca_file.display(),
        "joined: the credential is kept; the join token is not needed again"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secure_child_refuses_plain_http_naming_the_fix() {
        assert!(require_https("https://a:1,https://b:2", "--root").is_ok());
        let e = require_https("https://a:1,http://b:2", "--root").unwrap_err();
        assert!(
            e.0.contains("http://b:2")
                && e.0.contains("https://HOST:PORT")
                && e.0.contains("--insecure"),
            "{e}"
        );
    }

    #[test]
    fn a_child_without_credential_or_token_says_where_the_token_is() {
        let dir = tempfile::tempdir().unwrap();
        let e = dial_parent(dir.path(), None, "cluster", "the root")
            .err()
            .unwrap();
        assert!(
            e.0.contains("--join-token") && e.0.contains("join.token"),
            "{e}"
        );
        let e = dial_parent(dir.path(), Some("nonsense".into()), "cluster", "the root")
            .err()
            .unwrap();
        assert!(e.0.starts_with("--join-token: "), "{e}");
    }
}
