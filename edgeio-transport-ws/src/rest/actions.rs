//! `POST /api/v1/jobs/{id}/scale` and `POST /api/v1/jobs/{id}/migrate`: small JSON bodies,
//! each field checked with its own error (field, value, rule).

use super::error::{code, ErrorDetail, Failure};
use super::{path_id, AppState};
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use edgeio_core::job::MAX_REPLICAS;
use edgeio_core::model::InstanceId;
use edgeio_core::wire::MigrateTarget;
use serde_json::{Map, Value};

fn invalid(message: impl Into<String>, details: Vec<ErrorDetail>) -> Failure {
    Failure::new(StatusCode::BAD_REQUEST, code::INVALID, message, details)
}

/// The body as a JSON object whose keys are among `known`.
pub(super) async fn json_object(
    request: Request,
    known: &[&str],
) -> Result<Map<String, Value>, Failure> {
    let essence = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    if essence.as_deref() != Some("application/json") {
        let value = essence.unwrap_or_else(|| "(missing)".into());
        return Err(Failure::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            code::UNSUPPORTED_MEDIA_TYPE,
            "this request's body is JSON",
            vec![ErrorDetail::new(
                "content-type",
                value,
                "must be application/json",
            )],
        ));
    }
    let bytes = Bytes::from_request(request, &()).await.map_err(|e| {
        invalid(
            "cannot read the body",
            vec![ErrorDetail::new("body", "(unreadable)", e.body_text())],
        )
    })?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
        invalid(
            "the body is not JSON",
            vec![ErrorDetail::new(
                "body",
                format!("line {} column {}", e.line(), e.column()),
                e.to_string(),
            )],
        )
    })?;
    let Value::Object(map) = value else {
        return Err(invalid(
            "the body must be a JSON object",
            vec![ErrorDetail::new(
                "body",
                short(&value),
                "must be an object such as {\"replicas\": 3}",
            )],
        ));
    };
    let unknown: Vec<ErrorDetail> = map
        .iter()
        .filter(|(k, _)| !known.contains(&k.as_str()))
        .map(|(k, v)| {
            ErrorDetail::new(
                k.clone(),
                short(v),
                format!("is not a field here; the fields are {}", known.join(", ")),
            )
        })
        .collect();
    if !unknown.is_empty() {
        return Err(invalid("the body has unknown fields", unknown));
    }
    Ok(map)
}

/// A value as people read it, cut to 80 characters.
pub(super) fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 80 {
        format!("{}…", text.chars().take(80).collect::<String>())
    } else {
        text
    }
}

fn string_field(map: &Map<String, Value>, field: &str) -> Result<Option<String>, ErrorDetail> {
    match map.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.trim().to_string())),
        Some(other) => Err(ErrorDetail::new(
            field,
            short(other),
            "must be a non-empty string",
        )),
    }
}

/// `POST /api/v1/jobs/{id}/scale` with `{"replicas": N}` → 202 and the job in SCALING.
pub(super) async fn scale_job(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    request: Request,
) -> Result<Response, Failure> {
    let id = path_id(id)?;
    let map = json_object(request, &["replicas"]).await?;
    let rule = format!("must be a whole number from 1 to {MAX_REPLICAS}");
    let replicas = match map.get("replicas") {
        None => {
            return Err(invalid(
                "replicas is missing",
                vec![ErrorDetail::new("replicas", "(missing)", rule)],
            ))
        }
        Some(v) => v
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .filter(|n| (1..=MAX_REPLICAS).contains(n))
            .ok_or_else(|| {
                invalid(
                    format!("replicas {} is refused", short(v)),
                    vec![ErrorDetail::new("replicas", short(v), rule)],
                )
            })?,
    };
    let view = state.api.scale(&id, replicas).await?;
    Ok((StatusCode::ACCEPTED, Json(view)).into_response())
}

/// `POST /api/v1/jobs/{id}/migrate` with `{"node": N}`, `{"cluster": C}` or `{}` (anywhere
/// else), and optionally `"instance"` → 202 and the job in MIGRATING.
pub(super) async fn migrate_job(
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    request: Request,
) -> Result<Response, Failure> {
    let id = path_id(id)?;
    let map = json_object(request, &["node", "cluster", "instance"]).await?;
    let mut problems = Vec::new();
    let mut field = |name: &str| match string_field(&map, name) {
        Ok(v) => v,
        Err(e) => {
            problems.push(e);
            None
        }
    };
    let (node, cluster, instance) = (field("node"), field("cluster"), field("instance"));
    let instance = instance.and_then(|text| match InstanceId::new(text.as_str()) {
        Ok(i) => Some(i),
        Err(e) => {
            problems.push(ErrorDetail::new("instance", text, e.to_string()));
            None
        }
    });
    if node.is_some() && cluster.is_some() {
        problems.push(ErrorDetail::new(
            "cluster",
            cluster.clone().unwrap_or_default(),
            "name a node or a cluster, not both (a node already names its cluster)",
        ));
    }
    if !problems.is_empty() {
        return Err(invalid("the migration request is refused", problems));
    }
    let target = match (node, cluster) {
        (Some(n), _) => MigrateTarget::Node(n),
        (None, Some(c)) => MigrateTarget::Cluster(c),
        (None, None) => MigrateTarget::Anywhere,
    };
    let view = state.api.migrate(&id, target, instance).await?;
    Ok((StatusCode::ACCEPTED, Json(view)).into_response())
}
