//! Exactly-once commands over any transport: re-sending until answered, and dropping
//! duplicates by id.
//!
//! Commands (`deploy`, `terminate`, `migrate`, `scale`; see [`Message::is_command`]) must take
//! effect once even though links drop and brokers restart. This module does that once, as
//! two layers that wrap any transport and implement the same traits, so they stack:
//!
//! - [`ReliableParent`] wraps an `Arc<dyn ParentTransport>`. [`ReliableParent::command`] sends
//!   a command and re-sends it, with exponential backoff and at once when the child comes
//!   back up, until the child answers it with an `ack` or `nack` whose `re` is the
//!   command's envelope id, or until [`ReliableConfig::give_up_after`] passes
//!   ([`CommandOutcome::GaveUp`]: not a refusal, since the child may have applied it).
//! - [`ReliableChild`] wraps an `Arc<dyn ChildTransport>`. Its `recv` delivers each command id
//!   once; a re-sent copy of a command already answered is answered again from a cache of
//!   the answers sent through it, without reaching the engine a second time.
//!
//! A `nack` with `retry` set ([`Envelope::nack_retry`], code `unavailable`: the child could
//! not persist what the command changes) is not an answer to keep: the child forgets the
//! command id, so the next copy reaches its engine again, and the parent keeps re-sending the
//! same id with its backoff instead of reporting a refusal.
//!
//! Everything that is not a command, or not an answer to one, passes through untouched.
//! Neither layer spawns tasks: `command` is driven by its caller, and the answers it waits
//! for are picked up by whoever calls [`ParentTransport::recv`] on the same `ReliableParent`
//! — **`command` only completes while a receive loop runs concurrently** (every engine runs
//! one anyway).
//!
//! ```
//! # #[cfg(feature = "testing")] {
//! use edgeio_core::reliable::{CommandOutcome, ReliableChild, ReliableConfig, ReliableParent};
//! use edgeio_core::testing::MemoryHub;
//! use edgeio_core::transport::{ChildTransport, ParentTransport};
//! use edgeio_core::wire::{Envelope, Message, Scale};
//! use std::sync::Arc;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let hub = MemoryHub::new();
//! let parent = ReliableParent::new(Arc::new(hub.parent()), ReliableConfig::default());
//! let child = ReliableChild::new(
//!     Arc::new(hub.connect("node-1").await.unwrap()),
//!     ReliableConfig::default(),
//! );
//!
//! // The engine's receive loop; it also hands answers to `command`.
//! let events = tokio::spawn({
//!     let parent = parent.clone();
//!     async move { while parent.recv().await.is_ok() {} }
//! });
//! // The worker engine: accept every command.
//! tokio::spawn(async move {
//!     while let Ok(command) = child.recv().await {
//!         child.send(&command.ack(child.id())).await.unwrap();
//!     }
//! });
//!
//! let scale = Message::Scale(Scale { job: "web".parse().unwrap(), replicas: 3 });
//! let outcome = parent.command("node-1", Envelope::new("cluster-a", scale)).await.unwrap();
//! assert_eq!(outcome, CommandOutcome::Acked);
//! # events.abort();
//! # });
//! # }
//! ```

use crate::scheduler::Unschedulable;
use crate::transport::{ChildTransport, ParentEvent, ParentTransport, TransportError};
use crate::wire::{Envelope, ErrorBody, Message, Nack};
use async_trait::async_trait;
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::{oneshot, Notify};
use tokio::time::Instant;

/// [`ReliableConfig::give_up_after`] by default.
pub const DEFAULT_GIVE_UP_AFTER: Duration = Duration::from_secs(60);

/// Settings of both layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReliableConfig {
    /// Wait before the first re-send; it doubles after each one (at least 1 ms).
    pub resend_initial: Duration,
    /// The longest wait between two re-sends.
    pub resend_max: Duration,
    /// Give up on a command not answered for good this long
    /// ([`CommandOutcome::GaveUp`]: the child may or may not have applied it); `None` keeps
    /// re-sending until it is answered or its `command` future is dropped. A minute by
    /// default: long enough to ride out a link or broker restart, short enough that the
    /// engine learns of a child that is connected but does not answer.
    pub give_up_after: Option<Duration>,
    /// How many command ids each side remembers (the child: delivered commands and their
    /// answers; the parent: commands answered recently, to swallow late duplicate answers).
    /// A duplicate arriving after its id was evicted is delivered again, so keep this
    /// well above the number of commands in flight. At least 1.
    pub dedupe_window: usize,
}

impl Default for ReliableConfig {
    fn default() -> Self {
        ReliableConfig {
            resend_initial: Duration::from_millis(500),
            resend_max: Duration::from_secs(10),
            give_up_after: Some(DEFAULT_GIVE_UP_AFTER),
            dedupe_window: 4096,
        }
    }
}

/// How the child answered a command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandOutcome {
    /// `ack`: accepted and persisted; progress follows as instance events.
    Acked,
    /// `nack` (or an `error` naming the command): refused, will not be applied. Never a
    /// `nack` with `retry` set: [`ReliableParent::command`] re-sends after those.
    Nacked(ErrorBody),
    /// `nack` of a deploy that nothing could take, with the scheduler's explanation.
    Unschedulable(ErrorBody, Box<Unschedulable>),
    /// No final answer within [`ReliableConfig::give_up_after`] (none at all, or only "not
    /// now"s): the command may or may not have been applied, so this is not a refusal. The
    /// sender finds out from the child's state (the root re-syncs with the cluster; a
    /// cluster learns from the node's status) before acting again. Says why.
    GaveUp(String),
}

/// What a message says about the command it answers.
enum Answer {
    /// The command's fate: ack or refusal.
    Final(CommandOutcome),
    /// Not now (`nack` with `retry`): send the same command again later.
    Retry(ErrorBody),
}

/// A map that remembers the last `capacity` keys inserted, forgetting the oldest.
struct Window<K, V> {
    map: HashMap<K, V>,
    order: VecDeque<K>,
    capacity: usize,
}

impl<K: Clone + Eq + Hash, V> Window<K, V> {
    fn new(capacity: usize) -> Self {
        Window {
            map: HashMap::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    fn get(&self, key: &K) -> Option<&V> {
        self.map.get(key)
    }

    fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        self.map.get_mut(key)
    }

    /// Forgets `key`; answers whether it was there. Linear in the window, and rare.
    fn remove(&mut self, key: &K) -> bool {
        if self.map.remove(key).is_none() {
            return false;
        }
        self.order.retain(|k| k != key);
        true
    }

    /// Inserts or replaces; a replaced key keeps its age.
    fn insert(&mut self, key: K, value: V) {
        if self.map.insert(key.clone(), value).is_none() {
            self.order.push_back(key);
            while self.order.len() > self.capacity {
                if let Some(oldest) = self.order.pop_front() {
                    self.map.remove(&oldest);
                }
            }
        }
    }
}

/// Locks `mutex`, taking the data even when another thread panicked while holding it: a
/// panic elsewhere must not turn every later call into a second panic.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// What an answer says, when the message is one.
fn answer_of(message: &Message) -> Option<(&str, Answer)> {
    fn outcome(re: &str, outcome: CommandOutcome) -> Option<(&str, Answer)> {
        Some((re, Answer::Final(outcome)))
    }
    match message {
        Message::Ack(a) => outcome(&a.re, CommandOutcome::Acked),
        Message::Nack(Nack {
            re,
            error,
            retry: true,
            ..
        }) => Some((re, Answer::Retry(error.clone()))),
        Message::Nack(Nack {
            re,
            error,
            unschedulable: Some(u),
            ..
        }) => outcome(
            re,
            CommandOutcome::Unschedulable(error.clone(), Box::new(u.clone())),
        ),
        Message::Nack(n) => outcome(&n.re, CommandOutcome::Nacked(n.error.clone())),
        // A child answers a command it cannot handle at all with an `error` naming it; that
        // is a refusal too, and re-sending would only repeat it.
        Message::Error(e) => {
            e.re.as_deref()
                .and_then(|re| outcome(re, CommandOutcome::Nacked(e.error.clone())))
        }
        _ => None,
    }
}

struct Pending {
    child: String,
    answer: oneshot::Sender<CommandOutcome>,
    /// Rung when the child comes (back) up, to re-send at once.
    wake: Arc<Notify>,
    /// The child's last "not now" (`nack` with `retry`), for the give-up message.
    not_now: Option<ErrorBody>,
}

struct ParentState {
    pending: HashMap<String, Pending>,
    /// Commands answered lately: their duplicate answers are swallowed, not forwarded.
    answered: Window<String, ()>,
}

/// The sending side of reliable commands, as a layer over any [`ParentTransport`].
///
/// Cheap to clone; clones share their pending commands, so one task can run the receive
/// loop while others call [`ReliableParent::command`].
///
/// As a [`ParentTransport`]: `send` and `children` pass through unchanged (a command sent
/// with plain `send` is sent once and not tracked). `recv` passes every event through,
/// except that it **consumes** the acks, nacks and errors answering a command pending in
/// [`ReliableParent::command`] (they resolve that call instead) and duplicate answers to
/// commands resolved lately; answers to anything else are forwarded. A `ChildUp` is
/// forwarded after it has triggered the re-send of the commands pending for that child.
/// `recv` is cancel-safe as long as the inner transport's is.
#[derive(Clone)]
pub struct ReliableParent {
    inner: Arc<dyn ParentTransport>,
    config: ReliableConfig,
    state: Arc<Mutex<ParentState>>,
}

impl fmt::Debug for ReliableParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReliableParent")
            .field("config", &self.config)
            .field("pending", &lock(&self.state).pending.len())
            .finish_non_exhaustive()
    }
}

/// Removes a pending command when its `command` call ends, however it ends.
struct PendingGuard<'a> {
    state: &'a Mutex<ParentState>,
    id: &'a str,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        lock(self.state).pending.remove(self.id);
    }
}

impl ReliableParent {
    /// Wraps `inner`.
    pub fn new(inner: Arc<dyn ParentTransport>, config: ReliableConfig) -> ReliableParent {
        let answered = Window::new(config.dedupe_window);
        ReliableParent {
            inner,
            config,
            state: Arc::new(Mutex::new(ParentState {
                pending: HashMap::new(),
                answered,
            })),
        }
    }

    /// The ids of the commands to `child` still waiting for an answer, sorted.
    pub fn pending(&self, child: &str) -> Vec<String> {
        let mut ids: Vec<String> = lock(&self.state)
            .pending
            .iter()
            .filter(|(_, p)| p.child == child)
            .map(|(id, _)| id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// Sends a command to `child` and re-sends it until the child answers it.
    ///
    /// Re-sends wait [`ReliableConfig::resend_initial`], doubling up to
    /// [`ReliableConfig::resend_max`]; a `ChildUp` of `child` seen by `recv` re-sends at once
    /// and restarts the backoff. While the child is unreachable ([`TransportError::NotFound`]
    /// or [`TransportError::Unavailable`] from the inner transport) it keeps trying; the
    /// command stays pending across link loss for as long as this future lives. Dropping the
    /// future abandons the command (a late answer is then forwarded by `recv`).
    ///
    /// Resolves only while another task calls [`ParentTransport::recv`] on this layer.
    ///
    /// A `nack` with `retry` set does not end the call: the command is re-sent, same id, on
    /// the same backoff, until the child acks it or refuses it for good.
    ///
    /// Errors: [`TransportError::Invalid`] when `envelope` is not a command or a command with
    /// its id is already pending, and whatever other error the inner `send` returns (an
    /// oversized command will not get smaller). When [`ReliableConfig::give_up_after`] passes
    /// without a final answer it resolves as [`CommandOutcome::GaveUp`].
    pub async fn command(
        &self,
        child: &str,
        envelope: Envelope,
    ) -> Result<CommandOutcome, TransportError> {
        let id = envelope.id.as_str();
        if !envelope.body.is_command() {
            return Err(TransportError::Invalid {
                reason: format!(
                    "{} is not a command; only commands are acknowledged",
                    envelope.kind()
                ),
                id: Some(id.to_string()),
            });
        }
        let (answer, mut answered) = oneshot::channel();
        let wake = Arc::new(Notify::new());
        {
            let mut state = lock(&self.state);
            if state.pending.contains_key(id) {
                return Err(TransportError::Invalid {
                    reason: format!("command {id} is already pending"),
                    id: Some(id.to_string()),
                });
            }
            state.pending.insert(
                id.to_string(),
                Pending {
                    child: child.to_string(),
                    answer,
                    wake: wake.clone(),
                    not_now: None,
                },
            );
        }
        let _guard = PendingGuard {
            state: &self.state,
            id,
        };

        let started = Instant::now();
        let give_up_at = self.config.give_up_after.map(|d| started + d);
        let initial = self.config.resend_initial.max(Duration::from_millis(1));
        let mut delay = initial;
        let mut attempts: u32 = 0;
        loop {
            attempts += 1;
            match self.inner.send(child, &envelope).await {
                Ok(()) if attempts == 1 => {
                    tracing::debug!(command = id, child, kind = envelope.kind(), "command sent")
                }
                Ok(()) => tracing::debug!(command = id, child, attempts, "command re-sent"),
                Err(e @ (TransportError::NotFound { .. } | TransportError::Unavailable { .. })) => {
                    // Loud once per command, quiet afterwards: a lost node can have many.
                    if attempts == 1 {
                        tracing::warn!(command = id, child, error = %e, "child unreachable, command will be re-sent");
                    } else {
                        tracing::debug!(command = id, child, attempts, error = %e, "child still unreachable");
                    }
                }
                Err(e) => return Err(e),
            }

            let mut wait = delay;
            if let Some(at) = give_up_at {
                wait = wait.min(at.saturating_duration_since(Instant::now()));
            }
            tokio::select! {
                outcome = &mut answered => {
                    return outcome.map_err(|_| TransportError::Unavailable {
                        reason: format!("command {id} to {child:?} abandoned"),
                    });
                }
                _ = wake.notified() => {
                    tracing::debug!(command = id, child, "child came up, re-sending at once");
                    delay = initial;
                }
                _ = tokio::time::sleep(wait) => {
                    delay = (delay * 2).min(self.config.resend_max.max(initial));
                }
            }
            if give_up_at.is_some_and(|at| Instant::now() >= at) {
                // An answer may have arrived in the same instant; it wins.
                if let Ok(outcome) = answered.try_recv() {
                    return Ok(outcome);
                }
                let not_now = lock(&self.state)
                    .pending
                    .get(id)
                    .and_then(|p| p.not_now.clone());
                let how = match not_now {
                    Some(e) => format!("answered only \"not now\" ({}: {})", e.code, e.message),
                    None => "not answered".to_string(),
                };
                let reason = format!(
                    "command {id} ({}) to {child:?} {how} after {attempts} attempts in {:?}",
                    envelope.kind(),
                    started.elapsed()
                );
                tracing::warn!(command = id, child, %reason, "giving up on a command");
                return Ok(CommandOutcome::GaveUp(reason));
            }
        }
    }

    /// Resolves the pending command that `envelope` answers, if any; `true` when the message
    /// was meant for this layer and must not be forwarded.
    fn take_answer(&self, from: &str, envelope: &Envelope) -> bool {
        let Some((re, answer)) = answer_of(&envelope.body) else {
            return false;
        };
        let mut state = lock(&self.state);
        let outcome = match answer {
            Answer::Final(outcome) => outcome,
            Answer::Retry(error) => {
                let answered_lately = state.answered.get(&re.to_string()).is_some();
                return match state.pending.get_mut(re) {
                    Some(pending) if pending.child == from => {
                        // The command's own loop re-sends it on its backoff; waking it here
                        // would hammer a child that just said it cannot take it now.
                        tracing::info!(
                            command = re,
                            child = from,
                            code = %error.code,
                            reason = %error.message,
                            "command not taken now, will be re-sent"
                        );
                        pending.not_now = Some(error);
                        true
                    }
                    // A late "not now" for a command answered since: the answer stands.
                    None if answered_lately => true,
                    _ => false,
                };
            }
        };
        match state.pending.get(re) {
            Some(pending) if pending.child == from => {
                if let Some(pending) = state.pending.remove(re) {
                    // The caller may have stopped waiting; nothing else to tell then.
                    let _ = pending.answer.send(outcome);
                }
                state.answered.insert(re.to_string(), ());
                tracing::debug!(
                    command = re,
                    child = from,
                    kind = envelope.kind(),
                    "command answered"
                );
                true
            }
            Some(pending) => {
                tracing::warn!(
                    command = re,
                    child = from,
                    expected = %pending.child,
                    "answer from a child the command was not sent to, forwarded"
                );
                false
            }
            None if state.answered.get(&re.to_string()).is_some() => {
                tracing::debug!(command = re, child = from, "duplicate answer dropped");
                true
            }
            None => false,
        }
    }

    fn child_up(&self, child: &str) {
        let state = lock(&self.state);
        for pending in state.pending.values().filter(|p| p.child == child) {
            // notify_one keeps a permit when the command is not waiting right now.
            pending.wake.notify_one();
        }
    }
}

#[async_trait]
impl ParentTransport for ReliableParent {
    async fn send(&self, child: &str, envelope: &Envelope) -> Result<(), TransportError> {
        self.inner.send(child, envelope).await
    }

    async fn recv(&self) -> Result<ParentEvent, TransportError> {
        loop {
            let event = self.inner.recv().await?;
            match &event {
                ParentEvent::Message { child, envelope } if self.take_answer(child, envelope) => {
                    continue
                }
                ParentEvent::ChildUp { child } => self.child_up(child),
                _ => {}
            }
            return Ok(event);
        }
    }

    async fn children(&self) -> Vec<String> {
        self.inner.children().await
    }
}

/// The receiving side of reliable commands, as a layer over any [`ChildTransport`].
///
/// `recv` delivers each command id once. A command arriving again is not delivered: when
/// the engine already answered it through this layer's `send`, that answer is re-sent
/// (the first one was probably lost); when it has not answered yet, the copy is dropped
/// (the answer will come). Answer commands through this layer, not the inner transport, or
/// their duplicates are never answered. The ids are remembered in a window of
/// [`ReliableConfig::dedupe_window`] commands, oldest forgotten first.
///
/// `send` passes everything through, keeping a copy of acks, nacks and errors that answer a
/// command delivered by `recv`; a `nack` with `retry` set instead makes the layer forget the
/// command's id, so that the parent's next copy is delivered to the engine again. `id` and `close` pass through. `recv` is cancel-safe as
/// long as the inner transport's is (at worst a cached answer is not re-sent, and the
/// parent re-sends the command again).
pub struct ReliableChild {
    inner: Arc<dyn ChildTransport>,
    /// Delivered command ids, with the answer once the engine sent one.
    seen: Mutex<Window<String, Option<Envelope>>>,
}

impl fmt::Debug for ReliableChild {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReliableChild")
            .field("id", &self.inner.id())
            .finish_non_exhaustive()
    }
}

impl ReliableChild {
    /// Wraps `inner`; only [`ReliableConfig::dedupe_window`] applies to this side.
    pub fn new(inner: Arc<dyn ChildTransport>, config: ReliableConfig) -> ReliableChild {
        ReliableChild {
            inner,
            seen: Mutex::new(Window::new(config.dedupe_window)),
        }
    }
}

/// What to do with a command that arrived.
enum Arrival {
    Deliver,
    Drop,
    /// Boxed: an answer is large and rare next to the other two.
    Answer(Box<Envelope>),
}

#[async_trait]
impl ChildTransport for ReliableChild {
    fn id(&self) -> String {
        self.inner.id()
    }

    async fn send(&self, envelope: &Envelope) -> Result<(), TransportError> {
        match answer_of(&envelope.body) {
            Some((re, Answer::Final(_))) => {
                let mut seen = lock(&self.seen);
                if let Some(answer) = seen.get_mut(&re.to_string()) {
                    // Cached before the send: if the send fails, the parent re-sends the
                    // command and the cache answers it.
                    *answer = Some(envelope.clone());
                }
            }
            Some((re, Answer::Retry(_))) => {
                // Forgotten before the send: the engine did not apply the command, so its
                // next copy must reach the engine again rather than this answer.
                let forgotten = lock(&self.seen).remove(&re.to_string());
                if forgotten {
                    tracing::debug!(
                        command = re,
                        "command not taken now; its next copy will be delivered"
                    );
                }
            }
            None => {}
        }
        self.inner.send(envelope).await
    }

    async fn recv(&self) -> Result<Envelope, TransportError> {
        loop {
            let envelope = self.inner.recv().await?;
            if !envelope.body.is_command() {
                return Ok(envelope);
            }
            let arrival = {
                let mut seen = lock(&self.seen);
                match seen.get(&envelope.id) {
                    None => {
                        seen.insert(envelope.id.clone(), None);
                        Arrival::Deliver
                    }
                    Some(None) => Arrival::Drop,
                    Some(Some(answer)) => Arrival::Answer(Box::new(answer.clone())),
                }
            };
            match arrival {
                Arrival::Deliver => return Ok(envelope),
                Arrival::Drop => {
                    tracing::debug!(command = %envelope.id, "duplicate of a command in progress dropped")
                }
                Arrival::Answer(answer) => {
                    tracing::debug!(command = %envelope.id, "duplicate of an answered command, answer re-sent");
                    if let Err(e) = self.inner.send(&answer).await {
                        // The parent re-sends the command, which brings us back here.
                        tracing::warn!(command = %envelope.id, error = %e, "re-sending a cached answer failed");
                    }
                }
            }
        }
    }

    async fn close(&self) -> Result<(), TransportError> {
        self.inner.close().await
    }
}

#[cfg(test)]
mod tests {
    //! The mock-based test comes first, as an example for integrators; the tests after it
    //! run the layers over the in-memory hub (feature `testing`).

    use super::*;
    use crate::transport::MockChildTransport;
    use crate::wire::Scale;

    fn scale(replicas: u32) -> Envelope {
        Envelope::new(
            "cluster-a",
            Message::Scale(Scale {
                job: "web".parse().unwrap(),
                replicas,
            }),
        )
    }

    /// EXAMPLE — unit-testing engine-facing code with the mockall mocks.
    ///
    /// `MockChildTransport` (from `edgeio_core::testing::mocks` with the feature `testing`)
    /// stands in for a real link: each `expect_…` says how often a method is called, with
    /// which arguments, and what it returns. Because the traits use `async_trait`, the
    /// `returning` closures return the *output* (`Result<…>`), not a future. A `Sequence`
    /// pins the order of calls across methods. When the mock is dropped, mockall checks that
    /// every expectation was met, so the test also proves nothing *else* was sent.
    #[tokio::test]
    async fn a_duplicate_command_reaches_the_engine_once_and_its_ack_is_re_sent() {
        let command = scale(3);
        let ack = command.ack("node-1");
        let is_our_ack = {
            let ack = ack.clone();
            move |sent: &Envelope| *sent == ack
        };

        let mut link = MockChildTransport::new();
        let mut order = mockall::Sequence::new();
        // 1. The parent's command arrives…
        let first = command.clone();
        link.expect_recv()
            .times(1)
            .in_sequence(&mut order)
            .returning(move || Ok(first.clone()));
        // 2. …the engine acks it (through the layer, which caches the ack)…
        link.expect_send()
            .withf(is_our_ack.clone())
            .times(1)
            .in_sequence(&mut order)
            .returning(|_| Ok(()));
        // 3. …the ack is lost, so the parent re-sends the same envelope id…
        let again = command.clone();
        link.expect_recv()
            .times(1)
            .in_sequence(&mut order)
            .returning(move || Ok(again.clone()));
        // 4. …and the layer answers it with the cached ack, without asking the engine…
        link.expect_send()
            .withf(is_our_ack)
            .times(1)
            .in_sequence(&mut order)
            .returning(|_| Ok(()));
        // 5. …then the link goes down, which ends the engine's receive loop.
        link.expect_recv()
            .times(1)
            .in_sequence(&mut order)
            .returning(|| {
                Err(TransportError::Unavailable {
                    reason: "test link closed".into(),
                })
            });

        let child = ReliableChild::new(Arc::new(link), ReliableConfig::default());
        assert_eq!(child.recv().await.unwrap(), command);
        child.send(&ack).await.unwrap();
        // The duplicate is answered inside this call; what comes out is the link error,
        // not the command a second time.
        assert!(matches!(
            child.recv().await,
            Err(TransportError::Unavailable { .. })
        ));
    }

    #[tokio::test]
    async fn a_duplicate_of_a_command_not_yet_answered_is_dropped_silently() {
        let command = scale(1);
        let mut link = MockChildTransport::new();
        let mut copies = vec![command.clone(), command.clone()].into_iter();
        link.expect_recv().times(3).returning(move || {
            copies.next().ok_or(TransportError::Unavailable {
                reason: "test link closed".into(),
            })
        });
        // No expect_send: the layer must not send anything.
        let child = ReliableChild::new(Arc::new(link), ReliableConfig::default());
        assert_eq!(child.recv().await.unwrap(), command);
        assert!(child.recv().await.is_err());
    }

    #[test]
    fn the_window_forgets_the_oldest_id_first() {
        let mut window = Window::new(2);
        window.insert("a".to_string(), 1);
        window.insert("b".to_string(), 2);
        window.insert("a".to_string(), 3);
        window.insert("c".to_string(), 4);
        assert_eq!(window.get(&"a".to_string()), None);
        assert_eq!(window.get(&"b".to_string()), Some(&2));
        assert_eq!(window.get(&"c".to_string()), Some(&4));
    }

    #[cfg(feature = "testing")]
    mod over_the_memory_hub {
        use super::*;
        use crate::testing::{MemoryChild, MemoryHub, MemoryParent};
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::sync::mpsc;

        /// Generous: with the clock paused, a wait that never ends fails at once instead of
        /// hanging, and a slow machine is never too slow.
        const DEADLINE: Duration = Duration::from_secs(600);

        async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
            tokio::time::timeout(DEADLINE, future)
                .await
                .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
        }

        /// Drops the first `drop` commands it is asked to send, as a lossy link would.
        struct LossyParent {
            inner: MemoryParent,
            drop: usize,
            attempts: AtomicUsize,
        }

        #[async_trait]
        impl ParentTransport for LossyParent {
            async fn send(&self, child: &str, envelope: &Envelope) -> Result<(), TransportError> {
                let n = self.attempts.fetch_add(1, Ordering::SeqCst);
                if envelope.body.is_command() && n < self.drop {
                    return Ok(());
                }
                self.inner.send(child, envelope).await
            }
            async fn recv(&self) -> Result<ParentEvent, TransportError> {
                self.inner.recv().await
            }
            async fn children(&self) -> Vec<String> {
                self.inner.children().await
            }
        }

        /// Drops the first `drop` acks or nacks the child sends.
        struct LossyChild {
            inner: MemoryChild,
            drop: AtomicUsize,
        }

        #[async_trait]
        impl ChildTransport for LossyChild {
            fn id(&self) -> String {
                self.inner.id()
            }
            async fn send(&self, envelope: &Envelope) -> Result<(), TransportError> {
                let answer = answer_of(&envelope.body).is_some();
                if answer
                    && self
                        .drop
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok()
                {
                    return Ok(());
                }
                self.inner.send(envelope).await
            }
            async fn recv(&self) -> Result<Envelope, TransportError> {
                self.inner.recv().await
            }
            async fn close(&self) -> Result<(), TransportError> {
                self.inner.close().await
            }
        }

        fn fast() -> ReliableConfig {
            ReliableConfig {
                resend_initial: Duration::from_millis(100),
                resend_max: Duration::from_secs(1),
                ..ReliableConfig::default()
            }
        }

        /// Runs the parent's receive loop; forwarded events come out of the channel.
        fn receive_loop(parent: &ReliableParent) -> mpsc::UnboundedReceiver<ParentEvent> {
            let (tx, rx) = mpsc::unbounded_channel();
            let parent = parent.clone();
            tokio::spawn(async move {
                while let Ok(event) = parent.recv().await {
                    if tx.send(event).is_err() {
                        break;
                    }
                }
            });
            rx
        }

        /// A worker engine: answers each command with `answer`, reports what it was given.
        fn worker(
            child: ReliableChild,
            answer: fn(&Envelope, String) -> Envelope,
        ) -> mpsc::UnboundedReceiver<Envelope> {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(async move {
                while let Ok(command) = child.recv().await {
                    let _ = tx.send(command.clone());
                    if child.send(&answer(&command, child.id())).await.is_err() {
                        break;
                    }
                }
            });
            rx
        }

        fn ack(command: &Envelope, me: String) -> Envelope {
            command.ack(me)
        }

        #[tokio::test(start_paused = true)]
        async fn a_command_lost_on_the_way_is_re_sent_until_acked() {
            let hub = MemoryHub::new();
            let lossy = Arc::new(LossyParent {
                inner: hub.parent(),
                drop: 3,
                attempts: AtomicUsize::new(0),
            });
            let parent = ReliableParent::new(lossy.clone(), fast());
            let mut events = receive_loop(&parent);
            let child = ReliableChild::new(Arc::new(hub.connect("n1").await.unwrap()), fast());
            let mut delivered = worker(child, ack);

            let command = scale(2);
            let outcome = within("the ack", parent.command("n1", command.clone())).await;
            assert_eq!(outcome.unwrap(), CommandOutcome::Acked);
            assert_eq!(
                lossy.attempts.load(Ordering::SeqCst),
                4,
                "3 lost, 1 delivered"
            );
            assert_eq!(within("the command", delivered.recv()).await, Some(command));
            assert!(parent.pending("n1").is_empty());
            // The ack was consumed by the layer; the engine saw only the link event.
            assert!(matches!(events.try_recv(), Ok(ParentEvent::ChildUp { .. })));
            assert!(events.try_recv().is_err());
        }

        #[tokio::test(start_paused = true)]
        async fn a_lost_ack_is_answered_from_the_cache_and_the_command_is_delivered_once() {
            let hub = MemoryHub::new();
            let parent = ReliableParent::new(Arc::new(hub.parent()), fast());
            let mut events = receive_loop(&parent);
            let link = LossyChild {
                inner: hub.connect("n1").await.unwrap(),
                drop: AtomicUsize::new(2),
            };
            let child = ReliableChild::new(Arc::new(link), fast());
            let mut delivered = worker(child, ack);

            let command = scale(5);
            let outcome = within("the ack", parent.command("n1", command.clone())).await;
            assert_eq!(outcome.unwrap(), CommandOutcome::Acked);
            assert_eq!(
                within("the command", delivered.recv()).await.as_ref(),
                Some(&command)
            );

            // A further duplicate (re-sent by hand here) is answered, never re-delivered, and
            // its late ack never reaches the parent's engine.
            parent.send("n1", &command).await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
            assert!(delivered.try_recv().is_err(), "delivered twice");
            assert!(matches!(events.try_recv(), Ok(ParentEvent::ChildUp { .. })));
            assert!(events.try_recv().is_err(), "a duplicate ack was forwarded");
        }

        #[tokio::test(start_paused = true)]
        async fn a_command_sent_while_the_child_is_cut_is_delivered_after_it_reconnects() {
            let hub = MemoryHub::new();
            // Re-sends so rare that only the reconnect can explain a prompt delivery.
            let config = ReliableConfig {
                resend_initial: Duration::from_secs(3600),
                resend_max: Duration::from_secs(3600),
                ..ReliableConfig::default()
            };
            let parent = ReliableParent::new(Arc::new(hub.parent()), config.clone());
            let mut events = receive_loop(&parent);
            let old = hub.connect("n1").await.unwrap();
            assert!(matches!(
                within("ChildUp", events.recv()).await,
                Some(ParentEvent::ChildUp { .. })
            ));
            assert!(hub.cut("n1"));
            assert!(matches!(
                within("ChildLost", events.recv()).await,
                Some(ParentEvent::ChildLost { .. })
            ));

            let started = Instant::now();
            let command = scale(7);
            let sending = tokio::spawn({
                let parent = parent.clone();
                let command = command.clone();
                async move { parent.command("n1", command).await }
            });
            // Lets the first attempt fail (NotFound) and the command settle into its wait.
            tokio::time::sleep(Duration::from_secs(1)).await;
            assert_eq!(parent.pending("n1"), vec![command.id.clone()]);
            assert!(matches!(
                old.recv().await,
                Err(TransportError::Unavailable { .. })
            ));

            let child = ReliableChild::new(Arc::new(hub.connect("n1").await.unwrap()), config);
            let mut delivered = worker(child, ack);
            let outcome = within("the ack", sending).await.unwrap();
            assert_eq!(outcome.unwrap(), CommandOutcome::Acked);
            assert_eq!(within("the command", delivered.recv()).await, Some(command));
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "re-sent by the backoff after {:?}, not at once on ChildUp",
                started.elapsed()
            );
            assert!(matches!(
                within("ChildUp", events.recv()).await,
                Some(ParentEvent::ChildUp { .. })
            ));
        }

        #[tokio::test(start_paused = true)]
        async fn a_nack_resolves_as_nacked() {
            let hub = MemoryHub::new();
            let parent = ReliableParent::new(Arc::new(hub.parent()), fast());
            let _events = receive_loop(&parent);
            let child = ReliableChild::new(Arc::new(hub.connect("n1").await.unwrap()), fast());
            let refusal = |command: &Envelope, me: String| {
                command.nack(
                    me,
                    ErrorBody {
                        code: "unsupported".into(),
                        message: "runtime \"mirage\" is not installed".into(),
                    },
                )
            };
            let _delivered = worker(child, refusal);

            let outcome = within("the nack", parent.command("n1", scale(1))).await;
            match outcome.unwrap() {
                CommandOutcome::Nacked(error) => assert_eq!(error.code, "unsupported"),
                other => panic!("expected Nacked, got {other:?}"),
            }
        }

        /// An engine whose store refuses the first `refusals` copies it is given (answered
        /// "not now") and then accepts; reports each copy it was given and when.
        fn engine_with_a_failing_store(
            child: ReliableChild,
            refusals: usize,
        ) -> mpsc::UnboundedReceiver<(String, Instant)> {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(async move {
                let mut refusals = refusals;
                while let Ok(command) = child.recv().await {
                    if tx.send((command.id.clone(), Instant::now())).is_err() {
                        break;
                    }
                    let answer = if refusals > 0 {
                        refusals -= 1;
                        command.nack_retry(
                            child.id(),
                            ErrorBody::unavailable("cannot persist job \"web\": disk full"),
                        )
                    } else {
                        command.ack(child.id())
                    };
                    if child.send(&answer).await.is_err() {
                        break;
                    }
                }
            });
            rx
        }

        #[tokio::test(start_paused = true)]
        async fn a_not_now_nack_is_not_final_and_the_same_id_is_re_sent_with_backoff_until_acked() {
            let hub = MemoryHub::new();
            let parent = ReliableParent::new(Arc::new(hub.parent()), fast());
            let mut events = receive_loop(&parent);
            let child = ReliableChild::new(Arc::new(hub.connect("n1").await.unwrap()), fast());
            let mut delivered = engine_with_a_failing_store(child, 3);
            // Seen before the command, so that the ChildUp's re-send at once is not mistaken
            // for one caused by a "not now".
            assert!(matches!(
                within("ChildUp", events.recv()).await,
                Some(ParentEvent::ChildUp { .. })
            ));

            let command = scale(4);
            let outcome = within("the ack", parent.command("n1", command.clone())).await;
            assert_eq!(outcome.unwrap(), CommandOutcome::Acked);

            let mut copies = Vec::new();
            while let Ok(copy) = delivered.try_recv() {
                copies.push(copy);
            }
            assert_eq!(
                copies.len(),
                4,
                "each refused copy and the accepted one reached the engine: {copies:?}"
            );
            assert!(copies.iter().all(|(id, _)| *id == command.id), "same id");
            // Re-sent on the backoff (100 ms doubling), not at once on the "not now".
            for (n, pair) in copies.windows(2).enumerate() {
                let gap = pair[1].1 - pair[0].1;
                let least = Duration::from_millis(100) * 2u32.pow(n as u32);
                assert!(
                    gap >= least,
                    "re-send {n} came after {gap:?}, before {least:?}"
                );
            }
            assert!(parent.pending("n1").is_empty());
            // Neither the "not now"s nor the ack reached the parent's engine.
            assert!(events.try_recv().is_err(), "an answer was forwarded");
        }

        #[tokio::test(start_paused = true)]
        async fn a_command_only_ever_answered_not_now_gives_up_saying_so() {
            let hub = MemoryHub::new();
            let config = ReliableConfig {
                give_up_after: Some(Duration::from_secs(5)),
                ..fast()
            };
            let parent = ReliableParent::new(Arc::new(hub.parent()), config.clone());
            let _events = receive_loop(&parent);
            let child = ReliableChild::new(Arc::new(hub.connect("n1").await.unwrap()), config);
            let mut delivered = engine_with_a_failing_store(child, usize::MAX);

            let command = scale(1);
            let outcome = within("the give-up", parent.command("n1", command.clone())).await;
            match outcome {
                Ok(CommandOutcome::GaveUp(reason)) => {
                    assert!(reason.contains(&command.id), "{reason}");
                    assert!(reason.contains("not now"), "{reason}");
                    assert!(reason.contains("disk full"), "{reason}");
                }
                other => panic!("expected GaveUp, got {other:?}"),
            }
            let mut copies = 0;
            while delivered.try_recv().is_ok() {
                copies += 1;
            }
            assert!(copies > 1, "the engine was asked again: {copies} copies");
        }

        #[tokio::test(start_paused = true)]
        async fn a_final_nack_is_answered_from_the_cache_but_not_now_is_not() {
            let hub = MemoryHub::new();
            let parent = hub.parent();
            let child = ReliableChild::new(Arc::new(hub.connect("n1").await.unwrap()), fast());
            let first = scale(1);
            let second = scale(2);

            // "Not now" for the first: its copy comes through again.
            parent.send("n1", &first).await.unwrap();
            let got = within("the first", child.recv()).await.unwrap();
            child
                .send(&got.nack_retry(child.id(), ErrorBody::unavailable("disk full")))
                .await
                .unwrap();
            parent.send("n1", &first).await.unwrap();
            assert_eq!(within("the copy", child.recv()).await.unwrap(), first);

            // A final nack for the second: its copy is answered by the layer, and the engine
            // sees the next command instead.
            parent.send("n1", &second).await.unwrap();
            let got = within("the second", child.recv()).await.unwrap();
            let refusal = got.nack(
                child.id(),
                ErrorBody {
                    code: "unsupported".into(),
                    message: "no".into(),
                },
            );
            child.send(&refusal).await.unwrap();
            parent.send("n1", &second).await.unwrap();
            parent.send("n1", &first).await.unwrap();
            let pending = tokio::spawn(async move { child.recv().await });
            // `first` is still in progress (delivered, not answered): dropped too.
            tokio::time::sleep(Duration::from_secs(1)).await;
            assert!(!pending.is_finished(), "a duplicate was delivered");
            let mut answers = Vec::new();
            loop {
                match tokio::time::timeout(Duration::from_millis(10), parent.recv()).await {
                    Ok(Ok(ParentEvent::Message { envelope, .. })) => answers.push(envelope),
                    Ok(Ok(_)) => {}
                    _ => break,
                }
            }
            assert_eq!(
                answers.iter().filter(|a| **a == refusal).count(),
                2,
                "the refusal, then its copy from the cache"
            );
            pending.abort();
        }

        #[tokio::test(start_paused = true)]
        async fn an_unanswered_command_gives_up_after_the_configured_time() {
            let hub = MemoryHub::new();
            let config = ReliableConfig {
                give_up_after: Some(Duration::from_secs(5)),
                ..fast()
            };
            let parent = ReliableParent::new(Arc::new(hub.parent()), config);
            let _events = receive_loop(&parent);
            // Connected, but nobody answers.
            let _child = hub.connect("n1").await.unwrap();

            let command = scale(1);
            let outcome = within("the give-up", parent.command("n1", command.clone())).await;
            match outcome {
                Ok(CommandOutcome::GaveUp(reason)) => {
                    assert!(reason.contains(&command.id), "{reason}");
                    assert!(reason.contains("attempts"), "{reason}");
                }
                other => panic!("expected GaveUp, got {other:?}"),
            }
            assert!(parent.pending("n1").is_empty());
        }

        #[tokio::test]
        async fn only_commands_can_be_sent_reliably() {
            let hub = MemoryHub::new();
            let parent = ReliableParent::new(Arc::new(hub.parent()), fast());
            let not_a_command = Envelope::error(
                "cluster-a",
                None,
                ErrorBody {
                    code: "x".into(),
                    message: "y".into(),
                },
            );
            assert!(matches!(
                parent.command("n1", not_a_command).await,
                Err(TransportError::Invalid { .. })
            ));
        }
    }
}
