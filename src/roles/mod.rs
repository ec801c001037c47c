//! The three roles of the reference binaries (`root`, `cluster`, `worker`) as functions that
//! compose the crates: options (clap, with an environment variable per flag), start-up with
//! one-line errors, and a [`Running`] handle that stops cleanly. The example binaries are thin
//! `main`s over these; `quickstart` starts all three in one process; tests start them as
//! separate processes.

mod cluster;
mod common;
mod join;
mod joiner;
mod main;
mod root;
mod sealing;
mod trust;
mod worker;

pub use cluster::{start_cluster, ClusterOptions};
pub use common::{
    interrupted, load_config_file, parse_duration, parse_labels, parse_location, RoleError, Running,
};
pub use joiner::{CREDENTIAL_FILE, PARENT_CA_FILE};
pub use main::role_main;
pub use root::{parse_store, start_root, RootOptions, RootStore};
pub use trust::{read_token_file, ADMIN_TOKEN_FILE, CA_FILE};
pub use worker::{runtimes_help, start_worker, Kvm, WorkerOptions};
