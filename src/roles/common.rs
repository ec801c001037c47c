//! What the roles share: errors worded for one line, flag parsers, binding, shutdown.

use edgeio_core::model::{Labels, Location};
use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
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
    pub async fn wait(&mut self) -> Result<(), RoleError> {
        if self.tasks.is_empty() {
            return Ok(());
        }
        let (done, _, rest) = futures::future::select_all(self.tasks.drain(..)).await;
        self.tasks = rest;
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

#[cfg(test)]
mod tests {
    use super::*;

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
