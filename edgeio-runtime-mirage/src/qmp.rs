//! A minimal QMP (QEMU Machine Protocol) client over a unix socket: the greeting,
//! `qmp_capabilities`, then commands such as `query-status` and `quit`.
//!
//! QMP is line-delimited JSON. The server greets with `{"QMP": {...}}`; every command is
//! answered by `{"return": ...}` or `{"error": {"class", "desc"}}`; asynchronous events
//! (`{"event": ...}`) may arrive between them and are skipped. qemu serves one QMP client at a
//! time on a socket, so callers connect, ask, and drop the connection.
//!
//! ```no_run
//! # async fn demo() -> Result<(), edgeio_runtime_mirage::qmp::QmpError> {
//! use edgeio_runtime_mirage::qmp::Qmp;
//! let mut qmp = Qmp::connect("/var/lib/edgeio/mirage/q/0123456789abcdef.sock").await?;
//! assert_eq!(qmp.query_status().await?, "running");
//! qmp.quit().await?;
//! # Ok(()) }
//! ```

use serde_json::{json, Value};
use std::io;
use std::path::Path;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

/// What went wrong talking QMP.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QmpError {
    /// The socket could not be reached or broke.
    #[error("qmp socket: {0}")]
    Io(#[from] io::Error),
    /// qemu closed the connection before answering.
    #[error("qmp connection closed by qemu")]
    Closed,
    /// The peer sent something that is not QMP.
    #[error("qmp protocol: {0}")]
    Protocol(String),
    /// qemu refused the command.
    #[error("qmp command {command:?} failed: {class}: {desc}")]
    Command {
        /// The command.
        command: String,
        /// qemu's error class (`GenericError`, `CommandNotFound` …).
        class: String,
        /// qemu's explanation.
        desc: String,
    },
}

/// An open QMP session, past the greeting and capabilities negotiation.
#[derive(Debug)]
pub struct Qmp {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    /// The `version` object of qemu's greeting.
    version: Value,
}

impl Qmp {
    /// Connects, reads the greeting and leaves capabilities negotiation mode.
    pub async fn connect(path: impl AsRef<Path>) -> Result<Qmp, QmpError> {
        let stream = UnixStream::connect(path.as_ref()).await?;
        let (read, writer) = stream.into_split();
        let mut qmp = Qmp {
            reader: BufReader::new(read),
            writer,
            version: Value::Null,
        };
        let greeting = qmp.read_message().await?;
        let Some(banner) = greeting.get("QMP") else {
            return Err(QmpError::Protocol(format!(
                "expected the QMP greeting, got {greeting}"
            )));
        };
        qmp.version = banner.get("version").cloned().unwrap_or(Value::Null);
        qmp.execute("qmp_capabilities", None).await?;
        Ok(qmp)
    }

    /// qemu's version as `major.minor.micro`, from the greeting.
    pub fn qemu_version(&self) -> Option<String> {
        let v = self.version.get("qemu")?;
        Some(format!(
            "{}.{}.{}",
            v.get("major")?,
            v.get("minor")?,
            v.get("micro")?
        ))
    }

    /// Runs a command and returns its `return` value.
    pub async fn execute(
        &mut self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, QmpError> {
        let mut request = json!({ "execute": command });
        if let Some(arguments) = arguments {
            request["arguments"] = arguments;
        }
        let mut line = request.to_string();
        line.push('\n');
        self.writer.write_all(line.as_bytes()).await?;
        loop {
            let message = self.read_message().await?;
            if message.get("event").is_some() {
                continue;
            }
            if let Some(value) = message.get("return") {
                return Ok(value.clone());
            }
            if let Some(error) = message.get("error") {
                let field = |name: &str| {
                    error
                        .get(name)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string()
                };
                return Err(QmpError::Command {
                    command: command.to_string(),
                    class: field("class"),
                    desc: field("desc"),
                });
            }
            return Err(QmpError::Protocol(format!(
                "unexpected answer to {command:?}: {message}"
            )));
        }
    }

    /// The VM's run state (`running`, `paused`, `shutdown`, `prelaunch` …).
    pub async fn query_status(&mut self) -> Result<String, QmpError> {
        let value = self.execute("query-status", None).await?;
        value
            .get("status")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| QmpError::Protocol(format!("query-status without status: {value}")))
    }

    /// Whether KVM acceleration is enabled for this VM.
    pub async fn kvm_enabled(&mut self) -> Result<bool, QmpError> {
        let value = self.execute("query-kvm", None).await?;
        Ok(value
            .get("enabled")
            .and_then(Value::as_bool)
            .unwrap_or(false))
    }

    /// Asks qemu to quit. qemu may close the socket before its answer arrives; that counts as
    /// success too, since the answer would have said the same.
    pub async fn quit(&mut self) -> Result<(), QmpError> {
        match self.execute("quit", None).await {
            Ok(_) | Err(QmpError::Closed) => Ok(()),
            Err(QmpError::Io(e)) if e.kind() == io::ErrorKind::ConnectionReset => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn read_message(&mut self) -> Result<Value, QmpError> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.reader.read_line(&mut line).await? == 0 {
                return Err(QmpError::Closed);
            }
            if !line.trim().is_empty() {
                break;
            }
        }
        serde_json::from_str(line.trim())
            .map_err(|e| QmpError::Protocol(format!("not JSON ({e}): {}", line.trim())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    /// A scripted QMP server: sends the greeting, then answers each request line with the
    /// next scripted reply lines.
    async fn serve(path: std::path::PathBuf, replies: Vec<Vec<&'static str>>) -> Vec<String> {
        let listener = UnixListener::bind(&path).unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let (read, mut write) = stream.into_split();
        let mut read = BufReader::new(read);
        write
            .write_all(b"{\"QMP\": {\"version\": {\"qemu\": {\"micro\": 22, \"minor\": 2, \"major\": 7}, \"package\": \"\"}, \"capabilities\": [\"oob\"]}}\r\n")
            .await
            .unwrap();
        let mut seen = Vec::new();
        for reply in replies {
            let mut line = String::new();
            if read.read_line(&mut line).await.unwrap() == 0 {
                break;
            }
            seen.push(line.trim().to_string());
            for r in reply {
                write
                    .write_all(format!("{r}\r\n").as_bytes())
                    .await
                    .unwrap();
            }
        }
        seen
    }

    #[tokio::test]
    async fn a_session_negotiates_skips_events_and_reads_answers() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.sock");
        let server = tokio::spawn(serve(
            path.clone(),
            vec![
                vec![r#"{"return": {}}"#],
                vec![r#"{"return": {"status": "running", "singlestep": false, "running": true}}"#],
                vec![
                    r#"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "SHUTDOWN", "data": {"guest": false, "reason": "host-qmp-quit"}}"#,
                    r#"{"return": {}}"#,
                ],
            ],
        ));
        let mut qmp = loop {
            match Qmp::connect(&path).await {
                Ok(q) => break q,
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            }
        };
        assert_eq!(qmp.qemu_version().as_deref(), Some("7.2.22"));
        assert_eq!(qmp.query_status().await.unwrap(), "running");
        qmp.quit().await.unwrap();
        let seen = server.await.unwrap();
        assert_eq!(
            seen,
            [
                r#"{"execute":"qmp_capabilities"}"#,
                r#"{"execute":"query-status"}"#,
                r#"{"execute":"quit"}"#
            ]
        );
    }

    #[tokio::test]
    async fn a_refused_command_is_a_command_error_and_a_close_during_quit_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.sock");
        let server = tokio::spawn(serve(
            path.clone(),
            vec![
                vec![r#"{"return": {}}"#],
                vec![
                    r#"{"error": {"class": "CommandNotFound", "desc": "The command nope has not been found"}}"#,
                ],
                vec![],
            ],
        ));
        let mut qmp = loop {
            match Qmp::connect(&path).await {
                Ok(q) => break q,
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
            }
        };
        let err = qmp.execute("nope", None).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "qmp command \"nope\" failed: CommandNotFound: The command nope has not been found"
        );
        // the scripted server answers nothing to quit and hangs up
        qmp.quit().await.unwrap();
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_missing_socket_is_an_io_error() {
        let err = Qmp::connect("/nonexistent/edgeio/q.sock")
            .await
            .unwrap_err();
        assert!(matches!(err, QmpError::Io(_)), "{err:?}");
    }
}
