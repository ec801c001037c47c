//! The transport conformance suite: what every [`ParentTransport`]/[`ChildTransport`] pair
//! must do, checked through a [`TransportFixture`].
//!
//! An implementation's `tests/conformance.rs` implements the fixture and calls [`run_all`]
//! (or one function per behaviour, so each is a named test):
//!
//! ```
//! use async_trait::async_trait;
//! use edgeio_core::testing::conformance::transport::{run_all, TransportFixture};
//! use edgeio_core::testing::MemoryHub;
//! use edgeio_core::transport::{ChildTransport, ParentTransport};
//! use std::sync::Arc;
//!
//! struct Memory(MemoryHub);
//!
//! #[async_trait]
//! impl TransportFixture for Memory {
//!     fn parent(&self) -> Arc<dyn ParentTransport> {
//!         Arc::new(self.0.parent())
//!     }
//!     async fn connect(&self, child: &str) -> Arc<dyn ChildTransport> {
//!         Arc::new(self.0.connect(child).await.expect("connect"))
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! run_all(&Memory(MemoryHub::new())).await;
//! # });
//! ```
//!
//! Every behaviour uses its own child ids (`conf-<behaviour>-…`), so all of them can share one
//! parent, and ignores events about other children and messages it did not send. Every wait
//! has a deadline of [`DEADLINE`]; a failure panics with the behaviour's name and what it
//! was waiting for.

use crate::model::{InstanceId, JobId};
use crate::state::InstanceState;
use crate::transport::{ChildTransport, ParentEvent, ParentTransport, TransportError};
use crate::wire::Envelope;
use crate::wire::{
    ErrorBody, ErrorMessage, InstanceEvent, Message, Scale, DEFAULT_MAX_MESSAGE_BYTES,
};
use async_trait::async_trait;
use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// The longest any single wait of the suite lasts before it fails.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// How the suite reaches the transport under test.
#[async_trait]
pub trait TransportFixture: Send + Sync {
    /// The parent side. Every call must return the same parent (or a handle to it): the
    /// suite's behaviours share it and tell their events apart by child id.
    fn parent(&self) -> Arc<dyn ParentTransport>;

    /// Connects a new child with this id, ready to send and receive. The parent must report
    /// [`ParentEvent::ChildUp`] for it — at once, or soon after: a transport whose link
    /// comes up on the child's first message (MQTT: its first info message) makes its
    /// fixture send one before returning. Such extra messages are ignored by the suite.
    /// Panics (failing the test) when the child cannot connect. Dropping the returned
    /// child may close its link.
    async fn connect(&self, child: &str) -> Arc<dyn ChildTransport>;

    /// The size limit of the transport's codec; the suite sends one message just over it.
    fn max_message_bytes(&self) -> usize {
        DEFAULT_MAX_MESSAGE_BYTES
    }
}

/// Runs every behaviour of the suite, one after the other, on one parent.
pub async fn run_all(fixture: &dyn TransportFixture) {
    child_up_is_reported(fixture).await;
    parent_sees_the_transport_child_id(fixture).await;
    messages_flow_both_ways_in_order(fixture).await;
    commands_reach_only_their_child(fixture).await;
    send_to_unknown_child_is_not_found(fixture).await;
    close_is_reported_as_child_lost(fixture).await;
    oversized_message_is_refused_and_link_survives(fixture).await;
    children_lists_connected(fixture).await;
}

/// Connecting a child makes the parent report [`ParentEvent::ChildUp`] with its id.
pub async fn child_up_is_reported(fixture: &dyn TransportFixture) {
    const B: &str = "child_up_is_reported";
    let parent = fixture.parent();
    let child = fixture.connect("conf-up-1").await;
    wait_up(B, parent.as_ref(), "conf-up-1").await;
    close(B, child.as_ref()).await;
}

/// The parent names a message's sender by the id the transport authenticated, not by the
/// envelope's `from` (which the child writes and may get wrong).
pub async fn parent_sees_the_transport_child_id(fixture: &dyn TransportFixture) {
    const B: &str = "parent_sees_the_transport_child_id";
    let parent = fixture.parent();
    let child = fixture.connect("conf-id-1").await;
    assert_eq!(child.id(), "conf-id-1", "{B}: ChildTransport::id");
    wait_up(B, parent.as_ref(), "conf-id-1").await;

    let spoofed = Envelope::new("conf-id-someone-else", event(0));
    send_up(B, child.as_ref(), &spoofed).await;
    let (from, got) = wait_message(B, parent.as_ref(), &[&spoofed.id]).await;
    assert_eq!(from, "conf-id-1", "{B}: the child id of the Message event");
    assert_eq!(got, spoofed, "{B}: the envelope arrives unchanged");
    close(B, child.as_ref()).await;
}

/// About a hundred messages each way arrive complete, unchanged and in the order sent.
pub async fn messages_flow_both_ways_in_order(fixture: &dyn TransportFixture) {
    const B: &str = "messages_flow_both_ways_in_order";
    const N: u32 = 100;
    let parent = fixture.parent();
    let child = fixture.connect("conf-order-1").await;
    wait_up(B, parent.as_ref(), "conf-order-1").await;

    let up: Vec<Envelope> = (0..N)
        .map(|i| Envelope::new("conf-order-1", event(i)))
        .collect();
    let down: Vec<Envelope> = (0..N)
        .map(|i| Envelope::new("conf-parent", scale(i)))
        .collect();
    for envelope in &up {
        send_up(B, child.as_ref(), envelope).await;
    }
    for envelope in &down {
        send_down(B, parent.as_ref(), "conf-order-1", envelope).await;
    }

    let ids: Vec<&str> = up.iter().map(|e| e.id.as_str()).collect();
    for (i, sent) in up.iter().enumerate() {
        let (from, got) = wait_message(B, parent.as_ref(), &ids[i..]).await;
        assert_eq!(from, "conf-order-1", "{B}: sender of upward message {i}");
        assert_eq!(
            &got, sent,
            "{B}: upward message {i} out of order or changed"
        );
    }
    for (i, sent) in down.iter().enumerate() {
        let got = recv_down(B, child.as_ref(), &format!("downward message {i}")).await;
        assert_eq!(
            &got, sent,
            "{B}: downward message {i} out of order or changed"
        );
    }
    close(B, child.as_ref()).await;
}

/// A message sent to one child reaches that child and no other.
pub async fn commands_reach_only_their_child(fixture: &dyn TransportFixture) {
    const B: &str = "commands_reach_only_their_child";
    let ids = ["conf-only-a", "conf-only-b", "conf-only-c"];
    let parent = fixture.parent();
    let mut children = Vec::new();
    for id in ids {
        children.push(fixture.connect(id).await);
        wait_up(B, parent.as_ref(), id).await;
    }

    // Two rounds: when each child's second message is the next one it receives after its
    // first, nothing meant for another child slipped in between, with no wait for absence.
    for round in 0..2u32 {
        let sent: Vec<Envelope> = (0..ids.len() as u32)
            .map(|i| Envelope::new("conf-parent", scale(round * 10 + i)))
            .collect();
        for (id, envelope) in ids.iter().zip(&sent) {
            send_down(B, parent.as_ref(), id, envelope).await;
        }
        for ((id, child), envelope) in ids.iter().zip(&children).zip(&sent) {
            let got = recv_down(B, child.as_ref(), &format!("round {round} message of {id}")).await;
            assert_eq!(
                &got, envelope,
                "{B}: {id} received a message sent to another child (round {round})"
            );
        }
    }
    for child in &children {
        close(B, child.as_ref()).await;
    }
}

/// Sending to a child that never connected is [`TransportError::NotFound`].
pub async fn send_to_unknown_child_is_not_found(fixture: &dyn TransportFixture) {
    const B: &str = "send_to_unknown_child_is_not_found";
    let parent = fixture.parent();
    let nobody = format!("conf-nobody-{}", uuid::Uuid::new_v4().simple());
    let envelope = Envelope::new("conf-parent", scale(1));
    let result = deadline(
        B,
        "send to an unknown child",
        parent.send(&nobody, &envelope),
    )
    .await;
    match result {
        Err(TransportError::NotFound { child }) => {
            assert_eq!(child, nobody, "{B}: NotFound names the child")
        }
        other => panic!("{B}: expected NotFound for {nobody:?}, got {other:?}"),
    }
}

/// [`ChildTransport::close`] makes the parent report [`ParentEvent::ChildLost`]; after it,
/// sending to that child is [`TransportError::NotFound`].
pub async fn close_is_reported_as_child_lost(fixture: &dyn TransportFixture) {
    const B: &str = "close_is_reported_as_child_lost";
    let parent = fixture.parent();
    let child = fixture.connect("conf-close-1").await;
    wait_up(B, parent.as_ref(), "conf-close-1").await;
    close(B, child.as_ref()).await;
    wait_lost(B, parent.as_ref(), "conf-close-1").await;

    let envelope = Envelope::new("conf-parent", scale(1));
    match deadline(
        B,
        "send after ChildLost",
        parent.send("conf-close-1", &envelope),
    )
    .await
    {
        Err(TransportError::NotFound { .. }) => {}
        other => panic!("{B}: expected NotFound after ChildLost, got {other:?}"),
    }
}

/// A message over the size limit is refused by `send` with [`TransportError::Invalid`], on
/// both sides, and the link carries the next message as usual.
pub async fn oversized_message_is_refused_and_link_survives(fixture: &dyn TransportFixture) {
    const B: &str = "oversized_message_is_refused_and_link_survives";
    let parent = fixture.parent();
    let child = fixture.connect("conf-big-1").await;
    wait_up(B, parent.as_ref(), "conf-big-1").await;

    let huge = |from: &str| {
        Envelope::new(
            from,
            Message::Error(ErrorMessage {
                re: None,
                error: ErrorBody {
                    code: "conformance".to_string(),
                    message: "x".repeat(fixture.max_message_bytes() + 1024),
                },
            }),
        )
    };
    match deadline(B, "oversized send up", child.send(&huge("conf-big-1"))).await {
        Err(TransportError::Invalid { .. }) => {}
        other => panic!("{B}: expected Invalid for an oversized upward message, got {other:?}"),
    }
    let down_big = huge("conf-parent");
    match deadline(
        B,
        "oversized send down",
        parent.send("conf-big-1", &down_big),
    )
    .await
    {
        Err(TransportError::Invalid { .. }) => {}
        other => panic!("{B}: expected Invalid for an oversized downward message, got {other:?}"),
    }

    let up = Envelope::new("conf-big-1", event(1));
    send_up(B, child.as_ref(), &up).await;
    let (_, got) = wait_message(B, parent.as_ref(), &[&up.id]).await;
    assert_eq!(got, up, "{B}: the upward message after the refused one");
    let down = Envelope::new("conf-parent", scale(1));
    send_down(B, parent.as_ref(), "conf-big-1", &down).await;
    let got = recv_down(
        B,
        child.as_ref(),
        "the downward message after the refused one",
    )
    .await;
    assert_eq!(got, down, "{B}: the downward message after the refused one");
    close(B, child.as_ref()).await;
}

/// [`ParentTransport::children`] is sorted and lists the connected children; a closed child
/// leaves it once its `ChildLost` is reported.
pub async fn children_lists_connected(fixture: &dyn TransportFixture) {
    const B: &str = "children_lists_connected";
    let parent = fixture.parent();
    // Connected in reverse order, so a list in connection order is not sorted.
    let b = fixture.connect("conf-list-b").await;
    wait_up(B, parent.as_ref(), "conf-list-b").await;
    let a = fixture.connect("conf-list-a").await;
    wait_up(B, parent.as_ref(), "conf-list-a").await;

    let listed = deadline(B, "children()", parent.children()).await;
    assert!(
        listed.windows(2).all(|w| w[0] <= w[1]),
        "{B}: children() is not sorted: {listed:?}"
    );
    for id in ["conf-list-a", "conf-list-b"] {
        assert!(
            listed.iter().any(|c| c == id),
            "{B}: {id} is connected but children() is {listed:?}"
        );
    }

    close(B, a.as_ref()).await;
    wait_lost(B, parent.as_ref(), "conf-list-a").await;
    let listed = deadline(B, "children()", parent.children()).await;
    assert!(
        !listed.iter().any(|c| c == "conf-list-a"),
        "{B}: conf-list-a is closed but children() is {listed:?}"
    );
    assert!(
        listed.iter().any(|c| c == "conf-list-b"),
        "{B}: conf-list-b is connected but children() is {listed:?}"
    );
    close(B, b.as_ref()).await;
}

fn scale(replicas: u32) -> Message {
    Message::Scale(Scale {
        job: job(),
        replicas,
    })
}

fn event(n: u32) -> Message {
    Message::InstanceEvent(InstanceEvent {
        job: job(),
        instance: format!("conf-web-{n}")
            .parse::<InstanceId>()
            .expect("a valid instance id"),
        node: "conf-node".to_string(),
        state: InstanceState::Running,
        exit_code: None,
        reason: format!("conformance message {n}"),
        unschedulable: None,
    })
}

fn job() -> JobId {
    "conf-web".parse().expect("a valid job id")
}

async fn deadline<T>(behaviour: &str, what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(DEADLINE, future).await {
        Ok(value) => value,
        Err(_) => panic!("{behaviour}: timed out after {DEADLINE:?} waiting for {what}"),
    }
}

async fn close(behaviour: &str, child: &dyn ChildTransport) {
    let id = child.id();
    if let Err(e) = deadline(behaviour, &format!("close of {id}"), child.close()).await {
        panic!("{behaviour}: close of {id} failed: {e}");
    }
}

async fn send_up(behaviour: &str, child: &dyn ChildTransport, envelope: &Envelope) {
    let what = format!("send of {} from {}", envelope.kind(), child.id());
    if let Err(e) = deadline(behaviour, &what, child.send(envelope)).await {
        panic!("{behaviour}: {what} failed: {e}");
    }
}

async fn send_down(
    behaviour: &str,
    parent: &dyn ParentTransport,
    child: &str,
    envelope: &Envelope,
) {
    let what = format!("send of {} to {child}", envelope.kind());
    if let Err(e) = deadline(behaviour, &what, parent.send(child, envelope)).await {
        panic!("{behaviour}: {what} failed: {e}");
    }
}

async fn recv_down(behaviour: &str, child: &dyn ChildTransport, what: &str) -> Envelope {
    let id = child.id();
    match deadline(behaviour, &format!("{what} at {id}"), child.recv()).await {
        Ok(envelope) => envelope,
        Err(e) => panic!("{behaviour}: {id} failed to receive {what}: {e}"),
    }
}

fn child_of(event: &ParentEvent) -> &str {
    match event {
        ParentEvent::ChildUp { child }
        | ParentEvent::ChildLost { child, .. }
        | ParentEvent::Message { child, .. }
        | ParentEvent::Invalid { child, .. } => child,
    }
}

/// The next parent event about `child` that `wanted` accepts; everything else is skipped.
async fn wait_event(
    behaviour: &str,
    parent: &dyn ParentTransport,
    what: &str,
    mut wanted: impl FnMut(&ParentEvent) -> bool + Send,
) -> ParentEvent {
    let search = async {
        loop {
            match parent.recv().await {
                Ok(event) if wanted(&event) => return event,
                Ok(other) => tracing::trace!(behaviour, ?other, "skipped"),
                Err(e) => panic!("{behaviour}: parent recv failed waiting for {what}: {e}"),
            }
        }
    };
    deadline(behaviour, what, search).await
}

async fn wait_up(behaviour: &str, parent: &dyn ParentTransport, child: &str) {
    let what = format!("ChildUp of {child}");
    wait_event(
        behaviour,
        parent,
        &what,
        |e| matches!(e, ParentEvent::ChildUp { child: c } if c == child),
    )
    .await;
}

async fn wait_lost(behaviour: &str, parent: &dyn ParentTransport, child: &str) {
    let what = format!("ChildLost of {child}");
    wait_event(
        behaviour,
        parent,
        &what,
        |e| matches!(e, ParentEvent::ChildLost { child: c, .. } if c == child),
    )
    .await;
}

/// The next message whose id is one of `ids` (the first of them is the one expected), with
/// the child the parent named; messages the suite did not send are skipped.
async fn wait_message(
    behaviour: &str,
    parent: &dyn ParentTransport,
    ids: &[&str],
) -> (String, Envelope) {
    let what = format!("message {}", ids.first().copied().unwrap_or("?"));
    let ids: HashSet<&str> = ids.iter().copied().collect();
    let event = wait_event(behaviour, parent, &what, |e| match e {
        ParentEvent::Message { envelope, .. } => ids.contains(envelope.id.as_str()),
        ParentEvent::Invalid { child, error } if child.starts_with("conf-") => {
            panic!("{behaviour}: the parent could not decode a message from {child}: {error}")
        }
        _ => false,
    })
    .await;
    match event {
        ParentEvent::Message { child, envelope } => (child, envelope),
        other => panic!(
            "{behaviour}: expected a message, got {other:?} from {}",
            child_of(&other)
        ),
    }
}
