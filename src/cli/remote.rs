//! The subcommands that talk to the root over its REST API: deploy, get, describe, logs,
//! delete, scale, migrate, token. Each one runs on a current-thread tokio runtime built for
//! the call, so [`run`](super::run) stays a plain function.

use super::config::Connection;
use super::render::{self, ClusterNode};
use super::tokens;
use super::{
    io_reason, read_file, report, write_text, DeleteArgs, DescribeArgs, GetArgs, Input, Kind,
    LogsArgs, MigrateArgs, Output, Resource, ScaleArgs, TokenCreateArgs, EXIT_BAD_INPUT,
    EXIT_FAILURE, EXIT_OK,
};
use edgeio_core::api::LogsQuery;
use edgeio_core::job::MAX_DESCRIPTOR_BYTES;
use edgeio_transport_ws::{ClientError, RootClient};
use futures::StreamExt;
use serde::Serialize;
use std::future::Future;
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How often `--watch` asks again.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// A descriptor read for `deploy`.
pub(super) struct Descriptor {
    /// Its bytes (at most [`MAX_DESCRIPTOR_BYTES`]).
    pub(super) bytes: Vec<u8>,
    /// `application/json` for a `.json` file, else `application/yaml`.
    pub(super) content_type: &'static str,
    /// The file name problems are reported under.
    pub(super) name: String,
}

/// A remote subcommand with its arguments (for deploy, the descriptor already read, so an
/// unreadable file is reported before any network work).
pub(super) enum Remote {
    Deploy(Descriptor),
    Get(GetArgs),
    Describe(DescribeArgs),
    Logs(LogsArgs),
    Delete(DeleteArgs),
    Scale(ScaleArgs),
    Migrate(MigrateArgs),
    TokenCreate(TokenCreateArgs),
    TokenList,
    TokenRevoke(String),
}

/// A client of the root and what its errors need to know.
pub(super) struct Session {
    /// The client.
    pub(super) client: RootClient,
    /// Where the token sent came from (`--token`, `context "prod"` …); `None` when none is
    /// sent.
    token_origin: Option<String>,
}

impl Session {
    /// Reports `e` on one line and returns its exit code.
    pub(super) fn fail(&self, err: &mut dyn Write, e: &Failed) -> i32 {
        fail(err, e, self.token_origin.as_deref())
    }
}

/// Why a remote subcommand failed as a whole.
pub(super) enum Failed {
    /// The client's error (the server's refusal, or no server).
    Client(ClientError),
    /// The answer could not be printed in the format asked for.
    Print(String),
}

impl From<ClientError> for Failed {
    fn from(e: ClientError) -> Failed {
        Failed::Client(e)
    }
}

/// Runs `command` against the root `connection` names; returns the exit code.
pub(super) fn run(
    connection: &Connection,
    output: Option<Output>,
    command: Remote,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let mut builder = RootClient::builder(&connection.server)
        .token(connection.token.clone())
        .ca_pem(connection.ca_pem.clone());
    if let Some(origin) = &connection.ca_origin {
        builder = builder.ca_origin(origin.clone());
    }
    let session = match builder.build() {
        Ok(client) => Session {
            client,
            token_origin: connection
                .token
                .as_ref()
                .and(connection.token_origin.clone()),
        },
        Err(e) => return fail(err, &e.into(), None),
    };
    let client = &session.client;
    let s = &session;
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = writeln!(err, "edgectl: cannot start the async runtime: {e}");
            return EXIT_FAILURE;
        }
    };
    runtime.block_on(async {
        match command {
            Remote::Deploy(descriptor) => deploy(s, descriptor, output, out, err).await,
            Remote::Get(args) => get(s, &args, output, out, err).await,
            Remote::Describe(args) => describe(s, &args, output, out, err).await,
            Remote::Logs(args) => logs(s, &args, out, err).await,
            Remote::Delete(args) => delete(s, &args, output, out, err).await,
            Remote::Scale(args) => {
                let answer = client.scale(&args.job, args.replicas).await;
                print_state(s, answer, output, out, err)
            }
            Remote::Migrate(args) => {
                let answer = client
                    .migrate(
                        &args.job,
                        args.node.as_deref(),
                        args.cluster.as_deref(),
                        args.instance.as_deref(),
                    )
                    .await;
                print_state(s, answer, output, out, err)
            }
            Remote::TokenCreate(args) => tokens::create(s, &args, output, out, err).await,
            Remote::TokenList => tokens::list(s, output, out, err).await,
            Remote::TokenRevoke(id) => tokens::revoke(s, &id, output, out, err).await,
        }
    })
}

/// The exit code an error calls for: the user's mistakes are 2, the system's 1.
fn exit_code(e: &ClientError) -> i32 {
    match e {
        ClientError::Api { status, .. } if (400..500).contains(status) => EXIT_BAD_INPUT,
        // a URL, CA or token to fix in the flags, environment or context
        ClientError::InvalidUrl { .. }
        | ClientError::Unsupported { .. }
        | ClientError::Tls { .. }
        | ClientError::InvalidToken { .. } => EXIT_BAD_INPUT,
        _ => EXIT_FAILURE,
    }
}

/// The line that says what to do about a 401: no token was sent (`token_origin` is
/// `None`), or the one sent is not valid here (the server's message says why).
fn unauthorized(e: &ClientError, token_origin: Option<&str>) -> String {
    match token_origin {
        None => "edgectl: the server wants a token: pass --token, set EDGEIO_TOKEN or use a \
                 context (edgectl config set-context NAME --server URL --token TOKEN)"
            .to_string(),
        Some(origin) => format!(
            "edgectl: the server refused the token from {origin}: {e}; pass a valid one with \
             --token, EDGEIO_TOKEN or a context"
        ),
    }
}

/// Reports `e` on one line and returns its exit code; a 401 names the fix.
fn fail(err: &mut dyn Write, e: &Failed, token_origin: Option<&str>) -> i32 {
    let (line, code) = match e {
        Failed::Client(e) if e.status() == Some(401) => {
            (unauthorized(e, token_origin), exit_code(e))
        }
        Failed::Client(e) => (format!("edgectl: {e}"), exit_code(e)),
        Failed::Print(reason) => (
            format!("edgectl: cannot print the answer: {reason}"),
            EXIT_FAILURE,
        ),
    };
    if writeln!(err, "{line}").is_err() {
        return EXIT_FAILURE;
    }
    code
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Reads the descriptor of `deploy -f FILE` (size-capped, `-` for stdin) and picks its
/// content type from the extension; a problem is reported as `validate` reports it.
pub(super) fn read_descriptor(
    file: &Path,
    stdin: &mut dyn Read,
    err: &mut dyn Write,
) -> Result<Descriptor, i32> {
    let (name, read) = read_file(file, stdin);
    let bytes = match read {
        Ok(Input::Bytes(bytes)) => bytes,
        Ok(Input::TooLarge(_)) => {
            let line =
                format!("descriptor is larger than the limit of {MAX_DESCRIPTOR_BYTES} bytes");
            return Err(report(err, &name, &[line]));
        }
        Err(e) => {
            let line = format!("cannot read: {}", io_reason(&e));
            return Err(report(err, &name, &[line]));
        }
    };
    let is_json = file
        .extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("json"));
    Ok(Descriptor {
        bytes,
        content_type: if is_json {
            "application/json"
        } else {
            "application/yaml"
        },
        name,
    })
}

async fn deploy(
    s: &Session,
    descriptor: Descriptor,
    output: Option<Output>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    match s
        .client
        .submit(descriptor.bytes, descriptor.content_type)
        .await
    {
        Ok(view) => match output {
            Some(format @ (Output::Json | Output::Yaml)) => print_as(s, &view, format, out, err),
            _ => write_text(out, err, &format!("{} {}\n", view.id, view.state)),
        },
        // A refused descriptor reads like `validate`'s report: one line per problem.
        Err(ClientError::Api { status: 400, body }) if !body.error.details.is_empty() => {
            let lines: Vec<String> = body.error.details.iter().map(ToString::to_string).collect();
            report(err, &descriptor.name, &lines)
        }
        Err(e) => s.fail(err, &e.into()),
    }
}

/// Prints `value` as JSON or YAML.
pub(super) fn print_as<T: Serialize>(
    s: &Session,
    value: &T,
    format: Output,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    match serialized(value, format) {
        Ok(text) => write_text(out, err, &text),
        Err(e) => s.fail(err, &e),
    }
}

/// One rendering of what `get` or `describe` shows.
struct Shown {
    /// What goes to stdout.
    text: String,
    /// Failures of a part (one cluster of `get nodes`), one line each for stderr.
    warnings: Vec<String>,
    /// 0, or the code of the worst failure among `warnings`.
    code: i32,
}

impl Shown {
    fn text(text: String) -> Shown {
        Shown {
            text,
            warnings: Vec::new(),
            code: EXIT_OK,
        }
    }
}

/// Renders once, or with `watch` again every second until Ctrl-C, printing only what
/// changed. A failure of the whole ends the watch with its code.
async fn show<F, Fut>(
    s: &Session,
    watch: bool,
    out: &mut dyn Write,
    err: &mut dyn Write,
    mut render: F,
) -> i32
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Shown, Failed>>,
{
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut last: Option<Shown> = None;
    loop {
        let shown = match render().await {
            Ok(shown) => shown,
            Err(e) => return s.fail(err, &e),
        };
        let same = last
            .as_ref()
            .is_some_and(|l| l.text == shown.text && l.warnings == shown.warnings);
        if !same {
            for warning in &shown.warnings {
                if writeln!(err, "{warning}").is_err() {
                    return EXIT_FAILURE;
                }
            }
            // Successive renderings are told apart by a blank line.
            let separator = if last.is_some() { "\n" } else { "" };
            let code = write_text(out, err, &format!("{separator}{}", shown.text));
            if code != EXIT_OK {
                return code;
            }
        }
        let code = shown.code;
        last = Some(shown);
        if !watch {
            return code;
        }
        tokio::select! {
            _ = &mut ctrl_c => return code,
            () = tokio::time::sleep(WATCH_INTERVAL) => {}
        }
    }
}

pub(super) fn serialized<T: Serialize>(value: &T, format: Output) -> Result<String, Failed> {
    let text = match format {
        Output::Json => serde_json::to_string_pretty(value)
            .map(|text| text + "\n")
            .map_err(|e| e.to_string()),
        _ => serde_yaml_ng::to_string(value).map_err(|e| e.to_string()),
    };
    text.map_err(Failed::Print)
}

async fn get(
    s: &Session,
    args: &GetArgs,
    output: Option<Output>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let format = output.unwrap_or(Output::Table);
    let cluster = args.cluster.as_deref();
    let resource = args.resource;
    let client = &s.client;
    show(s, args.watch, out, err, move || async move {
        match resource {
            Resource::Jobs => {
                let mut jobs = client.jobs().await?;
                if let Some(cluster) = cluster {
                    jobs.retain(|j| j.cluster.as_deref() == Some(cluster));
                }
                Ok(Shown::text(match format {
                    Output::Table => render::jobs_table(&jobs, now_ms()),
                    _ => serialized(&jobs, format)?,
                }))
            }
            Resource::Clusters => {
                let clusters = match cluster {
                    Some(id) => vec![client.cluster(id).await?],
                    None => client.clusters().await?,
                };
                Ok(Shown::text(match format {
                    Output::Table => render::clusters_table(&clusters),
                    _ => serialized(&clusters, format)?,
                }))
            }
            Resource::Nodes => {
                let ids: Vec<String> = match cluster {
                    Some(id) => vec![id.to_string()],
                    None => client.clusters().await?.into_iter().map(|c| c.id).collect(),
                };
                let mut nodes = Vec::new();
                let mut warnings = Vec::new();
                let mut code = EXIT_OK;
                for id in ids {
                    match client.nodes(&id).await {
                        Ok(list) => nodes.extend(list.into_iter().map(|node| ClusterNode {
                            cluster: id.clone(),
                            node,
                        })),
                        // The one cluster asked for: its failure is the command's.
                        Err(e) if cluster.is_some() => return Err(e.into()),
                        // One of all: the others are still listed.
                        Err(e) => {
                            code = code.max(exit_code(&e));
                            warnings.push(format!("edgectl: nodes of cluster {id}: {e}"));
                        }
                    }
                }
                let text = match format {
                    Output::Table => render::nodes_table(&nodes),
                    _ => serialized(&nodes, format)?,
                };
                Ok(Shown {
                    text,
                    warnings,
                    code,
                })
            }
        }
    })
    .await
}

async fn describe(
    s: &Session,
    args: &DescribeArgs,
    output: Option<Output>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let Kind::Job = args.kind;
    let id = args.id.as_str();
    let client = &s.client;
    show(s, args.watch, out, err, move || async move {
        let job = client.job(id).await?;
        Ok(Shown::text(match output {
            Some(format @ (Output::Json | Output::Yaml)) => serialized(&job, format)?,
            _ => render::describe_job(&job, now_ms()),
        }))
    })
    .await
}

async fn logs(s: &Session, args: &LogsArgs, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let query = LogsQuery {
        tail: args.tail,
        follow: args.follow,
    };
    let mut stream = match s.client.logs(&args.job, query).await {
        Ok(stream) => stream,
        Err(e) => return s.fail(err, &e.into()),
    };
    while let Some(chunk) = stream.next().await {
        match chunk {
            // Flushed per chunk, so `-f` shows lines as they come.
            Ok(bytes) => {
                if out.write_all(&bytes).and_then(|()| out.flush()).is_err() {
                    return EXIT_FAILURE;
                }
            }
            Err(e) => return s.fail(err, &e.into()),
        }
    }
    EXIT_OK
}

async fn delete(
    s: &Session,
    args: &DeleteArgs,
    output: Option<Output>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    let Kind::Job = args.kind;
    print_state(s, s.client.terminate(&args.id).await, output, out, err)
}

/// Prints a job's id and state (or the job in JSON or YAML), or the error.
fn print_state(
    s: &Session,
    answer: Result<edgeio_core::api::JobView, ClientError>,
    output: Option<Output>,
    out: &mut dyn Write,
    err: &mut dyn Write,
) -> i32 {
    match answer {
        Ok(view) => match output {
            Some(format @ (Output::Json | Output::Yaml)) => print_as(s, &view, format, out, err),
            _ => write_text(out, err, &format!("{} {}\n", view.id, view.state)),
        },
        Err(e) => s.fail(err, &e.into()),
    }
}
