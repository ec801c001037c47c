//! The crash test, with real processes: a child writes acknowledged puts to an embedded store
//! in a loop; the parent kills it with SIGKILL at random moments, 20 times, reopens the file
//! each time and checks that it opens cleanly and holds every write the child acknowledged,
//! in this round and all earlier ones.

use edgeio_core::store::Store;
use edgeio_store::{EmbeddedOptions, EmbeddedStore};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const KILLS: usize = 20;
/// The longest the child may take to acknowledge its first write (it opens, and after a kill
/// repairs, the file first).
const FIRST_ACK: Duration = Duration::from_secs(20);

/// A small xorshift generator: the test needs varied kill moments, not a crate.
struct Moments(u64);

impl Moments {
    fn next_ms(&mut self, low: u64, high: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        low + self.0 % (high - low + 1)
    }
}

/// The value the child writes for its `i`-th key (see `src/bin/edgeio-store-crash-writer.rs`).
fn expected_len(key: &str) -> usize {
    let i: usize = key
        .rsplit('/')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the child acknowledged an unexpected key {key:?}"));
    16 + (i * 97) % 8_192
}

#[test]
fn acknowledged_writes_survive_twenty_sigkills() {
    let writer = env!("CARGO_BIN_EXE_edgeio-store-crash-writer");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("crash.redb");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let seed = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64 | 1);
    let mut moments = Moments(seed);
    let mut acknowledged: BTreeSet<String> = BTreeSet::new();
    let mut mid_write_kills = 0;

    for round in 0..KILLS {
        let prefix = format!("r{round:02}/");
        let mut child = Command::new(writer)
            .arg(&path)
            .arg(&prefix)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {writer}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let (lines, received) = mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            let mut stdout = BufReader::new(stdout);
            let mut line = Vec::new();
            // Only whole lines count: a key is acknowledged once its newline is out.
            while stdout.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
                if line.ends_with(b"\n") {
                    let key = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
                    if lines.send(key).is_err() {
                        break;
                    }
                }
                line.clear();
            }
        });

        // Odd rounds kill at a random moment from the start, which may fall while the child
        // opens or repairs the file; even rounds wait for writing to be under way first.
        let mut round_keys = Vec::new();
        if round % 2 == 0 {
            match received.recv_timeout(FIRST_ACK) {
                Ok(key) => round_keys.push(key),
                Err(_) => {
                    let _ = child.kill();
                    let mut stderr = String::new();
                    if let Some(mut err) = child.stderr.take() {
                        let _ = err.read_to_string(&mut stderr);
                    }
                    panic!("round {round}: no write acknowledged within {FIRST_ACK:?}: {stderr}");
                }
            }
        }
        let delay = Duration::from_millis(moments.next_ms(50, 300));
        std::thread::sleep(delay);
        let still_running = matches!(child.try_wait(), Ok(None));
        child.kill().expect("SIGKILL the writer");
        let status = child.wait().expect("reap the writer");
        reader.join().expect("the stdout reader");
        round_keys.extend(received.try_iter());
        assert!(
            still_running,
            "round {round}: the writer exited by itself ({status}) before the kill"
        );
        if !round_keys.is_empty() {
            mid_write_kills += 1;
        }
        acknowledged.extend(round_keys.iter().cloned());

        let reopened = Instant::now();
        let store = runtime
            .block_on(EmbeddedStore::open(
                &path,
                EmbeddedOptions {
                    history: 64,
                    ..EmbeddedOptions::default()
                },
            ))
            .unwrap_or_else(|e| panic!("round {round}: the file does not reopen cleanly: {e}"));
        let listing = runtime.block_on(store.list("")).unwrap();
        let present: BTreeSet<&str> = listing.items.iter().map(|kv| kv.key.as_str()).collect();
        let lost: Vec<&String> = acknowledged
            .iter()
            .filter(|k| !present.contains(k.as_str()))
            .collect();
        assert!(
            lost.is_empty(),
            "round {round}: {} acknowledged writes lost after SIGKILL, e.g. {:?}",
            lost.len(),
            &lost[..lost.len().min(5)]
        );
        for kv in &listing.items {
            assert_eq!(
                kv.value.len(),
                expected_len(&kv.key),
                "round {round}: {:?} holds a value of the wrong size",
                kv.key
            );
        }
        // The child only creates keys, one revision each: the revision counts them exactly,
        // so no commit can have been half applied.
        assert_eq!(
            listing.revision,
            listing.items.len() as u64,
            "round {round}: the store's revision disagrees with its keys"
        );
        eprintln!(
            "round {round:2}: killed after {delay:?} ({} acknowledged this round, {} in all, {} keys \
             on disk), reopened in {:?}",
            round_keys.len(),
            acknowledged.len(),
            listing.items.len(),
            reopened.elapsed()
        );
        drop(store);
    }
    assert!(
        mid_write_kills >= KILLS / 2,
        "only {mid_write_kills} of {KILLS} kills fell while the child was writing"
    );
    eprintln!(
        "{KILLS}/{KILLS} kills survived: {} acknowledged writes, none lost",
        acknowledged.len()
    );
}
