//! End-to-end signing of the MQTT link when a secure cluster uses a broker it does not
//! control (`cluster --broker mqtt://…`, e.g. Mosquitto): the cluster issues each worker a
//! signing key at registration, and both ends wrap their MQTT transport in core's sealing
//! layers (`edgeio_core::seal`), so the cluster ignores status and events not signed by that
//! node, a worker ignores commands not signed by its cluster, and a replayed envelope is
//! dropped. With the embedded broker the broker itself enforces logins and topic rights, and
//! nothing is sealed.
//!
//! Files: the cluster keeps its members' keys in `signing-keys.json` and a worker its own in
//! `signing.key` (both mode 0600); each keeps `seal.epoch`, bumped at every start, so what it
//! seals after a restart is never taken for a replay (boards without a clock cannot order
//! starts by time).

use super::common::RoleError;
use super::trust::write_secret;
use edgeio_core::seal::{ChildKeys, SigningKey};
use edgeio_core::wire::Secret;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// A cluster's file of its members' signing keys (hexadecimal, by node id).
pub(crate) const KEYS_FILE: &str = "signing-keys.json";
/// A worker's file of its own signing key.
pub(crate) const KEY_FILE: &str = "signing.key";
/// The file of the epoch a tier seals under, bumped at every start.
const EPOCH_FILE: &str = "seal.epoch";

/// Bumps the epoch kept in `data` and answers it: 1 on the first start.
pub(crate) fn next_epoch(data: &Path) -> Result<u64, RoleError> {
    let path = data.join(EPOCH_FILE);
    let last = match std::fs::read_to_string(&path) {
        Ok(text) => text.trim().parse::<u64>().map_err(|e| {
            RoleError::new(format!(
                "{}: {:?} is not an epoch ({e}); it holds one whole number",
                path.display(),
                text.trim()
            ))
        })?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => {
            return Err(RoleError::new(format!(
                "cannot read {}: {e}",
                path.display()
            )))
        }
    };
    let next = last + 1;
    write_secret(&path, &next.to_string())?;
    Ok(next)
}

/// A cluster's members' signing keys: issued at registration, kept in its data folder, and
/// shared with its sealing layer.
pub(crate) struct MemberKeys {
    path: PathBuf,
    kept: Mutex<BTreeMap<String, String>>,
    keys: ChildKeys,
}

impl MemberKeys {
    /// The keys kept in `data` (none on a first start).
    pub(crate) fn open(data: &Path) -> Result<MemberKeys, RoleError> {
        let path = data.join(KEYS_FILE);
        let kept: BTreeMap<String, String> = match std::fs::read_to_string(&path) {
            Ok(text) => serde_json::from_str(&text)
                .map_err(|e| RoleError::new(format!("{}: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                return Err(RoleError::new(format!(
                    "cannot read {}: {e}",
                    path.display()
                )))
            }
        };
        let keys = ChildKeys::new();
        for (node, text) in &kept {
            let key: SigningKey = text.parse().map_err(|e| {
                RoleError::new(format!("{}: the key of {node:?}: {e}", path.display()))
            })?;
            keys.insert(node.clone(), key);
        }
        Ok(MemberKeys {
            path,
            kept: Mutex::new(kept),
            keys,
        })
    }

    /// Issues `node` a new signing key (replacing any earlier one), keeps it, and answers it
    /// for the registration reply.
    pub(crate) fn issue(&self, node: &str) -> Result<Secret, String> {
        let key = SigningKey::generate().map_err(|e| e.to_string())?;
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        kept.insert(node.to_string(), key.to_string());
        let text = serde_json::to_string_pretty(&*kept).map_err(|e| e.to_string())?;
        write_secret(&self.path, &text).map_err(|e| e.to_string())?;
        self.keys.insert(node.to_string(), key.clone());
        Ok(key.to_secret())
    }

    /// The keys, as the sealing layer reads them.
    pub(crate) fn keys(&self) -> ChildKeys {
        self.keys.clone()
    }
}

/// A worker's signing key: the one just issued (kept in its data folder), else the one kept
/// there; none when its cluster seals nothing.
pub(crate) fn worker_key(
    data: &Path,
    issued: Option<&Secret>,
) -> Result<Option<SigningKey>, RoleError> {
    let path = data.join(KEY_FILE);
    if let Some(secret) = issued {
        let key = SigningKey::from_secret(secret)
            .map_err(|e| RoleError::new(format!("the cluster's signing key: {e}")))?;
        write_secret(&path, &key.to_string())?;
        return Ok(Some(key));
    }
    match std::fs::read_to_string(&path) {
        Ok(text) => text
            .trim()
            .parse()
            .map(Some)
            .map_err(|e| RoleError::new(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(RoleError::new(format!(
            "cannot read {}: {e}",
            path.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epochs_grow_at_every_start_and_a_damaged_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(next_epoch(dir.path()).unwrap(), 1);
        assert_eq!(next_epoch(dir.path()).unwrap(), 2);
        std::fs::write(dir.path().join(EPOCH_FILE), "two").unwrap();
        let e = next_epoch(dir.path()).unwrap_err();
        assert!(e.0.contains("seal.epoch") && e.0.contains("\"two\""), "{e}");
    }

    #[test]
    fn a_members_key_is_kept_and_read_back_and_the_worker_keeps_its_own() {
        let cluster = tempfile::tempdir().unwrap();
        let keys = MemberKeys::open(cluster.path()).unwrap();
        let secret = keys.issue("w1").unwrap();
        assert!(keys.keys().contains("w1"));
        let again = MemberKeys::open(cluster.path()).unwrap();
        assert!(again.keys().contains("w1"), "read back after a restart");

        let worker = tempfile::tempdir().unwrap();
        assert!(worker_key(worker.path(), None).unwrap().is_none());
        let issued = worker_key(worker.path(), Some(&secret)).unwrap().unwrap();
        let kept = worker_key(worker.path(), None).unwrap().unwrap();
        assert_eq!(issued, kept);
    }
}
