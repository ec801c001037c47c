//! One instance on disk and as a process: its folder in the state folder, the facts written
//! there, how its process is recognised after a restart, and how its end is decoded.
//!
//! # Layout
//!
//! ```text
//! STATE/instances/ID/meta.json      what was started: labels, image, tender, command, pid
//! STATE/instances/ID/console.log    the serial console (qemu) or standard output (Solo5)
//! STATE/instances/ID/tender.stderr  the tender's own messages
//! STATE/instances/ID/qemu.pid       qemu's pid file (qemu removes it when it exits)
//! STATE/instances/ID/exit.json      how it ended, once it has
//! STATE/q/HASH.sock                 qemu's QMP socket (short: see command::qmp_socket_path)
//! ```
//!
//! # Exit codes
//!
//! A guest ends through qemu's `isa-debug-exit` device (port `0xf4`) by writing a value `v`;
//! qemu then exits with `(v << 1) | 1`, which is never 0. The runtime reports `v` itself, so
//! **a guest writes 0 for success** (qemu exits 1, the instance reports code 0) and any other
//! value for failure. qemu's status keeps 8 bits, so guest codes are 0–127. Other ends:
//!
//! | how the tender ended | reported code |
//! |---|---|
//! | qemu status `2v + 1` (guest wrote `v`) | `v` |
//! | qemu status 1 **and** an error on qemu's stderr (qemu itself failed) | 1 |
//! | qemu status 0 (QMP `quit`, SIGTERM, ACPI power-off, a reset under `-no-reboot`) | 0 |
//! | qemu status other even `s` (qemu's own error) | `s` |
//! | Solo5 tender status `s` (the guest's `solo5_exit(s)`) | `s` |
//! | killed by signal `n` | `128 + n` (137 for SIGKILL, as shells and Docker say) |
//! | ended while no runtime was its parent (adopted) | unknown (`None`) |
//!
//! A guest that triple-faults also ends qemu with status 0 under `-no-reboot`: qemu does not
//! tell the two apart, so neither can the runtime.

use crate::command::{self, Tender};
use crate::image::ImageKind;
use edgeio_core::model::{InstanceId, JobId, Labels};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::io;
use std::path::{Path, PathBuf};

/// How a tender process ended, as the operating system says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessEnd {
    /// It exited with this status.
    Exited(i32),
    /// A signal killed it.
    Signaled(i32),
}

impl From<std::process::ExitStatus> for ProcessEnd {
    fn from(status: std::process::ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        match (status.code(), status.signal()) {
            (Some(code), _) => ProcessEnd::Exited(code),
            (None, Some(signal)) => ProcessEnd::Signaled(signal),
            // stopped/continued statuses are not ends; wait() does not return them
            (None, None) => ProcessEnd::Signaled(0),
        }
    }
}

/// What an end means for the instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitReport {
    /// The exit code to report (see the module docs).
    pub code: Option<i32>,
    /// Why, for people.
    pub reason: String,
    /// The tender itself failed (as opposed to the guest ending): before the instance ran,
    /// this makes the deploy an error.
    pub tender_failed: bool,
}

/// Decodes a tender's end (see the table in the module docs). `stderr` is what the tender
/// wrote on its standard error; only its non-warning lines count as errors.
pub fn decode_exit(tender: Tender, end: ProcessEnd, stderr: &str) -> ExitReport {
    let error = stderr_error(stderr);
    let with_error = |text: String| match error {
        Some(e) => format!("{text}: {e}"),
        None => text,
    };
    match (tender, end) {
        // a signal is never the guest's own way out: the tender was killed or crashed
        (_, ProcessEnd::Signaled(signal)) => ExitReport {
            code: Some(128 + signal),
            reason: with_error(format!(
                "{tender} was killed by signal {signal} ({})",
                signal_name(signal)
            )),
            tender_failed: true,
        },
        (Tender::Qemu, ProcessEnd::Exited(1)) if error.is_some() => ExitReport {
            code: Some(1),
            reason: with_error("qemu failed".into()),
            tender_failed: true,
        },
        (Tender::Qemu, ProcessEnd::Exited(0)) => ExitReport {
            code: Some(0),
            reason: "qemu shut down (quit, power-off or reset)".into(),
            tender_failed: false,
        },
        (Tender::Qemu, ProcessEnd::Exited(status)) if status & 1 == 1 => {
            let code = status >> 1;
            ExitReport {
                code: Some(code),
                reason: format!(
                    "the guest exited with code {code} through isa-debug-exit (qemu status {status})"
                ),
                tender_failed: false,
            }
        }
        (Tender::Qemu, ProcessEnd::Exited(status)) => ExitReport {
            code: Some(status),
            reason: with_error(format!("qemu exited with status {status}")),
            tender_failed: true,
        },
        (_, ProcessEnd::Exited(status)) if status != 0 && error.is_some() => ExitReport {
            code: Some(status),
            reason: with_error(format!("{tender} failed with status {status}")),
            tender_failed: true,
        },
        (_, ProcessEnd::Exited(status)) => ExitReport {
            code: Some(status),
            reason: format!("the guest exited with code {status}"),
            tender_failed: false,
        },
    }
}

/// The first line of a tender's stderr that is an error rather than a warning.
pub fn stderr_error(stderr: &str) -> Option<&str> {
    stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .find(|l| !l.contains("warning:") && !l.contains("terminating on signal"))
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        6 => "SIGABRT",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        15 => "SIGTERM",
        _ => "another signal",
    }
}

/// The files of one instance (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Paths {
    pub dir: PathBuf,
    pub meta: PathBuf,
    pub console: PathBuf,
    pub stderr: PathBuf,
    pub pid_file: PathBuf,
    pub exit: PathBuf,
    pub qmp_socket: PathBuf,
}

impl Paths {
    pub fn new(state_dir: &Path, id: &InstanceId) -> Paths {
        let dir = instances_dir(state_dir).join(id.as_str());
        Paths {
            meta: dir.join("meta.json"),
            console: dir.join("console.log"),
            stderr: dir.join("tender.stderr"),
            pid_file: dir.join("qemu.pid"),
            exit: dir.join("exit.json"),
            qmp_socket: command::qmp_socket_path(state_dir, id.as_str()),
            dir,
        }
    }
}

/// The folder holding one folder per instance.
pub(crate) fn instances_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("instances")
}

/// What was started, written before the tender runs and again with its pid.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Meta {
    pub id: InstanceId,
    pub job: JobId,
    pub labels: Labels,
    pub image: String,
    pub image_kind: ImageKind,
    pub tender: Tender,
    /// `tcg` or `kvm` (qemu only).
    pub accel: Option<command::Accel>,
    pub memory_mib: u64,
    pub vcpus: u32,
    /// The command line, for people.
    pub command: String,
    pub pid: Option<u32>,
    /// Field 22 of `/proc/PID/stat`: with the pid, names the process even after pid reuse.
    pub start_ticks: Option<u64>,
}

/// How an instance ended, kept so a later runtime reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ExitRecord {
    pub code: Option<i32>,
    pub reason: String,
}

/// Writes JSON through a temporary file and a rename, so a reader never sees half of it.
pub(crate) fn write_json(path: &Path, value: &impl Serialize) -> io::Result<()> {
    let text = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// Reads JSON; `None` when the file does not exist.
pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> io::Result<Option<T>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// The fields of `/proc/PID/stat` the runtime needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ProcStat {
    /// `R`, `S`, `D`, `Z` (zombie), `X` (dead) …
    pub state: char,
    pub start_ticks: u64,
}

/// Parses `/proc/PID/stat`; the command name in parentheses may hold spaces and parentheses,
/// so the fields are counted from the last `)`.
pub(crate) fn parse_proc_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state); starttime is field 22
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        start_ticks: fields.get(19)?.parse().ok()?,
    })
}

pub(crate) fn proc_stat(pid: u32) -> Option<ProcStat> {
    parse_proc_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// True when `pid` runs (a zombie has ended) and, when known, started at `start_ticks` — so a
/// recycled pid is not mistaken for the instance.
pub(crate) fn is_alive(pid: u32, start_ticks: Option<u64>) -> bool {
    match proc_stat(pid) {
        Some(stat) => {
            !matches!(stat.state, 'Z' | 'X' | 'x')
                && start_ticks.is_none_or(|s| s == stat.start_ticks)
        }
        None => false,
    }
}

/// The pid in qemu's pid file when that process's command line mentions `marker` (the
/// instance folder): the fallback when a worker died before recording the pid itself.
pub(crate) fn pid_from_pid_file(pid_file: &Path, marker: &Path) -> Option<(u32, u64)> {
    let pid: u32 = std::fs::read_to_string(pid_file)
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let marker = marker.to_string_lossy();
    String::from_utf8_lossy(&cmdline)
        .contains(marker.as_ref())
        .then_some(())?;
    Some((pid, proc_stat(pid)?.start_ticks))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guest_code_comes_back_from_qemus_odd_status() {
        let r = decode_exit(Tender::Qemu, ProcessEnd::Exited(7), "");
        assert_eq!(r.code, Some(3));
        assert!(!r.tender_failed);
        assert_eq!(
            r.reason,
            "the guest exited with code 3 through isa-debug-exit (qemu status 7)"
        );
        assert_eq!(
            decode_exit(Tender::Qemu, ProcessEnd::Exited(255), "").code,
            Some(127)
        );
    }

    #[test]
    fn a_guest_writing_zero_is_success() {
        let r = decode_exit(Tender::Qemu, ProcessEnd::Exited(1), "");
        assert_eq!(r.code, Some(0));
        assert!(!r.tender_failed);
        // warnings on stderr do not turn it into a qemu failure
        let warned = decode_exit(
            Tender::Qemu,
            ProcessEnd::Exited(1),
            "qemu-system-x86_64: warning: host doesn't support requested feature: CPUID.01H:ECX.pni [bit 0]\n",
        );
        assert_eq!(warned.code, Some(0));
    }

    #[test]
    fn status_one_with_an_error_is_qemu_failing() {
        let r = decode_exit(
            Tender::Qemu,
            ProcessEnd::Exited(1),
            "qemu-system-x86_64: Error loading uncompressed kernel without PVH ELF Note\n",
        );
        assert!(r.tender_failed);
        assert_eq!(r.code, Some(1));
        assert_eq!(
            r.reason,
            "qemu failed: qemu-system-x86_64: Error loading uncompressed kernel without PVH ELF Note"
        );
    }

    #[test]
    fn a_normal_qemu_exit_is_zero_and_signals_are_128_plus() {
        let quit = decode_exit(
            Tender::Qemu,
            ProcessEnd::Exited(0),
            "qemu-system-x86_64: terminating on signal 15 from pid 12\n",
        );
        assert_eq!(quit.code, Some(0));
        assert!(!quit.tender_failed);
        let killed = decode_exit(Tender::Qemu, ProcessEnd::Signaled(9), "");
        assert_eq!(killed.code, Some(137));
        assert!(killed.tender_failed);
        assert_eq!(
            killed.reason,
            "qemu-system-x86_64 was killed by signal 9 (SIGKILL)"
        );
        // qemu asserting (seen with -cpu host under nested KVM) says why on stderr
        let aborted = decode_exit(
            Tender::Qemu,
            ProcessEnd::Signaled(6),
            "qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69\nqemu-system-x86_64: kvm.c:3183: kvm_buf_set_msrs: Assertion failed.\n",
        );
        assert_eq!(
            aborted.reason,
            "qemu-system-x86_64 was killed by signal 6 (SIGABRT): qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69"
        );
        let even = decode_exit(Tender::Qemu, ProcessEnd::Exited(2), "");
        assert_eq!(even.code, Some(2));
        assert!(even.tender_failed);
    }

    #[test]
    fn solo5_tenders_pass_the_guest_code_through() {
        let r = decode_exit(Tender::Hvt, ProcessEnd::Exited(0), "");
        assert_eq!((r.code, r.tender_failed), (Some(0), false));
        let r = decode_exit(Tender::Spt, ProcessEnd::Exited(255), "");
        assert_eq!((r.code, r.tender_failed), (Some(255), false));
        let r = decode_exit(
            Tender::Hvt,
            ProcessEnd::Exited(1),
            "solo5-hvt: /img.hvt: Invalid or unsupported executable\n",
        );
        assert!(r.tender_failed);
        assert!(r.reason.contains("Invalid or unsupported"), "{}", r.reason);
    }

    #[test]
    fn proc_stat_is_read_after_the_last_parenthesis() {
        let text =
            "4242 (qemu (x) y) S 1 4242 4242 0 -1 4194560 1 0 0 0 0 0 0 0 20 0 3 0 987654 1 2 3";
        assert_eq!(
            parse_proc_stat(text),
            Some(ProcStat {
                state: 'S',
                start_ticks: 987654
            })
        );
        assert_eq!(parse_proc_stat("garbage"), None);
        let me = proc_stat(std::process::id()).unwrap();
        assert!(is_alive(std::process::id(), Some(me.start_ticks)));
        assert!(!is_alive(std::process::id(), Some(me.start_ticks + 1)));
    }

    #[test]
    fn an_exit_status_becomes_a_process_end() {
        let status = std::process::Command::new("sh")
            .args(["-c", "exit 7"])
            .status()
            .unwrap();
        assert_eq!(ProcessEnd::from(status), ProcessEnd::Exited(7));
        let status = std::process::Command::new("sh")
            .args(["-c", "kill -9 $$"])
            .status()
            .unwrap();
        assert_eq!(ProcessEnd::from(status), ProcessEnd::Signaled(9));
    }
}
