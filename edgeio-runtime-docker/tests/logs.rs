//! Output by line and source; a followed log ends when the container stops.

mod support;

use edgeio_core::model::JobId;
use edgeio_core::runtime::{LogOptions, LogSource, Runtime};
use futures::StreamExt;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_followed_log_yields_both_streams_and_ends_when_the_container_stops() {
    if !edgeio_core::testing::require::docker() {
        return;
    }
    support::ensure_image();
    let job = JobId::new(support::unique("logs")).unwrap();
    let _cleanup = support::Cleanup::job(&job);
    let runtime = support::runtime();
    let spec = support::spec(
        &support::unique("logs"),
        &job,
        &[
            "sh",
            "-c",
            "echo one; echo oops >&2; sleep 1; printf 'two\\nthree'; exit 0",
        ],
    );
    runtime.deploy(&spec).await.unwrap();
    let follow = runtime
        .logs(
            &spec.id,
            LogOptions {
                tail: None,
                follow: true,
            },
        )
        .await
        .unwrap();
    let lines: Vec<_> = tokio::time::timeout(Duration::from_secs(10), follow.collect::<Vec<_>>())
        .await
        .expect("a followed log ends when its container stops")
        .into_iter()
        .map(|l| l.unwrap())
        .collect();
    let out: Vec<_> = lines
        .iter()
        .filter(|l| l.source == LogSource::Stdout)
        .map(|l| l.text.as_str())
        .collect();
    assert_eq!(out, vec!["one", "two", "three"]);
    assert!(lines
        .iter()
        .any(|l| l.source == LogSource::Stderr && l.text == "oops"));

    let tail: Vec<_> = runtime
        .logs(
            &spec.id,
            LogOptions {
                tail: Some(1),
                follow: false,
            },
        )
        .await
        .unwrap()
        .map(|l| l.unwrap().text)
        .collect()
        .await;
    assert_eq!(tail, vec!["three"]);
    runtime.terminate(&spec.id, Duration::ZERO).await.unwrap();
}
