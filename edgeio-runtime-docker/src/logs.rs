//! A container's output as a stream of lines.
//!
//! The engine sends output in frames that need not end at a line break (a long line spans
//! frames, a burst packs several lines in one); lines are reassembled per stream here.

use crate::errors;
use bollard::container::LogOutput;
use bollard::query_parameters::LogsOptions;
use bollard::Docker;
use edgeio_core::model::InstanceId;
use edgeio_core::runtime::{LogLine, LogOptions, LogSource, LogStream, RuntimeError};
use futures::stream::BoxStream;
use futures::{stream, StreamExt};
use std::collections::VecDeque;

/// Splits frames into lines, one pending partial line per source.
#[derive(Default)]
pub(crate) struct LineSplitter {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    console: Vec<u8>,
}

impl LineSplitter {
    fn buffer(&mut self, source: LogSource) -> &mut Vec<u8> {
        match source {
            LogSource::Stdout => &mut self.stdout,
            LogSource::Stderr => &mut self.stderr,
            LogSource::Console => &mut self.console,
        }
    }

    /// Adds a frame; returns the lines it completed.
    pub(crate) fn push(&mut self, source: LogSource, bytes: &[u8]) -> Vec<LogLine> {
        let buffer = self.buffer(source);
        buffer.extend_from_slice(bytes);
        let mut lines = Vec::new();
        while let Some(end) = buffer.iter().position(|&b| b == b'\n') {
            let rest = buffer.split_off(end + 1);
            let line = std::mem::replace(buffer, rest);
            lines.push(to_line(source, &line));
        }
        lines
    }

    /// The partial lines left when the stream ends.
    pub(crate) fn finish(&mut self) -> Vec<LogLine> {
        [LogSource::Stdout, LogSource::Stderr, LogSource::Console]
            .into_iter()
            .filter_map(|source| {
                let buffer = std::mem::take(self.buffer(source));
                (!buffer.is_empty()).then(|| to_line(source, &buffer))
            })
            .collect()
    }
}

fn to_line(source: LogSource, bytes: &[u8]) -> LogLine {
    let text = String::from_utf8_lossy(bytes);
    LogLine {
        source,
        text: text.trim_end_matches(['\n', '\r']).to_string(),
    }
}

fn frame(output: LogOutput) -> Option<(LogSource, bytes::Bytes)> {
    match output {
        LogOutput::StdOut { message } => Some((LogSource::Stdout, message)),
        LogOutput::StdErr { message } => Some((LogSource::Stderr, message)),
        LogOutput::Console { message } => Some((LogSource::Console, message)),
        LogOutput::StdIn { .. } => None,
    }
}

/// Splits `<RFC 3339 timestamp> <text>` (one log entry per frame when timestamps are on).
fn split_timestamp(bytes: &[u8]) -> (Option<&str>, &[u8]) {
    match bytes.iter().position(|&b| b == b' ') {
        Some(space) => match std::str::from_utf8(&bytes[..space]) {
            Ok(ts) if ts.len() >= 20 && ts.as_bytes()[10] == b'T' => {
                (Some(ts), &bytes[space + 1..])
            }
            _ => (None, bytes),
        },
        None => (None, bytes),
    }
}

#[derive(PartialEq)]
enum Phase {
    /// The requested log (followed or not).
    Main,
    /// After a followed log ended: the entries the engine wrote after its last frame.
    CatchUp,
    /// Nothing more.
    Done,
}

struct State {
    docker: Docker,
    host: String,
    container: String,
    id: InstanceId,
    options: LogOptions,
    frames: BoxStream<'static, Result<LogOutput, bollard::errors::Error>>,
    phase: Phase,
    // newest entry seen; entries are compared as text (docker's timestamps are fixed-width)
    last: Option<String>,
    splitter: LineSplitter,
    ready: VecDeque<Result<LogLine, RuntimeError>>,
}

impl State {
    fn query(&self) -> LogsOptions {
        LogsOptions {
            follow: self.options.follow,
            stdout: true,
            stderr: true,
            timestamps: self.options.follow,
            tail: tail_text(self.options.tail),
            ..Default::default()
        }
    }

    /// Docker 20.10 ends a followed log when the container stops without sending what the
    /// log copier had not flushed yet — reliably so for a last line without a newline. A
    /// second, unfollowed read from the last entry seen on returns what was missed.
    fn catch_up(&mut self) {
        let query = LogsOptions {
            stdout: true,
            stderr: true,
            timestamps: true,
            since: self
                .last
                .as_deref()
                .and_then(crate::clock::unix_nanos)
                .and_then(|n| i32::try_from(n.div_euclid(1_000_000_000)).ok())
                .unwrap_or(0),
            // nothing seen yet: as much as the caller asked for
            tail: if self.last.is_some() {
                "all".to_string()
            } else {
                tail_text(self.options.tail)
            },
            ..Default::default()
        };
        self.frames = self.docker.logs(&self.container, Some(query)).boxed();
        self.phase = Phase::CatchUp;
    }

    fn accept(&mut self, output: LogOutput) {
        let Some((source, bytes)) = frame(output) else {
            return;
        };
        let text = if self.options.follow {
            let (ts, text) = split_timestamp(&bytes);
            if let Some(ts) = ts {
                if self.phase == Phase::CatchUp && self.last.as_deref().is_some_and(|l| ts <= l) {
                    return;
                }
                if self.last.as_deref().is_none_or(|l| ts > l) {
                    self.last = Some(ts.to_string());
                }
            }
            text
        } else {
            &bytes[..]
        };
        let lines = self.splitter.push(source, text);
        self.ready.extend(lines.into_iter().map(Ok));
    }

    fn end(&mut self) {
        self.ready
            .extend(self.splitter.finish().into_iter().map(Ok));
        self.phase = Phase::Done;
    }
}

fn tail_text(tail: Option<usize>) -> String {
    tail.map_or_else(|| "all".to_string(), |n| n.to_string())
}

/// The output of container `container` (already checked to run instance `id`).
pub(crate) fn stream(
    docker: &Docker,
    host: &str,
    container: &str,
    id: &InstanceId,
    options: LogOptions,
) -> LogStream {
    let mut state = State {
        docker: docker.clone(),
        host: host.to_string(),
        container: container.to_string(),
        id: id.clone(),
        options,
        frames: stream::empty().boxed(),
        phase: Phase::Main,
        last: None,
        splitter: LineSplitter::default(),
        ready: VecDeque::new(),
    };
    state.frames = docker.logs(container, Some(state.query())).boxed();
    stream::unfold(state, |mut state| async move {
        loop {
            if let Some(item) = state.ready.pop_front() {
                return Some((item, state));
            }
            if state.phase == Phase::Done {
                return None;
            }
            match state.frames.next().await {
                Some(Ok(output)) => state.accept(output),
                // the catch-up is best effort: the container may be gone by now
                Some(Err(_)) if state.phase == Phase::CatchUp => state.end(),
                Some(Err(e)) => {
                    let err = errors::other(&state.host, state.id.as_str(), e);
                    state.end();
                    state.ready.push_back(Err(err));
                }
                // a followed log ends when the container stops
                None if state.phase == Phase::Main && state.options.follow => state.catch_up(),
                None => state.end(),
            }
        }
    })
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_reassembled_into_lines_per_source() {
        let mut s = LineSplitter::default();
        assert!(s.push(LogSource::Stdout, b"hel").is_empty());
        assert!(s.push(LogSource::Stderr, b"oops\n").len() == 1);
        let lines = s.push(LogSource::Stdout, b"lo\r\nworld\npart");
        let texts: Vec<_> = lines.iter().map(|l| l.text.as_str()).collect();
        assert_eq!(texts, vec!["hello", "world"]);
        let rest = s.finish();
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].text, "part");
        assert_eq!(rest[0].source, LogSource::Stdout);
        assert!(s.finish().is_empty());
    }

    #[test]
    fn timestamps_are_split_off() {
        let (ts, text) = split_timestamp(b"2026-11-23T10:00:01.123456789Z hello world\n");
        assert_eq!(ts, Some("2026-11-23T10:00:01.123456789Z"));
        assert_eq!(text, b"hello world\n");
        assert_eq!(split_timestamp(b"plain text").0, None);
    }
}
