//! Byte layouts of the embedded store's table values (format version 1).
//!
//! Every integer is little-endian. Decoders check lengths and tags and answer a description of
//! what is wrong, which the caller turns into a "damaged file" error naming the file: a damaged
//! value must never panic nor read as something else.

use bytes::Bytes;
use edgeio_core::store::{KeyValue, LeaseId, Revision, WatchEvent};

/// The length of an entry's header: create revision, mod revision, lease id.
const ENTRY_HEADER: usize = 24;
const TAG_PUT: u8 = 0;
const TAG_DELETE: u8 = 1;

/// A key's stored state: its revisions, its lease (`0` for none) and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub create_revision: Revision,
    pub mod_revision: Revision,
    pub lease: LeaseId,
    pub value: Bytes,
}

impl Entry {
    pub(crate) fn into_key_value(self, key: &str) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: self.value,
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
        }
    }
}

fn u64_at(bytes: &[u8], at: usize) -> Option<u64> {
    let chunk: [u8; 8] = bytes.get(at..at + 8)?.try_into().ok()?;
    Some(u64::from_le_bytes(chunk))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    let chunk: [u8; 4] = bytes.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_le_bytes(chunk))
}

/// `kv` table value: `create u64 | mod u64 | lease i64 | value…`.
pub(crate) fn encode_entry(
    create_revision: Revision,
    mod_revision: Revision,
    lease: LeaseId,
    value: &[u8],
) -> Vec<u8> {
    let mut out = Vec::with_capacity(ENTRY_HEADER + value.len());
    out.extend_from_slice(&create_revision.to_le_bytes());
    out.extend_from_slice(&mod_revision.to_le_bytes());
    out.extend_from_slice(&lease.to_le_bytes());
    out.extend_from_slice(value);
    out
}

/// An entry's revisions and lease, without copying its value.
pub(crate) fn decode_entry_head(bytes: &[u8]) -> Result<(Revision, Revision, LeaseId), String> {
    let (Some(create_revision), Some(mod_revision), Some(lease)) =
        (u64_at(bytes, 0), u64_at(bytes, 8), u64_at(bytes, 16))
    else {
        return Err(format!(
            "a key's record is {} bytes, shorter than its {ENTRY_HEADER}-byte header",
            bytes.len()
        ));
    };
    if create_revision == 0 || mod_revision < create_revision {
        return Err(format!(
            "a key's record has create revision {create_revision} and mod revision {mod_revision}"
        ));
    }
    Ok((create_revision, mod_revision, lease as LeaseId))
}

pub(crate) fn decode_entry(bytes: &[u8]) -> Result<Entry, String> {
    let (create_revision, mod_revision, lease) = decode_entry_head(bytes)?;
    Ok(Entry {
        create_revision,
        mod_revision,
        lease,
        value: Bytes::copy_from_slice(&bytes[ENTRY_HEADER..]),
    })
}

/// `history` table value: `0 | create u64 | key length u32 | key | value` for a put,
/// `1 | key` for a delete. The event's revision is the table key.
pub(crate) fn encode_event(event: &WatchEvent) -> Vec<u8> {
    match event {
        WatchEvent::Put(kv) => {
            let mut out = Vec::with_capacity(13 + kv.key.len() + kv.value.len());
            out.push(TAG_PUT);
            out.extend_from_slice(&kv.create_revision.to_le_bytes());
            // Keys longer than 4 GiB cannot reach here: redb limits keys and values far below.
            out.extend_from_slice(&(kv.key.len() as u32).to_le_bytes());
            out.extend_from_slice(kv.key.as_bytes());
            out.extend_from_slice(&kv.value);
            out
        }
        WatchEvent::Delete { key, .. } => {
            let mut out = Vec::with_capacity(1 + key.len());
            out.push(TAG_DELETE);
            out.extend_from_slice(key.as_bytes());
            out
        }
    }
}

pub(crate) fn decode_event(revision: Revision, bytes: &[u8]) -> Result<WatchEvent, String> {
    let utf8 = |raw: &[u8]| {
        String::from_utf8(raw.to_vec())
            .map_err(|_| format!("the event at revision {revision} names a key that is not UTF-8"))
    };
    match bytes.first() {
        Some(&TAG_PUT) => {
            let short = || format!("the put event at revision {revision} is truncated");
            let create_revision = u64_at(bytes, 1).ok_or_else(short)?;
            let key_len = u32_at(bytes, 9).ok_or_else(short)? as usize;
            let key_end = 13usize.checked_add(key_len).ok_or_else(short)?;
            let key = utf8(bytes.get(13..key_end).ok_or_else(short)?)?;
            Ok(WatchEvent::Put(KeyValue {
                key,
                value: Bytes::copy_from_slice(&bytes[key_end..]),
                create_revision,
                mod_revision: revision,
            }))
        }
        Some(&TAG_DELETE) => Ok(WatchEvent::Delete {
            key: utf8(&bytes[1..])?,
            revision,
        }),
        Some(tag) => Err(format!(
            "the event at revision {revision} has unknown tag {tag}"
        )),
        None => Err(format!("the event at revision {revision} is empty")),
    }
}

/// `leases` table value: `ttl in ms u64 | deadline in ms since the Unix epoch u64`.
pub(crate) fn encode_lease(ttl_ms: u64, deadline_unix_ms: u64) -> [u8; 16] {
    let mut out = [0; 16];
    out[..8].copy_from_slice(&ttl_ms.to_le_bytes());
    out[8..].copy_from_slice(&deadline_unix_ms.to_le_bytes());
    out
}

pub(crate) fn decode_lease(lease: LeaseId, bytes: &[u8]) -> Result<(u64, u64), String> {
    match (bytes.len(), u64_at(bytes, 0), u64_at(bytes, 8)) {
        (16, Some(ttl), Some(deadline)) => Ok((ttl, deadline)),
        (len, ..) => Err(format!(
            "lease {lease}'s record is {len} bytes, expected 16"
        )),
    }
}

/// The `lease_keys` table key binding `key` to `lease`; sorts a lease's keys together.
pub(crate) fn lease_key(lease: LeaseId, key: &str) -> String {
    format!("{}{key}", lease_prefix(lease))
}

pub(crate) fn lease_prefix(lease: LeaseId) -> String {
    format!("{:016x}/", lease as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_and_events_round_trip() {
        let bytes = encode_entry(3, 9, 7, b"v\0\xff");
        let entry = decode_entry(&bytes).unwrap();
        assert_eq!(
            entry,
            Entry {
                create_revision: 3,
                mod_revision: 9,
                lease: 7,
                value: Bytes::from_static(b"v\0\xff"),
            }
        );
        let put = WatchEvent::Put(entry.into_key_value("k/é"));
        assert_eq!(decode_event(9, &encode_event(&put)).unwrap(), put);
        let delete = WatchEvent::Delete {
            key: "gone".into(),
            revision: 12,
        };
        assert_eq!(decode_event(12, &encode_event(&delete)).unwrap(), delete);
        assert_eq!(
            decode_lease(4, &encode_lease(2_000, 99)).unwrap(),
            (2_000, 99)
        );
    }

    #[test]
    fn damaged_records_are_described_not_panicked_on() {
        assert!(decode_entry(&[1, 2, 3]).unwrap_err().contains("shorter"));
        assert!(decode_entry(&encode_entry(5, 4, 0, b""))
            .unwrap_err()
            .contains("mod revision 4"));
        assert!(decode_event(1, &[]).unwrap_err().contains("empty"));
        assert!(decode_event(1, &[9]).unwrap_err().contains("unknown tag 9"));
        assert!(decode_event(1, &[0, 1, 2])
            .unwrap_err()
            .contains("truncated"));
        let mut long_key = encode_event(&WatchEvent::Put(KeyValue {
            key: "k".into(),
            value: Bytes::new(),
            create_revision: 1,
            mod_revision: 1,
        }));
        long_key[9] = 200;
        assert!(decode_event(1, &long_key)
            .unwrap_err()
            .contains("truncated"));
        assert!(decode_event(1, &[1, 0xff]).unwrap_err().contains("UTF-8"));
        assert!(decode_lease(1, &[0; 3]).unwrap_err().contains("3 bytes"));
    }

    #[test]
    fn a_leases_keys_sort_together() {
        assert!(lease_key(1, "z") < lease_key(2, "a"));
        assert!(lease_key(1, "a").starts_with(&lease_prefix(1)));
    }
}
