//! Throughput of the embedded store and etcd on the same machine, in one run: durable put (one
//! client, and 16 concurrent clients), get, compare-and-swap, list of a 100-key prefix and
//! batched puts. etcd is started by the benchmark (free loopback ports, temporary data dir,
//! default settings, so its WAL is fsynced like the embedded store's commits); its rows are
//! skipped with a note when etcd is not installed. A side-by-side table ends the run.
//!
//! `cargo bench -p edgeio-store --features etcd,testing --bench store`

use bytes::Bytes;
use criterion::{Criterion, Throughput};
use edgeio_core::store::{Precondition, Store};
use edgeio_store::{EmbeddedOptions, EmbeddedStore, EtcdOptions, EtcdStore};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::runtime::Runtime;

const KEYS: u64 = 1_000;
const VALUE: usize = 100;
const CLIENTS: u64 = 16;
const BATCH: usize = 100;
const LISTED: usize = 100;

/// Operations and time per (row, backend), summed over every measured call.
type Tally = Arc<Mutex<BTreeMap<(usize, &'static str), (u64, Duration)>>>;

const ROWS: [&str; 6] = [
    "put, 1 client (durable)",
    "put, 16 clients (durable)",
    "get",
    "compare-and-swap",
    "list 100-key prefix",
    "put_many, 100 keys per call (keys/s)",
];

/// A store under test: the trait for the common rows, the concrete type for batches.
#[derive(Clone)]
enum Backend {
    Embedded(EmbeddedStore),
    Etcd(EtcdStore),
}

impl Backend {
    fn name(&self) -> &'static str {
        match self {
            Backend::Embedded(_) => "embedded",
            Backend::Etcd(_) => "etcd",
        }
    }

    fn store(&self) -> Arc<dyn Store> {
        match self {
            Backend::Embedded(s) => Arc::new(s.clone()),
            Backend::Etcd(s) => Arc::new(s.clone()),
        }
    }

    async fn put_many(&self, items: Vec<(String, Bytes)>) {
        match self {
            Backend::Embedded(s) => s.put_many(items).await.map(|_| ()),
            Backend::Etcd(s) => s.put_many(items).await.map(|_| ()),
        }
        .expect("put_many");
    }
}

fn record(tally: &Tally, row: usize, backend: &'static str, ops: u64, took: Duration) {
    let mut tally = tally.lock().unwrap_or_else(PoisonError::into_inner);
    let entry = tally.entry((row, backend)).or_default();
    entry.0 += ops;
    entry.1 += took;
}

/// Times `op` (which performs `iters` operations and answers how many it did) for every
/// backend in turn, under one criterion group; the backends alternate row by row so that a
/// change of machine load over the run does not favour one of them.
fn row<F, Fut>(
    c: &mut Criterion,
    rt: &Runtime,
    tally: &Tally,
    row: usize,
    per_call: u64,
    backends: &[Backend],
    op: F,
) where
    F: Fn(Backend, u64, u64) -> Fut,
    Fut: Future<Output = u64>,
{
    let mut group = c.benchmark_group(ROWS[row]);
    group.throughput(Throughput::Elements(per_call));
    for backend in backends {
        let mut calls = 0u64;
        group.bench_function(backend.name(), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                let done = rt.block_on(op(backend.clone(), calls, iters));
                let took = start.elapsed();
                calls += iters;
                record(tally, row, backend.name(), done * per_call, took);
                // Criterion divides by `iters`; report the time those would have taken.
                took.mul_f64(iters as f64 / done.max(1) as f64)
            })
        });
    }
    group.finish();
}

fn bench_all(c: &mut Criterion, rt: &Runtime, tally: &Tally, backends: &[Backend]) {
    let value = Bytes::from(vec![7u8; VALUE]);
    for backend in backends {
        let store = backend.store();
        rt.block_on(async {
            for i in 0..KEYS {
                store
                    .put(&format!("bench/k{i:05}"), value.clone())
                    .await
                    .unwrap();
            }
            for i in 0..LISTED as u64 {
                store
                    .put(&format!("list/k{i:05}"), value.clone())
                    .await
                    .unwrap();
            }
        });
    }

    let v = value.clone();
    row(
        c,
        rt,
        tally,
        0,
        1,
        backends,
        move |backend, first, iters| {
            let value = v.clone();
            async move {
                let store = backend.store();
                for n in first..first + iters {
                    store
                        .put(&format!("bench/k{:05}", n % KEYS), value.clone())
                        .await
                        .unwrap();
                }
                iters
            }
        },
    );

    let v = value.clone();
    row(c, rt, tally, 1, 1, backends, move |backend, _, iters| {
        let value = v.clone();
        async move {
            let per_client = iters.div_ceil(CLIENTS);
            let clients: Vec<_> = (0..CLIENTS)
                .map(|client| {
                    let (store, value) = (backend.store(), value.clone());
                    tokio::spawn(async move {
                        for i in 0..per_client {
                            let key = format!("bench/c{client:02}/k{:04}", i % 100);
                            store.put(&key, value.clone()).await.unwrap();
                        }
                    })
                })
                .collect();
            for client in clients {
                client.await.unwrap();
            }
            per_client * CLIENTS
        }
    });

    row(
        c,
        rt,
        tally,
        2,
        1,
        backends,
        |backend, first, iters| async move {
            let store = backend.store();
            for n in first..first + iters {
                let got = store.get(&format!("bench/k{:05}", n % KEYS)).await.unwrap();
                assert!(got.is_some());
            }
            iters
        },
    );

    let v = value.clone();
    row(c, rt, tally, 3, 1, backends, move |backend, _, iters| {
        let value = v.clone();
        async move {
            let store = backend.store();
            let mut revision = store
                .get("cas/key")
                .await
                .unwrap()
                .map_or(0, |kv| kv.mod_revision);
            if revision == 0 {
                revision = store.put("cas/key", value.clone()).await.unwrap();
            }
            for _ in 0..iters {
                revision = store
                    .compare_and_swap("cas/key", Precondition::Revision(revision), value.clone())
                    .await
                    .unwrap();
            }
            iters
        }
    });

    row(
        c,
        rt,
        tally,
        4,
        1,
        backends,
        |backend, _, iters| async move {
            let store = backend.store();
            for _ in 0..iters {
                assert_eq!(store.list("list/").await.unwrap().items.len(), LISTED);
            }
            iters
        },
    );

    let v = value.clone();
    row(
        c,
        rt,
        tally,
        5,
        BATCH as u64,
        backends,
        move |backend, first, iters| {
            let value = v.clone();
            async move {
                for n in first..first + iters {
                    let items = (0..BATCH)
                        .map(|i| (format!("batch/{:03}/k{i:03}", n % 10), value.clone()))
                        .collect();
                    backend.put_many(items).await;
                }
                iters
            }
        },
    );
}

fn print_table(tally: &Tally, etcd_note: Option<&str>) {
    let tally = tally.lock().unwrap_or_else(PoisonError::into_inner);
    let rate = |row: usize, backend: &'static str| {
        tally
            .get(&(row, backend))
            .filter(|(ops, took)| *ops > 0 && !took.is_zero())
            .map(|(ops, took)| *ops as f64 / took.as_secs_f64())
    };
    println!();
    println!("| op | embedded (redb) ops/s | etcd ops/s | embedded / etcd |");
    println!("|---|---:|---:|---:|");
    for (row, name) in ROWS.iter().enumerate() {
        let embedded = rate(row, "embedded");
        let etcd = rate(row, "etcd");
        let show = |r: Option<f64>| r.map_or_else(|| "—".to_owned(), |r| format!("{r:.0}"));
        let ratio = match (embedded, etcd) {
            (Some(e), Some(d)) => format!("{:.1}×", e / d),
            _ => "—".to_owned(),
        };
        println!("| {name} | {} | {} | {ratio} |", show(embedded), show(etcd));
    }
    if let Some(note) = etcd_note {
        println!("\n{note}");
    }
}

fn main() {
    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let tally: Tally = Arc::default();

    let dir = tempfile::tempdir().expect("a temporary directory");
    let embedded = rt
        .block_on(EmbeddedStore::open(
            dir.path().join("bench.redb"),
            EmbeddedOptions::default(),
        ))
        .expect("the embedded store");
    let mut backends = vec![Backend::Embedded(embedded)];
    let mut etcd_server = None;
    let etcd_note = match edgeio_core::testing::require::command_succeeds("etcd", &["--version"])
        .and_then(|()| edgeio_store::testing::EtcdServer::start())
    {
        Err(reason) => Some(format!("etcd rows skipped: {reason}")),
        Ok(server) => {
            let options = EtcdOptions::new([server.endpoint.as_str()]).with_prefix("edgeio-bench/");
            let store = rt
                .block_on(EtcdStore::connect(options))
                .expect("etcd answers");
            backends.push(Backend::Etcd(store));
            etcd_server = Some(server);
            None
        }
    };
    bench_all(&mut c, &rt, &tally, &backends);
    drop(backends);
    drop(etcd_server);
    c.final_summary();
    print_table(&tally, etcd_note.as_deref());
}
