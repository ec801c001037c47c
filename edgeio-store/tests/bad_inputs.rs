//! Bad configuration and unreachable servers: each a clear, typed error within a deadline —
//! never a hang and never a panic. None of these needs etcd installed.

use edgeio_core::store::StoreError;
use edgeio_store::StoreConfig;
#[cfg(feature = "etcd")]
use edgeio_store::{EtcdOptions, EtcdStore};
#[cfg(feature = "etcd")]
use std::net::{Ipv4Addr, TcpListener};
#[cfg(feature = "etcd")]
use std::time::{Duration, Instant};

#[cfg(feature = "etcd")]
#[tokio::test]
async fn an_unreachable_etcd_is_unavailable_within_the_timeout() {
    // A port that was free a moment ago: nothing listens there.
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let endpoint = format!("http://127.0.0.1:{port}");
    let options = EtcdOptions::new([endpoint.as_str()]).with_timeout(Duration::from_secs(1));
    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(10), EtcdStore::connect(options))
        .await
        .expect("connect must give up by itself");
    match result {
        Err(StoreError::Unavailable { reason }) => {
            assert!(
                reason.contains(&endpoint),
                "the reason must name the endpoint: {reason}"
            )
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "Unavailable took {:?} with a 1 s timeout",
        started.elapsed()
    );
}

#[cfg(feature = "etcd")]
#[tokio::test]
async fn a_malformed_endpoint_is_invalid_before_any_connection() {
    for bad in [
        "127.0.0.1",
        "http://127.0.0.1:99999",
        "https://127.0.0.1:2379",
        "http://a b:1",
    ] {
        match EtcdStore::connect(EtcdOptions::new([bad])).await {
            Err(
                err @ StoreError::Invalid {
                    field: "endpoint", ..
                },
            ) => {
                let message = err.to_string();
                assert!(message.contains(bad), "{message}");
                assert!(message.starts_with("invalid endpoint"), "{message}");
            }
            other => panic!("{bad}: expected Invalid {{ field: \"endpoint\" }}, got {other:?}"),
        }
    }
    assert!(matches!(
        EtcdStore::connect(EtcdOptions::new(Vec::<String>::new())).await,
        Err(StoreError::Invalid {
            field: "endpoints",
            ..
        })
    ));
}

#[tokio::test]
async fn config_with_an_empty_path_is_invalid() {
    let config: StoreConfig =
        serde_json::from_str(r#"{ "backend": "embedded", "path": "" }"#).unwrap();
    match config.open().await {
        Err(err @ StoreError::Invalid { field: "path", .. }) => {
            assert_eq!(
                err.to_string(),
                "invalid path \"\": the store file's path must not be empty"
            )
        }
        Err(other) => panic!("expected Invalid {{ field: \"path\" }}, got {other:?}"),
        Ok(_) => panic!("an empty path must not open"),
    }
}

#[cfg(not(feature = "etcd"))]
#[tokio::test]
async fn an_etcd_config_is_refused_by_a_build_without_etcd_naming_the_feature() {
    let etcd: StoreConfig = serde_json::from_str(
        r#"{ "backend": "etcd", "endpoints": ["http://10.0.0.5:2379"], "prefix": "edgeio/" }"#,
    )
    .unwrap();
    match etcd.open().await {
        Err(
            err @ StoreError::Invalid {
                field: "backend", ..
            },
        ) => {
            let text = err.to_string();
            assert!(text.starts_with("invalid backend \"etcd\""), "{text}");
            assert!(text.contains("--features etcd"), "{text}");
            assert!(text.contains("protobuf-compiler"), "{text}");
        }
        Err(other) => panic!("expected Invalid {{ field: \"backend\" }}, got {other:?}"),
        Ok(_) => panic!("an etcd store opened on a build without etcd"),
    }
}

#[test]
fn config_names_its_backend_and_refuses_unknown_fields() {
    let embedded: StoreConfig =
        serde_json::from_str(r#"{ "backend": "embedded", "path": "/var/lib/edgeio/root.redb" }"#)
            .unwrap();
    assert_eq!(embedded, StoreConfig::embedded("/var/lib/edgeio/root.redb"));
    let etcd: StoreConfig = serde_json::from_str(
        r#"{ "backend": "etcd", "endpoints": ["http://10.0.0.5:2379"], "prefix": "edgeio/" }"#,
    )
    .unwrap();
    assert_eq!(etcd, StoreConfig::etcd(["http://10.0.0.5:2379"], "edgeio/"));
    let round_trip: StoreConfig =
        serde_json::from_value(serde_json::to_value(&etcd).unwrap()).unwrap();
    assert_eq!(round_trip, etcd);

    for (bad, says) in [
        (r#"{ "path": "x.redb" }"#, "backend"),
        (r#"{ "backend": "sqlite", "path": "x" }"#, "sqlite"),
        (
            r#"{ "backend": "embedded", "path": "x", "histroy": 5 }"#,
            "histroy",
        ),
        (r#"{ "backend": "etcd" }"#, "endpoints"),
    ] {
        let err = serde_json::from_str::<StoreConfig>(bad)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(says),
            "{bad}: the error must name {says:?}: {err}"
        );
    }
}

#[tokio::test]
async fn config_opens_an_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = StoreConfig::embedded(dir.path().join("s.redb"))
        .open()
        .await
        .unwrap();
    assert_eq!(store.backend(), "redb");
    let rev = store.put("k", "v".into()).await.unwrap();
    assert_eq!(store.get("k").await.unwrap().unwrap().mod_revision, rev);
}
