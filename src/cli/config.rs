//! `edgectl`'s config file: named contexts (a server, the CA that vouches for it, a token),
//! one of them current, as kubectl's kubeconfig.
//!
//! The file is `EDGEIO_CONFIG` (or `--config FILE`), else `$XDG_CONFIG_HOME/edgeio/config.yaml`,
//! else `$HOME/.config/edgeio/config.yaml`. A missing file is an empty one.
//!
//! ```yaml
//! current-context: prod
//! contexts:
//!   prod:
//!     server: https://root.example.net:7070
//!     ca: /etc/edgeio/ca.crt            # or ca-data: the PEM itself
//!     token: edgeioapi1.abcd1234.SECRET # or token-file: /path/to/admin.token
//!   lab:
//!     server: http://10.0.0.5:7070
//! ```
//!
//! Relative `ca` and `token-file` paths are read from the config file's folder. Each setting
//! is taken from the first of: the flag (`--server`, `--token` or `--token-file`, `--ca`),
//! its environment variable (`EDGEIO_SERVER`, `EDGEIO_TOKEN` or `EDGEIO_TOKEN_FILE`,
//! `EDGEIO_CA`), the context (`--context` / `EDGEIO_CONTEXT`, else `current-context`), the
//! default (`http://127.0.0.1:7070`, no token, no CA). `edgectl config …` writes the file
//! with mode 0600 (it holds tokens) and does not keep comments.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// The environment variable naming the config file.
pub(crate) const CONFIG_ENV: &str = "EDGEIO_CONFIG";
/// Largest config file read (contexts are a few hundred bytes each).
const MAX_CONFIG_BYTES: u64 = 1 << 20;
/// Largest token or CA file read.
const MAX_SECRET_FILE_BYTES: u64 = 1 << 20;
/// What the PEM of a CA certificate holds.
const PEM_CERTIFICATE: &str = "-----BEGIN CERTIFICATE-----";

/// The config file's contents.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct ConfigFile {
    /// The context used when `--context` / `EDGEIO_CONTEXT` names none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) current_context: Option<String>,
    /// The contexts by name.
    #[serde(default)]
    pub(crate) contexts: BTreeMap<String, Context>,
}

/// One context: where the root is and how to talk to it. Every field is optional.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub(crate) struct Context {
    /// The root's REST API, `http[s]://HOST:PORT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) server: Option<String>,
    /// A file holding the deployment's CA certificate (PEM), for `https`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ca: Option<PathBuf>,
    /// The CA certificate itself (PEM), instead of `ca`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ca_data: Option<String>,
    /// The API token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) token: Option<String>,
    /// A file holding the API token (one line), instead of `token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) token_file: Option<PathBuf>,
}

impl fmt::Debug for Context {
    // the token never reaches a log
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("server", &self.server)
            .field("ca", &self.ca)
            .field("ca_data", &self.ca_data.as_ref().map(String::len))
            .field("token", &self.token.as_deref().map(mask_token))
            .field("token_file", &self.token_file)
            .finish()
    }
}

/// A problem with the configuration: the file (when it is the config file's), the field,
/// the value when it is no secret, and the rule. Displays as one line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConfigError {
    /// The config file, when the problem is in it.
    pub(crate) file: Option<PathBuf>,
    /// The field, flag or variable: `contexts.prod.ca`, `--ca`, `EDGEIO_TOKEN_FILE`.
    pub(crate) field: String,
    /// The value found, when it is no secret.
    pub(crate) value: Option<String>,
    /// The rule it breaks, or what went wrong.
    pub(crate) rule: String,
    /// Whether the system failed (a file that cannot be written) rather than the input.
    pub(crate) system: bool,
}

impl ConfigError {
    fn new(field: impl Into<String>, value: Option<String>, rule: impl Into<String>) -> Self {
        ConfigError {
            file: None,
            field: field.into(),
            value,
            rule: rule.into(),
            system: false,
        }
    }

    fn in_file(mut self, file: &Path) -> Self {
        self.file = Some(file.to_path_buf());
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "config file {}: ", file.display())?;
        }
        f.write_str(&self.field)?;
        if let Some(value) = &self.value {
            write!(f, " {value:?}")?;
        }
        write!(f, ": {}", self.rule)
    }
}

/// Where the config file is: `explicit` (`--config` / `EDGEIO_CONFIG`), else under
/// `XDG_CONFIG_HOME` (when set to an absolute path), else under `HOME`; `None` when there is
/// no home either.
pub(crate) fn config_path(
    explicit: Option<&Path>,
    xdg_config_home: Option<&Path>,
    home: Option<&Path>,
) -> Option<PathBuf> {
    if let Some(path) = explicit.filter(|p| !p.as_os_str().is_empty()) {
        return Some(path.to_path_buf());
    }
    let folder = match xdg_config_home.filter(|p| p.is_absolute()) {
        Some(xdg) => xdg.to_path_buf(),
        None => home.filter(|p| !p.as_os_str().is_empty())?.join(".config"),
    };
    Some(folder.join("edgeio").join("config.yaml"))
}

/// The config file as read: where it is (none without a home) and what it holds.
#[derive(Debug, Clone, Default)]
pub(crate) struct Loaded {
    /// Its path.
    pub(crate) path: Option<PathBuf>,
    /// Its contents (empty when the file does not exist).
    pub(crate) config: ConfigFile,
}

impl Loaded {
    /// The path, or the error saying there is none.
    pub(crate) fn require_path(&self) -> Result<&Path, ConfigError> {
        self.path.as_deref().ok_or_else(|| {
            ConfigError::new(
                CONFIG_ENV,
                None,
                "there is no config folder (neither XDG_CONFIG_HOME nor HOME is set): \
                 name the file with --config FILE or EDGEIO_CONFIG",
            )
        })
    }

    /// The context called `name`, or an error naming `field` and the contexts there are.
    pub(crate) fn context(&self, field: &str, name: &str) -> Result<&Context, ConfigError> {
        self.config.contexts.get(name).ok_or_else(|| {
            let known: Vec<&str> = self.config.contexts.keys().map(String::as_str).collect();
            let known = if known.is_empty() {
                "the file has no contexts; add one with edgectl config set-context NAME --server URL"
                    .to_string()
            } else {
                format!("no such context (contexts: {})", known.join(", "))
            };
            let error = ConfigError::new(field, Some(name.to_string()), known);
            match &self.path {
                Some(path) => error.in_file(path),
                None => error,
            }
        })
    }
}

/// Reads the config file at `path`; a missing file (or no path) is an empty config.
pub(crate) fn load(path: Option<PathBuf>) -> Result<Loaded, ConfigError> {
    let Some(path) = path else {
        return Ok(Loaded::default());
    };
    let bytes = match read_capped(&path, MAX_CONFIG_BYTES) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Ok(Loaded {
                path: Some(path),
                config: ConfigFile::default(),
            })
        }
        Err(e) => {
            return Err(
                ConfigError::new("(file)", None, format!("cannot read: {}", reason(&e)))
                    .in_file(&path),
            )
        }
    };
    let config = parse(&bytes).map_err(|e| e.in_file(&path))?;
    Ok(Loaded {
        path: Some(path),
        config,
    })
}

/// Parses the config file's bytes and checks each context.
pub(crate) fn parse(bytes: &[u8]) -> Result<ConfigFile, ConfigError> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| ConfigError::new("(file)", None, "it is not UTF-8 text"))?;
    let config: ConfigFile = if text.trim().is_empty() {
        ConfigFile::default()
    } else {
        serde_yaml_ng::from_str(text).map_err(|e| yaml_error(&e))?
    };
    for (name, context) in &config.contexts {
        check_context(name, context)?;
    }
    Ok(config)
}

/// serde_yaml_ng's message starts with the path to the field (`contexts.prod: unknown field
/// …`); it becomes the field, the rest the rule.
fn yaml_error(e: &serde_yaml_ng::Error) -> ConfigError {
    let text = e.to_string();
    // the location is kept in the rule ("at line 3 column 5")
    match text.split_once(": ") {
        Some((field, rule))
            if !field.contains(' ') && !field.is_empty() && field != "invalid type" =>
        {
            ConfigError::new(field, None, rule)
        }
        _ => ConfigError::new(
            "(file)",
            None,
            format!("not valid YAML for edgectl: {text}"),
        ),
    }
}

fn check_context(name: &str, context: &Context) -> Result<(), ConfigError> {
    let field = |f: &str| format!("contexts.{name}.{f}");
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ConfigError::new(
            "contexts",
            Some(name.to_string()),
            "a context's name must be non-empty and hold no spaces",
        ));
    }
    if let Some(server) = &context.server {
        check_server(server)
            .map_err(|rule| ConfigError::new(field("server"), Some(server.clone()), rule))?;
    }
    if context.ca.is_some() && context.ca_data.is_some() {
        return Err(ConfigError::new(
            format!("contexts.{name}"),
            None,
            "ca and ca-data both given: keep one",
        ));
    }
    if context.token.is_some() && context.token_file.is_some() {
        return Err(ConfigError::new(
            format!("contexts.{name}"),
            None,
            "token and token-file both given: keep one",
        ));
    }
    if let Some(token) = &context.token {
        check_token(token).map_err(|rule| ConfigError::new(field("token"), None, rule))?;
    }
    if let Some(pem) = &context.ca_data {
        if !pem.contains(PEM_CERTIFICATE) {
            return Err(ConfigError::new(
                field("ca-data"),
                None,
                format!("it must hold a PEM certificate ({PEM_CERTIFICATE} …)"),
            ));
        }
    }
    Ok(())
}

/// A server URL must be `http://` or `https://` (the client checks the rest).
pub(crate) fn check_server(server: &str) -> Result<(), String> {
    if server.starts_with("http://") || server.starts_with("https://") {
        Ok(())
    } else {
        Err("the server must be http://HOST:PORT or https://HOST:PORT".to_string())
    }
}

/// A token is one word of printable ASCII (the rule only: the token is never repeated).
pub(crate) fn check_token(token: &str) -> Result<(), String> {
    if token.is_empty() {
        return Err("the token is empty".to_string());
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(
            "a token is one word of printable ASCII (no spaces or line breaks)".to_string(),
        );
    }
    Ok(())
}

/// `edgeioapi1.abcd1234.SECRET` → `edgeioapi1.abcd1234.****`: the prefix and id stay, the
/// secret goes; anything else is `****`.
pub(crate) fn mask_token(token: &str) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    match parts.as_slice() {
        [prefix, id, _, ..]
            if !prefix.is_empty()
                && !id.is_empty()
                && prefix.len() <= 16
                && id.len() <= 16
                && format!("{prefix}{id}")
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric()) =>
        {
            format!("{prefix}.{id}.****")
        }
        _ => "****".to_string(),
    }
}

/// The config with every token masked, as `config view` shows it.
pub(crate) fn masked(config: &ConfigFile) -> ConfigFile {
    let mut shown = config.clone();
    for context in shown.contexts.values_mut() {
        if let Some(token) = &mut context.token {
            *token = mask_token(token);
        }
    }
    shown
}

/// Writes `config` to `path` with mode 0600: to a new file beside it, then renamed over it,
/// so a reader never sees half a file. Missing folders are made (0700).
pub(crate) fn save(path: &Path, config: &ConfigFile) -> Result<(), ConfigError> {
    let failed = |what: &str, e: &io::Error| ConfigError {
        file: Some(path.to_path_buf()),
        field: "(file)".to_string(),
        value: None,
        rule: format!("cannot {what}: {}", reason(e)),
        system: true,
    };
    let yaml = serde_yaml_ng::to_string(config).map_err(|e| ConfigError {
        file: Some(path.to_path_buf()),
        field: "(file)".to_string(),
        value: None,
        rule: format!("cannot write YAML: {e}"),
        system: true,
    })?;
    let text = format!(
        "# edgectl's contexts; written by `edgectl config` (comments are not kept)\n{yaml}"
    );
    if let Some(folder) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(folder)
            .map_err(|e| failed("make its folder", &e))?;
    }
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}.tmp", std::process::id()));
    let temp = path.with_file_name(name);
    let _ = std::fs::remove_file(&temp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let written = options.open(&temp).and_then(|mut file| {
        file.write_all(text.as_bytes())?;
        file.sync_all()
    });
    if let Err(e) = written.and_then(|()| std::fs::rename(&temp, path)) {
        let _ = std::fs::remove_file(&temp);
        return Err(failed("write", &e));
    }
    Ok(())
}

/// Where a setting came from, as errors name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    /// A flag on the command line, e.g. `--token`.
    Flag(&'static str),
    /// An environment variable, e.g. `EDGEIO_TOKEN`.
    Env(&'static str),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag(name) | Source::Env(name) => f.write_str(name),
        }
    }
}

/// A setting given as a flag or through the environment.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Given {
    /// The value.
    pub(crate) value: String,
    /// Where it came from.
    pub(crate) source: Source,
}

impl fmt::Debug for Given {
    // a given token's value never reaches a log
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Given")
            .field("source", &self.source)
            .finish_non_exhaustive()
    }
}

/// What the flags and the environment say (each already the flag's, else the variable's).
#[derive(Debug, Clone, Default)]
pub(crate) struct Overrides {
    /// `--server` / `EDGEIO_SERVER`.
    pub(crate) server: Option<Given>,
    /// `--token` / `EDGEIO_TOKEN`.
    pub(crate) token: Option<Given>,
    /// `--token-file` / `EDGEIO_TOKEN_FILE`.
    pub(crate) token_file: Option<Given>,
    /// `--ca` / `EDGEIO_CA`.
    pub(crate) ca: Option<Given>,
    /// `--context` / `EDGEIO_CONTEXT`.
    pub(crate) context: Option<Given>,
}

/// How to reach the root, every setting resolved.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Connection {
    /// The root's REST API.
    pub(crate) server: String,
    /// The bearer token.
    pub(crate) token: Option<String>,
    /// Where the token came from (`--token`, `context "prod"` …), for errors.
    pub(crate) token_origin: Option<String>,
    /// The CA's PEM.
    pub(crate) ca_pem: Option<Vec<u8>>,
    /// Where the CA came from (a file name, `context "prod"`), for errors.
    pub(crate) ca_origin: Option<String>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("server", &self.server)
            .field("token", &self.token.as_deref().map(mask_token))
            .field("token_origin", &self.token_origin)
            .field("ca_pem", &self.ca_pem.as_ref().map(Vec::len))
            .field("ca_origin", &self.ca_origin)
            .finish()
    }
}

/// Resolves each setting from the flags and environment (`given`), else the context, else
/// the default (`default_server`, no token, no CA); reads the token and CA files named.
pub(crate) fn resolve(
    given: &Overrides,
    loaded: &Loaded,
    default_server: &str,
) -> Result<Connection, ConfigError> {
    let (context_name, context) = match &given.context {
        Some(name) => (
            Some(name.value.clone()),
            Some(loaded.context(&name.source.to_string(), &name.value)?),
        ),
        None => match &loaded.config.current_context {
            Some(name) => (
                Some(name.clone()),
                Some(loaded.context("current-context", name)?),
            ),
            None => (None, None),
        },
    };
    // an error of a file the context names, under the context's field in the config file
    let in_context = |field: &str| {
        let field = format!(
            "contexts.{}.{field}",
            context_name.as_deref().unwrap_or_default()
        );
        let file = loaded.path.clone();
        move |e: ConfigError| ConfigError { file, field, ..e }
    };
    // the folder relative paths in the file are read from
    let folder = loaded
        .path
        .as_deref()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let context_label = || format!("context {:?}", context_name.as_deref().unwrap_or_default());

    let server = match (&given.server, context.and_then(|c| c.server.clone())) {
        (Some(given), _) => {
            check_server(&given.value).map_err(|rule| {
                ConfigError::new(given.source.to_string(), Some(given.value.clone()), rule)
            })?;
            given.value.clone()
        }
        (None, Some(server)) => server,
        (None, None) => default_server.to_string(),
    };

    let (token, token_origin) = match token_of(given)? {
        Some((token, origin)) => (Some(token), Some(origin)),
        None => match context {
            Some(Context {
                token: Some(token), ..
            }) => (Some(token.clone()), Some(context_label())),
            Some(Context {
                token_file: Some(file),
                ..
            }) => {
                let path = folder.join(file);
                let token = read_token_file(&path).map_err(in_context("token-file"))?;
                (
                    Some(token),
                    Some(format!(
                        "{} (token-file {})",
                        context_label(),
                        path.display()
                    )),
                )
            }
            _ => (None, None),
        },
    };

    let (ca_pem, ca_origin) = match &given.ca {
        Some(given) => {
            let path = PathBuf::from(&given.value);
            let pem = read_ca_file(&path).map_err(|e| ConfigError {
                field: given.source.to_string(),
                ..e
            })?;
            (Some(pem), Some(path.display().to_string()))
        }
        None => match context {
            Some(Context { ca: Some(file), .. }) => {
                let path = folder.join(file);
                let pem = read_ca_file(&path).map_err(in_context("ca"))?;
                (Some(pem), Some(path.display().to_string()))
            }
            Some(Context {
                ca_data: Some(pem), ..
            }) => (
                Some(pem.clone().into_bytes()),
                Some(format!("{} (ca-data)", context_label())),
            ),
            _ => (None, None),
        },
    };

    Ok(Connection {
        server,
        token,
        token_origin,
        ca_pem,
        ca_origin,
    })
}

/// The token given by flag or environment: a flag beats a variable; a token and a token
/// file from the same place are refused.
/// Answers the token and where it came from.
fn token_of(given: &Overrides) -> Result<Option<(String, String)>, ConfigError> {
    let is_flag = |g: &Option<Given>| {
        matches!(
            g,
            Some(Given {
                source: Source::Flag(_),
                ..
            })
        )
    };
    let pick = match (&given.token, &given.token_file) {
        (Some(token), Some(file)) => {
            if is_flag(&given.token) == is_flag(&given.token_file) {
                return Err(ConfigError::new(
                    format!("{} and {}", token.source, file.source),
                    None,
                    "both name a token: give one",
                ));
            }
            if is_flag(&given.token) {
                (Some(token), None)
            } else {
                (None, Some(file))
            }
        }
        (token, file) => (token.as_ref(), file.as_ref()),
    };
    match pick {
        (Some(token), _) => {
            let value = token.value.trim();
            check_token(value)
                .map_err(|rule| ConfigError::new(token.source.to_string(), None, rule))?;
            Ok(Some((value.to_string(), token.source.to_string())))
        }
        (None, Some(file)) => {
            let path = PathBuf::from(&file.value);
            let token = read_token_file(&path).map_err(|e| ConfigError {
                field: file.source.to_string(),
                ..e
            })?;
            Ok(Some((token, format!("{} {}", file.source, path.display()))))
        }
        (None, None) => Ok(None),
    }
}

/// Reads a token file (`DATA/admin.token`: one line); the error names the file, never the
/// token.
pub(crate) fn read_token_file(path: &Path) -> Result<String, ConfigError> {
    let bytes = read_capped(path, MAX_SECRET_FILE_BYTES).map_err(|e| {
        ConfigError::new(
            "token-file",
            Some(path.display().to_string()),
            format!("cannot read: {}", reason(&e)),
        )
    })?;
    let text = String::from_utf8(bytes).unwrap_or_default();
    let token = text.trim();
    check_token(token).map_err(|rule| {
        ConfigError::new(
            "token-file",
            Some(path.display().to_string()),
            format!("{rule}; the file must hold one token on one line"),
        )
    })?;
    Ok(token.to_string())
}

/// Reads a CA file: it must exist and hold a PEM certificate.
pub(crate) fn read_ca_file(path: &Path) -> Result<Vec<u8>, ConfigError> {
    let bad = |rule: String| ConfigError::new("ca", Some(path.display().to_string()), rule);
    let bytes = read_capped(path, MAX_SECRET_FILE_BYTES)
        .map_err(|e| bad(format!("cannot read the CA file: {}", reason(&e))))?;
    if !String::from_utf8_lossy(&bytes).contains(PEM_CERTIFICATE) {
        return Err(bad(format!(
            "the CA file must hold a PEM certificate ({PEM_CERTIFICATE} …), as DATA/ca.crt of the root does"
        )));
    }
    Ok(bytes)
}

/// Reads at most `cap` bytes; a larger file is an error.
fn read_capped(path: &Path, cap: u64) -> io::Result<Vec<u8>> {
    let file = std::fs::File::open(path)?;
    if file.metadata()?.is_dir() {
        return Err(io::Error::new(
            io::ErrorKind::IsADirectory,
            "is a directory",
        ));
    }
    let mut bytes = Vec::new();
    file.take(cap + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {cap} bytes"),
        ));
    }
    Ok(bytes)
}

fn reason(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "no such file".to_string(),
        io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        io::ErrorKind::IsADirectory => "is a directory".to_string(),
        _ => e.to_string(),
    }
}

/// What `config set-context` changes: the settings given on its command line.
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct ContextChange {
    /// `--server`.
    pub(crate) server: Option<String>,
    /// `--token`.
    pub(crate) token: Option<String>,
    /// `--token-file`, as given.
    pub(crate) token_file: Option<PathBuf>,
    /// `--ca`, as given.
    pub(crate) ca: Option<PathBuf>,
    /// `--embed-ca`: keep the CA's PEM in the file rather than its path.
    pub(crate) embed_ca: bool,
}

impl fmt::Debug for ContextChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContextChange")
            .field("server", &self.server)
            .field("token", &self.token.as_deref().map(mask_token))
            .field("token_file", &self.token_file)
            .field("ca", &self.ca)
            .field("embed_ca", &self.embed_ca)
            .finish()
    }
}

/// Adds context `name` or changes the settings `change` gives (a token replaces a token
/// file and the other way round; a CA file replaces inline PEM and the other way round).
/// The first context becomes the current one. Files named are checked now and kept as
/// absolute paths. Answers whether `name` is now the current context.
pub(crate) fn set_context(
    config: &mut ConfigFile,
    name: &str,
    change: &ContextChange,
) -> Result<bool, ConfigError> {
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ConfigError::new(
            "NAME",
            Some(name.to_string()),
            "a context's name must be non-empty and hold no spaces",
        ));
    }
    let exists = config.contexts.contains_key(name);
    if !exists && change.server.is_none() {
        return Err(ConfigError::new(
            "--server",
            None,
            format!("the new context {name:?} needs a server: pass --server URL"),
        ));
    }
    if change.embed_ca && change.ca.is_none() {
        return Err(ConfigError::new(
            "--embed-ca",
            None,
            "it embeds the CA given with --ca FILE, and none was given",
        ));
    }
    if change.token.is_some() && change.token_file.is_some() {
        return Err(ConfigError::new(
            "--token and --token-file",
            None,
            "both name a token: give one",
        ));
    }
    let mut context = config.contexts.get(name).cloned().unwrap_or_default();
    if let Some(server) = &change.server {
        check_server(server)
            .map_err(|rule| ConfigError::new("--server", Some(server.clone()), rule))?;
        context.server = Some(server.clone());
    }
    if let Some(token) = &change.token {
        let token = token.trim();
        check_token(token).map_err(|rule| ConfigError::new("--token", None, rule))?;
        context.token = Some(token.to_string());
        context.token_file = None;
    }
    if let Some(file) = &change.token_file {
        let path = absolute(file, "--token-file")?;
        read_token_file(&path).map_err(|e| ConfigError {
            field: "--token-file".into(),
            ..e
        })?;
        context.token_file = Some(path);
        context.token = None;
    }
    if let Some(file) = &change.ca {
        let path = absolute(file, "--ca")?;
        let pem = read_ca_file(&path).map_err(|e| ConfigError {
            field: "--ca".into(),
            ..e
        })?;
        if change.embed_ca {
            let pem = String::from_utf8(pem).map_err(|_| {
                ConfigError::new(
                    "--ca",
                    Some(path.display().to_string()),
                    "the CA file is not UTF-8 text",
                )
            })?;
            context.ca_data = Some(pem);
            context.ca = None;
        } else {
            context.ca = Some(path);
            context.ca_data = None;
        }
    }
    config.contexts.insert(name.to_string(), context);
    if config.current_context.is_none() {
        config.current_context = Some(name.to_string());
    }
    Ok(config.current_context.as_deref() == Some(name))
}

fn absolute(file: &Path, field: &str) -> Result<PathBuf, ConfigError> {
    std::path::absolute(file).map_err(|e| {
        ConfigError::new(
            field,
            Some(file.display().to_string()),
            format!("cannot make the path absolute: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    const TOKEN: &str = "edgeioapi1.abcd1234.secretsecretsecretsecretsecret12";

    fn flag(name: &'static str, value: &str) -> Option<Given> {
        Some(Given {
            value: value.to_string(),
            source: Source::Flag(name),
        })
    }

    fn env(name: &'static str, value: &str) -> Option<Given> {
        Some(Given {
            value: value.to_string(),
            source: Source::Env(name),
        })
    }

    /// A config file in a fresh folder, with a CA file and a token file beside it.
    fn folder_with(yaml: &str) -> (tempfile::TempDir, Loaded) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.crt"), PEM).unwrap();
        std::fs::write(dir.path().join("admin.token"), format!("{TOKEN}\n")).unwrap();
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, yaml).unwrap();
        let loaded = load(Some(path)).unwrap();
        (dir, loaded)
    }

    const TWO_CONTEXTS: &str = "current-context: prod
contexts:
  prod:
    server: https://root.example:7070
    ca: ca.crt
    token-file: admin.token
  lab:
    server: http://10.0.0.5:7070
    token: edgeioapi1.labtoken.secret
";

    #[test]
    fn the_config_file_is_explicit_else_under_xdg_else_under_home() {
        let (explicit, xdg, home) = (Path::new("/e/c.yaml"), Path::new("/x"), Path::new("/h"));
        assert_eq!(
            config_path(Some(explicit), Some(xdg), Some(home)),
            Some(PathBuf::from("/e/c.yaml"))
        );
        assert_eq!(
            config_path(None, Some(xdg), Some(home)),
            Some(PathBuf::from("/x/edgeio/config.yaml"))
        );
        // a relative XDG_CONFIG_HOME is ignored, as the XDG spec says
        assert_eq!(
            config_path(Some(Path::new("")), Some(Path::new("rel")), Some(home)),
            Some(PathBuf::from("/h/.config/edgeio/config.yaml"))
        );
        assert_eq!(config_path(None, None, None), None);
    }

    #[test]
    fn a_missing_file_is_an_empty_config_and_defaults_apply() {
        let dir = tempfile::tempdir().unwrap();
        let loaded = load(Some(dir.path().join("none.yaml"))).unwrap();
        assert_eq!(loaded.config, ConfigFile::default());
        let connection = resolve(&Overrides::default(), &loaded, "http://127.0.0.1:7070").unwrap();
        assert_eq!(connection.server, "http://127.0.0.1:7070");
        assert_eq!((connection.token, connection.ca_pem), (None, None));
    }

    #[test]
    fn the_current_context_gives_what_flags_and_environment_do_not() {
        let (dir, loaded) = folder_with(TWO_CONTEXTS);
        let connection = resolve(&Overrides::default(), &loaded, "http://default").unwrap();
        assert_eq!(connection.server, "https://root.example:7070");
        // relative paths are read from the config file's folder
        assert_eq!(connection.token.as_deref(), Some(TOKEN));
        assert_eq!(connection.ca_pem.as_deref(), Some(PEM.as_bytes()));
        let ca_path = dir.path().join("ca.crt").display().to_string();
        assert_eq!(connection.ca_origin.as_deref(), Some(ca_path.as_str()));
        assert!(connection
            .token_origin
            .as_deref()
            .unwrap()
            .starts_with("context \"prod\" (token-file "));

        // flags and environment beat the context, field by field
        let other_ca = dir.path().join("other.crt");
        std::fs::write(&other_ca, PEM).unwrap();
        let given = Overrides {
            server: env("EDGEIO_SERVER", "https://other:7070"),
            token: flag("--token", "edgeioapi1.flagflag.secret"),
            ca: env("EDGEIO_CA", other_ca.to_str().unwrap()),
            ..Overrides::default()
        };
        let connection = resolve(&given, &loaded, "http://default").unwrap();
        assert_eq!(connection.server, "https://other:7070");
        assert_eq!(
            connection.token.as_deref(),
            Some("edgeioapi1.flagflag.secret")
        );
        assert_eq!(connection.token_origin.as_deref(), Some("--token"));
        assert_eq!(
            connection.ca_origin.as_deref(),
            Some(other_ca.to_str().unwrap())
        );

        // --context picks another context
        let given = Overrides {
            context: flag("--context", "lab"),
            ..Overrides::default()
        };
        let connection = resolve(&given, &loaded, "http://default").unwrap();
        assert_eq!(connection.server, "http://10.0.0.5:7070");
        assert_eq!(
            connection.token.as_deref(),
            Some("edgeioapi1.labtoken.secret")
        );
        assert_eq!(connection.token_origin.as_deref(), Some("context \"lab\""));
        assert_eq!(connection.ca_pem, None);
    }

    #[test]
    fn a_token_flag_beats_a_token_file_variable_and_two_of_one_place_are_refused() {
        let (dir, loaded) = folder_with("");
        let file = dir.path().join("admin.token");
        let given = Overrides {
            token: flag("--token", "edgeioapi1.flagflag.secret"),
            token_file: env("EDGEIO_TOKEN_FILE", file.to_str().unwrap()),
            ..Overrides::default()
        };
        let connection = resolve(&given, &loaded, "http://d").unwrap();
        assert_eq!(
            connection.token.as_deref(),
            Some("edgeioapi1.flagflag.secret")
        );

        let given = Overrides {
            token: env("EDGEIO_TOKEN", "edgeioapi1.envenv00.secret"),
            token_file: flag("--token-file", file.to_str().unwrap()),
            ..Overrides::default()
        };
        let connection = resolve(&given, &loaded, "http://d").unwrap();
        assert_eq!(connection.token.as_deref(), Some(TOKEN));
        assert!(connection
            .token_origin
            .unwrap()
            .starts_with("--token-file "));

        let given = Overrides {
            token: flag("--token", "edgeioapi1.flagflag.secret"),
            token_file: flag("--token-file", file.to_str().unwrap()),
            ..Overrides::default()
        };
        let e = resolve(&given, &loaded, "http://d").unwrap_err();
        assert_eq!(
            e.to_string(),
            "--token and --token-file: both name a token: give one"
        );
    }

    #[test]
    fn unknown_contexts_are_named_with_the_file_and_the_contexts_there_are() {
        let (dir, loaded) = folder_with(TWO_CONTEXTS);
        let file = dir.path().join("config.yaml");
        let given = Overrides {
            context: env("EDGEIO_CONTEXT", "staging"),
            ..Overrides::default()
        };
        let e = resolve(&given, &loaded, "http://d").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "config file {}: EDGEIO_CONTEXT \"staging\": no such context (contexts: lab, prod)",
                file.display()
            )
        );
        assert!(!e.system);

        let (dir, loaded) = folder_with("current-context: gone\n");
        let e = resolve(&Overrides::default(), &loaded, "http://d").unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with(&format!(
                "config file {}: current-context \"gone\": the file has no contexts",
                dir.path().join("config.yaml").display()
            )),
            "{text}"
        );
    }

    #[test]
    fn a_context_naming_a_missing_ca_file_is_one_line_with_file_field_and_rule() {
        let (dir, loaded) = folder_with(
            "current-context: a\ncontexts:\n  a:\n    server: https://r:1\n    ca: /nowhere/ca.crt\n",
        );
        let e = resolve(&Overrides::default(), &loaded, "http://d").unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "config file {}: contexts.a.ca \"/nowhere/ca.crt\": cannot read the CA file: no such file",
                dir.path().join("config.yaml").display()
            )
        );
        // a CA flag naming a file that holds no certificate
        let given = Overrides {
            ca: flag("--ca", dir.path().join("admin.token").to_str().unwrap()),
            ..Overrides::default()
        };
        let e = resolve(&given, &loaded, "http://d").unwrap_err();
        let text = e.to_string();
        assert!(text.starts_with("--ca \""), "{text}");
        assert!(text.contains("must hold a PEM certificate"), "{text}");
        assert!(!text.contains("secret"), "{text}");
    }

    #[test]
    fn a_malformed_file_names_the_file_and_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.yaml");
        for (yaml, expected) in [
            (
                "contexts:\n  a:\n    tokn: x\n",
                "contexts.a: unknown field `tokn`",
            ),
            ("contexts: [1, 2]\n", "contexts: invalid type: sequence"),
            (
                "current-context: \"open\n",
                "(file): not valid YAML for edgectl: found unexpected end of stream",
            ),
            (
                "contexts:\n  a:\n    server: root:7070\n",
                "contexts.a.server \"root:7070\": the server must be http://HOST:PORT or https://HOST:PORT",
            ),
            (
                "contexts:\n  a:\n    token: edgeioapi1.abcd1234.secret\n    token-file: t\n",
                "contexts.a: token and token-file both given: keep one",
            ),
            (
                "contexts:\n  a:\n    token: \"edgeioapi1.abcd1234.sec ret\"\n",
                "contexts.a.token: a token is one word of printable ASCII",
            ),
        ] {
            std::fs::write(&path, yaml).unwrap();
            let text = load(Some(path.clone())).unwrap_err().to_string();
            let prefix = format!("config file {}: {expected}", path.display());
            assert!(text.starts_with(&prefix), "{yaml:?}\n{text}\n{prefix}");
            assert!(!text.contains("sec ret") && !text.contains('\n'), "{text}");
        }
    }

    #[test]
    fn tokens_are_masked_to_prefix_and_id() {
        assert_eq!(mask_token(TOKEN), "edgeioapi1.abcd1234.****");
        assert_eq!(
            mask_token("edgeio1.abcd.secret.cahash"),
            "edgeio1.abcd.****"
        );
        assert_eq!(mask_token("opaque-secret"), "****");
        assert_eq!(mask_token("a.b"), "****");
        assert_eq!(mask_token("x.y z.s"), "****");

        let (_dir, loaded) = folder_with(TWO_CONTEXTS);
        let shown = serde_yaml_ng::to_string(&masked(&loaded.config)).unwrap();
        assert!(shown.contains("token: edgeioapi1.labtoken.****"), "{shown}");
        assert!(!shown.contains("secret"), "{shown}");
        // nor does Debug show a token
        let context = &loaded.config.contexts["lab"];
        assert!(!format!("{context:?}").contains("secret"));
        let connection = resolve(&Overrides::default(), &loaded, "http://d").unwrap();
        assert!(!format!("{connection:?}").contains("secret"));
        let given = flag("--token", TOKEN);
        assert!(!format!("{given:?}").contains("secret"));
    }

    #[cfg(unix)]
    #[test]
    fn the_file_is_written_0600_in_a_0700_folder_and_reads_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new").join("edgeio").join("config.yaml");
        let mut config = ConfigFile::default();
        let change = ContextChange {
            server: Some("http://r:7070".into()),
            token: Some(TOKEN.into()),
            ..ContextChange::default()
        };
        assert!(set_context(&mut config, "r", &change).unwrap());
        save(&path, &config).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
        assert_eq!(load(Some(path.clone())).unwrap().config, config);

        // a file someone made readable to all is 0600 again once edgectl writes it
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        save(&path, &config).unwrap();
        assert_eq!(mode(&path), 0o600);
        let leftovers: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(leftovers, vec![std::ffi::OsString::from("config.yaml")]);
    }

    #[test]
    fn set_context_adds_changes_and_checks_what_it_is_given() {
        let (dir, _) = folder_with("");
        let mut config = ConfigFile::default();
        let e = set_context(&mut config, "a", &ContextChange::default()).unwrap_err();
        assert_eq!(
            e.to_string(),
            "--server: the new context \"a\" needs a server: pass --server URL"
        );

        let ca = dir.path().join("ca.crt");
        let change = ContextChange {
            server: Some("https://r:7070".into()),
            token_file: Some(dir.path().join("admin.token")),
            ca: Some(ca.clone()),
            ..ContextChange::default()
        };
        // the first context becomes the current one
        assert!(set_context(&mut config, "a", &change).unwrap());
        let change = ContextChange {
            server: Some("http://b:7070".into()),
            ..ContextChange::default()
        };
        assert!(!set_context(&mut config, "b", &change).unwrap());
        assert_eq!(config.current_context.as_deref(), Some("a"));

        // a token replaces the token file; --embed-ca keeps the PEM instead of the path
        let change = ContextChange {
            token: Some(TOKEN.into()),
            ca: Some(ca.clone()),
            embed_ca: true,
            ..ContextChange::default()
        };
        set_context(&mut config, "a", &change).unwrap();
        let a = &config.contexts["a"];
        assert_eq!(a.server.as_deref(), Some("https://r:7070"));
        assert_eq!(
            (a.token.as_deref(), a.token_file.as_ref()),
            (Some(TOKEN), None)
        );
        assert_eq!((a.ca.as_ref(), a.ca_data.as_deref()), (None, Some(PEM)));

        let change = ContextChange {
            ca: Some(dir.path().join("missing.crt")),
            ..ContextChange::default()
        };
        let text = set_context(&mut config, "a", &change)
            .unwrap_err()
            .to_string();
        assert!(
            text.starts_with("--ca \"")
                && text.ends_with("missing.crt\": cannot read the CA file: no such file"),
            "{text}"
        );
        let change = ContextChange {
            server: Some("root:7070".into()),
            ..ContextChange::default()
        };
        assert!(set_context(&mut config, "a", &change).is_err());
        assert!(set_context(&mut config, "has space", &ContextChange::default()).is_err());
    }
}
