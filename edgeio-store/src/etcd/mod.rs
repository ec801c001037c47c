//! [`EtcdStore`]: the [`Store`] contract on an etcd cluster (v3 API, through `etcd-client`).
//!
//! # Mapping
//!
//! | contract | etcd |
//! |---|---|
//! | store revision | the response header's revision |
//! | a key's revisions | the key's `create_revision` and `mod_revision` |
//! | `compare_and_swap` | a txn comparing `mod_revision` (or `create_revision == 0` for absence); its else-branch reads the key, so the conflict names the revision found in the same txn |
//! | `list` | a range read, paged at one revision |
//! | `watch(prefix, after)` | a prefix watch from `start_revision = after + 1`; etcd's compaction → [`StoreError::Compacted`] |
//! | leases | etcd leases (TTL rounded up to whole seconds, at least 1 s; etcd itself enforces a minimum of about 2 s) |
//! | election | etcd's election service (`v3election`): same key layout as the memory store, `<election>/<lease id in hex>`, lowest create revision leads |
//!
//! Every key lives under [`EtcdOptions::prefix`], which is added on the way in and removed on
//! the way out, so several edgeio installations (or test runs) share one etcd.
//!
//! # Differences from the embedded store
//!
//! - Revisions grow by one per write of *the whole etcd*, so other writers' changes advance
//!   them too; they are still strictly increasing per key and per watch.
//! - A watcher is never told to re-list for being slow: etcd keeps the events until they are
//!   compacted. Compaction is etcd's (its `--auto-compaction-*` flags, or [`EtcdStore::compact`]).
//! - Dropping a `campaign` future cancels the call, and etcd withdraws the candidate at once
//!   (the memory and embedded stores keep it queued until its lease expires).

use crate::error::{check_election, check_key, check_ttl, conflict, lease_not_found, other};
use async_trait::async_trait;
use bytes::Bytes;
use edgeio_core::store::{
    KeyValue, LeaseId, Listing, Precondition, Revision, Store, StoreError, WatchEvent, WatchStream,
};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, ElectionClient, EventType,
    GetOptions, KvClient, LeaseClient, PutOptions, SortOrder, SortTarget, Txn, TxnOp,
    TxnOpResponse, WatchClient, WatchOptions,
};
use futures::stream::{self, StreamExt};
use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tonic::Code;

/// The default time allowed to connect, and for one request to answer.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Keys per page of a listing; with etcd's 1.5 MiB request limit a page stays under
/// [`MAX_MESSAGE`].
const PAGE: i64 = 100;

/// The largest response the client decodes (tonic's default, 4 MiB, is smaller than a page of
/// large values).
const MAX_MESSAGE: usize = 256 << 20;

/// How to reach etcd. [`EtcdOptions::new`] fills in the defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdOptions {
    /// Client URLs, `http://host:port` or `host:port` (at least one). TLS is not enabled in
    /// this build.
    pub endpoints: Vec<String>,
    /// Prepended to every key (e.g. `edgeio/`); empty uses the whole keyspace.
    pub prefix: String,
    /// Time allowed to connect and for each request (not for waits such as `campaign` or a
    /// watch); a request that takes longer answers [`StoreError::Unavailable`].
    pub timeout: Duration,
}

impl EtcdOptions {
    /// Options for `endpoints` with no prefix and the default timeout.
    pub fn new<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> Self {
        Self {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            prefix: String::new(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The same options with every key under `prefix`.
    pub fn with_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The same options with another connect and request timeout.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Checks the options; [`EtcdStore::connect`] calls this first.
    pub fn validate(&self) -> Result<(), StoreError> {
        if self.endpoints.is_empty() {
            return Err(StoreError::Invalid {
                field: "endpoints",
                value: "[]".into(),
                rule: "name at least one etcd client URL, e.g. http://127.0.0.1:2379".into(),
            });
        }
        for endpoint in &self.endpoints {
            check_endpoint(endpoint)?;
        }
        if self.timeout.is_zero() {
            return Err(StoreError::Invalid {
                field: "timeout",
                value: format!("{:?}", self.timeout),
                rule: "the timeout must be positive".into(),
            });
        }
        Ok(())
    }
}

fn check_endpoint(endpoint: &str) -> Result<(), StoreError> {
    let invalid = |rule: &str| StoreError::Invalid {
        field: "endpoint",
        value: endpoint.to_owned(),
        rule: rule.to_owned(),
    };
    if endpoint.starts_with("https://") {
        return Err(invalid(
            "https needs TLS, which this build of edgeio-store does not enable; use http://",
        ));
    }
    let rest = endpoint.strip_prefix("http://").unwrap_or(endpoint);
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let shape = "an endpoint is host:port or http://host:port, e.g. http://127.0.0.1:2379";
    let Some((host, port)) = rest.rsplit_once(':') else {
        return Err(invalid(shape));
    };
    let host_ok = !host.is_empty()
        && !host
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '/' | '@' | '?' | '#'));
    let port_ok = port.parse::<u16>().is_ok_and(|p| p > 0);
    if !host_ok || !port_ok {
        return Err(invalid(shape));
    }
    Ok(())
}

/// A [`Store`] on etcd, for several edgeio replicas sharing one replicated database.
///
/// `Clone` shares the connection. See the [module docs](self) for how the contract maps onto
/// etcd.
///
/// ```no_run
/// use edgeio_core::store::Store;
/// use edgeio_store::{EtcdOptions, EtcdStore};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let options = EtcdOptions::new(["http://127.0.0.1:2379"]).with_prefix("edgeio/");
/// let store = EtcdStore::connect(options).await?;
/// let rev = store.put("jobs/web", "v1".into()).await?;
/// assert_eq!(store.get("jobs/web").await?.unwrap().mod_revision, rev);
/// # Ok::<_, edgeio_core::store::StoreError>(()) }).unwrap();
/// ```
#[derive(Clone)]
pub struct EtcdStore {
    // The clients are large (over 1 KiB together); one allocation keeps clones cheap.
    inner: Arc<Clients>,
}

struct Clients {
    kv: KvClient,
    watch: WatchClient,
    lease: LeaseClient,
    election: ElectionClient,
    prefix: String,
    endpoints: String,
    timeout: Duration,
}

impl fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.inner.endpoints)
            .field("prefix", &self.inner.prefix)
            .field("timeout", &self.inner.timeout)
            .finish()
    }
}

fn revision_of(raw: i64) -> Revision {
    u64::try_from(raw).unwrap_or(0)
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Revision {
    header.map_or(0, |h| revision_of(h.revision()))
}

/// The end of the key range holding every key that starts with `prefix` (etcd's convention:
/// `\0` means "to the end").
fn range_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

impl EtcdStore {
    /// Connects and checks that etcd answers within [`EtcdOptions::timeout`].
    ///
    /// Errors: bad options are [`StoreError::Invalid`] naming the field; an etcd that does not
    /// answer in time is [`StoreError::Unavailable`].
    pub async fn connect(options: EtcdOptions) -> Result<Self, StoreError> {
        options.validate()?;
        let endpoints: Arc<str> = options.endpoints.join(",").into();
        let connect = ConnectOptions::new()
            .with_connect_timeout(options.timeout)
            .with_keep_alive(Duration::from_secs(10), options.timeout);
        let unavailable = |reason: String| StoreError::Unavailable {
            reason: format!("etcd at {endpoints}: {reason}"),
        };
        let client = match tokio::time::timeout(
            options.timeout,
            Client::connect(&options.endpoints, Some(connect)),
        )
        .await
        {
            Err(_) => {
                return Err(unavailable(format!(
                    "no connection within {:?}",
                    options.timeout
                )))
            }
            Ok(Err(
                e @ (etcd_client::Error::InvalidUri(_) | etcd_client::Error::InvalidArgs(_)),
            )) => {
                return Err(StoreError::Invalid {
                    field: "endpoints",
                    value: endpoints.to_string(),
                    rule: format!("etcd-client refused them: {e}"),
                })
            }
            Ok(Err(e)) => return Err(unavailable(format!("cannot connect: {e}"))),
            Ok(Ok(client)) => client,
        };
        let store = Self {
            inner: Arc::new(Clients {
                kv: client.kv_client().max_decoding_message_size(MAX_MESSAGE),
                watch: client.watch_client().max_decoding_message_size(MAX_MESSAGE),
                lease: client.lease_client(),
                election: client.election_client(),
                prefix: options.prefix,
                endpoints: endpoints.to_string(),
                timeout: options.timeout,
            }),
        };
        // The client connects lazily; only an answer proves that etcd is there.
        store.revision().await?;
        tracing::debug!(endpoints = %store.inner.endpoints, prefix = %store.inner.prefix, "connected to etcd");
        Ok(store)
    }

    /// The prefix every key lives under.
    pub fn prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// Compacts etcd's history before `revision`: watches from earlier revisions then answer
    /// [`StoreError::Compacted`]. This applies to the whole etcd, not only to this store's
    /// prefix.
    pub async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        let raw = i64::try_from(revision).map_err(|_| StoreError::Invalid {
            field: "revision",
            value: revision.to_string(),
            rule: "etcd revisions fit in an i64".into(),
        })?;
        let mut kv = self.inner.kv.clone();
        self.call("compact", kv.compact(raw, None)).await?;
        Ok(())
    }

    /// Writes several keys in one etcd transaction. As in etcd, they all get the **same**
    /// revision, which is returned; watchers see one put event per key. etcd refuses a
    /// transaction with the same key twice or with more operations than its `--max-txn-ops`
    /// (128 by default).
    pub async fn put_many(&self, items: Vec<(String, Bytes)>) -> Result<Revision, StoreError> {
        for (key, _) in &items {
            check_key(key)?;
        }
        if items.is_empty() {
            return self.revision().await;
        }
        let ops: Vec<TxnOp> = items
            .iter()
            .map(|(key, value)| TxnOp::put(self.full(key), value.to_vec(), None))
            .collect();
        let mut kv = self.inner.kv.clone();
        let resp = self
            .call("put_many", kv.txn(Txn::new().and_then(ops)))
            .await?;
        Ok(header_revision(resp.header()))
    }

    fn full(&self, key: &str) -> Vec<u8> {
        let mut full = Vec::with_capacity(self.inner.prefix.len() + key.len());
        full.extend_from_slice(self.inner.prefix.as_bytes());
        full.extend_from_slice(key.as_bytes());
        full
    }

    /// Our key of an etcd key under the prefix.
    fn key_of(&self, raw: &[u8]) -> Result<String, StoreError> {
        let stripped = raw
            .strip_prefix(self.inner.prefix.as_bytes())
            .ok_or_else(|| {
                other(format!(
                    "etcd returned key {:?} outside the prefix {:?}",
                    String::from_utf8_lossy(raw),
                    self.inner.prefix
                ))
            })?;
        String::from_utf8(stripped.to_vec()).map_err(|_| {
            other(format!(
                "etcd holds key {:?} under the prefix {:?} that is not UTF-8",
                String::from_utf8_lossy(raw),
                self.inner.prefix
            ))
        })
    }

    fn key_value(&self, kv: &etcd_client::KeyValue) -> Result<KeyValue, StoreError> {
        Ok(KeyValue {
            key: self.key_of(kv.key())?,
            value: Bytes::copy_from_slice(kv.value()),
            create_revision: revision_of(kv.create_revision()),
            mod_revision: revision_of(kv.mod_revision()),
        })
    }

    /// A request with the timeout, its errors mapped by [`EtcdStore::error`].
    async fn call<T>(
        &self,
        what: &str,
        request: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, StoreError> {
        self.call_mapped(what, request, |e| self.error(what, e))
            .await
    }

    /// A request about `lease`: etcd's "requested lease not found" is
    /// [`StoreError::NotFound`] naming the lease.
    async fn call_with_lease<T>(
        &self,
        what: &str,
        lease: LeaseId,
        request: impl Future<Output = Result<T, etcd_client::Error>>,
    ) -> Result<T, StoreError> {
        self.call_mapped(what, request, |e| self.lease_error(what, lease, e))
            .await
    }

    async fn call_mapped<T>(
        &self,
        what: &str,
        request: impl Future<Output = Result<T, etcd_client::Error>>,
        map: impl FnOnce(etcd_client::Error) -> StoreError,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.inner.timeout, request).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(e)) => Err(map(e)),
            Err(_) => Err(StoreError::Unavailable {
                reason: format!(
                    "etcd at {} did not answer {what} within {:?}",
                    self.inner.endpoints, self.inner.timeout
                ),
            }),
        }
    }

    /// Maps an etcd-client error to what the caller can do about it.
    fn error(&self, what: &str, e: etcd_client::Error) -> StoreError {
        use etcd_client::Error as E;
        let reason = format!("etcd at {}: {what} failed: {e}", self.inner.endpoints);
        match &e {
            E::TransportError(_)
            | E::IoError(_)
            | E::WatchError(_)
            | E::LeaseKeepAliveError(_)
            | E::EndpointError(_) => StoreError::Unavailable { reason },
            E::GRpcStatus(status) => match status.code() {
                Code::Unavailable
                | Code::DeadlineExceeded
                | Code::Cancelled
                | Code::Aborted
                | Code::ResourceExhausted => StoreError::Unavailable { reason },
                // A broken connection (h2, hyper) reaches us as Unknown with the I/O error as
                // its source; etcd's own Unknown answers carry no source.
                Code::Unknown if std::error::Error::source(status).is_some() => {
                    StoreError::Unavailable { reason }
                }
                Code::InvalidArgument | Code::FailedPrecondition => StoreError::Invalid {
                    field: "request",
                    value: what.to_owned(),
                    rule: format!("etcd refused it: {}", status.message()),
                },
                _ => other(reason),
            },
            _ => other(reason),
        }
    }

    fn lease_error(&self, what: &str, lease: LeaseId, e: etcd_client::Error) -> StoreError {
        match &e {
            // Code NotFound from the KV service, Unknown from the election service.
            etcd_client::Error::GRpcStatus(status)
                if status.message().contains("requested lease not found") =>
            {
                lease_not_found(lease)
            }
            etcd_client::Error::LeaseKeepAliveError(message)
                if message.contains("lease not found") =>
            {
                lease_not_found(lease)
            }
            _ => self.error(what, e),
        }
    }

    async fn read_key(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let mut kv = self.inner.kv.clone();
        let resp = self
            .call(&format!("get {key:?}"), kv.get(self.full(key), None))
            .await?;
        resp.kvs().first().map(|kv| self.key_value(kv)).transpose()
    }
}

#[async_trait]
impl Store for EtcdStore {
    fn backend(&self) -> &'static str {
        "etcd"
    }

    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        check_key(key)?;
        self.read_key(key).await
    }

    async fn put(&self, key: &str, value: Bytes) -> Result<Revision, StoreError> {
        check_key(key)?;
        let mut kv = self.inner.kv.clone();
        let resp = self
            .call(
                &format!("put {key:?}"),
                kv.put(self.full(key), value.to_vec(), None),
            )
            .await?;
        Ok(header_revision(resp.header()))
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        precondition: Precondition,
        value: Bytes,
    ) -> Result<Revision, StoreError> {
        check_key(key)?;
        let full = self.full(key);
        let compare = match precondition {
            Precondition::Absent => Compare::create_revision(full.clone(), CompareOp::Equal, 0),
            // etcd compares an absent key's mod revision as 0, and no write has revision 0 (or
            // one beyond i64): such a precondition never holds, as in the memory store.
            Precondition::Revision(expected) => match i64::try_from(expected) {
                Ok(raw) if raw > 0 => Compare::mod_revision(full.clone(), CompareOp::Equal, raw),
                _ => {
                    let current = self.read_key(key).await?.map(|kv| kv.mod_revision);
                    return Err(conflict(key, precondition, current));
                }
            },
        };
        let txn = Txn::new()
            .when([compare])
            .and_then([TxnOp::put(full.clone(), value.to_vec(), None)])
            .or_else([TxnOp::get(full, Some(GetOptions::new().with_keys_only()))]);
        let mut kv = self.inner.kv.clone();
        let resp = self
            .call(&format!("compare_and_swap {key:?}"), kv.txn(txn))
            .await?;
        if resp.succeeded() {
            return Ok(header_revision(resp.header()));
        }
        let current = resp.op_responses().into_iter().find_map(|op| match op {
            TxnOpResponse::Get(get) => {
                Some(get.kvs().first().map(|kv| revision_of(kv.mod_revision())))
            }
            _ => None,
        });
        Err(conflict(key, precondition, current.flatten()))
    }

    async fn delete(&self, key: &str) -> Result<Option<Revision>, StoreError> {
        check_key(key)?;
        let mut kv = self.inner.kv.clone();
        let resp = self
            .call(
                &format!("delete {key:?}"),
                kv.delete(self.full(key), None::<DeleteOptions>),
            )
            .await?;
        Ok((resp.deleted() > 0).then(|| header_revision(resp.header())))
    }

    async fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        let full = self.full(prefix);
        let end = range_end(&full);
        // etcd refuses an empty key; `\0` is the smallest one.
        let mut from = if full.is_empty() { vec![0] } else { full };
        let mut revision = 0;
        let mut items = Vec::new();
        loop {
            let mut options = GetOptions::new().with_range(end.clone()).with_limit(PAGE);
            // Later pages read at the first page's revision, so the listing is one snapshot.
            if revision > 0 {
                options = options.with_revision(revision as i64);
            }
            let mut kv = self.inner.kv.clone();
            let resp = self
                .call(
                    &format!("list {prefix:?}"),
                    kv.get(from.clone(), Some(options)),
                )
                .await?;
            if revision == 0 {
                revision = header_revision(resp.header());
            }
            for kv in resp.kvs() {
                items.push(self.key_value(kv)?);
            }
            match resp.kvs().last() {
                Some(last) if resp.more() => {
                    from = last.key().to_vec();
                    from.push(0);
                }
                _ => break,
            }
        }
        Ok(Listing { revision, items })
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        let start = i64::try_from(after.saturating_add(1)).map_err(|_| StoreError::Invalid {
            field: "after",
            value: after.to_string(),
            rule: "etcd revisions fit in an i64".into(),
        })?;
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(start)
            .with_fragment();
        let mut client = self.inner.watch.clone();
        let what = format!("watch {prefix:?}");
        let mut stream = self
            .call(&what, client.watch(self.full(prefix), Some(options)))
            .await?;
        let mut state = Watching {
            store: self.clone(),
            stream: None,
            pending: VecDeque::new(),
            after,
            seen: after,
            what,
            failure: None,
            ended: false,
        };
        // The first answer says whether etcd accepted the watch; a compacted start revision
        // comes next and is reported as the stream's first item.
        let first = self
            .call(&state.what, stream.message())
            .await?
            .ok_or_else(|| StoreError::Unavailable {
                reason: format!("etcd at {} closed the watch at once", self.inner.endpoints),
            })?;
        state.stream = Some(stream);
        state.failure = state.absorb(first);
        Ok(stream::unfold(state, Watching::next_item).boxed())
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        // Any answer's header carries the store revision; a point read of one key is cheapest.
        let key = if self.inner.prefix.is_empty() {
            vec![0]
        } else {
            self.inner.prefix.as_bytes().to_vec()
        };
        let mut kv = self.inner.kv.clone();
        let resp = self
            .call(
                "revision",
                kv.get(key, Some(GetOptions::new().with_keys_only())),
            )
            .await?;
        Ok(header_revision(resp.header()))
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        check_ttl(ttl)?;
        // etcd counts whole seconds; rounding up never shortens a lease.
        let seconds = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
        let seconds = i64::try_from(seconds).map_err(|_| StoreError::Invalid {
            field: "ttl",
            value: format!("{ttl:?}"),
            rule: "etcd counts a lease's seconds in an i64".into(),
        })?;
        let mut lease = self.inner.lease.clone();
        let resp = self.call("grant_lease", lease.grant(seconds, None)).await?;
        if !resp.error().is_empty() {
            return Err(other(format!(
                "etcd at {} refused a lease of {seconds} s: {}",
                self.inner.endpoints,
                resp.error()
            )));
        }
        Ok(resp.id())
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        let mut client = self.inner.lease.clone();
        let what = format!("keep_alive of lease {lease}");
        // etcd-client's keep_alive sends one renewal and reads its answer; a TTL of 0 (dead or
        // unknown lease) comes back as "lease not found".
        self.call_with_lease(&what, lease, client.keep_alive(lease))
            .await?;
        Ok(())
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        let mut client = self.inner.lease.clone();
        let what = format!("revoke of lease {lease}");
        self.call_with_lease(&what, lease, client.revoke(lease))
            .await?;
        Ok(())
    }

    async fn put_with_lease(
        &self,
        key: &str,
        value: Bytes,
        lease: LeaseId,
    ) -> Result<Revision, StoreError> {
        check_key(key)?;
        let what = format!("put {key:?} with lease {lease}");
        let mut kv = self.inner.kv.clone();
        let resp = self
            .call_with_lease(
                &what,
                lease,
                kv.put(
                    self.full(key),
                    value.to_vec(),
                    Some(PutOptions::new().with_lease(lease)),
                ),
            )
            .await?;
        Ok(header_revision(resp.header()))
    }

    async fn campaign(
        &self,
        election: &str,
        candidate: &str,
        lease: LeaseId,
    ) -> Result<(), StoreError> {
        check_election(election)?;
        let what = format!("campaign in {election:?} with lease {lease}");
        let mut client = self.inner.election.clone();
        // No timeout: the call waits, server-side, until the candidate leads.
        client
            .campaign(self.full(election), candidate.as_bytes().to_vec(), lease)
            .await
            .map_err(|e| self.lease_error(&what, lease, e))?;
        // etcd 3.4 does not notice that the candidate's own key vanished with its lease while
        // it waited; the contract says that such a campaign fails.
        let key = format!("{election}/{lease:x}");
        if self.read_key(&key).await?.is_none() {
            return Err(lease_not_found(lease));
        }
        Ok(())
    }

    async fn leader(&self, election: &str) -> Result<Option<String>, StoreError> {
        // What etcd's election `Leader` does, as one read: the oldest candidate key. It answers
        // an election without candidates as "no leader" rather than as an error.
        let options = GetOptions::new()
            .with_prefix()
            .with_sort(SortTarget::Create, SortOrder::Ascend)
            .with_limit(1);
        let mut kv = self.inner.kv.clone();
        let resp = self
            .call(
                &format!("leader of {election:?}"),
                kv.get(self.full(&format!("{election}/")), Some(options)),
            )
            .await?;
        Ok(resp
            .kvs()
            .first()
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()))
    }
}

/// A watch in progress: etcd's stream and the events of its last answer not yet handed out.
struct Watching {
    store: EtcdStore,
    stream: Option<etcd_client::WatchStream>,
    pending: VecDeque<WatchEvent>,
    after: Revision,
    /// The revision of the last event handed out (or `after`).
    seen: Revision,
    what: String,
    /// The error that ends the watch, handed out after the events queued before it.
    failure: Option<StoreError>,
    ended: bool,
}

impl Watching {
    /// Queues an answer's events; returns the error that ends the watch, if any.
    fn absorb(&mut self, resp: etcd_client::WatchResponse) -> Option<StoreError> {
        if resp.compact_revision() > 0 {
            return Some(StoreError::Compacted {
                requested: self.seen.max(self.after),
                oldest: revision_of(resp.compact_revision()),
            });
        }
        for event in resp.events() {
            let Some(kv) = event.kv() else { continue };
            let converted = match event.event_type() {
                EventType::Put => self.store.key_value(kv).map(WatchEvent::Put),
                EventType::Delete => self.store.key_of(kv.key()).map(|key| WatchEvent::Delete {
                    key,
                    revision: revision_of(kv.mod_revision()),
                }),
            };
            match converted {
                Ok(event) => self.pending.push_back(event),
                Err(e) => return Some(e),
            }
        }
        if resp.canceled() {
            return Some(StoreError::Unavailable {
                reason: format!(
                    "etcd at {} cancelled the {}: {}",
                    self.store.inner.endpoints,
                    self.what,
                    resp.cancel_reason()
                ),
            });
        }
        None
    }

    async fn next_item(mut self) -> Option<(Result<WatchEvent, StoreError>, Self)> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                self.seen = event.revision();
                return Some((Ok(event), self));
            }
            if let Some(error) = self.failure.take() {
                self.ended = true;
                self.stream = None;
                return Some((Err(error), self));
            }
            if self.ended {
                return None;
            }
            let answer = self.stream.as_mut()?.message().await;
            self.failure = match answer {
                Ok(Some(resp)) => self.absorb(resp),
                Ok(None) => Some(StoreError::Unavailable {
                    reason: format!(
                        "etcd at {} ended the {}",
                        self.store.inner.endpoints, self.what
                    ),
                }),
                Err(e) => Some(self.store.error(&self.what, e)),
            };
        }
    }
}
