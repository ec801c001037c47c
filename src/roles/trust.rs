//! What a root keeps to be secure by default: its deployment's CA and cluster join token
//! (`ca.crt`, `ca.key`, `join.token` in its data folder, by `edgeio-trust`'s `TrustFolder`),
//! the API's tokens in its store with the first admin token written to `admin.token`, and
//! the server certificate of its listener. Paths are logged; secrets never.

use super::common::RoleError;
use super::join::now_s;
use edgeio_core::api::ApiError;
use edgeio_core::auth::{
    AuthError, Caller, IssuedToken, NewJoinToken, NewToken, TokenAuthority, TokenKind, TokenView,
};
use edgeio_core::clock::SystemClock;
use edgeio_core::store::Store;
use edgeio_transport_ws::tls::ServerCert;
use edgeio_trust::{ApiTokens, Issued, TrustFolder};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The file holding the first admin token (one line, mode 0600).
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
/// The file holding the deployment's CA certificate, for clients (`edgectl --ca`).
pub const CA_FILE: &str = "ca.crt";

/// A secure root's trust: its CA folder, its API tokens and its server certificate.
pub(crate) struct RootTrust {
    /// The CA, join tokens and members.
    pub(crate) folder: Arc<Mutex<TrustFolder>>,
    /// The API's tokens.
    pub(crate) tokens: Arc<ApiTokens>,
    /// The listener's certificate chain and key.
    pub(crate) server: Issued,
    /// The names it covers.
    pub(crate) names: Vec<String>,
}

/// Opens (on first start: creates) the root's trust in `data`, makes the first admin token
/// when the store has none, and issues a server certificate for `names`.
pub(crate) async fn open_root_trust(
    data: &Path,
    store: Arc<dyn Store>,
    names: &[String],
) -> Result<RootTrust, RoleError> {
    let now = now_s();
    let folder = TrustFolder::open_root(data, "edgeio deployment", now).map_err(|e| {
        RoleError::new(format!(
            "cannot open the root's CA in {}: {e}",
            data.display()
        ))
    })?;
    let tokens = Arc::new(ApiTokens::new(store, Arc::new(SystemClock)));
    let admin = tokens
        .bootstrap_admin()
        .await
        .map_err(|e| RoleError::new(format!("cannot make the first admin token: {e}")))?;
    let admin_file = data.join(ADMIN_TOKEN_FILE);
    match admin {
        Some(issued) => {
            write_secret(&admin_file, &issued.token)?;
            tracing::info!(path = %admin_file.display(), token = %issued.view.id, "first admin API token written");
        }
        None if admin_file.is_file() => {
            tracing::info!(path = %admin_file.display(), "admin API token");
        }
        None => tracing::info!(
            "an admin API token exists in the store but not in {} (another replica made it, \
             or it was removed); an admin can make more with edgectl token create",
            admin_file.display()
        ),
    }
    let server = folder
        .ca
        .issue_server(names, now)
        .map_err(|e| RoleError::new(format!("cannot issue the root's server certificate: {e}")))?;
    tracing::info!(
        ca = %folder.path(CA_FILE).display(),
        join_token = %folder.path("join.token").display(),
        names = ?names,
        "secure: TLS and API tokens (clients trust the CA file; clusters join with the join token)"
    );
    Ok(RootTrust {
        folder: Arc::new(Mutex::new(folder)),
        tokens,
        server,
        names: names.to_vec(),
    })
}

/// The root's tokens: the API's (in its store, shared by replicas) and the deployment's
/// join tokens for clusters (in its trust folder), listed and revoked together.
pub(crate) struct RootTokens {
    /// The API's tokens.
    pub(crate) api: Arc<ApiTokens>,
    /// The CA and the clusters' join tokens.
    pub(crate) folder: Arc<Mutex<TrustFolder>>,
}

impl RootTokens {
    fn folder(&self) -> std::sync::MutexGuard<'_, TrustFolder> {
        self.folder.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn join_view(record: &edgeio_trust::TokenRecord, created_by: &str) -> TokenView {
    TokenView {
        id: record.id.clone(),
        name: record.name.clone(),
        kind: TokenKind::Join {
            tier: "cluster".into(),
            cluster: None,
        },
        created: record.created,
        expires: record.expires,
        uses_left: record.uses_left,
        created_by: created_by.to_string(),
    }
}

#[async_trait::async_trait]
impl TokenAuthority for RootTokens {
    async fn authenticate(&self, token: &str) -> Result<Caller, AuthError> {
        self.api.authenticate(token).await
    }

    async fn create(&self, by: &Caller, request: NewToken) -> Result<IssuedToken, ApiError> {
        self.api.create(by, request).await
    }

    async fn list(&self) -> Result<Vec<TokenView>, ApiError> {
        let mut all = self.api.list().await?;
        all.extend(self.folder().tokens.iter().map(|r| join_view(r, "")));
        all.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(all)
    }

    async fn revoke(&self, by: &Caller, id: &str) -> Result<TokenView, ApiError> {
        let revoked = self
            .folder()
            .revoke_join_token(id)
            .map_err(|e| ApiError::Unavailable {
                reason: e.to_string(),
            })?;
        match revoked {
            Some(record) => {
                tracing::info!(target: "edgeio::audit", action = "token.revoke", by = %by.token_id, token = %id, kind = "join", "join token revoked");
                Ok(join_view(&record, ""))
            }
            None => self.api.revoke(by, id).await,
        }
    }

    async fn create_join(
        &self,
        by: &Caller,
        request: NewJoinToken,
    ) -> Result<IssuedToken, ApiError> {
        if request.tier != "cluster" {
            return Err(ApiError::Unsupported {
                what: format!("join tokens for a {}", request.tier),
                reason: "a worker joins with its cluster's token, in the cluster's data folder (join.token); issuing one through the root is not built yet".into(),
            });
        }
        let name = request.name.unwrap_or_else(|| "cluster".into());
        let ttl = request.ttl_s.map(|t| i64::try_from(t).unwrap_or(i64::MAX));
        let issued = self
            .folder()
            .issue_join_token(&name, now_s(), ttl, request.uses)
            .map_err(|e| ApiError::Unavailable {
                reason: e.to_string(),
            })?;
        let record = self
            .folder()
            .tokens
            .iter()
            .find(|r| r.id == issued.id)
            .cloned()
            .ok_or_else(|| ApiError::Unavailable {
                reason: "the join token just issued is not in the trust folder".into(),
            })?;
        tracing::info!(target: "edgeio::audit", action = "token.create", by = %by.token_id, token = %issued.id, kind = "join", tier = "cluster", "join token issued");
        Ok(IssuedToken {
            view: join_view(&record, &by.token_id),
            token: issued.to_string(),
        })
    }
}

/// A server certificate is renewed when less than this is left of it (a third of its 90
/// days), so a root or cluster that runs for months never serves an expired one.
const RENEW_BEFORE_S: i64 = 30 * 86_400;
/// How often a running server looks at its certificate's age.
const RENEW_CHECK: std::time::Duration = std::time::Duration::from_secs(3600);

/// Whether a certificate expiring at `not_after` is renewed at `now`.
pub(crate) fn needs_renewal(not_after: i64, now: i64) -> bool {
    not_after - now < RENEW_BEFORE_S
}

/// The TLS certificate a listener serves, from `issued` (the leaf and the intermediates above
/// it) with the deployment's root CA appended — a joiner that pins the CA by the hash in its
/// join token must find that CA in the chain. A task renews it, from `folder`'s CA for the
/// same `names`, before it expires; new handshakes see the new one, without a restart.
pub(crate) fn serving_certificate(
    folder: Arc<Mutex<TrustFolder>>,
    issued: &Issued,
    names: Vec<String>,
) -> Result<Arc<ServerCert>, RoleError> {
    let chain = |issued: &Issued, folder: &TrustFolder| {
        format!("{}{}", issued.chain_pem, folder.ca.root_pem())
    };
    let first = chain(issued, &folder.lock().unwrap_or_else(|p| p.into_inner()));
    let cert = ServerCert::from_pem(first.as_bytes(), issued.key_pem.as_bytes())
        .map_err(|e| RoleError::new(format!("cannot serve the certificate just issued: {e}")))?;
    let renewing = cert.clone();
    let mut not_after = issued.not_after;
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(RENEW_CHECK).await;
            if !needs_renewal(not_after, now_s()) {
                continue;
            }
            let folder = folder.lock().unwrap_or_else(|p| p.into_inner());
            let renewed = folder.ca.issue_server(&names, now_s()).and_then(|next| {
                renewing
                    .replace_pem(chain(&next, &folder).as_bytes(), next.key_pem.as_bytes())
                    .map_err(|e| edgeio_trust::TrustError::Certificate(e.to_string()))?;
                Ok(next.not_after)
            });
            match renewed {
                Ok(at) => {
                    not_after = at;
                    tracing::info!(not_after = at, "server certificate renewed");
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the server certificate could not be renewed; retrying in an hour")
                }
            }
        }
    });
    Ok(cert)
}

/// Serves `app` on `listener` over TLS with `cert`, or in plain HTTP without one (a role
/// started `--insecure`).
pub(crate) fn serve_maybe_tls(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    cert: &Option<Arc<ServerCert>>,
) -> std::io::Result<edgeio_transport_ws::ServerHandle> {
    match cert {
        Some(cert) => edgeio_transport_ws::serve_tls(listener, app, cert.server_config()),
        None => edgeio_transport_ws::serve(listener, app),
    }
}

/// The names a listener's certificate covers: `localhost` and `127.0.0.1`, the address it
/// listens on (unless unspecified), the hosts of `advertised` URLs, and `extra` names.
pub(crate) fn server_names(
    listen: SocketAddr,
    advertised: &[&str],
    extra: &[String],
) -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    if !listen.ip().is_unspecified() {
        names.push(listen.ip().to_string());
    }
    for url in advertised {
        let rest = url.split_once("://").map_or(*url, |(_, rest)| rest);
        let host = rest.split('/').next().unwrap_or(rest);
        let host = host.rsplit_once(':').map_or(host, |(host, _)| host);
        names.push(
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
        );
    }
    names.extend(extra.iter().cloned());
    let mut seen = std::collections::BTreeSet::new();
    names.retain(|n| !n.is_empty() && seen.insert(n.clone()));
    names
}

/// Writes `secret` and a newline to `path` as the trust folder writes its own secrets
/// (0600 from the start, replaced whole through a rename).
pub(crate) fn write_secret(path: &Path, secret: &str) -> Result<(), RoleError> {
    edgeio_trust::write_secret_file(path, &format!("{secret}\n"))
        .map_err(|e| RoleError::new(format!("cannot write {e}")))
}

/// Reads a token file: its first line, trimmed; an error names the file and the rule.
pub fn read_token_file(path: &PathBuf) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if token.is_empty() {
        return Err(format!(
            "the token file {} is empty; it must hold one token on its first line",
            path.display()
        ));
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_cover_loopback_the_listen_address_advertised_hosts_and_extra_names() {
        let names = server_names(
            "10.0.0.5:7070".parse().unwrap(),
            &["https://root.example:7443", "https://[fd00::1]:7070/"],
            &["edge.lan".into(), "localhost".into()],
        );
        assert_eq!(
            names,
            [
                "localhost",
                "127.0.0.1",
                "10.0.0.5",
                "root.example",
                "fd00::1",
                "edge.lan"
            ]
        );
        let names = server_names("0.0.0.0:7070".parse().unwrap(), &[], &[]);
        assert_eq!(names, ["localhost", "127.0.0.1"]);
    }

    #[test]
    fn certificates_are_renewed_with_a_month_left() {
        let day = 86_400;
        assert!(!needs_renewal(90 * day, 0));
        assert!(!needs_renewal(90 * day, 59 * day));
        assert!(needs_renewal(90 * day, 61 * day));
        assert!(needs_renewal(90 * day, 91 * day));
    }

    #[test]
    fn secrets_are_written_for_the_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.token");
        write_secret(&path, "s3cret").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(read_token_file(&path).unwrap(), "s3cret");
        std::fs::write(&path, "\n").unwrap();
        let e = read_token_file(&path).unwrap_err();
        assert!(e.contains("is empty"), "{e}");
    }
}
