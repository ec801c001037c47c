//! Records stored by an earlier version still load: upgrades keep the data.
//!
//! `fixtures/records-v0/` holds what a root (`root.json`) and two clusters (`c0.json`,
//! `c1.json`) stored, key by key, as written by the engines before the engine crate split
//! (the simulator's run of seed 9 to 30 s: three jobs running on two clusters). Every record must still
//! decode into today's types, with its state and history.

use edgeio_core::state::{ClusterState, JobState, NodeState};
use edgeio_engine::records::{ClusterRecord, JobRecord, NodeRecord, CLUSTERS, JOBS, NODES};
use std::collections::BTreeMap;

fn store(name: &str) -> BTreeMap<String, serde_json::Value> {
    let path = format!(
        "{}/tests/fixtures/records-v0/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn records<T: serde::de::DeserializeOwned>(
    store: &BTreeMap<String, serde_json::Value>,
    prefix: &str,
) -> Vec<T> {
    store
        .iter()
        .filter(|(key, _)| key.starts_with(prefix))
        .map(|(key, value)| {
            serde_json::from_value(value.clone())
                .unwrap_or_else(|e| panic!("{key} no longer loads: {e}"))
        })
        .collect()
}

#[test]
fn a_roots_records_of_format_0_still_load() {
    let root = store("root");
    let clusters: Vec<ClusterRecord> = records(&root, CLUSTERS);
    let jobs: Vec<JobRecord> = records(&root, JOBS);
    assert_eq!(clusters.len(), 2);
    assert!(clusters
        .iter()
        .all(|c| c.lifecycle.state() == ClusterState::Active));
    assert_eq!(jobs.len(), 3);
    let states: Vec<JobState> = jobs.iter().map(|j| j.lifecycle.state()).collect();
    assert_eq!(states, [JobState::Running; 3]);
    assert!(jobs.iter().all(|j| j.cluster.as_deref() == Some("c0")));
    assert!(jobs.iter().all(|j| j.lifecycle.history().len() >= 2));
}

#[test]
fn a_clusters_records_of_format_0_still_load() {
    for name in ["c0", "c1"] {
        let cluster = store(name);
        let nodes: Vec<NodeRecord> = records(&cluster, NODES);
        let _jobs: Vec<JobRecord> = records(&cluster, JOBS);
        assert_eq!(nodes.len(), 3, "{name}");
        assert!(nodes
            .iter()
            .all(|n| n.lifecycle.state() == NodeState::Ready));
    }
    let jobs: Vec<JobRecord> = records(&store("c0"), JOBS);
    assert!(!jobs.is_empty());
    assert!(jobs.iter().all(|j| !j.instances.is_empty()));
}
