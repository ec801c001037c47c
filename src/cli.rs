//! `edgectl`, the command-line client, as a function that tests can call.
//!
//! [`run`](crate::cli::run) takes the arguments and the three standard streams and returns
//! the exit code: 0 when all went well, 2 for bad input (a descriptor that does not validate,
//! a file that cannot be read, a usage error, a request the server refused with 4xx), 1 when
//! the system itself failed (no server at `--server`, a 5xx). Problems go to stderr, one line
//! each; results go to stdout.
//!
//! `validate` works offline. `deploy`, `get`, `describe`, `logs`, `delete`, `scale` and
//! `migrate` talk to the
//! root's REST API at `--server` (or `EDGEIO_SERVER`, default `http://127.0.0.1:7070`).
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

mod remote;
mod render;

use clap::{Args, Parser, Subcommand, ValueEnum};
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
/// Exit code: bad input (invalid descriptor, unreadable file, usage error, a request the
/// server refused: 400, 404, 409, 413, 415).
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

    /// The root orchestrator's REST API.
    #[arg(
        long,
        global = true,
        value_name = "URL",
        env = "EDGEIO_SERVER",
        hide_env_values = true,
        default_value = DEFAULT_SERVER
    )]
    server: String,

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
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
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
    };
    remote::run(&cli.server, cli.output, command, out, err)
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
