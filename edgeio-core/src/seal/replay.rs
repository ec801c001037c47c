//! Replay protection without a clock: per sender, `(epoch, seq)` must be new.

use serde::{Deserialize, Serialize};

/// The most reordering a receiver can tolerate: the width of its bitmap of recent seqs.
pub const MAX_WINDOW: u64 = 64;

/// The default reordering window. A child's seqs are shared between its `info` and
/// `events` topics, which MQTT does not order against each other, and concurrent `send`s
/// may publish out of seq order; 64 covers far more than either produces.
pub const DEFAULT_WINDOW: u64 = MAX_WINDOW;

/// What a receiver remembers of one sender, to refuse anything it accepted before.
///
/// Serde, so the receiver can persist it with its data and keep refusing old envelopes
/// after a restart. It belongs to one key (`key` is that key's
/// [fingerprint](super::SigningKey::fingerprint)): state recorded under another key is
/// discarded, since no envelope sealed with the old key verifies under the new one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplayState {
    /// Fingerprint of the key this state was recorded under.
    pub key: String,
    /// The newest epoch accepted (the sender bumps it at every start).
    pub epoch: u64,
    /// The highest seq accepted in `epoch`; `None` before the first.
    pub top: Option<u64>,
    /// Bit `d` set: seq `top - d` was accepted (bit 0 is `top` itself).
    pub seen: u64,
}

/// Why `(epoch, seq)` is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// An epoch older than the current one.
    StaleEpoch { current: u64 },
    /// Already accepted, or too far behind `last` to tell.
    Replayed { last: u64 },
}

impl ReplayState {
    /// Fresh state for the key with this fingerprint.
    pub fn for_key(fingerprint: impl Into<String>) -> ReplayState {
        ReplayState {
            key: fingerprint.into(),
            ..ReplayState::default()
        }
    }

    /// Whether `(epoch, seq)` would be accepted, without recording it: the signature is
    /// checked in between, so a forged envelope never moves the state.
    pub(crate) fn check(&self, epoch: u64, seq: u64, window: u64) -> Result<(), Refusal> {
        if epoch < self.epoch {
            return Err(Refusal::StaleEpoch {
                current: self.epoch,
            });
        }
        let top = match self.top {
            Some(top) if epoch == self.epoch => top,
            _ => return Ok(()),
        };
        if seq > top {
            return Ok(());
        }
        let behind = top - seq;
        if behind >= window.clamp(1, MAX_WINDOW) || self.seen & (1u64 << behind) != 0 {
            return Err(Refusal::Replayed { last: top });
        }
        Ok(())
    }

    /// Records `(epoch, seq)` as accepted; call only after [`ReplayState::check`] passed.
    pub(crate) fn record(&mut self, epoch: u64, seq: u64) {
        match self.top {
            Some(top) if epoch == self.epoch => {
                if seq > top {
                    let shift = seq - top;
                    self.seen = if shift >= MAX_WINDOW {
                        1
                    } else {
                        (self.seen << shift) | 1
                    };
                    self.top = Some(seq);
                } else {
                    self.seen |= 1u64 << (top - seq);
                }
            }
            _ => {
                self.epoch = epoch;
                self.top = Some(seq);
                self.seen = 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(state: &mut ReplayState, epoch: u64, seq: u64, window: u64) -> Result<(), Refusal> {
        state.check(epoch, seq, window)?;
        state.record(epoch, seq);
        Ok(())
    }

    #[test]
    fn increasing_seqs_pass_and_a_repeat_is_refused() {
        let mut s = ReplayState::for_key("k");
        for seq in 0..5 {
            accept(&mut s, 1, seq, 8).expect("new");
        }
        assert_eq!(accept(&mut s, 1, 4, 8), Err(Refusal::Replayed { last: 4 }));
        assert_eq!(accept(&mut s, 1, 0, 8), Err(Refusal::Replayed { last: 4 }));
    }

    #[test]
    fn reordering_within_the_window_passes_once() {
        let mut s = ReplayState::default();
        accept(&mut s, 0, 10, 4).expect("first");
        accept(&mut s, 0, 8, 4).expect("2 behind, inside a window of 4");
        assert_eq!(accept(&mut s, 0, 8, 4), Err(Refusal::Replayed { last: 10 }));
        accept(&mut s, 0, 7, 4).expect("3 behind");
        assert_eq!(
            accept(&mut s, 0, 6, 4),
            Err(Refusal::Replayed { last: 10 }),
            "4 behind is outside a window of 4"
        );
    }

    #[test]
    fn window_of_one_is_strictly_increasing() {
        let mut s = ReplayState::default();
        accept(&mut s, 0, 5, 1).expect("first");
        assert_eq!(accept(&mut s, 0, 4, 1), Err(Refusal::Replayed { last: 5 }));
        accept(&mut s, 0, 9, 1).expect("higher");
    }

    #[test]
    fn a_new_epoch_restarts_seqs_and_an_old_one_is_refused() {
        let mut s = ReplayState::default();
        accept(&mut s, 3, 100, 64).expect("first");
        accept(&mut s, 4, 0, 64).expect("the sender restarted");
        assert_eq!(
            accept(&mut s, 3, 101, 64),
            Err(Refusal::StaleEpoch { current: 4 })
        );
        assert_eq!(accept(&mut s, 4, 0, 64), Err(Refusal::Replayed { last: 0 }));
    }

    #[test]
    fn a_jump_past_the_window_forgets_the_bitmap() {
        let mut s = ReplayState::default();
        accept(&mut s, 0, 1, 64).expect("first");
        accept(&mut s, 0, 1_000, 64).expect("jump");
        assert_eq!(s.seen, 1);
        accept(&mut s, 0, 999, 64).expect("one behind, never seen");
        assert_eq!(
            accept(&mut s, 0, 1, 64),
            Err(Refusal::Replayed { last: 1_000 })
        );
    }
}
