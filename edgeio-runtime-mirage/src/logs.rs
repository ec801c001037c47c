//! An instance's log: the console file, read as lines, with `tail` and `follow`.
//!
//! The console is a file so that it outlives the worker; following it polls the file (every
//! 100 ms) until the instance has ended and the file is read to its end.

use edgeio_core::runtime::{LogLine, LogOptions, LogSource, LogStream, RunState};
use futures::StreamExt;
use std::collections::VecDeque;
use std::io::SeekFrom;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::watch;

const POLL: Duration = Duration::from_millis(100);

/// Complete lines of `buf` (without `\n` or a `\r` before it); what follows the last newline
/// stays in `buf`.
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

fn console(text: String) -> LogLine {
    LogLine {
        source: LogSource::Console,
        text,
    }
}

async fn read_from(path: &PathBuf, offset: u64) -> std::io::Result<Vec<u8>> {
    let mut file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    file.seek(SeekFrom::Start(offset)).await?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).await?;
    Ok(bytes)
}

fn ended(state: &RunState) -> bool {
    !matches!(state, RunState::Running | RunState::Starting)
}

struct Follow {
    path: PathBuf,
    offset: u64,
    partial: Vec<u8>,
    queue: VecDeque<LogLine>,
    state: watch::Receiver<RunState>,
    done: bool,
}

/// The log of the console file at `path`; `state` tells when a followed instance has ended.
pub(crate) async fn stream(
    path: PathBuf,
    options: LogOptions,
    mut state: watch::Receiver<RunState>,
) -> std::io::Result<LogStream> {
    let mut partial = read_from(&path, 0).await?;
    let offset = partial.len() as u64;
    let mut lines = take_lines(&mut partial);
    let finished = ended(&state.borrow_and_update());
    if !options.follow || finished {
        // a line still being written counts when nothing more is awaited
        if !partial.is_empty() {
            lines.push(String::from_utf8_lossy(&partial).into_owned());
        }
        if let Some(n) = options.tail {
            lines.drain(..lines.len().saturating_sub(n));
        }
        return Ok(futures::stream::iter(lines.into_iter().map(|l| Ok(console(l)))).boxed());
    }
    if let Some(n) = options.tail {
        lines.drain(..lines.len().saturating_sub(n));
    }
    let follow = Follow {
        path,
        offset,
        partial,
        queue: lines.into_iter().map(console).collect(),
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
            // the state is read before the file, so lines written before the end are not lost
            let has_ended = ended(&f.state.borrow()) || f.state.has_changed().is_err();
            match read_from(&f.path, f.offset).await {
                Ok(bytes) => {
                    f.offset += bytes.len() as u64;
                    f.partial.extend(bytes);
                    f.queue
                        .extend(take_lines(&mut f.partial).into_iter().map(console));
                }
                Err(e) => {
                    f.done = true;
                    return Some((
                        Err(edgeio_core::runtime::RuntimeError::Other {
                            source: Box::new(e),
                        }),
                        f,
                    ));
                }
            }
            if !f.queue.is_empty() {
                continue;
            }
            if has_ended {
                if !f.partial.is_empty() {
                    let rest = std::mem::take(&mut f.partial);
                    f.queue
                        .push_back(console(String::from_utf8_lossy(&rest).into_owned()));
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

    async fn texts(stream: LogStream) -> Vec<String> {
        stream.map(|l| l.unwrap().text).collect().await
    }

    #[tokio::test]
    async fn tail_keeps_the_last_lines_and_a_partial_line_counts_when_not_following() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        std::fs::write(&path, "a\nb\nc").unwrap();
        let (_tx, rx) = watch::channel(RunState::Running);
        let all = stream(path.clone(), LogOptions::default(), rx.clone())
            .await
            .unwrap();
        assert_eq!(texts(all).await, ["a", "b", "c"]);
        let tail = LogOptions {
            tail: Some(2),
            follow: false,
        };
        assert_eq!(
            texts(stream(path, tail, rx).await.unwrap()).await,
            ["b", "c"]
        );
    }

    #[tokio::test]
    async fn follow_yields_new_lines_and_ends_with_the_instance() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        std::fs::write(&path, "first\n").unwrap();
        let (tx, rx) = watch::channel(RunState::Running);
        let opts = LogOptions {
            tail: None,
            follow: true,
        };
        let mut s = stream(path.clone(), opts, rx).await.unwrap();
        assert_eq!(s.next().await.unwrap().unwrap().text, "first");
        std::fs::write(&path, "first\nsecond\nthird without newline").unwrap();
        assert_eq!(s.next().await.unwrap().unwrap().text, "second");
        tx.send_replace(RunState::Exited {
            code: Some(0),
            oom_killed: false,
        });
        let rest = tokio::time::timeout(Duration::from_secs(5), s.collect::<Vec<_>>())
            .await
            .expect("the stream ends after the instance");
        let rest: Vec<String> = rest.into_iter().map(|l| l.unwrap().text).collect();
        assert_eq!(rest, ["third without newline"]);
    }

    #[tokio::test]
    async fn a_missing_console_file_is_an_empty_log() {
        let (_tx, rx) = watch::channel(RunState::Exited {
            code: None,
            oom_killed: false,
        });
        let s = stream(
            PathBuf::from("/nonexistent/console.log"),
            LogOptions::default(),
            rx,
        )
        .await
        .unwrap();
        assert!(texts(s).await.is_empty());
    }
}
