//! Every policy passes the scheduler conformance suite from edgeio-core.

use edgeio_core::testing::conformance::scheduler::run_all;
use edgeio_scheduler::{PolicyKind, SchedulerConfig, Score, Weighted};

#[test]
fn every_policy_conforms() {
    for name in PolicyKind::NAMES {
        let mut config = SchedulerConfig::policy(name.parse().unwrap());
        if config.policy == PolicyKind::Weighted {
            config.scores = vec![Weighted {
                score: Score::LeastAllocated,
                weight: 1.0,
            }];
        }
        let scheduler = config.build().unwrap();
        run_all(scheduler.as_ref());
    }
}
