//! An instance's output: pumped from its pipes into size-capped files, served as lines.
//!
//! A program writes its stdout and stderr into two FIFOs in its instance folder
//! (`stdout.pipe`, `stderr.pipe`), which it holds open for reading *and* writing. The
//! runtime reads them and appends to `stdout.log` / `stderr.log`. Why FIFOs and not plain
//! pipes or plain files:
//!
//! * a plain file cannot be capped while the program holds it open;
//! * a plain pipe dies with the worker: the program's next write would get `SIGPIPE`.
//!   Because the program holds its FIFO open for reading too, it never gets `SIGPIPE`;
//!   while no worker reads, its writes block once the FIFO's buffer (64 KiB on Linux) is
//!   full, and a restarted worker that adopts the instance drains the FIFO again.
//!
//! **Cap**: when a write would take a log past [`crate::ProcessConfig::log_cap_bytes`], the
//! file is rotated once: renamed to `stdout.log.1` (replacing the previous one) and started
//! afresh. A stream thus keeps at most twice the cap on disk, and the newest output.
//!
//! **Reading**: without `follow`, the lines of stdout (`.1` then the current file) come
//! first, then those of stderr; `tail` keeps the last N of that sequence. With `follow`,
//! after those lines, new lines of either stream are yielded as they are found (both files
//! are polled every 100 ms, so the two streams interleave roughly in arrival order) until
//! the instance has ended and both files are read to their end.

use edgeio_core::runtime::{LogLine, LogOptions, LogSource, LogStream, RunState, RuntimeError};
use futures::StreamExt;
use std::collections::VecDeque;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::sync::{oneshot, watch};

const POLL: Duration = Duration::from_millis(100);
const CHUNK: usize = 16 * 1024;

/// The rotated sibling of a log file: `stdout.log` → `stdout.log.1`.
pub(crate) fn rotated(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// A log file that rotates once it would exceed its cap.
pub(crate) struct CappedFile {
    path: PathBuf,
    file: std::fs::File,
    len: u64,
    cap: u64,
}

impl CappedFile {
    /// Opens (appends to) `path`, which may hold the output of an earlier worker.
    pub fn open(path: PathBuf, cap: u64) -> io::Result<CappedFile> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        let len = file.metadata()?.len();
        Ok(CappedFile {
            path,
            file,
            len,
            cap: cap.max(1),
        })
    }

    fn rotate(&mut self) -> io::Result<()> {
        std::fs::rename(&self.path, rotated(&self.path))?;
        self.file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        self.len = 0;
        Ok(())
    }

    /// Appends `bytes`, rotating whenever the current file is full (a line may be split
    /// across the two files).
    pub fn write(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            if self.len >= self.cap {
                self.rotate()?;
            }
            let room = usize::try_from(self.cap - self.len).unwrap_or(usize::MAX);
            let (now, rest) = bytes.split_at(bytes.len().min(room));
            self.file.write_all(now)?;
            self.len += now.len() as u64;
            bytes = rest;
        }
        Ok(())
    }
}

/// Opens the runtime's reading end of a FIFO. A FIFO nobody writes to reads as ended.
pub(crate) fn open_pipe(path: &Path) -> io::Result<tokio::net::unix::pipe::Receiver> {
    tokio::net::unix::pipe::OpenOptions::new().open_receiver(path)
}

/// Copies a FIFO into its capped log until every writer has closed it. Dropping `done`
/// (at the end, or when the task is aborted) tells the waiter the pump has stopped.
pub(crate) async fn pump(
    mut pipe: tokio::net::unix::pipe::Receiver,
    mut log: CappedFile,
    done: oneshot::Sender<()>,
) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => {
                if let Err(e) = log.write(&buf[..n]) {
                    tracing::warn!(log = %log.path.display(), error = %e, "log write failed; output dropped");
                }
            }
            Err(e) => {
                tracing::debug!(log = %log.path.display(), error = %e, "log pipe read failed");
                break;
            }
        }
    }
    drop(done);
}

/// Complete lines of `buf` (without `\n` or a `\r` before it); what follows the last
/// newline stays in `buf`.
fn take_lines(buf: &mut Vec<u8>) -> Vec<String> {
    let Some(last) = buf.iter().rposition(|&b| b == b'\n') else {
        return Vec::new();
    };
    let rest = buf.split_off(last + 1);
    let complete = std::mem::replace(buf, rest);
    complete[..complete.len() - 1]
        .split(|&b| b == b'\n')
        .map(|l| String::from_utf8_lossy(l.strip_suffix(b"\r").unwrap_or(l)).into_owned())
        .collect()
}

/// The bytes of `path` from `offset` and the file's inode; nothing when it does not exist.
fn read_from(path: &Path, offset: u64) -> io::Result<(Vec<u8>, Option<u64>)> {
    use std::os::unix::fs::MetadataExt;
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((Vec::new(), None)),
        Err(e) => return Err(e),
    };
    let ino = file.metadata()?.ino();
    file.seek(SeekFrom::Start(offset))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok((bytes, Some(ino)))
}

fn inode(path: &Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| m.ino())
}

fn ended(state: &RunState) -> bool {
    !matches!(state, RunState::Running | RunState::Starting)
}

/// One followed stream: its file, how far it was read, and an unfinished line.
struct Source {
    source: LogSource,
    path: PathBuf,
    offset: u64,
    /// The inode of the file read so far: another inode at the path means it was rotated.
    ino: Option<u64>,
    partial: Vec<u8>,
}

impl Source {
    fn new(source: LogSource, path: PathBuf) -> Source {
        Source {
            source,
            path,
            offset: 0,
            ino: None,
            partial: Vec::new(),
        }
    }

    fn line(&self, text: String) -> LogLine {
        LogLine {
            source: self.source,
            text,
        }
    }

    /// Everything so far: the rotated file, then the current one.
    fn read_all(&mut self) -> io::Result<Vec<LogLine>> {
        let (mut bytes, _) = read_from(&rotated(&self.path), 0)?;
        let (current, ino) = read_from(&self.path, 0)?;
        self.offset = current.len() as u64;
        self.ino = ino;
        bytes.extend(current);
        self.partial = bytes;
        let lines = take_lines(&mut self.partial);
        Ok(lines.into_iter().map(|l| self.line(l)).collect())
    }

    /// What was appended since the last read. When the file was rotated meanwhile, the
    /// rest of the rotated file comes first (if it was rotated twice between two polls, the
    /// output in between is skipped).
    fn read_new(&mut self) -> io::Result<Vec<LogLine>> {
        use std::os::unix::fs::MetadataExt;
        let mut file = match std::fs::File::open(&self.path) {
            Ok(f) => Some(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        let ino = match &file {
            Some(f) => Some(f.metadata()?.ino()),
            None => None,
        };
        if ino != self.ino {
            let old = rotated(&self.path);
            if self.ino.is_some() && inode(&old) == self.ino {
                let (rest, _) = read_from(&old, self.offset)?;
                self.partial.extend(rest);
            }
            self.offset = 0;
            self.ino = ino;
        }
        if let Some(file) = &mut file {
            file.seek(SeekFrom::Start(self.offset))?;
            let mut bytes = Vec::new();
            file.read_to_end(&mut bytes)?;
            self.offset += bytes.len() as u64;
            self.partial.extend(bytes);
        }
        let lines = take_lines(&mut self.partial);
        Ok(lines.into_iter().map(|l| self.line(l)).collect())
    }

    /// The unfinished line, once nothing more is awaited.
    fn flush(&mut self) -> Option<LogLine> {
        if self.partial.is_empty() {
            return None;
        }
        let rest = std::mem::take(&mut self.partial);
        Some(self.line(String::from_utf8_lossy(&rest).into_owned()))
    }
}

struct Follow {
    sources: [Source; 2],
    queue: VecDeque<LogLine>,
    state: watch::Receiver<RunState>,
    done: bool,
}

fn other(e: io::Error) -> RuntimeError {
    RuntimeError::Other {
        source: Box::new(e),
    }
}

/// The log of the instance whose files are `stdout` and `stderr`; `state` tells when a
/// followed instance has ended (a closed channel counts as ended).
pub(crate) fn stream(
    stdout: PathBuf,
    stderr: PathBuf,
    options: LogOptions,
    mut state: watch::Receiver<RunState>,
) -> io::Result<LogStream> {
    let mut sources = [
        Source::new(LogSource::Stdout, stdout),
        Source::new(LogSource::Stderr, stderr),
    ];
    let finished = ended(&state.borrow_and_update());
    let mut lines = Vec::new();
    for source in &mut sources {
        lines.extend(source.read_all()?);
        if !options.follow || finished {
            // a line still being written counts when nothing more is awaited
            lines.extend(source.flush());
        }
    }
    if let Some(n) = options.tail {
        lines.drain(..lines.len().saturating_sub(n));
    }
    if !options.follow || finished {
        return Ok(futures::stream::iter(lines.into_iter().map(Ok)).boxed());
    }
    let follow = Follow {
        sources,
        queue: lines.into(),
        state,
        done: false,
    };
    Ok(futures::stream::unfold(follow, |mut f| async move {
        loop {
            if let Some(line) = f.queue.pop_front() {
                return Some((Ok(line), f));
            }
            if f.done {
                return None;
            }
            // the state is read before the files, so lines written before the end are not lost
            let has_ended = ended(&f.state.borrow()) || f.state.has_changed().is_err();
            for source in &mut f.sources {
                match source.read_new() {
                    Ok(lines) => f.queue.extend(lines),
                    Err(e) => {
                        f.done = true;
                        return Some((Err(other(e)), f));
                    }
                }
            }
            if !f.queue.is_empty() {
                continue;
            }
            if has_ended {
                for source in &mut f.sources {
                    f.queue.extend(source.flush());
                }
                f.done = true;
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(POLL) => {}
                _ = f.state.changed() => {}
            }
        }
    })
    .boxed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_on_newlines_and_lose_carriage_returns() {
        let mut buf = b"one\r\ntwo\n\nthree".to_vec();
        assert_eq!(take_lines(&mut buf), ["one", "two", ""]);
        assert_eq!(buf, b"three");
        assert!(take_lines(&mut buf).is_empty());
    }

    #[test]
    fn a_capped_file_rotates_once_and_never_exceeds_its_cap() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stdout.log");
        let mut log = CappedFile::open(path.clone(), 10).unwrap();
        log.write(b"0123456").unwrap();
        log.write(b"789abcdef").unwrap();
        assert_eq!(std::fs::read(rotated(&path)).unwrap(), b"0123456789");
        assert_eq!(std::fs::read(&path).unwrap(), b"abcdef");
        log.write(b"ghijklmnopqrstuvwxyz").unwrap();
        // only the newest two files' worth is kept
        assert_eq!(std::fs::read(rotated(&path)).unwrap(), b"klmnopqrst");
        assert_eq!(std::fs::read(&path).unwrap(), b"uvwxyz");
        let reopened = CappedFile::open(path.clone(), 10).unwrap();
        assert_eq!(reopened.len, 6, "a reopened log continues where it was");
    }

    fn texts(lines: Vec<Result<LogLine, RuntimeError>>) -> Vec<(LogSource, String)> {
        lines
            .into_iter()
            .map(|l| l.map(|l| (l.source, l.text)).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn without_follow_stdout_comes_before_stderr_and_tail_keeps_the_last_lines() {
        let dir = tempfile::tempdir().unwrap();
        let (out, err) = (dir.path().join("stdout.log"), dir.path().join("stderr.log"));
        std::fs::write(rotated(&out), "old\n").unwrap();
        std::fs::write(&out, "a\nb").unwrap();
        std::fs::write(&err, "oops\n").unwrap();
        let (_tx, rx) = watch::channel(RunState::Running);
        let all = stream(out.clone(), err.clone(), LogOptions::default(), rx.clone()).unwrap();
        use LogSource::*;
        assert_eq!(
            texts(all.collect().await),
            [
                (Stdout, "old".to_string()),
                (Stdout, "a".into()),
                (Stdout, "b".into()),
                (Stderr, "oops".into())
            ]
        );
        let tail = LogOptions {
            tail: Some(2),
            follow: false,
        };
        let last = stream(out, err, tail, rx).unwrap();
        assert_eq!(
            texts(last.collect().await),
            [(Stdout, "b".to_string()), (Stderr, "oops".into())]
        );
    }

    #[tokio::test]
    async fn follow_yields_new_lines_across_a_rotation_and_ends_with_the_instance() {
        let dir = tempfile::tempdir().unwrap();
        let (out, err) = (dir.path().join("stdout.log"), dir.path().join("stderr.log"));
        let mut log = CappedFile::open(out.clone(), 12).unwrap();
        log.write(b"first\n").unwrap();
        let (tx, rx) = watch::channel(RunState::Running);
        let opts = LogOptions {
            tail: None,
            follow: true,
        };
        let mut s = stream(out, err.clone(), opts, rx).unwrap();
        async fn next(s: &mut LogStream) -> String {
            tokio::time::timeout(Duration::from_secs(5), s.next())
                .await
                .expect("a line within 5 s")
                .unwrap()
                .unwrap()
                .text
        }
        assert_eq!(next(&mut s).await, "first");
        // "second" fills the file to 12 bytes; its newline and "third\n" land in a fresh one
        log.write(b"second\nthird\n").unwrap();
        assert_eq!(next(&mut s).await, "second");
        assert_eq!(next(&mut s).await, "third");
        std::fs::write(&err, "no newline").unwrap();
        tx.send_replace(RunState::Exited {
            code: Some(0),
            oom_killed: false,
        });
        let rest = tokio::time::timeout(Duration::from_secs(5), s.collect::<Vec<_>>())
            .await
            .expect("the stream ends after the instance");
        assert_eq!(texts(rest), [(LogSource::Stderr, "no newline".to_string())]);
    }
}
