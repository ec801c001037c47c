//! Runtime kinds (`docker`, `native`, `mirage` …) and the set a deployment knows.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// The name of a kind of runtime, e.g. `docker`. Always lower case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub struct RuntimeKind(String);

impl RuntimeKind {
    /// Docker/OCI containers.
    pub const DOCKER: &'static str = "docker";
    /// Native processes (the thesis' "no runtime" case).
    pub const NATIVE: &'static str = "native";
    /// MirageOS / Solo5 unikernels.
    pub const MIRAGE: &'static str = "mirage";

    /// A kind by name (lower-cased).
    pub fn new(name: impl AsRef<str>) -> Self {
        Self(name.as_ref().to_ascii_lowercase())
    }

    /// The kind's name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<String> for RuntimeKind {
    fn from(name: String) -> Self {
        Self::new(name)
    }
}

impl From<&str> for RuntimeKind {
    fn from(name: &str) -> Self {
        Self::new(name)
    }
}

impl From<RuntimeKind> for String {
    fn from(kind: RuntimeKind) -> String {
        kind.0
    }
}

impl fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The runtime kinds a deployment accepts in descriptors, with their aliases.
///
/// Starts with the built-ins `docker`, `native` and `mirage` (alias `unikernel`); an
/// integrator with a runtime of their own registers its kind so descriptors may name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownRuntimes {
    // name or alias -> canonical kind
    names: BTreeMap<String, RuntimeKind>,
}

impl Default for KnownRuntimes {
    fn default() -> Self {
        let mut known = KnownRuntimes {
            names: BTreeMap::new(),
        };
        known.register(RuntimeKind::DOCKER);
        known.register(RuntimeKind::NATIVE);
        known.register(RuntimeKind::MIRAGE);
        known.alias("unikernel", RuntimeKind::MIRAGE);
        known
    }
}

impl KnownRuntimes {
    /// Adds a runtime kind.
    pub fn register(&mut self, kind: &str) -> &mut Self {
        let kind = RuntimeKind::new(kind);
        self.names.insert(kind.as_str().to_string(), kind);
        self
    }

    /// Adds another name for an already known kind.
    pub fn alias(&mut self, alias: &str, kind: &str) -> &mut Self {
        self.names
            .insert(alias.to_ascii_lowercase(), RuntimeKind::new(kind));
        self
    }

    /// The canonical kind for a name or alias, case-insensitively.
    pub fn resolve(&self, name: &str) -> Option<RuntimeKind> {
        self.names.get(&name.to_ascii_lowercase()).cloned()
    }

    /// Every accepted name (kinds and aliases), sorted, for error messages.
    pub fn names(&self) -> Vec<&str> {
        self.names.keys().map(String::as_str).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unikernel_is_an_alias_of_mirage() {
        let known = KnownRuntimes::default();
        assert_eq!(known.resolve("Unikernel").unwrap().as_str(), "mirage");
        assert_eq!(known.resolve("podman"), None);
        assert_eq!(known.names(), ["docker", "mirage", "native", "unikernel"]);
    }
}
