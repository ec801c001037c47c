//! [`FakeRootApi`]: an in-memory [`RootApi`] for testing the REST router and its clients
//! without an engine (feature `testing`).

use async_trait::async_trait;
use bytes::Bytes;
use edgeio_core::api::{ApiError, ClusterView, JobView, LogStream, LogsQuery, NodeView, RootApi};
use edgeio_core::job::{FieldError, JobSpec};
use edgeio_core::model::JobId;
use edgeio_core::state::{HistoryEntry, JobState};
use futures::StreamExt;
use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio::sync::broadcast;

/// An in-memory [`RootApi`]: jobs in a map (ids `job-1`, `job-2` … in submission order),
/// clusters and nodes as the test sets them, logs as the test pushes them.
///
/// Like the real engine, [`RootApi::submit`] refuses a job whose name is taken by a live job
/// (not TERMINATED or FAILED) with [`ApiError::Conflict`], and [`RootApi::terminate`] moves
/// a job to TERMINATING. Nothing else happens by itself: a test moves jobs along with
/// [`FakeRootApi::update_job`]. [`FakeRootApi::fail_next`] makes the next call fail.
#[derive(Debug, Default)]
pub struct FakeRootApi {
    state: Mutex<FakeState>,
}

#[derive(Debug, Default)]
struct FakeState {
    jobs: BTreeMap<u64, JobView>,
    next_job: u64,
    clusters: Vec<ClusterView>,
    nodes: BTreeMap<String, Vec<NodeView>>,
    logs: BTreeMap<String, JobLogs>,
    fail_next: Option<ApiError>,
    last_logs_query: Option<LogsQuery>,
}

#[derive(Debug)]
struct JobLogs {
    chunks: Vec<Bytes>,
    live: broadcast::Sender<Bytes>,
}

impl Default for JobLogs {
    fn default() -> Self {
        JobLogs {
            chunks: Vec::new(),
            live: broadcast::channel(1024).0,
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl FakeRootApi {
    /// No jobs, no clusters.
    pub fn new() -> FakeRootApi {
        FakeRootApi::default()
    }

    // A panicking test must not turn every later call into a second panic.
    fn state(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds (or replaces, by id) a cluster and the nodes it reports.
    pub fn add_cluster(&self, cluster: ClusterView, nodes: Vec<NodeView>) {
        let mut state = self.state();
        state.nodes.insert(cluster.id.clone(), nodes);
        state.clusters.retain(|c| c.id != cluster.id);
        state.clusters.push(cluster);
    }

    /// Changes a job in place (state, history, instances, cluster …); false when there is no
    /// such job.
    pub fn update_job(&self, id: &str, change: impl FnOnce(&mut JobView)) -> bool {
        let mut state = self.state();
        match state.jobs.values_mut().find(|j| j.id.as_str() == id) {
            Some(job) => {
                change(job);
                true
            }
            None => false,
        }
    }

    /// Appends log bytes to a job (one chunk, e.g. one line), and sends them to the streams
    /// following it.
    pub fn push_log(&self, job: &str, chunk: impl Into<Bytes>) {
        let chunk = chunk.into();
        let mut state = self.state();
        let logs = state.logs.entry(job.to_string()).or_default();
        logs.chunks.push(chunk.clone());
        // No follower is not an error.
        let _ = logs.live.send(chunk);
    }

    /// The next call of any [`RootApi`] method returns `error` instead of its answer.
    pub fn fail_next(&self, error: ApiError) {
        self.state().fail_next = Some(error);
    }

    /// The query of the last [`RootApi::logs`] call.
    pub fn last_logs_query(&self) -> Option<LogsQuery> {
        self.state().last_logs_query
    }

    fn take_failure(&self) -> Result<MutexGuard<'_, FakeState>, ApiError> {
        let mut state = self.state();
        match state.fail_next.take() {
            Some(error) => Err(error),
            None => Ok(state),
        }
    }
}

fn job_not_found(id: &str) -> ApiError {
    ApiError::NotFound {
        kind: "job",
        id: id.to_string(),
    }
}

fn cluster_not_found(id: &str) -> ApiError {
    ApiError::NotFound {
        kind: "cluster",
        id: id.to_string(),
    }
}

fn find_job<'a>(state: &'a mut FakeState, id: &str) -> Result<&'a mut JobView, ApiError> {
    state
        .jobs
        .values_mut()
        .find(|j| j.id.as_str() == id)
        .ok_or_else(|| job_not_found(id))
}

#[async_trait]
impl RootApi for FakeRootApi {
    async fn submit(&self, spec: JobSpec) -> Result<JobView, ApiError> {
        let mut state = self.take_failure()?;
        let alive = state.jobs.values().find(|j| {
            j.name == spec.name && !matches!(j.state, JobState::Terminated | JobState::Failed)
        });
        if let Some(alive) = alive {
            return Err(ApiError::Conflict {
                message: format!(
                    "a job named {:?} is alive: {} ({})",
                    spec.name, alive.id, alive.state
                ),
                details: vec![FieldError {
                    path: "job_name".to_string(),
                    value: spec.name.clone(),
                    rule: "must not be the name of a live job (one not TERMINATED or FAILED)"
                        .to_string(),
                }],
            });
        }
        state.next_job += 1;
        let number = state.next_job;
        let id = JobId::new(format!("job-{number}")).map_err(|e| ApiError::Unavailable {
            reason: e.to_string(),
        })?;
        let view = JobView {
            id,
            name: spec.name.clone(),
            state: JobState::Requested,
            history: vec![HistoryEntry {
                state: JobState::Requested,
                at_ms: now_ms(),
                reason: "submitted".to_string(),
            }],
            cluster: None,
            parts: Vec::new(),
            instances: Vec::new(),
            unschedulable: Vec::new(),
            spec,
        };
        state.jobs.insert(number, view.clone());
        Ok(view)
    }

    async fn jobs(&self) -> Result<Vec<JobView>, ApiError> {
        let state = self.take_failure()?;
        Ok(state.jobs.values().cloned().collect())
    }

    async fn job(&self, id: &str) -> Result<JobView, ApiError> {
        let mut state = self.take_failure()?;
        find_job(&mut state, id).map(|j| j.clone())
    }

    async fn terminate(&self, id: &str) -> Result<JobView, ApiError> {
        let mut state = self.take_failure()?;
        let job = find_job(&mut state, id)?;
        if !matches!(
            job.state,
            JobState::Terminating | JobState::Terminated | JobState::Failed
        ) {
            job.state = JobState::Terminating;
            job.history.push(HistoryEntry {
                state: JobState::Terminating,
                at_ms: now_ms(),
                reason: "terminated by request".to_string(),
            });
        }
        Ok(job.clone())
    }

    async fn scale(&self, id: &str, replicas: u32) -> Result<JobView, ApiError> {
        let mut state = self.take_failure()?;
        let job = find_job(&mut state, id)?;
        job.spec.replicas = replicas;
        job.state = JobState::Scaling;
        job.history.push(HistoryEntry {
            state: JobState::Scaling,
            at_ms: now_ms(),
            reason: format!("scale to {replicas} replicas requested"),
        });
        Ok(job.clone())
    }

    async fn migrate(
        &self,
        id: &str,
        target: edgeio_core::wire::MigrateTarget,
        instance: Option<edgeio_core::model::InstanceId>,
    ) -> Result<JobView, ApiError> {
        let mut state = self.take_failure()?;
        let job = find_job(&mut state, id)?;
        job.state = JobState::Migrating;
        let which = instance.map_or_else(String::new, |i| format!(" ({i})"));
        job.history.push(HistoryEntry {
            state: JobState::Migrating,
            at_ms: now_ms(),
            reason: format!("migrate to {target:?}{which} requested"),
        });
        Ok(job.clone())
    }

    async fn clusters(&self) -> Result<Vec<ClusterView>, ApiError> {
        Ok(self.take_failure()?.clusters.clone())
    }

    async fn cluster(&self, id: &str) -> Result<ClusterView, ApiError> {
        let state = self.take_failure()?;
        state
            .clusters
            .iter()
            .find(|c| c.id == id)
            .cloned()
            .ok_or_else(|| cluster_not_found(id))
    }

    async fn nodes(&self, cluster: &str) -> Result<Vec<NodeView>, ApiError> {
        let state = self.take_failure()?;
        state
            .nodes
            .get(cluster)
            .cloned()
            .ok_or_else(|| cluster_not_found(cluster))
    }

    async fn logs(&self, job: &str, query: LogsQuery) -> Result<LogStream, ApiError> {
        let mut state = self.take_failure()?;
        find_job(&mut state, job)?;
        state.last_logs_query = Some(query);
        let logs = state.logs.entry(job.to_string()).or_default();
        let skip = match query.tail {
            Some(tail) => logs.chunks.len().saturating_sub(tail),
            None => 0,
        };
        let kept: Vec<Result<Bytes, ApiError>> =
            logs.chunks[skip..].iter().cloned().map(Ok).collect();
        let kept = futures::stream::iter(kept);
        if !query.follow {
            return Ok(kept.boxed());
        }
        // Subscribed under the same lock as the snapshot, so no chunk falls between them.
        let live = futures::stream::unfold(logs.live.subscribe(), |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(chunk) => return Some((Ok(chunk), rx)),
                    // A slow reader misses chunks rather than holding the fake up.
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        });
        Ok(kept.chain(live).boxed())
    }
}
