//! What a cluster aggregate says about its nodes without listing them, so that its size is
//! bounded whatever the node count: a capped summary of their labels ([`LabelSummary`]) and a
//! Bloom filter of their ids ([`NodeFilter`]).
//!
//! Both answer "no" for certain and "yes" only as "maybe": a summary is per key, so two
//! pairs of a selector may be present on different nodes, and a filter has false positives.
//! The root sends the job on a "maybe"; the cluster, which knows its nodes, refuses it when
//! no node fits, and the refusal sends the job onward as any refusal does.

use crate::model::Labels;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::{BTreeMap, BTreeSet};

/// At most this many label keys are summarized; beyond them [`LabelSummary::more_keys`] is set.
pub const MAX_LABEL_KEYS: usize = 64;
/// At most this many values per key are listed; a key with more is in
/// [`LabelSummary::capped_keys`] instead, its values left out.
pub const MAX_LABEL_VALUES: usize = 32;
/// Keys and values longer than this (bytes) are not listed (as Kubernetes, 63): the key is
/// counted as capped instead, so the summary's size stays bounded.
pub const MAX_LABEL_LEN: usize = 63;

/// The label sets of a cluster's READY nodes, per key: the values present and how many nodes
/// carry each. At most [`MAX_LABEL_KEYS`] keys × [`MAX_LABEL_VALUES`] values of at most
/// [`MAX_LABEL_LEN`] bytes, so at most about 160 KiB whatever the node count, and a few
/// hundred bytes for the usual handful of keys. A key with more values (one per node, as a
/// host name) is only named as capped: listing some of its values would not change an
/// answer, since any value of it may be present.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LabelSummary {
    /// key → value → READY nodes with that value, for keys whose values are all listed.
    #[serde(default)]
    pub values: BTreeMap<String, BTreeMap<String, u32>>,
    /// Keys present whose values are left out (more than [`MAX_LABEL_VALUES`], or one longer
    /// than [`MAX_LABEL_LEN`]): any value of them may be present.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub capped_keys: BTreeSet<String>,
    /// Whether keys were left out (more than [`MAX_LABEL_KEYS`], or longer than
    /// [`MAX_LABEL_LEN`]): a key not listed may be present.
    #[serde(default, skip_serializing_if = "is_false")]
    pub more_keys: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl LabelSummary {
    /// The summary of `sets`, one label set per READY node. Keys and values are taken in
    /// their sorted order, so the same nodes always give the same summary.
    pub fn of<'a>(sets: impl IntoIterator<Item = &'a Labels>) -> LabelSummary {
        // counted in full first, cut afterwards: which values are kept must not depend on
        // the order the nodes come in
        let mut all: BTreeMap<&str, BTreeMap<&str, u32>> = BTreeMap::new();
        for set in sets {
            for (k, v) in set {
                *all.entry(k).or_default().entry(v).or_default() += 1;
            }
        }
        let mut summary = LabelSummary::default();
        for (key, values) in all {
            let kept = summary.values.len() + summary.capped_keys.len();
            if key.len() > MAX_LABEL_LEN || kept == MAX_LABEL_KEYS {
                summary.more_keys = true;
                continue;
            }
            let listable =
                values.len() <= MAX_LABEL_VALUES && values.keys().all(|v| v.len() <= MAX_LABEL_LEN);
            if listable {
                let values = values
                    .into_iter()
                    .map(|(v, n)| (v.to_string(), n))
                    .collect();
                summary.values.insert(key.to_string(), values);
            } else {
                summary.capped_keys.insert(key.to_string());
            }
        }
        summary
    }

    /// Whether some READY node may carry `key` = `value`: false only when the summary is
    /// sure none does.
    pub fn may_have(&self, key: &str, value: &str) -> bool {
        match self.values.get(key) {
            Some(values) => values.contains_key(value),
            None => self.capped_keys.contains(key) || self.more_keys,
        }
    }

    /// Whether some READY node may match every pair of `selector`. Per key only: it may say
    /// yes where no single node carries all pairs (the cluster then refuses), never no where
    /// one does.
    pub fn may_match(&self, selector: &Labels) -> bool {
        selector.iter().all(|(k, v)| self.may_have(k, v))
    }
}

/// Bits per READY node while under [`NodeFilter::MAX_BITS`]: with
/// [`NodeFilter::HASHES`] hashes, about 0.5 % false positives.
const BITS_PER_NODE: usize = 16;

/// A Bloom filter of a cluster's READY node ids, so the root can route a `worker_node` pin
/// without the aggregate naming every node.
///
/// Hashes are FNV-1a (64 bits) split in two for double hashing: no seed, no randomness, the
/// same bits on every machine and every run. Its size is 16 bits per node rounded up to a
/// power of two, between [`NodeFilter::MIN_BITS`] and [`NodeFilter::MAX_BITS`] (4 KiB): about
/// 0.5 % false positives up to 2,048 nodes, about 20 % at 10,000. A false positive costs one
/// refused deploy; a node in the cluster is never missed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeFilter {
    /// Bit positions per id.
    pub hashes: u8,
    /// The bits, least significant first in each byte; base64 on the wire. Its length is a
    /// power of two (bytes).
    #[serde(with = "base64")]
    pub bits: Vec<u8>,
}

impl NodeFilter {
    /// The smallest filter, in bits.
    pub const MIN_BITS: usize = 256;
    /// The largest filter, in bits (4 KiB): the aggregate's bound, reached at 2,048 nodes.
    pub const MAX_BITS: usize = 32_768;
    /// Bit positions per id.
    pub const HASHES: u8 = 3;

    /// The filter of `ids` (READY node ids).
    pub fn of<'a>(ids: impl ExactSizeIterator<Item = &'a str>) -> NodeFilter {
        let bits = (ids.len() * BITS_PER_NODE)
            .next_power_of_two()
            .clamp(Self::MIN_BITS, Self::MAX_BITS);
        let mut filter = NodeFilter {
            hashes: Self::HASHES,
            bits: vec![0; bits / 8],
        };
        for id in ids {
            for bit in filter.positions(id) {
                filter.bits[bit / 8] |= 1 << (bit % 8);
            }
        }
        filter
    }

    /// The bit positions of `id`: Kirsch–Mitzenmacher double hashing over one FNV-1a hash,
    /// mixed first (FNV-1a alone spreads a last differing byte only into the bits from 40 up,
    /// so ids like `n1`, `n2` would share the step between their positions).
    fn positions(&self, id: &str) -> impl Iterator<Item = usize> {
        let m = (self.bits.len() * 8) as u64;
        let h = fmix64(fnv1a(id.as_bytes()));
        let (h1, h2) = (h & 0xffff_ffff, (h >> 32) | 1);
        (0..u64::from(self.hashes))
            .map(move |i| (h1.wrapping_add(i.wrapping_mul(h2)) % m.max(1)) as usize)
    }

    /// Whether the cluster may have a READY node `id`: false for certain, true maybe. A
    /// malformed filter (no bits) says maybe, so a peer's bug costs a refusal, not a job.
    pub fn may_contain(&self, id: &str) -> bool {
        if self.bits.is_empty() {
            return true;
        }
        self.positions(id)
            .all(|bit| self.bits[bit / 8] & (1 << (bit % 8)) != 0)
    }
}

/// FNV-1a, 64 bits: stable across runs, platforms and Rust versions (unlike `DefaultHasher`).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// MurmurHash3's 64-bit finalizer: every input bit flips each output bit with probability
/// about one half. Fixed constants, so stable as FNV-1a is.
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// Standard base64 with padding, for the filter's bits (a JSON array of numbers would take
/// about three times the room).
mod base64 {
    use super::*;

    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub fn encode(bytes: &[u8]) -> String {
        let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    pub fn decode(text: &str) -> Option<Vec<u8>> {
        let text = text.as_bytes();
        if text.len() % 4 != 0 {
            return None;
        }
        let mut out = Vec::with_capacity(text.len() / 4 * 3);
        for chunk in text.chunks(4) {
            let pad = chunk.iter().rev().take_while(|c| **c == b'=').count();
            if pad > 2 {
                return None;
            }
            let mut n = 0u32;
            for (i, c) in chunk.iter().enumerate() {
                let v = if i >= 4 - pad {
                    0
                } else {
                    ALPHABET.iter().position(|a| a == c)? as u32
                };
                n |= v << (18 - 6 * i);
            }
            for i in 0..3 - pad {
                out.push((n >> (16 - 8 * i)) as u8);
            }
        }
        Some(out)
    }

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        decode(&text).ok_or_else(|| serde::de::Error::custom("bits: not standard base64"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn summary_counts_nodes_per_key_and_value() {
        let nodes = [
            labels(&[("zone", "a"), ("gpu", "yes")]),
            labels(&[("zone", "a")]),
            labels(&[("zone", "b")]),
        ];
        let s = LabelSummary::of(&nodes);
        assert_eq!(s.values["zone"], [("a".into(), 2), ("b".into(), 1)].into());
        assert_eq!(s.values["gpu"], [("yes".into(), 1)].into());
        assert!(s.capped_keys.is_empty());
        assert!(!s.more_keys);
    }

    #[test]
    fn selector_matching_per_key_may_say_yes_where_no_node_matches() {
        let nodes = [
            labels(&[("zone", "a"), ("gpu", "no")]),
            labels(&[("zone", "b"), ("gpu", "yes")]),
        ];
        let s = LabelSummary::of(&nodes);
        assert!(s.may_match(&labels(&[("zone", "a")])));
        // no node is zone a with a gpu: a summary per key cannot tell, so it says maybe
        assert!(s.may_match(&labels(&[("zone", "a"), ("gpu", "yes")])));
        assert!(!s.may_match(&labels(&[("zone", "c")])));
        assert!(!s.may_match(&labels(&[("disk", "ssd")])));
        assert!(s.may_match(&Labels::new()));
    }

    #[test]
    fn values_beyond_the_cap_make_the_key_maybe() {
        let nodes: Vec<Labels> = (0..40)
            .map(|i| labels(&[("rack", &format!("r{i:02}")), ("zone", "a")]))
            .collect();
        let s = LabelSummary::of(&nodes);
        assert!(!s.values.contains_key("rack"));
        assert_eq!(s.capped_keys, ["rack".to_string()].into());
        assert!(
            !s.may_have("none", "x"),
            "other keys are still known absent"
        );
        assert!(s.may_have("rack", "r39"));
        assert!(s.may_have("rack", "anything"));
        assert!(!s.may_have("zone", "b"), "an uncapped key still says no");
        let mut reversed = nodes.clone();
        reversed.reverse();
        assert_eq!(LabelSummary::of(&reversed), s);
    }

    #[test]
    fn a_key_with_exactly_the_cap_of_values_is_listed_in_full() {
        let nodes: Vec<Labels> = (0..MAX_LABEL_VALUES)
            .map(|i| labels(&[("rack", &format!("r{i:02}"))]))
            .collect();
        let s = LabelSummary::of(&nodes);
        assert_eq!(s.values["rack"].len(), MAX_LABEL_VALUES);
        assert!(s.capped_keys.is_empty());
        assert!(!s.may_have("rack", "r99"));
    }

    #[test]
    fn keys_beyond_the_cap_make_unknown_keys_maybe() {
        let set: Labels = (0..MAX_LABEL_KEYS + 1)
            .map(|i| (format!("k{i:03}"), "v".to_string()))
            .collect();
        let s = LabelSummary::of([&set]);
        assert_eq!(s.values.len(), MAX_LABEL_KEYS);
        assert!(s.more_keys);
        assert!(s.may_have("k064", "v"), "the key left out");
        assert!(s.may_have("other", "v"));
        assert!(!s.may_have("k000", "w"), "a listed key still says no");
    }

    #[test]
    fn long_labels_are_not_listed_but_stay_maybe() {
        let long = "x".repeat(MAX_LABEL_LEN + 1);
        let s = LabelSummary::of([&labels(&[(&long, "v"), ("zone", &long)])]);
        assert!(s.more_keys);
        assert_eq!(s.capped_keys, ["zone".to_string()].into());
        assert!(s.values.is_empty());
        assert!(s.may_have(&long, "v"));
        assert!(s.may_have("zone", &long));
    }

    #[test]
    fn fnv1a_is_the_published_function() {
        // test vectors from the FNV reference (draft-eastlake-fnv)
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn filter_holds_every_node_it_was_built_from() {
        let ids: Vec<String> = (0..10_000).map(|i| format!("node-{i}")).collect();
        let f = NodeFilter::of(ids.iter().map(String::as_str));
        assert_eq!(f.bits.len() * 8, NodeFilter::MAX_BITS);
        assert!(ids.iter().all(|id| f.may_contain(id)));
    }

    #[test]
    fn filter_false_positives_are_rare_when_not_full() {
        let ids: Vec<String> = (0..100).map(|i| format!("node-{i}")).collect();
        let f = NodeFilter::of(ids.iter().map(String::as_str));
        assert_eq!(f.bits.len() * 8, 2048, "16 bits per node, a power of two");
        let false_positives = (0..10_000)
            .filter(|i| f.may_contain(&format!("other-{i}")))
            .count();
        // 0.5 % expected; the bits are the same on every run, so this count is too
        assert!(false_positives < 100, "{false_positives} false positives");
        let full = NodeFilter::of(
            (0..10_000)
                .map(|i| format!("node-{i}"))
                .collect::<Vec<_>>()
                .iter()
                .map(String::as_str),
        );
        let false_positives = (0..10_000)
            .filter(|i| full.may_contain(&format!("other-{i}")))
            .count();
        // at the cap with 10,000 nodes, about 20 % (documented on NodeFilter)
        assert!(
            (1_500..2_600).contains(&false_positives),
            "{false_positives} false positives at the cap"
        );
    }

    #[test]
    fn filter_bits_are_the_same_every_run() {
        let f = NodeFilter::of(["n1", "n2"].into_iter());
        assert_eq!(f.bits.len(), NodeFilter::MIN_BITS / 8);
        let set: Vec<usize> = (0..NodeFilter::MIN_BITS)
            .filter(|b| f.bits[b / 8] & (1 << (b % 8)) != 0)
            .collect();
        // fixed by FNV-1a: a change here changes what every root reads
        assert_eq!(set, [4, 21, 38, 55, 91, 178]);
        assert!(!f.may_contain("n3"));
    }

    #[test]
    fn an_empty_filter_holds_nothing_and_a_malformed_one_says_maybe() {
        let f = NodeFilter::of(std::iter::empty());
        assert!(!f.may_contain("n1"));
        let broken = NodeFilter {
            hashes: 3,
            bits: Vec::new(),
        };
        assert!(broken.may_contain("n1"));
    }

    #[test]
    fn filter_round_trips_through_json_as_base64() {
        let f = NodeFilter::of(["a", "b", "c"].into_iter());
        let json = serde_json::to_value(&f).unwrap();
        assert_eq!(json["bits"].as_str().unwrap().len(), 44);
        assert_eq!(serde_json::from_value::<NodeFilter>(json).unwrap(), f);
        for n in 0..7 {
            let bytes: Vec<u8> = (0..n).map(|i| i * 37 + 1).collect();
            assert_eq!(base64::decode(&base64::encode(&bytes)), Some(bytes));
        }
        assert_eq!(base64::encode(b"foob"), "Zm9vYg==");
        assert_eq!(base64::decode("Zm9v!g=="), None);
        assert_eq!(base64::decode("Zm9"), None);
    }
}
