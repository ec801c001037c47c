//! Records stored by an earlier version still load: upgrades keep the data.
//!
//! `fixtures/records-v0/` holds what a root (`root.json`) and two clusters (`c0.json`,
//! `c1.json`) stored, key by key, as written by the engines before the engine crate split
//! (the simulator's run of seed 9 to 30 s: three jobs running on two clusters). Every record must still
//! decode into today's types, with its state and history. Job records were format 0 then (one
//! type for both tiers); they now split into shared fields and each tier's own
//! ([`JOB_FORMAT`]), and a record of a format newer than this version reads is refused.

use edgeio_core::state::{ClusterState, JobState, NodeState};
use edgeio_engine::records::{
    decode, ClusterJob, ClusterRecord, NodeRecord, RootJob, CLUSTERS, JOBS, JOB_FORMAT, NODES,
};
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
            decode(value.to_string().as_bytes())
                .unwrap_or_else(|e| panic!("{key} no longer loads: {e}"))
        })
        .collect()
}

#[test]
fn a_roots_records_of_format_0_still_load() {
    let root = store("root");
    let clusters: Vec<ClusterRecord> = records(&root, CLUSTERS);
    let jobs: Vec<RootJob> = records(&root, JOBS);
    assert_eq!(clusters.len(), 2);
    assert!(clusters
        .iter()
        .all(|c| c.lifecycle.state() == ClusterState::Active));
    assert_eq!(jobs.len(), 3);
    let states: Vec<JobState> = jobs.iter().map(|j| j.lifecycle.state()).collect();
    assert_eq!(states, [JobState::Running; 3]);
    assert!(jobs.iter().all(|j| j.at.cluster.as_deref() == Some("c0")));
    assert!(jobs.iter().all(|j| j.lifecycle.history().len() >= 2));
}

#[test]
fn a_clusters_records_of_format_0_still_load() {
    for name in ["c0", "c1"] {
        let cluster = store(name);
        let nodes: Vec<NodeRecord> = records(&cluster, NODES);
        let _jobs: Vec<ClusterJob> = records(&cluster, JOBS);
        assert_eq!(nodes.len(), 3, "{name}");
        assert!(nodes
            .iter()
            .all(|n| n.lifecycle.state() == NodeState::Ready));
    }
    let jobs: Vec<ClusterJob> = records(&store("c0"), JOBS);
    assert!(!jobs.is_empty());
    assert!(jobs.iter().all(|j| !j.instances.is_empty()));
}

/// Upgrading a format-0 record keeps everything its tier uses and drops only the other tier's
/// fields; written back, it says format 1 and reads the same again.
#[test]
fn a_format_0_job_is_written_back_in_todays_format_with_nothing_its_tier_uses_lost() {
    let root = store("root");
    let (key, old) = root
        .iter()
        .find(|(key, _)| key.starts_with(JOBS))
        .expect("a job");
    assert!(old.get("format").is_none(), "{key} is of format 0");
    let job: RootJob = decode(old.to_string().as_bytes()).unwrap();
    let job = job.upgraded();
    let written = serde_json::to_value(&job).unwrap();
    assert_eq!(written["format"], JOB_FORMAT);
    for kept in [
        "id",
        "spec",
        "lifecycle",
        "instances",
        "unschedulable",
        "cluster",
    ] {
        assert_eq!(written[kept], old[kept], "{key}: {kept}");
    }
    let again: RootJob = decode(written.to_string().as_bytes()).unwrap();
    assert_eq!(again, job);

    let cluster = store("c0");
    let old = cluster
        .iter()
        .find(|(key, _)| key.starts_with(JOBS))
        .map(|(_, v)| v)
        .expect("a job at c0");
    let job: ClusterJob = decode(old.to_string().as_bytes()).unwrap();
    let written = serde_json::to_value(job.upgraded()).unwrap();
    for root_only in ["cluster", "refused_by", "parts", "offers"] {
        assert!(written.get(root_only).is_none(), "{root_only}: {written}");
    }
    assert_eq!(written["instances"], old["instances"]);
    assert_eq!(written["lifecycle"], old["lifecycle"]);
}

/// A record a newer version wrote is not read as if it were today's: reading it would drop
/// what that version added, and the next change would write the loss back.
#[test]
fn a_job_of_a_newer_format_is_refused_with_its_format_named() {
    let root = store("root");
    let (_, old) = root
        .iter()
        .find(|(key, _)| key.starts_with(JOBS))
        .expect("a job");
    let mut newer = old.clone();
    newer["format"] = (JOB_FORMAT + 1).into();
    let err = decode::<RootJob>(newer.to_string().as_bytes()).unwrap_err();
    assert!(
        err.contains(&format!("format: {}", JOB_FORMAT + 1)),
        "{err}"
    );
    assert!(err.contains("upgrade edgeio"), "{err}");
}
