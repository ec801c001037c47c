//! [`StoreConfig`]: which store to open, from configuration.

use crate::embedded::{EmbeddedOptions, EmbeddedStore, DEFAULT_HISTORY};
#[cfg(feature = "etcd")]
use crate::etcd::{EtcdOptions, EtcdStore, DEFAULT_TIMEOUT};
use edgeio_core::store::{Store, StoreError};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;
#[cfg(feature = "etcd")]
use std::time::Duration;

/// The etcd client's timeout, also known to builds without it so that a configuration reads
/// the same everywhere.
#[cfg(not(feature = "etcd"))]
const DEFAULT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Why an etcd configuration is refused by a build without the `etcd` feature (the rule of
/// the [`StoreError::Invalid`] on field `backend`).
pub const ETCD_NOT_BUILT: &str = "this build has no etcd support; rebuild with --features etcd \
    (which needs protoc to build etcd-client: Debian's protobuf-compiler)";

/// Which store backend to open, and how. Serialized with a `backend` tag:
///
/// The `etcd` backend is read by every build, so one configuration file serves all; a build
/// without the `etcd` feature refuses it in [`StoreConfig::validate`] and
/// [`StoreConfig::open`] with [`StoreError::Invalid`] (field `backend`, rule
/// [`ETCD_NOT_BUILT`]).
///
/// ```yaml
/// backend: embedded          # the default choice: one file, no server
/// path: /var/lib/edgeio/root.redb
/// history: 10000             # optional: change events kept for watch resume
/// ---
/// backend: etcd              # for several root replicas on one etcd
/// endpoints: ["http://10.0.0.5:2379", "http://10.0.0.6:2379"]
/// prefix: edgeio/            # optional: every key lives under it
/// timeout_ms: 5000           # optional: connect and per-request timeout
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "backend", rename_all = "snake_case", deny_unknown_fields)]
pub enum StoreConfig {
    /// An [`EmbeddedStore`] in one file.
    Embedded {
        /// The store file; created when missing (its directory must exist).
        path: PathBuf,
        /// Change events kept in the file for watch resume (default 10,000).
        #[serde(default = "default_history")]
        history: usize,
    },
    /// An `EtcdStore` (feature `etcd`).
    Etcd {
        /// etcd client URLs, `http://host:port`.
        endpoints: Vec<String>,
        /// Prepended to every key (default: none).
        #[serde(default)]
        prefix: String,
        /// Connect and per-request timeout in milliseconds (default 5,000).
        #[serde(default = "default_timeout_ms")]
        timeout_ms: u64,
    },
}

fn default_history() -> usize {
    DEFAULT_HISTORY
}

fn default_timeout_ms() -> u64 {
    u64::try_from(DEFAULT_TIMEOUT.as_millis()).unwrap_or(u64::MAX)
}

impl StoreConfig {
    /// An embedded store at `path` with the default history.
    pub fn embedded(path: impl Into<PathBuf>) -> Self {
        Self::Embedded {
            path: path.into(),
            history: DEFAULT_HISTORY,
        }
    }

    /// An etcd store at `endpoints`, every key under `prefix`, with the default timeout.
    pub fn etcd<S: Into<String>>(
        endpoints: impl IntoIterator<Item = S>,
        prefix: impl Into<String>,
    ) -> Self {
        Self::Etcd {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            prefix: prefix.into(),
            timeout_ms: default_timeout_ms(),
        }
    }

    /// Checks the configuration without opening anything.
    pub fn validate(&self) -> Result<(), StoreError> {
        match self {
            Self::Embedded { path, history } => {
                if path.as_os_str().is_empty() {
                    return Err(StoreError::Invalid {
                        field: "path",
                        value: String::new(),
                        rule: "the store file's path must not be empty".into(),
                    });
                }
                embedded_options(*history).validate()
            }
            #[cfg(feature = "etcd")]
            Self::Etcd { .. } => self.etcd_options().map(|_| ()),
            #[cfg(not(feature = "etcd"))]
            Self::Etcd { .. } => Err(etcd_not_built()),
        }
    }

    /// Opens the configured store.
    ///
    /// Errors: what [`StoreConfig::validate`], [`EmbeddedStore::open`] or `EtcdStore::connect`
    /// answer; an unreachable etcd is [`StoreError::Unavailable`] within the configured
    /// timeout.
    pub async fn open(&self) -> Result<Arc<dyn Store>, StoreError> {
        self.validate()?;
        match self {
            Self::Embedded { path, history } => Ok(Arc::new(
                EmbeddedStore::open(path.clone(), embedded_options(*history)).await?,
            )),
            #[cfg(feature = "etcd")]
            Self::Etcd { .. } => Ok(Arc::new(EtcdStore::connect(self.etcd_options()?).await?)),
            #[cfg(not(feature = "etcd"))]
            Self::Etcd { .. } => Err(etcd_not_built()),
        }
    }

    #[cfg(feature = "etcd")]
    fn etcd_options(&self) -> Result<EtcdOptions, StoreError> {
        let Self::Etcd {
            endpoints,
            prefix,
            timeout_ms,
        } = self
        else {
            return Err(StoreError::Invalid {
                field: "backend",
                value: "embedded".into(),
                rule: "etcd options exist only for the etcd backend".into(),
            });
        };
        let options = EtcdOptions::new(endpoints.clone())
            .with_prefix(prefix.clone())
            .with_timeout(Duration::from_millis(*timeout_ms));
        options.validate()?;
        Ok(options)
    }
}

#[cfg(not(feature = "etcd"))]
fn etcd_not_built() -> StoreError {
    StoreError::Invalid {
        field: "backend",
        value: "etcd".into(),
        rule: ETCD_NOT_BUILT.into(),
    }
}

fn embedded_options(history: usize) -> EmbeddedOptions {
    EmbeddedOptions {
        history,
        ..EmbeddedOptions::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_path_is_invalid() {
        let err = StoreConfig::embedded("").validate().unwrap_err();
        assert!(
            matches!(err, StoreError::Invalid { field: "path", .. }),
            "{err:?}"
        );
        assert!(err.to_string().contains("must not be empty"), "{err}");
    }

    #[cfg(not(feature = "etcd"))]
    #[tokio::test]
    async fn an_etcd_config_on_a_build_without_etcd_says_how_to_rebuild() {
        let config = StoreConfig::etcd(["http://127.0.0.1:2379"], "p/");
        let err = config.validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("invalid backend \"etcd\": {ETCD_NOT_BUILT}")
        );
        assert!(err.to_string().contains("--features etcd"), "{err}");
        assert!(err.to_string().contains("protobuf-compiler"), "{err}");
        assert!(matches!(
            config.open().await,
            Err(StoreError::Invalid {
                field: "backend",
                ..
            })
        ));
    }

    #[cfg(feature = "etcd")]
    #[test]
    fn etcd_without_endpoints_or_with_a_malformed_one_is_invalid() {
        let none = StoreConfig::etcd(Vec::<String>::new(), "p/").validate();
        assert!(matches!(
            none,
            Err(StoreError::Invalid {
                field: "endpoints",
                ..
            })
        ));
        for bad in [
            "localhost",
            "http://",
            "http://host:notaport",
            "http://host:0",
            "http://:2379",
            "ftp://x y:1",
            "https://127.0.0.1:2379",
        ] {
            let err = StoreConfig::etcd([bad], "p/").validate().unwrap_err();
            match &err {
                StoreError::Invalid {
                    field: "endpoint",
                    value,
                    ..
                } => assert_eq!(value, bad),
                other => panic!("{bad}: expected Invalid {{ field: \"endpoint\" }}, got {other:?}"),
            }
        }
        for good in [
            "127.0.0.1:2379",
            "http://127.0.0.1:2379",
            "http://[::1]:2379/",
            "etcd-0.local:2379",
        ] {
            StoreConfig::etcd([good], "").validate().unwrap();
        }
    }

    #[cfg(feature = "etcd")]
    #[test]
    fn zero_timeout_is_invalid() {
        let config = StoreConfig::Etcd {
            endpoints: vec!["http://127.0.0.1:2379".into()],
            prefix: String::new(),
            timeout_ms: 0,
        };
        assert!(matches!(
            config.validate(),
            Err(StoreError::Invalid {
                field: "timeout",
                ..
            })
        ));
    }
}
