//! Time and ids as inputs.
//!
//! Decision code reads the time and draws ids only through a [`Context`] it was given, never
//! from `SystemTime`, `Instant::now` or `Uuid::new_v4`: a test (or the simulator) gives it a
//! [`ManualClock`] and [`SeededIds`] and can say "at t = 4.5 s the node is LOST", and a run
//! with the same inputs makes the same decisions with the same ids.
//!
//! ```
//! use edgeio_core::clock::{Context, ManualClock, SeededIds};
//! use std::sync::Arc;
//!
//! let clock = Arc::new(ManualClock::new(1_000));
//! let cx = Context::new(clock.clone(), Arc::new(SeededIds::new(7)));
//! assert_eq!(cx.now_ms(), 1_000);
//! clock.advance_ms(500);
//! assert_eq!(cx.now_ms(), 1_500);
//! let again = Context::new(Arc::new(ManualClock::new(0)), Arc::new(SeededIds::new(7)));
//! assert_eq!(cx.next_id(), again.next_id()); // same seed, same ids
//! ```

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{SystemTime, UNIX_EPOCH};
use uuid::Uuid;

/// A source of the current time, in Unix milliseconds.
pub trait Clock: Send + Sync {
    /// Milliseconds since the Unix epoch, now.
    fn now_ms(&self) -> u64;
}

/// A source of fresh, unique ids (message ids, job id suffixes).
pub trait IdSource: Send + Sync {
    /// The next id; never the same twice from one source.
    fn next_uuid(&self) -> Uuid;
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// Random (v4) uuids.
#[derive(Debug, Clone, Copy, Default)]
pub struct RandomIds;

impl IdSource for RandomIds {
    fn next_uuid(&self) -> Uuid {
        Uuid::new_v4()
    }
}

/// A clock that moves only when told: for tests by value and the simulator's virtual time.
#[derive(Debug, Default)]
pub struct ManualClock {
    now: AtomicU64,
}

impl ManualClock {
    /// A clock showing `now_ms`.
    pub fn new(now_ms: u64) -> ManualClock {
        ManualClock {
            now: AtomicU64::new(now_ms),
        }
    }

    /// Moves the clock to `now_ms` (never backwards: an earlier time is ignored).
    pub fn set_ms(&self, now_ms: u64) {
        self.now.fetch_max(now_ms, Ordering::SeqCst);
    }

    /// Moves the clock forward by `ms`.
    pub fn advance_ms(&self, ms: u64) {
        self.now.fetch_add(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now.load(Ordering::SeqCst)
    }
}

/// Ids from a seed and a counter: the same seed gives the same ids in the same order.
#[derive(Debug, Default)]
pub struct SeededIds {
    seed: u64,
    next: AtomicU64,
}

impl SeededIds {
    /// A source numbering from zero under `seed` (two sources with different seeds never
    /// collide).
    pub fn new(seed: u64) -> SeededIds {
        SeededIds {
            seed,
            next: AtomicU64::new(0),
        }
    }
}

impl IdSource for SeededIds {
    fn next_uuid(&self) -> Uuid {
        let n = self.next.fetch_add(1, Ordering::SeqCst);
        // splitmix64 of (seed, n): well spread bits, so ids drawn from small seeds differ in
        // their first digits too (job ids show eight of them)
        let mix = |mut z: u64| {
            z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let high = mix(self.seed ^ mix(n));
        let low = mix(high ^ n);
        // version-4 layout bits set, so the ids look like any other and parse as uuids
        let raw = (u128::from(high) << 64) | u128::from(low);
        let raw = (raw & !(0xf << 76) & !(0x3 << 62)) | (0x4 << 76) | (0x2 << 62);
        Uuid::from_u128(raw)
    }
}

/// What decision code reads time and ids from: a clock and an id source, cheap to clone.
#[derive(Clone)]
pub struct Context {
    clock: Arc<dyn Clock>,
    ids: Arc<dyn IdSource>,
}

static SYSTEM: LazyLock<Context> =
    LazyLock::new(|| Context::new(Arc::new(SystemClock), Arc::new(RandomIds)));

impl Context {
    /// A context over `clock` and `ids`.
    pub fn new(clock: Arc<dyn Clock>, ids: Arc<dyn IdSource>) -> Context {
        Context { clock, ids }
    }

    /// The wall clock and random ids: what the reference binaries run on.
    pub fn system() -> Context {
        SYSTEM.clone()
    }

    /// Unix milliseconds now, by this context's clock.
    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// A fresh id, as text (hyphenated uuid).
    pub fn next_id(&self) -> String {
        self.ids.next_uuid().to_string()
    }

    /// A fresh id.
    pub fn next_uuid(&self) -> Uuid {
        self.ids.next_uuid()
    }
}

impl Default for Context {
    fn default() -> Self {
        Context::system()
    }
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("now_ms", &self.now_ms())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_ids_repeat_per_seed_and_differ_across_seeds() {
        let a = SeededIds::new(1);
        let b = SeededIds::new(1);
        let c = SeededIds::new(2);
        let first = a.next_uuid();
        assert_eq!(first, b.next_uuid());
        assert_ne!(first, c.next_uuid());
        assert_ne!(first, a.next_uuid());
        assert_eq!(first.get_version_num(), 4);
    }

    #[test]
    fn a_manual_clock_never_goes_back() {
        let clock = ManualClock::new(10);
        clock.set_ms(5);
        assert_eq!(clock.now_ms(), 10);
        clock.set_ms(20);
        clock.advance_ms(5);
        assert_eq!(clock.now_ms(), 25);
    }

    #[test]
    fn the_system_context_reads_the_wall_clock() {
        let before = SystemClock.now_ms();
        let cx = Context::system();
        assert!(cx.now_ms() >= before);
        assert_ne!(cx.next_id(), cx.next_id());
    }
}
