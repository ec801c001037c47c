//! The sealing layers over the in-memory hub (feature `testing`).

use super::*;
use crate::testing::MemoryHub;
use crate::transport::{ChildTransport, ParentEvent, ParentTransport, TransportError};
use crate::wire::{Codec, Envelope, Message, Scale};
use std::time::Duration;

fn scale(from: &str, replicas: u32) -> Envelope {
    Envelope::new(
        from,
        Message::Scale(Scale {
            job: "web".parse().expect("job id"),
            replicas,
        }),
    )
}

fn bytes(envelope: &Envelope) -> Vec<u8> {
    Codec::default().encode(envelope).expect("encodes")
}

async fn next(parent: &impl ParentTransport) -> ParentEvent {
    tokio::time::timeout(Duration::from_secs(5), parent.recv())
        .await
        .expect("an event in time")
        .expect("the hub is open")
}

async fn next_command(child: &impl ChildTransport) -> Envelope {
    tokio::time::timeout(Duration::from_secs(5), child.recv())
        .await
        .expect("a command in time")
        .expect("the hub is open")
}

fn message_id(event: &ParentEvent) -> Option<&str> {
    match event {
        ParentEvent::Message { envelope, .. } => Some(&envelope.id),
        _ => None,
    }
}

/// A hub with a sealed parent (epoch 1) and one sealed child "node-1" (epoch 1), the
/// transport's own ChildUp already swallowed by nothing yet.
async fn pair() -> (
    MemoryHub,
    SealedParent<crate::testing::MemoryParent>,
    SealedChild<crate::testing::MemoryChild>,
    SigningKey,
) {
    let hub = MemoryHub::new();
    let key = SigningKey::generate().expect("randomness");
    let keys = ChildKeys::new();
    keys.insert("node-1", key.clone());
    let parent = SealedParent::new(hub.parent(), 1, keys);
    let child = SealedChild::new(
        hub.connect("node-1").await.expect("connects"),
        key.clone(),
        1,
    );
    (hub, parent, child, key)
}

#[tokio::test]
async fn sealed_parent_and_child_talk_and_the_child_is_up_at_its_first_verified_message() {
    let (_hub, parent, child, _key) = pair().await;
    let up = scale("node-1", 1);
    child.send(&up).await.expect("sends");
    // the transport's ChildUp (on connect) is not passed on; the layer's comes with the message
    assert_eq!(
        next(&parent).await,
        ParentEvent::ChildUp {
            child: "node-1".into()
        }
    );
    assert_eq!(
        next(&parent).await,
        ParentEvent::Message {
            child: "node-1".into(),
            envelope: up
        }
    );
    assert_eq!(parent.children().await, vec!["node-1".to_string()]);

    let down = scale("cluster-a", 2);
    parent.send("node-1", &down).await.expect("sends");
    assert_eq!(next_command(&child).await, down);
}

#[tokio::test]
async fn unsigned_forged_and_replayed_envelopes_to_the_parent_are_dropped() {
    let (hub, parent, child, key) = pair().await;
    let raw = hub.connect("node-1").await;
    // the id is taken: forge through the existing child's raw channel instead
    assert!(raw.is_err());
    let inner = child.inner();
    inner
        .send_raw(bytes(&scale("node-1", 1)))
        .expect("unsigned");
    let forged = Sealer::new(Direction::Up, 1)
        .seal(
            &SigningKey::generate().expect("randomness"),
            &scale("node-1", 2),
        )
        .expect("seals");
    inner.send_raw(bytes(&forged)).expect("forged");
    // sealed in an earlier start of the child (epoch 0; the layer's is 1)
    let captured = Sealer::new(Direction::Up, 0)
        .seal(&key, &scale("node-1", 3))
        .expect("seals");
    inner.send_raw(bytes(&captured)).expect("genuine");
    inner.send_raw(bytes(&captured)).expect("replayed");
    inner.send_raw(b"not json".to_vec()).expect("garbage");
    let last = scale("node-1", 4);
    child.send(&last).await.expect("sends");

    assert!(matches!(next(&parent).await, ParentEvent::ChildUp { .. }));
    assert_eq!(message_id(&next(&parent).await), Some(captured.id.as_str()));
    assert_eq!(message_id(&next(&parent).await), Some(last.id.as_str()));
    let nothing = tokio::time::timeout(Duration::from_millis(200), parent.recv()).await;
    assert!(nothing.is_err(), "nothing else passes: {nothing:?}");
}

#[tokio::test]
async fn unsigned_and_replayed_commands_never_reach_the_child() {
    let (hub, parent, child, key) = pair().await;
    let raw = hub.parent();
    raw.send_raw("node-1", bytes(&scale("intruder", 1)))
        .expect("unsigned");
    // sealed in an earlier start of the parent (epoch 0; the layer's is 1)
    let captured = Sealer::new(Direction::Down, 0)
        .seal(&key, &scale("cluster-a", 2))
        .expect("seals");
    raw.send_raw("node-1", bytes(&captured)).expect("genuine");
    raw.send_raw("node-1", bytes(&captured)).expect("replayed");
    // sealed by the child itself, echoed back down
    let reflected = child.seal(&scale("node-1", 3)).expect("seals");
    raw.send_raw("node-1", bytes(&reflected))
        .expect("reflected");
    let last = scale("cluster-a", 4);
    parent.send("node-1", &last).await.expect("sends");

    let mut captured_open = captured.clone();
    captured_open.seal = None;
    assert_eq!(next_command(&child).await, captured_open);
    assert_eq!(next_command(&child).await, last);
    assert!(child.replay_state().top.is_some());
}

#[tokio::test]
async fn a_child_without_a_key_is_not_sent_to_and_not_heard() {
    let hub = MemoryHub::new();
    let keys = ChildKeys::new();
    let parent = SealedParent::new(hub.parent(), 1, keys.clone());
    let key = SigningKey::generate().expect("randomness");
    let child = SealedChild::new(
        hub.connect("node-1").await.expect("connects"),
        key.clone(),
        1,
    );
    assert!(matches!(
        parent.send("node-1", &scale("c", 1)).await,
        Err(TransportError::NotFound { child }) if child == "node-1"
    ));
    child.send(&scale("node-1", 1)).await.expect("sends");
    let nothing = tokio::time::timeout(Duration::from_millis(200), parent.recv()).await;
    assert!(
        nothing.is_err(),
        "an unknown child is not heard: {nothing:?}"
    );

    // registered at run time: heard from then on; removed: not heard again
    keys.insert("node-1", key);
    let second = scale("node-1", 2);
    child.send(&second).await.expect("sends");
    assert!(matches!(next(&parent).await, ParentEvent::ChildUp { .. }));
    assert_eq!(message_id(&next(&parent).await), Some(second.id.as_str()));
    keys.remove("node-1");
    child.send(&scale("node-1", 3)).await.expect("sends");
    let nothing = tokio::time::timeout(Duration::from_millis(200), parent.recv()).await;
    assert!(
        nothing.is_err(),
        "a removed child is not heard: {nothing:?}"
    );
    assert!(parent.children().await.is_empty());
}

#[tokio::test]
async fn a_lost_child_is_up_again_at_its_next_verified_message() {
    let (hub, parent, _child, key) = pair().await;
    let child = SealedChild::new(
        hub.connect("node-2").await.expect("connects"),
        key.clone(),
        1,
    );
    parent.keys().insert("node-2", key);
    child.send(&scale("node-2", 1)).await.expect("sends");
    assert!(matches!(next(&parent).await, ParentEvent::ChildUp { child } if child == "node-2"));
    assert!(message_id(&next(&parent).await).is_some());
    let inner = child.inner().clone();
    drop(child);
    assert!(hub.cut("node-2"));
    assert!(
        matches!(next(&parent).await, ParentEvent::ChildLost { child, .. } if child == "node-2")
    );
    drop(inner);

    let key = SigningKey::generate().expect("randomness");
    parent.keys().insert("node-2", key.clone());
    let again = SealedChild::new(hub.connect("node-2").await.expect("reconnects"), key, 2);
    again.send(&scale("node-2", 2)).await.expect("sends");
    assert!(matches!(next(&parent).await, ParentEvent::ChildUp { child } if child == "node-2"));
    assert!(message_id(&next(&parent).await).is_some());
}
