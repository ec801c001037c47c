//! What the engine is and whether it can run anything: never an error, so a worker on a host
//! without Docker still starts and reports the runtime as unavailable.

use crate::engine::Engine;
use crate::errors;
use bollard::models::{SystemInfo, SystemInfoCgroupVersionEnum, SystemVersion};
use edgeio_core::model::{Arch, RuntimeKind};
use edgeio_core::runtime::RuntimeProbe;
use tracing::debug;

fn unavailable(detail: String) -> RuntimeProbe {
    RuntimeProbe {
        kind: RuntimeKind::new(RuntimeKind::DOCKER),
        available: false,
        version: None,
        architectures: Vec::new(),
        detail,
    }
}

pub(crate) async fn probe(engine: &Engine) -> RuntimeProbe {
    let docker = match engine.docker().await {
        Ok(docker) => docker,
        Err(e) => {
            debug!(host = engine.host(), error = %e, "docker probe: no engine");
            return unavailable(e.to_string());
        }
    };
    let version = match docker.version().await {
        Ok(v) => v,
        Err(e) => return unavailable(errors::unavailable(engine.host(), &e).to_string()),
    };
    // info only adds detail (cgroup version, storage driver): an engine whose info does not
    // parse can still run containers
    let info = docker.info().await.ok();
    describe(
        &version,
        info.as_ref(),
        &docker.client_version().to_string(),
    )
}

/// Builds the probe from the engine's answers (pure, for unit tests).
pub(crate) fn describe(
    version: &SystemVersion,
    info: Option<&SystemInfo>,
    api_version: &str,
) -> RuntimeProbe {
    let os = info
        .and_then(|i| i.os_type.clone())
        .or_else(|| version.os.clone())
        .unwrap_or_else(|| "linux".to_string());
    let arch = info
        .and_then(|i| i.architecture.clone())
        .or_else(|| version.arch.clone());
    let mut notes = vec![
        format!(
            "engine {}",
            version.version.as_deref().unwrap_or("(unknown version)")
        ),
        format!("api {api_version}"),
        format!("{os}/{}", arch.as_deref().unwrap_or("unknown")),
    ];
    if let Some(info) = info {
        match info.cgroup_version {
            Some(SystemInfoCgroupVersionEnum::_1) => notes.push("cgroup v1".into()),
            Some(SystemInfoCgroupVersionEnum::_2) => notes.push("cgroup v2".into()),
            _ => {}
        }
        if let Some(driver) = &info.driver {
            notes.push(format!("storage {driver}"));
        }
        if info.memory_limit == Some(false) {
            notes.push("memory limits not supported by this kernel".into());
        }
    }
    let available = os == "linux";
    if !available {
        notes.push(format!(
            "only linux containers are supported, the engine runs {os} containers"
        ));
    }
    RuntimeProbe {
        kind: RuntimeKind::new(RuntimeKind::DOCKER),
        available,
        version: version.version.clone(),
        architectures: arch.map(|a| vec![Arch::from(a)]).unwrap_or_default(),
        detail: notes.join(", "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_probe_names_engine_api_arch_and_cgroup_version() {
        let version = SystemVersion {
            version: Some("20.10.24".into()),
            arch: Some("amd64".into()),
            os: Some("linux".into()),
            ..Default::default()
        };
        let info = SystemInfo {
            architecture: Some("x86_64".into()),
            os_type: Some("linux".into()),
            cgroup_version: Some(SystemInfoCgroupVersionEnum::_1),
            driver: Some("overlay2".into()),
            ..Default::default()
        };
        let probe = describe(&version, Some(&info), "1.41");
        assert!(probe.available);
        assert_eq!(probe.version.as_deref(), Some("20.10.24"));
        assert_eq!(probe.architectures, vec![Arch::Amd64]);
        assert_eq!(
            probe.detail,
            "engine 20.10.24, api 1.41, linux/x86_64, cgroup v1, storage overlay2"
        );
    }

    #[test]
    fn a_windows_engine_is_unavailable_and_says_why() {
        let version = SystemVersion {
            os: Some("windows".into()),
            ..Default::default()
        };
        let probe = describe(&version, None, "1.41");
        assert!(!probe.available);
        assert!(
            probe.detail.contains("only linux containers"),
            "{}",
            probe.detail
        );
    }
}
