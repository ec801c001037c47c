//! Exponential backoff with jitter, for every link that reconnects (MQTT, the cluster's
//! WebSocket to the root), so that many children cut off by one restart do not all come
//! back in the same instant.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

/// Waits that start at `initial`, double up to `max`, each with up to 25% random jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    next: Duration,
    random: RandomState,
    draws: u64,
}

impl Backoff {
    /// A backoff from `initial` (at least 1 ms) up to `max` (at least `initial`).
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        let initial = initial.max(Duration::from_millis(1));
        Backoff {
            initial,
            max: max.max(initial),
            next: initial,
            random: RandomState::new(),
            draws: 0,
        }
    }

    /// Starts again from the first wait (after a success).
    pub fn reset(&mut self) {
        self.next = self.initial;
    }

    /// The next wait: the current step plus up to 25% jitter.
    pub fn next_wait(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        // RandomState is seeded randomly per instance; hashing a counter gives cheap,
        // well-spread numbers without a dependency on a random number crate.
        let mut hasher = self.random.build_hasher();
        hasher.write_u64(self.draws);
        self.draws += 1;
        let fraction = (hasher.finish() % 1_000) as f64 / 4_000.0;
        base + base.mul_f64(fraction)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_cap_with_bounded_jitter_and_reset() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), ms(1_000));
        let bases = [100, 200, 400, 800, 1_000, 1_000];
        for base in bases {
            let w = b.next_wait();
            assert!(
                w >= ms(base) && w <= ms(base) + ms(base) / 4,
                "{w:?} for {base}"
            );
        }
        b.reset();
        assert!(b.next_wait() <= ms(125));
        // a zero start still waits
        assert!(Backoff::new(Duration::ZERO, Duration::ZERO).next_wait() >= ms(1));
    }
}
