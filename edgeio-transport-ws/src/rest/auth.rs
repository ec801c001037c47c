//! Bearer tokens on the API: who the caller is (401 when nobody), whether the route allows
//! the caller's role (403 when not), and one audit event per mutating call and per refusal.
//!
//! | needs | routes |
//! |---|---|
//! | `viewer` | `GET` jobs, clusters, nodes |
//! | `operator` | `POST`/`DELETE` jobs, scale, migrate, `GET …/logs` |
//! | `admin` | `/api/v1/tokens…`, `DELETE` clusters and nodes |

use super::error::{code, Failure};
use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use edgeio_core::auth::{AuthError, Caller, Role, TokenAuthority};
use std::net::SocketAddr;
use std::sync::Arc;

/// The role a route needs, from its method and its route pattern (`/api/v1/jobs/{id}`).
pub fn needed_role(method: &Method, route: &str) -> Role {
    if route.starts_with("/api/v1/tokens") {
        return Role::Admin;
    }
    match *method {
        Method::GET | Method::HEAD if route.ends_with("/logs") => Role::Operator,
        Method::GET | Method::HEAD => Role::Viewer,
        Method::DELETE if route.starts_with("/api/v1/clusters") => Role::Admin,
        _ => Role::Operator,
    }
}

/// The middleware: authenticates, authorizes, puts the [`Caller`] in the request's
/// extensions, and audits.
pub(super) async fn require_token(
    State(tokens): State<Arc<dyn TokenAuthority>>,
    mut request: Request,
    next: Next,
) -> Response {
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().map_or_else(
        || request.uri().path().to_string(),
        |m| m.as_str().to_string(),
    );
    let object = request.uri().path().to_string();
    let from = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_default();
    let needed = needed_role(&method, &route);
    let caller = match bearer(&request) {
        Ok(token) => tokens.authenticate(token).await,
        Err(e) => Err(e),
    };
    let caller = match caller {
        Ok(caller) => caller,
        Err(e) => {
            tracing::warn!(
                target: "edgeio::audit",
                action = %method, object = %object, from = %from, outcome = "unauthenticated",
                reason = %e, "API call refused"
            );
            return unauthenticated(&e);
        }
    };
    if !caller.role.allows(needed) {
        tracing::warn!(
            target: "edgeio::audit",
            token = %caller.token_id, role = %caller.role, action = %method, object = %object,
            from = %from, outcome = "forbidden", needed = %needed, "API call refused"
        );
        return Failure::new(
            StatusCode::FORBIDDEN,
            code::FORBIDDEN,
            format!(
                "{method} {object} needs the role {needed}; the token {:?} has {}",
                caller.token_id, caller.role
            ),
            Vec::new(),
        )
        .into_response();
    }
    let mutating = !matches!(method, Method::GET | Method::HEAD);
    let who = caller.clone();
    request.extensions_mut().insert(caller);
    let response = next.run(request).await;
    if mutating {
        tracing::info!(
            target: "edgeio::audit",
            token = %who.token_id, role = %who.role, action = %method, object = %object,
            from = %from, status = response.status().as_u16(), "API call"
        );
    }
    response
}

/// The token of `Authorization: Bearer TOKEN`.
fn bearer(request: &Request) -> Result<&str, AuthError> {
    let Some(value) = request.headers().get(AUTHORIZATION) else {
        return Err(AuthError::Missing);
    };
    let text = value.to_str().map_err(|_| AuthError::Malformed {
        rule: "the Authorization header must be ASCII".into(),
    })?;
    let (scheme, token) = text.split_once(' ').unwrap_or((text, ""));
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AuthError::Malformed {
            rule: "the Authorization header must read: Bearer TOKEN".into(),
        });
    }
    Ok(token.trim())
}

fn unauthenticated(e: &AuthError) -> Response {
    if let AuthError::Unavailable { .. } = e {
        return Failure::new(
            StatusCode::SERVICE_UNAVAILABLE,
            code::UNAVAILABLE,
            e.to_string(),
            Vec::new(),
        )
        .into_response();
    }
    let mut response = Failure::new(
        StatusCode::UNAUTHORIZED,
        code::UNAUTHENTICATED,
        e.to_string(),
        Vec::new(),
    )
    .into_response();
    response
        .headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// The caller the middleware found, for handlers behind it.
pub(super) fn caller_of(request_caller: Option<&Caller>) -> Result<Caller, Failure> {
    request_caller.cloned().ok_or_else(|| {
        Failure::new(
            StatusCode::UNAUTHORIZED,
            code::UNAUTHENTICATED,
            AuthError::Missing.to_string(),
            Vec::new(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_need_the_roles_of_the_table() {
        let cases = [
            (Method::GET, "/api/v1/jobs", Role::Viewer),
            (Method::GET, "/api/v1/jobs/{id}", Role::Viewer),
            (Method::GET, "/api/v1/clusters/{id}/nodes", Role::Viewer),
            (Method::GET, "/api/v1/jobs/{id}/logs", Role::Operator),
            (Method::POST, "/api/v1/jobs", Role::Operator),
            (Method::DELETE, "/api/v1/jobs/{id}", Role::Operator),
            (Method::POST, "/api/v1/jobs/{id}/scale", Role::Operator),
            (Method::POST, "/api/v1/jobs/{id}/migrate", Role::Operator),
            (Method::GET, "/api/v1/tokens", Role::Admin),
            (Method::POST, "/api/v1/tokens", Role::Admin),
            (Method::DELETE, "/api/v1/tokens/{id}", Role::Admin),
            (Method::DELETE, "/api/v1/clusters/{id}", Role::Admin),
            (
                Method::DELETE,
                "/api/v1/clusters/{id}/nodes/{node}",
                Role::Admin,
            ),
        ];
        for (method, route, role) in cases {
            assert_eq!(needed_role(&method, route), role, "{method} {route}");
        }
    }
}
