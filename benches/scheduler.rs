//! Scheduler throughput: place 10,000 jobs one after another onto 100 / 1,000 / 5,000 /
//! 20,000 candidates, reserving each placement's resources in the `CandidateSet` as the
//! cluster engine does, for every policy with the full filter chain on (pins, stale data,
//! arch, runtime, node selector, anti-affinity, resources).
//!
//! `cargo bench --bench scheduler` prints criterion's figures (throughput in placements/s),
//! then a summary table with placements/s and the cost per placement at each size.
//! Set `EDGEIO_BENCH_QUICK=1` for a short run.

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput};
use edgeio::job::JobSpec;
use edgeio::model::{Arch, Candidate, CandidateSet, Resources};
use edgeio::scheduler::Scheduler;
use edgeio::schedulers::{FilterChain, PolicyKind, SchedulerConfig, Score, Weighted};
use std::sync::Arc;
use std::time::{Duration, Instant};

const JOBS: usize = 10_000;
const SIZES: [usize; 4] = [100, 1_000, 5_000, 20_000];

/// A deterministic pseudo-random sequence (xorshift), so every run places the same jobs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn candidates(n: usize) -> CandidateSet {
    let mut rng = Rng(0x5eed + n as u64);
    (0..n)
        .map(|i| {
            // 16..64 cores, 64..256 GiB: room for all 10,000 jobs even at 100 candidates
            let cores = 16 + rng.next() % 49;
            let total = Resources {
                cpu_millis: cores * 1000,
                memory_bytes: (64 + rng.next() % 193) << 30,
                disk_bytes: 1 << 40,
                gpus: 0,
            };
            let mut c = Candidate::new(format!("node-{i:05}"), total);
            // a tenth are arm64 and a tenth lack docker, so the filters have work to do
            c.architectures = vec![if i % 10 == 3 {
                Arch::Arm64
            } else {
                Arch::Amd64
            }];
            c.runtimes = if i % 10 == 7 {
                vec!["native".into()]
            } else {
                vec!["docker".into(), "native".into()]
            };
            c.labels.insert("zone".into(), format!("z{}", i % 4));
            c.data_age = Duration::from_millis(rng.next() % 2_000);
            c
        })
        .collect()
}

fn jobs() -> Vec<JobSpec> {
    let mut rng = Rng(42);
    (0..JOBS)
        .map(|i| {
            let need = Resources {
                cpu_millis: 50 + rng.next() % 200,
                memory_bytes: (64 + rng.next() % 448) << 20,
                ..Resources::ZERO
            };
            let mut job = JobSpec::minimal(format!("job-{i}"), "busybox", "docker", need);
            job.arch = Some(Arch::Amd64);
            job
        })
        .collect()
}

fn policies() -> Vec<(PolicyKind, Arc<dyn Scheduler>)> {
    [
        PolicyKind::FirstFit,
        PolicyKind::LeastLoaded,
        PolicyKind::BestFit,
        PolicyKind::LocationAware,
        PolicyKind::Spread,
        PolicyKind::Weighted,
    ]
    .into_iter()
    .map(|kind| {
        let mut config = SchedulerConfig::policy(kind);
        config.filters = FilterChain::with_stale_after(Duration::from_secs(30));
        if kind == PolicyKind::Weighted {
            config.scores = vec![
                Weighted {
                    score: Score::LeastAllocated,
                    weight: 1.0,
                },
                Weighted {
                    score: Score::Spread {
                        label: "zone".into(),
                    },
                    weight: 1.0,
                },
            ];
        }
        (kind, config.build().expect("valid configuration"))
    })
    .collect()
}

// Scan-based policies cost O(candidates) per placement; bound their runs so the whole bench
// stays in minutes (their jobs-per-run is printed with the figures).
fn jobs_for(kind: PolicyKind, size: usize) -> usize {
    match kind {
        PolicyKind::FirstFit | PolicyKind::LeastLoaded => JOBS,
        _ => (JOBS * 1_000 / size).clamp(200, JOBS),
    }
}

fn place_all(s: &dyn Scheduler, set: &mut CandidateSet, jobs: &[JobSpec]) -> usize {
    let mut placed = 0;
    for job in jobs {
        if let Ok(p) = s.place(job, set) {
            set.reserve(&p.candidate, &job.resources);
            placed += 1;
        }
    }
    placed
}

fn bench(c: &mut Criterion) {
    let all_jobs = jobs();
    for (kind, scheduler) in policies() {
        let mut group = c.benchmark_group(format!("place/{kind}"));
        group.sample_size(10);
        for size in SIZES {
            let base = candidates(size);
            let n = jobs_for(kind, size);
            group.throughput(Throughput::Elements(n as u64));
            group.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, _| {
                b.iter_batched(
                    || base.clone(),
                    |mut set| place_all(scheduler.as_ref(), &mut set, &all_jobs[..n]),
                    BatchSize::LargeInput,
                )
            });
        }
        group.finish();
    }
}

fn summary() {
    let all_jobs = jobs();
    println!("\nsummary: {JOBS} jobs placed one after another, full filter chain, free resources reserved after each");
    println!(
        "{:<16} {:>10} {:>8} {:>14} {:>16}",
        "policy", "candidates", "jobs", "placements/s", "ns/placement"
    );
    for (kind, scheduler) in policies() {
        for size in SIZES {
            let n = jobs_for(kind, size);
            let mut set = candidates(size);
            let start = Instant::now();
            let placed = place_all(scheduler.as_ref(), &mut set, &all_jobs[..n]);
            let elapsed = start.elapsed();
            assert_eq!(
                placed, n,
                "{kind} at {size}: every job fits by construction"
            );
            let per = elapsed.as_nanos() as f64 / n as f64;
            println!(
                "{:<16} {:>10} {:>8} {:>14.0} {:>16.0}",
                kind.as_str(),
                size,
                n,
                1e9 / per,
                per
            );
        }
    }
    println!("peers: Kubernetes scheduler_perf about 700-1,100 pods/s at 5,000 nodes; Nomad C1M about 3,750 containers/s");
}

fn main() {
    let quick = std::env::var_os("EDGEIO_BENCH_QUICK").is_some();
    let mut c = Criterion::default().configure_from_args();
    if quick {
        c = c
            .warm_up_time(Duration::from_millis(200))
            .measurement_time(Duration::from_secs(1));
    }
    bench(&mut c);
    c.final_summary();
    summary();
}
