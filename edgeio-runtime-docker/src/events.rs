//! Docker's events API, filtered by the edgeio label, as the runtime's event stream.
//!
//! One background task per runtime reads the engine's stream and fans it out through a
//! broadcast channel, so every subscriber sees every event. If the stream breaks (engine
//! restart, socket error) the task reconnects with a doubling backoff and asks the engine to
//! replay from the last event it saw (`since`), so nothing that happened in between is lost.

use crate::config::LABEL_NODE;
use crate::containers::SIGKILL_EXIT;
use crate::engine::Engine;
use bollard::models::{EventMessage, EventMessageTypeEnum};
use bollard::query_parameters::EventsOptions;
use edgeio_core::model::InstanceId;
use edgeio_core::runtime::{RunState, RuntimeEvent, LABEL_INSTANCE};
use futures::StreamExt;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::broadcast;
use tracing::{debug, warn};

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What one engine event means for edgeio, before the OOM bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seen {
    /// A state change to report.
    Change(RunState, String),
    /// The kernel killed the container for memory: its coming `die` is an OOM kill.
    Oom,
}

/// Reads an event message (pure, for unit tests): the instance it is about and what happened.
pub(crate) fn interpret(msg: &EventMessage) -> Option<(InstanceId, String, Seen)> {
    if !matches!(msg.typ, Some(EventMessageTypeEnum::CONTAINER)) {
        return None;
    }
    let actor = msg.actor.as_ref()?;
    let attributes = actor.attributes.as_ref()?;
    let id = InstanceId::new(attributes.get(LABEL_INSTANCE)?).ok()?;
    let container = actor.id.clone().unwrap_or_default();
    let seen = match msg.action.as_deref()? {
        "create" => Seen::Change(RunState::Starting, "container created".into()),
        "start" => Seen::Change(RunState::Running, "container started".into()),
        "die" => {
            let code = attributes.get("exitCode").and_then(|c| c.parse().ok());
            let reason = match code {
                Some(c) => format!("exited with code {c}"),
                None => "exited".to_string(),
            };
            Seen::Change(
                RunState::Exited {
                    code,
                    oom_killed: false,
                },
                reason,
            )
        }
        "oom" => Seen::Oom,
        "destroy" => Seen::Change(RunState::Removed, "container removed".into()),
        _ => return None,
    };
    Some((id, container, seen))
}

/// The engine-side filter: container events carrying the instance label (and this node's).
pub(crate) fn filters(node: Option<&str>) -> HashMap<String, Vec<String>> {
    let mut labels = vec![LABEL_INSTANCE.to_string()];
    if let Some(node) = node {
        labels.push(format!("{LABEL_NODE}={node}"));
    }
    HashMap::from([
        ("type".to_string(), vec!["container".to_string()]),
        ("label".to_string(), labels),
        (
            "event".to_string(),
            ["create", "start", "die", "oom", "destroy"]
                .map(String::from)
                .to_vec(),
        ),
    ])
}

/// Docker's `since`: seconds with a nanosecond fraction.
fn since_text(nanos: i64) -> String {
    format!(
        "{}.{:09}",
        nanos.div_euclid(1_000_000_000),
        nanos.rem_euclid(1_000_000_000)
    )
}

/// The engine's clock, or this host's when the engine does not tell.
async fn engine_now(docker: &bollard::Docker) -> i64 {
    let engine = docker
        .info()
        .await
        .ok()
        .and_then(|info| info.system_time)
        .and_then(|t| crate::clock::unix_nanos(&t));
    engine.unwrap_or_else(now_nanos)
}

/// Pauses before each look at a container that died by SIGKILL with no `oom` event.
const OOM_LOOKS_MS: [u64; 4] = [0, 100, 300, 600];

/// Whether the engine says `container` was OOM-killed. On cgroup v1 the kernel's OOM notice
/// can reach the engine just after the exit (seen here: one run in six under load, the
/// `oom` event after `die` and `OOMKilled` still false at that moment), so a `false` is
/// asked again a few times, about a second in all; only exits with code 137 pay for it.
async fn oom_killed(docker: &bollard::Docker, container: &str) -> bool {
    for pause in OOM_LOOKS_MS {
        tokio::time::sleep(Duration::from_millis(pause)).await;
        let state = docker
            .inspect_container(container, None)
            .await
            .ok()
            .and_then(|i| i.state);
        match state.and_then(|s| s.oom_killed) {
            Some(true) => return true,
            Some(false) => {}
            // gone or unreadable: nothing more to learn
            None => return false,
        }
    }
    false
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A reconnect asks the engine for events from this long before the newest one seen: the
/// engine stamps an event before it publishes it, so under load one can arrive after a newer
/// one, and a stream broken between the two would otherwise miss it.
const RESUME_MARGIN_NANOS: i64 = 1_000_000_000;
/// Events are remembered this long after the newest one, to drop what a replay repeats
/// (longer than [`RESUME_MARGIN_NANOS`], so everything a replay can repeat is remembered).
const SEEN_WINDOW_NANOS: i64 = 10_000_000_000;

/// Turns engine events into runtime events: OOM marks, replay de-duplication.
#[derive(Default)]
pub(crate) struct Translator {
    oom: HashSet<String>,
    /// The newest event time seen (the engine's clock), or where reading starts.
    last_nanos: i64,
    /// Events seen within [`SEEN_WINDOW_NANOS`] of the newest: (time, container, action).
    seen: BTreeSet<(i64, String, String)>,
}

impl Translator {
    /// The runtime event for `msg`, if any; `inspect_oom` asks the engine whether a container
    /// that died with 137 without an `oom` event before it was OOM-killed after all.
    pub(crate) async fn translate<F, Fut>(
        &mut self,
        msg: &EventMessage,
        inspect_oom: F,
    ) -> Option<RuntimeEvent>
    where
        F: FnOnce(String) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        if let Some(nanos) = msg.time_nano {
            let key = (
                nanos,
                msg.actor
                    .as_ref()
                    .and_then(|a| a.id.clone())
                    .unwrap_or_default(),
                msg.action.clone().unwrap_or_default(),
            );
            // a replay after a reconnect repeats what was sent; an event older than the
            // window is a repeat that was forgotten. One a little older than the newest is
            // news: the engine published it out of order.
            let forgotten = nanos < self.last_nanos.saturating_sub(SEEN_WINDOW_NANOS);
            if forgotten || !self.seen.insert(key) {
                return None;
            }
            if nanos > self.last_nanos {
                self.last_nanos = nanos;
                let cutoff = (
                    nanos.saturating_sub(SEEN_WINDOW_NANOS),
                    String::new(),
                    String::new(),
                );
                self.seen = self.seen.split_off(&cutoff);
            }
        }
        let (id, container, seen) = interpret(msg)?;
        match seen {
            Seen::Oom => {
                self.oom.insert(container);
                None
            }
            Seen::Change(RunState::Exited { code, .. }, reason) => {
                let mut oom_killed = self.oom.remove(&container);
                if !oom_killed && code == Some(SIGKILL_EXIT) {
                    oom_killed = inspect_oom(container).await;
                }
                let reason = if oom_killed {
                    format!("killed: out of memory ({reason})")
                } else {
                    reason
                };
                Some(RuntimeEvent {
                    id,
                    state: RunState::Exited { code, oom_killed },
                    reason,
                })
            }
            Seen::Change(state, reason) => {
                if state == RunState::Removed {
                    self.oom.remove(&container);
                }
                Some(RuntimeEvent { id, state, reason })
            }
        }
    }

    /// Where a reconnect resumes.
    fn resume_from(&self) -> i64 {
        if self.seen.is_empty() {
            // nothing read yet: from where reading was asked to start
            self.last_nanos
        } else {
            self.last_nanos.saturating_sub(RESUME_MARGIN_NANOS)
        }
    }
}

/// Reads the engine's events until aborted, sending each as a [`RuntimeEvent`]; `asked` is
/// when the first subscriber subscribed.
pub(crate) async fn pump(
    engine: Arc<Engine>,
    node: Option<String>,
    tx: broadcast::Sender<RuntimeEvent>,
    asked: Instant,
) {
    let mut translator = Translator::default();
    let mut backoff = FIRST_BACKOFF;
    loop {
        match engine.docker().await {
            Ok(docker) => {
                if translator.last_nanos == 0 {
                    // events from the moment the first subscriber asked, even those before
                    // this stream connects; in the engine's clock, which may differ from ours
                    let elapsed = i64::try_from(asked.elapsed().as_nanos()).unwrap_or(i64::MAX);
                    translator.last_nanos = engine_now(&docker).await.saturating_sub(elapsed);
                }
                let options = EventsOptions {
                    since: Some(since_text(translator.resume_from())),
                    until: None,
                    filters: Some(filters(node.as_deref())),
                };
                let mut stream = docker.events(Some(options));
                debug!(host = engine.host(), "reading docker events");
                loop {
                    match stream.next().await {
                        Some(Ok(msg)) => {
                            backoff = FIRST_BACKOFF;
                            let inspect = |container: String| {
                                let docker = docker.clone();
                                async move { oom_killed(&docker, &container).await }
                            };
                            if let Some(event) = translator.translate(&msg, inspect).await {
                                debug!(instance = %event.id, state = ?event.state, "runtime event");
                                // no subscriber is fine: events are for whoever listens now
                                let _ = tx.send(event);
                            }
                        }
                        Some(Err(e)) => {
                            warn!(host = engine.host(), error = %e, "docker event stream broke; reconnecting");
                            break;
                        }
                        None => {
                            warn!(
                                host = engine.host(),
                                "docker event stream ended; reconnecting"
                            );
                            break;
                        }
                    }
                }
            }
            Err(e) => warn!(error = %e, "docker events: no engine; retrying"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard::models::EventActor;

    fn msg(action: &str, container: &str, nanos: i64, extra: &[(&str, &str)]) -> EventMessage {
        let mut attributes = HashMap::from([
            (LABEL_INSTANCE.to_string(), "web-0".to_string()),
            ("name".to_string(), "edgeio-web-0".to_string()),
        ]);
        for (k, v) in extra {
            attributes.insert(k.to_string(), v.to_string());
        }
        EventMessage {
            typ: Some(EventMessageTypeEnum::CONTAINER),
            action: Some(action.to_string()),
            actor: Some(EventActor {
                id: Some(container.to_string()),
                attributes: Some(attributes),
            }),
            time_nano: Some(nanos),
            ..Default::default()
        }
    }

    async fn run(t: &mut Translator, m: &EventMessage) -> Option<RuntimeEvent> {
        t.translate(m, |_| async { false }).await
    }

    #[tokio::test]
    async fn start_die_and_destroy_become_running_exited_and_removed() {
        let mut t = Translator::default();
        let e = run(&mut t, &msg("start", "c1", 1, &[])).await.unwrap();
        assert_eq!(e.state, RunState::Running);
        let e = run(&mut t, &msg("die", "c1", 2, &[("exitCode", "3")]))
            .await
            .unwrap();
        assert_eq!(
            e.state,
            RunState::Exited {
                code: Some(3),
                oom_killed: false
            }
        );
        assert_eq!(e.reason, "exited with code 3");
        let e = run(&mut t, &msg("destroy", "c1", 3, &[])).await.unwrap();
        assert_eq!(e.state, RunState::Removed);
        assert!(run(&mut t, &msg("kill", "c1", 4, &[])).await.is_none());
    }

    #[tokio::test]
    async fn an_oom_event_marks_the_following_exit() {
        let mut t = Translator::default();
        assert!(run(&mut t, &msg("oom", "c1", 1, &[])).await.is_none());
        let e = run(&mut t, &msg("die", "c1", 2, &[("exitCode", "137")]))
            .await
            .unwrap();
        assert_eq!(
            e.state,
            RunState::Exited {
                code: Some(137),
                oom_killed: true
            }
        );
        assert!(
            e.reason.starts_with("killed: out of memory"),
            "{}",
            e.reason
        );
        // without an oom event first, a 137 asks the engine
        let e = t
            .translate(
                &msg("die", "c2", 3, &[("exitCode", "137")]),
                |c| async move { c == "c2" },
            )
            .await
            .unwrap();
        assert!(matches!(
            e.state,
            RunState::Exited {
                oom_killed: true,
                ..
            }
        ));
    }

    #[tokio::test]
    async fn a_replay_after_reconnect_is_not_sent_twice() {
        let mut t = Translator::default();
        assert!(run(&mut t, &msg("start", "c1", 5, &[])).await.is_some());
        assert!(run(&mut t, &msg("start", "c2", 5, &[])).await.is_some());
        // the replay from `since = 5` repeats both, and an older one
        assert!(run(&mut t, &msg("start", "c1", 5, &[])).await.is_none());
        assert!(run(&mut t, &msg("start", "c2", 5, &[])).await.is_none());
        assert!(run(&mut t, &msg("die", "c1", 6, &[])).await.is_some());
        // the replay starts a margin before the newest event seen
        assert_eq!(t.resume_from(), 6 - RESUME_MARGIN_NANOS);
        // one older than the window is a repeat no longer remembered: dropped
        let old = 6 - SEEN_WINDOW_NANOS - 1;
        assert!(run(&mut t, &msg("create", "c0", old, &[])).await.is_none());
    }

    #[tokio::test]
    async fn an_event_published_after_a_newer_one_is_not_lost() {
        // the engine stamps events before publishing them: under load c2's start (at 9)
        // can arrive after c1's die (at 10)
        let mut t = Translator::default();
        assert!(run(&mut t, &msg("die", "c1", 10, &[])).await.is_some());
        let late = run(&mut t, &msg("start", "c2", 9, &[])).await.unwrap();
        assert_eq!(late.state, RunState::Running);
        // and a replay repeats neither
        assert!(run(&mut t, &msg("start", "c2", 9, &[])).await.is_none());
        assert!(run(&mut t, &msg("die", "c1", 10, &[])).await.is_none());
    }

    #[test]
    fn events_without_the_label_or_of_other_types_are_ignored() {
        let mut m = msg("start", "c1", 1, &[]);
        m.typ = Some(EventMessageTypeEnum::NETWORK);
        assert!(interpret(&m).is_none());
        let mut m = msg("start", "c1", 1, &[]);
        m.actor.as_mut().unwrap().attributes = Some(HashMap::new());
        assert!(interpret(&m).is_none());
    }

    #[test]
    fn since_keeps_nanoseconds() {
        assert_eq!(
            since_text(1_700_000_000_000_000_123),
            "1700000000.000000123"
        );
        let f = filters(Some("e580"));
        assert_eq!(f["label"], vec!["edgeio.instance", "edgeio.node=e580"]);
    }
}
