use super::*;
use edgeio_core::job::{InstanceSpec, JobSpec, RestartKind};
use edgeio_core::wire::{Deploy, Scale, Terminate};

fn spec(id: &str, job: &str, kind: &str) -> InstanceSpec {
    let job_spec = JobSpec::minimal(job, "fake:run", kind, Resources::ZERO);
    InstanceSpec::for_job(
        InstanceId::new(id).unwrap(),
        JobId::new(job).unwrap(),
        &job_spec,
    )
}

fn deploy(s: &InstanceSpec) -> Message {
    Message::Deploy(Box::new(Deploy {
        job: s.job.clone(),
        spec: JobSpec::minimal(s.job.as_str(), "fake:run", s.kind.clone(), Resources::ZERO),
        instance: Some(s.clone()),
        first_instance: 0,
        instance_prefix: None,
        seq: 0,
    }))
}

fn running(job: &str) -> Local {
    Local {
        job: JobId::new(job).unwrap(),
        kind: "native".into(),
        state: InstanceState::Running,
        resources: Resources::ZERO,
        restart: None,
        restarts: 0,
        clearing: false,
    }
}

#[test]
fn a_deploy_starts_once_and_a_repeat_changes_nothing() {
    let kinds = [RuntimeKind::new("native")];
    let s = spec("web-0", "web", "native");
    let mut local = BTreeMap::new();
    assert_eq!(
        plan(&deploy(&s), &local, &kinds),
        [Action::Start(s.clone())]
    );
    local.insert(s.id.clone(), running("web"));
    assert!(plan(&deploy(&s), &local, &kinds).is_empty());
}

#[test]
fn a_deploy_for_a_missing_runtime_is_refused_naming_what_the_worker_has() {
    let kinds = [RuntimeKind::new("native")];
    let actions = plan(
        &deploy(&spec("web-0", "web", "docker")),
        &BTreeMap::new(),
        &kinds,
    );
    assert_eq!(
        actions,
        [Action::Refuse(ErrorBody {
            code: "unsupported".into(),
            message: "image_runtime \"docker\" is not available on this worker (it has: native)"
                .into()
        })]
    );
}

#[test]
fn terminate_stops_the_jobs_instances_or_just_the_one_named() {
    let mut local = BTreeMap::new();
    for (id, job) in [("a-0", "a"), ("a-1", "a"), ("b-0", "b")] {
        local.insert(InstanceId::new(id).unwrap(), running(job));
    }
    let all = Message::Terminate(Terminate {
        job: JobId::new("a").unwrap(),
        instance: None,
        grace_ms: 0,
    });
    let stops: Vec<Action> = ["a-0", "a-1"]
        .iter()
        .map(|id| Action::Stop(InstanceId::new(*id).unwrap()))
        .collect();
    assert_eq!(plan(&all, &local, &[]), stops);
    let one = Message::Terminate(Terminate {
        job: JobId::new("a").unwrap(),
        instance: Some(InstanceId::new("a-1").unwrap()),
        grace_ms: 0,
    });
    assert_eq!(
        plan(&one, &local, &[]),
        [Action::Stop(InstanceId::new("a-1").unwrap())]
    );
    local
        .get_mut(&InstanceId::new("a-1").unwrap())
        .unwrap()
        .state = InstanceState::Terminating;
    assert!(
        plan(&one, &local, &[]).is_empty(),
        "a second terminate has no second effect"
    );
}

#[test]
fn cluster_decisions_are_refused_by_a_worker() {
    let scale = Message::Scale(Scale {
        job: JobId::new("a").unwrap(),
        replicas: 2,
    });
    assert!(
        matches!(&plan(&scale, &BTreeMap::new(), &[])[..], [Action::Refuse(e)] if e.code == "unsupported")
    );
}

#[test]
fn exits_restart_with_doubling_backoff_up_to_the_limit_then_give_up() {
    let policy = |policy, limit| RestartPolicy {
        policy,
        limit,
        backoff_ms: 100,
    };
    let ms = Duration::from_millis;
    let on_failure = policy(RestartKind::OnFailure, 2);
    assert_eq!(after_exit(&on_failure, Some(0), 0), AfterExit::Done);
    assert_eq!(
        after_exit(&on_failure, Some(3), 0),
        AfterExit::Restart(ms(100))
    );
    assert_eq!(
        after_exit(&on_failure, None, 1),
        AfterExit::Restart(ms(200))
    );
    let AfterExit::GiveUp(why) = after_exit(&on_failure, Some(3), 2) else {
        panic!("past the limit");
    };
    assert_eq!(
        why,
        "exited with code 3; restart limit 2 reached on this node"
    );
    let always = policy(RestartKind::Always, 1);
    assert_eq!(after_exit(&always, Some(0), 0), AfterExit::Restart(ms(100)));
    assert!(matches!(
        after_exit(&always, Some(0), 1),
        AfterExit::GiveUp(_)
    ));
    let never = policy(RestartKind::Never, 5);
    assert_eq!(after_exit(&never, Some(0), 0), AfterExit::Done);
    let AfterExit::GiveUp(why) = after_exit(&never, None, 0) else {
        panic!("a failure with never gives up at once");
    };
    assert_eq!(why, "was killed by a signal; restart policy never");
    // a huge limit does not overflow the wait
    let huge = policy(RestartKind::Always, u32::MAX);
    assert_eq!(
        after_exit(&huge, Some(1), 60),
        AfterExit::Restart(Duration::from_secs(3600))
    );
}
