//! # edgeio-store
//!
//! Store backends for edgeio, both passing the store conformance suite of `edgeio-core`:
//!
//! - [`EmbeddedStore`]: the default. One crash-safe file on [redb]: ACID, every acknowledged
//!   write fsynced, watch history kept in the file across restarts, leases and election. No
//!   server to install — what a single-machine root or cluster wants.
//! - `EtcdStore` (feature `etcd`): for several root replicas on one replicated database.
//!   Revisions are etcd's, watches are etcd watches, leases and election are etcd's own.
//!   Off by default because building its client (etcd-client) runs `protoc` (Debian's
//!   `protobuf-compiler`); without the feature an etcd configuration is refused with
//!   [`StoreError::Invalid`](edgeio_core::store::StoreError::Invalid) saying how to rebuild.
//!
//! [`StoreConfig`] picks one from configuration and opens it as an `Arc<dyn Store>`.
//!
//! ```
//! use edgeio_core::store::{Store, WatchEvent};
//! use edgeio_store::StoreConfig;
//! use futures::StreamExt;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let dir = tempfile::tempdir().unwrap();
//! let config: StoreConfig = serde_json::from_value(serde_json::json!({
//!     "backend": "embedded",
//!     "path": dir.path().join("root.redb"),
//! })).unwrap();
//! let store = config.open().await?;
//! let listing = store.list("nodes/").await?;
//! let mut changes = store.watch("nodes/", listing.revision).await?;
//! let rev = store.put("nodes/n1", "up".into()).await?;
//! let Some(Ok(WatchEvent::Put(kv))) = changes.next().await else { panic!("no event") };
//! assert_eq!((kv.key.as_str(), kv.mod_revision), ("nodes/n1", rev));
//! # Ok::<_, edgeio_core::store::StoreError>(()) }).unwrap();
//! ```

mod config;
pub mod embedded;
mod error;
#[cfg(feature = "etcd")]
pub mod etcd;
#[cfg(all(feature = "testing", feature = "etcd"))]
pub mod testing;

pub use config::{StoreConfig, ETCD_NOT_BUILT};
pub use embedded::{EmbeddedOptions, EmbeddedStore};
#[cfg(feature = "etcd")]
pub use etcd::{EtcdOptions, EtcdStore};
