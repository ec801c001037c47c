//! The cluster's decisions by value: given this state, this input at this time → this state
//! and these effects, on a manual clock with seeded ids; no transport, store or task.

use super::*;
use edgeio_core::clock::{ManualClock, SeededIds};
use edgeio_core::job::JobSpec;
use edgeio_core::model::{Arch, Candidate, Capabilities, RuntimeInfo};
use edgeio_core::testing::SimpleScheduler;
use edgeio_core::wire::{ChannelKind, ChannelSettings, InstanceReport, PeerRole};

const GIB: u64 = 1 << 30;

struct Fixture {
    state: ClusterState,
    clock: Arc<ManualClock>,
}

fn fixture() -> Fixture {
    let clock = Arc::new(ManualClock::new(1_000_000));
    let cx = Context::new(clock.clone(), Arc::new(SeededIds::new(2)));
    let config = ClusterConfig {
        id: "edge".into(),
        channel: ChannelSettings {
            kind: ChannelKind::Ws,
            broker: None,
            topics: None,
            status_interval_ms: 1000,
            max_message_bytes: 1 << 20,
        },
        missed_heartbeats: 3,
        aggregate_interval: Duration::from_secs(1),
        location: None,
        labels: Labels::new(),
        grace: Duration::from_secs(1),
        reliable: ReliableConfig::default(),
    };
    let state = ClusterState::from_records(
        cx,
        config,
        Arc::new(SimpleScheduler),
        Vec::new(),
        Vec::new(),
    );
    Fixture { state, clock }
}

fn capabilities(cores: u32) -> Capabilities {
    Capabilities {
        arch: Arch::Amd64,
        cores,
        memory_bytes: 4 * GIB,
        disk_bytes: 10 * GIB,
        gpus: 0,
        runtimes: vec![RuntimeInfo {
            kind: "native".into(),
            version: "1".into(),
        }],
        labels: Labels::new(),
        location: None,
    }
}

fn spec(name: &str, cpu_millis: u64, replicas: u32) -> JobSpec {
    let mut spec = JobSpec::minimal(
        name,
        "fake:run",
        "native",
        Resources {
            cpu_millis,
            ..Resources::ZERO
        },
    );
    spec.replicas = replicas;
    spec
}

impl Fixture {
    fn node(&mut self, name: &str, cores: u32) {
        let mut fx = Fx::default();
        let request = RegisterRequest {
            role: PeerRole::Node,
            name: name.into(),
            previous_id: None,
            capabilities: Some(capabilities(cores)),
            location: None,
            labels: Labels::new(),
            auth: None,
        };
        let reply = self.state.register(request, &mut fx).unwrap();
        assert_eq!(reply.id, name);
    }

    /// A status from `node` saying it runs `running` (job, instance) pairs.
    fn status(&mut self, node: &str, running: &[(&JobId, &InstanceId)]) -> Fx {
        let total = self.state.nodes[node].total;
        self.status_free(node, total, running)
    }

    /// As [`Fixture::status`], with `free` as the worker's figure.
    fn status_free(
        &mut self,
        node: &str,
        free: Resources,
        running: &[(&JobId, &InstanceId)],
    ) -> Fx {
        let total = self.state.nodes[node].total;
        let status = NodeStatus {
            free,
            total,
            instances: running
                .iter()
                .map(|(job, instance)| InstanceReport {
                    instance: (*instance).clone(),
                    job: (*job).clone(),
                    state: InstanceState::Running,
                })
                .collect(),
            usage: None,
        };
        let mut fx = Fx::default();
        self.state.on_status(node, status, &mut fx);
        fx
    }

    fn deploy(&mut self, spec: JobSpec) -> (Envelope, Fx) {
        let job = JobId::new(format!("{}-1", spec.name)).unwrap();
        let command = Envelope::new_in(
            &self.state.cx,
            "root",
            Message::Deploy(Box::new(Deploy {
                job,
                spec,
                instance: None,
                first_instance: 0,
                instance_prefix: None,
                seq: 0,
            })),
        );
        let Message::Deploy(deploy) = &command.body else {
            unreachable!()
        };
        let mut fx = Fx::default();
        let answer = self.state.on_deploy(&command, deploy, &mut fx);
        (answer, fx)
    }

    fn instance_states(&self, job: &str) -> Vec<(String, InstanceState)> {
        self.state.jobs[job]
            .instances
            .iter()
            .map(|i| (i.node.clone().unwrap_or_default(), i.lifecycle.state()))
            .collect()
    }
}

/// What `node` reports of `instance` of `job`: `state`, its exit code and why.
fn reported(
    job: JobId,
    instance: InstanceId,
    node: impl Into<String>,
    state: InstanceState,
    exit_code: Option<i32>,
    reason: &str,
) -> InstanceEvent {
    InstanceEvent {
        job,
        instance,
        node: node.into(),
        state,
        exit_code,
        reason: reason.into(),
        unschedulable: None,
    }
}

/// The nodes the effects command to start an instance, in order.
fn starts(fx: &Fx) -> Vec<String> {
    fx.commands
        .iter()
        .filter(|(_, e, _)| matches!(e.body, Message::Deploy(_)))
        .map(|(n, _, _)| n.clone())
        .collect()
}

#[test]
fn a_deploy_is_acked_and_each_replica_goes_to_a_node_as_a_pending_instance() {
    let mut f = fixture();
    f.node("n1", 4);
    f.node("n2", 4);
    let (answer, fx) = f.deploy(spec("web", 1000, 2));
    assert!(matches!(answer.body, Message::Ack(_)), "{answer:?}");
    assert_eq!(starts(&fx).len(), 2);
    let states = f.instance_states("web-1");
    assert!(states.iter().all(|(_, s)| *s == InstanceState::Pending));
    assert_eq!(
        f.state.jobs["web-1"].lifecycle.state(),
        JobState::ScheduledNode
    );
    // the root hears of each instance at once
    assert_eq!(
        fx.send_up
            .iter()
            .filter(|e| matches!(e.body, Message::InstanceEvent(_)))
            .count(),
        2
    );
}

#[test]
fn a_deploy_no_node_can_hold_is_nacked_with_the_schedulers_reasons_and_nothing_starts() {
    let mut f = fixture();
    f.node("n1", 1);
    let (answer, fx) = f.deploy(spec("big", 8000, 1));
    let Message::Nack(nack) = &answer.body else {
        panic!("expected a nack, got {answer:?}");
    };
    let u = nack
        .unschedulable
        .as_ref()
        .expect("the scheduler's explanation");
    assert_eq!(u.candidates, 1);
    assert!(starts(&fx).is_empty());
    assert!(!f.state.jobs.contains_key("big-1"), "nothing half-created");
}

#[test]
fn a_node_silent_for_its_missed_heartbeats_is_lost_and_its_instance_replaced_elsewhere() {
    let mut f = fixture();
    f.node("n1", 4);
    f.node("n2", 4);
    let (_, fx) = f.deploy(spec("web", 1000, 1));
    let first = starts(&fx)[0].clone();
    let other = if first == "n1" { "n2" } else { "n1" };
    let job = JobId::new("web-1").unwrap();
    let instance = f.state.jobs["web-1"].instances[0].id.clone();
    f.status(&first, &[(&job, &instance)]);
    assert_eq!(f.instance_states("web-1")[0].1, InstanceState::Running);
    // three intervals and a bit later, only the other node has spoken
    f.clock.advance_ms(3_001);
    f.status(other, &[]);
    let mut fx = Fx::default();
    f.state.check_heartbeats(&mut fx);
    assert_eq!(f.state.nodes[&first].lifecycle.state(), NodeState::Lost);
    assert_eq!(
        f.instance_states("web-1"),
        [
            (first.clone(), InstanceState::Lost),
            (other.to_string(), InstanceState::Pending)
        ]
    );
    assert_eq!(starts(&fx), [other]);
}

#[test]
fn a_lost_node_whose_instance_no_other_node_can_take_escalates_to_the_root() {
    let mut f = fixture();
    f.node("n1", 4);
    let (_, _) = f.deploy(spec("web", 1000, 1));
    let mut fx = Fx::default();
    f.state.node_lost("n1", "its will arrived", &mut fx);
    let escalated = fx.send_up.iter().any(|e| {
        matches!(&e.body, Message::InstanceEvent(ev)
            if ev.state == InstanceState::Lost && ev.unschedulable.is_some())
    });
    assert!(escalated, "{:?}", fx.send_up);
    assert!(starts(&fx).is_empty());
}

#[test]
fn a_failed_instance_is_relocated_to_another_node_never_one_it_failed_on() {
    let mut f = fixture();
    f.node("n1", 4);
    f.node("n2", 4);
    let (_, fx) = f.deploy(spec("web", 1000, 1));
    let first = starts(&fx)[0].clone();
    let instance = f.state.jobs["web-1"].instances[0].id.clone();
    let mut fx = Fx::default();
    let event = |state| {
        reported(
            JobId::new("web-1").unwrap(),
            instance.clone(),
            first.clone(),
            state,
            Some(1),
            "restart limit reached",
        )
    };
    f.state
        .on_instance_event(&first, event(InstanceState::Running), &mut fx);
    f.state
        .on_instance_event(&first, event(InstanceState::Failed), &mut fx);
    let states = f.instance_states("web-1");
    assert_eq!(states[0], (first.clone(), InstanceState::Failed));
    assert_eq!(states[1].1, InstanceState::Pending);
    assert_ne!(states[1].0, first);
}

#[test]
fn an_event_after_termination_is_refused_and_counted() {
    let mut f = fixture();
    f.node("n1", 4);
    f.deploy(spec("web", 1000, 1));
    let instance = f.state.jobs["web-1"].instances[0].id.clone();
    let event = |state| {
        reported(
            JobId::new("web-1").unwrap(),
            instance.clone(),
            "n1",
            state,
            None,
            "",
        )
    };
    let mut fx = Fx::default();
    f.state
        .on_instance_event("n1", event(InstanceState::Terminated), &mut fx);
    let before = f.state.refusals.count();
    f.state
        .on_instance_event("n1", event(InstanceState::Running), &mut fx);
    assert_eq!(f.state.refusals.count(), before + 1);
    assert_eq!(f.instance_states("web-1")[0].1, InstanceState::Terminated);
}

#[test]
fn a_status_that_skipped_states_is_caught_up_through_the_declared_path() {
    let mut f = fixture();
    f.node("n1", 4);
    f.deploy(spec("web", 1000, 1));
    let job = JobId::new("web-1").unwrap();
    let instance = f.state.jobs["web-1"].instances[0].id.clone();
    f.status("n1", &[(&job, &instance)]);
    let states: Vec<InstanceState> = f.state.jobs["web-1"].instances[0]
        .lifecycle
        .history()
        .iter()
        .map(|h| h.state)
        .collect();
    assert_eq!(
        states,
        [
            InstanceState::Pending,
            InstanceState::Starting,
            InstanceState::Running
        ]
    );
    assert_eq!(f.state.jobs["web-1"].lifecycle.state(), JobState::Running);
}

#[test]
fn an_instance_a_returning_node_starts_again_after_it_was_replaced_is_stopped() {
    let mut f = fixture();
    f.node("n1", 4);
    f.node("n2", 4);
    let (_, fx) = f.deploy(spec("web", 1000, 1));
    let first = starts(&fx)[0].clone();
    let old = f.state.jobs["web-1"].instances[0].id.clone();
    let mut fx = Fx::default();
    f.state.node_lost(&first, "its will arrived", &mut fx);
    assert_eq!(f.instance_states("web-1")[1].1, InstanceState::Pending);
    // the deploy re-sent to the node before it was lost reaches it once it is back
    let mut fx = Fx::default();
    let event = reported(
        JobId::new("web-1").unwrap(),
        old.clone(),
        first.clone(),
        InstanceState::Running,
        None,
        "",
    );
    f.state.on_instance_event(&first, event, &mut fx);
    assert_eq!(f.instance_states("web-1")[0].1, InstanceState::Terminating);
    assert!(fx.commands.iter().any(|(n, e, _)| n == &first
        && matches!(&e.body, Message::Terminate(t) if t.instance.as_ref() == Some(&old))));
}

#[test]
fn a_node_lost_twice_does_not_replace_its_instance_twice() {
    let mut f = fixture();
    f.node("n1", 4);
    f.node("n2", 4);
    f.node("n3", 4);
    let (_, fx) = f.deploy(spec("web", 1000, 1));
    let first = starts(&fx)[0].clone();
    let mut fx = Fx::default();
    f.state.node_lost(&first, "its will arrived", &mut fx);
    assert_eq!(starts(&fx).len(), 1);
    // it registers again and is lost again before it reported anything
    let request = RegisterRequest {
        role: PeerRole::Node,
        name: first.clone(),
        previous_id: Some(first.clone()),
        capabilities: Some(capabilities(4)),
        location: None,
        labels: Labels::new(),
        auth: None,
    };
    f.state.register(request, &mut Fx::default()).unwrap();
    let mut fx = Fx::default();
    f.state.node_lost(&first, "its will arrived again", &mut fx);
    assert!(starts(&fx).is_empty(), "replaced once is enough");
    assert_eq!(f.instance_states("web-1").len(), 2);
}

#[test]
fn a_running_instance_statuses_leave_out_for_three_intervals_is_lost_and_replaced() {
    let mut f = fixture();
    f.node("n1", 4);
    f.node("n2", 4);
    let (_, fx) = f.deploy(spec("web", 1000, 1));
    let first = starts(&fx)[0].clone();
    let job = JobId::new("web-1").unwrap();
    let instance = f.state.jobs["web-1"].instances[0].id.clone();
    f.status(&first, &[(&job, &instance)]);
    // a worker that just restarted reports before it has adopted what survived: not yet
    assert!(starts(&f.status(&first, &[])).is_empty());
    f.clock.advance_ms(1_000);
    f.status(&first, &[(&job, &instance)]);
    f.clock.advance_ms(3_000);
    assert!(starts(&f.status(&first, &[])).is_empty(), "missing anew");
    assert_eq!(f.instance_states("web-1")[0].1, InstanceState::Running);
    // the node restarted without it (its will went with a restart of this cluster): it
    // stays missing three intervals
    f.clock.advance_ms(3_000);
    let fx = f.status(&first, &[]);
    let states = f.instance_states("web-1");
    assert_eq!(states[0], (first.clone(), InstanceState::Lost));
    assert_eq!(states[1].1, InstanceState::Pending);
    assert_eq!(starts(&fx).len(), 1);
}

#[test]
fn a_pending_instance_its_node_never_got_is_deployed_again_after_three_intervals() {
    let mut f = fixture();
    f.node("n1", 4);
    let (_, fx) = f.deploy(spec("web", 1000, 1));
    assert_eq!(starts(&fx), ["n1"]);
    // the deploy went with a restart of this cluster: the node reports nothing
    assert!(starts(&f.status("n1", &[])).is_empty(), "too early to tell");
    f.clock.advance_ms(3_000);
    assert_eq!(starts(&f.status("n1", &[])), ["n1"]);
    // and not again at once
    f.clock.advance_ms(1_000);
    assert!(starts(&f.status("n1", &[])).is_empty());
}

fn cpu(cpu_millis: u64) -> Resources {
    Resources {
        cpu_millis,
        memory_bytes: 4 * GIB,
        disk_bytes: 10 * GIB,
        gpus: 0,
    }
}

impl Fixture {
    /// The free CPU of `node` as the scheduler sees it, and as its record says (they agree).
    fn free_cpu(&self, node: &str) -> u64 {
        let seen = self.state.candidates.get(node).unwrap().free.cpu_millis;
        assert_eq!(
            seen, self.state.nodes[node].free.cpu_millis,
            "set and record agree"
        );
        seen
    }

    fn instances_on(&self, job: &str, node: &str) -> Vec<InstanceId> {
        self.state.jobs[job]
            .instances
            .iter()
            .filter(|i| i.node.as_deref() == Some(node) && !i.is_over())
            .map(|i| i.id.clone())
            .collect()
    }
}

#[test]
fn a_placement_reserves_on_the_one_set_until_the_node_reports_the_instance() {
    let mut f = fixture();
    f.node("n1", 4);
    f.node("n2", 4);
    let (answer, _) = f.deploy(spec("web", 1000, 1));
    assert!(matches!(answer.body, Message::Ack(_)), "{answer:?}");
    assert_eq!(f.free_cpu("n1"), 3000);
    assert_eq!(f.free_cpu("n2"), 4000);
    let job = f.state.jobs["web-1"].id.clone();
    let placed = f.instances_on("web-1", "n1");
    // a status sent before the deploy arrived does not show it: it stays reserved
    f.status_free("n1", cpu(4000), &[]);
    assert_eq!(f.free_cpu("n1"), 3000);
    assert_eq!(f.state.unreported["n1"].len(), 1);
    // once reported, the worker's figure counts it and the cluster's reservation ends
    f.status_free("n1", cpu(3000), &[(&job, &placed[0])]);
    assert_eq!(f.free_cpu("n1"), 3000);
    assert!(f.state.unreported["n1"].is_empty());
    // a status of another node touches that node's entry only
    f.status_free("n2", cpu(2500), &[]);
    assert_eq!(f.free_cpu("n2"), 2500);
    assert_eq!(f.free_cpu("n1"), 3000);
}

#[test]
fn a_refused_multi_replica_deploy_leaves_no_reservation_behind() {
    let mut f = fixture();
    f.node("n1", 2);
    f.node("n2", 1);
    let before: Vec<Candidate> = f.state.candidates.iter().cloned().collect();
    // two fit (n1 twice or n1 and n2), the third does not
    let (answer, fx) = f.deploy(spec("web", 1000, 4));
    let Message::Nack(nack) = &answer.body else {
        panic!("expected a nack, got {answer:?}");
    };
    assert_eq!(nack.unschedulable.as_ref().unwrap().fits, 3);
    assert!(starts(&fx).is_empty());
    let after: Vec<Candidate> = f.state.candidates.iter().cloned().collect();
    assert_eq!(after, before, "free resources and jobs as they were");
    assert_eq!(f.free_cpu("n1"), 2000);
    assert_eq!(f.free_cpu("n2"), 1000);
    assert!(f.state.unreported.values().all(BTreeMap::is_empty));
    // and what fits is placed afterwards on the same set
    let (answer, fx) = f.deploy(spec("api", 1000, 3));
    assert!(matches!(answer.body, Message::Ack(_)), "{answer:?}");
    assert_eq!(starts(&fx).len(), 3);
    assert_eq!(f.free_cpu("n1") + f.free_cpu("n2"), 0);
}

#[test]
fn a_refused_scale_up_leaves_no_reservation_and_an_accepted_one_reserves() {
    let mut f = fixture();
    f.node("n1", 2);
    let (answer, _) = f.deploy(spec("web", 1000, 1));
    assert!(matches!(answer.body, Message::Ack(_)));
    let job = f.state.jobs["web-1"].id.clone();
    let scale = |replicas| {
        Envelope::new_in(
            &Context::new(Arc::new(ManualClock::new(1)), Arc::new(SeededIds::new(9))),
            "root",
            Message::Scale(Scale {
                job: job.clone(),
                replicas,
            }),
        )
    };
    let command = scale(3);
    let Message::Scale(s) = &command.body else {
        unreachable!()
    };
    let answer = f.state.on_scale(&command, s, &mut Fx::default());
    assert!(matches!(answer.body, Message::Nack(_)), "{answer:?}");
    assert_eq!(f.free_cpu("n1"), 1000);
    let command = scale(2);
    let Message::Scale(s) = &command.body else {
        unreachable!()
    };
    let answer = f.state.on_scale(&command, s, &mut Fx::default());
    assert!(matches!(answer.body, Message::Ack(_)), "{answer:?}");
    assert_eq!(f.free_cpu("n1"), 0);
    assert_eq!(f.state.unreported["n1"].len(), 2);
}

#[test]
fn an_instance_over_before_it_was_reported_is_not_reserved_any_more() {
    let mut f = fixture();
    f.node("n1", 2);
    let (answer, _) = f.deploy(spec("web", 1000, 2));
    assert!(matches!(answer.body, Message::Ack(_)));
    assert_eq!(f.free_cpu("n1"), 0);
    let job = f.state.jobs["web-1"].id.clone();
    let ids = f.instances_on("web-1", "n1");
    // the worker refuses one: it is FAILED and gives back what it reserved at once
    let refused = Ok(CommandOutcome::Nacked(ErrorBody {
        code: "invalid".into(),
        message: "no such image".into(),
    }));
    f.state
        .on_deploy_outcome(&job, &ids[0], refused, &mut Fx::default());
    assert_eq!(f.free_cpu("n1"), 1000);
    // the job is terminated before the node ever reported the other: its end gives back
    // what it reserved at once, not at the next status
    let command = Envelope::new_in(
        &f.state.cx,
        "root",
        Message::Terminate(Terminate {
            job: job.clone(),
            instance: None,
            grace_ms: 0,
        }),
    );
    let Message::Terminate(t) = &command.body else {
        unreachable!()
    };
    f.state.on_terminate(&command, t, &mut Fx::default());
    let mut event_fx = Fx::default();
    f.state.on_instance_event(
        "n1",
        reported(
            job.clone(),
            ids[1].clone(),
            "n1",
            InstanceState::Terminated,
            None,
            "removed",
        ),
        &mut event_fx,
    );
    assert_eq!(f.free_cpu("n1"), 2000);
    assert!(f.state.unreported["n1"].is_empty());
    f.status_free("n1", cpu(2000), &[]);
    assert_eq!(f.free_cpu("n1"), 2000);
    assert!(f.state.unreported["n1"].is_empty());
}

#[test]
fn a_status_keeps_the_jobs_a_node_runs_for_anti_affinity() {
    let mut f = fixture();
    f.node("n1", 4);
    let (answer, _) = f.deploy(spec("web", 1000, 1));
    assert!(matches!(answer.body, Message::Ack(_)));
    let job = f.state.jobs["web-1"].id.clone();
    let ids = f.instances_on("web-1", "n1");
    f.status_free("n1", cpu(3000), &[(&job, &ids[0])]);
    let names = &f.state.candidates.get("n1").unwrap().jobs;
    assert_eq!(names.iter().collect::<Vec<_>>(), ["web"]);
    // once it ended there, the next status drops the job from the node's entry
    let ended = reported(
        job.clone(),
        ids[0].clone(),
        "n1",
        InstanceState::Failed,
        Some(1),
        "restarts used up",
    );
    f.state.on_instance_event("n1", ended, &mut Fx::default());
    f.status_free("n1", cpu(4000), &[]);
    assert!(f.state.candidates.get("n1").unwrap().jobs.is_empty());
}

#[test]
fn a_migration_to_a_named_node_goes_through_the_pin_and_touches_no_other_node() {
    let mut f = fixture();
    f.node("n1", 4);
    f.node("n2", 4);
    f.node("n3", 4);
    let (answer, _) = f.deploy(spec("web", 1000, 1));
    assert!(matches!(answer.body, Message::Ack(_)));
    let job_id = f.state.jobs["web-1"].id.clone();
    let ids = f.instances_on("web-1", "n1");
    f.status_free("n1", cpu(3000), &[(&job_id, &ids[0])]);
    let job = f.state.jobs.get_mut("web-1").unwrap();
    job.instances[0]
        .lifecycle
        .reconcile(InstanceState::Running, 1_000_000, "runs")
        .unwrap();
    job.lifecycle
        .reconcile(JobState::Running, 1_000_000, "runs")
        .unwrap();
    let before: Vec<Candidate> = f.state.candidates.iter().cloned().collect();
    let migrate = |target| {
        Envelope::new_in(
            &Context::new(Arc::new(ManualClock::new(1)), Arc::new(SeededIds::new(9))),
            "root",
            Message::Migrate(Migrate {
                job: job_id.clone(),
                instance: Some(ids[0].clone()),
                target,
            }),
        )
    };
    let command = migrate(MigrateTarget::Node("n3".into()));
    let Message::Migrate(m) = &command.body else {
        unreachable!()
    };
    let mut fx = Fx::default();
    let answer = f.state.on_migrate(&command, m, &mut fx);
    assert!(matches!(answer.body, Message::Ack(_)), "{answer:?}");
    assert_eq!(starts(&fx), ["n3"]);
    assert_eq!(f.free_cpu("n3"), 3000);
    // n1 and n2 are untouched, and every node is still in the set
    assert_eq!(f.state.candidates.len(), 3);
    assert_eq!(
        f.state.candidates.get("n2"),
        before.iter().find(|c| c.id == "n2")
    );
}

#[test]
fn scaling_down_stops_the_newest_replicas_first() {
    let mut f = fixture();
    f.node("n1", 4);
    f.node("n2", 4);
    f.deploy(spec("web", 500, 3));
    let ids: Vec<InstanceId> = f.state.jobs["web-1"]
        .instances
        .iter()
        .map(|i| i.id.clone())
        .collect();
    let command = Envelope::new_in(
        &f.state.cx,
        "root",
        Message::Scale(Scale {
            job: JobId::new("web-1").unwrap(),
            replicas: 1,
        }),
    );
    let Message::Scale(scale) = &command.body else {
        unreachable!()
    };
    let mut fx = Fx::default();
    let answer = f.state.on_scale(&command, scale, &mut fx);
    assert!(matches!(answer.body, Message::Ack(_)), "{answer:?}");
    let stopped: Vec<InstanceId> = fx
        .commands
        .iter()
        .filter_map(|(_, e, _)| match &e.body {
            Message::Terminate(t) => t.instance.clone(),
            _ => None,
        })
        .collect();
    let mut newest = ids[1..].to_vec();
    newest.sort();
    let mut stopped_sorted = stopped.clone();
    stopped_sorted.sort();
    assert_eq!(stopped_sorted, newest, "the oldest stays");
}

#[test]
fn a_migration_starts_the_new_instance_and_stops_the_old_only_once_it_runs() {
    let mut f = fixture();
    f.node("n1", 4);
    f.node("n2", 4);
    let (_, fx) = f.deploy(spec("web", 1000, 1));
    let first = starts(&fx)[0].clone();
    let target = if first == "n1" { "n2" } else { "n1" };
    let old = f.state.jobs["web-1"].instances[0].id.clone();
    let job = JobId::new("web-1").unwrap();
    f.status(&first, &[(&job, &old)]);
    let command = Envelope::new_in(
        &f.state.cx,
        "root",
        Message::Migrate(Migrate {
            job: JobId::new("web-1").unwrap(),
            instance: None,
            target: MigrateTarget::Node(target.into()),
        }),
    );
    let Message::Migrate(m) = &command.body else {
        unreachable!()
    };
    let mut fx = Fx::default();
    let answer = f.state.on_migrate(&command, m, &mut fx);
    assert!(matches!(answer.body, Message::Ack(_)), "{answer:?}");
    assert_eq!(starts(&fx), [target]);
    assert!(
        !fx.commands
            .iter()
            .any(|(_, e, _)| matches!(e.body, Message::Terminate(_))),
        "make before break"
    );
    let new = f.state.jobs["web-1"].instances[1].id.clone();
    let mut fx = Fx::default();
    let event = reported(
        JobId::new("web-1").unwrap(),
        new,
        target,
        InstanceState::Running,
        None,
        "",
    );
    f.state.on_instance_event(target, event, &mut fx);
    assert!(fx.commands.iter().any(|(n, e, _)| n == &first
        && matches!(&e.body, Message::Terminate(t) if t.instance.as_ref() == Some(&old))));
}

#[test]
fn an_exited_instance_its_node_reports_running_again_was_restarted_and_is_kept() {
    let mut f = fixture();
    f.node("n1", 4);
    f.deploy(spec("web", 1000, 1));
    let job = JobId::new("web-1").unwrap();
    let instance = f.state.jobs["web-1"].instances[0].id.clone();
    f.status("n1", &[(&job, &instance)]);
    // it exited; the node restarted it, but its RESTARTING and STARTING events were lost
    // (this cluster restarted meanwhile from a store that has it EXITED)
    let exited = reported(
        job.clone(),
        instance.clone(),
        "n1",
        InstanceState::Exited,
        Some(1),
        "exited with code 1",
    );
    f.state.on_instance_event("n1", exited, &mut Fx::default());
    assert_eq!(
        f.instance_states("web-1"),
        [("n1".into(), InstanceState::Exited)]
    );
    let fx = f.status("n1", &[(&job, &instance)]);
    assert_eq!(
        f.instance_states("web-1"),
        [("n1".into(), InstanceState::Running)]
    );
    assert!(
        !fx.commands
            .iter()
            .any(|(_, e, _)| matches!(e.body, Message::Terminate(_))),
        "the restarted instance is not stopped"
    );
    assert_eq!(f.state.jobs["web-1"].lifecycle.state(), JobState::Running);
}

#[test]
fn an_instance_waiting_to_restart_on_a_lost_node_fails_and_is_relocated() {
    let mut f = fixture();
    f.node("n1", 4);
    f.deploy(spec("web", 1000, 1));
    f.node("n2", 4);
    let job = JobId::new("web-1").unwrap();
    let instance = f.state.jobs["web-1"].instances[0].id.clone();
    f.status("n1", &[(&job, &instance)]);
    // it exited with a failure (policy on-failure: n1 would restart it), and n1 is lost
    let exited = reported(
        job.clone(),
        instance.clone(),
        "n1",
        InstanceState::Exited,
        Some(1),
        "exited with code 1",
    );
    f.state.on_instance_event("n1", exited, &mut Fx::default());
    let mut fx = Fx::default();
    f.state.node_lost("n1", "will", &mut fx);
    assert_eq!(
        f.instance_states("web-1"),
        [
            ("n1".into(), InstanceState::Failed),
            ("n2".into(), InstanceState::Pending)
        ]
    );
    assert_eq!(starts(&fx), ["n2"]);
    assert_ne!(f.state.jobs["web-1"].lifecycle.state(), JobState::Failed);
}

#[test]
fn an_instance_done_on_a_lost_node_stays_exited() {
    let mut f = fixture();
    f.node("n1", 4);
    f.deploy(spec("web", 1000, 1));
    f.node("n2", 4);
    let job = JobId::new("web-1").unwrap();
    let instance = f.state.jobs["web-1"].instances[0].id.clone();
    f.status("n1", &[(&job, &instance)]);
    // a clean exit under on-failure: done
    let exited = InstanceEvent {
        job: job.clone(),
        instance,
        node: "n1".into(),
        state: InstanceState::Exited,
        exit_code: Some(0),
        reason: "exited with code 0".into(),
        unschedulable: None,
    };
    f.state.on_instance_event("n1", exited, &mut Fx::default());
    let mut fx = Fx::default();
    f.state.node_lost("n1", "will", &mut fx);
    assert_eq!(
        f.instance_states("web-1"),
        [("n1".into(), InstanceState::Exited)]
    );
    assert!(starts(&fx).is_empty());
}

#[test]
fn a_failed_instance_no_node_here_can_take_is_told_up_with_the_refusal() {
    let mut f = fixture();
    f.node("n1", 4);
    f.deploy(spec("web", 1000, 1));
    f.node("n2", 4);
    let job = JobId::new("web-1").unwrap();
    let instance = f.state.jobs["web-1"].instances[0].id.clone();
    f.status("n1", &[(&job, &instance)]);
    f.state.node_lost("n2", "will", &mut Fx::default());
    // n1 gives up on it, and n2 (the only other node) is away: the root must move the job
    let failed = reported(
        job.clone(),
        instance.clone(),
        "n1",
        InstanceState::Failed,
        Some(1),
        "exited with code 1; restart policy never (n1)",
    );
    let mut fx = Fx::default();
    f.state.on_instance_event("n1", failed, &mut fx);
    assert!(starts(&fx).is_empty());
    let up: Vec<(InstanceState, bool)> = fx
        .send_up
        .iter()
        .filter_map(|e| match &e.body {
            Message::InstanceEvent(e) => Some((e.state, e.unschedulable.is_some())),
            _ => None,
        })
        .collect();
    assert_eq!(up, [(InstanceState::Failed, true)]);
}

#[test]
fn an_instance_that_fails_while_stopped_as_replaced_is_not_replaced_again() {
    let mut f = fixture();
    f.node("n1", 4);
    f.deploy(spec("web", 1000, 1));
    f.node("n2", 4);
    let job = JobId::new("web-1").unwrap();
    let instance = f.state.jobs["web-1"].instances[0].id.clone();
    f.status("n1", &[(&job, &instance)]);
    // n1 is lost and its instance replaced on n2; n1 comes back still running it, and it is
    // stopped as replaced
    f.state.node_lost("n1", "will", &mut Fx::default());
    f.status("n1", &[(&job, &instance)]);
    assert_eq!(
        f.instance_states("web-1"),
        [
            ("n1".into(), InstanceState::Terminating),
            ("n2".into(), InstanceState::Pending)
        ]
    );
    // before the stop reaches it, its process fails and n1 gives up on it
    let failed = InstanceEvent {
        job: job.clone(),
        instance,
        node: "n1".into(),
        state: InstanceState::Failed,
        exit_code: Some(1),
        reason: "exited with code 1; restart policy never (n1)".into(),
        unschedulable: None,
    };
    let mut fx = Fx::default();
    f.state.on_instance_event("n1", failed, &mut fx);
    assert!(starts(&fx).is_empty(), "replaced once already");
    assert_eq!(
        f.instance_states("web-1"),
        [
            ("n1".into(), InstanceState::Failed),
            ("n2".into(), InstanceState::Pending)
        ]
    );
}

#[test]
fn a_starting_instance_statuses_leave_out_for_three_intervals_is_lost_and_replaced() {
    let mut f = fixture();
    f.node("n1", 4);
    f.node("n2", 4);
    let (_, fx) = f.deploy(spec("web", 1000, 1));
    let first = starts(&fx)[0].clone();
    let job = JobId::new("web-1").unwrap();
    let instance = f.state.jobs["web-1"].instances[0].id.clone();
    let starting = InstanceEvent {
        job,
        instance,
        node: first.clone(),
        state: InstanceState::Starting,
        exit_code: None,
        reason: String::new(),
        unschedulable: None,
    };
    f.state
        .on_instance_event(&first, starting, &mut Fx::default());
    // the node ran it and gave up on it while its link was down (both events lost): its
    // statuses leave it out from then on
    f.status(&first, &[]);
    f.clock.advance_ms(3_000);
    let fx = f.status(&first, &[]);
    let states = f.instance_states("web-1");
    assert_eq!(states[0], (first.clone(), InstanceState::Lost));
    assert_eq!(states[1].1, InstanceState::Pending);
    assert_eq!(starts(&fx).len(), 1);
}

#[test]
fn a_migrate_delivered_again_after_not_now_starts_no_second_move() {
    let mut f = fixture();
    f.node("n1", 4);
    f.node("n2", 4);
    f.node("n3", 4);
    let (_, fx) = f.deploy(spec("web", 1000, 1));
    let first = starts(&fx)[0].clone();
    let old = f.state.jobs["web-1"].instances[0].id.clone();
    let job = JobId::new("web-1").unwrap();
    f.status(&first, &[(&job, &old)]);
    let command = Envelope::new_in(
        &f.state.cx,
        "root",
        Message::Migrate(Migrate {
            job: job.clone(),
            instance: None,
            target: MigrateTarget::Anywhere,
        }),
    );
    let Message::Migrate(m) = &command.body else {
        unreachable!()
    };
    let mut fx = Fx::default();
    let answer = f.state.on_migrate(&command, m, &mut fx);
    assert!(matches!(answer.body, Message::Ack(_)), "{answer:?}");
    assert_eq!(starts(&fx).len(), 1);
    // the store could not take it, so the root was told "not now" and sends it again
    let mut fx = Fx::default();
    let again = f.state.on_migrate(&command, m, &mut fx);
    assert!(matches!(again.body, Message::Ack(_)), "{again:?}");
    assert!(starts(&fx).is_empty(), "no second move");
    assert_eq!(fx.persist, ["jobs/web-1"], "acked once stored");
    assert_eq!(f.state.jobs["web-1"].instances.len(), 2);
}

#[test]
fn a_migration_whose_new_instance_a_status_reports_running_stops_the_old_one() {
    let mut f = fixture();
    f.node("n1", 4);
    f.node("n2", 4);
    let (_, fx) = f.deploy(spec("web", 1000, 1));
    let first = starts(&fx)[0].clone();
    let target = if first == "n1" { "n2" } else { "n1" };
    let old = f.state.jobs["web-1"].instances[0].id.clone();
    let job = JobId::new("web-1").unwrap();
    f.status(&first, &[(&job, &old)]);
    let command = Envelope::new_in(
        &f.state.cx,
        "root",
        Message::Migrate(Migrate {
            job: job.clone(),
            instance: None,
            target: MigrateTarget::Node(target.into()),
        }),
    );
    let Message::Migrate(m) = &command.body else {
        unreachable!()
    };
    f.state.on_migrate(&command, m, &mut Fx::default());
    let new = f.state.jobs["web-1"].instances[1].id.clone();
    // the new instance's RUNNING event was lost: the target's status says it runs
    let fx = f.status(target, &[(&job, &new)]);
    assert!(
        fx.commands.iter().any(|(n, e, _)| n == &first
            && matches!(&e.body, Message::Terminate(t) if t.instance.as_ref() == Some(&old))),
        "the old instance is stopped: {:?}",
        fx.commands
    );
    assert_eq!(f.state.jobs["web-1"].lifecycle.state(), JobState::Running);
}

#[test]
fn an_instance_of_a_terminating_job_its_node_leaves_out_is_terminated_not_lost() {
    let mut f = fixture();
    f.node("n1", 4);
    f.deploy(spec("web", 1000, 1));
    let job = JobId::new("web-1").unwrap();
    let instance = f.state.jobs["web-1"].instances[0].id.clone();
    f.status("n1", &[(&job, &instance)]);
    let command = Envelope::new_in(
        &f.state.cx,
        "root",
        Message::Terminate(Terminate {
            job: job.clone(),
            instance: None,
            grace_ms: 0,
        }),
    );
    let Message::Terminate(t) = &command.body else {
        unreachable!()
    };
    f.state.on_terminate(&command, t, &mut Fx::default());
    // the node stopped it, but its TERMINATING and TERMINATED events were lost: its
    // statuses leave it out from then on
    f.status("n1", &[]);
    f.clock.advance_ms(3_000);
    let fx = f.status("n1", &[]);
    assert_eq!(
        f.instance_states("web-1"),
        [("n1".into(), InstanceState::Terminated)]
    );
    assert_eq!(
        f.state.jobs["web-1"].lifecycle.state(),
        JobState::Terminated
    );
    assert!(starts(&fx).is_empty());
}

/// A RUNNING `web-1` on its first node, asked to move to the other one: (first, target, old,
/// new instance).
fn migrating(f: &mut Fixture) -> (String, String, InstanceId, InstanceId) {
    f.node("n1", 4);
    f.node("n2", 4);
    let (_, fx) = f.deploy(spec("web", 1000, 1));
    let first = starts(&fx)[0].clone();
    let target = if first == "n1" { "n2" } else { "n1" }.to_string();
    let old = f.state.jobs["web-1"].instances[0].id.clone();
    let job = JobId::new("web-1").unwrap();
    f.status(&first, &[(&job, &old)]);
    let command = Envelope::new_in(
        &f.state.cx,
        "root",
        Message::Migrate(Migrate {
            job,
            instance: None,
            target: MigrateTarget::Node(target.clone()),
        }),
    );
    let Message::Migrate(m) = &command.body else {
        unreachable!()
    };
    f.state.on_migrate(&command, m, &mut Fx::default());
    assert_eq!(f.state.jobs["web-1"].lifecycle.state(), JobState::Migrating);
    let new = f.state.jobs["web-1"].instances[1].id.clone();
    (first, target, old, new)
}

#[test]
fn a_migration_whose_new_instance_is_lost_with_its_node_is_abandoned() {
    // seed 345 (migrations 2): the target was cut off with the new instance, which was not
    // replaced (the old one runs); the job stayed MIGRATING for good
    let mut f = fixture();
    let (first, target, _, _) = migrating(&mut f);
    let mut fx = Fx::default();
    f.state.node_lost(&target, "cut off", &mut fx);
    assert_eq!(
        f.instance_states("web-1"),
        [
            (first, InstanceState::Running),
            (target, InstanceState::Lost)
        ]
    );
    assert_eq!(f.state.jobs["web-1"].lifecycle.state(), JobState::Running);
    assert!(f.state.jobs["web-1"].migration.is_none());
    assert!(
        starts(&fx).is_empty(),
        "nothing replaces the lost new instance"
    );
}

#[test]
fn a_new_instance_stopped_as_replaced_does_not_end_the_move_by_stopping_the_old_one() {
    // seed 71 (migrations 2): the new instance's node was lost and came back with it; its
    // status stopped it (the old one runs), then its RUNNING event arrived and ended the
    // move, stopping the old one too: nothing ran
    let mut f = fixture();
    let (first, target, old, new) = migrating(&mut f);
    f.state.node_lost(&target, "cut off", &mut Fx::default());
    let job = JobId::new("web-1").unwrap();
    f.status(&target, &[(&job, &new)]);
    assert_eq!(f.instance_states("web-1")[1].1, InstanceState::Terminating);
    let event = InstanceEvent {
        job,
        instance: new,
        node: target,
        state: InstanceState::Running,
        exit_code: None,
        reason: String::new(),
        unschedulable: None,
    };
    let mut fx = Fx::default();
    f.state
        .on_instance_event(&f.instance_states("web-1")[1].0.clone(), event, &mut fx);
    assert_eq!(
        f.instance_states("web-1")[0],
        (first.clone(), InstanceState::Running)
    );
    assert!(
        !fx.commands.iter().any(|(n, e, _)| n == &first
            && matches!(&e.body, Message::Terminate(t) if t.instance.as_ref() == Some(&old))),
        "the old instance runs on: {:?}",
        fx.commands
    );
    assert_eq!(f.state.jobs["web-1"].lifecycle.state(), JobState::Running);
}

#[test]
fn an_instance_a_returning_node_brings_back_after_its_job_failed_is_stopped() {
    // seed 889 (migrations 2): lost with its node, replaced, the replacement failed with no
    // other node to take it, the job FAILED; then the node came back with the old copy,
    // which ran on for a FAILED job
    let mut f = fixture();
    f.node("n1", 4);
    f.node("n2", 4);
    let (_, fx) = f.deploy(spec("web", 1000, 1));
    let first = starts(&fx)[0].clone();
    let other = if first == "n1" { "n2" } else { "n1" }.to_string();
    let job = JobId::new("web-1").unwrap();
    let old = f.state.jobs["web-1"].instances[0].id.clone();
    f.status(&first, &[(&job, &old)]);
    f.state.node_lost(&first, "cut off", &mut Fx::default());
    let new = f.state.jobs["web-1"].instances[1].id.clone();
    let failed = reported(
        job.clone(),
        new,
        other.clone(),
        InstanceState::Failed,
        Some(1),
        "exited with code 1; restart policy never",
    );
    f.state
        .on_instance_event(&other, failed, &mut Fx::default());
    assert_eq!(f.state.jobs["web-1"].lifecycle.state(), JobState::Failed);
    let fx = f.status(&first, &[(&job, &old)]);
    assert_eq!(f.instance_states("web-1")[0].1, InstanceState::Terminating);
    assert!(fx.commands.iter().any(|(n, e, _)| n == &first
        && matches!(&e.body, Message::Terminate(t) if t.instance.as_ref() == Some(&old))));
}

#[test]
fn an_instance_whose_stop_went_with_a_restart_of_the_cluster_is_stopped_again() {
    // seed 618 (migrations 2): a move's old instance was being stopped, its node cut off,
    // and the cluster crashed with the stop command in memory; restarted, it kept the
    // instance TERMINATING while its node ran it on for good
    let mut f = fixture();
    let (first, target, old, new) = migrating(&mut f);
    let job = JobId::new("web-1").unwrap();
    f.status(&target, &[(&job, &new)]);
    assert_eq!(f.instance_states("web-1")[0].1, InstanceState::Terminating);
    let stops_old = |fx: &Fx| {
        fx.commands.iter().any(|(n, e, _)| {
            n == &first
                && matches!(&e.body, Message::Terminate(t) if t.instance.as_ref() == Some(&old))
        })
    };
    // the stop is on its way: a status still naming the old instance sends no other
    f.clock.advance_ms(1_000);
    assert!(!stops_old(&f.status(&first, &[(&job, &old)])));
    // the cluster restarts from its records: the next status naming it stops it again
    f.clock.advance_ms(1_000);
    f.state.started_ms = f.state.cx.now_ms();
    assert!(stops_old(&f.status(&first, &[(&job, &old)])));
}
