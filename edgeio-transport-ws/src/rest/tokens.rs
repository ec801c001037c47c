//! `/api/v1/tokens`: issue (`POST`, the secret shown once), list (`GET`, never a secret) and
//! revoke (`DELETE /api/v1/tokens/{id}`, at once) the API's tokens. Admin only (see
//! [`needed_role`](super::auth::needed_role)).

use super::actions::{json_object, short};
use super::auth::caller_of;
use super::error::{code, ErrorDetail, Failure};
use super::path_id;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get};
use axum::{Json, Router};
use edgeio_core::auth::{Caller, NewJoinToken, NewToken, Role, TokenAuthority};
use serde_json::Value;
use std::sync::Arc;

/// The token routes over `tokens` (to be put behind the token middleware).
pub(super) fn token_routes(tokens: Arc<dyn TokenAuthority>) -> Router {
    Router::new()
        .route("/api/v1/tokens", get(list_tokens).post(create_token))
        .route("/api/v1/tokens/{id}", delete(revoke_token))
        .with_state(tokens)
}

async fn list_tokens(State(tokens): State<Arc<dyn TokenAuthority>>) -> Result<Response, Failure> {
    Ok(Json(tokens.list().await?).into_response())
}

async fn create_token(
    State(tokens): State<Arc<dyn TokenAuthority>>,
    request: Request,
) -> Result<Response, Failure> {
    let caller = caller_of(request.extensions().get::<Caller>())?;
    let map = json_object(
        request,
        &["role", "name", "ttl_s", "join", "cluster", "uses"],
    )
    .await?;
    if map.contains_key("join") {
        return create_join(tokens, caller, map).await;
    }
    let mut problems = Vec::new();
    let role = match map.get("role") {
        Some(Value::String(text)) => text
            .parse::<Role>()
            .map_err(|rule| problems.push(ErrorDetail::new("role", text.clone(), rule)))
            .ok(),
        other => {
            let value = other.map_or_else(|| "(missing)".to_string(), short);
            problems.push(ErrorDetail::new(
                "role",
                value,
                "must be viewer, operator or admin",
            ));
            None
        }
    };
    let name = match map.get("name") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) => Some(text.clone()),
        Some(other) => {
            problems.push(ErrorDetail::new("name", short(other), "must be a string"));
            None
        }
    };
    let ttl_s = match map.get("ttl_s") {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64() {
            Some(n) => Some(n),
            None => {
                problems.push(ErrorDetail::new(
                    "ttl_s",
                    short(v),
                    "must be a whole number of seconds",
                ));
                None
            }
        },
    };
    let Some(role) = role.filter(|_| problems.is_empty()) else {
        return Err(Failure::new(
            StatusCode::BAD_REQUEST,
            code::INVALID,
            "the token request is refused",
            problems,
        ));
    };
    let issued = tokens
        .create(&caller, NewToken { role, name, ttl_s })
        .await?;
    Ok((StatusCode::CREATED, Json(issued)).into_response())
}

/// `POST /api/v1/tokens` with `{"join": "cluster"|"worker", "cluster"?, "name"?, "ttl_s"?,
/// "uses"?}`: a new join token.
async fn create_join(
    tokens: Arc<dyn TokenAuthority>,
    caller: Caller,
    map: serde_json::Map<String, Value>,
) -> Result<Response, Failure> {
    let mut problems = Vec::new();
    let text = |field: &str, problems: &mut Vec<ErrorDetail>| match map.get(field) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Some(other) => {
            problems.push(ErrorDetail::new(
                field,
                short(other),
                "must be a non-empty string",
            ));
            None
        }
    };
    let number = |field: &str, max: u64, problems: &mut Vec<ErrorDetail>| match map.get(field) {
        None | Some(Value::Null) => None,
        Some(v) => match v.as_u64().filter(|n| (1..=max).contains(n)) {
            Some(n) => Some(n),
            None => {
                problems.push(ErrorDetail::new(
                    field,
                    short(v),
                    format!("must be a whole number from 1 to {max}"),
                ));
                None
            }
        },
    };
    let tier = text("join", &mut problems);
    if let Some(tier) = tier
        .as_deref()
        .filter(|t| !["cluster", "worker"].contains(t))
    {
        problems.push(ErrorDetail::new("join", tier, "must be cluster or worker"));
    }
    if map.contains_key("role") {
        problems.push(ErrorDetail::new(
            "role",
            short(&map["role"]),
            "a join token has no role: give join or role, not both",
        ));
    }
    let cluster = text("cluster", &mut problems);
    let name = text("name", &mut problems);
    let ttl_s = number("ttl_s", u64::from(u32::MAX), &mut problems);
    let uses = number("uses", 1_000_000, &mut problems).map(|n| n as u32);
    let Some(tier) = tier.filter(|_| problems.is_empty()) else {
        return Err(Failure::new(
            StatusCode::BAD_REQUEST,
            code::INVALID,
            "the join token request is refused",
            problems,
        ));
    };
    let request = NewJoinToken {
        tier,
        cluster,
        name,
        ttl_s,
        uses,
    };
    let issued = tokens.create_join(&caller, request).await?;
    Ok((StatusCode::CREATED, Json(issued)).into_response())
}

async fn revoke_token(
    State(tokens): State<Arc<dyn TokenAuthority>>,
    id: Result<Path<String>, PathRejection>,
    request: Request,
) -> Result<Response, Failure> {
    let id = path_id(id)?;
    let caller = caller_of(request.extensions().get::<Caller>())?;
    Ok(Json(tokens.revoke(&caller, &id).await?).into_response())
}
