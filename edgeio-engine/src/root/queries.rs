//! Views the root does not keep (a cluster's nodes, a job's logs): queries down to a cluster and their replies, followed log streams.

use super::*;

impl RootState {
    pub(super) fn on_query_reply(&mut self, reply: QueryReply, fx: &mut Fx) {
        if let Some(cluster) = self.syncs.remove(&reply.re) {
            self.on_sync(&cluster, reply, fx);
            return;
        }
        if let Some(reader) = self.streams.get(&reply.re) {
            let more = reply.more;
            let item = match (reply.result, reply.error) {
                (_, Some(error)) => Err(ApiError::Unavailable {
                    reason: error.message,
                }),
                (Some(value), None) => Ok(bytes::Bytes::from(
                    value.as_str().unwrap_or_default().to_string(),
                )),
                (None, None) => Ok(bytes::Bytes::new()),
            };
            let failed = item.is_err();
            let delivered = match reader.try_send(item) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    warn!(query = %reply.re, "a log reader fell too far behind; its stream ends");
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            };
            if !more || failed || !delivered {
                self.streams.remove(&reply.re);
            }
            return;
        }
        let Some(waiting) = self.queries.remove(&reply.re) else {
            return;
        };
        let answer = match (reply.result, reply.error) {
            (_, Some(error)) if error.code == "not_found" => Err(ApiError::NotFound {
                kind: "instance",
                id: error.message,
            }),
            (_, Some(error)) => Err(ApiError::Unavailable {
                reason: error.message,
            }),
            (Some(value), None) => Ok(value),
            (None, None) => Ok(serde_json::Value::Null),
        };
        let _ = waiting.send(answer);
    }
}

/// Ends a followed log when its reader goes: forgets the stream and tells the cluster.
struct FollowGuard {
    shared: Arc<Shared>,
    cluster: String,
    query: String,
}

impl Drop for FollowGuard {
    fn drop(&mut self) {
        let (envelope, down) = {
            let mut state = self.shared.state();
            state.streams.remove(&self.query);
            let cancel = Query::Cancel {
                query: self.query.clone(),
            };
            (state.msg(Message::Query(cancel)), self.shared.down())
        };
        let (Some(down), Ok(runtime)) = (down, tokio::runtime::Handle::try_current()) else {
            return;
        };
        let cluster = self.cluster.clone();
        runtime.spawn(async move {
            let _ = down.send(&cluster, &envelope).await;
        });
    }
}

impl RootHandle {
    pub(super) async fn follow(&self, cluster: &str, logs: Query) -> Result<LogStream, ApiError> {
        let (tx, rx) = mpsc::channel(FOLLOW_BUFFER);
        let envelope = {
            let mut state = self.shared.state();
            let active = state
                .clusters
                .get(cluster)
                .is_some_and(|c| c.lifecycle.state() == ClusterState::Active);
            if !active {
                return Err(ApiError::Unavailable {
                    reason: format!("cluster {cluster} is not ACTIVE"),
                });
            }
            let envelope = state.msg(Message::Query(logs));
            state.streams.insert(envelope.id.clone(), tx);
            envelope
        };
        let guard = FollowGuard {
            shared: self.shared.clone(),
            cluster: cluster.to_string(),
            query: envelope.id.clone(),
        };
        let down = self.shared.down().ok_or_else(|| ApiError::Unavailable {
            reason: "the root engine is not running".into(),
        })?;
        down.send(cluster, &envelope)
            .await
            .map_err(|e| ApiError::Unavailable {
                reason: format!("cannot reach cluster {cluster}: {e}"),
            })?;
        let stream = futures::stream::unfold((rx, guard), |(mut rx, guard)| async move {
            rx.recv().await.map(|item| (item, (rx, guard)))
        });
        Ok(Box::pin(stream))
    }
}
