//! `edgectl` against a secured root: bearer tokens (`--token`, `--token-file`, a context),
//! `token create | list | revoke`, the 401 and 403 lines, and `https` with `--ca`. The root
//! is the real `secured_router` over loopback, in front of `FakeRootApi`, with
//! `edgeio_trust::ApiTokens` in a memory store; the CLI runs in-process through
//! `edgeio::cli::run`. Every run names its own `--config`, so no user's file is read.
#![cfg(all(feature = "testing", feature = "transport-ws"))]

use edgeio::transport_ws::testing::FakeRootApi;
use edgeio::transport_ws::{secured_router, serve, serve_tls, tls, ServerHandle};
use edgeio_core::auth::TokenAuthority;
use edgeio_core::clock::SystemClock;
use edgeio_core::model::KnownRuntimes;
use edgeio_core::testing::MemoryStore;
use edgeio_trust::{ApiTokens, CertificateAuthority};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A secured root on 127.0.0.1 served by its own runtime (plain http, or https with a
/// certificate of `ca`), with its first admin token.
struct Root {
    url: String,
    admin: String,
    server: Option<ServerHandle>,
    runtime: tokio::runtime::Runtime,
    /// The folder of this test's config file, CA and token files.
    dir: tempfile::TempDir,
}

impl Root {
    fn start() -> Root {
        Root::start_with(None)
    }

    fn start_tls(ca: &CertificateAuthority) -> Root {
        Root::start_with(Some(ca))
    }

    fn start_with(ca: Option<&CertificateAuthority>) -> Root {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        let tokens = Arc::new(ApiTokens::new(
            Arc::new(MemoryStore::new()),
            Arc::new(SystemClock),
        ));
        let (server, admin) = runtime.block_on(async {
            let admin = tokens
                .bootstrap_admin()
                .await
                .expect("bootstrap")
                .expect("first admin token")
                .token;
            let authority: Arc<dyn TokenAuthority> = tokens.clone();
            let app = secured_router(
                Arc::new(FakeRootApi::new()),
                KnownRuntimes::default(),
                authority,
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind loopback");
            let server = match ca {
                None => serve(listener, app).expect("serve"),
                Some(ca) => {
                    let now = now_s();
                    let leaf = ca
                        .issue_server(&["127.0.0.1".to_string()], now)
                        .expect("server certificate");
                    let config = tls::server_config_from_pem(
                        leaf.chain_pem.as_bytes(),
                        leaf.key_pem.as_bytes(),
                    )
                    .expect("server config");
                    serve_tls(listener, app, config).expect("serve_tls")
                }
            };
            (server, admin)
        });
        Root {
            url: server.url(),
            admin,
            server: Some(server),
            runtime,
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("config.yaml")
    }

    /// Runs edgectl with this test's `--config` and the arguments given (no `--server`).
    fn edgectl_bare(&self, args: &[&str]) -> Outcome {
        let config = self.config();
        let mut full = vec!["--config", config.to_str().expect("UTF-8 path")];
        full.extend_from_slice(args);
        edgectl(&full)
    }

    /// Runs edgectl against this root with `token` (none when `None`).
    fn edgectl(&self, token: Option<&str>, args: &[&str]) -> Outcome {
        let mut full = vec!["--server", self.url.as_str()];
        if let Some(token) = token {
            full.extend_from_slice(&["--token", token]);
        }
        full.extend_from_slice(args);
        self.edgectl_bare(&full)
    }

    fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, contents).expect("write");
        path
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        if let Some(server) = self.server.take() {
            let _ = self.runtime.block_on(server.shutdown());
        }
    }
}

fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

fn edgectl(args: &[&str]) -> Outcome {
    let mut out = Vec::new();
    let mut err = Vec::new();
    let argv = std::iter::once("edgectl").chain(args.iter().copied());
    let code = edgeio::cli::run(argv, &mut std::io::empty(), &mut out, &mut err);
    Outcome {
        code,
        stdout: String::from_utf8(out).expect("stdout is UTF-8"),
        stderr: String::from_utf8(err).expect("stderr is UTF-8"),
    }
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// The secret part of `edgeioapi1.ID.SECRET`.
fn secret_of(token: &str) -> &str {
    token.rsplit('.').next().expect("secret")
}

#[test]
fn token_create_prints_the_token_alone_and_it_works_at_once() {
    let root = Root::start();
    let created = root.edgectl(
        Some(&root.admin),
        &[
            "token", "create", "--role", "viewer", "--name", "ci", "--ttl", "24h",
        ],
    );
    assert_eq!(created.code, 0, "{}", created.stderr);
    // T=$(edgectl token create --role viewer): one line, the token alone
    assert_eq!(created.stdout.lines().count(), 1, "{}", created.stdout);
    let viewer = created.stdout.trim_end().to_string();
    assert!(viewer.starts_with("edgeioapi1."), "{viewer}");
    assert_eq!(created.stdout, format!("{viewer}\n"));

    // the viewer reads, and may not deploy: the server's 403 names the role needed
    let jobs = root.edgectl(Some(&viewer), &["get", "jobs"]);
    assert_eq!(jobs.code, 0, "{}", jobs.stderr);
    let created = root.edgectl(Some(&viewer), &["token", "create", "--role", "admin"]);
    assert_eq!(created.code, 2);
    assert_eq!(created.stderr.lines().count(), 1, "{}", created.stderr);
    assert!(
        created.stderr.contains("needs the role admin") && created.stderr.contains("viewer"),
        "{}",
        created.stderr
    );
    assert!(!created.stderr.contains(secret_of(&viewer)));

    // -o json: the view and the token
    let json = root.edgectl(
        Some(&root.admin),
        &["token", "create", "--role", "operator", "-o", "json"],
    );
    assert_eq!(json.code, 0, "{}", json.stderr);
    let value: serde_json::Value = serde_json::from_str(&json.stdout).expect("json");
    assert_eq!(value["role"], "operator");
    assert_eq!(value["name"], "operator");
    assert!(value["token"].as_str().unwrap().starts_with("edgeioapi1."));
}

#[test]
fn token_list_shows_ids_names_roles_and_times_never_secrets() {
    let root = Root::start();
    let viewer = root.edgectl(
        Some(&root.admin),
        &[
            "token", "create", "--role", "viewer", "--name", "ci", "--ttl", "1h",
        ],
    );
    assert_eq!(viewer.code, 0, "{}", viewer.stderr);
    let viewer = viewer.stdout.trim_end().to_string();

    let table = root.edgectl(Some(&root.admin), &["token", "list"]);
    assert_eq!(table.code, 0, "{}", table.stderr);
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", table.stdout);
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("ROLE") && lines[0].contains("EXPIRES"),
        "{}",
        lines[0]
    );
    let ci = lines.iter().find(|l| l.contains(" ci ")).expect("ci row");
    assert!(ci.contains("viewer") && ci.contains('Z'), "{ci}");
    let admin = lines
        .iter()
        .find(|l| l.contains("bootstrap"))
        .expect("admin");
    assert!(
        admin.contains("admin") && admin.contains("never"),
        "{admin}"
    );
    for secret in [secret_of(&viewer), secret_of(&root.admin)] {
        assert!(!table.stdout.contains(secret), "{}", table.stdout);
    }

    let yaml = root.edgectl(Some(&root.admin), &["token", "list", "-o", "yaml"]);
    assert_eq!(yaml.code, 0, "{}", yaml.stderr);
    assert!(yaml.stdout.contains("role: viewer"), "{}", yaml.stdout);
    assert!(!yaml.stdout.contains(secret_of(&viewer)));
}

#[test]
fn a_revoked_token_is_refused_at_once_with_the_fix() {
    let root = Root::start();
    let viewer = root.edgectl(Some(&root.admin), &["token", "create", "--role", "viewer"]);
    let viewer = viewer.stdout.trim_end().to_string();
    let id = viewer.split('.').nth(1).expect("id").to_string();

    let revoked = root.edgectl(Some(&root.admin), &["token", "revoke", &id]);
    assert_eq!(revoked.code, 0, "{}", revoked.stderr);
    assert_eq!(revoked.stdout, format!("{id} revoked\n"));

    let refused = root.edgectl(Some(&viewer), &["get", "jobs"]);
    assert_eq!(refused.code, 2);
    assert_eq!(refused.stderr.lines().count(), 1, "{}", refused.stderr);
    assert!(
        refused
            .stderr
            .starts_with("edgectl: the server refused the token from --token: ")
            && refused.stderr.contains(&id),
        "{}",
        refused.stderr
    );
    assert!(!refused.stderr.contains(secret_of(&viewer)));

    let again = root.edgectl(Some(&root.admin), &["token", "revoke", &id]);
    assert_eq!(again.code, 2, "{}", again.stderr);
}

#[test]
fn no_token_is_one_line_naming_the_fix() {
    let root = Root::start();
    let refused = root.edgectl(None, &["get", "jobs"]);
    assert_eq!(refused.code, 2);
    assert_eq!(
        refused.stderr,
        "edgectl: the server wants a token: pass --token, set EDGEIO_TOKEN or use a context \
         (edgectl config set-context NAME --server URL --token TOKEN)\n"
    );
    assert!(refused.stdout.is_empty());
}

#[test]
fn bad_ttls_and_join_tokens_are_refused_before_any_request() {
    // no server at all: nothing is sent
    for args in [
        &["token", "create", "--role", "viewer", "--ttl", "0s"][..],
        &["token", "create", "--role", "viewer", "--ttl", "soon"],
        &["token", "create", "--join", "worker", "--cluster", "c1"],
        &["token", "create", "--join", "cluster", "--uses", "0"],
        &["token", "create"],
    ] {
        let mut full = vec!["--server", "http://127.0.0.1:9"];
        full.extend_from_slice(args);
        let refused = edgectl(&full);
        assert_eq!(refused.code, 2, "{args:?}: {}", refused.stderr);
        assert!(
            !refused.stderr.contains("cannot reach"),
            "{}",
            refused.stderr
        );
    }
    let zero = edgectl(&["token", "create", "--role", "viewer", "--ttl", "0s"]);
    assert!(zero.stderr.contains("more than 0"), "{}", zero.stderr);
    let join = edgectl(&["token", "create", "--join", "worker"]);
    assert!(
        join.stderr.contains("--join worker is not supported yet")
            && join.stderr.contains("join.token"),
        "{}",
        join.stderr
    );
}

#[test]
fn a_context_gives_the_server_and_token_and_the_admin_token_file_works() {
    let root = Root::start();
    let token_file = root.write("admin.token", &format!("{}\n", root.admin));

    // --token-file, as the root writes DATA/admin.token
    let listed = root.edgectl(
        None,
        &["--token-file", path_str(&token_file), "token", "list"],
    );
    assert_eq!(listed.code, 0, "{}", listed.stderr);

    // a context holding the file's path
    let set = root.edgectl_bare(&[
        "config",
        "set-context",
        "local",
        "--server",
        &root.url,
        "--token-file",
        path_str(&token_file),
    ]);
    assert_eq!(set.code, 0, "{}", set.stderr);
    assert!(set.stdout.contains("current context"), "{}", set.stdout);
    let listed = root.edgectl_bare(&["token", "list"]);
    assert_eq!(listed.code, 0, "{}", listed.stderr);

    // a context holding a viewer token; config view masks it
    let viewer = root.edgectl_bare(&["token", "create", "--role", "viewer"]);
    let viewer = viewer.stdout.trim_end().to_string();
    let set = root.edgectl_bare(&[
        "config",
        "set-context",
        "reader",
        "--server",
        &root.url,
        "--token",
        &viewer,
    ]);
    assert_eq!(set.code, 0, "{}", set.stderr);
    let view = root.edgectl_bare(&["config", "view"]);
    assert_eq!(view.code, 0, "{}", view.stderr);
    let id = viewer.split('.').nth(1).unwrap();
    assert!(
        view.stdout
            .contains(&format!("token: edgeioapi1.{id}.****")),
        "{}",
        view.stdout
    );
    assert!(!view.stdout.contains(secret_of(&viewer)), "{}", view.stdout);

    // --context picks it; the viewer may not list tokens
    let refused = root.edgectl_bare(&["--context", "reader", "token", "list"]);
    assert_eq!(refused.code, 2);
    assert!(
        refused.stderr.contains("needs the role admin"),
        "{}",
        refused.stderr
    );
    // a flag beats the context
    let listed = root.edgectl_bare(&[
        "--context",
        "reader",
        "--token",
        &root.admin,
        "token",
        "list",
    ]);
    assert_eq!(listed.code, 0, "{}", listed.stderr);

    let used = root.edgectl_bare(&["config", "use-context", "reader"]);
    assert_eq!(used.code, 0, "{}", used.stderr);
    let contexts = root.edgectl_bare(&["config", "get-contexts"]);
    let current = contexts
        .stdout
        .lines()
        .find(|l| l.starts_with('*'))
        .expect("a current context");
    assert!(current.contains("reader"), "{}", contexts.stdout);
    assert!(!contexts.stdout.contains(secret_of(&viewer)));

    let unknown = root.edgectl_bare(&["config", "use-context", "nope"]);
    assert_eq!(unknown.code, 2);
    assert!(
        unknown.stderr.contains(path_str(&root.config()))
            && unknown.stderr.contains("\"nope\"")
            && unknown.stderr.contains("local, reader"),
        "{}",
        unknown.stderr
    );
}

#[test]
fn https_needs_the_deployments_ca_and_refuses_another_naming_the_fix() {
    let now = now_s();
    let ca = CertificateAuthority::create_root("edgectl-test", now).expect("ca");
    let root = Root::start_tls(&ca);
    let ca_file = root.write("ca.crt", ca.root_pem());
    let other = CertificateAuthority::create_root("someone-else", now).expect("ca");
    let other_file = root.write("other.crt", other.root_pem());

    let listed = root.edgectl(
        Some(&root.admin),
        &["--ca", path_str(&ca_file), "token", "list"],
    );
    assert_eq!(listed.code, 0, "{}", listed.stderr);

    let refused = root.edgectl(
        Some(&root.admin),
        &["--ca", path_str(&other_file), "token", "list"],
    );
    assert_eq!(refused.code, 2);
    assert_eq!(refused.stderr.lines().count(), 1, "{}", refused.stderr);
    assert!(refused.stderr.contains("--ca"), "{}", refused.stderr);

    let without = root.edgectl(Some(&root.admin), &["token", "list"]);
    assert_eq!(without.code, 2);
    assert!(without.stderr.contains("--ca FILE"), "{}", without.stderr);
    for outcome in [&refused, &without] {
        assert!(!outcome.stderr.contains(secret_of(&root.admin)));
    }

    // the CA inline in a context
    let set = root.edgectl_bare(&[
        "config",
        "set-context",
        "secure",
        "--server",
        &root.url,
        "--token",
        &root.admin,
        "--ca",
        path_str(&ca_file),
        "--embed-ca",
    ]);
    assert_eq!(set.code, 0, "{}", set.stderr);
    std::fs::remove_file(&ca_file).expect("remove");
    let listed = root.edgectl_bare(&["token", "list"]);
    assert_eq!(listed.code, 0, "{}", listed.stderr);
}
