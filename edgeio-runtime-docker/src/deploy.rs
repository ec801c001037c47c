//! Operations on containers: deploy, terminate, status and list.

use crate::config::{DockerConfig, LABEL_NODE};
use crate::containers::{
    self, create_body, create_refusal, runs_instance, short, split_reference, start_refusal,
    status_from_inspect, summary_state,
};
use crate::errors;
use bollard::errors::Error;
use bollard::models::{ContainerCreateBody, ContainerInspectResponse};
use bollard::query_parameters::{
    CreateContainerOptions, CreateImageOptions, ListContainersOptions, RemoveContainerOptions,
    StopContainerOptions,
};
use bollard::Docker;
use edgeio_core::job::InstanceSpec;
use edgeio_core::model::{InstanceId, RuntimeKind};
use edgeio_core::runtime::{InstanceStatus, RunState, RuntimeError, LABEL_INSTANCE};
use futures::TryStreamExt;
use std::collections::HashMap;
use std::time::Duration;
use tracing::{debug, info, warn};

/// What a deploy needs to know besides the spec.
pub(crate) struct Ctx<'a> {
    pub(crate) docker: &'a Docker,
    pub(crate) host: &'a str,
    pub(crate) config: &'a DockerConfig,
    pub(crate) name: String,
}

/// A created container that is removed if the deploy does not finish (an error, or the
/// caller dropping the deploy future): nothing half-created stays behind.
struct Created {
    docker: Docker,
    container: String,
    armed: bool,
}

impl Created {
    async fn discard(mut self) {
        self.armed = false;
        remove_quietly(&self.docker, &self.container).await;
    }

    fn keep(mut self) -> String {
        self.armed = false;
        std::mem::take(&mut self.container)
    }
}

impl Drop for Created {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        // only reached when the deploy future was dropped mid-way: finish the cleanup on the
        // runtime, since drop cannot await
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let docker = self.docker.clone();
            let container = std::mem::take(&mut self.container);
            handle.spawn(async move { remove_quietly(&docker, &container).await });
        }
    }
}

async fn remove_quietly(docker: &Docker, container: &str) {
    let options = RemoveContainerOptions {
        force: true,
        v: true,
        ..Default::default()
    };
    if let Err(e) = docker.remove_container(container, Some(options)).await {
        if !errors::is_not_found(&e) {
            warn!(container, error = %e, "could not remove a container that failed to start");
        }
    }
}

fn missing_image(spec: &InstanceSpec, why: &str) -> RuntimeError {
    RuntimeError::Invalid {
        field: "image".into(),
        value: spec.image.clone(),
        rule: format!("not present on this docker engine and {why}"),
    }
}

async fn pull(docker: &Docker, spec: &InstanceSpec) -> Result<(), RuntimeError> {
    let (from_image, tag) = split_reference(&spec.image);
    info!(image = %spec.image, "pulling image");
    let options = CreateImageOptions {
        from_image: Some(from_image),
        tag: (!tag.is_empty()).then_some(tag),
        ..Default::default()
    };
    docker
        .create_image(Some(options), None, None)
        .try_for_each(|_| futures::future::ready(Ok(())))
        .await
        .map_err(|e| missing_image(spec, &format!("the pull failed: {}", errors::message(&e))))
}

async fn create(
    ctx: &Ctx<'_>,
    spec: &InstanceSpec,
    body: ContainerCreateBody,
) -> Result<String, Error> {
    let options = CreateContainerOptions {
        name: Some(ctx.name.clone()),
        ..Default::default()
    };
    ctx.docker
        .create_container(Some(options), body)
        .await
        .map(|created| {
            debug!(instance = %spec.id, container = short(&created.id), "container created");
            created.id
        })
}

/// Why the name is taken: by this instance, by another edgeio instance, or by a container
/// edgeio did not create (which is left untouched).
async fn clash(ctx: &Ctx<'_>, spec: &InstanceSpec, message: &str) -> RuntimeError {
    let detail = match ctx.docker.inspect_container(&ctx.name, None).await {
        Ok(other) => {
            let labels = other.config.as_ref().and_then(|c| c.labels.as_ref());
            let container = short(other.id.as_deref().unwrap_or("")).to_string();
            if runs_instance(labels, &spec.id) {
                format!("container {} ({container}) already runs it", ctx.name)
            } else if let Some(owner) = labels.and_then(|l| l.get(LABEL_INSTANCE)) {
                format!(
                    "container name {} is taken by container {container} of edgeio instance {owner:?}",
                    ctx.name
                )
            } else {
                format!(
                    "container name {} is taken by container {container}, which edgeio did not \
                     create; it was left untouched",
                    ctx.name
                )
            }
        }
        Err(_) => format!("container name {} is taken: {message}", ctx.name),
    };
    RuntimeError::AlreadyExists {
        id: spec.id.to_string(),
        detail,
    }
}

pub(crate) async fn deploy(
    ctx: &Ctx<'_>,
    spec: &InstanceSpec,
) -> Result<InstanceStatus, RuntimeError> {
    let body = create_body(spec, ctx.config)?;
    let mut pulled = false;
    let container = loop {
        match create(ctx, spec, body.clone()).await {
            Ok(id) => break id,
            Err(e) if errors::status(&e) == Some(409) => {
                return Err(clash(ctx, spec, &errors::message(&e)).await)
            }
            Err(e) if errors::is_not_found(&e) && !pulled => {
                if !ctx.config.pull {
                    return Err(missing_image(
                        spec,
                        "pulling is off (DockerConfig::pull); load it with docker load or \
                         docker import, or turn pull on",
                    ));
                }
                pull(ctx.docker, spec).await?;
                pulled = true;
            }
            Err(e) if errors::is_not_found(&e) => {
                return Err(missing_image(
                    spec,
                    &format!("still missing after a pull: {}", errors::message(&e)),
                ))
            }
            Err(e) if errors::status(&e) == Some(400) => {
                return Err(create_refusal(spec, &errors::message(&e)))
            }
            Err(e) => return Err(errors::other(ctx.host, spec.id.as_str(), e)),
        }
    };
    let created = Created {
        docker: ctx.docker.clone(),
        container,
        armed: true,
    };
    if let Err(e) = ctx.docker.start_container(&created.container, None).await {
        created.discard().await;
        let message = errors::message(&e);
        return Err(start_refusal(spec, &message)
            .unwrap_or_else(|| errors::other(ctx.host, spec.id.as_str(), e)));
    }
    let container = created.keep();
    info!(instance = %spec.id, job = %spec.job, container = short(&container), "container started");
    Ok(InstanceStatus {
        id: spec.id.clone(),
        kind: RuntimeKind::new(RuntimeKind::DOCKER),
        state: RunState::Running,
        labels: containers::container_labels(spec, ctx.config),
        detail: format!("container {} ({})", short(&container), ctx.name),
    })
}

/// The container named for `id`, if it runs that instance; a container edgeio did not
/// create under that name counts as absent, so edgeio never stops or removes it.
pub(crate) async fn inspect_owned(
    docker: &Docker,
    host: &str,
    name: &str,
    id: &InstanceId,
) -> Result<ContainerInspectResponse, RuntimeError> {
    match docker.inspect_container(name, None).await {
        Ok(info) if runs_instance(info.config.as_ref().and_then(|c| c.labels.as_ref()), id) => {
            Ok(info)
        }
        Ok(_) => Err(RuntimeError::NotFound { id: id.to_string() }),
        Err(e) => Err(errors::other(host, id.as_str(), e)),
    }
}

pub(crate) async fn status(
    docker: &Docker,
    host: &str,
    name: &str,
    id: &InstanceId,
) -> Result<InstanceStatus, RuntimeError> {
    let info = inspect_owned(docker, host, name, id).await?;
    Ok(status_from_inspect(id, &info))
}

pub(crate) async fn terminate(
    docker: &Docker,
    host: &str,
    name: &str,
    id: &InstanceId,
    grace: Duration,
) -> Result<(), RuntimeError> {
    let info = inspect_owned(docker, host, name, id).await?;
    let container = info.id.unwrap_or_else(|| name.to_string());
    let live = matches!(
        containers::run_state(info.state.as_ref()),
        RunState::Running | RunState::Starting
    );
    if live && !grace.is_zero() {
        // docker counts the grace period in whole seconds: round up, never cut it short
        let secs = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
        let options = StopContainerOptions {
            t: Some(i32::try_from(secs).unwrap_or(i32::MAX)),
            signal: None,
        };
        match docker.stop_container(&container, Some(options)).await {
            Ok(()) => {}
            Err(e) if errors::is_not_found(&e) => return Ok(()),
            Err(e) => return Err(errors::other(host, id.as_str(), e)),
        }
    }
    let options = RemoveContainerOptions {
        force: true,
        v: true,
        ..Default::default()
    };
    match docker.remove_container(&container, Some(options)).await {
        Ok(()) => {}
        Err(e) if errors::is_not_found(&e) => {}
        // "removal already in progress": someone else is removing it, which is what we want
        Err(e) if errors::status(&e) == Some(409) => {}
        Err(e) => return Err(errors::other(host, id.as_str(), e)),
    }
    info!(instance = %id, container = short(&container), "container terminated and removed");
    Ok(())
}

pub(crate) async fn list(
    docker: &Docker,
    host: &str,
    config: &DockerConfig,
) -> Result<Vec<InstanceStatus>, RuntimeError> {
    let mut labels = vec![LABEL_INSTANCE.to_string()];
    if let Some(node) = &config.node_id {
        labels.push(format!("{LABEL_NODE}={node}"));
    }
    let options = ListContainersOptions {
        all: true,
        filters: Some(HashMap::from([("label".to_string(), labels)])),
        ..Default::default()
    };
    let summaries = docker
        .list_containers(Some(options))
        .await
        .map_err(|e| errors::other(host, "(list)", e))?;
    let mut out = Vec::with_capacity(summaries.len());
    for summary in summaries {
        let Some(id) = summary
            .labels
            .as_ref()
            .and_then(|l| l.get(LABEL_INSTANCE))
            .and_then(|v| InstanceId::new(v).ok())
        else {
            continue;
        };
        let container = summary.id.clone().unwrap_or_default();
        match summary_state(summary.state.as_ref()) {
            Some(state) => {
                let name = summary
                    .names
                    .as_ref()
                    .and_then(|n| n.first())
                    .map(|n| n.trim_start_matches('/').to_string())
                    .unwrap_or_default();
                out.push(InstanceStatus {
                    id,
                    kind: RuntimeKind::new(RuntimeKind::DOCKER),
                    state,
                    labels: summary.labels.unwrap_or_default().into_iter().collect(),
                    detail: format!("container {} ({name})", short(&container)),
                });
            }
            // an exit code and the OOM flag are only in the container's inspect
            None => match docker.inspect_container(&container, None).await {
                Ok(info) => out.push(status_from_inspect(&id, &info)),
                Err(e) if errors::is_not_found(&e) => {}
                Err(e) => return Err(errors::other(host, id.as_str(), e)),
            },
        }
    }
    Ok(out)
}
