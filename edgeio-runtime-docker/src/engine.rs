//! The connection to one Docker Engine, with the API version both sides speak.
//!
//! bollard 0.21 is built for API 1.53, which Docker 20.10 (API 1.41) refuses whenever a
//! request names it: `client version 1.53 is too new. Maximum supported API version is
//! 1.41`, even for `/version`. bollard 0.21.1 happens not to name it — it joins each absolute
//! request path onto its versioned base URL, which drops the `/v1.53` prefix, so the engine
//! answers in its own newest version — but that is an accident of its URL handling, not a
//! promise. So the version is settled here once: ask `/version`, then speak the older of the
//! engine's version and bollard's (or the maximum the engine names when it refuses). Newer
//! engines refuse versions below their minimum, so no fixed version would serve every
//! engine; `api_version` in the config pins one instead.

use crate::config::DockerConfig;
use crate::errors;
use bollard::{ClientVersion, Docker, API_DEFAULT_VERSION};
use edgeio_core::runtime::RuntimeError;
use tokio::sync::OnceCell;
use tracing::debug;

/// A lazily connected client: the engine may be absent when the runtime is built and appear
/// later; a failed connection is tried again by the next call.
pub(crate) struct Engine {
    host: String,
    timeout_secs: u64,
    pinned: Option<ClientVersion>,
    client: OnceCell<Docker>,
}

/// Parses `"1.41"` into a client version.
pub(crate) fn parse_api_version(text: &str) -> Option<ClientVersion> {
    let (major, minor) = text.trim().split_once('.')?;
    Some(ClientVersion {
        major_version: major.parse().ok()?,
        minor_version: minor.parse().ok()?,
    })
}

/// The version an engine names in its "too new" refusal (`… Maximum supported API version is
/// 1.41`), if that is what `message` is.
pub(crate) fn maximum_from_refusal(message: &str) -> Option<ClientVersion> {
    let (_, rest) = message.split_once("Maximum supported API version is ")?;
    parse_api_version(rest.split_whitespace().next()?)
}

fn older(a: ClientVersion, b: ClientVersion) -> ClientVersion {
    if (a.major_version, a.minor_version) <= (b.major_version, b.minor_version) {
        a
    } else {
        b
    }
}

impl Engine {
    pub(crate) fn new(config: &DockerConfig) -> Engine {
        Engine {
            host: config.resolved_host(),
            timeout_secs: config.timeout_secs,
            pinned: config.api_version.as_deref().and_then(parse_api_version),
            client: OnceCell::new(),
        }
    }

    /// The engine's address.
    pub(crate) fn host(&self) -> &str {
        &self.host
    }

    /// A client speaking a version the engine accepts; [`RuntimeError::Unavailable`] when the
    /// engine does not answer.
    pub(crate) async fn docker(&self) -> Result<Docker, RuntimeError> {
        self.client
            .get_or_try_init(|| self.connect())
            .await
            .cloned()
    }

    fn build(&self, version: &ClientVersion) -> Result<Docker, RuntimeError> {
        let host = self.host.as_str();
        let built = if host.starts_with("unix://") {
            Docker::connect_with_unix(host, self.timeout_secs, version)
        } else {
            Docker::connect_with_http(host, self.timeout_secs, version)
        };
        built.map_err(|e| errors::unavailable(host, &e))
    }

    async fn connect(&self) -> Result<Docker, RuntimeError> {
        if let Some(version) = self.pinned {
            return self.build(&version);
        }
        let newest = *API_DEFAULT_VERSION;
        let first = self.build(&newest)?;
        let chosen = match first.version().await {
            Ok(answer) => answer
                .api_version
                .as_deref()
                .and_then(parse_api_version)
                .map_or(newest, |engine| older(engine, newest)),
            Err(e) if errors::status(&e) == Some(400) => {
                let msg = errors::message(&e);
                maximum_from_refusal(&msg).ok_or_else(|| RuntimeError::Unavailable {
                    runtime: errors::KIND.to_string(),
                    reason: format!(
                        "docker engine at {} refused API version {newest} without naming one \
                         it accepts: {msg}; set api_version in the config",
                        self.host
                    ),
                })?
            }
            Err(e) => return Err(errors::unavailable(&self.host, &e)),
        };
        debug!(host = %self.host, api_version = %chosen, "docker api version negotiated");
        if chosen == newest {
            Ok(first)
        } else {
            self.build(&chosen)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_the_older_one_wins() {
        let v = parse_api_version("1.41").unwrap();
        assert_eq!((v.major_version, v.minor_version), (1, 41));
        assert!(parse_api_version("1").is_none());
        assert!(parse_api_version("x.y").is_none());
        let newer = parse_api_version("1.53").unwrap();
        assert_eq!(older(v, newer), v);
        assert_eq!(older(newer, v), v);
    }

    #[test]
    fn a_too_new_refusal_names_the_engines_maximum() {
        let msg = "client version 1.53 is too new. Maximum supported API version is 1.41";
        let v = maximum_from_refusal(msg).unwrap();
        assert_eq!((v.major_version, v.minor_version), (1, 41));
        assert!(maximum_from_refusal("page not found").is_none());
    }
}
