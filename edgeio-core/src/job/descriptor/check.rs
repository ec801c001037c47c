//! The hand validator: walks a parsed document, collects every problem, builds the spec.
//!
//! Each check records its problems and returns a default on failure, so one pass finds all of
//! them; the spec is only assembled when none was found.

use super::node::{float_text, is_plain, quote, render, Node};
use super::FieldError;
use crate::job::units::{self, UnitError};
use crate::job::{
    ApiVersion, Dependency, DependencyCondition, JobSpec, PortMapping, Protocol, RestartKind,
    RestartPolicy,
};
use crate::model::{check_id, Arch, KnownRuntimes, Labels, Location, Resources, RuntimeKind};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Top-level fields of v0.1 (the thesis' file).
const V0_1_FIELDS: &[&str] = &[
    "api_version",
    "job_name",
    "image",
    "image_runtime",
    "requirements",
    "cluster_location",
    "worker_node",
];
/// Top-level fields v1 adds.
const V1_FIELDS: &[&str] = &[
    "replicas",
    "ports",
    "env",
    "args",
    "node_selector",
    "arch",
    "gpu",
    "restart",
    "depends_on",
    "affinity",
    "anti_affinity",
    "cluster",
];

const MAX_JOB_NAME: usize = 63;
const MAX_IMAGE: usize = 1024;
const MAX_LOCATION_NAME: usize = 128;
const MAX_LABEL_KEY: usize = 253;
const MAX_GPUS: i128 = 64;
const MAX_RESTART_LIMIT: i128 = 100;
const ARCH_NAMES: &str =
    "amd64 (x86_64, x86-64), arm64 (aarch64), arm (armv7, armv7l, armhf), riscv64";

/// Validates a parsed descriptor; every problem found, or the normalized spec.
pub(super) fn check(root: &Node, known: &KnownRuntimes) -> Result<JobSpec, Vec<FieldError>> {
    let mut c = Checker {
        known,
        v1: true,
        problems: Vec::new(),
    };
    let spec = c.job(root);
    match spec {
        Some(spec) if c.problems.is_empty() => Ok(spec),
        _ => Err(c.problems),
    }
}

struct Checker<'k> {
    known: &'k KnownRuntimes,
    /// v1 fields and units allowed; also true when the version is unknown, so that the rest
    /// of the descriptor is still checked against the widest rules.
    v1: bool,
    problems: Vec<FieldError>,
}

/// Recognized fields of a mapping, by name.
type Fields<'a> = Vec<(&'a str, &'a Node)>;

fn get<'a>(fields: &Fields<'a>, name: &str) -> Option<&'a Node> {
    fields.iter().find(|(k, _)| *k == name).map(|(_, v)| *v)
}

/// A field's value unless it is absent or written without a value.
fn present<'a>(fields: &Fields<'a>, name: &str) -> Option<&'a Node> {
    get(fields, name).filter(|n| !matches!(n, Node::Null))
}

fn join(parent: &str, key: &str) -> String {
    let key = if is_plain(key) {
        key.to_string()
    } else {
        format!("[{}]", quote(key))
    };
    match (parent.is_empty(), key.starts_with('[')) {
        (true, _) => key,
        (false, true) => format!("{parent}{key}"),
        (false, false) => format!("{parent}.{key}"),
    }
}

fn index(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

fn with_kind(rule: &str, node: &Node) -> String {
    format!("{rule}, not {}", node.kind())
}

impl Checker<'_> {
    fn fail(&mut self, path: &str, node: &Node, rule: impl Into<String>) {
        self.problems.push(FieldError {
            path: path.to_string(),
            value: render(node),
            rule: rule.into(),
        });
    }

    fn missing(&mut self, path: &str) {
        self.problems.push(FieldError {
            path: path.to_string(),
            value: "(missing)".to_string(),
            rule: "is required".to_string(),
        });
    }

    /// A required field: reports it when absent or empty.
    fn required<'a>(&mut self, fields: &Fields<'a>, parent: &str, name: &str) -> Option<&'a Node> {
        match get(fields, name) {
            None => {
                self.missing(&join(parent, name));
                None
            }
            Some(Node::Null) => {
                self.fail(&join(parent, name), &Node::Null, "is required");
                None
            }
            Some(node) => Some(node),
        }
    }

    /// The known fields of a mapping; reports non-string keys, unknown fields (naming the
    /// known ones) and v1 fields in a v0.1 descriptor.
    fn fields<'a>(
        &mut self,
        path: &str,
        entries: &'a [(Node, Node)],
        base: &[&str],
        v1_only: &[&str],
    ) -> Fields<'a> {
        let mut fields = Vec::new();
        for (key, value) in entries {
            let Node::Str(name) = key else {
                let at = if path.is_empty() { "(top level)" } else { path };
                self.fail(at, key, with_kind("field names must be strings", key));
                continue;
            };
            if base.contains(&name.as_str()) {
                fields.push((name.as_str(), value));
            } else if v1_only.contains(&name.as_str()) {
                if self.v1 {
                    fields.push((name.as_str(), value));
                } else {
                    self.fail(&join(path, name), value, "only allowed with api_version v1");
                }
            } else {
                let known: Vec<&str> = if self.v1 {
                    base.iter().chain(v1_only).copied().collect()
                } else {
                    base.to_vec()
                };
                let hint = suggest(name, &known)
                    .map(|s| format!(" (did you mean {s}?)"))
                    .unwrap_or_default();
                self.fail(
                    &join(path, name),
                    value,
                    format!("unknown field{hint}; known fields: {}", known.join(", ")),
                );
            }
        }
        fields
    }

    fn job(&mut self, root: &Node) -> Option<JobSpec> {
        let Node::Map(entries) = root else {
            self.fail(
                "(top level)",
                root,
                with_kind(
                    "must be a mapping of fields such as api_version and job_name",
                    root,
                ),
            );
            return None;
        };
        let version = self.version(entries);
        self.v1 = version != Some(ApiVersion::V0_1);
        let fields = self.fields("", entries, V0_1_FIELDS, V1_FIELDS);

        let name = self
            .required(&fields, "", "job_name")
            .and_then(|n| self.job_name("job_name", n));
        let image = self
            .required(&fields, "", "image")
            .and_then(|n| self.image("image", n));
        let runtime = self
            .required(&fields, "", "image_runtime")
            .and_then(|n| self.runtime("image_runtime", n));
        let mut resources = self
            .required(&fields, "", "requirements")
            .and_then(|n| self.requirements("requirements", n))
            .unwrap_or_default();
        let replicas = present(&fields, "replicas")
            .and_then(|n| self.integer("replicas", n, 1, i128::from(crate::job::MAX_REPLICAS)))
            .and_then(|r| u32::try_from(r).ok())
            .unwrap_or(1);
        let ports = present(&fields, "ports")
            .map(|n| self.ports("ports", n))
            .unwrap_or_default();
        let env = present(&fields, "env")
            .map(|n| self.env("env", n))
            .unwrap_or_default();
        let args = present(&fields, "args")
            .map(|n| self.args("args", n))
            .unwrap_or_default();
        let node_selector = present(&fields, "node_selector")
            .map(|n| self.labels("node_selector", n))
            .unwrap_or_default();
        let arch = present(&fields, "arch").and_then(|n| self.arch("arch", n));
        if let Some(gpus) = present(&fields, "gpu")
            .and_then(|n| self.integer("gpu", n, 0, MAX_GPUS))
            .and_then(|g| u32::try_from(g).ok())
        {
            resources.gpus = gpus;
        }
        let restart = present(&fields, "restart")
            .and_then(|n| self.restart("restart", n))
            .unwrap_or_default();
        let depends_on = present(&fields, "depends_on")
            .map(|n| self.depends_on("depends_on", n, name.as_deref()))
            .unwrap_or_default();
        let affinity = present(&fields, "affinity")
            .map(|n| self.job_names("affinity", n))
            .unwrap_or_default();
        let anti_affinity = present(&fields, "anti_affinity")
            .map(|n| self.job_names("anti_affinity", n))
            .unwrap_or_default();
        let attracted: HashMap<&str, usize> = affinity
            .iter()
            .map(|(j, name, _)| (name.as_str(), *j))
            .collect();
        for (i, other, node) in &anti_affinity {
            if let Some(j) = attracted.get(other.as_str()) {
                self.fail(
                    &index("anti_affinity", *i),
                    node,
                    format!(
                        "also listed in affinity[{j}]; a job cannot both attract and repel another"
                    ),
                );
            }
        }
        let cluster = present(&fields, "cluster").and_then(|n| self.id("cluster", n, "cluster id"));
        let cluster_location =
            present(&fields, "cluster_location").and_then(|n| self.location("cluster_location", n));
        let worker_node =
            present(&fields, "worker_node").and_then(|n| self.id("worker_node", n, "node id"));

        Some(JobSpec {
            api_version: version?,
            name: name?,
            image: image?,
            runtime: runtime?,
            resources,
            replicas,
            ports,
            env,
            args,
            node_selector,
            arch,
            cluster_location,
            worker_node,
            cluster,
            restart,
            depends_on,
            affinity: affinity.into_iter().map(|(_, name, _)| name).collect(),
            anti_affinity: anti_affinity.into_iter().map(|(_, name, _)| name).collect(),
        })
    }

    fn version(&mut self, entries: &[(Node, Node)]) -> Option<ApiVersion> {
        let node = entries
            .iter()
            .find(|(k, _)| matches!(k, Node::Str(s) if s == "api_version"))
            .map(|(_, v)| v);
        let rule = format!("must be one of {}", ApiVersion::SUPPORTED.join(", "));
        match node {
            None => {
                self.missing("api_version");
                None
            }
            Some(Node::Str(s)) if s == ApiVersion::V0_1.as_str() => Some(ApiVersion::V0_1),
            Some(Node::Str(s)) if s == ApiVersion::V1.as_str() => Some(ApiVersion::V1),
            Some(Node::Null) => {
                self.fail("api_version", &Node::Null, format!("is required; {rule}"));
                None
            }
            Some(other) => {
                self.fail("api_version", other, rule);
                None
            }
        }
    }

    fn string<'a>(&mut self, path: &str, node: &'a Node) -> Option<&'a str> {
        match node {
            Node::Str(s) => Some(s),
            other => {
                self.fail(path, other, with_kind("must be a string", other));
                None
            }
        }
    }

    fn job_name(&mut self, path: &str, node: &Node) -> Option<String> {
        let name = self.string(path, node)?;
        let rule = if name.is_empty() {
            Some("must not be empty".to_string())
        } else if name.chars().count() > MAX_JOB_NAME {
            Some(format!("must be at most {MAX_JOB_NAME} characters"))
        } else if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            Some("must start with a letter or digit".to_string())
        } else if !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        {
            Some("may only hold letters, digits, '_', '.' and '-'".to_string())
        } else {
            None
        };
        match rule {
            Some(rule) => {
                self.fail(path, node, rule);
                None
            }
            None => Some(name.to_string()),
        }
    }

    fn image(&mut self, path: &str, node: &Node) -> Option<String> {
        let image = self.string(path, node)?;
        let rule = if image.is_empty() {
            Some("must not be empty".to_string())
        } else if image.chars().count() > MAX_IMAGE {
            Some(format!("must be at most {MAX_IMAGE} characters"))
        } else if image.chars().any(|c| c.is_whitespace() || c.is_control()) {
            Some("must not contain whitespace or control characters".to_string())
        } else {
            None
        };
        match rule {
            Some(rule) => {
                self.fail(path, node, rule);
                None
            }
            None => Some(image.to_string()),
        }
    }

    fn runtime(&mut self, path: &str, node: &Node) -> Option<RuntimeKind> {
        let rule = format!("must be one of {}", self.known.names().join(", "));
        let Node::Str(name) = node else {
            self.fail(path, node, with_kind(&rule, node));
            return None;
        };
        let kind = self.known.resolve(name);
        if kind.is_none() {
            self.fail(path, node, rule);
        }
        kind
    }

    fn requirements(&mut self, path: &str, node: &Node) -> Option<Resources> {
        let Node::Map(entries) = node else {
            self.fail(
                path,
                node,
                with_kind("must be a mapping with cpu and memory", node),
            );
            return None;
        };
        let fields = self.fields(path, entries, &["cpu", "memory"], &["disk"]);
        let cpu = self
            .required(&fields, path, "cpu")
            .and_then(|n| self.cpu(&join(path, "cpu"), n));
        let memory = self
            .required(&fields, path, "memory")
            .and_then(|n| self.size(&join(path, "memory"), n));
        let disk = present(&fields, "disk").and_then(|n| self.size(&join(path, "disk"), n));
        Some(Resources {
            cpu_millis: cpu.unwrap_or(0),
            memory_bytes: memory.unwrap_or(0),
            disk_bytes: disk.unwrap_or(0),
            gpus: 0,
        })
    }

    /// The text of a number, exactly as the unit parsers read it; `None` for non-finite floats.
    fn number_text(node: &Node) -> Option<String> {
        match node {
            Node::Int(i) => Some(i.to_string()),
            Node::BigInt(u) => Some(u.to_string()),
            Node::Float(f) if f.is_finite() => Some(float_text(*f)),
            _ => None,
        }
    }

    fn cpu(&mut self, path: &str, node: &Node) -> Option<u64> {
        let text = match node {
            Node::Int(_) | Node::BigInt(_) | Node::Float(_) => match Self::number_text(node) {
                Some(text) => text,
                None => {
                    self.fail(path, node, "must be a finite number of cores");
                    return None;
                }
            },
            Node::Str(s) if self.v1 => s.clone(),
            Node::Str(_) => {
                self.fail(
                    path,
                    node,
                    "must be a plain number of cores; human units need api_version v1",
                );
                return None;
            }
            other => {
                let rule = if self.v1 {
                    "must be a number of cores or a string such as \"500m\""
                } else {
                    "must be a number of cores"
                };
                self.fail(path, other, with_kind(rule, other));
                return None;
            }
        };
        match units::parse_cpu_millis(&text) {
            Ok(millis) => Some(millis),
            Err(err) => {
                let rule = match err {
                    UnitError::NotANumber => {
                        "must be a number of cores such as 0.5 or millicores such as \"500m\""
                            .to_string()
                    }
                    UnitError::UnknownUnit { unit, .. } => {
                        format!("unknown unit {unit:?}; use m for millicores, or no unit for cores")
                    }
                    UnitError::NotPositive | UnitError::Negative => {
                        "must be a positive number of cores".to_string()
                    }
                    UnitError::NotWhole { .. } => {
                        "must be a whole number of millicores".to_string()
                    }
                    UnitError::TooLarge { .. } => "must be at most 1024 cores".to_string(),
                    other => other.to_string(),
                };
                self.fail(path, node, rule);
                None
            }
        }
    }

    /// Memory or disk: MB as a number, or (v1) a size with a unit.
    fn size(&mut self, path: &str, node: &Node) -> Option<u64> {
        let (text, has_unit) = match node {
            Node::Int(_) | Node::BigInt(_) | Node::Float(_) => match Self::number_text(node) {
                Some(text) => (text, false),
                None => {
                    self.fail(path, node, "must be a finite number of MB");
                    return None;
                }
            },
            Node::Str(s) if self.v1 => (
                s.clone(),
                s.trim_end().ends_with(|c: char| c.is_ascii_alphabetic()),
            ),
            Node::Str(_) => {
                self.fail(
                    path,
                    node,
                    "must be a plain number of MB; human units need api_version v1",
                );
                return None;
            }
            other => {
                let rule = if self.v1 {
                    "must be a number of MB or a size such as \"512Mi\""
                } else {
                    "must be a number of MB"
                };
                self.fail(path, other, with_kind(rule, other));
                return None;
            }
        };
        match units::parse_bytes(&text) {
            Ok(bytes) => Some(bytes),
            Err(err) => {
                let rule = match err {
                    UnitError::NotANumber => {
                        "must be a number of MB or a size such as \"512Mi\"".to_string()
                    }
                    UnitError::UnknownUnit { unit, expected } => {
                        format!("unknown unit {unit:?}; use {expected}")
                    }
                    UnitError::NotPositive | UnitError::Negative if has_unit => {
                        "must be a positive size".to_string()
                    }
                    UnitError::NotPositive | UnitError::Negative => {
                        "must be a positive number of MB".to_string()
                    }
                    other => other.to_string(),
                };
                self.fail(path, node, rule);
                None
            }
        }
    }

    fn duration_ms(&mut self, path: &str, node: &Node) -> Option<u64> {
        let text = match node {
            Node::Int(_) | Node::BigInt(_) | Node::Float(_) => match Self::number_text(node) {
                Some(text) => text,
                None => {
                    self.fail(path, node, "must be a finite number of milliseconds");
                    return None;
                }
            },
            Node::Str(s) => s.clone(),
            other => {
                self.fail(
                    path,
                    other,
                    with_kind(
                        "must be a duration such as \"500ms\" or \"2s\", or a number of milliseconds",
                        other,
                    ),
                );
                return None;
            }
        };
        match units::parse_duration_ms(&text) {
            Ok(ms) => Some(ms),
            Err(err) => {
                let rule = match err {
                    UnitError::NotANumber => "must be a duration such as \"500ms\" or \"2s\", or a number of milliseconds".to_string(),
                    other => other.to_string(),
                };
                self.fail(path, node, rule);
                None
            }
        }
    }

    /// A whole number in `lo..=hi`.
    fn integer(&mut self, path: &str, node: &Node, lo: i128, hi: i128) -> Option<i128> {
        let rule = format!("must be a whole number from {lo} to {hi}");
        match node {
            Node::Int(i) if (lo..=hi).contains(i) => Some(*i),
            Node::Int(_) | Node::BigInt(_) | Node::Float(_) => {
                self.fail(path, node, rule);
                None
            }
            other => {
                self.fail(path, other, with_kind(&rule, other));
                None
            }
        }
    }

    fn port(&mut self, path: &str, node: &Node) -> Option<u16> {
        self.integer(path, node, 1, i128::from(u16::MAX))
            .and_then(|p| u16::try_from(p).ok())
    }

    fn ports(&mut self, path: &str, node: &Node) -> Vec<PortMapping> {
        let Node::Seq(items) = node else {
            self.fail(path, node, with_kind("must be a list of ports", node));
            return Vec::new();
        };
        let mut ports = Vec::new();
        // First position of each (port, protocol), to name it when a later entry repeats it.
        let mut containers: HashMap<(u16, Protocol), usize> = HashMap::new();
        let mut hosts: HashMap<(u16, Protocol), usize> = HashMap::new();
        for (i, item) in items.iter().enumerate() {
            let at = index(path, i);
            let port = match item {
                Node::Int(_) | Node::BigInt(_) | Node::Float(_) => {
                    self.port(&at, item).map(|container| PortMapping {
                        container,
                        host: None,
                        protocol: Protocol::Tcp,
                    })
                }
                Node::Str(text) => match parse_port(text) {
                    Ok(port) => Some(port),
                    Err(rule) => {
                        self.fail(&at, item, rule);
                        None
                    }
                },
                Node::Map(entries) => self.port_map(&at, entries),
                other => {
                    self.fail(
                        &at,
                        other,
                        with_kind(
                            "must be a port number, a string such as \"8080:80\" or a mapping with container, host and protocol",
                            other,
                        ),
                    );
                    None
                }
            };
            let Some(port) = port else { continue };
            let protocol = protocol_name(port.protocol);
            if let Some(j) = containers.get(&(port.container, port.protocol)) {
                self.fail(
                    &at,
                    item,
                    format!(
                        "container port {}/{protocol} is already listed at {}",
                        port.container,
                        index(path, *j)
                    ),
                );
                continue;
            }
            if let Some(host) = port.host {
                if let Some(j) = hosts.get(&(host, port.protocol)) {
                    self.fail(
                        &at,
                        item,
                        format!(
                            "host port {host}/{protocol} is already used by {}",
                            index(path, *j)
                        ),
                    );
                    continue;
                }
                hosts.insert((host, port.protocol), i);
            }
            containers.insert((port.container, port.protocol), i);
            ports.push(port);
        }
        ports
    }

    fn port_map(&mut self, path: &str, entries: &[(Node, Node)]) -> Option<PortMapping> {
        let fields = self.fields(path, entries, &["container", "host", "protocol"], &[]);
        let container = self
            .required(&fields, path, "container")
            .and_then(|n| self.port(&join(path, "container"), n));
        let host = match present(&fields, "host") {
            Some(n) => Some(self.port(&join(path, "host"), n)?),
            None => None,
        };
        let protocol = match present(&fields, "protocol") {
            Some(n) => self.protocol(&join(path, "protocol"), n)?,
            None => Protocol::Tcp,
        };
        Some(PortMapping {
            container: container?,
            host,
            protocol,
        })
    }

    fn protocol(&mut self, path: &str, node: &Node) -> Option<Protocol> {
        match node {
            Node::Str(s) if s.eq_ignore_ascii_case("tcp") => Some(Protocol::Tcp),
            Node::Str(s) if s.eq_ignore_ascii_case("udp") => Some(Protocol::Udp),
            Node::Str(_) => {
                self.fail(path, node, "must be tcp or udp");
                None
            }
            other => {
                self.fail(path, other, with_kind("must be tcp or udp", other));
                None
            }
        }
    }

    fn env(&mut self, path: &str, node: &Node) -> BTreeMap<String, String> {
        let Node::Map(entries) = node else {
            self.fail(
                path,
                node,
                with_kind("must be a mapping of names to values", node),
            );
            return BTreeMap::new();
        };
        let mut env = BTreeMap::new();
        for (key, value) in entries {
            let name = match key {
                Node::Str(name) if is_env_name(name) => name,
                Node::Str(_) => {
                    self.fail(
                        path,
                        key,
                        "variable names must match [A-Za-z_][A-Za-z0-9_]*",
                    );
                    continue;
                }
                other => {
                    self.fail(
                        path,
                        other,
                        with_kind("variable names must be strings", other),
                    );
                    continue;
                }
            };
            if let Some(text) = self.scalar(&join(path, name), value) {
                env.insert(name.clone(), text);
            }
        }
        env
    }

    /// A scalar as text (strings, numbers and booleans).
    fn scalar(&mut self, path: &str, node: &Node) -> Option<String> {
        match node.scalar_text() {
            Some(text) if text.contains('\0') => {
                self.fail(path, node, "must not contain NUL characters");
                None
            }
            Some(text) => Some(text),
            None => {
                let rule = match node {
                    Node::Null => {
                        "must be a string, number or boolean (write \"\" for an empty value)"
                            .to_string()
                    }
                    other => with_kind("must be a string, number or boolean", other),
                };
                self.fail(path, node, rule);
                None
            }
        }
    }

    fn args(&mut self, path: &str, node: &Node) -> Vec<String> {
        let Node::Seq(items) = node else {
            self.fail(path, node, with_kind("must be a list of strings", node));
            return Vec::new();
        };
        items
            .iter()
            .enumerate()
            .filter_map(|(i, item)| self.scalar(&index(path, i), item))
            .collect()
    }

    fn labels(&mut self, path: &str, node: &Node) -> Labels {
        let Node::Map(entries) = node else {
            self.fail(
                path,
                node,
                with_kind("must be a mapping of labels to values", node),
            );
            return Labels::new();
        };
        let mut labels = Labels::new();
        for (key, value) in entries {
            let name = match key {
                Node::Str(name)
                    if !name.is_empty()
                        && name.chars().count() <= MAX_LABEL_KEY
                        && !name.chars().any(|c| c.is_whitespace() || c.is_control()) =>
                {
                    name
                }
                Node::Str(_) => {
                    self.fail(
                        path,
                        key,
                        format!("label names must be 1 to {MAX_LABEL_KEY} characters without whitespace"),
                    );
                    continue;
                }
                other => {
                    self.fail(path, other, with_kind("label names must be strings", other));
                    continue;
                }
            };
            if let Some(text) = self.scalar(&join(path, name), value) {
                labels.insert(name.clone(), text);
            }
        }
        labels
    }

    fn arch(&mut self, path: &str, node: &Node) -> Option<Arch> {
        let rule = format!("must be one of {ARCH_NAMES}");
        let Node::Str(name) = node else {
            self.fail(path, node, with_kind(&rule, node));
            return None;
        };
        match Arch::from(name.as_str()) {
            Arch::Other(_) => {
                self.fail(path, node, rule);
                None
            }
            arch => Some(arch),
        }
    }

    fn restart_kind(&mut self, path: &str, node: &Node) -> Option<RestartKind> {
        const RULE: &str = "must be never, on-failure or always";
        let Node::Str(text) = node else {
            self.fail(path, node, with_kind(RULE, node));
            return None;
        };
        match text.to_ascii_lowercase().as_str() {
            "never" => Some(RestartKind::Never),
            "on-failure" => Some(RestartKind::OnFailure),
            "always" => Some(RestartKind::Always),
            _ => {
                self.fail(path, node, RULE);
                None
            }
        }
    }

    fn restart(&mut self, path: &str, node: &Node) -> Option<RestartPolicy> {
        let defaults = RestartPolicy::default();
        match node {
            Node::Str(_) => Some(RestartPolicy {
                policy: self.restart_kind(path, node)?,
                ..defaults
            }),
            Node::Map(entries) => {
                let fields = self.fields(path, entries, &["policy", "limit", "backoff"], &[]);
                let policy =
                    present(&fields, "policy").map(|n| self.restart_kind(&join(path, "policy"), n));
                let limit = present(&fields, "limit").map(|n| {
                    self.integer(&join(path, "limit"), n, 0, MAX_RESTART_LIMIT)
                        .and_then(|l| u32::try_from(l).ok())
                });
                let backoff = present(&fields, "backoff")
                    .map(|n| self.duration_ms(&join(path, "backoff"), n));
                Some(RestartPolicy {
                    policy: policy.unwrap_or(Some(defaults.policy))?,
                    limit: limit.unwrap_or(Some(defaults.limit))?,
                    backoff_ms: backoff.unwrap_or(Some(defaults.backoff_ms))?,
                })
            }
            other => {
                self.fail(
                    path,
                    other,
                    with_kind(
                        "must be never, on-failure, always or a mapping with policy, limit and backoff",
                        other,
                    ),
                );
                None
            }
        }
    }

    fn depends_on(&mut self, path: &str, node: &Node, me: Option<&str>) -> Vec<Dependency> {
        let Node::Seq(items) = node else {
            self.fail(path, node, with_kind("must be a list of job names", node));
            return Vec::new();
        };
        let mut deps: Vec<Dependency> = Vec::new();
        let mut seen = HashSet::new();
        for (i, item) in items.iter().enumerate() {
            let at = index(path, i);
            let dep = match item {
                Node::Str(_) => self.job_name(&at, item).map(|job| Dependency {
                    job,
                    condition: DependencyCondition::Running,
                }),
                Node::Map(entries) => {
                    let fields = self.fields(&at, entries, &["job", "condition"], &[]);
                    let job = self
                        .required(&fields, &at, "job")
                        .and_then(|n| self.job_name(&join(&at, "job"), n));
                    let condition = match present(&fields, "condition") {
                        Some(n) => self.condition(&join(&at, "condition"), n),
                        None => Some(DependencyCondition::Running),
                    };
                    match (job, condition) {
                        (Some(job), Some(condition)) => Some(Dependency { job, condition }),
                        _ => None,
                    }
                }
                other => {
                    self.fail(
                        &at,
                        other,
                        with_kind(
                            "must be a job name or a mapping with job and condition",
                            other,
                        ),
                    );
                    None
                }
            };
            let Some(dep) = dep else { continue };
            if me == Some(dep.job.as_str()) {
                self.fail(&at, item, "a job cannot depend on itself");
            } else if !seen.insert(dep.job.clone()) {
                self.fail(&at, item, format!("job {:?} is listed twice", dep.job));
            } else {
                deps.push(dep);
            }
        }
        deps
    }

    fn condition(&mut self, path: &str, node: &Node) -> Option<DependencyCondition> {
        const RULE: &str = "must be RUNNING, SUCCEEDED or FAILED";
        let Node::Str(text) = node else {
            self.fail(path, node, with_kind(RULE, node));
            return None;
        };
        match text.to_ascii_uppercase().as_str() {
            "RUNNING" => Some(DependencyCondition::Running),
            "SUCCEEDED" => Some(DependencyCondition::Succeeded),
            "FAILED" => Some(DependencyCondition::Failed),
            _ => {
                self.fail(path, node, RULE);
                None
            }
        }
    }

    /// A list of job names, each with its position in the list as written and its node.
    fn job_names<'a>(&mut self, path: &str, node: &'a Node) -> Vec<(usize, String, &'a Node)> {
        let Node::Seq(items) = node else {
            self.fail(path, node, with_kind("must be a list of job names", node));
            return Vec::new();
        };
        let mut names = Vec::new();
        let mut seen = HashSet::new();
        for (i, item) in items.iter().enumerate() {
            let at = index(path, i);
            let Some(name) = self.job_name(&at, item) else {
                continue;
            };
            if seen.insert(name.clone()) {
                names.push((i, name, item));
            } else {
                self.fail(&at, item, format!("job {name:?} is listed twice"));
            }
        }
        names
    }

    fn id(&mut self, path: &str, node: &Node, kind: &'static str) -> Option<String> {
        let text = self.string(path, node)?;
        match check_id(kind, text) {
            Ok(()) => Some(text.to_string()),
            Err(err) => {
                self.fail(path, node, err.rule);
                None
            }
        }
    }

    fn location(&mut self, path: &str, node: &Node) -> Option<Location> {
        match node {
            Node::Str(_) => self.location_name(path, node).map(Location::named),
            Node::Map(_) if !self.v1 => {
                self.fail(
                    path,
                    node,
                    "must be a string; a location with coordinates needs api_version v1",
                );
                None
            }
            Node::Map(entries) => {
                let fields = self.fields(path, entries, &["name", "latitude", "longitude"], &[]);
                let name = self
                    .required(&fields, path, "name")
                    .and_then(|n| self.location_name(&join(path, "name"), n));
                let lat_node = present(&fields, "latitude");
                let lon_node = present(&fields, "longitude");
                let latitude = lat_node.map(|n| self.degrees(&join(path, "latitude"), n, 90.0));
                let longitude = lon_node.map(|n| self.degrees(&join(path, "longitude"), n, 180.0));
                match (lat_node, lon_node) {
                    (Some(_), None) => self.fail(
                        &join(path, "longitude"),
                        &Node::Null,
                        "is required when latitude is given",
                    ),
                    (None, Some(_)) => self.fail(
                        &join(path, "latitude"),
                        &Node::Null,
                        "is required when longitude is given",
                    ),
                    _ => {}
                }
                Some(Location {
                    name: name?,
                    latitude: latitude.unwrap_or(None),
                    longitude: longitude.unwrap_or(None),
                })
            }
            other => {
                let rule = if self.v1 {
                    "must be a place name or a mapping with name, latitude and longitude"
                } else {
                    "must be a place name"
                };
                self.fail(path, other, with_kind(rule, other));
                None
            }
        }
    }

    fn location_name(&mut self, path: &str, node: &Node) -> Option<String> {
        let name = self.string(path, node)?;
        let rule = if name.trim().is_empty() {
            Some("must not be empty".to_string())
        } else if name.chars().count() > MAX_LOCATION_NAME {
            Some(format!("must be at most {MAX_LOCATION_NAME} characters"))
        } else if name.chars().any(char::is_control) {
            Some("must not contain control characters".to_string())
        } else {
            None
        };
        match rule {
            Some(rule) => {
                self.fail(path, node, rule);
                None
            }
            None => Some(name.to_string()),
        }
    }

    fn degrees(&mut self, path: &str, node: &Node, limit: f64) -> Option<f64> {
        let rule = format!("must be a number from -{limit} to {limit}");
        let value = match node {
            // Exact: any integer that passes the range check is far below 2^52.
            Node::Int(i) => *i as f64,
            Node::Float(f) => *f,
            Node::BigInt(_) => f64::INFINITY,
            other => {
                self.fail(path, other, with_kind(&rule, other));
                return None;
            }
        };
        if value.is_finite() && (-limit..=limit).contains(&value) {
            Some(value)
        } else {
            self.fail(path, node, rule);
            None
        }
    }
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn protocol_name(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

/// `"8080"`, `"8080:80"` (host:container), `"53/udp"`, `"8080:80/udp"`.
fn parse_port(text: &str) -> Result<PortMapping, String> {
    const SHAPE: &str = "must be a port such as 8080, \"8080:80\" (host:container) or \"53/udp\"";
    let (ports, protocol) = match text.split_once('/') {
        Some((ports, proto)) if proto.eq_ignore_ascii_case("tcp") => (ports, Protocol::Tcp),
        Some((ports, proto)) if proto.eq_ignore_ascii_case("udp") => (ports, Protocol::Udp),
        Some(_) => return Err("protocol must be tcp or udp".to_string()),
        None => (text, Protocol::Tcp),
    };
    let number = |part: &str| -> Result<u16, String> {
        if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
            return Err(SHAPE.to_string());
        }
        match part.parse::<u32>() {
            Ok(p @ 1..=65535) => u16::try_from(p).map_err(|_| SHAPE.to_string()),
            _ => Err("ports must be from 1 to 65535".to_string()),
        }
    };
    let (host, container) = match ports.split_once(':') {
        Some((host, container)) => (Some(number(host)?), number(container)?),
        None => (None, number(ports)?),
    };
    Ok(PortMapping {
        container,
        host,
        protocol,
    })
}

/// The known name closest to a misspelt one, when it is close enough to be the intent.
fn suggest<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    let name = name.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (edit_distance(&name, k), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    // Field names are short; long keys are not typos of them.
    if a.len() > 64 {
        return usize::MAX;
    }
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row.first().copied().unwrap_or(0);
        if let Some(first) = row.first_mut() {
            *first = i + 1;
        }
        for (j, cb) in b.iter().enumerate() {
            let above = row.get(j + 1).copied().unwrap_or(usize::MAX);
            let left = row.get(j).copied().unwrap_or(usize::MAX);
            let diagonal = prev + usize::from(ca != *cb);
            prev = above;
            if let Some(cell) = row.get_mut(j + 1) {
                *cell = diagonal
                    .min(above.saturating_add(1))
                    .min(left.saturating_add(1));
            }
        }
    }
    row.last().copied().unwrap_or(usize::MAX)
}
