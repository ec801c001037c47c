//! The root's REST API over real HTTP on 127.0.0.1: the router in front of the in-memory
//! `FakeRootApi`, driven through `RootClient` and, where the exact bytes matter (missing
//! headers, error shapes), through a bare reqwest client.
#![cfg(feature = "testing")]

use edgeio_core::api::{ApiError, ClusterView, LogsQuery, NodeView};
use edgeio_core::model::{Arch, Capabilities, Resources};
use edgeio_core::state::{ClusterState, JobState, NodeState};
use edgeio_transport_ws::testing::FakeRootApi;
use edgeio_transport_ws::{router, serve, ClientError, ErrorResponse, RootClient, ServerHandle};
use futures::StreamExt;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

const THESIS: &str = "api_version: v0.1
job_name: image_detection
image: quay.io/codait/max-object-detector
image_runtime: docker
requirements:
    cpu: 2 # cores
    memory: 1000 # in MB
cluster_location: Garching
worker_node: e580
";

const JOBS: &str = "/api/v1/jobs";

struct Root {
    server: ServerHandle,
    api: Arc<FakeRootApi>,
    client: RootClient,
    http: reqwest::Client,
}

impl Root {
    async fn start() -> Root {
        let api = Arc::new(FakeRootApi::new());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let server = serve(listener, router(api.clone())).expect("serve");
        let client = RootClient::new(&server.url()).expect("client");
        Root {
            server,
            api,
            client,
            http: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.url())
    }

    /// A raw request; returns the status, the headers and the body as JSON (Null when the
    /// body is not JSON, so a test fails on the shape rather than here).
    async fn raw(
        &self,
        method: reqwest::Method,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut request = self.http.request(method, self.url(path)).body(body);
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        let response = request.send().await.expect("send");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("body");
        (
            status,
            headers,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn get(&self, path: &str) -> (u16, reqwest::header::HeaderMap, Value) {
        self.raw(reqwest::Method::GET, path, None, Vec::new()).await
    }

    async fn post(&self, content_type: Option<&str>, body: &[u8]) -> (u16, Value) {
        let (status, _, json) = self
            .raw(reqwest::Method::POST, JOBS, content_type, body.to_vec())
            .await;
        (status, json)
    }
}

/// Checks that `json` has exactly the error shape, and returns its details.
fn error_shape(json: &Value, code: &str) -> Vec<Value> {
    let object = json.as_object().expect("an object");
    assert_eq!(object.len(), 1, "only `error` at the top: {json}");
    let error = json["error"].as_object().expect("error is an object");
    let mut keys: Vec<&str> = error.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["code", "details", "message"], "{json}");
    assert_eq!(error["code"], code, "{json}");
    assert!(
        !error["message"].as_str().expect("message").is_empty(),
        "{json}"
    );
    let details = error["details"].as_array().expect("details").clone();
    for detail in &details {
        let mut keys: Vec<&str> = detail
            .as_object()
            .expect("detail object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(keys, ["field", "rule", "value"], "{json}");
    }
    details
}

fn api_error(result: Result<impl std::fmt::Debug, ClientError>) -> (u16, ErrorResponse) {
    match result {
        Err(ClientError::Api { status, body }) => (status, body),
        other => panic!("expected an api error, got {other:?}"),
    }
}

fn cluster(id: &str) -> ClusterView {
    ClusterView {
        id: id.to_string(),
        name: format!("{id} name"),
        state: ClusterState::Active,
        history: Vec::new(),
        location: None,
        labels: Default::default(),
        aggregate: None,
        last_seen_ms: 1,
    }
}

fn node(id: &str) -> NodeView {
    let total = Resources {
        cpu_millis: 4000,
        memory_bytes: 8 << 30,
        disk_bytes: 0,
        gpus: 0,
    };
    NodeView {
        id: id.to_string(),
        name: id.to_string(),
        state: NodeState::Ready,
        capabilities: Capabilities {
            arch: Arch::Amd64,
            cores: 4,
            memory_bytes: 8 << 30,
            disk_bytes: 0,
            gpus: 0,
            runtimes: Vec::new(),
            labels: Default::default(),
            location: None,
        },
        free: total,
        total,
        instances: 0,
        last_seen_ms: 1,
        usage: None,
    }
}

#[tokio::test]
async fn healthz_answers_ok() {
    let root = Root::start().await;
    let (status, _, json) = root.get("/healthz").await;
    assert_eq!(status, 200);
    assert_eq!(json, json!({"status": "ok"}));
    root.client.health().await.expect("healthy");
}

#[tokio::test]
async fn a_yaml_descriptor_is_accepted_with_its_id_and_location() {
    let root = Root::start().await;
    let (status, headers, json) = root
        .raw(
            reqwest::Method::POST,
            JOBS,
            Some("application/yaml"),
            THESIS.as_bytes().to_vec(),
        )
        .await;
    assert_eq!(status, 202, "{json}");
    assert_eq!(json["id"], "job-1");
    assert_eq!(json["name"], "image_detection");
    assert_eq!(json["state"], "REQUESTED");
    assert_eq!(headers["location"], "/api/v1/jobs/job-1");

    let view = root.client.job("job-1").await.expect("the job");
    assert_eq!(view.spec.resources.cpu_millis, 2000);
    assert_eq!(root.client.jobs().await.expect("jobs").len(), 1);
}

#[tokio::test]
async fn a_json_descriptor_and_each_yaml_type_are_accepted() {
    let root = Root::start().await;
    let descriptor = json!({
        "api_version": "v1", "job_name": "web", "image": "nginx:1.27",
        "image_runtime": "docker", "requirements": {"cpu": "500m", "memory": "256Mi"}
    });
    let view = root
        .client
        .submit(
            serde_json::to_vec(&descriptor).expect("json"),
            "application/json; charset=utf-8",
        )
        .await
        .expect("accepted");
    assert_eq!(view.name, "web");
    assert_eq!(view.state, JobState::Requested);
    assert_eq!(view.spec.resources.cpu_millis, 500);

    for (i, content_type) in ["application/x-yaml", "text/yaml", "Application/YAML"]
        .into_iter()
        .enumerate()
    {
        let body = THESIS.replace("image_detection", &format!("detect-{i}"));
        let view = root
            .client
            .submit(body.into_bytes(), content_type)
            .await
            .unwrap_or_else(|e| panic!("{content_type}: {e}"));
        assert_eq!(view.name, format!("detect-{i}"));
    }
}

#[tokio::test]
async fn an_invalid_descriptor_is_400_naming_each_field() {
    let root = Root::start().await;
    let missing_image = THESIS.replace("image: quay.io/codait/max-object-detector\n", "");
    let (status, json) = root
        .post(Some("application/yaml"), missing_image.as_bytes())
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        json,
        json!({"error": {
            "code": "invalid",
            "message": "the job descriptor is not valid (1 problem)",
            "details": [{"field": "image", "value": "(missing)", "rule": "is required"}]
        }})
    );

    let two_problems = missing_image.replace("memory: 1000", "memory: -5");
    let (status, body) = api_error(
        root.client
            .submit(two_problems.into_bytes(), "application/yaml")
            .await,
    );
    assert_eq!(status, 400);
    assert_eq!(body.error.code, "invalid");
    let fields: Vec<&str> = body
        .error
        .details
        .iter()
        .map(|d| d.field.as_str())
        .collect();
    assert!(fields.contains(&"image"), "{fields:?}");
    let memory = body
        .error
        .details
        .iter()
        .find(|d| d.field == "requirements.memory")
        .expect("memory named");
    assert_eq!(memory.value, "-5");
    assert_eq!(memory.rule, "must be a positive number of MB");
    assert!(
        root.client.jobs().await.expect("jobs").is_empty(),
        "nothing reached the engine"
    );
}

#[tokio::test]
async fn syntax_errors_and_empty_bodies_are_400_on_the_body() {
    let root = Root::start().await;
    for (body, value) in [
        (&b"job_name: [unclosed"[..], "line"),
        (b"# nothing\n", "(empty)"),
        (b"\xff\xfe", "invalid byte at offset 0"),
    ] {
        let (status, json) = root.post(Some("application/yaml"), body).await;
        assert_eq!(status, 400, "{json}");
        let details = error_shape(&json, "invalid");
        assert_eq!(details.len(), 1, "{json}");
        assert_eq!(details[0]["field"], "body");
        assert!(
            details[0]["value"]
                .as_str()
                .expect("value")
                .starts_with(value),
            "{json}"
        );
    }
}

#[tokio::test]
async fn unknown_jobs_and_clusters_are_404() {
    let root = Root::start().await;
    let (status, _, json) = root.get("/api/v1/jobs/nope").await;
    assert_eq!(status, 404);
    assert_eq!(
        json,
        json!({"error": {"code": "not_found", "message": "job \"nope\" not found", "details": []}})
    );
    let (status, body) = api_error(root.client.cluster("nope").await);
    assert_eq!((status, body.error.code.as_str()), (404, "not_found"));
    let (status, _) = api_error(root.client.nodes("nope").await);
    assert_eq!(status, 404);
    let (status, _) = api_error(root.client.terminate("nope").await);
    assert_eq!(status, 404);
    let err = root
        .client
        .logs("nope", LogsQuery::default())
        .await
        .err()
        .expect("no logs of no job");
    assert_eq!(err.status(), Some(404));
}

#[tokio::test]
async fn a_second_live_job_of_one_name_is_409_with_its_field() {
    let root = Root::start().await;
    root.client
        .submit(THESIS.into(), "application/yaml")
        .await
        .expect("first");
    let (status, json) = root.post(Some("application/yaml"), THESIS.as_bytes()).await;
    assert_eq!(status, 409);
    let details = error_shape(&json, "conflict");
    assert_eq!(details[0]["field"], "job_name");
    assert_eq!(details[0]["value"], "image_detection");

    // Once the first is terminated and gone, the name is free again.
    root.client.terminate("job-1").await.expect("terminate");
    root.api
        .update_job("job-1", |j| j.state = JobState::Terminated);
    let view = root
        .client
        .submit(THESIS.into(), "application/yaml")
        .await
        .expect("second");
    assert_eq!(view.id.as_str(), "job-2");
}

#[tokio::test]
async fn engine_errors_map_onto_their_status() {
    let root = Root::start().await;
    for (error, status, code) in [
        (
            ApiError::Unsupported {
                what: "logs".into(),
                reason: "no log store".into(),
            },
            501,
            "unsupported",
        ),
        (
            ApiError::Unavailable {
                reason: "cluster-a does not answer".into(),
            },
            503,
            "unavailable",
        ),
        (
            ApiError::Invalid {
                message: "bad".into(),
                details: Vec::new(),
            },
            400,
            "invalid",
        ),
    ] {
        root.api.fail_next(error.clone());
        let (got, _, json) = root.get(JOBS).await;
        assert_eq!(got, status, "{json}");
        error_shape(&json, code);
        assert_eq!(json["error"]["message"], error.to_string());
    }
}

#[tokio::test]
async fn a_body_over_one_mebibyte_is_413() {
    let root = Root::start().await;
    let mut body = vec![b'#'; 1 << 20];
    body.push(b'\n');
    let (status, json) = root.post(Some("application/yaml"), &body).await;
    assert_eq!(status, 413);
    assert_eq!(
        json,
        json!({"error": {
            "code": "payload_too_large",
            "message": "the body is larger than the limit of 1048576 bytes",
            "details": [{"field": "body", "value": "more than 1048576 bytes",
                         "rule": "must be at most 1048576 bytes (1 MiB)"}]
        }})
    );
    // Far over the limit: refused the same way, without the server holding it all.
    let (status, json) = root
        .post(Some("application/yaml"), &vec![b'#'; 16 << 20])
        .await;
    assert_eq!(status, 413, "{json}");
    // One MiB exactly is read (and refused as empty: it is all comment).
    body.pop();
    let (status, json) = root.post(Some("application/yaml"), &body).await;
    assert_eq!(status, 400, "{json}");
}

#[tokio::test]
async fn other_or_missing_content_types_are_415() {
    let root = Root::start().await;
    let (status, json) = root.post(Some("text/plain"), THESIS.as_bytes()).await;
    assert_eq!(status, 415);
    assert_eq!(
        json,
        json!({"error": {
            "code": "unsupported_media_type",
            "message": "a job descriptor is sent as one of application/yaml, application/x-yaml, text/yaml, application/json",
            "details": [{"field": "content-type", "value": "text/plain",
                         "rule": "must be one of application/yaml, application/x-yaml, text/yaml, application/json"}]
        }})
    );
    let (status, json) = root.post(None, THESIS.as_bytes()).await;
    assert_eq!(status, 415);
    assert_eq!(
        error_shape(&json, "unsupported_media_type")[0]["value"],
        "(missing)"
    );
    let (status, json) = root
        .post(Some("multipart/form-data; boundary=x"), THESIS.as_bytes())
        .await;
    assert_eq!(status, 415, "{json}");
}

#[tokio::test]
async fn a_wrong_method_is_405_and_an_unknown_route_404_in_the_json_shape() {
    let root = Root::start().await;
    let (status, headers, json) = root.raw(reqwest::Method::PUT, JOBS, None, Vec::new()).await;
    assert_eq!(status, 405);
    assert_eq!(
        json,
        json!({"error": {
            "code": "method_not_allowed",
            "message": "PUT is not allowed on /api/v1/jobs (see the Allow header)",
            "details": []
        }})
    );
    let allow = headers["allow"].to_str().expect("allow");
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");
    let (status, _, json) = root
        .raw(reqwest::Method::POST, "/healthz", None, Vec::new())
        .await;
    assert_eq!(status, 405);
    error_shape(&json, "method_not_allowed");

    let (status, _, json) = root.get("/api/v2/jobs").await;
    assert_eq!(status, 404);
    assert_eq!(
        json,
        json!({"error": {"code": "not_found", "message": "no route for GET /api/v2/jobs", "details": []}})
    );
}

#[tokio::test]
async fn bad_logs_parameters_are_400_naming_each() {
    let root = Root::start().await;
    root.client
        .submit(THESIS.into(), "application/yaml")
        .await
        .expect("submit");
    let (status, _, json) = root
        .get("/api/v1/jobs/job-1/logs?tail=abc&follow=maybe&since=1h")
        .await;
    assert_eq!(status, 400);
    let details = error_shape(&json, "invalid");
    assert_eq!(
        details,
        vec![
            json!({"field": "tail", "value": "abc", "rule": "must be a whole number of lines, 0 or more"}),
            json!({"field": "follow", "value": "maybe", "rule": "must be true or false"}),
            json!({"field": "since", "value": "1h", "rule": "is not a parameter of logs (known: tail, follow)"}),
        ]
    );
    let (status, _, _) = root.get("/api/v1/jobs/job-1/logs?tail=-1").await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn logs_are_streamed_as_text() {
    let root = Root::start().await;
    root.client
        .submit(THESIS.into(), "application/yaml")
        .await
        .expect("submit");
    for line in ["one\n", "two\n", "three\n"] {
        root.api.push_log("job-1", line);
    }
    let response = root
        .http
        .get(root.url("/api/v1/jobs/job-1/logs?tail=2"))
        .send()
        .await
        .expect("logs");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/plain; charset=utf-8"
    );
    assert_eq!(response.text().await.expect("text"), "two\nthree\n");
    assert_eq!(
        root.api.last_logs_query(),
        Some(LogsQuery {
            tail: Some(2),
            follow: false
        })
    );

    // Following: the kept line first, then a line written while the stream is open.
    let mut stream = root
        .client
        .logs(
            "job-1",
            LogsQuery {
                tail: Some(1),
                follow: true,
            },
        )
        .await
        .expect("follow");
    assert_eq!(&next_chunk(&mut stream).await[..], b"three\n");
    root.api.push_log("job-1", "four\n");
    assert_eq!(&next_chunk(&mut stream).await[..], b"four\n");
    drop(stream);
}

async fn next_chunk(stream: &mut edgeio_transport_ws::LogBytes) -> bytes::Bytes {
    tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("a chunk within 5 s")
        .expect("stream open")
        .expect("chunk")
}

#[tokio::test]
async fn terminate_is_202_in_terminating() {
    let root = Root::start().await;
    root.client
        .submit(THESIS.into(), "application/yaml")
        .await
        .expect("submit");
    let (status, _, json) = root
        .raw(
            reqwest::Method::DELETE,
            "/api/v1/jobs/job-1",
            None,
            Vec::new(),
        )
        .await;
    assert_eq!(status, 202);
    assert_eq!(json["state"], "TERMINATING");
    let view = root.client.terminate("job-1").await.expect("again");
    assert_eq!(view.state, JobState::Terminating);
    assert_eq!(view.history.len(), 2, "terminating is recorded once");
}

#[tokio::test]
async fn clusters_and_their_nodes_are_listed() {
    let root = Root::start().await;
    root.api
        .add_cluster(cluster("cluster-a"), vec![node("n1"), node("n2")]);
    root.api.add_cluster(cluster("cluster-b"), Vec::new());
    let clusters = root.client.clusters().await.expect("clusters");
    let ids: Vec<&str> = clusters.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, ["cluster-a", "cluster-b"]);
    assert_eq!(
        root.client.cluster("cluster-b").await.expect("one"),
        cluster("cluster-b")
    );
    let nodes = root.client.nodes("cluster-a").await.expect("nodes");
    assert_eq!(nodes, vec![node("n1"), node("n2")]);
    let (status, _, json) = root.get("/api/v1/clusters/cluster-a/nodes").await;
    assert_eq!(status, 200);
    assert_eq!(json[0]["capabilities"]["arch"], "amd64");
}

#[tokio::test]
async fn client_errors_read_as_one_line() {
    let root = Root::start().await;
    let err = root
        .client
        .submit(
            b"api_version: v1\njob_name: web\n".to_vec(),
            "application/yaml",
        )
        .await
        .expect_err("refused");
    assert_eq!(err.status(), Some(400));
    assert_eq!(err.code(), Some("invalid"));
    let text = err.to_string();
    assert!(
        text.starts_with("the job descriptor is not valid")
            && text.contains("image: (missing): is required")
            && !text.contains('\n'),
        "{text}"
    );

    // A port nobody listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    drop(listener);
    let url = format!("http://127.0.0.1:{port}");
    let client = RootClient::new(&url).expect("client");
    let err = client.jobs().await.expect_err("unreachable");
    assert!(matches!(err, ClientError::Unreachable { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("cannot reach {url}: connection refused")
    );

    let err = RootClient::new("https://127.0.0.1:7070").expect_err("no tls");
    assert!(err.to_string().contains("https"), "{err}");
    let err = RootClient::new("localhost").expect_err("no scheme");
    assert!(matches!(err, ClientError::InvalidUrl { .. }), "{err}");
}

#[tokio::test]
async fn a_proxy_page_is_an_api_error_not_a_decode_error() {
    // A server that is not edgeio at all: every path is 502 with an HTML body.
    let app = axum::Router::new().fallback(|| async {
        (
            axum::http::StatusCode::BAD_GATEWAY,
            "<html>upstream down</html>",
        )
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let server = serve(listener, app).expect("serve");
    let client = RootClient::new(&server.url()).expect("client");
    let (status, body) = api_error(client.jobs().await);
    assert_eq!(status, 502);
    assert_eq!(
        body.error.message,
        "HTTP 502 Bad Gateway: <html>upstream down</html>"
    );
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn scale_and_migrate_take_json_and_name_each_bad_field() {
    let root = Root::start().await;
    root.client
        .submit(THESIS.into(), "application/yaml")
        .await
        .expect("submit");
    let post = |path: &'static str, body: &'static str| {
        let root = &root;
        async move {
            root.raw(
                reqwest::Method::POST,
                path,
                Some("application/json"),
                body.as_bytes().to_vec(),
            )
            .await
        }
    };
    let scaled = root.client.scale("job-1", 3).await.expect("scale");
    assert_eq!(scaled.state, JobState::Scaling);
    assert_eq!(scaled.spec.replicas, 3);
    let moved = root
        .client
        .migrate("job-1", Some("e580"), None, None)
        .await
        .expect("migrate");
    assert_eq!(moved.state, JobState::Migrating);
    let (status, _, json) = post("/api/v1/jobs/job-1/migrate", "{}").await;
    assert_eq!(status, 202, "{json}");

    for (body, field) in [
        (r#"{"replicas": 0}"#, "replicas"),
        (r#"{"replicas": 1001}"#, "replicas"),
        (r#"{"replicas": -2}"#, "replicas"),
        (r#"{"replicas": 2.5}"#, "replicas"),
        (r#"{"replicas": "3"}"#, "replicas"),
        (r#"{}"#, "replicas"),
        (r#"{"replicas": 2, "zone": "a"}"#, "zone"),
        (r#"[2]"#, "body"),
        (r#"{"replicas": "#, "body"),
    ] {
        let (status, _, json) = post("/api/v1/jobs/job-1/scale", body).await;
        assert_eq!(status, 400, "{body}: {json}");
        let details = error_shape(&json, "invalid");
        assert_eq!(details[0]["field"], field, "{body}: {json}");
    }
    for (body, field) in [
        (r#"{"node": "a", "cluster": "b"}"#, "cluster"),
        (r#"{"node": 7}"#, "node"),
        (r#"{"instance": "a/b"}"#, "instance"),
        (r#"{"where": "x"}"#, "where"),
    ] {
        let (status, _, json) = post("/api/v1/jobs/job-1/migrate", body).await;
        assert_eq!(status, 400, "{body}: {json}");
        let details = error_shape(&json, "invalid");
        assert_eq!(details[0]["field"], field, "{body}: {json}");
    }
    let (status, _, json) = root
        .raw(
            reqwest::Method::POST,
            "/api/v1/jobs/job-1/scale",
            Some("text/plain"),
            b"3".to_vec(),
        )
        .await;
    assert_eq!(status, 415, "{json}");
    let (status, _, json) = post("/api/v1/jobs/nope/scale", r#"{"replicas": 2}"#).await;
    assert_eq!(status, 404, "{json}");
}
