//! Parsing and validation of job descriptors (v0.1 and v1, YAML or JSON).
//!
//! [`parse_descriptor`] turns the bytes a user wrote into a normalized [`JobSpec`], or refuses
//! them with a [`DescriptorError`] that lists every problem at once: each names the field
//! path, the value found and the rule it breaks, e.g.
//! `requirements.memory: "-5": must be a positive number of MB`.
//!
//! # Versions
//!
//! `api_version: v0.1` is the thesis' file, accepted exactly as written: `job_name`, `image`,
//! `image_runtime`, `requirements.cpu` (cores) and `requirements.memory` (MB) are required,
//! `cluster_location` and `worker_node` are optional strings. Only plain numbers are read for
//! CPU and memory.
//!
//! `api_version: v1` adds `replicas`, `ports`, `env`, `args`, `node_selector`, `arch`, `gpu`,
//! `requirements.disk`, `restart`, `depends_on`, `affinity`, `anti_affinity`, `cluster` and a
//! `cluster_location` with coordinates, and reads human units (`"500m"`, `"512Mi"`; see
//! [`super::units`]).
//!
//! "MB" is 2^20 bytes, as Docker reads `--memory 1000m`: the thesis' `memory: 1000` is
//! 1,048,576,000 bytes.
//!
//! An optional field written with no value (`worker_node:`) counts as absent; a required one
//! is reported as missing.

mod check;
mod depth;
mod node;
#[cfg(test)]
mod tests;

pub use depth::MAX_NESTING;

use super::JobSpec;
use crate::model::KnownRuntimes;
use serde::Serialize;
use std::fmt;

/// Largest descriptor accepted, in bytes (1 MiB).
pub const MAX_DESCRIPTOR_BYTES: usize = 1 << 20;

/// One problem in a descriptor: the field path, the value found, and the rule broken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// Dotted path (`requirements.memory`, `ports[2].host`).
    pub path: String,
    /// The value found, as written (cut to a readable length), or `(missing)`.
    pub value: String,
    /// The rule it breaks.
    pub rule: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: {}", self.path, self.value, self.rule)
    }
}

/// Why a descriptor was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DescriptorError {
    /// No content at all, or only whitespace and comments.
    #[error("descriptor is empty")]
    Empty,
    /// Larger than [`MAX_DESCRIPTOR_BYTES`]; checked before anything else.
    #[error("descriptor is {size} bytes, more than the limit of {limit} bytes")]
    TooLarge {
        /// Size of the descriptor in bytes (as far as it was read).
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// Not UTF-8 text.
    #[error("descriptor is not UTF-8: invalid byte at offset {offset}")]
    NotUtf8 {
        /// Byte offset of the first invalid byte.
        offset: usize,
    },
    /// Not well-formed YAML (or JSON), including nesting too deep, duplicate keys and aliases
    /// that expand too far.
    #[error("{}", syntax_text(*line, *column, message))]
    Syntax {
        /// Line of the problem, from 1.
        line: Option<usize>,
        /// Column of the problem, from 1.
        column: Option<usize>,
        /// What is wrong there.
        message: String,
    },
    /// Well-formed, but fields break rules; every problem found is listed.
    #[error("{}", invalid_text(.0))]
    Invalid(Vec<FieldError>),
}

fn syntax_text(line: Option<usize>, column: Option<usize>, message: &str) -> String {
    match (line, column) {
        (Some(line), Some(column)) => {
            format!("yaml syntax error at line {line} column {column}: {message}")
        }
        (Some(line), None) => format!("yaml syntax error at line {line}: {message}"),
        _ => format!("yaml syntax error: {message}"),
    }
}

fn invalid_text(problems: &[FieldError]) -> String {
    match problems {
        [one] => format!("invalid descriptor: {one}"),
        many => {
            let lines: Vec<String> = many.iter().map(ToString::to_string).collect();
            format!(
                "invalid descriptor, {} problems: {}",
                many.len(),
                lines.join("; ")
            )
        }
    }
}

impl DescriptorError {
    /// One human-readable line per problem (several only for [`DescriptorError::Invalid`]).
    pub fn problems(&self) -> Vec<String> {
        match self {
            DescriptorError::Invalid(problems) => {
                problems.iter().map(ToString::to_string).collect()
            }
            other => vec![other.to_string()],
        }
    }
}

/// Parses and validates a descriptor (YAML or JSON) into a normalized [`JobSpec`].
///
/// Runtime names are resolved through `known` (aliases such as `unikernel` become their
/// canonical kind). Any input is safe: it never panics, and a refusal lists every problem.
///
/// ```
/// use edgeio_core::job::parse_descriptor;
/// use edgeio_core::model::KnownRuntimes;
///
/// let err = parse_descriptor(b"api_version: v1\njob_name: web\n", &KnownRuntimes::default())
///     .unwrap_err();
/// assert_eq!(err.problems()[0], "image: (missing): is required");
/// ```
pub fn parse_descriptor(bytes: &[u8], known: &KnownRuntimes) -> Result<JobSpec, DescriptorError> {
    if bytes.len() > MAX_DESCRIPTOR_BYTES {
        return Err(DescriptorError::TooLarge {
            size: bytes.len(),
            limit: MAX_DESCRIPTOR_BYTES,
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|e| DescriptorError::NotUtf8 {
        offset: e.valid_up_to(),
    })?;
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    if is_blank(text) {
        return Err(DescriptorError::Empty);
    }
    depth::check_nesting(text)?;
    let root: node::Node = serde_yaml_ng::from_str(text).map_err(syntax_error)?;
    check::check(&root, known).map_err(DescriptorError::Invalid)
}

/// True when `text` holds nothing but whitespace, comments and document markers.
fn is_blank(text: &str) -> bool {
    text.lines().all(|line| {
        let line = line.trim();
        line.is_empty() || line.starts_with('#') || line == "---" || line == "..."
    })
}

fn syntax_error(err: serde_yaml_ng::Error) -> DescriptorError {
    let location = err.location();
    let mut message = err.to_string();
    if let Some(location) = &location {
        // The location is kept in its own fields; drop it from the text so it is not said twice.
        let suffix = format!(" at line {} column {}", location.line(), location.column());
        if let Some(at) = message.find(&suffix) {
            message.replace_range(at..at + suffix.len(), "");
        }
    }
    DescriptorError::Syntax {
        line: location.as_ref().map(|l| l.line()),
        column: location.as_ref().map(|l| l.column()),
        message,
    }
}
