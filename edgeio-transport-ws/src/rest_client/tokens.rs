//! The API's tokens through [`RootClient`]: issue, list, revoke (admin only).

use super::{ClientError, RootClient};
use edgeio_core::auth::{IssuedToken, NewJoinToken, NewToken, TokenView};
use reqwest::Method;

impl RootClient {
    /// `POST /api/v1/tokens`: a new API token; the answer holds its secret, shown only now.
    pub async fn create_token(&self, request: &NewToken) -> Result<IssuedToken, ClientError> {
        let body = serde_json::to_vec(request).map_err(|e| ClientError::Decode {
            request: "POST /api/v1/tokens".into(),
            reason: e.to_string(),
        })?;
        self.json(
            Method::POST,
            "/api/v1/tokens".to_string(),
            Some((body, "application/json")),
        )
        .await
    }

    /// `POST /api/v1/tokens` with `join`: a new join token; the answer holds it, shown only
    /// now.
    pub async fn create_join_token(
        &self,
        request: &NewJoinToken,
    ) -> Result<IssuedToken, ClientError> {
        let body = serde_json::to_value(request)
            .map(|mut v| {
                // the wire names the tier `join`
                if let Some(tier) = v.as_object_mut().and_then(|o| o.remove("tier")) {
                    v["join"] = tier;
                }
                v
            })
            .and_then(|v| serde_json::to_vec(&v))
            .map_err(|e| ClientError::Decode {
                request: "POST /api/v1/tokens".into(),
                reason: e.to_string(),
            })?;
        self.json(
            Method::POST,
            "/api/v1/tokens".to_string(),
            Some((body, "application/json")),
        )
        .await
    }

    /// `GET /api/v1/tokens`: every live token, without secrets.
    pub async fn tokens(&self) -> Result<Vec<TokenView>, ClientError> {
        self.json(Method::GET, "/api/v1/tokens".to_string(), None)
            .await
    }

    /// `DELETE /api/v1/tokens/{id}`: ends the token at once.
    pub async fn revoke_token(&self, id: &str) -> Result<TokenView, ClientError> {
        let path = format!("/api/v1/tokens/{}", super::segment(id));
        self.json(Method::DELETE, path, None).await
    }
}
