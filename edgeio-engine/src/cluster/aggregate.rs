//! The cluster's summary for the root: counts, sums, the largest free node, architectures,
//! runtimes, labels, and what the root needs to route pins and selectors — a capped summary
//! of the nodes' labels and a Bloom filter of their ids, so its size does not grow with the
//! node count (see `edgeio_core::wire::{LabelSummary, NodeFilter}`).

use super::*;
use edgeio_core::wire::{LabelSummary, NodeFilter};

impl ClusterState {
    pub(super) fn aggregate(&self) -> ClusterAggregate {
        let mut agg = aggregate_of(
            self.nodes.values(),
            &self.config.labels,
            self.config.location.as_ref(),
        );
        // the nodes' figures hold what the deploys handled so far reserved on them
        agg.deploys_seen = Some(self.deploys_seen);
        agg
    }
}

/// The aggregate a cluster with `nodes` (its records, READY or not), its own `labels` and
/// `location` sends the root. Its size is bounded whatever the node count: the READY nodes
/// are summed and summarized, never listed (at most 4 KiB of node filter and
/// `MAX_LABEL_KEYS` × `MAX_LABEL_VALUES` label values).
pub fn aggregate_of<'a>(
    nodes: impl IntoIterator<Item = &'a NodeRecord>,
    labels: &Labels,
    location: Option<&Location>,
) -> ClusterAggregate {
    let mut registered = 0;
    let ready: Vec<&NodeRecord> = nodes
        .into_iter()
        .inspect(|_| registered += 1)
        .filter(|n| n.lifecycle.state() == NodeState::Ready)
        .collect();
    let mut agg = ClusterAggregate {
        nodes: registered,
        ready_nodes: ready.len() as u32,
        total: Resources::ZERO,
        free: Resources::ZERO,
        largest_free: Resources::ZERO,
        architectures: Vec::new(),
        runtimes: Vec::new(),
        labels: labels.clone(),
        location: location.cloned(),
        node_label_summary: Some(LabelSummary::of(
            ready.iter().map(|n| &n.capabilities.labels),
        )),
        node_filter: Some(NodeFilter::of(ready.iter().map(|n| n.id.as_str()))),
        deploys_seen: None,
    };
    for node in ready {
        agg.total = agg.total.saturating_add(&node.total);
        agg.free = agg.free.saturating_add(&node.free);
        // the node with the most free CPU, then memory, stands for "the most one node has"
        if (node.free.cpu_millis, node.free.memory_bytes)
            > (agg.largest_free.cpu_millis, agg.largest_free.memory_bytes)
        {
            agg.largest_free = node.free;
        }
        if !agg.architectures.contains(&node.capabilities.arch) {
            agg.architectures.push(node.capabilities.arch.clone());
        }
        for r in &node.capabilities.runtimes {
            if !agg.runtimes.contains(&r.kind) {
                agg.runtimes.push(r.kind.clone());
            }
        }
    }
    agg
}

#[cfg(any(test, feature = "testing"))]
/// `count` READY nodes as an edge site might have them, for measuring aggregates: ids
/// `node-00000` …, two architectures, two runtimes, and `label_keys` label keys of which
/// most take a handful of values (zone, rack, tier …) and a few one per node (a serial
/// number, a host name), which the summary caps.
pub fn sample_nodes(count: usize, label_keys: usize) -> Vec<NodeRecord> {
    use edgeio_core::model::{Arch, Capabilities, RuntimeInfo};
    (0..count)
        .map(|i| {
            let labels: Labels = (0..label_keys)
                .map(|k| {
                    // every fifth key is unique per node; the others take 2 to 9 values
                    let value = if k % 5 == 4 {
                        format!("v{i:05}")
                    } else {
                        format!("v{}", i % (2 + k % 8))
                    };
                    (format!("example.org/key-{k:02}"), value)
                })
                .collect();
            let capabilities = Capabilities {
                arch: if i % 3 == 0 { Arch::Arm64 } else { Arch::Amd64 },
                cores: 4,
                memory_bytes: 8 << 30,
                disk_bytes: 64 << 30,
                gpus: 0,
                runtimes: vec![
                    RuntimeInfo {
                        kind: "docker".into(),
                        version: "27".into(),
                    },
                    RuntimeInfo {
                        kind: "native".into(),
                        version: "1".into(),
                    },
                ],
                labels,
                location: None,
            };
            let total = NodeRecord::total_of(&capabilities);
            NodeRecord {
                id: format!("node-{i:05}"),
                name: format!("host-{i:05}"),
                capabilities,
                lifecycle: Lifecycle::new(NodeState::Ready, 0, "registered"),
                free: total,
                total,
                instances: 0,
                usage: None,
                last_seen_ms: 0,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(nodes: usize, keys: usize) -> usize {
        let nodes = sample_nodes(nodes, keys);
        serde_json::to_vec(&aggregate_of(&nodes, &Labels::new(), None))
            .unwrap()
            .len()
    }

    #[test]
    fn an_aggregate_stays_under_8_kib_at_10000_nodes_with_20_label_keys() {
        let small = bytes(10, 20);
        let large = bytes(10_000, 20);
        assert!(large < 8 * 1024, "{large} bytes at 10,000 nodes");
        // bounded: from 2,048 nodes on the filter is full size, and the summary is capped
        assert!(large.abs_diff(bytes(5_000, 20)) < 64, "{large}");
        assert!(small < large);
    }

    #[test]
    fn an_aggregate_names_no_node_and_summarizes_only_ready_ones() {
        let mut nodes = sample_nodes(3, 1);
        nodes[2]
            .lifecycle
            .transition(NodeState::Lost, 1, "silent")
            .unwrap();
        let agg = aggregate_of(&nodes, &Labels::new(), None);
        let json = serde_json::to_string(&agg).unwrap();
        assert!(!json.contains("node-0000"), "{json}");
        assert_eq!((agg.nodes, agg.ready_nodes), (3, 2));
        let filter = agg.node_filter.unwrap();
        assert!(filter.may_contain("node-00000") && filter.may_contain("node-00001"));
        assert!(
            !filter.may_contain("node-00002"),
            "LOST nodes are not routed to"
        );
        let summary = agg.node_label_summary.unwrap();
        // key-00 takes i % 2: node 0 has v0, node 1 v1 (node 2, v0, is LOST)
        assert_eq!(
            summary.values["example.org/key-00"],
            [("v0".to_string(), 1), ("v1".to_string(), 1)].into()
        );
    }
}
