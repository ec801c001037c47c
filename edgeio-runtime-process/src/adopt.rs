//! What an instance leaves in the state folder so that a restarted worker finds it again.
//!
//! `STATE/instances/ID/` holds:
//!
//! | file | written | what for |
//! |---|---|---|
//! | `meta.json` | at deploy, again once the pid is known | spec, program, pid, start time |
//! | `exit.json` | when the supervising runtime sees the end | exit code and reason |
//! | `stdout.pipe`, `stderr.pipe` | at deploy (FIFOs) | the program's output, read by the runtime |
//! | `stdout.log`, `stderr.log` (+ `.1`) | by the runtime | the capped logs |
//!
//! A pid alone could name another process after a reboot or a wrap of the pid counter, so
//! the process's start time (field 22 of `/proc/PID/stat`, in clock ticks since boot) is
//! recorded beside it and checked before the pid is trusted or signalled.

use edgeio_core::job::InstanceSpec;
use edgeio_core::model::{InstanceId, Labels};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::io;
use std::path::{Path, PathBuf};

/// What `meta.json` records about an instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// The spec it was deployed from.
    pub spec: InstanceSpec,
    /// Its labels (the spec's plus the instance and job ids).
    pub labels: Labels,
    /// The allowed program it runs (canonical path).
    pub program: PathBuf,
    /// Its pid (also its process group id); `None` until it started.
    pub pid: Option<u32>,
    /// Its start time in clock ticks since boot, against pid reuse.
    pub start_ticks: Option<u64>,
    /// The cgroup it was moved into, when limits are enforced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<PathBuf>,
}

/// What `exit.json` records about an instance's end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// The exit code (128 + n for a death by signal n); `None` when unknown.
    pub code: Option<i32>,
    /// Why, for people.
    pub reason: String,
}

/// The files of one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Paths {
    pub dir: PathBuf,
    pub meta: PathBuf,
    pub exit: PathBuf,
    pub stdout_pipe: PathBuf,
    pub stderr_pipe: PathBuf,
    pub stdout_log: PathBuf,
    pub stderr_log: PathBuf,
}

impl Paths {
    pub fn new(state_dir: &Path, id: &InstanceId) -> Paths {
        let dir = instances_dir(state_dir).join(id.as_str());
        Paths {
            meta: dir.join("meta.json"),
            exit: dir.join("exit.json"),
            stdout_pipe: dir.join("stdout.pipe"),
            stderr_pipe: dir.join("stderr.pipe"),
            stdout_log: dir.join("stdout.log"),
            stderr_log: dir.join("stderr.log"),
            dir,
        }
    }
}

/// `STATE/instances`.
pub(crate) fn instances_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("instances")
}

/// Writes JSON atomically (a temporary file renamed into place), so a worker dying midway
/// leaves the previous version, never half a file.
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
pub struct ProcStat {
    /// `R`, `S`, `D`, `Z` (zombie), `X` (dead) …
    pub state: char,
    /// The process group (field 5).
    pub pgrp: u32,
    /// Start time in clock ticks since boot (field 22).
    pub start_ticks: u64,
}

/// Parses `/proc/PID/stat`. The command name in parentheses may hold spaces and
/// parentheses, so the fields are counted from the last `)`.
pub fn parse_proc_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // fields[0] is field 3 (state), so field n is fields[n - 3]
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        pgrp: fields.get(2)?.parse().ok()?,
        start_ticks: fields.get(19)?.parse().ok()?,
    })
}

/// `/proc/PID/stat` of a process, if it exists.
pub(crate) fn proc_stat(pid: u32) -> Option<ProcStat> {
    parse_proc_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

fn live(stat: &ProcStat) -> bool {
    !matches!(stat.state, 'Z' | 'X' | 'x')
}

/// True while `pid` is a live process (not a zombie) that started at `start_ticks`, when
/// given.
pub(crate) fn is_alive(pid: u32, start_ticks: Option<u64>) -> bool {
    proc_stat(pid).is_some_and(|s| live(&s) && start_ticks.is_none_or(|t| t == s.start_ticks))
}

/// Live processes of process group `pgid` that started no earlier than `since` (the
/// leader's start): what is left of an instance once its leader is gone. A group id is not
/// handed out again while any member lives, and a stranger reusing the number would have
/// to have started after the leader *and* made itself a group leader, which the start-time
/// bound cannot rule out; that window is accepted.
pub(crate) fn group_members(pgid: u32, since: Option<u64>) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            proc_stat(pid).is_some_and(|s| {
                s.pgrp == pgid && live(&s) && since.is_none_or(|t| s.start_ticks >= t)
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_fields_are_counted_from_the_last_parenthesis() {
        let line = "4242 (a (weird) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        let stat = parse_proc_stat(line).unwrap();
        assert_eq!(stat.state, 'S');
        assert_eq!(stat.pgrp, 4242);
        assert_eq!(stat.start_ticks, 987654);
        assert_eq!(parse_proc_stat("12 (x) S 1"), None);
    }

    #[test]
    fn this_process_is_alive_and_a_wrong_start_time_is_not() {
        let me = std::process::id();
        let stat = proc_stat(me).unwrap();
        assert!(is_alive(me, Some(stat.start_ticks)));
        assert!(is_alive(me, None));
        assert!(!is_alive(me, Some(stat.start_ticks + 1)));
    }

    #[test]
    fn json_files_are_replaced_whole_and_a_missing_one_reads_as_none() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("exit.json");
        assert_eq!(read_json::<ExitRecord>(&path).unwrap(), None);
        let record = ExitRecord {
            code: Some(3),
            reason: "exited with code 3".into(),
        };
        write_json(&path, &record).unwrap();
        assert_eq!(read_json::<ExitRecord>(&path).unwrap(), Some(record));
        assert!(!path.with_extension("json.tmp").exists());
    }
}
