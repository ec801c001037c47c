//! Tests that need an outside component (Docker, Mosquitto, etcd, qemu).
//!
//! When the component is missing the test prints that it skipped and why — unless the
//! environment variable `EDGEIO_REQUIRE` names the component (comma-separated, or `all`), in
//! which case the test FAILS. CI sets `EDGEIO_REQUIRE=docker,mosquitto,etcd,qemu` explicitly,
//! so a failed install fails the run instead of quietly skipping.
//!
//! ```no_run
//! #[test]
//! fn talks_to_docker() {
//!     if !edgeio_core::testing::require::docker() {
//!         return; // skipped, and the reason was printed
//!     }
//!     // … the real test …
//! }
//! ```

use std::process::{Command, Stdio};

/// The environment variable naming components whose absence fails tests.
pub const ENV: &str = "EDGEIO_REQUIRE";

/// What to do about a component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// It is there: run the test.
    Run,
    /// It is missing and optional: skip, printing the reason.
    Skip(String),
    /// It is missing and required: fail with the reason.
    Fail(String),
}

/// True when `required` (the value of `EDGEIO_REQUIRE`) names `component`.
pub fn is_required(required: Option<&str>, component: &str) -> bool {
    required.is_some_and(|list| {
        list.split(',')
            .map(str::trim)
            .any(|c| c.eq_ignore_ascii_case(component) || c.eq_ignore_ascii_case("all"))
    })
}

/// Decides from the requirement list and the probe's result (pure, for unit tests).
pub fn decide(required: Option<&str>, component: &str, probe: Result<(), String>) -> Decision {
    match probe {
        Ok(()) => Decision::Run,
        Err(reason) if is_required(required, component) => Decision::Fail(format!(
            "{component} is required ({ENV}={}) but unavailable: {reason}",
            required.unwrap_or_default()
        )),
        Err(reason) => Decision::Skip(format!(
            "SKIPPED: {component} unavailable ({reason}); set {ENV}={component} to make this a failure"
        )),
    }
}

/// Probes a component: `true` to run the test, `false` (after printing why) to skip it;
/// panics when the component is required by `EDGEIO_REQUIRE` and missing.
pub fn require(component: &str, probe: impl FnOnce() -> Result<(), String>) -> bool {
    let required = std::env::var(ENV).ok();
    match decide(required.as_deref(), component, probe()) {
        Decision::Run => true,
        Decision::Skip(reason) => {
            // the test harness shows stderr; a skip must be visible, not silent
            eprintln!("{reason}");
            false
        }
        Decision::Fail(reason) => panic!("{reason}"),
    }
}

/// Runs `program args…` and succeeds when it exits 0.
pub fn command_succeeds(program: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            stderr.trim().chars().take(200).collect::<String>()
        ))
    }
}

/// True when `program` is an executable on `PATH`.
pub fn on_path(program: &str) -> Result<(), String> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .map(|_| ())
        .ok_or_else(|| format!("{program} not found on PATH"))
}

/// Docker Engine answering `docker info`.
pub fn docker() -> bool {
    require("docker", || command_succeeds("docker", &["info"]))
}

/// Mosquitto broker binary installed.
pub fn mosquitto() -> bool {
    require("mosquitto", || {
        on_path("mosquitto").or_else(|_| {
            std::path::Path::new("/usr/sbin/mosquitto")
                .is_file()
                .then_some(())
                .ok_or_else(|| "mosquitto not found on PATH or in /usr/sbin".to_string())
        })
    })
}

/// etcd server binary installed.
pub fn etcd() -> bool {
    require("etcd", || command_succeeds("etcd", &["--version"]))
}

/// qemu-system-x86_64 installed.
pub fn qemu() -> bool {
    require("qemu", || {
        command_succeeds("qemu-system-x86_64", &["--version"])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_named_missing_component_fails_and_an_unnamed_one_skips() {
        let missing = || Err("not installed".to_string());
        assert!(matches!(
            decide(Some("docker, etcd"), "etcd", missing()),
            Decision::Fail(r) if r.contains("etcd is required")
        ));
        assert!(matches!(
            decide(Some("docker"), "etcd", missing()),
            Decision::Skip(r) if r.starts_with("SKIPPED: etcd")
        ));
        assert!(matches!(decide(None, "qemu", missing()), Decision::Skip(_)));
        assert!(matches!(
            decide(Some("ALL"), "qemu", missing()),
            Decision::Fail(_)
        ));
        assert_eq!(decide(Some("qemu"), "qemu", Ok(())), Decision::Run);
    }

    #[test]
    fn a_probe_of_a_missing_program_explains_itself() {
        let err = command_succeeds("edgeio-no-such-program", &[]).unwrap_err();
        assert!(err.contains("cannot run edgeio-no-such-program"), "{err}");
        assert!(on_path("edgeio-no-such-program").is_err());
    }
}
