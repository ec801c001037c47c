//! The test image every Docker test of edgeio runs (feature `testing`): no registry can be
//! reached on the machines this project is built on, so Debian's busybox-static and its
//! applets are imported as `edgeio-test/busybox:1`, once, under a file lock shared by
//! parallel test processes. Also the `docker` CLI helpers the tests check results with.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// The test image: Debian's busybox-static and its applets, imported from a tarball.
pub const IMAGE: &str = "edgeio-test/busybox:1";
const BUSYBOX: &str = "/bin/busybox";
const APPLETS: &[&str] = &[
    "sh", "ash", "sleep", "echo", "cat", "head", "tail", "nc", "httpd", "true", "false", "ls",
    "printf", "yes", "dd", "kill", "mkdir", "wc",
];
const LOCK: &str = "/tmp/edgeio-test-image.lock";

/// Runs `docker args…` and returns its output (panics if the CLI cannot be run at all).
pub fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run docker {args:?}: {e}"))
}

/// `docker args…` must succeed; returns its trimmed stdout.
pub fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Whether the test image exists.
fn image_exists() -> bool {
    docker(&["image", "inspect", IMAGE]).status.success()
}

/// Builds the test image once per process; parallel test processes serialize on a file lock
/// and re-check the tag under it, so the image is imported once and none is left dangling.
pub fn ensure_image() {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(e) = READY.get_or_init(build_image) {
        panic!("cannot build the test image {IMAGE}: {e}");
    }
}

fn build_image() -> Result<(), String> {
    if image_exists() {
        return Ok(());
    }
    if !Path::new(BUSYBOX).is_file() {
        return Err(format!(
            "{BUSYBOX} is missing: install Debian's busybox-static (scripts/test does)"
        ));
    }
    let root = std::env::temp_dir().join(format!("edgeio-test-rootfs-{}", std::process::id()));
    let built = make_rootfs(&root).and_then(|()| import_locked(&root));
    let _ = std::fs::remove_dir_all(&root);
    built
}

fn make_rootfs(root: &Path) -> Result<(), String> {
    let io = |e: std::io::Error| format!("building the root filesystem in {}: {e}", root.display());
    let _ = std::fs::remove_dir_all(root);
    for dir in ["bin", "tmp", "etc", "proc", "sys", "dev"] {
        std::fs::create_dir_all(root.join(dir)).map_err(io)?;
    }
    std::fs::copy(BUSYBOX, root.join("bin/busybox")).map_err(io)?;
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).map_err(io)?;
    }
    Ok(())
}

fn import_locked(root: &Path) -> Result<(), String> {
    let script = r#"docker image inspect "$1" >/dev/null 2>&1 && exit 0
tar -C "$2" -c . | docker import --change 'CMD ["sh"]' - "$1" >/dev/null"#;
    let out = Command::new("flock")
        .args([LOCK, "sh", "-c", script, "sh", IMAGE])
        .arg(root)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run flock (util-linux): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}
