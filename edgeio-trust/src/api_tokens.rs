//! The API's bearer tokens, kept in the root's store so that root replicas on etcd share
//! them and a revocation ends a token at every replica at once.
//!
//! A token reads `edgeioapi1.ID.SECRET`; the store keeps, under `trust/api-tokens/ID`, its
//! name, role, times and the SHA-256 of its secret — never the secret. Authenticating reads
//! the record each time (one key read), so a revoked or expired token is refused on the
//! next request with no cache to wait out.

use crate::token::{hex, random_text, sha256, ALPHABET};
use crate::TrustError;
use async_trait::async_trait;
use edgeio_core::api::ApiError;
use edgeio_core::auth::{
    AuthError, Caller, IssuedToken, NewToken, Role, TokenAuthority, TokenKind, TokenView,
};
use edgeio_core::clock::Clock;
use edgeio_core::job::FieldError;
use edgeio_core::store::{Store, StoreError, StoreExt};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// What every API token starts with (and the format's version).
pub const API_TOKEN_PREFIX: &str = "edgeioapi1";
/// Where the records live in the store (one key per token id).
pub const API_TOKENS_KEY: &str = "trust/api-tokens/";
/// The `created_by` of the admin token a root makes on its first start.
pub const BOOTSTRAP: &str = "bootstrap";
/// The longest name a token may carry.
pub const MAX_NAME: usize = 64;
/// The longest time to live: ten years, so `now + ttl` cannot overflow into nonsense.
pub const MAX_TTL_S: u64 = 10 * 365 * 24 * 3600;

const ID_LEN: usize = 8;
const SECRET_LEN: usize = 32;

/// What the store keeps of one API token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct ApiTokenRecord {
    id: String,
    name: String,
    role: Role,
    secret_sha256: String,
    created: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires: Option<i64>,
    created_by: String,
}

impl ApiTokenRecord {
    fn view(&self) -> TokenView {
        TokenView {
            id: self.id.clone(),
            name: self.name.clone(),
            kind: TokenKind::Api { role: self.role },
            created: self.created,
            expires: self.expires,
            uses_left: None,
            created_by: self.created_by.clone(),
        }
    }
}

/// The root's API tokens over its store: a [`TokenAuthority`].
#[derive(Clone)]
pub struct ApiTokens {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for ApiTokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiTokens")
            .field("store", &self.store.backend())
            .finish_non_exhaustive()
    }
}

impl ApiTokens {
    /// Tokens kept in `store`, timed by `clock`.
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>) -> ApiTokens {
        ApiTokens { store, clock }
    }

    fn now(&self) -> i64 {
        i64::try_from(self.clock.now_ms() / 1000).unwrap_or(i64::MAX)
    }

    /// On a root's first start: when the store holds no admin token, issues one named
    /// `admin` and answers it (the only time its secret is seen); `None` when one exists.
    pub async fn bootstrap_admin(&self) -> Result<Option<IssuedToken>, ApiError> {
        let records = self.records().await?;
        if records.iter().any(|r| r.role == Role::Admin) {
            return Ok(None);
        }
        let bootstrap = Caller {
            token_id: BOOTSTRAP.to_string(),
            name: BOOTSTRAP.to_string(),
            role: Role::Admin,
        };
        let request = NewToken {
            role: Role::Admin,
            name: Some("admin".to_string()),
            ttl_s: None,
        };
        self.create(&bootstrap, request).await.map(Some)
    }

    async fn records(&self) -> Result<Vec<ApiTokenRecord>, ApiError> {
        let listing = self.store.list(API_TOKENS_KEY).await.map_err(unavailable)?;
        let mut records = Vec::with_capacity(listing.items.len());
        for item in listing.items {
            match serde_json::from_slice::<ApiTokenRecord>(&item.value) {
                Ok(record) => records.push(record),
                // a damaged record proves nobody; say so rather than fail every list
                Err(e) => {
                    tracing::warn!(key = %item.key, error = %e, "unreadable API token record skipped")
                }
            }
        }
        records.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(records)
    }
}

fn unavailable(e: StoreError) -> ApiError {
    ApiError::Unavailable {
        reason: format!("the token store: {e}"),
    }
}

fn invalid(field: &str, value: &str, rule: &str) -> ApiError {
    ApiError::Invalid {
        message: format!("{field}: {rule}"),
        details: vec![FieldError {
            path: field.to_string(),
            value: value.to_string(),
            rule: rule.to_string(),
        }],
    }
}

/// Splits `edgeioapi1.ID.SECRET`, checking each part.
fn split(token: &str) -> Result<(&str, &str), AuthError> {
    let malformed = |rule: &str| AuthError::Malformed {
        rule: rule.to_string(),
    };
    let parts: Vec<&str> = token.trim().split('.').collect();
    if parts[0] != API_TOKEN_PREFIX {
        let hint = if parts[0] == crate::TOKEN_PREFIX {
            " (this is a join token: it joins a cluster or worker, it does not call the API)"
        } else {
            ""
        };
        return Err(malformed(&format!(
            "an API token starts with {API_TOKEN_PREFIX}.{hint}"
        )));
    }
    let [_, id, secret] = parts[..] else {
        return Err(malformed(&format!(
            "an API token is {API_TOKEN_PREFIX}.ID.SECRET (three parts joined by '.')"
        )));
    };
    let plain = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| ALPHABET.contains(&b));
    if !plain(id, ID_LEN) || !plain(secret, SECRET_LEN) {
        return Err(malformed(
            "the id is 8 and the secret 32 lowercase letters or digits",
        ));
    }
    Ok((id, secret))
}

#[async_trait]
impl TokenAuthority for ApiTokens {
    async fn authenticate(&self, token: &str) -> Result<Caller, AuthError> {
        let (id, secret) = split(token)?;
        let record = self
            .store
            .get_json::<ApiTokenRecord>(&format!("{API_TOKENS_KEY}{id}"))
            .await
            .map_err(|e| AuthError::Unavailable {
                reason: e.to_string(),
            })?
            .map(|(record, _)| record);
        let Some(record) = record else {
            return Err(AuthError::Unknown { id: id.to_string() });
        };
        // digests are compared, so the comparison's time says nothing about the secret
        if hex(&sha256(secret.as_bytes())) != record.secret_sha256 {
            return Err(AuthError::Unknown { id: id.to_string() });
        }
        if let Some(expired) = record.expires.filter(|at| self.now() >= *at) {
            return Err(AuthError::Expired {
                id: id.to_string(),
                expired,
            });
        }
        Ok(Caller {
            token_id: record.id,
            name: record.name,
            role: record.role,
        })
    }

    async fn create(&self, by: &Caller, request: NewToken) -> Result<IssuedToken, ApiError> {
        let name = request
            .name
            .unwrap_or_else(|| request.role.as_str().to_string());
        let name_ok = !name.is_empty()
            && name.len() <= MAX_NAME
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c));
        if !name_ok {
            return Err(invalid(
                "name",
                &name.chars().take(MAX_NAME + 8).collect::<String>(),
                &format!("1 to {MAX_NAME} letters, digits, '-', '_', '.' or '@'"),
            ));
        }
        if let Some(ttl) = request.ttl_s.filter(|ttl| *ttl == 0 || *ttl > MAX_TTL_S) {
            return Err(invalid(
                "ttl_s",
                &ttl.to_string(),
                &format!("from 1 to {MAX_TTL_S} seconds (ten years); omit it for no expiry"),
            ));
        }
        let random = |len| {
            random_text(len).map_err(|e: TrustError| ApiError::Unavailable {
                reason: e.to_string(),
            })
        };
        let (id, secret) = (random(ID_LEN)?, random(SECRET_LEN)?);
        let now = self.now();
        let record = ApiTokenRecord {
            id: id.clone(),
            name,
            role: request.role,
            secret_sha256: hex(&sha256(secret.as_bytes())),
            created: now,
            expires: request.ttl_s.map(|ttl| now + ttl as i64),
            created_by: by.token_id.clone(),
        };
        self.store
            .cas_json(
                &format!("{API_TOKENS_KEY}{id}"),
                edgeio_core::store::Precondition::Absent,
                &record,
            )
            .await
            .map_err(unavailable)?;
        tracing::info!(
            target: "edgeio::audit",
            action = "token.create",
            by = %by.token_id,
            token = %id,
            role = %record.role,
            name = %record.name,
            "API token issued"
        );
        Ok(IssuedToken {
            view: record.view(),
            token: format!("{API_TOKEN_PREFIX}.{id}.{secret}"),
        })
    }

    async fn list(&self) -> Result<Vec<TokenView>, ApiError> {
        Ok(self
            .records()
            .await?
            .iter()
            .map(ApiTokenRecord::view)
            .collect())
    }

    async fn revoke(&self, by: &Caller, id: &str) -> Result<TokenView, ApiError> {
        let key = format!("{API_TOKENS_KEY}{id}");
        let found = self
            .store
            .get_json::<ApiTokenRecord>(&key)
            .await
            .map_err(unavailable)?;
        let Some((record, _)) = found else {
            return Err(ApiError::NotFound {
                kind: "token",
                id: id.to_string(),
            });
        };
        self.store.delete(&key).await.map_err(unavailable)?;
        tracing::info!(
            target: "edgeio::audit",
            action = "token.revoke",
            by = %by.token_id,
            token = %id,
            role = %record.role,
            "API token revoked"
        );
        Ok(record.view())
    }
}
