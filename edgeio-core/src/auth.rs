//! Who may call the root's API, as a contract: [`Role`]s, the [`Caller`] a bearer token
//! proves, and [`TokenAuthority`], which checks tokens and issues, lists and revokes them.
//!
//! The REST router (in `edgeio-transport-ws`) reads `Authorization: Bearer TOKEN`, asks the
//! authority who the caller is (401 when nobody), and compares the caller's role with what
//! the route needs (403 when short). The authority keeps its records wherever its
//! implementation likes (`edgeio-trust` keeps them in the root's store, so root replicas
//! share them); the router names none.
//!
//! | role | may |
//! |---|---|
//! | `viewer` | read jobs, clusters and nodes |
//! | `operator` | what a viewer may, and deploy, delete, scale, migrate, read logs |
//! | `admin` | everything: also tokens, and removing clusters or nodes |

use crate::api::ApiError;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// What a token allows, from least to most (`Viewer < Operator < Admin`): a role allows
/// everything a lesser one does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads jobs, clusters and nodes.
    Viewer,
    /// Also deploys, deletes, scales and migrates jobs and reads their logs.
    Operator,
    /// Everything: also tokens, and removing clusters or nodes.
    Admin,
}

impl Role {
    /// Every role, least first.
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    /// Whether this role may do what `needed` may.
    pub fn allows(self, needed: Role) -> bool {
        self >= needed
    }

    /// Its name: `viewer`, `operator` or `admin`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Role, String> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == text.trim())
            .ok_or_else(|| format!("{text:?} is not a role; write viewer, operator or admin"))
    }
}

/// Who is calling: the token's id and name (never its secret) and its role. The router
/// puts it in the request's extensions, so handlers and audit logs can name the caller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    /// The id of the token used.
    pub token_id: String,
    /// The token's name (what or whom it is for).
    pub name: String,
    /// What it allows.
    pub role: Role,
}

/// Why a bearer token proves nobody (all answered with 401).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No `Authorization` header, or not `Bearer …`.
    #[error("no token: send the header Authorization: Bearer TOKEN (edgectl --token, EDGEIO_TOKEN, or a context)")]
    Missing,
    /// Not a token of this format.
    #[error("the token is malformed: {rule}")]
    Malformed {
        /// The rule it breaks.
        rule: String,
    },
    /// No token with this id and secret (never issued, revoked, or a wrong secret: the
    /// answer does not say which, so it tells a guesser nothing).
    #[error("the token {id:?} is not known here (revoked, or never issued by this deployment)")]
    Unknown {
        /// The id the token claimed.
        id: String,
    },
    /// The token's time is over.
    #[error("the token {id:?} expired at {expired} (unix seconds); ask an admin for a new one")]
    Expired {
        /// The token's id.
        id: String,
        /// When it expired, unix seconds.
        expired: i64,
    },
    /// The tokens cannot be read now (the store is unreachable).
    #[error("tokens cannot be checked now: {reason}")]
    Unavailable {
        /// Why.
        reason: String,
    },
}

/// What kind of token: one for the API with a role, or one that lets a tier join.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum TokenKind {
    /// `Authorization: Bearer` on the REST API.
    Api {
        /// What it allows.
        role: Role,
    },
    /// A join token (`edgeio1.ID.SECRET.CAHASH`) for a cluster, or for a worker of one
    /// cluster.
    Join {
        /// `cluster` or `worker`.
        tier: String,
        /// For a worker's token: the cluster it joins.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cluster: Option<String>,
    },
}

/// A token as lists show it: never its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenView {
    /// Its id (what `revoke` takes).
    pub id: String,
    /// What or whom it is for.
    pub name: String,
    /// API token with a role, or join token.
    #[serde(flatten)]
    pub kind: TokenKind,
    /// When it was issued, unix seconds.
    pub created: i64,
    /// When it expires, unix seconds; none when it does not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<i64>,
    /// For a join token: how many more joins it allows, when limited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses_left: Option<u32>,
    /// The id of the token that created it (`bootstrap` for the first admin token).
    #[serde(default)]
    pub created_by: String,
}

/// A request for a new API token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewToken {
    /// What it allows.
    pub role: Role,
    /// What or whom it is for (default: the role's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Seconds it lives; none for a token that does not expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_s: Option<u64>,
}

/// A request for a new join token: for a cluster joining the root (`tier` `cluster`), or for
/// a worker joining cluster `cluster` (`tier` `worker`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewJoinToken {
    /// `cluster` or `worker`.
    pub tier: String,
    /// With `tier` `worker`: the cluster the worker joins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// What or whom it is for (default: the tier's name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Seconds it lives; none for a token that does not expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_s: Option<u64>,
    /// How many joins it allows; none for no limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uses: Option<u32>,
}

/// A token just issued: its view and the whole token, secret included — the only time the
/// secret is shown.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IssuedToken {
    /// The token as lists show it.
    #[serde(flatten)]
    pub view: TokenView,
    /// The whole token, to send as `Authorization: Bearer …`.
    pub token: String,
}

impl fmt::Debug for IssuedToken {
    // the secret never reaches a log
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedToken")
            .field("view", &self.view)
            .finish_non_exhaustive()
    }
}

/// Checks bearer tokens and keeps the API's tokens. Object-safe (`Arc<dyn TokenAuthority>`).
#[cfg_attr(any(test, feature = "testing"), mockall::automock)]
#[async_trait]
pub trait TokenAuthority: Send + Sync {
    /// Who `token` (the text after `Bearer `) proves, or why nobody.
    async fn authenticate(&self, token: &str) -> Result<Caller, AuthError>;

    /// Issues a new API token on behalf of `by`.
    async fn create(&self, by: &Caller, request: NewToken) -> Result<IssuedToken, ApiError>;

    /// Every live token (API and join), sorted by id; never a secret.
    async fn list(&self) -> Result<Vec<TokenView>, ApiError>;

    /// Ends token `id` at once; answers its view. `NotFound` when there is none.
    async fn revoke(&self, by: &Caller, id: &str) -> Result<TokenView, ApiError>;

    /// Issues a new join token on behalf of `by`. `Unsupported` unless the authority also
    /// keeps the deployment's join tokens (the reference root does).
    async fn create_join(
        &self,
        by: &Caller,
        request: NewJoinToken,
    ) -> Result<IssuedToken, ApiError> {
        let _ = (by, request);
        Err(ApiError::Unsupported {
            what: "join tokens".into(),
            reason: "this token authority keeps API tokens only".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_allow_what_lesser_ones_do() {
        assert!(Role::Admin.allows(Role::Operator));
        assert!(Role::Operator.allows(Role::Viewer));
        assert!(Role::Operator.allows(Role::Operator));
        assert!(!Role::Viewer.allows(Role::Operator));
        assert!(!Role::Operator.allows(Role::Admin));
    }

    #[test]
    fn roles_read_and_refuse_by_name() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
        }
        let e = "root".parse::<Role>().unwrap_err();
        assert!(
            e.contains("\"root\"") && e.contains("viewer, operator or admin"),
            "{e}"
        );
    }

    #[test]
    fn an_issued_token_hides_its_secret_in_debug() {
        let issued = IssuedToken {
            view: TokenView {
                id: "abcd1234".into(),
                name: "ci".into(),
                kind: TokenKind::Api { role: Role::Viewer },
                created: 1,
                expires: None,
                uses_left: None,
                created_by: "bootstrap".into(),
            },
            token: "edgeio-api1.abcd1234.SECRETSECRET".into(),
        };
        assert!(!format!("{issued:?}").contains("SECRET"));
        let json = serde_json::to_value(&issued).unwrap();
        assert_eq!(json["kind"], "api");
        assert_eq!(json["role"], "viewer");
    }
}
