//! `aggregate_size`: how many bytes a cluster's aggregate takes on the wire at 10 and at
//! 10,000 READY nodes, each with 20 label keys (16 of 2 to 9 values, 4 unique per node).
//!
//! ```text
//! cargo run --release --features engine,testing --example aggregate_size
//! ```
//!
//! The aggregate is built as a cluster builds it (`edgeio::engine::cluster::aggregate_of`)
//! and encoded in its envelope by the wire codec. It names no node: the READY nodes are
//! summed, their labels summarized per key (capped) and their ids kept in a Bloom filter of
//! at most 4 KiB, so past 2,048 nodes the size stays put. It stops with an error when the
//! aggregate at 10,000 nodes reaches 8 KiB. At 10 nodes the unique keys still have few
//! enough values to be listed, which is why 10 nodes can take a few bytes more than 100.

use edgeio::engine::cluster::{aggregate_of, sample_nodes};
use edgeio_core::model::Labels;
use edgeio_core::wire::{Codec, Envelope, Message};

const LABEL_KEYS: usize = 20;
const BOUND: usize = 8 * 1024;

/// The encoded envelope of the aggregate of `nodes` sample nodes, in bytes; and the share of
/// 10,000 ids of nodes it does not hold that its filter lets through (false positives).
fn measure(nodes: usize) -> (usize, usize, f64) {
    let records = sample_nodes(nodes, LABEL_KEYS);
    let aggregate = aggregate_of(&records, &Labels::new(), None);
    let filter_bytes = aggregate.node_filter.as_ref().map_or(0, |f| f.bits.len());
    let false_positives = aggregate.node_filter.as_ref().map_or(0, |f| {
        (0..10_000)
            .filter(|i| f.may_contain(&format!("elsewhere-{i}")))
            .count()
    });
    let envelope = Envelope {
        v: edgeio_core::wire::PROTOCOL_VERSION,
        id: "00000000-0000-0000-0000-000000000000".into(),
        ts: 1_796_601_600_000,
        from: "edge-cluster-1".into(),
        body: Message::ClusterAggregate(aggregate),
        seal: None,
    };
    let bytes = Codec::default().encode(&envelope).expect("encodes").len();
    (bytes, filter_bytes, false_positives as f64 / 100.0)
}

fn main() {
    println!("nodes   aggregate bytes   filter bits   filter false positives");
    let mut at_10k = 0;
    for nodes in [10, 100, 1_000, 10_000] {
        let (bytes, filter, fp) = measure(nodes);
        println!(
            "{nodes:>6}   {bytes:>15}   {:>11}   {fp:>21.1} %",
            filter * 8
        );
        at_10k = bytes;
    }
    if at_10k >= BOUND {
        eprintln!("aggregate_size: {at_10k} bytes at 10,000 nodes, over the {BOUND}-byte bound");
        std::process::exit(1);
    }
}
