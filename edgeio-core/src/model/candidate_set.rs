//! The candidates a scheduler chooses among, with the indexes policies query instead of scanning.
//!
//! The engine owns the set and updates it incrementally: a status report updates one
//! candidate's free resources in O(log n); registering or losing a candidate rebuilds the
//! indexes in O(n log n) (rare). Two indexes are kept:
//!
//! * a segment tree over the candidates in id order whose inner nodes hold the most free CPU,
//!   memory, disk and GPUs below them, the union of their architectures and runtimes, and the
//!   freshest data age — a first-fit query descends only into subtrees that may hold a fit;
//! * ordered sets by load (CPU share + memory share used), then id, one per class of
//!   candidates with the same architectures and runtimes — least-loaded queries walk only the
//!   classes that can run the job, from the bottom, so candidates that can never take it
//!   (wrong arch or runtime) are not walked past again and again.

use super::{Arch, Candidate, Resources, RuntimeKind};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Which tier a candidate set belongs to: what its candidates are.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    /// Cluster tier: candidates are worker nodes (`worker_node` pins apply).
    #[default]
    Nodes,
    /// Root tier: candidates are cluster aggregates (`cluster` pins apply).
    Clusters,
}

/// What a first-fit query prunes on; the caller's `accept` closure still checks everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct Need<'a> {
    /// Resources that must be free.
    pub resources: Resources,
    /// Architecture that must be offered.
    pub arch: Option<&'a Arch>,
    /// Runtime kind that must be offered.
    pub runtime: Option<&'a RuntimeKind>,
    /// Data no older than this.
    pub max_age: Option<Duration>,
}

// Summary of a subtree of the segment tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Agg {
    count: u32,
    cpu: u64,
    mem: u64,
    disk: u64,
    gpus: u32,
    archs: u64,
    runtimes: u64,
    min_age_ms: u64,
}

impl Agg {
    const EMPTY: Agg = Agg {
        count: 0,
        cpu: 0,
        mem: 0,
        disk: 0,
        gpus: 0,
        archs: 0,
        runtimes: 0,
        min_age_ms: u64::MAX,
    };

    fn merge(a: &Agg, b: &Agg) -> Agg {
        Agg {
            count: a.count + b.count,
            cpu: a.cpu.max(b.cpu),
            mem: a.mem.max(b.mem),
            disk: a.disk.max(b.disk),
            gpus: a.gpus.max(b.gpus),
            archs: a.archs | b.archs,
            runtimes: a.runtimes | b.runtimes,
            min_age_ms: a.min_age_ms.min(b.min_age_ms),
        }
    }

    fn may_fit(&self, need: &Resources, arch_bit: u64, runtime_bit: u64, max_age_ms: u64) -> bool {
        self.count > 0
            && self.cpu >= need.cpu_millis
            && self.mem >= need.memory_bytes
            && self.disk >= need.disk_bytes
            && self.gpus >= need.gpus
            && self.archs & arch_bit == arch_bit
            && self.runtimes & runtime_bit == runtime_bit
            && self.min_age_ms <= max_age_ms
    }
}

// Gives up to 63 distinct names a bit each; the 64th bit stands for "any other", so a set with
// more kinds than bits still answers correctly (it just prunes less).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Bits<T: PartialEq> {
    names: Vec<T>,
}

impl<T: PartialEq> Default for Bits<T> {
    fn default() -> Self {
        Bits { names: Vec::new() }
    }
}

const OTHER_BIT: u64 = 1 << 63;

impl<T: PartialEq + Clone> Bits<T> {
    fn bit_or_add(&mut self, name: &T) -> u64 {
        if let Some(i) = self.names.iter().position(|n| n == name) {
            return 1 << i;
        }
        if self.names.len() < 63 {
            self.names.push(name.clone());
            1 << (self.names.len() - 1)
        } else {
            OTHER_BIT
        }
    }

    /// `Some(bit)` for a known name, `Some(OTHER_BIT)` when names overflowed, `None` when
    /// no candidate can have it.
    fn bit(&self, name: &T) -> Option<u64> {
        match self.names.iter().position(|n| n == name) {
            Some(i) => Some(1 << i),
            None if self.names.len() >= 63 => Some(OTHER_BIT),
            None => None,
        }
    }
}

/// The candidates a scheduler chooses among, owned and updated incrementally by the engine.
///
/// Iteration is in id order so that the same calls on the same set give the same placements.
#[derive(Debug, Clone, Default)]
pub struct CandidateSet {
    tier: Tier,
    // sorted by id; a slot is an index into this vector
    slots: Vec<Candidate>,
    // segment tree: leaves at [cap, 2*cap)
    tree: Vec<Agg>,
    cap: usize,
    // (arch mask, runtime mask) -> {(load, slot)}
    by_load: BTreeMap<(u64, u64), BTreeSet<(u64, u32)>>,
    archs: Bits<Arch>,
    runtimes: Bits<RuntimeKind>,
}

impl PartialEq for CandidateSet {
    fn eq(&self, other: &Self) -> bool {
        self.tier == other.tier && self.slots == other.slots
    }
}

impl Eq for CandidateSet {}

fn age_ms(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX)) as u64
}

impl CandidateSet {
    /// An empty set of nodes (cluster tier).
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty set of the given tier.
    pub fn for_tier(tier: Tier) -> Self {
        CandidateSet {
            tier,
            ..Self::default()
        }
    }

    /// What the candidates are.
    pub fn tier(&self) -> Tier {
        self.tier
    }

    fn slot_of(&self, id: &str) -> Result<usize, usize> {
        self.slots.binary_search_by(|c| c.id.as_str().cmp(id))
    }

    fn leaf(&mut self, slot: usize) -> Agg {
        let c = &self.slots[slot];
        let mut archs = 0;
        for a in &c.architectures {
            archs |= self.archs.bit_or_add(a);
        }
        let mut runtimes = 0;
        for r in &c.runtimes {
            runtimes |= self.runtimes.bit_or_add(r);
        }
        Agg {
            count: 1,
            cpu: c.free.cpu_millis,
            mem: c.free.memory_bytes,
            disk: c.free.disk_bytes,
            gpus: c.free.gpus,
            archs,
            runtimes,
            min_age_ms: age_ms(c.data_age),
        }
    }

    fn rebuild(&mut self) {
        self.cap = self.slots.len().next_power_of_two().max(1);
        self.tree = vec![Agg::EMPTY; 2 * self.cap];
        self.archs = Bits::default();
        self.runtimes = Bits::default();
        for slot in 0..self.slots.len() {
            self.tree[self.cap + slot] = self.leaf(slot);
        }
        for i in (1..self.cap).rev() {
            self.tree[i] = Agg::merge(&self.tree[2 * i], &self.tree[2 * i + 1]);
        }
        self.by_load.clear();
        for slot in 0..self.slots.len() {
            let leaf = self.tree[self.cap + slot];
            self.by_load
                .entry((leaf.archs, leaf.runtimes))
                .or_default()
                .insert((self.slots[slot].load(), slot as u32));
        }
    }

    // After a change to one candidate: O(log n).
    fn refresh(&mut self, slot: usize, old_load: u64) {
        let mut i = self.cap + slot;
        let old_leaf = self.tree[i];
        let new_leaf = self.leaf(slot);
        if let Some(class) = self.by_load.get_mut(&(old_leaf.archs, old_leaf.runtimes)) {
            class.remove(&(old_load, slot as u32));
        }
        self.by_load
            .entry((new_leaf.archs, new_leaf.runtimes))
            .or_default()
            .insert((self.slots[slot].load(), slot as u32));
        self.tree[i] = new_leaf;
        while i > 1 {
            i /= 2;
            self.tree[i] = Agg::merge(&self.tree[2 * i], &self.tree[2 * i + 1]);
        }
    }

    /// Adds or replaces a candidate (replacing keeps the indexes in O(log n)).
    pub fn insert(&mut self, candidate: Candidate) {
        match self.slot_of(&candidate.id) {
            Ok(slot) => {
                let old = self.slots[slot].load();
                self.slots[slot] = candidate;
                self.refresh(slot, old);
            }
            Err(pos) => {
                self.slots.insert(pos, candidate);
                self.rebuild();
            }
        }
    }

    /// Updates a candidate's free resources and data age; false when it is not in the set.
    pub fn update_free(&mut self, id: &str, free: Resources, data_age: Duration) -> bool {
        let Ok(slot) = self.slot_of(id) else {
            return false;
        };
        let old = self.slots[slot].load();
        self.slots[slot].free = free;
        self.slots[slot].data_age = data_age;
        self.refresh(slot, old);
        true
    }

    /// Takes `need` from a candidate's free resources (after a placement); false when absent.
    pub fn reserve(&mut self, id: &str, need: &Resources) -> bool {
        let Ok(slot) = self.slot_of(id) else {
            return false;
        };
        let old = self.slots[slot].load();
        self.slots[slot].free = self.slots[slot].free.saturating_sub(need);
        self.refresh(slot, old);
        true
    }

    /// Records that `job` now has an instance on candidate `id` (for anti-affinity).
    pub fn add_job(&mut self, id: &str, job: &str) -> bool {
        match self.slot_of(id) {
            Ok(slot) => {
                self.slots[slot].jobs.insert(job.to_string());
                true
            }
            Err(_) => false,
        }
    }

    /// Removes a candidate, returning it.
    pub fn remove(&mut self, id: &str) -> Option<Candidate> {
        let slot = self.slot_of(id).ok()?;
        let c = self.slots.remove(slot);
        self.rebuild();
        Some(c)
    }

    /// A candidate by id.
    pub fn get(&self, id: &str) -> Option<&Candidate> {
        self.slot_of(id).ok().map(|slot| &self.slots[slot])
    }

    /// All candidates in id order.
    pub fn iter(&self) -> impl Iterator<Item = &Candidate> {
        self.slots.iter()
    }

    /// All candidates from the least loaded up (ties in id order). Sorts: O(n log n).
    pub fn by_load(&self) -> Vec<&Candidate> {
        let mut all: Vec<(u64, u32)> = self.by_load.values().flatten().copied().collect();
        all.sort_unstable();
        all.into_iter()
            .map(|(_, slot)| &self.slots[slot as usize])
            .collect()
    }

    // The bits a candidate must have for `need`'s arch and runtime (0: anything goes); `None`
    // when no candidate has that arch or runtime at all.
    fn need_bits(&self, need: &Need<'_>) -> Option<(u64, u64)> {
        let arch_bit = match need.arch {
            Some(a) => self.archs.bit(a)?,
            None => 0,
        };
        let runtime_bit = match need.runtime {
            Some(r) => self.runtimes.bit(r)?,
            None => 0,
        };
        Some((arch_bit, runtime_bit))
    }

    // The load classes whose candidates can run `need`'s arch and runtime; `None` when no
    // candidate has that arch or runtime at all.
    fn classes<'a>(
        &'a self,
        need: &Need<'_>,
    ) -> Option<impl Iterator<Item = &'a BTreeSet<(u64, u32)>> + 'a> {
        let (arch_bit, runtime_bit) = self.need_bits(need)?;
        Some(
            self.by_load
                .iter()
                .filter(move |((archs, runtimes), _)| {
                    archs & arch_bit == arch_bit && runtimes & runtime_bit == runtime_bit
                })
                .map(|(_, set)| set),
        )
    }

    /// The least loaded candidate (ties: lowest id) that may run `need` and that `accept`
    /// takes. Only classes with a fitting arch and runtime are walked.
    pub fn least_loaded(
        &self,
        need: &Need<'_>,
        mut accept: impl FnMut(&Candidate) -> bool,
    ) -> Option<&Candidate> {
        let mut best: Option<(u64, u32)> = None;
        for class in self.classes(need)? {
            for &(load, slot) in class {
                if best.is_some_and(|b| (load, slot) >= b) {
                    break; // this class cannot beat the best any more
                }
                if accept(&self.slots[slot as usize]) {
                    best = Some((load, slot));
                    break;
                }
            }
        }
        best.map(|(_, slot)| &self.slots[slot as usize])
    }

    /// Among candidates with exactly `load` whose id sorts after `after`, the lowest id that
    /// may run `need` and that `accept` takes (round-robin among equals).
    pub fn next_with_load(
        &self,
        need: &Need<'_>,
        load: u64,
        after: &str,
        mut accept: impl FnMut(&Candidate) -> bool,
    ) -> Option<&Candidate> {
        let start = match self.slot_of(after) {
            Ok(slot) => slot + 1,
            Err(pos) => pos,
        } as u32;
        let mut best: Option<u32> = None;
        for class in self.classes(need)? {
            for &(_, slot) in class.range((load, start)..=(load, u32::MAX)) {
                if best.is_some_and(|b| slot >= b) {
                    break;
                }
                if accept(&self.slots[slot as usize]) {
                    best = Some(slot);
                    break;
                }
            }
        }
        best.map(|slot| &self.slots[slot as usize])
    }

    /// The first candidate in id order that may fit `need` and that `accept` takes.
    ///
    /// The tree prunes subtrees that cannot hold a fit; `accept` runs only on leaves that
    /// pass the pruning, and must itself check everything the caller requires.
    pub fn first_fit(
        &self,
        need: &Need<'_>,
        mut accept: impl FnMut(&Candidate) -> bool,
    ) -> Option<&Candidate> {
        if self.slots.is_empty() {
            return None;
        }
        let (arch_bit, runtime_bit) = self.need_bits(need)?;
        let max_age = need.max_age.map(age_ms).unwrap_or(u64::MAX);
        // iterative depth-first search, left child first
        let mut stack = Vec::with_capacity(64);
        stack.push(1usize);
        while let Some(i) = stack.pop() {
            if !self.tree[i].may_fit(&need.resources, arch_bit, runtime_bit, max_age) {
                continue;
            }
            if i >= self.cap {
                let c = &self.slots[i - self.cap];
                if accept(c) {
                    return Some(c);
                }
            } else {
                stack.push(2 * i + 1);
                stack.push(2 * i);
            }
        }
        None
    }

    /// Number of candidates.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// True when there is no candidate.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }
}

impl FromIterator<Candidate> for CandidateSet {
    fn from_iter<I: IntoIterator<Item = Candidate>>(iter: I) -> Self {
        let mut set = CandidateSet::new();
        set.extend(iter);
        set
    }
}

impl Extend<Candidate> for CandidateSet {
    /// Adds many candidates with one rebuild of the indexes; a repeated id keeps the last.
    fn extend<I: IntoIterator<Item = Candidate>>(&mut self, iter: I) {
        let before = self.slots.len();
        let mut all = std::mem::take(&mut self.slots);
        all.extend(iter);
        if all.len() == before {
            self.slots = all;
            return;
        }
        // the last of equal ids wins: reverse, stable-sort, keep the first of each run
        all.reverse();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all.dedup_by(|later, earlier| later.id == earlier.id);
        self.slots = all;
        self.rebuild();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: &str, cpu: u64, mem: u64) -> Candidate {
        let mut c = Candidate::new(
            id,
            Resources {
                cpu_millis: cpu,
                memory_bytes: mem,
                ..Resources::ZERO
            },
        );
        c.runtimes = vec![RuntimeKind::new("docker")];
        c
    }

    fn need(cpu: u64, mem: u64) -> Need<'static> {
        Need {
            resources: Resources {
                cpu_millis: cpu,
                memory_bytes: mem,
                ..Resources::ZERO
            },
            ..Need::default()
        }
    }

    #[test]
    fn first_fit_finds_the_first_fitting_in_id_order() {
        let set: CandidateSet = [
            c("d", 4000, 4),
            c("a", 100, 1),
            c("c", 2000, 8),
            c("b", 4000, 1),
        ]
        .into_iter()
        .collect();
        let ids: Vec<&str> = set.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(ids, ["a", "b", "c", "d"]);
        assert_eq!(set.first_fit(&need(1000, 2), |_| true).unwrap().id, "c");
        assert_eq!(set.first_fit(&need(3000, 2), |_| true).unwrap().id, "d");
        assert!(set.first_fit(&need(5000, 1), |_| true).is_none());
        // the closure sees only pruned-in leaves and can refuse them
        assert_eq!(
            set.first_fit(&need(1000, 2), |c| c.id != "c").unwrap().id,
            "d"
        );
    }

    #[test]
    fn updates_move_candidates_in_both_indexes() {
        let mut set: CandidateSet = (0..100).map(|i| c(&format!("n{i:03}"), 1000, 10)).collect();
        assert!(set.reserve("n000", &need(600, 0).resources));
        assert_eq!(set.first_fit(&need(500, 1), |_| true).unwrap().id, "n001");
        let least: Vec<&str> = set
            .by_load()
            .iter()
            .take(2)
            .map(|c| c.id.as_str())
            .collect();
        assert_eq!(least, ["n001", "n002"]);
        assert_eq!(set.by_load().last().unwrap().id, "n000");
        assert_eq!(set.least_loaded(&need(0, 0), |_| true).unwrap().id, "n001");
        assert!(set.update_free(
            "n000",
            Resources {
                cpu_millis: 1000,
                memory_bytes: 10,
                ..Resources::ZERO
            },
            Duration::ZERO
        ));
        assert_eq!(set.first_fit(&need(500, 1), |_| true).unwrap().id, "n000");
        assert!(set.remove("n000").is_some());
        assert_eq!(set.len(), 99);
        assert_eq!(set.first_fit(&need(500, 1), |_| true).unwrap().id, "n001");
        assert!(!set.reserve("n000", &Resources::ZERO));
    }

    #[test]
    fn arch_runtime_and_age_prune() {
        let mut arm = c("a", 4000, 4);
        arm.architectures = vec![Arch::Arm64];
        let mut old = c("b", 4000, 4);
        old.data_age = Duration::from_secs(60);
        let fresh = c("c", 4000, 4);
        let set: CandidateSet = [arm, old, fresh].into_iter().collect();
        let amd = Arch::Amd64;
        let docker = RuntimeKind::new("docker");
        let q = Need {
            arch: Some(&amd),
            runtime: Some(&docker),
            max_age: Some(Duration::from_secs(10)),
            ..need(1, 1)
        };
        assert_eq!(set.first_fit(&q, |_| true).unwrap().id, "c");
        let riscv = Arch::Riscv64;
        assert!(set
            .first_fit(
                &Need {
                    arch: Some(&riscv),
                    ..need(1, 1)
                },
                |_| true
            )
            .is_none());
    }

    #[test]
    fn extend_keeps_the_last_of_repeated_ids() {
        let mut set: CandidateSet = [c("a", 1, 1)].into_iter().collect();
        set.extend([c("a", 2, 2), c("b", 1, 1)]);
        assert_eq!(set.len(), 2);
        assert_eq!(set.get("a").unwrap().free.cpu_millis, 2);
    }

    #[test]
    fn round_robin_helper_finds_the_next_equal_after_a_cursor() {
        let set: CandidateSet = ["a", "b", "c"].iter().map(|id| c(id, 10, 10)).collect();
        let q = need(0, 0);
        assert_eq!(set.next_with_load(&q, 0, "a", |_| true).unwrap().id, "b");
        assert_eq!(
            set.next_with_load(&q, 0, "a", |c| c.id != "b").unwrap().id,
            "c"
        );
        assert!(set.next_with_load(&q, 0, "c", |_| true).is_none());
    }

    #[test]
    fn least_loaded_skips_classes_that_cannot_run_the_job() {
        let mut arm = c("a", 4000, 4);
        arm.architectures = vec![Arch::Arm64];
        let mut busy = c("b", 4000, 4);
        busy.free.cpu_millis = 1000;
        let set: CandidateSet = [arm, busy].into_iter().collect();
        let amd = Arch::Amd64;
        let q = Need {
            arch: Some(&amd),
            ..need(0, 0)
        };
        assert_eq!(set.least_loaded(&q, |_| true).unwrap().id, "b");
        assert_eq!(set.least_loaded(&need(0, 0), |_| true).unwrap().id, "a");
    }
}
