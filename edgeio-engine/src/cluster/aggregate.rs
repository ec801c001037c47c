//! The cluster's summary for the root: counts, sums, the largest free node, architectures,
//! runtimes, labels, and what the root needs to route pins and selectors — a capped summary
//! of the nodes' labels and a Bloom filter of their ids, so its size does not grow with the
//! node count (see `edgeio_core::wire::{LabelSummary, NodeFilter}`).

use super::*;
use edgeio_core::wire::{LabelSummary, NodeFilter};

impl ClusterState {
    pub(super) fn aggregate(&self) -> ClusterAggregate {
        let ready: Vec<&NodeRecord> = self
            .nodes
            .values()
            .filter(|n| n.lifecycle.state() == NodeState::Ready)
            .collect();
        let mut agg = ClusterAggregate {
            nodes: self.nodes.len() as u32,
            ready_nodes: ready.len() as u32,
            total: Resources::ZERO,
            free: Resources::ZERO,
            largest_free: Resources::ZERO,
            architectures: Vec::new(),
            runtimes: Vec::new(),
            labels: self.config.labels.clone(),
            location: self.config.location.clone(),
            node_label_summary: Some(LabelSummary::of(
                ready.iter().map(|n| &n.capabilities.labels),
            )),
            node_filter: Some(NodeFilter::of(ready.iter().map(|n| n.id.as_str()))),
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
}
