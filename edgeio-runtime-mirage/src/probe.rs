//! What this host can run: which tenders are installed (`qemu-system-x86_64`, `solo5-hvt`,
//! `solo5-spt`), their versions, and whether `/dev/kvm` is usable.
//!
//! KVM is probed, never assumed: "usable" means the device opens for reading and writing.
//! That it opens does not make it fast — on a nested-virtualisation host qemu with KVM took
//! about 12 s to boot the tiny test kernel that software emulation boots in 0.1 s — so the
//! config can force either ([`crate::KvmPolicy`]).

use crate::command::{Accel, Tender};
use crate::{KvmPolicy, MirageConfig};
use edgeio_core::model::{Arch, RuntimeKind};
use edgeio_core::runtime::RuntimeProbe;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long a tender may take to print its version.
const VERSION_TIMEOUT: Duration = Duration::from_secs(5);

/// One tender as found on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenderInfo {
    /// Which tender.
    pub tender: Tender,
    /// Where it is, when found.
    pub path: Option<PathBuf>,
    /// Its version, when it told.
    pub version: Option<String>,
    /// Why it is missing, when it is.
    pub problem: Option<String>,
}

/// The configured program of `tender`.
pub fn configured_program(config: &MirageConfig, tender: Tender) -> &Path {
    match tender {
        Tender::Qemu => &config.qemu,
        Tender::Hvt => &config.solo5_hvt,
        Tender::Spt => &config.solo5_spt,
    }
}

/// Finds an executable: a path with a `/` is taken as is, a bare name is looked up on `PATH`.
pub fn locate(program: &Path) -> Result<PathBuf, String> {
    let is_executable = |p: &Path| {
        p.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if program.components().count() > 1 || program.is_absolute() {
        return if is_executable(program) {
            Ok(program.to_path_buf())
        } else {
            Err(format!("{} not found or not executable", program.display()))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| is_executable(p))
        .ok_or_else(|| format!("{} not found on PATH", program.display()))
}

/// Locates every tender without running any (cheap: for each deploy).
pub fn locate_tenders(config: &MirageConfig) -> Vec<TenderInfo> {
    Tender::ALL
        .into_iter()
        .map(|tender| {
            let found = locate(configured_program(config, tender));
            TenderInfo {
                tender,
                path: found.as_ref().ok().cloned(),
                version: None,
                problem: found.err(),
            }
        })
        .collect()
}

/// Whether KVM can be used: the device opens for reading and writing.
pub fn kvm_usable(device: &Path) -> Result<(), String> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(device)
        .map(|_| ())
        .map_err(|e| format!("{} is not usable: {e}", device.display()))
}

/// The accelerator qemu gets under `policy`, given whether KVM is usable.
pub fn choose_accel(policy: KvmPolicy, kvm: &Result<(), String>) -> Result<Accel, String> {
    match (policy, kvm) {
        (KvmPolicy::Off, _) => Ok(Accel::Tcg),
        (KvmPolicy::On, Ok(())) | (KvmPolicy::Auto, Ok(())) => Ok(Accel::Kvm),
        (KvmPolicy::Auto, Err(_)) => Ok(Accel::Tcg),
        (KvmPolicy::On, Err(why)) => Err(format!("kvm is forced on by the config but {why}")),
    }
}

/// The version in qemu's `--version` output (`QEMU emulator version 7.2.22 (Debian …)`).
pub fn parse_qemu_version(output: &str) -> Option<String> {
    let rest = output.lines().next()?.split("version").nth(1)?;
    rest.split_whitespace().next().map(str::to_string)
}

/// The version in a Solo5 tender's `--version` output: the last word of its first line.
pub fn parse_solo5_version(output: &str) -> Option<String> {
    output
        .lines()
        .find(|l| !l.trim().is_empty())?
        .split_whitespace()
        .last()
        .map(str::to_string)
}

/// Runs `program --version` and parses its answer.
pub async fn tender_version(tender: Tender, program: &Path) -> Option<String> {
    let run = tokio::process::Command::new(program)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(VERSION_TIMEOUT, run)
        .await
        .ok()?
        .ok()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    match tender {
        Tender::Qemu => parse_qemu_version(&text),
        Tender::Hvt | Tender::Spt => parse_solo5_version(&text),
    }
}

/// Everything the runtime's probe found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostProbe {
    /// The three tenders, found or not.
    pub tenders: Vec<TenderInfo>,
    /// Whether `/dev/kvm` (or the configured device) is usable, or why not.
    pub kvm: Result<(), String>,
    /// The KVM policy of the config.
    pub policy: KvmPolicy,
}

impl HostProbe {
    /// Looks for the tenders, asks each found one its version, and tries the KVM device.
    pub async fn run(config: &MirageConfig) -> HostProbe {
        let mut tenders = locate_tenders(config);
        for info in &mut tenders {
            if let Some(path) = &info.path {
                info.version = tender_version(info.tender, path).await;
            }
        }
        HostProbe {
            tenders,
            kvm: kvm_usable(&config.kvm_device),
            policy: config.kvm,
        }
    }

    /// The entry for `tender`.
    pub fn tender(&self, tender: Tender) -> Option<&TenderInfo> {
        self.tenders.iter().find(|t| t.tender == tender)
    }

    fn found(&self, tender: Tender) -> bool {
        self.tender(tender).is_some_and(|t| t.path.is_some())
    }

    /// Tenders that can run something now: qemu (with its accelerator policy satisfied),
    /// `solo5-spt`, and `solo5-hvt` when KVM is usable.
    pub fn usable(&self) -> Vec<Tender> {
        Tender::ALL
            .into_iter()
            .filter(|&t| match t {
                Tender::Qemu => self.found(t) && choose_accel(self.policy, &self.kvm).is_ok(),
                Tender::Hvt => self.found(t) && self.kvm.is_ok(),
                Tender::Spt => self.found(t),
            })
            .collect()
    }

    /// Why nothing can run, when nothing can.
    pub fn unavailable_reason(&self) -> Option<String> {
        if !self.usable().is_empty() {
            return None;
        }
        let mut why: Vec<String> = self
            .tenders
            .iter()
            .filter_map(|t| t.problem.clone())
            .collect();
        if self.found(Tender::Qemu) {
            if let Err(e) = choose_accel(self.policy, &self.kvm) {
                why.push(e);
            }
        }
        if self.found(Tender::Hvt) {
            if let Err(e) = &self.kvm {
                why.push(format!("solo5-hvt needs kvm but {e}"));
            }
        }
        Some(format!(
            "no usable unikernel tender: {} (install Debian's qemu-system-x86 or Solo5)",
            why.join("; ")
        ))
    }

    /// One line for people: each tender with its version or problem, and KVM.
    pub fn detail(&self) -> String {
        let mut parts: Vec<String> = self
            .tenders
            .iter()
            .map(|t| match (&t.path, &t.problem) {
                (Some(path), _) => format!(
                    "{} {} at {}",
                    t.tender,
                    t.version.as_deref().unwrap_or("(version unknown)"),
                    path.display()
                ),
                (None, Some(problem)) => problem.clone(),
                (None, None) => format!("{} not found", t.tender),
            })
            .collect();
        parts.push(match (&self.kvm, self.policy) {
            (Ok(()), KvmPolicy::Off) => "kvm: usable, off by config (qemu uses tcg)".into(),
            (Ok(()), _) => "kvm: usable (qemu uses kvm)".into(),
            (Err(e), KvmPolicy::On) => format!("kvm: {e}, but forced on by config"),
            (Err(e), _) => format!("kvm: {e} (qemu uses tcg)"),
        });
        parts.join("; ")
    }

    /// The probe as the `Runtime` trait reports it.
    pub fn to_runtime_probe(&self) -> RuntimeProbe {
        let usable = self.usable();
        let version = [Tender::Qemu, Tender::Hvt, Tender::Spt]
            .into_iter()
            .filter(|t| usable.contains(t))
            .find_map(|t| {
                self.tender(t)
                    .and_then(|i| i.version.as_ref())
                    .map(|v| format!("{t} {v}"))
            });
        let mut architectures = Vec::new();
        if usable.contains(&Tender::Qemu) {
            architectures.push(Arch::Amd64);
        }
        if usable
            .iter()
            .any(|t| matches!(t, Tender::Hvt | Tender::Spt))
            && !architectures.contains(&Arch::host())
        {
            architectures.push(Arch::host());
        }
        let detail = match self.unavailable_reason() {
            Some(why) => format!("{why}; {}", self.detail()),
            None => self.detail(),
        };
        RuntimeProbe {
            kind: RuntimeKind::new(RuntimeKind::MIRAGE),
            available: !usable.is_empty(),
            version,
            architectures,
            detail,
        }
    }
}

/// The host's memory in bytes (`MemTotal` of `/proc/meminfo`).
pub fn host_memory_bytes() -> Option<u64> {
    parse_meminfo_total(&std::fs::read_to_string("/proc/meminfo").ok()?)
}

/// `MemTotal` of a `/proc/meminfo` text, in bytes.
pub fn parse_meminfo_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Logical CPUs this process may use.
pub fn host_cpus() -> u32 {
    std::thread::available_parallelism()
        .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX))
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(tender: Tender, found: bool) -> TenderInfo {
        TenderInfo {
            tender,
            path: found.then(|| PathBuf::from(format!("/usr/bin/{tender}"))),
            version: found.then(|| "1.0".to_string()),
            problem: (!found).then(|| format!("{tender} not found on PATH")),
        }
    }

    fn host(qemu: bool, hvt: bool, spt: bool, kvm: bool, policy: KvmPolicy) -> HostProbe {
        HostProbe {
            tenders: vec![
                info(Tender::Qemu, qemu),
                info(Tender::Hvt, hvt),
                info(Tender::Spt, spt),
            ],
            kvm: if kvm {
                Ok(())
            } else {
                Err("/dev/kvm is not usable: No such file or directory (os error 2)".into())
            },
            policy,
        }
    }

    #[test]
    fn versions_are_read_from_the_tenders_words() {
        assert_eq!(
            parse_qemu_version(
                "QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright (c) 2003-2022"
            )
            .as_deref(),
            Some("7.2.22")
        );
        assert_eq!(parse_qemu_version("nonsense"), None);
        assert_eq!(
            parse_solo5_version("\nsolo5-hvt v0.9.0\n").as_deref(),
            Some("v0.9.0")
        );
    }

    #[test]
    fn nothing_installed_is_unavailable_with_every_reason() {
        let probe = host(false, false, false, false, KvmPolicy::Auto).to_runtime_probe();
        assert!(!probe.available);
        assert_eq!(probe.kind.as_str(), "mirage");
        assert!(
            probe.detail.starts_with(
                "no usable unikernel tender: qemu-system-x86_64 not found on PATH; \
                 solo5-hvt not found on PATH; solo5-spt not found on PATH"
            ),
            "{}",
            probe.detail
        );
        assert!(probe.architectures.is_empty());
    }

    #[test]
    fn qemu_alone_is_enough_and_reports_its_version() {
        let probe = host(true, false, false, false, KvmPolicy::Auto).to_runtime_probe();
        assert!(probe.available);
        assert_eq!(probe.version.as_deref(), Some("qemu-system-x86_64 1.0"));
        assert_eq!(probe.architectures, [Arch::Amd64]);
        assert!(probe.detail.contains("(qemu uses tcg)"), "{}", probe.detail);
    }

    #[test]
    fn hvt_needs_kvm_and_qemu_forced_onto_kvm_needs_it_too() {
        let probe = host(false, true, false, false, KvmPolicy::Auto);
        assert!(probe.usable().is_empty());
        assert!(probe
            .unavailable_reason()
            .unwrap()
            .contains("solo5-hvt needs kvm but /dev/kvm is not usable"));
        let forced = host(true, false, false, false, KvmPolicy::On);
        assert!(forced.usable().is_empty());
        assert!(forced
            .unavailable_reason()
            .unwrap()
            .contains("kvm is forced on by the config but /dev/kvm is not usable"));
        assert_eq!(
            host(false, true, false, true, KvmPolicy::Off).usable(),
            [Tender::Hvt]
        );
    }

    #[test]
    fn the_accelerator_follows_the_policy_and_the_device() {
        let ok = Ok(());
        let missing = Err("/dev/kvm is not usable".to_string());
        assert_eq!(choose_accel(KvmPolicy::Auto, &ok), Ok(Accel::Kvm));
        assert_eq!(choose_accel(KvmPolicy::Auto, &missing), Ok(Accel::Tcg));
        assert_eq!(choose_accel(KvmPolicy::Off, &ok), Ok(Accel::Tcg));
        assert_eq!(choose_accel(KvmPolicy::On, &ok), Ok(Accel::Kvm));
        assert!(choose_accel(KvmPolicy::On, &missing).is_err());
    }

    #[test]
    fn programs_are_found_by_path_or_on_path_and_missing_ones_explain() {
        assert!(locate(Path::new("sh")).is_ok());
        assert_eq!(
            locate(Path::new("edgeio-no-such-tender")).unwrap_err(),
            "edgeio-no-such-tender not found on PATH"
        );
        assert_eq!(
            locate(Path::new("/nonexistent/qemu")).unwrap_err(),
            "/nonexistent/qemu not found or not executable"
        );
        assert!(kvm_usable(Path::new("/nonexistent/kvm"))
            .unwrap_err()
            .starts_with("/nonexistent/kvm is not usable"));
    }

    #[test]
    fn meminfo_total_is_read_in_bytes() {
        assert_eq!(
            parse_meminfo_total("MemTotal:       24681234 kB\nMemFree: 1 kB\n"),
            Some(24681234 * 1024)
        );
        assert_eq!(parse_meminfo_total("MemFree: 1 kB\n"), None);
        assert!(host_memory_bytes().is_some_and(|b| b > 0));
        assert!(host_cpus() >= 1);
    }
}
