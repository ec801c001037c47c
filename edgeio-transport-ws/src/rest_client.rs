//! [`RootClient`]: a typed HTTP client of the root's REST API (see [`crate::rest`]), with one
//! method per [`RootApi`](edgeio_core::api::RootApi) operation.
//!
//! Every failure is a [`ClientError`]: the server's refusal with its JSON body
//! ([`ClientError::Api`]), a server that cannot be reached ([`ClientError::Unreachable`]),
//! TLS that cannot be set up or a certificate that does not verify ([`ClientError::Tls`]),
//! a bad URL, or an answer that does not decode. Proxies are taken from the usual
//! `HTTP_PROXY` / `NO_PROXY` environment variables.
//!
//! `https://` needs the deployment's CA ([`RootClientBuilder::ca_pem`]): edgeio's servers
//! carry certificates of its own CA, and the client trusts no system roots. A bearer token
//! ([`RootClientBuilder::token`]) goes with every request and never into `Debug` output or
//! errors.

mod tokens;

use crate::rest::{ErrorResponse, Health};
use crate::token::BearerToken;
use bytes::Bytes;
use edgeio_core::api::{ClusterView, JobView, LogsQuery, NodeView};
use futures::stream::BoxStream;
use futures::StreamExt;
use reqwest::header::CONTENT_TYPE;
use reqwest::header::{HeaderValue, AUTHORIZATION};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde::de::DeserializeOwned;
use std::error::Error as _;
use std::time::Duration;

/// How long connecting to the server may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long one request may take, answer included (following logs is not bounded).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest JSON answer read; a bigger one is a [`ClientError::Decode`], not a memory blow-up.
const MAX_ANSWER_BYTES: usize = 64 << 20;
/// Largest error body read; ours are a few hundred bytes, a proxy's page may be more.
const MAX_ERROR_BYTES: usize = 64 << 10;

/// Why a call of [`RootClient`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server answered with an error status; `body` is its JSON error (or, when a proxy
    /// answered with something else, one built from the status). Displays as the message,
    /// then each detail as `field: value: rule`.
    #[error("{body}")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The error.
        body: ErrorResponse,
    },
    /// The server could not be reached, or the connection broke: refused, timed out, reset.
    #[error("cannot reach {url}: {reason}")]
    Unreachable {
        /// The server's URL.
        url: String,
        /// What happened, e.g. `connection refused`.
        reason: String,
    },
    /// The server URL breaks a rule.
    #[error("server url {url:?} is not valid: {rule}")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// The rule it breaks.
        rule: String,
    },
    /// The URL asks for something this client cannot do.
    #[error("server url {url:?}: {what} is not supported yet; {hint}")]
    Unsupported {
        /// The URL as given.
        url: String,
        /// What is not supported.
        what: String,
        /// What to do instead.
        hint: String,
    },
    /// TLS with the server cannot work: an `https` URL without a CA, a CA that does not read,
    /// or a server certificate the CA does not vouch for. The reason names the fix.
    #[error("tls with {url}: {reason}")]
    Tls {
        /// The server's URL.
        url: String,
        /// What is wrong and what to do, e.g. `the server's certificate is not signed by the
        /// CA in ca.crt — pass the deployment's CA with --ca FILE / EDGEIO_CA`.
        reason: String,
    },
    /// The bearer token cannot be sent (it is never repeated here).
    #[error("{reason}")]
    InvalidToken {
        /// What is wrong with it.
        reason: String,
    },
    /// The answer was not what the API promises (not JSON of the right shape, too large).
    #[error("cannot read the answer to {request}: {reason}")]
    Decode {
        /// The request, as `GET /api/v1/jobs`.
        request: String,
        /// What is wrong with the answer.
        reason: String,
    },
}

impl ClientError {
    /// The HTTP status of an [`ClientError::Api`] error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The error code of an [`ClientError::Api`] error (see [`crate::rest::code`]).
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { body, .. } => Some(&body.error.code),
            _ => None,
        }
    }
}

/// Log bytes as they arrive from the server.
pub type LogBytes = BoxStream<'static, Result<Bytes, ClientError>>;

/// A client of the root's REST API at one `http[s]://HOST:PORT`. Cheap to clone (clones
/// share the connection pool). Its `Debug` output shows no token.
#[derive(Debug, Clone)]
pub struct RootClient {
    /// `http[s]://HOST:PORT[/PREFIX]`, without a trailing slash.
    base: String,
    http: reqwest::Client,
    /// `Bearer TOKEN`, marked sensitive (its `Debug` is `Sensitive`).
    auth: Option<HeaderValue>,
    /// The trusted CA in words, for errors: `the CA in ca.crt`.
    ca_origin: String,
}

/// Options of a [`RootClient`]: [`RootClient::builder`], then [`RootClientBuilder::build`].
#[derive(Clone)]
pub struct RootClientBuilder {
    base_url: String,
    token: Option<BearerToken>,
    ca_pem: Option<Vec<u8>>,
    ca_origin: Option<String>,
}

impl std::fmt::Debug for RootClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RootClientBuilder")
            .field("base_url", &self.base_url)
            .field("token", &self.token)
            .field("ca_pem", &self.ca_pem.as_ref().map(|pem| pem.len()))
            .field("ca_origin", &self.ca_origin)
            .finish()
    }
}

impl RootClientBuilder {
    /// Sends `Authorization: Bearer TOKEN` with every request (none when `None`).
    pub fn token(mut self, token: Option<String>) -> RootClientBuilder {
        self.token = token.map(BearerToken::new);
        self
    }

    /// The deployment's CA certificate(s), PEM: the only roots an `https` server's
    /// certificate may chain to. Required for `https://`; not used for `http://`.
    pub fn ca_pem(mut self, pem: Option<Vec<u8>>) -> RootClientBuilder {
        self.ca_pem = pem;
        self
    }

    /// Where the CA came from (a file name, `EDGEIO_CA`), named by errors about it.
    /// Default: `the given CA`.
    pub fn ca_origin(mut self, origin: impl Into<String>) -> RootClientBuilder {
        self.ca_origin = Some(origin.into());
        self
    }

    /// The client. Nothing is sent yet. Errors: [`ClientError::InvalidUrl`] naming the rule
    /// the URL breaks; [`ClientError::Tls`] for `https://` without a CA or with one that does
    /// not read; [`ClientError::InvalidToken`] for a token that is no header value.
    pub fn build(self) -> Result<RootClient, ClientError> {
        let base = check_base_url(&self.base_url)?;
        let ca_origin = match &self.ca_origin {
            Some(origin) => format!("the CA in {origin}"),
            None => "the given CA".to_string(),
        };
        let tls_error = |reason: String| ClientError::Tls {
            url: base.clone(),
            reason,
        };
        let mut http = reqwest::Client::builder().connect_timeout(CONNECT_TIMEOUT);
        if base.starts_with("https:") {
            let Some(pem) = &self.ca_pem else {
                return Err(tls_error(
                    "https needs the deployment's CA to verify the server (edgeio trusts no \
                     system roots): pass --ca FILE / EDGEIO_CA"
                        .to_string(),
                ));
            };
            let config = crate::tls::client_config(&crate::tls::ServerTrust::CaPem(pem.clone()))
                .map_err(|e| match &self.ca_origin {
                    Some(origin) => tls_error(format!("{origin}: {e}")),
                    None => tls_error(e.to_string()),
                })?;
            // reqwest takes the config by value; the Arc from `client_config` is ours alone.
            let config = std::sync::Arc::unwrap_or_clone(config);
            http = http.use_preconfigured_tls(config).https_only(true);
        }
        let http = http.build().map_err(|e| ClientError::InvalidUrl {
            url: self.base_url.clone(),
            rule: format!("cannot build an http client: {e}"),
        })?;
        let auth = match &self.token {
            Some(token) => Some(
                token
                    .header_value()
                    .map_err(|reason| ClientError::InvalidToken { reason })?,
            ),
            None => None,
        };
        Ok(RootClient {
            base,
            http,
            auth,
            ca_origin,
        })
    }
}

impl RootClient {
    /// A client of the root at `base_url`: `http://HOST:PORT`, optionally with a path prefix
    /// (a reverse proxy's), without a token. Nothing is sent yet. `https://` needs a CA, so
    /// it is [`ClientError::Tls`] here (use [`RootClient::builder`]); other mistakes are
    /// [`ClientError::InvalidUrl`] naming the rule.
    pub fn new(base_url: &str) -> Result<RootClient, ClientError> {
        RootClient::builder(base_url).build()
    }

    /// Options for a client of the root at `base_url` (`http[s]://HOST:PORT[/PREFIX]`): a
    /// bearer token, the CA for `https`.
    pub fn builder(base_url: &str) -> RootClientBuilder {
        RootClientBuilder {
            base_url: base_url.to_string(),
            token: None,
            ca_pem: None,
            ca_origin: None,
        }
    }

    /// The server's URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// `GET /healthz`: Ok when the server answers that it is up.
    pub async fn health(&self) -> Result<(), ClientError> {
        let _: Health = self.json(Method::GET, "/healthz".to_string(), None).await?;
        Ok(())
    }

    /// `POST /api/v1/jobs`: submits a descriptor (`content_type` is `application/yaml` or
    /// `application/json`) and returns the accepted job, in REQUESTED.
    pub async fn submit(&self, body: Vec<u8>, content_type: &str) -> Result<JobView, ClientError> {
        self.json(
            Method::POST,
            "/api/v1/jobs".to_string(),
            Some((body, content_type)),
        )
        .await
    }

    /// `GET /api/v1/jobs`: every job, oldest first.
    pub async fn jobs(&self) -> Result<Vec<JobView>, ClientError> {
        self.json(Method::GET, "/api/v1/jobs".to_string(), None)
            .await
    }

    /// `GET /api/v1/jobs/{id}`: one job.
    pub async fn job(&self, id: &str) -> Result<JobView, ClientError> {
        self.json(Method::GET, format!("/api/v1/jobs/{}", segment(id)), None)
            .await
    }

    /// `DELETE /api/v1/jobs/{id}`: starts terminating a job; returns it, in TERMINATING.
    pub async fn terminate(&self, id: &str) -> Result<JobView, ClientError> {
        self.json(
            Method::DELETE,
            format!("/api/v1/jobs/{}", segment(id)),
            None,
        )
        .await
    }

    /// `POST /api/v1/jobs/{id}/scale`: changes the number of replicas; returns the job, in
    /// SCALING.
    pub async fn scale(&self, id: &str, replicas: u32) -> Result<JobView, ClientError> {
        let body = serde_json::json!({ "replicas": replicas }).to_string();
        self.json(
            Method::POST,
            format!("/api/v1/jobs/{}/scale", segment(id)),
            Some((body.into_bytes(), "application/json")),
        )
        .await
    }

    /// `POST /api/v1/jobs/{id}/migrate`: moves the job (or `instance`) make-before-break to
    /// `node`, to `cluster`, or anywhere else when both are `None`; returns it, in MIGRATING.
    pub async fn migrate(
        &self,
        id: &str,
        node: Option<&str>,
        cluster: Option<&str>,
        instance: Option<&str>,
    ) -> Result<JobView, ClientError> {
        let mut body = serde_json::Map::new();
        for (key, value) in [("node", node), ("cluster", cluster), ("instance", instance)] {
            if let Some(value) = value {
                body.insert(key.into(), value.into());
            }
        }
        self.json(
            Method::POST,
            format!("/api/v1/jobs/{}/migrate", segment(id)),
            Some((
                serde_json::Value::Object(body).to_string().into_bytes(),
                "application/json",
            )),
        )
        .await
    }

    /// `GET /api/v1/clusters`: every cluster.
    pub async fn clusters(&self) -> Result<Vec<ClusterView>, ClientError> {
        self.json(Method::GET, "/api/v1/clusters".to_string(), None)
            .await
    }

    /// `GET /api/v1/clusters/{id}`: one cluster.
    pub async fn cluster(&self, id: &str) -> Result<ClusterView, ClientError> {
        self.json(
            Method::GET,
            format!("/api/v1/clusters/{}", segment(id)),
            None,
        )
        .await
    }

    /// `GET /api/v1/clusters/{id}/nodes`: the nodes of a cluster.
    pub async fn nodes(&self, cluster: &str) -> Result<Vec<NodeView>, ClientError> {
        let path = format!("/api/v1/clusters/{}/nodes", segment(cluster));
        self.json(Method::GET, path, None).await
    }

    /// `GET /api/v1/jobs/{id}/logs`: the job's log bytes as they arrive. Without `follow`
    /// the stream ends with the logs kept and the whole read is bounded by
    /// [`REQUEST_TIMEOUT`]; with it the stream stays open until the server ends it or it is
    /// dropped.
    pub async fn logs(&self, id: &str, query: LogsQuery) -> Result<LogBytes, ClientError> {
        let mut path = format!("/api/v1/jobs/{}/logs", segment(id));
        let mut params = Vec::new();
        if let Some(tail) = query.tail {
            params.push(format!("tail={tail}"));
        }
        if query.follow {
            params.push("follow=true".to_string());
        }
        if !params.is_empty() {
            path.push('?');
            path.push_str(&params.join("&"));
        }
        let mut request = self.request(Method::GET, self.url(&path)?);
        if !query.follow {
            request = request.timeout(REQUEST_TIMEOUT);
        }
        let response = self.send(request).await?;
        let url = self.base.clone();
        Ok(response
            .bytes_stream()
            .map(move |chunk| {
                chunk.map_err(|e| ClientError::Unreachable {
                    url: url.clone(),
                    reason: format!("the log stream broke: {}", reason_of(&e)),
                })
            })
            .boxed())
    }

    /// A request with the bearer token, when there is one.
    fn request(&self, method: Method, url: Url) -> RequestBuilder {
        let request = self.http.request(method, url);
        match &self.auth {
            Some(auth) => request.header(AUTHORIZATION, auth.clone()),
            None => request,
        }
    }

    fn url(&self, path: &str) -> Result<Url, ClientError> {
        let text = format!("{}{path}", self.base);
        Url::parse(&text).map_err(|e| ClientError::InvalidUrl {
            url: text,
            rule: e.to_string(),
        })
    }

    /// Sends a request bounded by [`REQUEST_TIMEOUT`] and decodes its JSON answer.
    async fn json<T: DeserializeOwned>(
        &self,
        method: Method,
        path: String,
        body: Option<(Vec<u8>, &str)>,
    ) -> Result<T, ClientError> {
        let request_name = format!("{method} {path}");
        let mut request = self
            .request(method, self.url(&path)?)
            .timeout(REQUEST_TIMEOUT);
        if let Some((bytes, content_type)) = body {
            request = request.header(CONTENT_TYPE, content_type).body(bytes);
        }
        let mut response = self.send(request).await?;
        let bytes = match read_limited(&mut response, MAX_ANSWER_BYTES).await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => {
                return Err(ClientError::Decode {
                    request: request_name,
                    reason: format!("it is larger than {MAX_ANSWER_BYTES} bytes"),
                })
            }
            Err(e) => return Err(self.unreachable(&e)),
        };
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode {
            request: request_name,
            reason: e.to_string(),
        })
    }

    /// Sends `request`; a success status is the response, anything else an error.
    async fn send(&self, request: RequestBuilder) -> Result<Response, ClientError> {
        let mut response = request.send().await.map_err(|e| self.unreachable(&e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let bytes = read_limited(&mut response, MAX_ERROR_BYTES)
            .await
            .ok()
            .flatten()
            .unwrap_or_default();
        let body = serde_json::from_slice::<ErrorResponse>(&bytes)
            .unwrap_or_else(|_| foreign_error(status, &bytes));
        Err(ClientError::Api {
            status: status.as_u16(),
            body,
        })
    }

    /// [`ClientError::Tls`] naming the fix when the server's certificate was refused,
    /// [`ClientError::Unreachable`] otherwise.
    fn unreachable(&self, e: &reqwest::Error) -> ClientError {
        if let Some(tls) = crate::tls::find_rustls_error(e) {
            if matches!(tls, rustls::Error::InvalidCertificate(_)) {
                return ClientError::Tls {
                    url: self.base.clone(),
                    reason: crate::tls::explain_handshake_error(tls, &self.ca_origin),
                };
            }
        }
        ClientError::Unreachable {
            url: self.base.clone(),
            reason: reason_of(e),
        }
    }
}

/// Checks `http[s]://HOST[:PORT][/PREFIX]` and returns it without a trailing slash.
fn check_base_url(text: &str) -> Result<String, ClientError> {
    let invalid = |rule: &str| ClientError::InvalidUrl {
        url: text.to_string(),
        rule: rule.to_string(),
    };
    let url = Url::parse(text).map_err(|e| invalid(&format!("{e}; expected http://HOST:PORT")))?;
    match url.scheme() {
        "http" | "https" => {}
        _ => {
            return Err(invalid(
                "the scheme must be http:// or https://, as in https://HOST:PORT",
            ))
        }
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("it needs a host, as in http://HOST:PORT"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("user information is not supported"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("it must not have a query or a fragment"));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// Percent-encodes one path segment, so an id can never change the path it is put in.
fn segment(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for byte in id.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Reads the body, `None` when it is larger than `limit` (the rest is not read).
async fn read_limited(
    response: &mut Response,
    limit: usize,
) -> Result<Option<Vec<u8>>, reqwest::Error> {
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if bytes.len().saturating_add(chunk.len()) > limit {
            return Ok(None);
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Some(bytes))
}

/// An error body for an answer that is not ours (a proxy's page, an old server).
fn foreign_error(status: StatusCode, bytes: &[u8]) -> ErrorResponse {
    use crate::rest::code;
    let code = match status {
        StatusCode::BAD_REQUEST => code::INVALID,
        StatusCode::UNAUTHORIZED => code::UNAUTHENTICATED,
        StatusCode::FORBIDDEN => code::FORBIDDEN,
        StatusCode::NOT_FOUND => code::NOT_FOUND,
        StatusCode::CONFLICT => code::CONFLICT,
        StatusCode::METHOD_NOT_ALLOWED => code::METHOD_NOT_ALLOWED,
        StatusCode::PAYLOAD_TOO_LARGE => code::PAYLOAD_TOO_LARGE,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => code::UNSUPPORTED_MEDIA_TYPE,
        StatusCode::NOT_IMPLEMENTED => code::UNSUPPORTED,
        StatusCode::SERVICE_UNAVAILABLE => code::UNAVAILABLE,
        _ => "http_error",
    };
    let text: String = String::from_utf8_lossy(bytes)
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(200)
        .collect();
    let mut message = if text.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {text}")
    };
    match status {
        StatusCode::UNAUTHORIZED => {
            message.push_str(" — the server wants a valid bearer token (--token / EDGEIO_TOKEN)")
        }
        StatusCode::FORBIDDEN => message.push_str(" — the token is not allowed to do this"),
        _ => {}
    }
    ErrorResponse::new(code, message, Vec::new())
}

/// What went wrong, in words (`connection refused`) rather than reqwest's outer layers.
fn reason_of(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        return if e.is_connect() {
            format!("no connection within {} s", CONNECT_TIMEOUT.as_secs())
        } else {
            format!("no answer within {} s", REQUEST_TIMEOUT.as_secs())
        };
    }
    let mut deepest = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".to_string(),
                std::io::ErrorKind::ConnectionReset => "connection reset".to_string(),
                std::io::ErrorKind::ConnectionAborted => "connection aborted".to_string(),
                std::io::ErrorKind::TimedOut => "timed out".to_string(),
                _ => io.to_string(),
            };
        }
        deepest = s.to_string();
        source = s.source();
    }
    deepest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_checked() {
        assert_eq!(
            check_base_url("http://127.0.0.1:7070/").unwrap(),
            "http://127.0.0.1:7070"
        );
        assert_eq!(
            check_base_url("http://root.local:7070/edgeio").unwrap(),
            "http://root.local:7070/edgeio"
        );
        for (url, rule) in [
            ("127.0.0.1:7070", "expected http://HOST:PORT"),
            ("ftp://a:1", "the scheme must be http:// or https://"),
            ("http://u:p@a:1", "user information"),
            ("http://a:1/?x=1", "query"),
        ] {
            let text = check_base_url(url).unwrap_err().to_string();
            assert!(text.contains(url) && text.contains(rule), "{url}: {text}");
        }
        assert_eq!(check_base_url("https://a:1/").unwrap(), "https://a:1");
    }

    #[test]
    fn ids_cannot_escape_their_segment() {
        assert_eq!(segment("job-1.a_b~"), "job-1.a_b~");
        assert_eq!(segment("../x y"), "..%2Fx%20y");
    }

    #[test]
    fn refusals_of_the_credential_say_what_to_do() {
        let body = foreign_error(StatusCode::UNAUTHORIZED, b"");
        assert_eq!(body.error.code, "unauthenticated");
        assert_eq!(
            body.error.message,
            "HTTP 401 Unauthorized — the server wants a valid bearer token (--token / EDGEIO_TOKEN)"
        );
        let body = foreign_error(StatusCode::FORBIDDEN, b"no");
        assert_eq!(body.error.code, "forbidden");
        assert_eq!(
            body.error.message,
            "HTTP 403 Forbidden: no — the token is not allowed to do this"
        );
    }

    #[test]
    fn foreign_errors_keep_the_status_and_a_short_text() {
        let body = foreign_error(StatusCode::BAD_GATEWAY, b"<html>\n bad   gateway</html>");
        assert_eq!(body.error.code, "http_error");
        assert_eq!(
            body.error.message,
            "HTTP 502 Bad Gateway: <html> bad gateway</html>"
        );
    }
}
