//! The outside components the test suite relies on are installed and answer.
//!
//! Each test skips with a printed reason when its component is missing, unless
//! `EDGEIO_REQUIRE` names it (CI names all four), in which case it fails: a broken install
//! must not turn into silently skipped tests.

use edgeio_core::testing::require;
use std::process::Command;

fn output(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn docker_engine_answers() {
    if !require::docker() {
        return;
    }
    let version = output("docker", &["version", "--format", "{{.Server.Version}}"]);
    assert!(
        version
            .trim()
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit()),
        "docker server version: {version}"
    );
}

#[test]
fn mosquitto_is_installed() {
    if !require::mosquitto() {
        return;
    }
    let program = if require::on_path("mosquitto").is_ok() {
        "mosquitto"
    } else {
        "/usr/sbin/mosquitto"
    };
    // `mosquitto -h` exits non-zero but prints its version banner
    let help = output(program, &["-h"]);
    assert!(help.contains("mosquitto version"), "{help}");
}

#[test]
fn etcd_is_installed() {
    if !require::etcd() {
        return;
    }
    let version = output("etcd", &["--version"]);
    assert!(version.contains("etcd Version"), "{version}");
}

#[test]
fn qemu_is_installed() {
    if !require::qemu() {
        return;
    }
    let version = output("qemu-system-x86_64", &["--version"]);
    assert!(version.contains("QEMU emulator version"), "{version}");
}
