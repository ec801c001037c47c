//! The cluster's summary for the root: counts, sums, the largest free node, architectures, runtimes, labels.

use super::*;

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
            node_names: ready.iter().map(|n| n.id.clone()).collect(),
            node_labels: Vec::new(),
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
            if !node.capabilities.labels.is_empty()
                && !agg.node_labels.contains(&node.capabilities.labels)
            {
                agg.node_labels.push(node.capabilities.labels.clone());
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
