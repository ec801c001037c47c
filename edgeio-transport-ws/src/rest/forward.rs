//! The API of a standby root replica: every request is passed to the replica that leads
//! (found anew for each request, so a takeover is followed at once), and its answer is passed
//! back as it comes (status, content type, body streamed, so followed logs keep flowing).
//! On its own it takes no cluster (`/ws/...` answers 503, and a cluster given several root
//! URLs dials the next one); the reference root mounts its WebSocket routes in front of it,
//! so that every replica takes clusters and relays them through the store.

use super::error::{code, Failure};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use edgeio_core::job::MAX_DESCRIPTOR_BYTES;
use futures::future::BoxFuture;
use futures::TryStreamExt;
use std::sync::Arc;
use std::time::Duration;

/// Finds the URL (`http://HOST:PORT`) of the replica that leads now: `Ok(None)` while none
/// does (an election is under way), `Err` with the reason when it cannot be asked.
pub type FindLeader =
    Arc<dyn Fn() -> BoxFuture<'static, Result<Option<String>, String>> + Send + Sync>;

/// The response header naming the replica that answered a forwarded request.
pub const LEADER_HEADER: &str = "x-edgeio-leader";

#[derive(Clone)]
struct Forward {
    find: FindLeader,
    client: reqwest::Client,
}

/// The router of a standby replica: `/healthz` answers for this process, `/ws/...` refuses
/// with 503 (unless WebSocket routes are merged in front), everything else is forwarded to the leader
/// found by `find`. A request body larger than a descriptor may be is refused (413) without
/// being read whole.
pub fn forwarding_router(find: FindLeader) -> Router {
    let client = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a client without TLS builds");
    Router::new()
        .route("/ws/{*rest}", any(refuse_cluster))
        .fallback(forward)
        .with_state(Forward { find, client })
        .merge(super::health_router())
}

async fn refuse_cluster(State(f): State<Forward>) -> Response {
    let leader = match (f.find)().await {
        Ok(Some(url)) => format!("the leader is {url}"),
        _ => "no replica leads right now".to_string(),
    };
    Failure::new(
        StatusCode::SERVICE_UNAVAILABLE,
        code::UNAVAILABLE,
        format!("this root is a standby replica and takes no cluster; {leader}"),
        Vec::new(),
    )
    .into_response()
}

fn unavailable(message: String) -> Response {
    Failure::new(
        StatusCode::SERVICE_UNAVAILABLE,
        code::UNAVAILABLE,
        message,
        Vec::new(),
    )
    .into_response()
}

async fn forward(State(f): State<Forward>, request: Request) -> Response {
    let leader = match (f.find)().await {
        Ok(Some(url)) => url,
        Ok(None) => return unavailable(
            "no root replica leads right now (an election is under way); retry in a few seconds"
                .into(),
        ),
        Err(e) => return unavailable(format!("cannot find the leading root replica: {e}")),
    };
    let (parts, body) = request.into_parts();
    let body = match axum::body::to_bytes(body, MAX_DESCRIPTOR_BYTES).await {
        Ok(bytes) => bytes,
        Err(_) => {
            return Failure::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                code::PAYLOAD_TOO_LARGE,
                format!("the body is larger than the limit of {MAX_DESCRIPTOR_BYTES} bytes"),
                Vec::new(),
            )
            .into_response()
        }
    };
    let path = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_string();
    let url = format!("{}{path}", leader.trim_end_matches('/'));
    let mut outgoing = f.client.request(parts.method.clone(), &url).body(body);
    // the leader checks the caller's token itself (it shares the tokens through the store)
    for name in [header::CONTENT_TYPE, header::ACCEPT, header::AUTHORIZATION] {
        if let Some(value) = parts.headers.get(&name) {
            outgoing = outgoing.header(name, value);
        }
    }
    let answer = match outgoing.send().await {
        Ok(answer) => answer,
        Err(e) => {
            return unavailable(format!(
                "the leading root replica {leader} cannot be reached: {e}"
            ))
        }
    };
    let mut response = Response::builder().status(answer.status());
    if let Some(value) = answer.headers().get(header::CONTENT_TYPE) {
        response = response.header(header::CONTENT_TYPE, value);
    }
    if let Ok(value) = HeaderValue::from_str(&leader) {
        response = response.header(LEADER_HEADER, value);
    }
    let stream = answer.bytes_stream().map_err(std::io::Error::other);
    response
        .body(Body::from_stream(stream))
        .unwrap_or_else(|e| unavailable(format!("cannot pass the leader's answer on: {e}")))
}
