//! What a change of engine state asks the outside world to do, collected while the state's
//! lock is held and carried out after it is released (no I/O under a lock).
//!
//! **Ack means persisted.** A change's records are written before anything it asks for is
//! done. When the store refuses a write (a full disk), the key stays *dirty*: the engine's
//! memory is ahead of its store, and the change's messages and commands are *held*, in
//! order, not sent; a command it answers gets a `nack` with `retry` ("not now") instead of
//! its `ack`. Every later [`Core::apply`] (the engines' loops run one on each tick) writes the
//! dirty keys again first; once they are all written, what was held goes out, in order, and
//! the parent's re-sent command is acked. So nothing leaves the engine — no deploy to a node,
//! no event to the root, no ack — that its store does not hold.

use edgeio_core::reliable::{CommandOutcome, ReliableParent};
use edgeio_core::store::{Store, StoreError};
use edgeio_core::transport::{ChildTransport, ParentTransport, TransportError};
use edgeio_core::wire::{Envelope, ErrorBody, Message, Nack};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{info, warn};

/// The effects of one change. `T` tells what a command was for, so its outcome can be
/// applied when it comes back.
pub(crate) struct Effects<T> {
    /// Store keys whose records changed (written with the record as it is when written).
    pub persist: Vec<String>,
    /// The answer to the command from the parent that this change handled; sent before
    /// anything else. An `ack` goes out only once every record is written; until then the
    /// command is answered "not now" (`nack` with `retry`), and the parent sends it again.
    pub answer: Option<Envelope>,
    /// Messages to the parent.
    pub send_up: Vec<Envelope>,
    /// Messages to one child, not acknowledged.
    pub send_down: Vec<(String, Envelope)>,
    /// Commands to one child, re-sent until answered.
    pub commands: Vec<(String, Envelope, T)>,
}

impl<T> Default for Effects<T> {
    fn default() -> Self {
        Effects {
            persist: Vec::new(),
            answer: None,
            send_up: Vec::new(),
            send_down: Vec::new(),
            commands: Vec::new(),
        }
    }
}

/// Writes the current value of each dirty key, in order, removing the keys written; stops at
/// the first refusal (the store will refuse the rest too), leaving it and the keys after it
/// dirty. Each value is read when written, so a later write never carries an older record
/// than an earlier one; callers serialize calls (the backlog's mutex).
pub(crate) async fn persist_all(
    store: &dyn Store,
    dirty: &mut Vec<String>,
    value_of: impl Fn(&str) -> Option<Vec<u8>>,
) -> Result<(), StoreError> {
    while let Some(key) = dirty.first() {
        // A record no longer kept (never the case for jobs and nodes, which end in a final
        // state) leaves its last stored value.
        if let Some(value) = value_of(key) {
            store.put(key, value.into()).await?;
        }
        dirty.remove(0);
    }
    Ok(())
}

/// Puts an engine's state back as it was before a change (see [`Core::apply_or_undo`]).
type Undo<'a, S> = Box<dyn FnOnce(&mut S) + Send + 'a>;

/// Something a change asked for that waits for its records to be written.
enum Held<T> {
    Up(Envelope),
    Down(String, Envelope),
    Command(String, Envelope, T),
}

/// What is not durable yet: keys whose records the store refused, and what waits for them.
struct Backlog<T> {
    /// In the order they changed first.
    dirty: Vec<String>,
    held: Vec<Held<T>>,
}

impl<T> Backlog<T> {
    /// What goes once the store has taken every write: what waited for it first, then the
    /// change's messages and commands (`fresh`, `commands`), in order.
    fn release(
        &mut self,
        was_dirty: bool,
        fresh: Vec<Held<T>>,
        commands: Vec<Held<T>>,
    ) -> Vec<Held<T>> {
        if was_dirty {
            info!(
                held = self.held.len(),
                "the store takes writes again; sending what waited for it"
            );
        }
        let mut release = std::mem::take(&mut self.held);
        release.extend(fresh.into_iter().chain(commands));
        release
    }

    /// Marks `keys` dirty, each once: a key dirty already keeps its place.
    fn mark_dirty(&mut self, keys: &[String]) {
        for key in keys {
            if !self.dirty.contains(key) {
                self.dirty.push(key.clone());
            }
        }
    }
}

/// The JSON of the record `key` names when it lies under `prefix` in `records` (keyed by id),
/// as the store keeps it (serialized straight to bytes: a `serde_json::Value` on the way
/// allocates for every field, and persisting is on the path of every change).
pub(crate) fn record_json<T: serde::Serialize>(
    key: &str,
    prefix: &str,
    records: &std::collections::BTreeMap<String, T>,
) -> Option<Vec<u8>> {
    key.strip_prefix(prefix)
        .and_then(|id| records.get(id))
        .and_then(|record| serde_json::to_vec(record).ok())
}

/// Engine state that can write its records: the current JSON of a store key.
pub(crate) trait Records {
    /// The record under `key` as it is now, as JSON, `None` when there is none.
    fn value_of(&self, key: &str) -> Option<Vec<u8>>;
}

/// How a command sent on the engine's behalf was answered, tagged with what it was for.
pub(crate) type Outcome<T> = (T, Result<CommandOutcome, TransportError>);

/// The links an engine talks over once it runs.
#[derive(Clone)]
struct Links {
    down: ReliableParent,
    up: Option<Arc<dyn ChildTransport>>,
}

/// What an engine's tasks share: its state behind one mutex, its store, and its links once
/// it runs. Every change to the state returns [`Effects`], which [`Core::apply`] carries out
/// with the lock released.
pub(crate) struct Core<S, T> {
    state: Mutex<S>,
    /// The commands in flight: each is a task owned here, so that they all end with the
    /// engine ([`Core::end`]) instead of re-sending after it stopped.
    commands: Mutex<JoinSet<()>>,
    pub(crate) store: Arc<dyn Store>,
    /// Serializes writers, and keeps what is not durable yet.
    backlog: tokio::sync::Mutex<Backlog<T>>,
    outcomes: mpsc::UnboundedSender<Outcome<T>>,
    links: Mutex<Option<Links>>,
}

impl<S: Records, T: Send + 'static> Core<S, T> {
    /// A core over `state`, and the receiver of its commands' outcomes.
    pub(crate) fn new(
        state: S,
        store: Arc<dyn Store>,
    ) -> (Core<S, T>, mpsc::UnboundedReceiver<Outcome<T>>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let core = Core {
            state: Mutex::new(state),
            commands: Mutex::new(JoinSet::new()),
            store,
            backlog: tokio::sync::Mutex::new(Backlog {
                dirty: Vec::new(),
                held: Vec::new(),
            }),
            outcomes: tx,
            links: Mutex::new(None),
        };
        (core, rx)
    }

    /// The state, locked. A panic elsewhere must not turn every later call into a second one.
    pub(crate) fn state(&self) -> MutexGuard<'_, S> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ends the engine's commands in flight and forgets its links, so that nothing more is
    /// sent on its behalf (a change made through a handle later is kept and persisted, not
    /// sent). The engines' loops call this however they end ([`Running`]).
    pub(crate) fn end(&self) {
        *self.links.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let mut commands = self.commands.lock().unwrap_or_else(|e| e.into_inner());
        if !commands.is_empty() {
            info!(
                commands = commands.len(),
                "engine stopped; its commands in flight end with it"
            );
        }
        commands.abort_all();
    }

    /// Sets the links when the engine starts running.
    pub(crate) fn connect(&self, down: ReliableParent, up: Option<Arc<dyn ChildTransport>>) {
        *self.links.lock().unwrap_or_else(|e| e.into_inner()) = Some(Links { down, up });
    }

    /// The children's link, once running.
    pub(crate) fn down(&self) -> Option<ReliableParent> {
        self.links
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|l| l.down.clone())
    }

    /// Persists, sends, and starts the commands of `fx`; outcomes arrive on the receiver.
    ///
    /// Writes the records left dirty by earlier changes and then those of `fx`. When all are
    /// written, what earlier changes held goes out first, then `fx`'s. When the store refuses
    /// one, `fx`'s messages and commands are held (a change with no records of its own, such
    /// as an aggregate, sends its messages anyway: they say nothing the store lacks), its
    /// `ack` becomes a "not now", and the answer is [`StoreError::Unavailable`] saying why.
    pub(crate) async fn apply(&self, fx: Effects<T>) -> Result<(), StoreError> {
        self.apply_with(fx, None).await
    }

    /// As [`Core::apply`], for a change a caller is waiting on (the root's API): when the store
    /// refuses its records, the change is undone instead of held — `undo` puts the state back
    /// as it was, under the backlog's lock so that no other apply writes the changed records
    /// meanwhile — its messages and commands are dropped, and its keys stay dirty so that the
    /// store gets the restored records once it takes writes. Nothing of it happens, now or
    /// later; the caller says so (503) and may retry.
    pub(crate) async fn apply_or_undo(
        &self,
        fx: Effects<T>,
        undo: impl FnOnce(&mut S) + Send,
    ) -> Result<(), StoreError> {
        self.apply_with(fx, Some(Box::new(undo))).await
    }

    /// [`Core::apply`] and [`Core::apply_or_undo`]: `undo`, when given, is run if the store
    /// refuses the change's records.
    async fn apply_with(
        &self,
        fx: Effects<T>,
        undo: Option<Undo<'_, S>>,
    ) -> Result<(), StoreError> {
        let Effects {
            persist,
            answer,
            send_up,
            send_down,
            commands,
        } = fx;
        let fresh: Vec<Held<T>> = send_up
            .into_iter()
            .map(Held::Up)
            .chain(send_down.into_iter().map(|(c, e)| Held::Down(c, e)))
            .collect();
        let commands: Vec<Held<T>> = commands
            .into_iter()
            .map(|(c, e, t)| Held::Command(c, e, t))
            .collect();
        // one turn of the backlog's lock from the write to the decision, so that a change
        // held here cannot miss a release by a concurrent apply that found the store healed
        let (written, release) = {
            let mut backlog = self.backlog.lock().await;
            let was_dirty = !backlog.dirty.is_empty();
            backlog.mark_dirty(&persist);
            let written = persist_all(&*self.store, &mut backlog.dirty, |key| {
                self.state().value_of(key)
            })
            .await;
            let release = match &written {
                Ok(()) => backlog.release(was_dirty, fresh, commands),
                Err(e) => {
                    if !was_dirty {
                        warn!(
                            error = %e,
                            dirty = backlog.dirty.len(),
                            "cannot persist; holding back what depends on it until the store takes writes"
                        );
                    }
                    self.hold_or_undo(&mut backlog, &persist, fresh, commands, undo)
                }
            };
            (written, release)
        };
        let answer = answer.map(|answer| match (&answer.body, &written) {
            (Message::Ack(ack), Err(e)) => not_now(&answer, &ack.re, e),
            _ => answer,
        });
        self.send(answer, release).await;
        written.map_err(|e| StoreError::Unavailable {
            reason: format!("the change is not stored yet: {e}"),
        })
    }

    /// What goes now of a change whose records (`persist`) the store refused: with `undo`,
    /// nothing, now or later (the state is put back, its messages and commands dropped);
    /// else they wait in `backlog` for the store, but for the messages of a change that
    /// wrote no records (they say nothing the store lacks), returned to go now.
    fn hold_or_undo(
        &self,
        backlog: &mut Backlog<T>,
        persist: &[String],
        fresh: Vec<Held<T>>,
        commands: Vec<Held<T>>,
        undo: Option<Undo<'_, S>>,
    ) -> Vec<Held<T>> {
        if let Some(undo) = undo {
            undo(&mut self.state());
            // what was written of it must be written back as restored
            backlog.mark_dirty(persist);
            info!(
                dropped = fresh.len() + commands.len(),
                "change undone: the store refused it"
            );
            return Vec::new();
        }
        if persist.is_empty() {
            backlog.held.extend(commands);
            return fresh;
        }
        backlog.held.extend(fresh.into_iter().chain(commands));
        Vec::new()
    }

    /// Sends `answer` first, then each message and command in order.
    async fn send(&self, answer: Option<Envelope>, effects: Vec<Held<T>>) {
        let links = self.links.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(links) = links else {
            return;
        };
        for held in answer.map(Held::Up).into_iter().chain(effects) {
            match held {
                Held::Up(envelope) => match &links.up {
                    Some(up) => {
                        if let Err(e) = up.send(&envelope).await {
                            warn!(kind = envelope.kind(), error = %e, "cannot send to the parent");
                        }
                    }
                    None => warn!(kind = envelope.kind(), "no parent to send to"),
                },
                Held::Down(child, envelope) => {
                    if let Err(e) = links.down.send(&child, &envelope).await {
                        warn!(child, kind = envelope.kind(), error = %e, "cannot send to a child");
                    }
                }
                Held::Command(child, envelope, tag) => {
                    let down = links.down.clone();
                    let outcomes = self.outcomes.clone();
                    let mut commands = self.commands.lock().unwrap_or_else(|e| e.into_inner());
                    // the finished ones are reaped here, so the set holds only those in flight
                    while commands.try_join_next().is_some() {}
                    commands.spawn(async move {
                        let outcome = down.command(&child, envelope).await;
                        // the receiver is gone only when the engine is: nothing to tell
                        if outcomes.send((tag, outcome)).is_err() {
                            tracing::debug!("command outcome after the engine stopped");
                        }
                    });
                }
            }
        }
    }
}

/// The "not now" that replaces `ack` (answering command `re`): the command's change could
/// not be stored. It keeps the ack's id, time and sender, which the engine drew from its
/// context, so the loop draws no id and reads no clock of its own.
pub(crate) fn not_now(ack: &Envelope, re: &str, e: &StoreError) -> Envelope {
    Envelope {
        body: Message::Nack(Nack {
            re: re.to_string(),
            error: ErrorBody::unavailable(format!("{} cannot store the change now: {e}", ack.from)),
            unschedulable: None,
            retry: true,
        }),
        ..ack.clone()
    }
}

/// Ends an engine's commands when its loop ends, however it ends (returned, failed, or its
/// future dropped): hold one in the loop.
pub(crate) struct Running<'a, S: Records, T: Send + 'static>(pub(crate) &'a Core<S, T>);

impl<S: Records, T: Send + 'static> Drop for Running<'_, S, T> {
    fn drop(&mut self) {
        self.0.end();
    }
}

#[cfg(test)]
mod tests {
    //! `Core::apply` by value: a state of plain JSON records, a store that fails on command,
    //! and raw in-memory links on both sides to see exactly what goes out, and when.

    use super::*;
    use edgeio_core::reliable::ReliableConfig;
    use edgeio_core::testing::{FailSwitch, FailingStore, MemoryChild, MemoryHub, MemoryParent};
    use edgeio_core::transport::ParentEvent;
    use edgeio_core::wire::{Ack, Scale};
    use std::collections::BTreeMap;
    use std::time::Duration;

    /// Records by key.
    struct Kv(BTreeMap<String, serde_json::Value>);

    impl Records for Kv {
        fn value_of(&self, key: &str) -> Option<Vec<u8>> {
            self.0.get(key).map(|v| serde_json::to_vec(v).unwrap())
        }
    }

    struct Rig {
        core: Core<Kv, u32>,
        failing: FailSwitch,
        store: FailingStore,
        /// The parent's end of the core's link up: what the core sends up arrives here.
        parent: MemoryParent,
        /// A child of the core: the commands it sends arrive here.
        child: MemoryChild,
        _outcomes: mpsc::UnboundedReceiver<Outcome<u32>>,
    }

    async fn rig() -> Rig {
        let store = FailingStore::new(Arc::new(edgeio_core::testing::MemoryStore::new()));
        let state = Kv([("jobs/a".to_string(), serde_json::json!({"v": 1}))].into());
        let (core, outcomes) = Core::new(state, Arc::new(store.clone()));
        let up_hub = MemoryHub::new();
        let parent = up_hub.parent();
        let up: Arc<dyn ChildTransport> = Arc::new(up_hub.connect("me").await.unwrap());
        let down_hub = MemoryHub::new();
        let child = down_hub.connect("c1").await.unwrap();
        let down = ReliableParent::new(Arc::new(down_hub.parent()), ReliableConfig::default());
        core.connect(down, Some(up));
        Rig {
            core,
            failing: store.switch(),
            store,
            parent,
            child,
            _outcomes: outcomes,
        }
    }

    fn event(n: u64) -> Envelope {
        Envelope::new(
            "me",
            Message::Scale(Scale {
                job: "up".parse().unwrap(),
                replicas: n as u32,
            }),
        )
    }

    fn command(n: u32) -> Envelope {
        Envelope::new(
            "me",
            Message::Scale(Scale {
                job: "down".parse().unwrap(),
                replicas: n,
            }),
        )
    }

    /// The messages that reach the parent within a moment.
    async fn sent_up(parent: &MemoryParent) -> Vec<Envelope> {
        let mut got = Vec::new();
        while let Ok(Ok(event)) =
            tokio::time::timeout(Duration::from_millis(100), parent.recv()).await
        {
            if let ParentEvent::Message { envelope, .. } = event {
                got.push(envelope);
            }
        }
        got
    }

    /// The commands that reach the child within a moment.
    async fn sent_down(child: &MemoryChild) -> Vec<Envelope> {
        let mut got = Vec::new();
        while let Ok(Ok(envelope)) =
            tokio::time::timeout(Duration::from_millis(100), child.recv()).await
        {
            got.push(envelope);
        }
        got
    }

    /// A change of `jobs/a` that answers a command, tells the parent and commands `c1`.
    fn change(answer: Option<Envelope>, up: &Envelope, down: &Envelope) -> Effects<u32> {
        Effects {
            persist: vec!["jobs/a".into()],
            answer,
            send_up: vec![up.clone()],
            send_down: Vec::new(),
            commands: vec![("c1".into(), down.clone(), 1)],
        }
    }

    #[tokio::test]
    async fn a_refused_write_holds_what_the_change_asked_for_and_turns_its_ack_into_not_now() {
        let rig = rig().await;
        rig.failing.fail();
        let ack = Envelope::new("me", Message::Ack(Ack { re: "cmd-1".into() }));
        let (up, down) = (event(1), command(1));
        let refused = rig.core.apply(change(Some(ack.clone()), &up, &down)).await;
        assert!(
            matches!(refused, Err(StoreError::Unavailable { .. })),
            "{refused:?}"
        );

        let answered = sent_up(&rig.parent).await;
        assert_eq!(answered.len(), 1, "only the answer: {answered:#?}");
        match &answered[0].body {
            Message::Nack(nack) => {
                assert!(nack.retry, "retryable");
                assert_eq!(
                    (nack.re.as_str(), nack.error.code.as_str()),
                    ("cmd-1", "unavailable")
                );
            }
            other => panic!("expected a nack, got {other:?}"),
        }
        assert_eq!(
            (&answered[0].id, answered[0].ts),
            (&ack.id, ack.ts),
            "the ack's id and time"
        );
        assert!(
            sent_down(&rig.child).await.is_empty(),
            "no command went down"
        );
        assert!(rig.store.inner().get("jobs/a").await.unwrap().is_none());

        // a change with no records of its own says nothing the store lacks: it goes out
        let aggregate = event(2);
        let passing = Effects {
            send_up: vec![aggregate.clone()],
            ..Effects::default()
        };
        assert!(rig.core.apply(passing).await.is_err(), "still not durable");
        assert_eq!(sent_up(&rig.parent).await, [aggregate]);

        // healed: the next apply writes the record, then sends what waited, in order
        rig.failing.heal();
        rig.core.apply(Effects::default()).await.unwrap();
        assert_eq!(sent_up(&rig.parent).await, [up]);
        assert_eq!(sent_down(&rig.child).await, [down]);
        assert_eq!(
            rig.store
                .inner()
                .get("jobs/a")
                .await
                .unwrap()
                .map(|kv| kv.value),
            Some(bytes::Bytes::from(r#"{"v":1}"#))
        );
    }

    #[tokio::test]
    async fn an_undone_change_sends_nothing_then_or_later_and_the_store_gets_the_restored_record() {
        let rig = rig().await;
        rig.failing.fail();
        rig.core
            .state()
            .0
            .insert("jobs/a".into(), serde_json::json!({"v": 2}));
        let (up, down) = (event(1), command(1));
        let undone = rig
            .core
            .apply_or_undo(change(None, &up, &down), |state| {
                state.0.insert("jobs/a".into(), serde_json::json!({"v": 1}));
            })
            .await;
        assert!(undone.is_err());
        assert_eq!(
            rig.core.state().value_of("jobs/a"),
            Some(br#"{"v":1}"#.to_vec())
        );

        rig.failing.heal();
        rig.core.apply(Effects::default()).await.unwrap();
        assert!(
            sent_up(&rig.parent).await.is_empty(),
            "nothing of it went up"
        );
        assert!(
            sent_down(&rig.child).await.is_empty(),
            "nothing of it went down"
        );
        assert_eq!(
            rig.store
                .inner()
                .get("jobs/a")
                .await
                .unwrap()
                .map(|kv| kv.value),
            Some(bytes::Bytes::from(r#"{"v":1}"#)),
            "the record as restored"
        );
    }

    #[tokio::test]
    async fn commands_in_flight_end_with_the_engine() {
        let rig = rig().await;
        let down = command(1);
        let mut fx = Effects::default();
        fx.commands.push(("c1".into(), down.clone(), 1));
        rig.core.apply(fx).await.unwrap();
        assert_eq!(sent_down(&rig.child).await, [down], "sent once so far");
        rig.core.end();
        // the default re-send waits start at 500 ms: two would have come by now
        tokio::time::sleep(Duration::from_millis(1200)).await;
        assert!(
            sent_down(&rig.child).await.is_empty(),
            "re-sent after the end"
        );
        // and nothing new is sent for an engine that ended
        let mut fx = Effects::default();
        fx.commands.push(("c1".into(), command(2), 2));
        rig.core.apply(fx).await.unwrap();
        assert!(sent_down(&rig.child).await.is_empty());
    }
}
