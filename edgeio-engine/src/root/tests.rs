//! The root's decisions by value: given this state, this input at this time → this state and
//! these effects. No transport, no store, no task: the state is built in place and its
//! methods are called with a manual clock and seeded ids.

use super::*;
use edgeio_core::clock::{ManualClock, SeededIds};
use edgeio_core::model::{Arch, Resources};
use edgeio_core::reliable::CommandOutcome;
use edgeio_core::testing::SimpleScheduler;
use edgeio_core::wire::{LabelSummary, NodeFilter};

const GIB: u64 = 1 << 30;

struct Fixture {
    state: RootState,
    clock: Arc<ManualClock>,
}

fn fixture() -> Fixture {
    let clock = Arc::new(ManualClock::new(1_000_000));
    let cx = Context::new(clock.clone(), Arc::new(SeededIds::new(1)));
    let state = RootState {
        cx,
        refusals: Refusals::default(),
        config: RootConfig::default(),
        scheduler: Arc::new(SimpleScheduler),
        clusters: BTreeMap::new(),
        jobs: BTreeMap::new(),
        reserving: Vec::new(),
        queries: BTreeMap::new(),
        streams: BTreeMap::new(),
        syncs: BTreeMap::new(),
        offered: None,
        deploy_seq: 0,
        sent: BTreeMap::new(),
        started_ms: 0,
    };
    Fixture { state, clock }
}

fn aggregate(cpu_millis: u64) -> ClusterAggregate {
    let free = Resources {
        cpu_millis,
        memory_bytes: 4 * GIB,
        disk_bytes: 10 * GIB,
        gpus: 0,
    };
    ClusterAggregate {
        nodes: 1,
        ready_nodes: 1,
        total: free,
        free,
        largest_free: free,
        architectures: vec![Arch::Amd64],
        runtimes: vec!["native".into()],
        labels: Labels::new(),
        location: None,
        node_label_summary: Some(LabelSummary::of([&Labels::new()])),
        node_filter: Some(NodeFilter::of(["n1"].into_iter())),
        deploys_seen: None,
    }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl Fixture {
    /// Registers `name` and gives it an aggregate with `cpu_millis` free.
    fn cluster(&mut self, name: &str, cpu_millis: u64) {
        let mut fx = Fx::default();
        let request = RegisterRequest {
            role: PeerRole::Cluster,
            name: name.into(),
            previous_id: None,
            capabilities: None,
            location: None,
            labels: Labels::new(),
            auth: None,
        };
        self.state.register(request, &mut fx).unwrap();
        self.state
            .on_aggregate(name, aggregate(cpu_millis), &mut fx);
    }

    /// Registers `name` with an aggregate of READY nodes `nodes` (ids and labels) and 4 cores
    /// free; `filter` replaces the Bloom filter built from the ids (to plant a false positive).
    fn cluster_of(&mut self, name: &str, nodes: &[(&str, Labels)], filter: Option<NodeFilter>) {
        let mut fx = Fx::default();
        let request = RegisterRequest {
            role: PeerRole::Cluster,
            name: name.into(),
            previous_id: None,
            capabilities: None,
            location: None,
            labels: Labels::new(),
            auth: None,
        };
        self.state.register(request, &mut fx).unwrap();
        let mut agg = aggregate(4000);
        agg.ready_nodes = nodes.len() as u32;
        agg.nodes = agg.ready_nodes;
        agg.node_label_summary = Some(LabelSummary::of(nodes.iter().map(|(_, l)| l)));
        agg.node_filter =
            Some(filter.unwrap_or_else(|| NodeFilter::of(nodes.iter().map(|(id, _)| *id))));
        self.state.on_aggregate(name, agg, &mut fx);
    }

    /// Submits `spec` as a REQUESTED job and schedules it; the effects returned.
    fn submit_spec(&mut self, spec: JobSpec) -> (String, Fx) {
        let now = self.state.cx.now_ms();
        let id = new_job_id(&spec.name, &self.state.cx);
        let record = RootJob::new(id.clone(), spec, JobState::Requested, now, "submitted");
        self.state.jobs.insert(id.to_string(), record);
        let mut fx = Fx::default();
        self.state.schedule(id.as_str(), &mut fx);
        (id.to_string(), fx)
    }

    /// A REQUESTED job asking for `cpu_millis`, scheduled at once; the effects returned.
    fn submit(&mut self, name: &str, cpu_millis: u64) -> (String, Fx) {
        let spec = JobSpec::minimal(
            name,
            "fake:run",
            "native",
            Resources {
                cpu_millis,
                ..Resources::ZERO
            },
        );
        let now = self.state.cx.now_ms();
        let id = new_job_id(name, &self.state.cx);
        let record = RootJob::new(id.clone(), spec, JobState::Requested, now, "submitted");
        self.state.jobs.insert(id.to_string(), record);
        let mut fx = Fx::default();
        self.state.schedule(id.as_str(), &mut fx);
        (id.to_string(), fx)
    }

    fn job(&self, id: &str) -> &RootJob {
        &self.state.jobs[id]
    }

    fn states(&self, id: &str) -> Vec<JobState> {
        self.job(id)
            .lifecycle
            .history()
            .iter()
            .map(|h| h.state)
            .collect()
    }
}

/// The clusters the effects send a deploy to, in order.
fn deploys(fx: &Fx) -> Vec<String> {
    fx.commands
        .iter()
        .filter(|(_, e, _)| matches!(e.body, Message::Deploy(_)))
        .map(|(c, _, _)| c.clone())
        .collect()
}

fn nack(message: &str) -> Result<CommandOutcome, TransportError> {
    Ok(CommandOutcome::Nacked(ErrorBody {
        code: "refused".into(),
        message: message.into(),
    }))
}

#[test]
fn a_job_is_placed_on_the_cluster_with_room_and_a_deploy_goes_there() {
    let mut f = fixture();
    f.cluster("small", 500);
    f.cluster("big", 4000);
    let (id, fx) = f.submit("web", 1000);
    assert_eq!(f.job(&id).lifecycle.state(), JobState::ScheduledCluster);
    assert_eq!(f.job(&id).at.cluster.as_deref(), Some("big"));
    assert_eq!(deploys(&fx), ["big"]);
    assert!(fx.persist.contains(&job_key(&id)));
    // the deploy's id and time come from the injected context
    let (_, envelope, _) = &fx.commands[0];
    assert_eq!(envelope.ts, 1_000_000);
}

#[test]
fn the_same_inputs_make_the_same_decisions_with_the_same_ids() {
    let run = || {
        let mut f = fixture();
        f.cluster("a", 4000);
        let (id, fx) = f.submit("web", 1000);
        (id, fx.commands[0].1.id.clone())
    };
    assert_eq!(run(), run());
}

#[test]
fn a_refusal_sends_the_job_to_the_next_cluster() {
    let mut f = fixture();
    f.cluster("a", 4000);
    f.cluster("b", 4000);
    let (id, fx) = f.submit("web", 1000);
    let first = deploys(&fx)[0].clone();
    let mut fx = Fx::default();
    let job = f.job(&id).id.clone();
    f.state
        .on_deploy_outcome(&job, &first, nack("capacity changed"), &mut fx);
    let second = deploys(&fx);
    assert_eq!(second.len(), 1);
    assert_ne!(second[0], first);
    assert_eq!(f.job(&id).at.cluster.as_deref(), Some(second[0].as_str()));
    assert_eq!(
        f.states(&id),
        [
            JobState::Requested,
            JobState::ScheduledCluster,
            JobState::Requested,
            JobState::ScheduledCluster
        ]
    );
    assert!(f.job(&id).at.refused_by.contains(&first));
}

#[test]
fn a_job_every_cluster_refuses_is_not_deployable_with_every_tiers_reasons() {
    let mut f = fixture();
    f.cluster("a", 4000);
    let (id, _) = f.submit("web", 1000);
    let job = f.job(&id).id.clone();
    let unschedulable = Unschedulable::new(1);
    let mut fx = Fx::default();
    let outcome = Ok(CommandOutcome::Unschedulable(
        ErrorBody {
            code: "unschedulable".into(),
            message: "no node fits".into(),
        },
        Box::new(unschedulable),
    ));
    f.state.on_deploy_outcome(&job, "a", outcome, &mut fx);
    assert_eq!(f.job(&id).lifecycle.state(), JobState::NotDeployable);
    assert!(deploys(&fx).is_empty());
    // the cluster's explanation is kept with the job
    assert!(f
        .job(&id)
        .unschedulable
        .iter()
        .any(|u| u.tier == Tier::Nodes && u.candidates == 1));
    // nothing fits at the root either: refused by the root's scheduler, never sent
    let (big, fx) = f.submit("huge", 64_000);
    assert!(deploys(&fx).is_empty());
    assert_eq!(f.job(&big).lifecycle.state(), JobState::NotDeployable);
    let reason = &f.job(&big).lifecycle.history().last().unwrap().reason;
    assert!(!reason.is_empty());
}

#[test]
fn a_silent_cluster_is_inactive_and_its_jobs_move_after_the_timeout() {
    let mut f = fixture();
    f.cluster("a", 4000);
    let (id, _) = f.submit("web", 1000);
    assert_eq!(f.job(&id).at.cluster.as_deref(), Some("a"));
    f.cluster("b", 4000);
    let config = f.state.config.clone();
    let silence = config.aggregate_interval * config.missed_aggregates;
    // "b" keeps talking, "a" falls silent
    f.clock.advance_ms(silence.as_millis() as u64 + 1);
    let mut fx = Fx::default();
    f.state.on_aggregate("b", aggregate(4000), &mut fx);
    f.state.check_clusters(&mut fx);
    assert_eq!(
        f.state.clusters["a"].lifecycle.state(),
        ClusterState::Inactive
    );
    assert_eq!(f.job(&id).at.cluster.as_deref(), Some("a"), "not moved yet");
    // past the timeout its jobs are placed elsewhere
    f.clock
        .advance_ms(config.cluster_timeout.as_millis() as u64);
    let mut fx = Fx::default();
    f.state.on_aggregate("b", aggregate(4000), &mut fx);
    f.state.check_clusters(&mut fx);
    assert_eq!(f.job(&id).at.cluster.as_deref(), Some("b"));
    assert_eq!(deploys(&fx), ["b"]);
    // "a" is told nothing now (it is away); re-sync settles it when it is back
    let states = f.states(&id);
    assert_eq!(
        &states[states.len() - 2..],
        [JobState::Requested, JobState::ScheduledCluster]
    );
}

#[test]
fn an_event_after_termination_is_refused_counted_and_changes_nothing() {
    let mut f = fixture();
    f.cluster("a", 4000);
    let (id, _) = f.submit("web", 1000);
    let job = f.job(&id).id.clone();
    let mut fx = Fx::default();
    let running = |state| InstanceEvent {
        job: job.clone(),
        instance: InstanceId::new(format!("{job}-0")).unwrap(),
        node: "n1".into(),
        state,
        exit_code: None,
        reason: String::new(),
        unschedulable: None,
    };
    f.state
        .on_instance_event("a", running(InstanceState::Running), &mut fx);
    assert_eq!(f.job(&id).lifecycle.state(), JobState::Running);
    f.state
        .on_instance_event("a", running(InstanceState::Terminated), &mut fx);
    let before = f.state.refusals.count();
    let history = f.job(&id).instances[0].lifecycle.history().len();
    // a late RUNNING after TERMINATED: refused, noted, the instance stays TERMINATED
    f.state
        .on_instance_event("a", running(InstanceState::Running), &mut fx);
    assert_eq!(f.state.refusals.count(), before + 1);
    assert_eq!(
        f.job(&id).instances[0].lifecycle.state(),
        InstanceState::Terminated
    );
    assert_eq!(f.job(&id).instances[0].lifecycle.history().len(), history);
}

#[test]
fn a_migration_of_a_job_that_is_not_running_is_refused_and_records_nothing() {
    let mut f = fixture();
    f.cluster("a", 4000);
    let (id, _) = f.submit("web", 1000);
    let mut fx = Fx::default();
    let answer = f.state.migrate(&id, MigrateTarget::Anywhere, None, &mut fx);
    assert!(
        matches!(answer, Err(ApiError::Conflict { .. })),
        "{answer:?}"
    );
    assert!(f.job(&id).migration.is_none());
    assert!(fx.commands.is_empty());
}

#[test]
fn scaling_up_asks_the_jobs_cluster_and_a_refusal_restores_the_count() {
    let mut f = fixture();
    f.cluster("a", 4000);
    let (id, _) = f.submit("web", 1000);
    let job = f.job(&id).id.clone();
    let mut fx = Fx::default();
    let event = InstanceEvent {
        job: job.clone(),
        instance: InstanceId::new(format!("{job}-0")).unwrap(),
        node: "n1".into(),
        state: InstanceState::Running,
        exit_code: None,
        reason: String::new(),
        unschedulable: None,
    };
    f.state.on_instance_event("a", event, &mut fx);
    let mut fx = Fx::default();
    f.state.scale(&id, 3, &mut fx).unwrap();
    assert_eq!(f.job(&id).lifecycle.state(), JobState::Scaling);
    assert!(matches!(
        fx.commands.as_slice(),
        [(c, e, Tag::Scale { from: 1, .. })] if c == "a" && matches!(&e.body, Message::Scale(s) if s.replicas == 3)
    ));
    // the only cluster refuses: nowhere else to go, the job keeps one replica
    let mut fx = Fx::default();
    f.state
        .on_scale_outcome(&job, "a", 1, nack("no room"), &mut fx);
    assert_eq!(f.job(&id).spec.replicas, 1);
    assert_eq!(f.job(&id).lifecycle.state(), JobState::Running);
}

#[test]
fn a_job_not_deployable_while_every_cluster_was_away_is_placed_when_one_comes_back() {
    let mut f = fixture();
    f.cluster("a", 4000);
    let mut fx = Fx::default();
    f.state.cluster_lost("a", "link closed", &mut fx);
    let (id, fx) = f.submit("web", 1000);
    assert!(deploys(&fx).is_empty());
    assert_eq!(f.job(&id).lifecycle.state(), JobState::NotDeployable);
    // "a" dials in again with as many nodes as before
    let mut fx = Fx::default();
    let request = RegisterRequest {
        role: PeerRole::Cluster,
        name: "a".into(),
        previous_id: Some("a".into()),
        capabilities: None,
        location: None,
        labels: Labels::new(),
        auth: None,
    };
    f.state.register(request, &mut fx).unwrap();
    assert_eq!(deploys(&fx), ["a"]);
    assert_eq!(f.job(&id).lifecycle.state(), JobState::ScheduledCluster);
}

fn small_spec(name: &str) -> JobSpec {
    JobSpec::minimal(
        name,
        "fake:run",
        "native",
        Resources {
            cpu_millis: 100,
            ..Resources::ZERO
        },
    )
}

/// The cluster's refusal of a deploy because no node fits, as it sends it.
fn unschedulable(message: &str) -> Result<CommandOutcome, TransportError> {
    Ok(CommandOutcome::Unschedulable(
        ErrorBody {
            code: "unschedulable".into(),
            message: message.into(),
        },
        Box::new(Unschedulable::new(1).in_tier(Tier::Nodes)),
    ))
}

/// A node filter with every bit set: it says "maybe" to any node, as a false positive does.
fn full_filter() -> NodeFilter {
    NodeFilter {
        hashes: NodeFilter::HASHES,
        bits: vec![0xff; NodeFilter::MIN_BITS / 8],
    }
}

#[test]
fn a_pinned_job_goes_to_the_cluster_whose_filter_holds_its_node() {
    let mut f = fixture();
    f.cluster_of("a", &[("w1", Labels::new())], None);
    f.cluster_of("b", &[("w2", Labels::new()), ("w3", Labels::new())], None);
    let mut spec = small_spec("web");
    spec.worker_node = Some("w3".into());
    let (id, fx) = f.submit_spec(spec);
    assert_eq!(deploys(&fx), ["b"]);
    assert_eq!(f.job(&id).at.cluster.as_deref(), Some("b"));
}

#[test]
fn a_false_positive_of_the_filter_is_refused_there_and_the_pin_goes_onward() {
    let mut f = fixture();
    // every bit set: cluster a's filter says "maybe" to any node, as a false positive does
    let full = full_filter();
    f.cluster_of("a", &[("w1", Labels::new())], Some(full));
    f.cluster_of("b", &[("w9", Labels::new())], None);
    f.cluster_of("c", &[("w5", Labels::new())], None);
    let mut spec = small_spec("web");
    spec.worker_node = Some("w9".into());
    let (id, fx) = f.submit_spec(spec);
    assert_eq!(deploys(&fx), ["a"], "a may hold w9 and comes first");
    let job = f.job(&id).id.clone();
    let mut fx = Fx::default();
    f.state.on_deploy_outcome(
        &job,
        "a",
        unschedulable("cluster a: 1 candidates: worker_node w9 is not a candidate"),
        &mut fx,
    );
    // c's filter says no for certain: it is never asked
    assert_eq!(deploys(&fx), ["b"]);
    assert_eq!(f.job(&id).at.cluster.as_deref(), Some("b"));
    assert_eq!(f.job(&id).at.refused_by, ["a"]);
}

#[test]
fn a_pin_no_cluster_may_hold_is_not_deployable_saying_so() {
    let mut f = fixture();
    f.cluster_of("a", &[("w1", Labels::new())], None);
    let mut spec = small_spec("web");
    spec.worker_node = Some("w9".into());
    let (id, fx) = f.submit_spec(spec);
    assert!(deploys(&fx).is_empty());
    assert_eq!(f.job(&id).lifecycle.state(), JobState::NotDeployable);
    let reason = &f.job(&id).lifecycle.history().last().unwrap().reason;
    assert!(
        reason.contains("no cluster reports a READY node \"w9\""),
        "{reason}"
    );
}

/// First fit honouring `node_selector` as the scheduler crate's filter does (the test kit's
/// `SimpleScheduler` ignores selectors; the engine names no scheduler implementation).
struct SelectorFirstFit;

impl Scheduler for SelectorFirstFit {
    fn name(&self) -> &str {
        "selector-first-fit"
    }

    fn place(
        &self,
        job: &JobSpec,
        set: &CandidateSet,
    ) -> Result<edgeio_core::scheduler::Placement, SchedulerError> {
        set.iter()
            .find(|c| {
                job.node_selector
                    .iter()
                    .all(|(k, v)| c.labels.get(k) == Some(v))
            })
            .map(|c| edgeio_core::scheduler::Placement::on(c.id.clone()))
            .ok_or_else(|| {
                SchedulerError::Unschedulable(Unschedulable::new(set.len()).refused(
                    "node_selector",
                    set.len(),
                    "no match",
                ))
            })
    }
}

#[test]
fn a_selector_goes_to_a_cluster_whose_summary_may_match_and_onward_when_refused() {
    let mut f = fixture();
    f.state.scheduler = Arc::new(SelectorFirstFit);
    // a has zone=a and gpu=yes, but on different nodes: per key it may match
    f.cluster_of(
        "a",
        &[
            ("w1", labels(&[("zone", "a"), ("gpu", "no")])),
            ("w2", labels(&[("zone", "b"), ("gpu", "yes")])),
        ],
        None,
    );
    f.cluster_of(
        "b",
        &[("w3", labels(&[("zone", "a"), ("gpu", "yes")]))],
        None,
    );
    // c has no gpu at all: the summary says no for certain
    f.cluster_of("c", &[("w4", labels(&[("zone", "a")]))], None);
    let mut spec = small_spec("train");
    spec.node_selector = labels(&[("zone", "a"), ("gpu", "yes")]);
    let (id, fx) = f.submit_spec(spec);
    assert_eq!(deploys(&fx), ["a"]);
    let job = f.job(&id).id.clone();
    let mut fx = Fx::default();
    f.state
        .on_deploy_outcome(&job, "a", unschedulable("no node matches"), &mut fx);
    assert_eq!(deploys(&fx), ["b"]);
    let mut fx = Fx::default();
    f.state
        .on_deploy_outcome(&job, "b", unschedulable("capacity changed"), &mut fx);
    // c is never tried: its summary says no
    assert!(deploys(&fx).is_empty());
    assert_eq!(f.job(&id).lifecycle.state(), JobState::NotDeployable);
}

#[test]
fn a_migration_to_a_node_its_own_cluster_refuses_goes_to_the_next_cluster_that_may_hold_it() {
    let mut f = fixture();
    // a's filter says "maybe" to every node (a false positive for w9); b has w9
    let full = full_filter();
    f.cluster_of("a", &[("w1", Labels::new())], Some(full));
    f.cluster_of("b", &[("w9", Labels::new())], None);
    f.cluster_of("c", &[("w5", Labels::new())], None);
    // first fit in id order: a
    let (id, fx) = f.submit_spec(small_spec("web"));
    assert_eq!(deploys(&fx), ["a"]);
    let job = f.job(&id).id.clone();
    let running = InstanceEvent {
        job: job.clone(),
        instance: InstanceId::new(format!("{job}-0")).unwrap(),
        node: "w1".into(),
        state: InstanceState::Running,
        exit_code: None,
        reason: String::new(),
        unschedulable: None,
    };
    f.state.on_instance_event("a", running, &mut Fx::default());
    assert_eq!(f.job(&id).lifecycle.state(), JobState::Running);

    let mut fx = Fx::default();
    f.state
        .migrate(&id, MigrateTarget::Node("w9".into()), None, &mut fx)
        .unwrap();
    // its own cluster may hold w9: asked first, inside the cluster
    let [(to, envelope, Tag::Migrate { node, .. })] = fx.commands.as_slice() else {
        panic!("one migrate command: {:?}", fx.commands.len());
    };
    assert_eq!(to, "a");
    assert!(matches!(&envelope.body, Message::Migrate(_)));
    assert_eq!(node.as_deref(), Some("w9"));

    let refused = Ok(CommandOutcome::Nacked(ErrorBody {
        code: "not_found".into(),
        message: "node w9 is not a READY node of cluster a".into(),
    }));
    let mut fx = Fx::default();
    f.state
        .on_migrate_outcome(&job, "a", false, Some("w9"), refused, &mut fx);
    // onward to b (c's filter says no), deployed there pinned to w9, make-before-break
    let [(to, envelope, _)] = fx.commands.as_slice() else {
        panic!("one deploy: {:?}", fx.commands.len());
    };
    assert_eq!(to, "b");
    let Message::Deploy(deploy) = &envelope.body else {
        panic!("a deploy: {envelope:?}");
    };
    assert_eq!(deploy.spec.worker_node.as_deref(), Some("w9"));
    let migration = f.job(&id).migration.clone().unwrap();
    assert_eq!(migration.from_cluster.as_deref(), Some("a"));
    assert_eq!(migration.to_cluster.as_deref(), Some("b"));
    assert_eq!(f.job(&id).lifecycle.state(), JobState::Migrating);
}

/// Job `id` on `cluster` with its first instance RUNNING there.
fn running_on(f: &mut Fixture, id: &str, cluster: &str) -> InstanceId {
    let job = f.job(id).id.clone();
    let instance = InstanceId::new(format!("{job}-0")).unwrap();
    let event = InstanceEvent {
        job,
        instance: instance.clone(),
        node: "n1".into(),
        state: InstanceState::Running,
        exit_code: None,
        reason: String::new(),
        unschedulable: None,
    };
    f.state
        .on_instance_event(cluster, event, &mut Fx::default());
    assert_eq!(f.job(id).lifecycle.state(), JobState::Running);
    instance
}

#[test]
fn an_instance_its_cluster_cannot_replace_moves_the_job_to_another_cluster() {
    let mut f = fixture();
    f.cluster("a", 4000);
    f.cluster("b", 4000);
    let (id, fx) = f.submit("web", 1000);
    let first = deploys(&fx)[0].clone();
    let other = if first == "a" { "b" } else { "a" };
    let instance = running_on(&mut f, &id, &first);
    // the cluster lost the node and no other node of it can take the instance
    let event = InstanceEvent {
        job: f.job(&id).id.clone(),
        instance,
        node: "n1".into(),
        state: InstanceState::Lost,
        exit_code: None,
        reason: "cannot replace it".into(),
        unschedulable: Some(Unschedulable::new(0)),
    };
    let mut fx = Fx::default();
    f.state.on_instance_event(&first, event, &mut fx);
    assert_eq!(deploys(&fx), [other]);
    assert_eq!(f.job(&id).at.cluster.as_deref(), Some(other));
    assert!(fx
        .commands
        .iter()
        .any(|(c, e, _)| c == &first && matches!(e.body, Message::Terminate(_))));
}

#[test]
fn replicas_no_one_cluster_can_take_are_spread_over_those_that_offered_some() {
    let mut f = fixture();
    f.cluster("a", 4000);
    f.cluster("b", 4000);
    let mut spec = small_spec("wide");
    spec.replicas = 3;
    spec.resources.cpu_millis = 2000;
    let (id, mut fx) = f.submit_spec(spec);
    let id = JobId::new(id).unwrap();
    // each cluster refuses the whole job, saying it could take two
    for _ in 0..2 {
        let (cluster, _, _) = fx.commands.pop().expect("a deploy");
        let mut u = Unschedulable::new(2);
        u.fits = 2;
        let outcome = Ok(CommandOutcome::Unschedulable(
            ErrorBody {
                code: "unschedulable".into(),
                message: "only two fit".into(),
            },
            Box::new(u),
        ));
        fx = Fx::default();
        f.state.on_deploy_outcome(&id, &cluster, outcome, &mut fx);
    }
    let parts: Vec<(String, u32)> = f
        .job(id.as_str())
        .at
        .parts
        .iter()
        .map(|p| (p.cluster.clone(), p.replicas))
        .collect();
    assert_eq!(parts.iter().map(|p| p.1).sum::<u32>(), 3, "{parts:?}");
    assert_eq!(parts.len(), 2, "{parts:?}");
    let mut sent = deploys(&fx);
    sent.sort();
    assert_eq!(sent, ["a", "b"]);
}

#[test]
fn scaling_down_asks_the_jobs_cluster_for_the_smaller_count() {
    let mut f = fixture();
    f.cluster("a", 4000);
    let mut spec = small_spec("web");
    spec.replicas = 3;
    let id = JobId::new(f.submit_spec(spec).0).unwrap();
    for n in 0..3 {
        let event = InstanceEvent {
            job: id.clone(),
            instance: InstanceId::new(format!("{id}-{n}")).unwrap(),
            node: "n1".into(),
            state: InstanceState::Running,
            exit_code: None,
            reason: String::new(),
            unschedulable: None,
        };
        f.state.on_instance_event("a", event, &mut Fx::default());
    }
    assert_eq!(f.job(id.as_str()).lifecycle.state(), JobState::Running);
    let mut fx = Fx::default();
    f.state.scale(id.as_str(), 1, &mut fx).unwrap();
    assert_eq!(f.job(id.as_str()).spec.replicas, 1);
    assert!(matches!(
        fx.commands.as_slice(),
        [(c, e, _)] if c == "a" && matches!(&e.body, Message::Scale(s) if s.replicas == 1)
    ));
}

#[test]
fn a_migration_to_another_cluster_deploys_there_first_and_stops_the_old_once_it_runs() {
    let mut f = fixture();
    f.cluster("a", 4000);
    f.cluster("b", 4000);
    let (id, fx) = f.submit("web", 1000);
    let from = deploys(&fx)[0].clone();
    let to = if from == "a" { "b" } else { "a" };
    running_on(&mut f, &id, &from);
    let mut fx = Fx::default();
    f.state
        .migrate(&id, MigrateTarget::Cluster(to.into()), None, &mut fx)
        .unwrap();
    assert_eq!(f.job(&id).lifecycle.state(), JobState::Migrating);
    assert_eq!(deploys(&fx), [to]);
    assert!(
        !fx.commands
            .iter()
            .any(|(_, e, _)| matches!(e.body, Message::Terminate(_))),
        "make before break"
    );
    // the new cluster's instance runs: the old cluster is told to stop
    let job = f.job(&id).id.clone();
    let event = InstanceEvent {
        job: job.clone(),
        instance: InstanceId::new(format!("{job}-1")).unwrap(),
        node: "n1".into(),
        state: InstanceState::Running,
        exit_code: None,
        reason: String::new(),
        unschedulable: None,
    };
    let mut fx = Fx::default();
    f.state.on_instance_event(to, event, &mut fx);
    assert!(fx
        .commands
        .iter()
        .any(|(c, e, _)| c == &from && matches!(e.body, Message::Terminate(_))));
}

/// A re-sync answer from a cluster: these instances run there.
fn resync_reply(events: &[InstanceEvent]) -> QueryReply {
    QueryReply {
        re: "sync".into(),
        result: Some(serde_json::to_value(events).unwrap()),
        error: None,
        more: false,
    }
}

fn running_event(job: &JobId, n: u32) -> InstanceEvent {
    InstanceEvent {
        job: job.clone(),
        instance: InstanceId::new(format!("{job}-{n}")).unwrap(),
        node: "n1".into(),
        state: InstanceState::Running,
        exit_code: None,
        reason: String::new(),
        unschedulable: None,
    }
}

#[test]
fn a_cluster_back_with_a_job_placed_elsewhere_meanwhile_is_told_to_stop_it() {
    let mut f = fixture();
    f.cluster("a", 4000);
    let (id, _) = f.submit("web", 1000);
    running_on(&mut f, &id, "a");
    f.cluster("b", 4000);
    // "a" falls silent past the timeout: the job moves to "b" and runs there
    let config = f.state.config.clone();
    let silence = config.aggregate_interval * config.missed_aggregates;
    f.clock.advance_ms(silence.as_millis() as u64 + 1);
    let mut fx = Fx::default();
    f.state.on_aggregate("b", aggregate(4000), &mut fx);
    f.state.check_clusters(&mut fx);
    f.clock
        .advance_ms(config.cluster_timeout.as_millis() as u64);
    f.state.on_aggregate("b", aggregate(4000), &mut fx);
    f.state.check_clusters(&mut fx);
    assert_eq!(f.job(&id).at.cluster.as_deref(), Some("b"));
    let job = f.job(&id).id.clone();
    f.state
        .on_instance_event("b", running_event(&job, 1), &mut Fx::default());
    // "a" is back and still runs the old copy: the newer placement wins
    let mut fx = Fx::default();
    f.state
        .on_sync("a", resync_reply(&[running_event(&job, 0)]), &mut fx);
    assert_eq!(f.job(&id).at.cluster.as_deref(), Some("b"));
    assert!(fx
        .commands
        .iter()
        .any(|(c, e, _)| c == "a" && matches!(e.body, Message::Terminate(_))));
    assert!(
        !fx.commands.iter().any(|(c, _, _)| c == "b"),
        "the new placement is left alone"
    );
}

#[test]
fn a_cluster_back_with_a_job_the_root_gave_up_on_is_given_it_back() {
    let mut f = fixture();
    f.cluster("a", 4000);
    let mut fx = Fx::default();
    f.state.cluster_lost("a", "link closed", &mut fx);
    let (id, _) = f.submit("web", 1000);
    assert_eq!(f.job(&id).lifecycle.state(), JobState::NotDeployable);
    // it kept running a copy from before (its records came back, the root's did not)
    let job = f.job(&id).id.clone();
    let mut fx = Fx::default();
    f.state
        .on_sync("a", resync_reply(&[running_event(&job, 0)]), &mut fx);
    assert_eq!(f.job(&id).at.cluster.as_deref(), Some("a"));
    assert_eq!(f.job(&id).lifecycle.state(), JobState::Running);
    assert!(!fx
        .commands
        .iter()
        .any(|(_, e, _)| matches!(e.body, Message::Terminate(_))));
}

// Deploys the root sent that a cluster's aggregate does not count yet (`sent.rs`).

impl Fixture {
    /// What the root offers one more job on `cluster`, in CPU millis.
    fn offer(&self, cluster: &str) -> u64 {
        let now = self.state.cx.now_ms();
        let record = &self.state.clusters[cluster];
        let offered = self.state.offer_of(record, now, &Labels::new()).unwrap();
        // the kept candidate set says the same as a set built anew
        let kept = self.state.offered.as_ref().and_then(|s| s.get(cluster));
        if let Some(kept) = kept {
            assert_eq!(kept.free, offered.free, "kept set and record disagree");
        }
        offered.free.cpu_millis
    }

    /// An aggregate from `cluster`: `largest` and `free` CPU millis, counting the root's
    /// deploys up to `seen`.
    fn aggregate_from(&mut self, cluster: &str, largest: u64, free: u64, seen: Option<u64>) {
        let mut agg = aggregate(largest);
        agg.free.cpu_millis = free;
        agg.deploys_seen = seen;
        let mut fx = Fx::default();
        self.state.on_aggregate(cluster, agg, &mut fx);
    }
}

/// The numbers of the deploys in `fx`, in order.
fn deploy_seqs(fx: &Fx) -> Vec<u64> {
    fx.commands
        .iter()
        .filter_map(|(_, e, _)| match &e.body {
            Message::Deploy(d) => Some(d.seq),
            _ => None,
        })
        .collect()
}

#[test]
fn a_cluster_offers_its_emptiest_node_but_no_more_than_its_free_total_less_what_was_sent() {
    let mut agg = aggregate(4000);
    agg.free.cpu_millis = 10_000;
    let sent = |cpu_millis| Resources {
        cpu_millis,
        ..Resources::ZERO
    };
    // nothing sent: its emptiest node
    assert_eq!(sent::offer(&agg, &Resources::ZERO).cpu_millis, 4000);
    // 5 cores sent: 5 left in all, still a node of 4 (the aggregate cannot say which nodes
    // the deploys land on)
    assert_eq!(sent::offer(&agg, &sent(5000)).cpu_millis, 4000);
    // 7.5 cores sent: 2.5 left in all
    assert_eq!(sent::offer(&agg, &sent(7500)).cpu_millis, 2500);
    // more sent than it had: nothing, not an underflow
    assert_eq!(sent::offer(&agg, &sent(12_000)).cpu_millis, 0);
    // every amount on its own: memory sent takes memory, not CPU
    let memory = Resources {
        memory_bytes: 3 * GIB,
        ..Resources::ZERO
    };
    let offer = sent::offer(&agg, &memory);
    assert_eq!((offer.cpu_millis, offer.memory_bytes), (4000, GIB));
    // a deploy of a part asks for each replica it carries
    let mut spec = JobSpec::minimal("web", "fake:run", "native", sent(500));
    spec.replicas = 3;
    assert_eq!(sent::need_of(&spec), sent(1500));
}

#[test]
fn deploys_sent_are_held_against_the_offer_until_an_aggregate_counts_them() {
    let mut f = fixture();
    f.cluster("a", 4000);
    assert_eq!(f.offer("a"), 4000);
    let (_, fx1) = f.submit("one", 1000);
    let (_, fx2) = f.submit("two", 1000);
    let (_, fx3) = f.submit("three", 1000);
    let seqs: Vec<u64> = [&fx1, &fx2, &fx3]
        .iter()
        .flat_map(|fx| deploy_seqs(fx))
        .collect();
    assert_eq!(
        seqs,
        [1, 2, 3],
        "the root numbers its deploys in the order sent"
    );
    assert_eq!(f.offer("a"), 1000);
    // a fourth fits; a fifth would not: refused by the root, never sent to be refused
    let (_, fx4) = f.submit("four", 1000);
    assert_eq!(deploys(&fx4), ["a"]);
    let (five, fx5) = f.submit("five", 1000);
    assert!(deploys(&fx5).is_empty());
    assert_eq!(f.job(&five).lifecycle.state(), JobState::NotDeployable);
    // an aggregate summed after the first deploy only: three still held
    f.aggregate_from("a", 3000, 3000, Some(1));
    assert_eq!(f.offer("a"), 0);
    // one summed after all four: the cluster's own figures
    f.aggregate_from("a", 0, 0, Some(4));
    assert_eq!(f.offer("a"), 0);
    // and its nodes freed since: all of it offered again, nothing held
    f.aggregate_from("a", 4000, 4000, Some(4));
    assert_eq!(f.offer("a"), 4000);
    assert!(f.state.sent.is_empty());
}

#[test]
fn a_refused_deploy_gives_back_what_it_held() {
    let mut f = fixture();
    f.cluster("a", 4000);
    let (id, _) = f.submit("web", 3000);
    assert_eq!(f.offer("a"), 1000);
    let job = f.job(&id).id.clone();
    let mut fx = Fx::default();
    f.state
        .on_deploy_outcome(&job, "a", nack("capacity changed"), &mut fx);
    // the cluster took none of it: its offer is whole again
    assert_eq!(f.offer("a"), 4000);
    // a deploy taken stays held: the aggregate on its way may be from before it
    let (other, _) = f.submit("other", 3000);
    let job = f.job(&other).id.clone();
    f.state
        .on_deploy_outcome(&job, "a", Ok(CommandOutcome::Acked), &mut fx);
    assert_eq!(f.offer("a"), 1000);
}

#[test]
fn an_aggregate_that_does_not_say_what_it_counts_is_taken_as_counting_everything() {
    let mut f = fixture();
    f.cluster("a", 4000);
    f.submit("web", 3000);
    assert_eq!(f.offer("a"), 1000);
    // an older cluster: no number; the root goes by its figures as it did before
    f.aggregate_from("a", 4000, 4000, None);
    assert_eq!(f.offer("a"), 4000);
}

#[test]
fn a_deploy_sent_again_is_held_once_and_a_lost_cluster_holds_nothing() {
    let mut f = fixture();
    f.cluster("a", 4000);
    let (id, _) = f.submit("web", 1000);
    assert_eq!(f.offer("a"), 3000);
    // the same job's deploy built again (a re-sync gives it back): still one core held
    let command = f.state.deploy_command(&id, "a").unwrap();
    let Message::Deploy(deploy) = &command.1.body else {
        panic!("not a deploy");
    };
    assert_eq!(deploy.seq, 2);
    assert_eq!(f.offer("a"), 3000);
    // an aggregate summed before the deploy sent again: still held
    f.aggregate_from("a", 4000, 4000, Some(1));
    assert_eq!(f.offer("a"), 3000);
    let mut fx = Fx::default();
    f.state.cluster_lost("a", "cut off", &mut fx);
    assert!(f.state.sent.is_empty());
}

#[test]
fn a_deploy_no_aggregate_counts_is_let_go_after_the_clusters_silence_limit() {
    let mut f = fixture();
    f.cluster("a", 4000);
    f.submit("web", 3000);
    // aggregates keep coming from before it (a cluster restarted and numbers nothing yet)
    f.clock.advance_ms(2000);
    f.aggregate_from("a", 4000, 4000, Some(0));
    assert_eq!(f.offer("a"), 1000);
    // three intervals on (the silence that makes a cluster INACTIVE): let go
    f.clock.advance_ms(1000);
    f.aggregate_from("a", 4000, 4000, Some(0));
    assert_eq!(f.offer("a"), 4000);
}

#[test]
fn what_is_held_goes_by_deploy_number_by_job_and_by_age() {
    let cpu = |cpu_millis| Resources {
        cpu_millis,
        ..Resources::ZERO
    };
    let job = |name: &str| JobId::new(name).unwrap();
    let mut sent = sent::Sent::default();
    sent.add(1, &job("a"), cpu(100), 0);
    sent.add(2, &job("b"), cpu(200), 10);
    sent.add(3, &job("c"), cpu(400), 20);
    assert_eq!(sent.total(), cpu(700));
    // a refusal lets go of one job's, wherever it is
    assert!(sent.release("b"));
    assert!(!sent.release("b"));
    assert_eq!(sent.total(), cpu(500));
    // sent again: held once, under its new number
    sent.add(4, &job("a"), cpu(100), 30);
    assert_eq!(sent.total(), cpu(500));
    // an aggregate counting up to 3: only the deploy sent again is left
    sent.counted(Some(3), 40, 1000);
    assert_eq!(sent.total(), cpu(100));
    // none counted, but it is old now
    sent.counted(Some(3), 1030, 1000);
    assert!(sent.is_empty());
    assert_eq!(sent.total(), Resources::ZERO);
}

#[test]
fn a_resync_naming_ended_instances_before_their_replacement_keeps_the_job_running() {
    let mut f = fixture();
    f.cluster("a", 4000);
    let (id, _) = f.submit("web", 1000);
    running_on(&mut f, &id, "a");
    // the instance failed and was replaced (the replacement first, as the cluster tells it)
    let job = f.job(&id).id.clone();
    let failed = InstanceEvent {
        state: InstanceState::Failed,
        reason: "exited with code 1; restart policy never (n1)".into(),
        ..running_event(&job, 0)
    };
    let mut fx = Fx::default();
    f.state
        .on_instance_event("a", running_event(&job, 1), &mut fx);
    f.state.on_instance_event("a", failed.clone(), &mut fx);
    assert_eq!(f.job(&id).lifecycle.state(), JobState::Running);
    // while the root was away, the replacement was lost with its node and stopped when the
    // node came back, and its own replacement runs; the re-sync answer lists them in record
    // order, the ended ones first
    let stopped = InstanceEvent {
        state: InstanceState::Terminated,
        ..running_event(&job, 1)
    };
    let reply = resync_reply(&[failed, stopped, running_event(&job, 2)]);
    f.state.on_sync("a", reply, &mut fx);
    assert_eq!(f.job(&id).lifecycle.state(), JobState::Running);
    let states: Vec<InstanceState> = f
        .job(&id)
        .instances
        .iter()
        .map(|i| i.lifecycle.state())
        .collect();
    assert_eq!(
        states,
        [
            InstanceState::Failed,
            InstanceState::Terminated,
            InstanceState::Running
        ]
    );
}

#[test]
fn the_end_of_an_instance_of_an_earlier_placement_does_not_fail_the_job_placed_anew() {
    // seed 37 with migrations: "a" failed the job (its instance gave up, no node took it)
    // while its disk was full, so the news was held; a re-sync found the job gone from "a"
    // (a failed job is not listed), the root wrote its instance off and placed it on "a"
    // again; then the held failure arrived
    let mut f = fixture();
    f.cluster("a", 4000);
    let (id, _) = f.submit("web", 1000);
    let old = running_on(&mut f, &id, "a");
    let job = f.job(&id).id.clone();
    let mut fx = Fx::default();
    f.clock.advance_ms(1_000);
    f.state.on_aggregate("a", aggregate(4000), &mut fx);
    f.state.on_sync("a", resync_reply(&[]), &mut fx);
    assert_eq!(f.job(&id).lifecycle.state(), JobState::ScheduledCluster);
    assert_eq!(f.job(&id).at.cluster.as_deref(), Some("a"));
    let failed = InstanceEvent {
        state: InstanceState::Failed,
        reason: "exited with code 1; restart limit 0 reached on this node (n1)".into(),
        ..running_event(&job, 0)
    };
    f.clock.advance_ms(200);
    f.state.on_instance_event("a", failed, &mut fx);
    assert_ne!(f.job(&id).lifecycle.state(), JobState::Failed);
    let written_off = f.job(&id).instances.iter().find(|i| i.id == old);
    assert_eq!(
        written_off.map(|i| i.lifecycle.state()),
        Some(InstanceState::Lost)
    );
    // the new placement's instance runs: so does the job
    f.state
        .on_instance_event("a", running_event(&job, 1), &mut fx);
    assert_eq!(f.job(&id).lifecycle.state(), JobState::Running);
}

#[test]
fn a_move_asked_before_the_root_restarted_that_its_cluster_never_began_is_abandoned() {
    // seed 226 with migrations: the migrate was on its way to a cut-off cluster when the
    // root crashed; restarted from its records, the root waited for the move for good
    let mut f = fixture();
    f.cluster("a", 4000);
    let (id, _) = f.submit("web", 1000);
    running_on(&mut f, &id, "a");
    let job = f.job(&id).id.clone();
    let mut fx = Fx::default();
    f.state
        .migrate(&id, MigrateTarget::Anywhere, None, &mut fx)
        .unwrap();
    assert_eq!(f.job(&id).lifecycle.state(), JobState::Migrating);
    // a re-sync of the same root (the migrate may still be on its way): the move waits
    f.clock.advance_ms(1_000);
    let mut fx = Fx::default();
    f.state
        .on_sync("a", resync_reply(&[running_event(&job, 0)]), &mut fx);
    assert_eq!(f.job(&id).lifecycle.state(), JobState::Migrating);
    // the root restarts (its commands in flight are gone); the cluster reports only the
    // old instance
    f.clock.advance_ms(1_000);
    f.state.started_ms = f.state.cx.now_ms();
    let mut fx = Fx::default();
    f.state
        .on_sync("a", resync_reply(&[running_event(&job, 0)]), &mut fx);
    assert_eq!(f.job(&id).lifecycle.state(), JobState::Running);
    assert!(f.job(&id).migration.is_none());
    assert!(fx.persist.contains(&job_key(&id)));
}

#[test]
fn a_move_to_another_cluster_names_its_instances_after_that_cluster() {
    // seed 403 with migrations: "a" had replaced the job's instance (web-…-1) and the root
    // had not heard of it yet; the move's deploy numbered the new instance 1 as well, and
    // the two clusters' events for one id mixed in the root's record (it ended FAILED)
    let mut f = fixture();
    f.cluster("a", 4000);
    let (id, _) = f.submit("web", 1000);
    running_on(&mut f, &id, "a");
    f.cluster("b", 4000);
    let job = f.job(&id).id.clone();
    let mut fx = Fx::default();
    f.state
        .migrate(&id, MigrateTarget::Cluster("b".into()), None, &mut fx)
        .unwrap();
    let prefixes: Vec<(String, Option<String>)> = fx
        .commands
        .iter()
        .filter_map(|(c, e, _)| match &e.body {
            Message::Deploy(d) => Some((c.clone(), d.instance_prefix.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(prefixes, [("b".to_string(), Some(part_prefix(&job, "b")))]);
}

#[test]
fn a_deploy_taken_after_the_job_left_the_cluster_is_answered_with_a_terminate() {
    let mut f = fixture();
    f.cluster("a", 4000);
    let (id, _) = f.submit("web", 1000);
    let job = f.job(&id).id.clone();
    // "a" placed it but could not store it, and restarted without it before it acked the
    // deploy (the root keeps re-sending it); its re-sync moves the job to "b"
    let pending = InstanceEvent {
        state: InstanceState::Pending,
        ..running_event(&job, 0)
    };
    f.state.on_instance_event("a", pending, &mut Fx::default());
    f.cluster("b", 4000);
    let mut fx = Fx::default();
    f.state.on_aggregate("a", aggregate(0), &mut fx);
    f.state.on_sync("a", resync_reply(&[]), &mut fx);
    assert_eq!(f.job(&id).at.cluster.as_deref(), Some("b"));
    // "a" is back and takes the re-sent deploy: the newer placement wins
    let mut fx = Fx::default();
    let tag = Tag::Deploy {
        job: job.clone(),
        cluster: "a".into(),
    };
    f.state.on_outcome(tag, Ok(CommandOutcome::Acked), &mut fx);
    let sent: Vec<(&str, &str)> = fx
        .commands
        .iter()
        .map(|(c, e, _)| (c.as_str(), e.kind()))
        .collect();
    assert_eq!(sent, [("a", "terminate")]);
    assert_eq!(f.job(&id).at.cluster.as_deref(), Some("b"));
}
