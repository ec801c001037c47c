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
use edgeio_core::auth::{Caller, NewToken, Role, TokenAuthority};
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
    let map = json_object(request, &["role", "name", "ttl_s"]).await?;
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

async fn revoke_token(
    State(tokens): State<Arc<dyn TokenAuthority>>,
    id: Result<Path<String>, PathRejection>,
    request: Request,
) -> Result<Response, Failure> {
    let id = path_id(id)?;
    let caller = caller_of(request.extensions().get::<Caller>())?;
    Ok(Json(tokens.revoke(&caller, &id).await?).into_response())
}
