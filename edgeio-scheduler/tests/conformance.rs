//! Every policy passes the scheduler conformance suite from edgeio-core.

use edgeio_core::testing::conformance::scheduler::run_all;
use edgeio_scheduler::FirstFit;

#[test]
fn first_fit_conforms() {
    run_all(&FirstFit);
}
