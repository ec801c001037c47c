//! A router that can be replaced while its server runs.

use axum::extract::{Request, State};
use axum::response::Response;
use axum::Router;
use std::sync::{Arc, RwLock};
use tower::Service;

/// Serves whichever router was set last. A root replica answers the API by forwarding it to
/// the leader while it stands by and with its own engine once it leads, on the same listener
/// and beside the same WebSocket routes (which must not drop their links at the switch).
/// Cheap to clone; clones share the router.
#[derive(Clone)]
pub struct RouterSwitch {
    current: Arc<RwLock<Router>>,
}

impl std::fmt::Debug for RouterSwitch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterSwitch").finish_non_exhaustive()
    }
}

impl RouterSwitch {
    /// A switch serving `initial`.
    pub fn new(initial: Router) -> RouterSwitch {
        RouterSwitch {
            current: Arc::new(RwLock::new(initial)),
        }
    }

    /// Serves `router` from the next request on (requests under way finish on the old one).
    pub fn set(&self, router: Router) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = router;
    }

    /// The router to serve (or merge with routes of its own): every request it gets goes to
    /// the router set last.
    pub fn router(&self) -> Router {
        Router::new().fallback(dispatch).with_state(self.clone())
    }
}

async fn dispatch(State(switch): State<RouterSwitch>, request: Request) -> Response {
    let mut router = switch
        .current
        .read()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    // a Router is always ready and never fails (its error type is Infallible)
    match router.call(request).await {
        Ok(response) => response,
        Err(never) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;

    async fn text(router: &Router, path: &str) -> String {
        let response = router
            .clone()
            .call(Request::builder().uri(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let bytes = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn requests_go_to_the_router_set_last_beside_fixed_routes() {
        let switch = RouterSwitch::new(Router::new().route("/api", get(|| async { "standby" })));
        let app = Router::new()
            .route("/ws", get(|| async { "link" }))
            .merge(switch.router());
        assert_eq!(text(&app, "/api").await, "standby");
        switch.set(Router::new().route("/api", get(|| async { "leader" })));
        assert_eq!(text(&app, "/api").await, "leader");
        assert_eq!(text(&app, "/ws").await, "link");
    }
}
