//! `edgectl config …`: shows and changes the config file's contexts; and the connection the
//! remote subcommands use, resolved from flags, environment and the current context.

use super::config::{self, ConfigError, Connection, ContextChange, Loaded, Overrides, Source};
use super::render;
use super::{write_text, ConfigCommand, Output, DEFAULT_SERVER, EXIT_BAD_INPUT, EXIT_FAILURE};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The config file's path: `--config` / `EDGEIO_CONFIG`, else the user's config folder.
fn path(explicit: Option<&Path>) -> Option<PathBuf> {
    let var = |name: &str| std::env::var_os(name).map(PathBuf::from);
    config::config_path(
        explicit,
        var("XDG_CONFIG_HOME").as_deref(),
        var("HOME").as_deref(),
    )
}

/// How to reach the root: each setting from the flags or environment, else the context,
/// else the default.
pub(super) fn connection(
    given: &Overrides,
    explicit: Option<&Path>,
) -> Result<Connection, ConfigError> {
    let loaded = config::load(path(explicit))?;
    config::resolve(given, &loaded, DEFAULT_SERVER)
}

/// Reports a configuration problem on one line: exit 2, or 1 when the system failed.
pub(super) fn fail(err: &mut dyn Write, e: &ConfigError) -> i32 {
    if writeln!(err, "edgectl: {e}").is_err() {
        return EXIT_FAILURE;
    }
    if e.system {
        EXIT_FAILURE
    } else {
        EXIT_BAD_INPUT
    }
}

/// Runs a `config` subcommand.
pub(super) fn run(
    command: ConfigCommand,
    given: &Overrides,
    explicit: Option<&Path>,
    output: Option<Output>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let loaded = match config::load(path(explicit)) {
        Ok(loaded) => loaded,
        Err(e) => return fail(err, &e),
    };
    match run_loaded(command, given, loaded, output) {
        Ok(text) => write_text(out, err, &text),
        Err(e) => fail(err, &e),
    }
}

/// Carries out `command` on the file read; answers what to print.
fn run_loaded(
    command: ConfigCommand,
    given: &Overrides,
    mut loaded: Loaded,
    output: Option<Output>,
) -> Result<String, ConfigError> {
    match command {
        ConfigCommand::View => {
            let shown = config::masked(&loaded.config);
            let text = match output {
                Some(Output::Json) => serde_json::to_string_pretty(&shown)
                    .map(|t| t + "\n")
                    .map_err(|e| e.to_string()),
                _ => serde_yaml_ng::to_string(&shown).map_err(|e| e.to_string()),
            };
            text.map_err(|e| ConfigError {
                file: None,
                field: "config view".into(),
                value: None,
                rule: format!("cannot print the config: {e}"),
                system: true,
            })
        }
        ConfigCommand::GetContexts => Ok(render::contexts_table(&loaded.config)),
        ConfigCommand::UseContext { name } => {
            loaded.context("use-context", &name)?;
            loaded.config.current_context = Some(name.clone());
            config::save(loaded.require_path()?, &loaded.config)?;
            Ok(format!("switched to context {name:?}\n"))
        }
        ConfigCommand::DeleteContext { name } => {
            loaded.context("delete-context", &name)?;
            loaded.config.contexts.remove(&name);
            let was_current = loaded.config.current_context.as_deref() == Some(name.as_str());
            if was_current {
                loaded.config.current_context = None;
            }
            config::save(loaded.require_path()?, &loaded.config)?;
            Ok(if was_current {
                format!("deleted context {name:?}; there is no current context now\n")
            } else {
                format!("deleted context {name:?}\n")
            })
        }
        ConfigCommand::SetContext(args) => {
            let change = change_of(given, args.embed_ca);
            let path = loaded.require_path()?.to_path_buf();
            let current = config::set_context(&mut loaded.config, &args.name, &change)?;
            config::save(&path, &loaded.config)?;
            let name = args.name;
            Ok(if current {
                format!(
                    "context {name:?} set in {}; it is the current context\n",
                    path.display()
                )
            } else {
                format!("context {name:?} set in {}\n", path.display())
            })
        }
    }
}

/// The settings `set-context` writes: only those given on its command line, never what the
/// environment holds (an `EDGEIO_TOKEN` of the shell is not written to the file).
fn change_of(given: &Overrides, embed_ca: bool) -> ContextChange {
    let flag = |g: &Option<config::Given>| match g {
        Some(g) if matches!(g.source, Source::Flag(_)) => Some(g.value.clone()),
        _ => None,
    };
    ContextChange {
        server: flag(&given.server),
        token: flag(&given.token),
        token_file: flag(&given.token_file).map(PathBuf::from),
        ca: flag(&given.ca).map(PathBuf::from),
        embed_ca,
    }
}
