//! `edgectl`, the command-line client, as a function that tests can call.
//!
//! [`run`](crate::cli::run) takes the arguments and the three standard streams and returns
//! the exit code: 0 when all went well, 2 for bad input (a descriptor that does not validate,
//! a file that cannot be read, a usage error, a config file or context that breaks a rule, a
//! server certificate the CA does not vouch for, a request the server refused with 4xx:
//! 401 and 403 included), 1 when the system itself failed (no server at `--server`, a 5xx).
//! Problems go to stderr, one line each; results go to stdout.
//!
//! `validate` and `config` work offline. `deploy`, `get`, `describe`, `logs`, `delete`,
//! `scale`, `migrate` and `token` talk to the root's REST API at `--server` with the bearer
//! token of `--token` (or `--token-file`), trusting the CA of `--ca` for `https://`. Each
//! of these is taken from the flag, else its environment variable (`EDGEIO_SERVER`,
//! `EDGEIO_TOKEN`, `EDGEIO_TOKEN_FILE`, `EDGEIO_CA`), else the current context of the config
//! file (`edgectl config`, described in the README), else the default (`http://127.0.0.1:7070`, no token, no CA).
//!
//! ```
//! let mut out = Vec::new();
//! let mut err = Vec::new();
//! let code = edgeio::cli::run(
//!     ["edgectl", "validate", "examples/jobs/thesis.yaml", "-o", "json"],
//!     &mut std::io::empty(),
//!     &mut out,
//!     &mut err,
//! );
//! assert_eq!(code, 0, "{}", String::from_utf8_lossy(&err));
//! assert!(String::from_utf8_lossy(&out).contains("\"cpu_millis\": 2000"));
//! ```

mod config;
mod contexts;
mod remote;
mod render;
mod tokens;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use config::{Given, Overrides, Source};
use edgeio_core::job::{parse_descriptor, DescriptorError, JobSpec, MAX_DESCRIPTOR_BYTES};
use edgeio_core::model::{check_id, KnownRuntimes};
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// Exit code: everything went well.
pub const EXIT_OK: i32 = 0;
/// Exit code: the system failed (could not write output, no server, a server error).
pub const EXIT_FAILURE: i32 = 1;
/// Exit code: bad input (invalid descriptor, unreadable file, usage error, bad config or
/// context, a CA that does not vouch for the server, a request the server refused: 400,
/// 401, 403, 404, 409, 413, 415).
pub const EXIT_BAD_INPUT: i32 = 2;

/// The root's address when neither `--server` nor `EDGEIO_SERVER` says otherwise (the
/// root's default port).
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:7070";

/// The name stdin is reported under.
const STDIN_NAME: &str = "<stdin>";

#[derive(Debug, Parser)]
#[command(
    name = "edgectl",
    version,
    about = "Command-line client of edgeio, the hierarchical edge orchestrator",
    disable_help_subcommand = true
)]
struct Cli {
    /// Format of results on stdout [default: yaml for validate, table for get, text for
    /// describe]
    #[arg(short, long, value_enum, global = true)]
    output: Option<Output>,

    /// The root orchestrator's REST API [default: the context's, else
    /// http://127.0.0.1:7070]
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "EDGEIO_SERVER",
        hide_env_values = true
    )]
    server: Option<String>,

    /// The API token, sent as `Authorization: Bearer TOKEN` [default: the context's]. A flag
    /// shows in the process list: prefer --token-file, EDGEIO_TOKEN or a context.
    #[arg(
        long,
        global = true,
        value_name = "TOKEN",
        env = "EDGEIO_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,

    /// A file holding the API token on one line, such as the root's DATA/admin.token.
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "EDGEIO_TOKEN_FILE",
        hide_env_values = true
    )]
    token_file: Option<String>,

    /// The deployment's CA certificate (PEM), which an https server's certificate must chain
    /// to, such as the root's DATA/ca.crt [default: the context's]
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "EDGEIO_CA",
        hide_env_values = true
    )]
    ca: Option<String>,

    /// The context of the config file to use [default: its current-context]
    #[arg(
        long,
        global = true,
        value_name = "NAME",
        env = "EDGEIO_CONTEXT",
        hide_env_values = true
    )]
    context: Option<String>,

    /// The config file [default: $XDG_CONFIG_HOME/edgeio/config.yaml, else
    /// $HOME/.config/edgeio/config.yaml]
    #[arg(
        long,
        global = true,
        value_name = "FILE",
        env = "EDGEIO_CONFIG",
        hide_env_values = true
    )]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

// One variant per subcommand; each carries its own arguments struct.
#[derive(Debug, Subcommand)]
enum Command {
    /// Check a job descriptor (v0.1 or v1, YAML or JSON) and print it normalized.
    ///
    /// Every problem is reported on stderr, one line each, naming the field, the value
    /// found and the rule it breaks; the exit code is then 2.
    Validate(ValidateArgs),
    /// Submit a job descriptor to the root; prints the job's id and state.
    ///
    /// A descriptor the root refuses is reported on stderr, one line per problem, as
    /// `validate` reports it; the exit code is then 2.
    Deploy(DeployArgs),
    /// List jobs, clusters or nodes.
    Get(GetArgs),
    /// Show a job in detail: instances, full history, and why it could not be placed.
    Describe(DescribeArgs),
    /// Print a job's logs.
    Logs(LogsArgs),
    /// Terminate a job; prints its id and TERMINATING.
    Delete(DeleteArgs),
    /// Change a job's number of replicas; prints its id and SCALING.
    ///
    /// More replicas are placed on the job's cluster, or on another cluster when it has no
    /// room (the job is then spread; when no cluster has room the count stays and `describe`
    /// shows why); fewer stop the newest first.
    Scale(ScaleArgs),
    /// Move a running job make-before-break; prints its id and MIGRATING.
    ///
    /// The new instance runs before the old one is stopped. Without --node or --cluster it
    /// goes anywhere else: another node of its cluster, else another cluster. `describe`
    /// shows each move with its reason.
    Migrate(MigrateArgs),
    /// Show and change the config file's contexts (server, CA, token), as `kubectl config`.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Issue, list and revoke the API's tokens (needs an admin token).
    #[command(subcommand)]
    Token(TokenCommand),
}

/// `edgectl config …`
#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the config file, tokens masked.
    View,
    /// List the contexts; `*` marks the current one.
    GetContexts,
    /// Make a context the current one.
    UseContext {
        /// The context's name.
        #[arg(value_name = "NAME")]
        name: String,
    },
    /// Add a context, or change one, from --server, --token or --token-file, and --ca given
    /// on this command line (not from the environment). The first context becomes the
    /// current one.
    SetContext(SetContextArgs),
    /// Remove a context.
    DeleteContext {
        /// The context's name.
        #[arg(value_name = "NAME")]
        name: String,
    },
}

#[derive(Debug, Args)]
struct SetContextArgs {
    /// The context's name.
    #[arg(value_name = "NAME")]
    name: String,

    /// Keep the CA's PEM in the config file (ca-data) rather than the path of --ca.
    #[arg(long)]
    embed_ca: bool,
}

/// `edgectl token …`
#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Issue an API token and print it, once: on stdout, alone on a line (with -o json or
    /// yaml, its id, name, role and times too). Nobody can show it again.
    Create(TokenCreateArgs),
    /// List the tokens: ids, names, roles, when they were made and when they expire. Never
    /// a secret.
    List,
    /// End a token at once; prints its id and `revoked`.
    Revoke {
        /// The token's id (the second part of `edgeioapi1.ID.SECRET`, as `token list` shows).
        #[arg(value_name = "ID")]
        id: String,
    },
}

#[derive(Debug, Args)]
struct TokenCreateArgs {
    /// What the token may do: viewer reads, operator also deploys, deletes, scales, migrates
    /// and reads logs, admin does everything.
    #[arg(long, value_enum, required_unless_present = "join")]
    role: Option<RoleArg>,

    /// How long it lives (e.g. 30m, 24h, 7d); it does not expire when omitted.
    #[arg(long, value_name = "DURATION", value_parser = parse_ttl)]
    ttl: Option<u64>,

    /// What or whom it is for (default: the role's name).
    #[arg(long, value_name = "NAME")]
    name: Option<String>,

    /// A join token instead of an API token: `cluster` (a cluster joins the root with it;
    /// `worker` is not supported yet: a worker joins with its cluster's join.token).
    #[arg(long, value_enum, value_name = "TIER", conflicts_with = "role")]
    join: Option<JoinTier>,

    /// With --join: how many joins it allows (default: no limit).
    #[arg(long, value_name = "N", requires = "join", value_parser = clap::value_parser!(u32).range(1..))]
    uses: Option<u32>,

    /// With --join worker: the cluster the worker joins.
    #[arg(long, value_name = "CLUSTER", requires = "join")]
    cluster: Option<String>,
}

/// The roles `token create --role` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RoleArg {
    /// Reads jobs, clusters and nodes.
    Viewer,
    /// Also deploys, deletes, scales and migrates jobs and reads their logs.
    Operator,
    /// Everything, tokens included.
    Admin,
}

impl From<RoleArg> for edgeio_core::auth::Role {
    fn from(role: RoleArg) -> Self {
        match role {
            RoleArg::Viewer => edgeio_core::auth::Role::Viewer,
            RoleArg::Operator => edgeio_core::auth::Role::Operator,
            RoleArg::Admin => edgeio_core::auth::Role::Admin,
        }
    }
}

/// The tiers `token create --join` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum JoinTier {
    /// A cluster joining the root.
    Cluster,
    /// A worker joining a cluster.
    Worker,
}

/// `--ttl`: a humantime duration of at least one second, in seconds.
fn parse_ttl(text: &str) -> Result<u64, String> {
    let duration = humantime::parse_duration(text.trim())
        .map_err(|e| format!("{e}; write a duration such as 30m, 24h or 7d"))?;
    match duration.as_secs() {
        0 if duration.is_zero() => Err(
            "a token's time to live must be more than 0; omit --ttl for a token that does not expire"
                .to_string(),
        ),
        0 => Err("a token's time to live is counted in seconds: at least 1s".to_string()),
        secs => Ok(secs),
    }
}

#[derive(Debug, Args)]
struct ScaleArgs {
    /// The job's id.
    #[arg(value_name = "JOB")]
    job: String,

    /// The number of replicas wanted (1 to 1000).
    #[arg(value_name = "REPLICAS", value_parser = clap::value_parser!(u32).range(1..=1000))]
    replicas: u32,
}

#[derive(Debug, Args)]
struct MigrateArgs {
    /// The job's id.
    #[arg(value_name = "JOB")]
    job: String,

    /// To this node (of the job's cluster or another).
    #[arg(long, value_name = "NODE", conflicts_with = "cluster")]
    node: Option<String>,

    /// To this cluster.
    #[arg(long, value_name = "CLUSTER")]
    cluster: Option<String>,

    /// Only this instance (default: the job's running one). For a job spread over several
    /// clusters, the part holding this instance moves (or name a node of the part's cluster).
    #[arg(long, value_name = "INSTANCE")]
    instance: Option<String>,
}

#[derive(Debug, Args)]
struct ValidateArgs {
    /// The descriptor file; `-` reads standard input.
    #[arg(value_name = "FILE")]
    file: PathBuf,

    /// Accept another runtime kind in `image_runtime` (repeatable), besides docker, native
    /// and mirage (alias unikernel).
    #[arg(long = "runtime", value_name = "NAME", value_parser = runtime_name)]
    runtimes: Vec<String>,
}

#[derive(Debug, Args)]
struct DeployArgs {
    /// The descriptor file (`.json` is sent as JSON, anything else as YAML); `-` reads
    /// standard input.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: PathBuf,
}

#[derive(Debug, Args)]
struct GetArgs {
    /// What to list.
    #[arg(value_enum)]
    resource: Resource,

    /// Only what belongs to this cluster (for nodes: ask this cluster only; without it,
    /// every cluster is asked).
    #[arg(long, value_name = "ID")]
    cluster: Option<String>,

    /// Ask again every second and print what changed, until Ctrl-C.
    #[arg(short, long)]
    watch: bool,
}

/// What `get` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Resource {
    /// Jobs, oldest first.
    #[value(alias = "job")]
    Jobs,
    /// Clusters.
    #[value(alias = "cluster")]
    Clusters,
    /// Worker nodes, as their clusters report them.
    #[value(alias = "node")]
    Nodes,
}

/// What `describe` and `delete` act on (jobs only, for now).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Kind {
    /// A job.
    Job,
}

#[derive(Debug, Args)]
struct DescribeArgs {
    /// What to describe.
    #[arg(value_enum)]
    kind: Kind,

    /// Its id.
    #[arg(value_name = "ID")]
    id: String,

    /// Ask again every second and print the job when it changed, until Ctrl-C.
    #[arg(short, long)]
    watch: bool,
}

#[derive(Debug, Args)]
struct LogsArgs {
    /// The job's id.
    #[arg(value_name = "JOB")]
    job: String,

    /// Keep printing new lines as they are written, until Ctrl-C.
    #[arg(short, long)]
    follow: bool,

    /// Only the last N lines.
    #[arg(long, value_name = "N")]
    tail: Option<usize>,
}

#[derive(Debug, Args)]
struct DeleteArgs {
    /// What to delete.
    #[arg(value_enum)]
    kind: Kind,

    /// Its id.
    #[arg(value_name = "ID")]
    id: String,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    /// YAML, for people.
    Yaml,
    /// JSON, for programs.
    Json,
    /// Columns (get) or text (describe), for people.
    Table,
}

fn runtime_name(name: &str) -> Result<String, String> {
    check_id("runtime kind", name)
        .map(|()| name.to_ascii_lowercase())
        .map_err(|e| e.rule.to_string())
}

/// Runs `edgectl` with `args` (the program name first) and returns the exit code.
pub fn run<I, T>(args: I, stdin: &mut dyn Read, out: &mut dyn Write, err: &mut dyn Write) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let parsed = Cli::command()
        .try_get_matches_from(args)
        .and_then(|matches| Cli::from_arg_matches(&matches).map(|cli| (cli, matches)));
    let (cli, matches) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => {
            let code = e.exit_code();
            let text = e.render().to_string();
            // --help and --version print to stdout and succeed; usage errors are bad input.
            let sink: &mut dyn Write = if code == 0 { out } else { err };
            return match sink.write_all(text.as_bytes()) {
                Ok(()) if code == 0 => EXIT_OK,
                Ok(()) => EXIT_BAD_INPUT,
                Err(_) => EXIT_FAILURE,
            };
        }
    };
    let given = overrides(&cli, &matches);
    let command = match cli.command {
        Command::Validate(args) => {
            let output = match cli.output {
                None | Some(Output::Yaml) => Output::Yaml,
                Some(Output::Json) => Output::Json,
                Some(Output::Table) => {
                    let _ = writeln!(err, "edgectl: validate prints yaml or json, not a table");
                    return EXIT_BAD_INPUT;
                }
            };
            return validate(&args, output, stdin, out, err);
        }
        Command::Deploy(args) => match remote::read_descriptor(&args.file, stdin, err) {
            Ok(descriptor) => remote::Remote::Deploy(descriptor),
            Err(code) => return code,
        },
        Command::Get(args) => remote::Remote::Get(args),
        Command::Describe(args) => remote::Remote::Describe(args),
        Command::Logs(args) => remote::Remote::Logs(args),
        Command::Delete(args) => remote::Remote::Delete(args),
        Command::Scale(args) => remote::Remote::Scale(args),
        Command::Migrate(args) => remote::Remote::Migrate(args),
        Command::Config(command) => {
            return contexts::run(command, &given, cli.config.as_deref(), cli.output, out, err);
        }
        Command::Token(TokenCommand::Create(args)) => {
            if args.join == Some(JoinTier::Worker) {
                let _ = writeln!(
                    err,
                    "edgectl: token create --join worker is not supported yet: a worker joins \
                     with its cluster's join token, in the cluster's data folder (join.token)"
                );
                return EXIT_BAD_INPUT;
            }
            remote::Remote::TokenCreate(args)
        }
        Command::Token(TokenCommand::List) => remote::Remote::TokenList,
        Command::Token(TokenCommand::Revoke { id }) => remote::Remote::TokenRevoke(id),
    };
    let connection = match contexts::connection(&given, cli.config.as_deref()) {
        Ok(connection) => connection,
        Err(e) => return contexts::fail(err, &e),
    };
    remote::run(&connection, cli.output, command, out, err)
}

/// The global settings given as flags or environment variables, each with its source (an
/// empty variable counts as unset).
fn overrides(cli: &Cli, matches: &ArgMatches) -> Overrides {
    let given = |id: &str, flag: &'static str, env: &'static str, value: &Option<String>| {
        let value = value.as_ref()?;
        let source = match matches.value_source(id) {
            Some(ValueSource::CommandLine) => Source::Flag(flag),
            Some(ValueSource::EnvVariable) if !value.is_empty() => Source::Env(env),
            _ => return None,
        };
        Some(Given {
            value: value.clone(),
            source,
        })
    };
    Overrides {
        server: given("server", "--server", "EDGEIO_SERVER", &cli.server),
        token: given("token", "--token", "EDGEIO_TOKEN", &cli.token),
        token_file: given(
            "token_file",
            "--token-file",
            "EDGEIO_TOKEN_FILE",
            &cli.token_file,
        ),
        ca: given("ca", "--ca", "EDGEIO_CA", &cli.ca),
        context: given("context", "--context", "EDGEIO_CONTEXT", &cli.context),
    }
}

fn validate(
    args: &ValidateArgs,
    output: Output,
    stdin: &mut dyn Read,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let (name, read) = read_file(&args.file, stdin);
    let mut known = KnownRuntimes::default();
    for runtime in &args.runtimes {
        known.register(runtime);
    }
    let result = match read {
        Ok(Input::Bytes(bytes)) => parse_descriptor(&bytes, &known),
        Ok(Input::TooLarge(Some(size))) => Err(DescriptorError::TooLarge {
            size,
            limit: MAX_DESCRIPTOR_BYTES,
        }),
        Ok(Input::TooLarge(None)) => {
            // The rest of a stream is not read just to count it, so its size is unknown.
            let line =
                format!("descriptor is larger than the limit of {MAX_DESCRIPTOR_BYTES} bytes");
            return report(err, &name, &[line]);
        }
        Err(e) => {
            return report(err, &name, &[format!("cannot read: {}", io_reason(&e))]);
        }
    };
    match result {
        Ok(spec) => match render(&spec, output) {
            Ok(text) => match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                Ok(()) => EXIT_OK,
                Err(_) => EXIT_FAILURE,
            },
            Err(reason) => {
                let _ = writeln!(err, "edgectl: cannot print the job: {reason}");
                EXIT_FAILURE
            }
        },
        Err(e) => report(err, &name, &e.problems()),
    }
}

/// Reads `file` (`-` = stdin) up to one byte past the limit; returns the name to report
/// problems under, and what was read.
fn read_file(file: &Path, stdin: &mut dyn Read) -> (String, io::Result<Input>) {
    if file.as_os_str() == "-" {
        return (STDIN_NAME.to_string(), read_limited(stdin, None));
    }
    let read = File::open(file).and_then(|mut opened| {
        let size = opened.metadata().ok().map(|m| m.len());
        read_limited(&mut opened, size)
    });
    (file.display().to_string(), read)
}

/// Writes `text` to stdout; a failed write is the system's failure.
fn write_text(out: &mut dyn Write, err: &mut dyn Write, text: &str) -> i32 {
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => EXIT_OK,
        Err(e) => {
            let _ = writeln!(err, "edgectl: cannot write the output: {e}");
            EXIT_FAILURE
        }
    }
}

/// Writes one line per problem, prefixed with the input's name; bad input exits 2.
fn report(err: &mut dyn Write, name: &str, problems: &[String]) -> i32 {
    for problem in problems {
        if writeln!(err, "{name}: {problem}").is_err() {
            return EXIT_FAILURE;
        }
    }
    EXIT_BAD_INPUT
}

enum Input {
    Bytes(Vec<u8>),
    /// Larger than the limit; the size when the file system knows it.
    TooLarge(Option<usize>),
}

/// Reads at most one byte past the limit, so a huge input is refused without being held.
fn read_limited(reader: &mut dyn Read, known_size: Option<u64>) -> io::Result<Input> {
    let cap = u64::try_from(MAX_DESCRIPTOR_BYTES)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    let mut bytes = Vec::new();
    reader.take(cap).read_to_end(&mut bytes)?;
    if bytes.len() > MAX_DESCRIPTOR_BYTES {
        let size = known_size
            .and_then(|s| usize::try_from(s).ok())
            .filter(|s| *s >= bytes.len());
        Ok(Input::TooLarge(size))
    } else {
        Ok(Input::Bytes(bytes))
    }
}

fn io_reason(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::NotFound => "no such file".to_string(),
        io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        io::ErrorKind::IsADirectory => "is a directory".to_string(),
        io::ErrorKind::InvalidData => "invalid data".to_string(),
        _ => e.to_string(),
    }
}

fn render(spec: &JobSpec, output: Output) -> Result<String, String> {
    match output {
        Output::Yaml | Output::Table => serde_yaml_ng::to_string(spec).map_err(|e| e.to_string()),
        Output::Json => serde_json::to_string_pretty(spec)
            .map(|mut text| {
                text.push('\n');
                text
            })
            .map_err(|e| e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_are_humantime_durations_of_at_least_a_second() {
        assert_eq!(parse_ttl("24h"), Ok(86_400));
        assert_eq!(parse_ttl("1m 30s"), Ok(90));
        assert_eq!(parse_ttl("7d"), Ok(7 * 86_400));
        let zero = parse_ttl("0s").unwrap_err();
        assert!(zero.contains("more than 0"), "{zero}");
        assert!(parse_ttl("500ms").unwrap_err().contains("at least 1s"));
        let bad = parse_ttl("soon").unwrap_err();
        assert!(bad.contains("such as 30m, 24h or 7d"), "{bad}");
    }

    #[test]
    fn no_setting_shows_its_environment_value_in_help() {
        let command = Cli::command();
        for arg in command.get_arguments().filter(|a| a.get_env().is_some()) {
            assert!(
                arg.is_hide_env_values_set(),
                "{} shows its value",
                arg.get_id()
            );
        }
        for id in ["server", "token", "token_file", "ca", "context", "config"] {
            let arg = command.get_arguments().find(|a| a.get_id() == id).unwrap();
            assert!(arg.is_global_set() && arg.get_env().is_some(), "{id}");
        }
    }

    #[test]
    fn join_tokens_are_refused_as_not_supported_yet() {
        let mut out = Vec::new();
        let mut err = Vec::new();
        let code = run(
            [
                "edgectl",
                "token",
                "create",
                "--join",
                "worker",
                "--cluster",
                "c1",
            ],
            &mut io::empty(),
            &mut out,
            &mut err,
        );
        assert_eq!(code, EXIT_BAD_INPUT);
        let err = String::from_utf8(err).unwrap();
        assert!(err.contains("not") && err.contains("yet"), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(out.is_empty());
    }
}
