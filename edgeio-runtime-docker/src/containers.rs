//! Translation between edgeio's specs and states and Docker's containers (pure functions).

use crate::config::{DockerConfig, LABEL_NODE};
use crate::errors::KIND;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerState, ContainerStateStatusEnum,
    ContainerSummaryStateEnum, HostConfig, PortBinding, PortMap, RestartPolicy,
    RestartPolicyNameEnum,
};
use edgeio_core::job::{InstanceSpec, Protocol};
use edgeio_core::model::{InstanceId, Labels, RuntimeKind};
use edgeio_core::runtime::{
    instance_labels, InstanceStatus, RunState, RuntimeError, LABEL_INSTANCE,
};
use std::collections::{HashMap, HashSet};

/// The smallest memory limit the engine accepts (Docker 20.10: "Minimum memory limit allowed
/// is 6MB", meaning 6 MiB; checked here so that nothing reaches the engine).
pub const MIN_MEMORY_BYTES: u64 = 6 * 1024 * 1024;

/// Exit code of a process killed by SIGKILL (128 + 9): what an OOM kill looks like.
pub(crate) const SIGKILL_EXIT: i32 = 137;

fn invalid(
    field: impl Into<String>,
    value: impl ToString,
    rule: impl Into<String>,
) -> RuntimeError {
    RuntimeError::Invalid {
        field: field.into(),
        value: value.to_string(),
        rule: rule.into(),
    }
}

fn protocol_name(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
    }
}

/// The labels a container of `spec` carries: the spec's own, instance, job and node ids.
pub(crate) fn container_labels(spec: &InstanceSpec, config: &DockerConfig) -> Labels {
    let mut labels = instance_labels(spec);
    if let Some(node) = &config.node_id {
        labels.insert(LABEL_NODE.to_string(), node.clone());
    }
    labels
}

/// Checks `spec` and builds the container to create; every refusal names the field, the
/// value and the rule, and happens before anything reaches the engine.
pub(crate) fn create_body(
    spec: &InstanceSpec,
    config: &DockerConfig,
) -> Result<ContainerCreateBody, RuntimeError> {
    if spec.kind.as_str() != RuntimeKind::DOCKER {
        return Err(RuntimeError::Unsupported {
            runtime: KIND.to_string(),
            what: format!("image_runtime {}", spec.kind),
            reason: "this runtime runs only image_runtime docker".into(),
        });
    }
    if spec.image.trim().is_empty() {
        return Err(invalid("image", &spec.image, "must name an image"));
    }
    let resources = &spec.resources;
    if resources.gpus > 0 {
        return Err(RuntimeError::Unsupported {
            runtime: KIND.to_string(),
            what: format!("resources.gpus {}", resources.gpus),
            reason: "gpu passthrough is not built in yet".into(),
        });
    }
    let memory = match resources.memory_bytes {
        0 => None,
        m if m < MIN_MEMORY_BYTES => {
            return Err(invalid(
                "resources.memory_bytes",
                m,
                format!(
                    "must be 0 (no limit) or at least {MIN_MEMORY_BYTES} bytes (6 MiB), \
                     docker's minimum"
                ),
            ))
        }
        m => Some(i64::try_from(m).map_err(|_| {
            invalid(
                "resources.memory_bytes",
                m,
                "must fit a signed 64-bit number",
            )
        })?),
    };
    let nano_cpus = match resources.cpu_millis {
        0 => None,
        c => Some(
            c.checked_mul(1_000_000)
                .and_then(|n| i64::try_from(n).ok())
                .ok_or_else(|| {
                    invalid(
                        "resources.cpu_millis",
                        c,
                        "must be at most 9223372036854 (nano-cpus fit 64 bits)",
                    )
                })?,
        ),
    };

    let mut exposed = Vec::new();
    let mut bindings: PortMap = HashMap::new();
    let mut host_ports = HashSet::new();
    for (i, port) in spec.ports.iter().enumerate() {
        if port.container == 0 {
            return Err(invalid(
                format!("ports[{i}].container"),
                0,
                "must be a port number from 1 to 65535",
            ));
        }
        if port.host == Some(0) {
            return Err(invalid(
                format!("ports[{i}].host"),
                0,
                "must be a port number from 1 to 65535, or absent to let docker pick a free one",
            ));
        }
        if let Some(host) = port.host {
            if !host_ports.insert((host, port.protocol)) {
                return Err(invalid(
                    format!("ports[{i}].host"),
                    host,
                    format!(
                        "host port {host}/{} is published twice",
                        protocol_name(port.protocol)
                    ),
                ));
            }
        }
        let key = format!("{}/{}", port.container, protocol_name(port.protocol));
        if !exposed.contains(&key) {
            exposed.push(key.clone());
        }
        bindings
            .entry(key)
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip: None,
                // empty asks docker for a free ephemeral port
                host_port: Some(port.host.map(|h| h.to_string()).unwrap_or_default()),
            });
    }

    let mut env = Vec::with_capacity(spec.env.len());
    for (key, value) in &spec.env {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            return Err(invalid(
                "env",
                key,
                "variable names must be non-empty and hold no '=' or NUL",
            ));
        }
        env.push(format!("{key}={value}"));
    }

    Ok(ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: (!spec.args.is_empty()).then(|| spec.args.clone()),
        env: (!env.is_empty()).then_some(env),
        labels: Some(container_labels(spec, config).into_iter().collect()),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        stop_timeout: Some(i64::from(config.stop_grace_secs)),
        host_config: Some(HostConfig {
            nano_cpus,
            memory,
            // swap as large as the limit means no swap at all: the limit is what the job asked
            memory_swap: memory,
            port_bindings: (!bindings.is_empty()).then_some(bindings),
            // edgeio decides restarts (restart policy is orchestration), never the engine
            restart_policy: Some(RestartPolicy {
                name: Some(RestartPolicyNameEnum::NO),
                maximum_retry_count: None,
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// True when a container's labels say it runs instance `id`.
pub(crate) fn runs_instance(labels: Option<&HashMap<String, String>>, id: &InstanceId) -> bool {
    labels
        .and_then(|l| l.get(LABEL_INSTANCE))
        .is_some_and(|v| v == id.as_str())
}

/// The run state of an inspected container.
pub(crate) fn run_state(state: Option<&ContainerState>) -> RunState {
    let Some(state) = state else {
        return RunState::Starting;
    };
    match state.status {
        Some(ContainerStateStatusEnum::CREATED) | None | Some(ContainerStateStatusEnum::EMPTY) => {
            RunState::Starting
        }
        Some(
            ContainerStateStatusEnum::RUNNING
            | ContainerStateStatusEnum::PAUSED
            | ContainerStateStatusEnum::RESTARTING
            | ContainerStateStatusEnum::STOPPING,
        ) => RunState::Running,
        Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD) => {
            RunState::Exited {
                code: state.exit_code.and_then(|c| i32::try_from(c).ok()),
                oom_killed: state.oom_killed.unwrap_or(false),
            }
        }
        Some(ContainerStateStatusEnum::REMOVING) => RunState::Removed,
    }
}

/// The run state a listed container is in, when listing alone tells it (not for exits, whose
/// code needs an inspect).
pub(crate) fn summary_state(state: Option<&ContainerSummaryStateEnum>) -> Option<RunState> {
    match state? {
        ContainerSummaryStateEnum::CREATED | ContainerSummaryStateEnum::EMPTY => {
            Some(RunState::Starting)
        }
        ContainerSummaryStateEnum::RUNNING
        | ContainerSummaryStateEnum::PAUSED
        | ContainerSummaryStateEnum::RESTARTING
        | ContainerSummaryStateEnum::STOPPING => Some(RunState::Running),
        ContainerSummaryStateEnum::REMOVING => Some(RunState::Removed),
        ContainerSummaryStateEnum::EXITED | ContainerSummaryStateEnum::DEAD => None,
    }
}

/// The first 12 characters of a container id, as `docker ps` shows it.
pub(crate) fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// `80/tcp -> 0.0.0.0:32768, …` for people, sorted.
pub(crate) fn published_ports(ports: Option<&PortMap>) -> String {
    let mut out: Vec<String> = ports
        .into_iter()
        .flatten()
        .flat_map(|(key, bindings)| {
            bindings.iter().flatten().map(move |b| {
                format!(
                    "{key} -> {}:{}",
                    b.host_ip.as_deref().unwrap_or(""),
                    b.host_port.as_deref().unwrap_or("")
                )
            })
        })
        .collect();
    out.sort();
    out.dedup();
    out.join(", ")
}

/// The status of an inspected container that runs instance `id`.
pub(crate) fn status_from_inspect(
    id: &InstanceId,
    info: &ContainerInspectResponse,
) -> InstanceStatus {
    let labels: Labels = info
        .config
        .as_ref()
        .and_then(|c| c.labels.clone())
        .unwrap_or_default()
        .into_iter()
        .collect();
    let container = info.id.as_deref().unwrap_or("");
    let name = info.name.as_deref().unwrap_or("").trim_start_matches('/');
    let mut detail = format!("container {} ({name})", short(container));
    let ports = published_ports(
        info.network_settings
            .as_ref()
            .and_then(|n| n.ports.as_ref()),
    );
    if !ports.is_empty() {
        detail.push_str(", ports ");
        detail.push_str(&ports);
    }
    if let Some(err) = info
        .state
        .as_ref()
        .and_then(|s| s.error.as_deref())
        .filter(|e| !e.is_empty())
    {
        detail.push_str(", error: ");
        detail.push_str(err);
    }
    InstanceStatus {
        id: id.clone(),
        kind: RuntimeKind::new(RuntimeKind::DOCKER),
        state: run_state(info.state.as_ref()),
        labels,
        detail,
    }
}

/// Classifies the engine's refusal to create a container of `spec` (status 400).
pub(crate) fn create_refusal(spec: &InstanceSpec, message: &str) -> RuntimeError {
    let lower = message.to_ascii_lowercase();
    let (field, value) = if lower.contains("memory") {
        (
            "resources.memory_bytes".to_string(),
            spec.resources.memory_bytes.to_string(),
        )
    } else if lower.contains("cpu") {
        (
            "resources.cpu_millis".to_string(),
            spec.resources.cpu_millis.to_string(),
        )
    } else if lower.contains("port") {
        ("ports".to_string(), format!("{:?}", spec.ports))
    } else {
        ("container config".to_string(), spec.image.clone())
    };
    invalid(field, value, format!("refused by docker: {message}"))
}

/// Classifies the engine's refusal to start a created container of `spec`; `None` when the
/// message is not about the spec.
pub(crate) fn start_refusal(spec: &InstanceSpec, message: &str) -> Option<RuntimeError> {
    let lower = message.to_ascii_lowercase();
    if lower.contains("port is already allocated") || lower.contains("address already in use") {
        let found = spec.ports.iter().enumerate().find_map(|(i, p)| {
            let host = p.host?;
            mentions_port(message, host).then_some((i, host))
        });
        return Some(match found {
            Some((i, host)) => invalid(
                format!("ports[{i}].host"),
                host,
                format!("host port already in use: {message}"),
            ),
            None => invalid(
                "ports",
                format!("{:?}", spec.ports),
                format!("a host port is already in use: {message}"),
            ),
        });
    }
    if lower.contains("executable file not found") || lower.contains("no such file or directory") {
        let (field, value) = match spec.args.first() {
            Some(first) => ("args[0]", first.clone()),
            None => ("image", spec.image.clone()),
        };
        return Some(invalid(
            field,
            value,
            format!("the container cannot start its command: {message}"),
        ));
    }
    None
}

/// True when `message` names `port` as a whole number after a `:` (`0.0.0.0:8080`).
fn mentions_port(message: &str, port: u16) -> bool {
    let needle = format!(":{port}");
    message.match_indices(&needle).any(|(at, _)| {
        !message[at + needle.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit())
    })
}

/// `nginx` → `("nginx", "latest")`; `reg:5000/a/b:1` → `("reg:5000/a/b", "1")`; digests stay
/// whole. An untagged pull would fetch every tag of the repository.
pub(crate) fn split_reference(image: &str) -> (String, String) {
    if image.contains('@') {
        return (image.to_string(), String::new());
    }
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[last_slash..].rfind(':') {
        Some(colon) => {
            let at = last_slash + colon;
            (image[..at].to_string(), image[at + 1..].to_string())
        }
        None => (image.to_string(), "latest".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use edgeio_core::job::PortMapping;
    use edgeio_core::model::{JobId, Resources};

    fn spec() -> InstanceSpec {
        InstanceSpec {
            id: InstanceId::new("web-0").unwrap(),
            job: JobId::new("web").unwrap(),
            image: "nginx:1".into(),
            kind: RuntimeKind::new("docker"),
            args: vec!["nginx".into(), "-g".into()],
            env: [("A".to_string(), "1".to_string())].into(),
            ports: vec![
                PortMapping {
                    container: 80,
                    host: Some(8080),
                    protocol: Protocol::Tcp,
                },
                PortMapping {
                    container: 53,
                    host: None,
                    protocol: Protocol::Udp,
                },
            ],
            resources: Resources {
                cpu_millis: 500,
                memory_bytes: 64 << 20,
                ..Resources::ZERO
            },
            labels: [("team".to_string(), "edge".to_string())].into(),
        }
    }

    fn config() -> DockerConfig {
        DockerConfig {
            node_id: Some("e580".into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_spec_becomes_a_labelled_limited_container_without_restart_policy() {
        let body = create_body(&spec(), &config()).unwrap();
        let labels = body.labels.unwrap();
        assert_eq!(labels["edgeio.instance"], "web-0");
        assert_eq!(labels["edgeio.job"], "web");
        assert_eq!(labels["edgeio.node"], "e580");
        assert_eq!(labels["team"], "edge");
        assert_eq!(body.cmd.unwrap(), vec!["nginx", "-g"]);
        assert_eq!(body.env.unwrap(), vec!["A=1"]);
        let host = body.host_config.unwrap();
        assert_eq!(host.nano_cpus, Some(500_000_000));
        assert_eq!(host.memory, Some(64 << 20));
        assert_eq!(host.memory_swap, Some(64 << 20));
        assert_eq!(
            host.restart_policy.unwrap().name,
            Some(RestartPolicyNameEnum::NO)
        );
        let bindings = host.port_bindings.unwrap();
        assert_eq!(
            bindings["80/tcp"].as_ref().unwrap()[0].host_port.as_deref(),
            Some("8080")
        );
        assert_eq!(
            bindings["53/udp"].as_ref().unwrap()[0].host_port.as_deref(),
            Some("")
        );
        let mut exposed = body.exposed_ports.unwrap();
        exposed.sort();
        assert_eq!(exposed, vec!["53/udp", "80/tcp"]);
    }

    #[test]
    fn zero_limits_mean_no_limit_and_no_args_keep_the_image_command() {
        let mut s = spec();
        s.resources = Resources::ZERO;
        s.args.clear();
        s.ports.clear();
        let body = create_body(&s, &DockerConfig::default()).unwrap();
        assert!(body.cmd.is_none());
        assert!(body.exposed_ports.is_none());
        assert!(!body.labels.unwrap().contains_key("edgeio.node"));
        let host = body.host_config.unwrap();
        assert_eq!((host.memory, host.nano_cpus), (None, None));
    }

    #[test]
    fn bad_specs_are_refused_naming_field_value_and_rule() {
        let field_of = |s: InstanceSpec| match create_body(&s, &config()) {
            Err(RuntimeError::Invalid { field, value, rule }) => {
                assert!(!rule.is_empty());
                format!("{field}={value}")
            }
            other => panic!("{other:?}"),
        };
        let mut s = spec();
        s.ports[0].host = Some(0);
        assert_eq!(field_of(s), "ports[0].host=0");
        let mut s = spec();
        s.ports[1].container = 0;
        assert_eq!(field_of(s), "ports[1].container=0");
        let mut s = spec();
        s.resources.memory_bytes = MIN_MEMORY_BYTES - 1;
        assert_eq!(field_of(s), "resources.memory_bytes=6291455");
        let mut s = spec();
        s.ports[1].host = Some(8080);
        s.ports[1].protocol = Protocol::Tcp;
        assert_eq!(field_of(s), "ports[1].host=8080");
        let mut s = spec();
        s.env.insert("A=B".into(), "x".into());
        assert_eq!(field_of(s), "env=A=B");
        let mut s = spec();
        s.resources.memory_bytes = MIN_MEMORY_BYTES;
        assert!(create_body(&s, &config()).is_ok());
    }

    #[test]
    fn other_kinds_and_gpus_are_unsupported() {
        let mut s = spec();
        s.kind = RuntimeKind::new("mirage");
        assert!(matches!(
            create_body(&s, &config()),
            Err(RuntimeError::Unsupported { .. })
        ));
        let mut s = spec();
        s.resources.gpus = 1;
        assert!(matches!(
            create_body(&s, &config()),
            Err(RuntimeError::Unsupported { .. })
        ));
    }

    #[test]
    fn a_port_clash_at_start_names_the_port() {
        let msg = "driver failed programming external connectivity on endpoint x (abc): \
                   Bind for 0.0.0.0:8080 failed: port is already allocated";
        match start_refusal(&spec(), msg) {
            Some(RuntimeError::Invalid { field, value, .. }) => {
                assert_eq!((field.as_str(), value.as_str()), ("ports[0].host", "8080"))
            }
            other => panic!("{other:?}"),
        }
        assert!(!mentions_port("0.0.0.0:80801", 8080));
        assert!(start_refusal(&spec(), "something else").is_none());
    }

    #[test]
    fn references_get_a_tag_unless_they_have_one() {
        assert_eq!(split_reference("nginx"), ("nginx".into(), "latest".into()));
        assert_eq!(
            split_reference("reg:5000/a/b:1"),
            ("reg:5000/a/b".into(), "1".into())
        );
        assert_eq!(
            split_reference("reg:5000/a/b"),
            ("reg:5000/a/b".into(), "latest".into())
        );
        assert_eq!(
            split_reference("a@sha256:00"),
            ("a@sha256:00".into(), String::new())
        );
    }

    #[test]
    fn states_map_onto_run_states() {
        let exited = ContainerState {
            status: Some(ContainerStateStatusEnum::EXITED),
            exit_code: Some(137),
            oom_killed: Some(true),
            ..Default::default()
        };
        assert_eq!(
            run_state(Some(&exited)),
            RunState::Exited {
                code: Some(137),
                oom_killed: true
            }
        );
        let running = ContainerState {
            status: Some(ContainerStateStatusEnum::RUNNING),
            ..Default::default()
        };
        assert_eq!(run_state(Some(&running)), RunState::Running);
        assert_eq!(
            summary_state(Some(&ContainerSummaryStateEnum::CREATED)),
            Some(RunState::Starting)
        );
        assert_eq!(
            summary_state(Some(&ContainerSummaryStateEnum::EXITED)),
            None
        );
    }
}
