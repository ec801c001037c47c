//! Memory and CPU limits through cgroup v2, where the worker may write it.
//!
//! At start the runtime looks at [`crate::ProcessConfig::cgroup_root`] (`/sys/fs/cgroup`):
//! limits are enforced only when it is a cgroup v2 hierarchy (it has `cgroup.controllers`)
//! offering the `memory` and `cpu` controllers, and the runtime can create its parent cgroup
//! `edgeio` there and enable both controllers for its children (`+memory +cpu` into the
//! `cgroup.subtree_control` of the root and of `edgeio`). Otherwise programs run without
//! limits and [`Limits::detail`] says why (`limits not enforced: …`); the probe and every
//! instance status repeat it.
//!
//! Each instance gets `edgeio/<instance id>` with
//!
//! * `memory.max`: `memory_bytes`, or `max` when the job asks for none;
//! * `cpu.max`: `<quota> 100000`, the quota being `cpu_millis × 100` µs per 100 ms period
//!   (at least the kernel's 1000 µs), or `max 100000` when the job asks for none;
//!
//! and the program's pid is written to its `cgroup.procs` right after the spawn. A child
//! the program forks in the few microseconds before that stays outside the cgroup: placing
//! the process before it runs needs `clone3(CLONE_INTO_CGROUP)` or a `pre_exec` hook, both
//! `unsafe`, which this workspace forbids.

use edgeio_core::model::{InstanceId, Resources};
use std::io;
use std::path::{Path, PathBuf};

/// The cgroup v2 period the CPU quota is expressed in, in microseconds.
pub const CPU_PERIOD_US: u64 = 100_000;
/// The smallest quota the kernel accepts, in microseconds.
pub const CPU_MIN_QUOTA_US: u64 = 1_000;
/// The runtime's parent cgroup under the root.
pub const PARENT: &str = "edgeio";

/// The contents of `memory.max` for a job asking `memory_bytes` (0: no limit).
pub fn memory_max(memory_bytes: u64) -> String {
    if memory_bytes == 0 {
        "max".into()
    } else {
        memory_bytes.to_string()
    }
}

/// The contents of `cpu.max` for a job asking `cpu_millis` (0: no limit).
pub fn cpu_max(cpu_millis: u64) -> String {
    if cpu_millis == 0 {
        format!("max {CPU_PERIOD_US}")
    } else {
        let quota = cpu_millis
            .saturating_mul(CPU_PERIOD_US / 1000)
            .max(CPU_MIN_QUOTA_US);
        format!("{quota} {CPU_PERIOD_US}")
    }
}

/// Whether limits can be enforced on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Limits {
    /// Through the cgroups under `parent`.
    Enforced {
        /// The runtime's parent cgroup (`<root>/edgeio`).
        parent: PathBuf,
    },
    /// Not at all.
    NotEnforced {
        /// Why, for people.
        reason: String,
    },
}

fn write(path: &Path, text: &str) -> io::Result<()> {
    std::fs::write(path, text).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!("cannot write {text:?} to {}: {e}", path.display()),
        )
    })
}

impl Limits {
    /// Looks at the cgroup hierarchy mounted at `root` and prepares the parent cgroup if
    /// limits can be enforced there (see the module docs).
    pub fn detect(root: &Path) -> Limits {
        let not = |reason: String| Limits::NotEnforced { reason };
        let controllers = match std::fs::read_to_string(root.join("cgroup.controllers")) {
            Ok(text) => text,
            Err(_) => {
                return not(format!(
                    "{} is not a cgroup v2 hierarchy (no cgroup.controllers: this host uses cgroup v1 or a hybrid layout)",
                    root.display()
                ))
            }
        };
        let available: Vec<&str> = controllers.split_whitespace().collect();
        if !(available.contains(&"memory") && available.contains(&"cpu")) {
            return not(format!(
                "the cgroup v2 hierarchy at {} lacks the memory or cpu controller (it offers: {})",
                root.display(),
                if available.is_empty() {
                    "none".to_string()
                } else {
                    available.join(" ")
                }
            ));
        }
        let parent = root.join(PARENT);
        let prepared = write(&root.join("cgroup.subtree_control"), "+memory +cpu")
            .and_then(|()| {
                std::fs::create_dir_all(&parent).map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot create {}: {e}", parent.display()))
                })
            })
            .and_then(|()| write(&parent.join("cgroup.subtree_control"), "+memory +cpu"));
        match prepared {
            Ok(()) => Limits::Enforced { parent },
            Err(e) => not(format!("the worker may not write cgroup v2 here: {e}")),
        }
    }

    /// True when limits are enforced.
    pub fn enforced(&self) -> bool {
        matches!(self, Limits::Enforced { .. })
    }

    /// For people: where limits are enforced, or `limits not enforced: <reason>`.
    pub fn detail(&self) -> String {
        match self {
            Limits::Enforced { parent } => {
                format!(
                    "memory and cpu limits enforced through cgroup v2 ({})",
                    parent.display()
                )
            }
            Limits::NotEnforced { reason } => format!("limits not enforced: {reason}"),
        }
    }

    /// Creates the instance's cgroup with its limits; `None` when limits are not enforced.
    pub fn create(&self, id: &InstanceId, resources: &Resources) -> io::Result<Option<PathBuf>> {
        let Limits::Enforced { parent } = self else {
            return Ok(None);
        };
        let dir = parent.join(id.as_str());
        std::fs::create_dir_all(&dir).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot create {}: {e}", dir.display()))
        })?;
        write(&dir.join("memory.max"), &memory_max(resources.memory_bytes))?;
        write(&dir.join("cpu.max"), &cpu_max(resources.cpu_millis))?;
        Ok(Some(dir))
    }
}

/// Moves `pid` into the cgroup `dir`.
pub fn add(dir: &Path, pid: u32) -> io::Result<()> {
    write(&dir.join("cgroup.procs"), &pid.to_string())
}

/// Removes an instance's cgroup once its processes are gone (a cgroup folder is removed
/// with `rmdir`, its files are not real files).
pub fn remove(dir: &Path) {
    if let Err(e) = std::fs::remove_dir(dir) {
        if e.kind() != io::ErrorKind::NotFound {
            tracing::warn!(cgroup = %dir.display(), error = %e, "instance cgroup not removed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_written_in_cgroup_v2_syntax() {
        assert_eq!(memory_max(0), "max");
        assert_eq!(memory_max(64 << 20), "67108864");
        assert_eq!(cpu_max(0), "max 100000");
        assert_eq!(cpu_max(500), "50000 100000");
        assert_eq!(cpu_max(2000), "200000 100000");
        assert_eq!(cpu_max(1), "1000 100000", "the kernel's minimum quota");
    }

    #[test]
    fn a_cgroup_v1_host_does_not_enforce_limits_and_says_why() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("memory")).unwrap();
        let limits = Limits::detect(root.path());
        assert!(!limits.enforced());
        let detail = limits.detail();
        assert!(detail.starts_with("limits not enforced: "), "{detail}");
        assert!(detail.contains("is not a cgroup v2 hierarchy"), "{detail}");
        assert!(!root.path().join(PARENT).exists(), "nothing is created");
        let id = InstanceId::new("web-0").unwrap();
        assert_eq!(limits.create(&id, &Resources::ZERO).unwrap(), None);
    }

    #[test]
    fn a_hierarchy_without_the_memory_controller_does_not_enforce_limits() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(
            root.path().join("cgroup.controllers"),
            "cpuset cpu io pids\n",
        )
        .unwrap();
        let detail = Limits::detect(root.path()).detail();
        assert!(
            detail.contains("lacks the memory or cpu controller (it offers: cpuset cpu io pids)"),
            "{detail}"
        );
    }

    #[test]
    fn an_unwritable_hierarchy_does_not_enforce_limits() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("cgroup.controllers"), "cpu memory").unwrap();
        // a folder where the file should be makes the write fail, as a read-only mount would
        std::fs::create_dir(root.path().join("cgroup.subtree_control")).unwrap();
        let detail = Limits::detect(root.path()).detail();
        assert!(
            detail.contains("the worker may not write cgroup v2 here: cannot write"),
            "{detail}"
        );
    }

    #[test]
    fn a_writable_cgroup_v2_hierarchy_gets_a_cgroup_per_instance_with_its_limits() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(
            root.path().join("cgroup.controllers"),
            "cpuset cpu io memory pids\n",
        )
        .unwrap();
        let limits = Limits::detect(root.path());
        let parent = root.path().join(PARENT);
        assert_eq!(
            limits,
            Limits::Enforced {
                parent: parent.clone()
            }
        );
        let read = |p: PathBuf| std::fs::read_to_string(p).unwrap();
        assert_eq!(
            read(root.path().join("cgroup.subtree_control")),
            "+memory +cpu"
        );
        assert_eq!(read(parent.join("cgroup.subtree_control")), "+memory +cpu");

        let id = InstanceId::new("web-0").unwrap();
        let resources = Resources {
            cpu_millis: 250,
            memory_bytes: 32 << 20,
            ..Resources::ZERO
        };
        let dir = limits.create(&id, &resources).unwrap().unwrap();
        assert_eq!(dir, parent.join("web-0"));
        assert_eq!(read(dir.join("memory.max")), "33554432");
        assert_eq!(read(dir.join("cpu.max")), "25000 100000");
        add(&dir, 4242).unwrap();
        assert_eq!(read(dir.join("cgroup.procs")), "4242");
        assert!(limits.detail().contains("enforced through cgroup v2"));
    }
}
