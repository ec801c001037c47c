//! The gate in front of a parent's registrar: a child joins with a join token the parent
//! issued (spent, and logged), is admitted with its own credential, and proves itself with
//! that credential from then on; a removed member is refused until it joins again with a new
//! token. Refusals are answered with one line naming the fix, logged under `edgeio::audit`,
//! and slowed down when they come in a row (a guesser gets a few tries a minute).

use async_trait::async_trait;
use edgeio_core::transport::Registrar;
use edgeio_core::wire::{Credentials, ErrorBody, RegisterReply, RegisterRequest, Secret};
use edgeio_trust::{TrustError, TrustFolder, CREDENTIAL_PREFIX};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a parent hands a child it admits, besides its credential: a cluster gets an
/// intermediate CA, a worker its MQTT password and signing key.
pub(crate) type Issue =
    Box<dyn Fn(&TrustFolder, &str, i64) -> Result<Credentials, TrustError> + Send + Sync>;

/// The longest a refusal is held back.
const MAX_DELAY: Duration = Duration::from_secs(5);
/// Refusals further apart than this are not "in a row".
const FAILURE_MEMORY: Duration = Duration::from_secs(60);

/// A [`Registrar`] that checks join tokens and credentials before the engine's.
pub(crate) struct JoinGate {
    inner: Arc<dyn Registrar>,
    folder: Arc<Mutex<TrustFolder>>,
    /// `cluster` or `worker`: who joins here.
    tier: &'static str,
    /// The flag that carries the token, for the refusal's message.
    flag: &'static str,
    issue: Issue,
    failures: Mutex<(u32, Option<Instant>)>,
}

impl JoinGate {
    pub(crate) fn new(
        inner: Arc<dyn Registrar>,
        folder: Arc<Mutex<TrustFolder>>,
        tier: &'static str,
        flag: &'static str,
        issue: Issue,
    ) -> JoinGate {
        JoinGate {
            inner,
            folder,
            tier,
            flag,
            issue,
            failures: Mutex::new((0, None)),
        }
    }

    fn folder(&self) -> std::sync::MutexGuard<'_, TrustFolder> {
        self.folder.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Refuses `request` with `message`, after a delay that doubles with each refusal in a
    /// row (250 ms, 500 ms … up to [`MAX_DELAY`]).
    async fn refuse(&self, name: &str, why: String, message: String) -> ErrorBody {
        tracing::warn!(
            target: "edgeio::audit",
            action = "join", tier = self.tier, name = %name, outcome = "refused", reason = %why,
            "join refused"
        );
        let delay = {
            let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
            let recent = failures.1.is_some_and(|at| at.elapsed() < FAILURE_MEMORY);
            failures.0 = if recent {
                failures.0.saturating_add(1)
            } else {
                1
            };
            failures.1 = Some(Instant::now());
            (Duration::from_millis(250) * 2u32.saturating_pow(failures.0.min(8) - 1)).min(MAX_DELAY)
        };
        tokio::time::sleep(delay).await;
        ErrorBody {
            code: "unauthenticated".into(),
            message,
        }
    }

    /// Checks the credential of a member coming back.
    async fn returning(
        &self,
        request: RegisterRequest,
        credential: &str,
    ) -> Result<RegisterReply, ErrorBody> {
        let name = request.name.clone();
        let Some(id) = request.previous_id.clone() else {
            let why = "a credential without the member's id".to_string();
            let message = format!(
                "this {} has a credential but no id in its data folder; join again with {}",
                self.tier, self.flag
            );
            return Err(self.refuse(&name, why, message).await);
        };
        let checked = self.folder().recognise(&id, credential);
        if let Err(e) = checked {
            let message = format!(
                "{} {id:?} is not a member here (removed, or its data folder is another deployment's): join again with a new {}",
                self.tier, self.flag
            );
            return Err(self.refuse(&name, e.to_string(), message).await);
        }
        let reply = self.inner.register(request).await?;
        if reply.id != id {
            // the credential is the id's: a registrar that renames would hand it to another
            let why = format!("credential of {id:?} but registered as {:?}", reply.id);
            let message = format!("{} {id:?} cannot change its id", self.tier);
            return Err(self.refuse(&name, why, message).await);
        }
        tracing::info!(target: "edgeio::audit", action = "rejoin", tier = self.tier, member = %id, "member back");
        Ok(reply)
    }

    /// Spends a join token and admits the member.
    async fn joining(
        &self,
        request: RegisterRequest,
        token: &str,
    ) -> Result<RegisterReply, ErrorBody> {
        let name = request.name.clone();
        let now = now_s();
        let spent = self.folder().spend_join_token(token, now);
        let token_id = match spent {
            Ok(id) => id,
            Err(e) => {
                let message = match &e {
                    TrustError::Expired { id } => format!("the join token {id} has expired; ask for a new one"),
                    TrustError::UsedUp { id } => format!("the join token {id} is used up; ask for a new one"),
                    TrustError::Malformed { .. } => format!("{e}"),
                    _ => format!("the join token is not valid here (wrong token, or another deployment's); use this parent's join.token with {}", self.flag),
                };
                return Err(self.refuse(&name, e.to_string(), message).await);
            }
        };
        let mut reply = self.inner.register(request).await?;
        let issued = {
            let mut folder = self.folder();
            folder
                .admit(&reply.id, self.tier, &token_id, now)
                .and_then(|credential| {
                    let mut credentials = (self.issue)(&folder, &reply.id, now)?;
                    credentials.credential = Secret::new(credential);
                    Ok(credentials)
                })
        };
        match issued {
            Ok(credentials) => reply.credentials = Some(credentials),
            Err(e) => {
                return Err(ErrorBody::unavailable(format!(
                    "cannot issue the {}'s credential: {e}",
                    self.tier
                )))
            }
        }
        tracing::info!(
            target: "edgeio::audit",
            action = "join", tier = self.tier, member = %reply.id, token = %token_id,
            outcome = "admitted", "member joined"
        );
        Ok(reply)
    }
}

#[async_trait]
impl Registrar for JoinGate {
    async fn register(&self, mut request: RegisterRequest) -> Result<RegisterReply, ErrorBody> {
        let Some(auth) = request.auth.take() else {
            let name = request.name.clone();
            let message = format!(
                "no join token: start the {} with {} TOKEN (its parent's join.token)",
                self.tier, self.flag
            );
            return Err(self.refuse(&name, "no token".into(), message).await);
        };
        let text = auth.expose();
        if text.starts_with(CREDENTIAL_PREFIX) {
            self.returning(request, text).await
        } else {
            self.joining(request, text).await
        }
    }
}

pub(crate) fn now_s() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// What the root issues a cluster: an intermediate CA under the deployment's, named for it.
pub(crate) fn issue_cluster_ca() -> Issue {
    Box::new(|folder: &TrustFolder, id: &str, now: i64| {
        let ca = folder
            .ca
            .intermediate(&format!("edgeio cluster {id}"), now)?;
        let own = ca.certificate();
        Ok(Credentials {
            ca_pem: folder.ca.bundle_pem(),
            credential: Secret::new(String::new()),
            ca_cert_pem: Some(own.cert_pem.clone()),
            ca_key_pem: Some(Secret::new(own.key_pem.clone())),
            ca_not_after: Some(own.not_after),
            mqtt_password: None,
            signing_key: None,
        })
    })
}
