//! The root's handle: the user API (`RootApi`) and the clusters' registrar.

use super::*;

/// The root engine's handle: the user API ([`RootApi`]) and the clusters' registrar. Cheap
/// to clone.
#[derive(Clone)]
pub struct RootHandle {
    pub(super) shared: Arc<Shared>,
}

/// The answer to a change the root could not store: 503, retry. The change was undone
/// (`restore`) and nothing it asked of the clusters was sent: a retry starts afresh.
fn not_stored(job: &str, e: edgeio_core::store::StoreError) -> ApiError {
    ApiError::Unavailable {
        reason: format!("job {job}: {e}; retry"),
    }
}

/// Puts job `id` back as it was before a change the store refused.
fn restore(state: &mut RootState, id: &str, before: Option<RootJob>) {
    match before {
        Some(record) => {
            state.jobs.insert(id.to_string(), record);
        }
        None => {
            state.jobs.remove(id);
        }
    }
}

impl RootHandle {
    /// How many state changes the engine refused so far (late, duplicate or post-termination
    /// events; each was logged with its ids). A test or the simulator reads it.
    pub fn refused_transitions(&self) -> u64 {
        self.shared.state().refusals.count()
    }

    fn not_found(kind: &'static str, id: &str) -> ApiError {
        ApiError::NotFound {
            kind,
            id: id.to_string(),
        }
    }

    async fn ask(&self, cluster: &str, query: Query) -> Result<serde_json::Value, ApiError> {
        let (tx, rx) = oneshot::channel();
        let (envelope, timeout) = {
            let mut state = self.shared.state();
            let record = state
                .clusters
                .get(cluster)
                .ok_or_else(|| Self::not_found("cluster", cluster))?;
            if record.lifecycle.state() != ClusterState::Active {
                return Err(ApiError::Unavailable {
                    reason: format!("cluster {cluster} is INACTIVE"),
                });
            }
            let envelope = state.msg(Message::Query(query));
            state.queries.insert(envelope.id.clone(), tx);
            (envelope, state.config.query_timeout)
        };
        let id = envelope.id.clone();
        let down = self.shared.down().ok_or_else(|| ApiError::Unavailable {
            reason: "the root engine is not running".into(),
        })?;
        let sent = down.send(cluster, &envelope).await;
        let answer = match sent {
            Err(e) => Err(ApiError::Unavailable {
                reason: format!("cannot reach cluster {cluster}: {e}"),
            }),
            Ok(()) => match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(answer)) => answer,
                Ok(Err(_)) => Err(ApiError::Unavailable {
                    reason: format!("cluster {cluster} went away before answering"),
                }),
                Err(_) => Err(ApiError::Unavailable {
                    reason: format!("cluster {cluster} did not answer within {timeout:?}"),
                }),
            },
        };
        self.shared.state().queries.remove(&id);
        answer
    }
}

#[async_trait]
impl Registrar for RootHandle {
    async fn register(&self, request: RegisterRequest) -> Result<RegisterReply, ErrorBody> {
        let mut fx = Fx::default();
        let reply = self.shared.state().register(request, &mut fx);
        // an id the store does not hold is not given out: the cluster dials again
        if let Err(e) = self.shared.apply(fx).await {
            return Err(ErrorBody::unavailable(format!(
                "root cannot register {} now: {e}; retry",
                reply.as_ref().map_or("the cluster", |r| r.id.as_str())
            )));
        }
        reply
    }
}

#[async_trait]
impl RootApi for RootHandle {
    async fn submit(&self, spec: JobSpec) -> Result<JobView, ApiError> {
        let record = {
            let mut state = self.shared.state();
            let taken = state.reserving.contains(&spec.name)
                || state
                    .jobs
                    .values()
                    .any(|j| j.is_live() && j.spec.name == spec.name);
            if taken {
                return Err(ApiError::Conflict {
                    message: format!("a job named {:?} is already live", spec.name),
                    details: vec![FieldError {
                        path: "job_name".into(),
                        value: spec.name.clone(),
                        rule: "must not be the name of a live job (terminate it first)".into(),
                    }],
                });
            }
            state.reserving.push(spec.name.clone());
            let id = new_job_id(&spec.name, &state.cx);
            RootJob::new(
                id,
                spec,
                JobState::Requested,
                state.cx.now_ms(),
                "submitted",
            )
        };
        // written before it exists for anyone: a failed write leaves no half-created job
        let written = self
            .shared
            .store
            .put_json(&job_key(record.id.as_str()), &record)
            .await;
        let mut fx = Fx::default();
        let view = {
            let mut state = self.shared.state();
            state.reserving.retain(|n| n != &record.spec.name);
            if let Err(e) = written {
                return Err(ApiError::Unavailable {
                    reason: format!("cannot store the job: {e}"),
                });
            }
            let id = record.id.to_string();
            let view = record.view();
            state.jobs.insert(id.clone(), record);
            state.schedule(&id, &mut fx);
            view
        };
        // the job is stored (REQUESTED); if its placement cannot be stored yet, its deploy
        // waits for the store (effects::Core::apply) and the job is placed as stored
        if let Err(e) = self.shared.apply(fx).await {
            warn!(job = %view.id, error = %e, "job stored, its placement waits for the store");
        }
        Ok(view)
    }

    async fn jobs(&self) -> Result<Vec<JobView>, ApiError> {
        let state = self.shared.state();
        let mut jobs: Vec<&RootJob> = state.jobs.values().collect();
        jobs.sort_by_key(|j| j.lifecycle.history().first().map_or(0, |h| h.at_ms));
        Ok(jobs.into_iter().map(RootJob::view).collect())
    }

    async fn job(&self, id: &str) -> Result<JobView, ApiError> {
        self.shared
            .state()
            .jobs
            .get(id)
            .map(RootJob::view)
            .ok_or_else(|| Self::not_found("job", id))
    }

    async fn terminate(&self, id: &str) -> Result<JobView, ApiError> {
        let mut fx = Fx::default();
        let before;
        let view = {
            let mut state = self.shared.state();
            before = state.jobs.get(id).cloned();
            state.terminate(id, &mut fx)?
        };
        self.shared
            .apply_or_undo(fx, |state| restore(state, id, before))
            .await
            .map_err(|e| not_stored(id, e))?;
        Ok(view)
    }

    async fn scale(&self, id: &str, replicas: u32) -> Result<JobView, ApiError> {
        let mut fx = Fx::default();
        let before;
        let view = {
            let mut state = self.shared.state();
            before = state.jobs.get(id).cloned();
            state.scale(id, replicas, &mut fx)?
        };
        self.shared
            .apply_or_undo(fx, |state| restore(state, id, before))
            .await
            .map_err(|e| not_stored(id, e))?;
        Ok(view)
    }

    async fn migrate(
        &self,
        id: &str,
        target: MigrateTarget,
        instance: Option<InstanceId>,
    ) -> Result<JobView, ApiError> {
        let mut fx = Fx::default();
        let before;
        let view = {
            let mut state = self.shared.state();
            before = state.jobs.get(id).cloned();
            state.migrate(id, target, instance, &mut fx)?
        };
        self.shared
            .apply_or_undo(fx, |state| restore(state, id, before))
            .await
            .map_err(|e| not_stored(id, e))?;
        Ok(view)
    }

    async fn clusters(&self) -> Result<Vec<ClusterView>, ApiError> {
        Ok(self
            .shared
            .state()
            .clusters
            .values()
            .map(ClusterRecord::view)
            .collect())
    }

    async fn cluster(&self, id: &str) -> Result<ClusterView, ApiError> {
        self.shared
            .state()
            .clusters
            .get(id)
            .map(ClusterRecord::view)
            .ok_or_else(|| Self::not_found("cluster", id))
    }

    async fn nodes(&self, cluster: &str) -> Result<Vec<NodeView>, ApiError> {
        let value = self.ask(cluster, Query::Nodes).await?;
        serde_json::from_value(value).map_err(|e| ApiError::Unavailable {
            reason: format!("cluster {cluster} answered with unreadable nodes: {e}"),
        })
    }

    async fn logs(&self, job: &str, query: LogsQuery) -> Result<LogStream, ApiError> {
        let (id, cluster) = {
            let state = self.shared.state();
            let record = state
                .jobs
                .get(job)
                .ok_or_else(|| Self::not_found("job", job))?;
            (record.id.clone(), record.at.cluster.clone())
        };
        let Some(cluster) = cluster else {
            return Ok(Box::pin(futures::stream::empty()));
        };
        let logs = Query::Logs {
            job: id,
            tail: query.tail,
            follow: query.follow,
        };
        if query.follow {
            return self.follow(&cluster, logs).await;
        }
        let value = self.ask(&cluster, logs).await?;
        let text = value.as_str().unwrap_or_default().to_string();
        Ok(Box::pin(futures::stream::once(async move {
            Ok(bytes::Bytes::from(text))
        })))
    }
}
