//! The runtime's options.

use edgeio_core::model::check_id;
use edgeio_core::runtime::RuntimeError;
use serde::{Deserialize, Serialize};

/// Label carrying the id of the worker node that started a container.
pub const LABEL_NODE: &str = "edgeio.node";

/// The Docker socket used when neither the config nor `DOCKER_HOST` names an engine.
pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// Options of a [`crate::DockerRuntime`].
///
/// Every field has a default, so a config file may name only what it changes:
///
/// ```
/// let config: edgeio_runtime_docker::DockerConfig =
///     serde_json::from_str(r#"{ "node_id": "e580", "pull": true }"#).unwrap();
/// assert_eq!(config.name_prefix, "edgeio-");
/// assert!(config.pull);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DockerConfig {
    /// Engine address: `unix:///path/to/docker.sock`, `tcp://host:2375` or `http://host:2375`.
    /// `None` takes `DOCKER_HOST`, then [`DEFAULT_HOST`].
    pub host: Option<String>,
    /// Docker API version to speak (`"1.41"`). `None` negotiates: the highest version both
    /// this client and the engine know.
    pub api_version: Option<String>,
    /// The worker node's id, put on every container as the label `edgeio.node`. When set,
    /// `list` and `events` see only this node's containers, so several workers can share an
    /// engine.
    pub node_id: Option<String>,
    /// Prefix of container names: an instance `web-0` runs as the container `edgeio-web-0`.
    pub name_prefix: String,
    /// Seconds Docker itself waits after SIGTERM when it stops a container on its own (engine
    /// shutdown, a plain `docker stop`); `terminate` uses the grace period it is given.
    pub stop_grace_secs: u32,
    /// Pull an image that is not present on the engine. Off by default: an edge node often
    /// has no registry, and a pull towards an unreachable one makes a deploy hang for as long
    /// as the engine retries; with `false` a missing image is refused at once, naming it.
    pub pull: bool,
    /// Seconds to wait for the engine's answer to one request (streams are not cut).
    pub timeout_secs: u64,
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig {
            host: None,
            api_version: None,
            node_id: None,
            name_prefix: "edgeio-".to_string(),
            stop_grace_secs: 10,
            pull: false,
            timeout_secs: 120,
        }
    }
}

impl DockerConfig {
    /// The engine address this config resolves to (the field, `DOCKER_HOST`, the default).
    pub fn resolved_host(&self) -> String {
        self.host
            .clone()
            .or_else(|| std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()))
            .unwrap_or_else(|| DEFAULT_HOST.to_string())
    }

    /// Checks every field; the error names the field, the value and the rule.
    pub fn validate(&self) -> Result<(), RuntimeError> {
        let invalid = |field: &str, value: &str, rule: &str| RuntimeError::Invalid {
            field: field.to_string(),
            value: value.to_string(),
            rule: rule.to_string(),
        };
        let host = self.resolved_host();
        if !["unix://", "tcp://", "http://"]
            .iter()
            .any(|scheme| host.starts_with(scheme))
        {
            return Err(invalid(
                "host",
                &host,
                "must start with unix://, tcp:// or http:// (TLS and ssh are not built in)",
            ));
        }
        if let Some(version) = &self.api_version {
            if crate::engine::parse_api_version(version).is_none() {
                return Err(invalid(
                    "api_version",
                    version,
                    "must be <major>.<minor>, e.g. 1.41",
                ));
            }
        }
        if let Some(node) = &self.node_id {
            check_id("node id", node).map_err(|e| invalid("node_id", node, e.rule))?;
        }
        // container names are [a-zA-Z0-9][a-zA-Z0-9_.-]*; ids are already from that alphabet
        let prefix_ok = self.name_prefix.is_empty()
            || (self
                .name_prefix
                .starts_with(|c: char| c.is_ascii_alphanumeric())
                && self
                    .name_prefix
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')));
        if !prefix_ok {
            return Err(invalid(
                "name_prefix",
                &self.name_prefix,
                "must start with a letter or digit and hold only letters, digits, '_', '.' and '-'",
            ));
        }
        if self.timeout_secs == 0 {
            return Err(invalid("timeout_secs", "0", "must be at least 1"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_config_is_valid_and_does_not_pull() {
        let config = DockerConfig {
            host: Some(DEFAULT_HOST.into()),
            ..Default::default()
        };
        config.validate().unwrap();
        assert!(!config.pull);
        assert_eq!(config.name_prefix, "edgeio-");
    }

    #[test]
    fn bad_fields_are_named_with_their_value_and_rule() {
        let cases = [
            (
                DockerConfig {
                    host: Some("ssh://box".into()),
                    ..Default::default()
                },
                "host",
            ),
            (
                DockerConfig {
                    host: Some(DEFAULT_HOST.into()),
                    api_version: Some("one".into()),
                    ..Default::default()
                },
                "api_version",
            ),
            (
                DockerConfig {
                    host: Some(DEFAULT_HOST.into()),
                    node_id: Some("a/b".into()),
                    ..Default::default()
                },
                "node_id",
            ),
            (
                DockerConfig {
                    host: Some(DEFAULT_HOST.into()),
                    name_prefix: "-x".into(),
                    ..Default::default()
                },
                "name_prefix",
            ),
        ];
        for (config, field) in cases {
            match config.validate() {
                Err(RuntimeError::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }

    #[test]
    fn unknown_config_fields_are_refused() {
        let err = serde_json::from_str::<DockerConfig>(r#"{ "pul": true }"#).unwrap_err();
        assert!(err.to_string().contains("pul"), "{err}");
    }
}
