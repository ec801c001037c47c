//! What the roles share: errors worded for one line, flag parsers, binding, shutdown.

use edgeio_core::model::{Labels, Location};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Why a role could not start or stopped: one line for people, naming the thing at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RoleError(pub String);

impl RoleError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> RoleError {
        RoleError(message.into())
    }
}

/// Reads durations as people write them: `500ms`, `2s`, `1m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(text.trim())
        .map_err(|e| format!("{text:?} is not a duration ({e}); write e.g. 500ms, 2s, 1m"))?;
    if d.is_zero() {
        return Err(format!("{text:?}: a duration must be more than zero"));
    }
    Ok(d)
}

/// Reads `K=V,K=V` labels.
pub fn parse_labels(text: &str) -> Result<Labels, String> {
    let mut labels = Labels::new();
    for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((k, v)) = pair.split_once('=') else {
            return Err(format!("label {pair:?} must be KEY=VALUE"));
        };
        if k.trim().is_empty() {
            return Err(format!("label {pair:?} has an empty key"));
        }
        labels.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(labels)
}

/// Reads `NAME` or `NAME@LAT,LON`.
pub fn parse_location(text: &str) -> Result<Location, String> {
    let (name, coords) = match text.split_once('@') {
        Some((name, coords)) => (name.trim(), Some(coords)),
        None => (text.trim(), None),
    };
    if name.is_empty() {
        return Err(format!(
            "location {text:?} needs a name, as in NAME or NAME@LAT,LON"
        ));
    }
    let mut location = Location::named(name);
    if let Some(coords) = coords {
        let parsed = coords.split_once(',').and_then(|(a, b)| {
            Some((a.trim().parse::<f64>().ok()?, b.trim().parse::<f64>().ok()?))
        });
        match parsed {
            Some((lat, lon))
                if (-90.0..=90.0).contains(&lat) && (-180.0..=180.0).contains(&lon) =>
            {
                location.latitude = Some(lat);
                location.longitude = Some(lon);
            }
            _ => {
                return Err(format!(
                    "location {text:?}: coordinates must be LAT,LON in degrees (-90..90, -180..180)"
                ))
            }
        }
    }
    Ok(location)
}

/// Binds a TCP listener, with an error naming what it is for and why it failed.
pub(crate) async fn bind(
    addr: SocketAddr,
    what: &str,
) -> Result<tokio::net::TcpListener, RoleError> {
    tokio::net::TcpListener::bind(addr).await.map_err(|e| {
        let why = match e.kind() {
            std::io::ErrorKind::AddrInUse => "the port is in use".to_string(),
            std::io::ErrorKind::AddrNotAvailable => "no such local address".to_string(),
            std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
            _ => e.to_string(),
        };
        RoleError::new(format!("cannot listen on {addr} for the {what}: {why}"))
    })
}

/// What an `--insecure` role says at start and in `/healthz`.
pub(crate) const INSECURE_WARNING: &str =
    "insecure: started with --insecure, so no TLS and no authentication; for development on one host only";

/// With `--insecure`, only a loopback address may be listened on: an open role on a real
/// network would run anyone's programs.
pub(crate) fn insecure_listen(addr: SocketAddr, flag: &str) -> Result<(), RoleError> {
    if addr.ip().is_loopback() {
        return Ok(());
    }
    Err(RoleError::new(format!(
        "{flag} {addr}: with --insecure only a loopback address (127.0.0.1, ::1) may be \
         listened on; drop --insecure to listen on {} with TLS and tokens",
        addr.ip()
    )))
}

/// Creates the data folder, with an error naming it.
pub(crate) fn data_dir(dir: &Path) -> Result<(), RoleError> {
    std::fs::create_dir_all(dir).map_err(|e| {
        RoleError::new(format!(
            "cannot create the data folder {}: {e}",
            dir.display()
        ))
    })
}

/// Reads an id kept in the data folder by an earlier run.
pub(crate) fn read_id(file: &Path) -> Option<String> {
    std::fs::read_to_string(file)
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// Keeps an id in the data folder for the next run.
pub(crate) fn write_id(file: &Path, id: &str) -> Result<(), RoleError> {
    std::fs::write(file, format!("{id}\n"))
        .map_err(|e| RoleError::new(format!("cannot write {}: {e}", file.display())))
}

/// A started role: its address, and the tasks that run it.
pub struct Running {
    /// `http://HOST:PORT` of its HTTP server (root, cluster) or of its parent (worker).
    pub url: String,
    /// Its id (the cluster's and worker's as their parent gave it; `root` for the root).
    pub id: String,
    /// The embedded MQTT broker's URL, for a cluster that runs one.
    pub broker: Option<String>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<Result<(), RoleError>>>,
}

impl Running {
    pub(crate) fn new(url: String, id: String, stop: watch::Sender<bool>) -> Running {
        Running {
            url,
            id,
            broker: None,
            stop,
            tasks: Vec::new(),
        }
    }

    pub(crate) fn spawn(
        &mut self,
        task: impl Future<Output = Result<(), RoleError>> + Send + 'static,
    ) {
        self.tasks.push(tokio::spawn(task));
    }

    /// A future that completes when the role is asked to stop.
    pub(crate) fn stopped(stop: &watch::Sender<bool>) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = stop.subscribe();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    }

    /// Waits until one of the role's tasks ends (an error, or a lost link) and returns why.
    /// Cancel-safe: dropped before that (say, for a [`Running::stop`] on a signal), it leaves
    /// every task in place for `stop` to wait for.
    pub async fn wait(&mut self) -> Result<(), RoleError> {
        if self.tasks.is_empty() {
            return Ok(());
        }
        let (done, index, _) = futures::future::select_all(self.tasks.iter_mut()).await;
        self.tasks.remove(index);
        match done {
            Ok(result) => result,
            Err(e) => Err(RoleError::new(format!("a task of the role failed: {e}"))),
        }
    }

    /// Asks every task to stop and waits for them (each is given `grace`, then aborted).
    pub async fn stop(mut self, grace: Duration) {
        let _ = self.stop.send(true);
        for task in self.tasks.drain(..) {
            let abort = task.abort_handle();
            if tokio::time::timeout(grace, task).await.is_err() {
                abort.abort();
            }
        }
    }
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn interrupted() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Reads a role's optional config file into its environment variables, so that clap sees
/// them with the usual precedence: flags, then the environment, then the file, then defaults.
///
/// The file is YAML: a mapping from flag names (`listen`, `status-interval`, `allow-native`
/// …) to values; lists become comma-separated. It is named by `--config FILE` (or
/// `EDGEIO_<BIN>_CONFIG`). A key that is no flag of the binary, or a value that is not a
/// scalar or a list of scalars, is an error naming the file, the key and the rule.
pub fn load_config_file(
    bin: &str,
    command: &clap::Command,
    args: &[std::ffi::OsString],
) -> Result<(), RoleError> {
    let env_name = |flag: &str| {
        format!(
            "EDGEIO_{}_{}",
            bin.to_uppercase(),
            flag.to_uppercase().replace('-', "_")
        )
    };
    let from_args = args
        .windows(2)
        .find_map(|w| (w[0] == "--config").then(|| PathBuf::from(&w[1])));
    let from_eq = args.iter().find_map(|a| {
        a.to_str()
            .and_then(|a| a.strip_prefix("--config="))
            .map(PathBuf::from)
    });
    let Some(path) = from_args
        .or(from_eq)
        .or_else(|| std::env::var_os(env_name("config")).map(PathBuf::from))
    else {
        return Ok(());
    };
    let text = std::fs::read_to_string(&path).map_err(|e| {
        RoleError::new(format!(
            "cannot read the config file {}: {e}",
            path.display()
        ))
    })?;
    let bad = |key: &str, rule: &str| {
        RoleError::new(format!("config file {}: {key}: {rule}", path.display()))
    };
    let map: serde_yaml_ng::Mapping = serde_yaml_ng::from_str(&text)
        .map_err(|e| bad("(file)", &format!("not a YAML mapping of flags: {e}")))?;
    let flags: Vec<String> = command
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_string))
        .filter(|f| f != "config" && f != "help" && f != "version")
        .collect();
    for (key, value) in map {
        let Some(key) = key.as_str().map(str::to_string) else {
            return Err(bad(&format!("{key:?}"), "keys must be flag names"));
        };
        if !flags.contains(&key) {
            return Err(bad(
                &key,
                &format!("not an option of {bin} (options: {})", flags.join(", ")),
            ));
        }
        let scalar = |v: &serde_yaml_ng::Value| match v {
            serde_yaml_ng::Value::String(s) => Some(s.clone()),
            serde_yaml_ng::Value::Number(n) => Some(n.to_string()),
            serde_yaml_ng::Value::Bool(b) => Some(b.to_string()),
            _ => None,
        };
        let text = match &value {
            serde_yaml_ng::Value::Sequence(items) => items
                .iter()
                .map(scalar)
                .collect::<Option<Vec<_>>>()
                .map(|v| v.join(",")),
            other => scalar(other),
        }
        .ok_or_else(|| {
            bad(
                &key,
                "the value must be a string, number, boolean or a list of them",
            )
        })?;
        let name = env_name(&key);
        if std::env::var_os(&name).is_none() {
            // set from `main` before any thread starts, and read by clap right after
            std::env::set_var(name, text);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insecure_roles_listen_on_loopback_only() {
        assert!(insecure_listen("127.0.0.1:7070".parse().unwrap(), "--listen").is_ok());
        assert!(insecure_listen("[::1]:7070".parse().unwrap(), "--listen").is_ok());
        let e = insecure_listen("0.0.0.0:7070".parse().unwrap(), "--listen").unwrap_err();
        assert!(
            e.0.starts_with("--listen 0.0.0.0:7070: with --insecure only a loopback address")
                && e.0.contains("drop --insecure"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn a_stop_after_an_abandoned_wait_still_waits_for_the_tasks() {
        let (stop, _) = watch::channel(false);
        let mut running = Running::new("http://x".into(), "t".into(), stop.clone());
        let stopped = Running::stopped(&stop);
        let (done_tx, mut done_rx) = tokio::sync::oneshot::channel();
        running.spawn(async move {
            stopped.await;
            // cleanup that takes a while, as a lease revocation does
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = done_tx.send(());
            Ok(())
        });
        // what a role's main does: wait, abandoned when a signal comes
        tokio::select! {
            _ = running.wait() => panic!("the task ended by itself"),
            _ = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
        running.stop(Duration::from_secs(5)).await;
        assert!(
            done_rx.try_recv().is_ok(),
            "stop returned before the task's cleanup"
        );
    }

    #[test]
    fn flags_parse_and_refuse_with_the_rule() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2s").unwrap(), Duration::from_secs(2));
        assert!(parse_duration("fast")
            .unwrap_err()
            .contains("write e.g. 500ms"));
        assert!(parse_duration("0s").unwrap_err().contains("more than zero"));
        let labels = parse_labels("zone=a, gpu=yes").unwrap();
        assert_eq!(labels["zone"], "a");
        assert!(parse_labels("zone").unwrap_err().contains("KEY=VALUE"));
        let here = parse_location("Garching@48.25,11.65").unwrap();
        assert_eq!(here.latitude, Some(48.25));
        assert_eq!(parse_location("Munich").unwrap().latitude, None);
        assert!(parse_location("x@200,0")
            .unwrap_err()
            .contains("coordinates"));
        assert!(parse_location("@1,2").unwrap_err().contains("needs a name"));
    }
}
