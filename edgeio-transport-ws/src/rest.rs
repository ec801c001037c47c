//! The root's REST API: an axum [`Router`] that maps HTTP onto a [`RootApi`] and every
//! failure onto one JSON error shape ([`ErrorResponse`]).
//!
//! | method and path | answer |
//! |---|---|
//! | `POST /api/v1/jobs` (a descriptor, YAML or JSON) | 202, the [`JobView`], `Location` |
//! | `GET /api/v1/jobs` | 200, every [`JobView`] |
//! | `GET /api/v1/jobs/{id}` | 200, the [`JobView`] |
//! | `DELETE /api/v1/jobs/{id}` | 202, the [`JobView`] (TERMINATING) |
//! | `GET /api/v1/jobs/{id}/logs?tail=N&follow=true` | 200, `text/plain`, streamed |
//! | `GET /api/v1/clusters` | 200, every [`ClusterView`](edgeio_core::api::ClusterView) |
//! | `GET /api/v1/clusters/{id}` | 200, the cluster |
//! | `GET /api/v1/clusters/{id}/nodes` | 200, its [`NodeView`](edgeio_core::api::NodeView)s |
//! | `GET /healthz` | 200, `{"status":"ok"}` |
//! | `POST /api/v1/tokens`, `GET /api/v1/tokens`, `DELETE /api/v1/tokens/{id}` | with [`secured_router`]: issue (201, the secret once), list, revoke |
//!
//! [`secured_router`] puts every route but `/healthz` behind bearer tokens with roles (see
//! [`needed_role`]).
//!
//! The router does no work of its own beyond reading and checking requests: the descriptor
//! is parsed here (so a bad one never reaches the engine), everything else is the trait's.

mod actions;
mod auth;
mod error;
mod forward;
mod switch;
mod tokens;

pub use auth::needed_role;
pub use error::{code, ErrorDetail, ErrorInfo, ErrorResponse};
pub use forward::{forwarding_router, FindLeader, LEADER_HEADER};
pub use switch::RouterSwitch;

use axum::body::{Body, Bytes};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Query, Request, State};
use axum::http::header::{CONTENT_TYPE, LOCATION};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use edgeio_core::api::{JobView, LogsQuery, RootApi};
use edgeio_core::auth::TokenAuthority;
use edgeio_core::job::{parse_descriptor, DescriptorError, MAX_DESCRIPTOR_BYTES};
use edgeio_core::model::KnownRuntimes;
use error::Failure;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The content types `POST /api/v1/jobs` reads (parameters such as `charset` aside). The
/// descriptor parser reads YAML and JSON alike; the header is checked so that a client
/// posting a form or a file upload by mistake is told so, rather than getting YAML errors.
pub const DESCRIPTOR_CONTENT_TYPES: [&str; 4] = [
    "application/yaml",
    "application/x-yaml",
    "text/yaml",
    "application/json",
];

/// The body of `GET /healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// `ok` while the process serves requests.
    pub status: String,
    /// Something the operator must know, such as running without security.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

#[derive(Clone)]
struct AppState {
    api: Arc<dyn RootApi>,
    known: Arc<KnownRuntimes>,
}

/// The root's REST API over `api`, with [`health_router`] included. Descriptors may name the
/// default runtimes only (docker, native, mirage, alias unikernel); see
/// [`router_with_runtimes`] for more.
///
/// Unknown paths answer 404 and known paths with another method 405, both in the
/// [`ErrorResponse`] shape. The router sets that fallback itself, so merge routers that have
/// none (such as [`WsParent::router`](crate::WsParent::router)) into it, not the reverse.
pub fn router(api: Arc<dyn RootApi>) -> Router {
    router_with_runtimes(api, KnownRuntimes::default())
}

/// [`router`], resolving the descriptors' `image_runtime` through `known` (a root with
/// runtime plugins registers their kinds there).
pub fn router_with_runtimes(api: Arc<dyn RootApi>, known: KnownRuntimes) -> Router {
    finish(api_routes(api, known))
}

/// [`router_with_runtimes`] behind bearer tokens: every route but `/healthz` needs
/// `Authorization: Bearer TOKEN` proving a caller to `tokens` (401 otherwise) whose role
/// allows the route ([`needed_role`]; 403 otherwise), and `/api/v1/tokens` issues, lists and
/// revokes tokens. Every mutating call and every refusal is logged under the tracing target
/// `edgeio::audit` with the token's id, never its secret.
pub fn secured_router(
    api: Arc<dyn RootApi>,
    known: KnownRuntimes,
    tokens: Arc<dyn TokenAuthority>,
) -> Router {
    let routes = api_routes(api, known)
        .merge(tokens::token_routes(tokens.clone()))
        // route_layer: only matched routes are checked, so an unknown path is still a 404
        .route_layer(axum::middleware::from_fn_with_state(
            tokens,
            auth::require_token,
        ));
    finish(routes)
}

fn api_routes(api: Arc<dyn RootApi>, known: KnownRuntimes) -> Router {
    let state = AppState {
        api,
        known: Arc::new(known),
    };
    Router::new()
        .route("/api/v1/jobs", get(list_jobs).post(submit_job))
        .route("/api/v1/jobs/{id}", get(get_job).delete(delete_job))
        .route("/api/v1/jobs/{id}/logs", get(job_logs))
        .route("/api/v1/jobs/{id}/scale", post(actions::scale_job))
        .route("/api/v1/jobs/{id}/migrate", post(actions::migrate_job))
        .route("/api/v1/clusters", get(list_clusters))
        .route("/api/v1/clusters/{id}", get(get_cluster))
        .route("/api/v1/clusters/{id}/nodes", get(list_nodes))
        .with_state(state)
}

/// The health route, the JSON fallbacks and the body limit around `routes`.
fn finish(routes: Router) -> Router {
    routes
        .merge(health_router())
        .fallback(not_found)
        // Applies to the routes above only, so it comes after all of them.
        .method_not_allowed_fallback(method_not_allowed)
        // The only body read is a descriptor: refuse more as it streams in, never buffered.
        .layer(DefaultBodyLimit::max(MAX_DESCRIPTOR_BYTES))
}

/// `GET /healthz` → 200 `{"status":"ok"}`, for load balancers and supervisors. It has no
/// fallback, so every binary can merge it into its own routes.
pub fn health_router() -> Router {
    Router::new().route("/healthz", get(healthz))
}

async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok".to_string(),
        warning: None,
    })
}

/// `app` with `GET /healthz` answering `{"status":"ok","warning":WARNING}`, so that load
/// balancers and operators see a role that runs without security.
pub fn health_warning(app: Router, warning: &'static str) -> Router {
    app.layer(axum::middleware::from_fn(
        move |request: Request, next: axum::middleware::Next| async move {
            if request.uri().path() == "/healthz" && request.method() == Method::GET {
                return Json(Health {
                    status: "ok".to_string(),
                    warning: Some(warning.to_string()),
                })
                .into_response();
            }
            next.run(request).await
        },
    ))
}

async fn not_found(method: Method, uri: Uri) -> Failure {
    Failure::new(
        StatusCode::NOT_FOUND,
        code::NOT_FOUND,
        format!("no route for {method} {}", uri.path()),
        Vec::new(),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> Failure {
    Failure::new(
        StatusCode::METHOD_NOT_ALLOWED,
        code::METHOD_NOT_ALLOWED,
        format!(
            "{method} is not allowed on {} (see the Allow header)",
            uri.path()
        ),
        Vec::new(),
    )
}

/// The id in the path; a segment that does not decode is the client's error, said in JSON.
fn path_id(id: Result<Path<String>, PathRejection>) -> Result<String, Failure> {
    id.map(|Path(id)| id).map_err(|e| {
        Failure::new(
            StatusCode::BAD_REQUEST,
            code::INVALID,
            "the id in the path cannot be read",
            vec![ErrorDetail::new("id", "(undecodable)", e.body_text())],
        )
    })
}

async fn submit_job(State(state): State<AppState>, request: Request) -> Result<Response, Failure> {
    check_descriptor_type(request.headers())?;
    // Checked before the body is read, so a wrong upload is not read at all.
    let bytes = Bytes::from_request(request, &()).await.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large()
        } else {
            Failure::new(
                StatusCode::BAD_REQUEST,
                code::INVALID,
                "cannot read the body",
                vec![ErrorDetail::new("body", "(unreadable)", e.body_text())],
            )
        }
    })?;
    let spec = parse_descriptor(&bytes, &state.known).map_err(descriptor_failure)?;
    let view = state.api.submit(spec).await?;
    accepted_with_location(view)
}

fn accepted_with_location(view: JobView) -> Result<Response, Failure> {
    let mut response = (StatusCode::ACCEPTED, Json(&view)).into_response();
    // Job ids hold only [A-Za-z0-9._-], so the header is always valid; if a future id type
    // allowed more, the answer is still right without the header.
    if let Ok(location) = HeaderValue::from_str(&format!("/api/v1/jobs/{}", view.id)) {
        response.headers_mut().insert(LOCATION, location);
    }
    Ok(response)
}

fn check_descriptor_type(headers: &HeaderMap) -> Result<(), Failure> {
    let raw = headers.get(CONTENT_TYPE);
    let essence = raw.and_then(|v| v.to_str().ok()).map(|v| {
        v.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    });
    if let Some(essence) = &essence {
        if DESCRIPTOR_CONTENT_TYPES.contains(&essence.as_str()) {
            return Ok(());
        }
    }
    let value = match raw {
        None => "(missing)".to_string(),
        Some(v) => String::from_utf8_lossy(v.as_bytes())
            .chars()
            .take(100)
            .collect(),
    };
    let accepted = DESCRIPTOR_CONTENT_TYPES.join(", ");
    Err(Failure::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        code::UNSUPPORTED_MEDIA_TYPE,
        format!("a job descriptor is sent as one of {accepted}"),
        vec![ErrorDetail::new(
            "content-type",
            value,
            format!("must be one of {accepted}"),
        )],
    ))
}

fn too_large() -> Failure {
    Failure::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        code::PAYLOAD_TOO_LARGE,
        format!("the body is larger than the limit of {MAX_DESCRIPTOR_BYTES} bytes"),
        vec![ErrorDetail::new(
            "body",
            format!("more than {MAX_DESCRIPTOR_BYTES} bytes"),
            format!("must be at most {MAX_DESCRIPTOR_BYTES} bytes (1 MiB)"),
        )],
    )
}

fn descriptor_failure(e: DescriptorError) -> Failure {
    let (value, rule) = match &e {
        DescriptorError::Invalid(problems) => {
            let count = problems.len();
            let noun = if count == 1 { "problem" } else { "problems" };
            return Failure::new(
                StatusCode::BAD_REQUEST,
                code::INVALID,
                format!("the job descriptor is not valid ({count} {noun})"),
                problems.iter().map(ErrorDetail::from).collect(),
            );
        }
        DescriptorError::TooLarge { .. } => return too_large(),
        DescriptorError::Empty => (
            "(empty)".to_string(),
            "must hold a job descriptor".to_string(),
        ),
        DescriptorError::NotUtf8 { offset } => (
            format!("invalid byte at offset {offset}"),
            "must be UTF-8 text".to_string(),
        ),
        DescriptorError::Syntax {
            line,
            column,
            message,
        } => {
            let at = match (line, column) {
                (Some(line), Some(column)) => format!("line {line} column {column}"),
                (Some(line), None) => format!("line {line}"),
                _ => "(unknown position)".to_string(),
            };
            (at, message.clone())
        }
        other => ("(body)".to_string(), other.to_string()),
    };
    Failure::new(
        StatusCode::BAD_REQUEST,
        code::INVALID,
        e.to_string(),
        vec![ErrorDetail::new("body", value, rule)],
    )
}

async fn list_jobs(State(state): State<AppState>) -> Result<Response, Failure> {
    Ok(Json(state.api.jobs().await?).into_response())
}

async fn get_job(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, Failure> {
    let id = path_id(id)?;
    Ok(Json(state.api.job(&id).await?).into_response())
}

async fn delete_job(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, Failure> {
    let id = path_id(id)?;
    let view = state.api.terminate(&id).await?;
    Ok((StatusCode::ACCEPTED, Json(view)).into_response())
}

async fn job_logs(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Response, Failure> {
    let id = path_id(id)?;
    let query = logs_query(query)?;
    let stream = state.api.logs(&id, query).await?;
    let stream = stream.map(move |chunk| {
        chunk.map_err(|e| {
            // The status line is gone by now: the client sees the body cut short, the
            // operator sees why here.
            tracing::warn!(job = %id, error = %e, "log stream failed");
            e
        })
    });
    Ok((
        [(CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from_stream(stream),
    )
        .into_response())
}

/// Reads `tail` and `follow` by hand so that every refusal names the parameter, the value
/// and the rule, in the JSON shape (axum's own `Query` rejection is plain text).
fn logs_query(
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<LogsQuery, Failure> {
    let pairs = query.map(|Query(pairs)| pairs).map_err(|e| {
        Failure::new(
            StatusCode::BAD_REQUEST,
            code::INVALID,
            "the query string cannot be read",
            vec![ErrorDetail::new("query", "(undecodable)", e.body_text())],
        )
    })?;
    let mut logs = LogsQuery::default();
    let mut details = Vec::new();
    for (name, value) in pairs {
        match name.as_str() {
            "tail" => match value.parse::<usize>() {
                Ok(n) => logs.tail = Some(n),
                Err(_) => details.push(ErrorDetail::new(
                    "tail",
                    value,
                    "must be a whole number of lines, 0 or more",
                )),
            },
            "follow" => match value.as_str() {
                "true" => logs.follow = true,
                "false" => logs.follow = false,
                _ => details.push(ErrorDetail::new("follow", value, "must be true or false")),
            },
            _ => details.push(ErrorDetail::new(
                name,
                value,
                "is not a parameter of logs (known: tail, follow)",
            )),
        }
    }
    if details.is_empty() {
        Ok(logs)
    } else {
        Err(Failure::new(
            StatusCode::BAD_REQUEST,
            code::INVALID,
            "the logs query is not valid",
            details,
        ))
    }
}

async fn list_clusters(State(state): State<AppState>) -> Result<Response, Failure> {
    Ok(Json(state.api.clusters().await?).into_response())
}

async fn get_cluster(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, Failure> {
    let id = path_id(id)?;
    Ok(Json(state.api.cluster(&id).await?).into_response())
}

async fn list_nodes(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
) -> Result<Response, Failure> {
    let id = path_id(id)?;
    Ok(Json(state.api.nodes(&id).await?).into_response())
}
