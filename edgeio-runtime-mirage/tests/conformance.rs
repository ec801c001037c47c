//! The unikernel runtime passes the Runtime conformance suite with the test kernels under qemu.

mod common;

use common::{kernel, spec, Kernel, TestEnv, HELLO};
use edgeio_core::model::InstanceId;
use edgeio_core::testing::conformance::runtime::{run_all, RuntimeFixture};
use std::path::Path;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirage_runtime_conforms() {
    if !edgeio_core::testing::require::qemu() {
        return;
    }
    let env = TestEnv::new();
    let runtime = env.runtime();
    let id = InstanceId::new("conf").unwrap();
    let fixture = RuntimeFixture {
        runs_until_stopped: spec(&id, &kernel(Kernel::Loop)),
        exits_with: spec(&id, &kernel(Kernel::Exit(3))),
        exit_code: 3,
        cannot_start: spec(&id, Path::new("/nonexistent/edgeio/kernel.elf")),
        log_line: Some(HELLO.into()),
    };
    run_all(&runtime, &fixture).await;
    env.assert_no_process_left();
}
