//! Bearer tokens on the REST API over real HTTP: anonymous and unknown callers get 401, a
//! role short of the route 403 (both in the usual JSON error shape), allowed callers get
//! through, and tokens are issued, listed and revoked through `/api/v1/tokens`.
#![cfg(feature = "testing")]

use async_trait::async_trait;
use edgeio_core::api::ApiError;
use edgeio_core::auth::{
    AuthError, Caller, IssuedToken, NewToken, Role, TokenAuthority, TokenKind, TokenView,
};
use edgeio_core::model::KnownRuntimes;
use edgeio_transport_ws::testing::FakeRootApi;
use edgeio_transport_ws::{secured_router, serve, ErrorResponse, ServerHandle};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Tokens in a map: `token-N` proves the caller stored under it.
#[derive(Default)]
struct Tokens {
    known: Mutex<BTreeMap<String, Caller>>,
}

impl Tokens {
    fn with(role: Role) -> (Arc<Tokens>, String) {
        let tokens = Arc::new(Tokens::default());
        let token = tokens.add(role, "first");
        (tokens, token)
    }

    fn add(&self, role: Role, name: &str) -> String {
        let mut known = self.known.lock().unwrap();
        let id = format!("id{}", known.len());
        let token = format!("token-{id}");
        known.insert(
            token.clone(),
            Caller {
                token_id: id,
                name: name.into(),
                role,
            },
        );
        token
    }

    fn view(caller: &Caller) -> TokenView {
        TokenView {
            id: caller.token_id.clone(),
            name: caller.name.clone(),
            kind: TokenKind::Api { role: caller.role },
            created: 0,
            expires: None,
            uses_left: None,
            created_by: String::new(),
        }
    }
}

#[async_trait]
impl TokenAuthority for Tokens {
    async fn authenticate(&self, token: &str) -> Result<Caller, AuthError> {
        self.known
            .lock()
            .unwrap()
            .get(token)
            .cloned()
            .ok_or(AuthError::Unknown { id: "?".into() })
    }

    async fn create(&self, _by: &Caller, request: NewToken) -> Result<IssuedToken, ApiError> {
        let name = request.name.unwrap_or_default();
        let token = self.add(request.role, &name);
        let caller = self.known.lock().unwrap()[&token].clone();
        Ok(IssuedToken {
            view: Tokens::view(&caller),
            token,
        })
    }

    async fn list(&self) -> Result<Vec<TokenView>, ApiError> {
        Ok(self
            .known
            .lock()
            .unwrap()
            .values()
            .map(Tokens::view)
            .collect())
    }

    async fn revoke(&self, _by: &Caller, id: &str) -> Result<TokenView, ApiError> {
        let mut known = self.known.lock().unwrap();
        let token = known
            .iter()
            .find(|(_, c)| c.token_id == id)
            .map(|(t, _)| t.clone())
            .ok_or(ApiError::NotFound {
                kind: "token",
                id: id.into(),
            })?;
        Ok(Tokens::view(&known.remove(&token).unwrap()))
    }
}

struct Root {
    server: ServerHandle,
    tokens: Arc<Tokens>,
    http: reqwest::Client,
}

impl Root {
    async fn start(first: Role) -> (Root, String) {
        let (tokens, token) = Tokens::with(first);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let app = secured_router(
            Arc::new(FakeRootApi::new()),
            KnownRuntimes::default(),
            tokens.clone(),
        );
        let server = serve(listener, app).unwrap();
        let root = Root {
            server,
            tokens,
            http: reqwest::Client::new(),
        };
        (root, token)
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<(&str, String)>,
    ) -> (StatusCode, reqwest::header::HeaderMap, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.server.url()));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some((content_type, body)) = body {
            request = request.header("content-type", content_type).body(body);
        }
        let response = request.send().await.unwrap();
        let (status, headers) = (response.status(), response.headers().clone());
        let body = response.json().await.unwrap_or(Value::Null);
        (status, headers, body)
    }
}

const DESCRIPTOR: &str = "api_version: v0.1\njob_name: web\nimage: nginx\nimage_runtime: docker\nrequirements:\n  cpu: 1\n  memory: 100\n";

fn error_of(body: &Value) -> ErrorResponse {
    serde_json::from_value(body.clone()).expect("the usual error shape")
}

#[tokio::test]
async fn anonymous_malformed_and_unknown_callers_get_401_in_the_usual_shape() {
    let (root, _) = Root::start(Role::Admin).await;
    for header in [None, Some("nonsense"), Some("token-unknown")] {
        let (status, headers, body) = root.call(Method::GET, "/api/v1/jobs", header, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{header:?}");
        assert_eq!(headers["www-authenticate"], "Bearer");
        assert_eq!(error_of(&body).error.code, "unauthenticated");
    }
    let raw = root
        .http
        .get(format!("{}/api/v1/jobs", root.server.url()))
        .header("authorization", "Basic dXNlcjpwYXNz")
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), StatusCode::UNAUTHORIZED);
    let e = error_of(&raw.json().await.unwrap());
    assert!(e.error.message.contains("Bearer TOKEN"), "{e}");
    // health stays open for load balancers; unknown paths are still 404
    let (status, _, _) = root.call(Method::GET, "/healthz", None, None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = root.call(Method::GET, "/api/v1/nothing", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_viewer_reads_but_cannot_deploy_and_an_operator_deploys() {
    let (root, viewer) = Root::start(Role::Viewer).await;
    let operator = root.tokens.add(Role::Operator, "ops");
    let (status, _, _) = root
        .call(Method::GET, "/api/v1/jobs", Some(&viewer), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let post = || Some(("application/yaml", DESCRIPTOR.to_string()));
    let (status, _, body) = root
        .call(Method::POST, "/api/v1/jobs", Some(&viewer), post())
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let e = error_of(&body);
    assert_eq!(e.error.code, "forbidden");
    assert!(
        e.error.message.contains("needs the role operator") && e.error.message.contains("viewer"),
        "{e}"
    );
    let (status, _, body) = root
        .call(Method::POST, "/api/v1/jobs", Some(&operator), post())
        .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    // logs are the operator's; tokens the admin's
    let id = body["id"].as_str().unwrap().to_string();
    let logs = format!("/api/v1/jobs/{id}/logs");
    let (status, _, _) = root.call(Method::GET, &logs, Some(&viewer), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _, _) = root
        .call(Method::GET, "/api/v1/tokens", Some(&operator), None)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn an_admin_issues_lists_and_revokes_tokens_and_a_revoked_one_ends_at_once() {
    let (root, admin) = Root::start(Role::Admin).await;
    let request = json!({"role": "viewer", "name": "dashboard", "ttl_s": 3600}).to_string();
    let (status, _, issued) = root
        .call(
            Method::POST,
            "/api/v1/tokens",
            Some(&admin),
            Some(("application/json", request)),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{issued}");
    assert_eq!(issued["role"], "viewer");
    let token = issued["token"].as_str().unwrap().to_string();
    let id = issued["id"].as_str().unwrap().to_string();
    let (status, _, _) = root
        .call(Method::GET, "/api/v1/jobs", Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::OK);

    let (_, _, list) = root
        .call(Method::GET, "/api/v1/tokens", Some(&admin), None)
        .await;
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert!(!list.to_string().contains(&token), "a list shows no secret");

    let (status, _, _) = root
        .call(
            Method::DELETE,
            &format!("/api/v1/tokens/{id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = root
        .call(Method::GET, "/api/v1/jobs", Some(&token), None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _, _) = root
        .call(
            Method::DELETE,
            &format!("/api/v1/tokens/{id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_bad_token_request_is_refused_naming_each_field() {
    let (root, admin) = Root::start(Role::Admin).await;
    let request = json!({"role": "root", "ttl_s": "1d", "colour": 1}).to_string();
    let (status, _, body) = root
        .call(
            Method::POST,
            "/api/v1/tokens",
            Some(&admin),
            Some(("application/json", request)),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let fields: Vec<String> = error_of(&body)
        .error
        .details
        .into_iter()
        .map(|d| d.field)
        .collect();
    assert_eq!(fields, ["colour"], "unknown fields first");
    let request = json!({"role": "root", "ttl_s": "1d"}).to_string();
    let (_, _, body) = root
        .call(
            Method::POST,
            "/api/v1/tokens",
            Some(&admin),
            Some(("application/json", request)),
        )
        .await;
    let fields: Vec<String> = error_of(&body)
        .error
        .details
        .into_iter()
        .map(|d| d.field)
        .collect();
    assert_eq!(fields, ["role", "ttl_s"]);
    let (_, _, list) = root
        .call(Method::GET, "/api/v1/tokens", Some(&admin), None)
        .await;
    assert_eq!(list.as_array().unwrap().len(), 1, "nothing half-created");
}

#[tokio::test]
async fn join_token_requests_are_checked_field_by_field_and_reach_the_authority() {
    let (root, admin) = Root::start(Role::Admin).await;
    let post = |body: Value| Some(("application/json", body.to_string()));
    let (status, _, body) = root
        .call(
            Method::POST,
            "/api/v1/tokens",
            Some(&admin),
            post(json!({"join": "robot", "role": "admin", "uses": 0})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let fields: Vec<String> = error_of(&body)
        .error
        .details
        .into_iter()
        .map(|d| d.field)
        .collect();
    assert_eq!(fields, ["join", "role", "uses"]);
    // this authority keeps API tokens only: it says so (501), nothing half-made
    let (status, _, body) = root
        .call(
            Method::POST,
            "/api/v1/tokens",
            Some(&admin),
            post(json!({"join": "cluster", "uses": 1})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_IMPLEMENTED, "{body}");
    assert!(body.to_string().contains("join tokens"), "{body}");
}

#[tokio::test]
async fn a_role_run_without_security_says_so_in_healthz_and_nowhere_else() {
    let app = edgeio_transport_ws::health_warning(
        edgeio_transport_ws::router(Arc::new(FakeRootApi::new())),
        "insecure: started with --insecure",
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = serve(listener, app).unwrap();
    let http = reqwest::Client::new();
    let health: Value = http
        .get(format!("{}/healthz", server.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["warning"], "insecure: started with --insecure");
    let jobs = http
        .get(format!("{}/api/v1/jobs", server.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(jobs.status(), StatusCode::OK, "the routes still answer");
}
