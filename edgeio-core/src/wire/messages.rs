//! The bodies of wire messages, one struct per kind.

use super::summary::{LabelSummary, NodeFilter};
use crate::job::{InstanceSpec, JobSpec};
use crate::model::{
    Arch, Capabilities, InstanceId, JobId, Labels, Location, Resources, RuntimeKind,
};
use crate::scheduler::Unschedulable;
use crate::state::InstanceState;
use serde::{Deserialize, Serialize};

/// Which tier is registering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerRole {
    /// A worker registering with its cluster.
    Node,
    /// A cluster registering with the root.
    Cluster,
}

/// `register_request`: a child introduces itself to its parent (always over WebSocket).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterRequest {
    /// Node or cluster.
    pub role: PeerRole,
    /// Human name (host name of a worker, configured name of a cluster).
    pub name: String,
    /// The id the parent gave last time, kept in the child's data folder; reused on re-registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_id: Option<String>,
    /// Hardware and runtimes (workers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capabilities: Option<Capabilities>,
    /// Where the child is (clusters; workers put it in their capabilities).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// Labels (clusters; workers put them in their capabilities).
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub labels: Labels,
    /// What proves the child may join: a join token on first contact, then the credential
    /// the parent issued in [`RegisterReply::credentials`]. None with a parent that runs
    /// without security.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<Secret>,
}

/// A secret on the wire (a token, a password, a key): its `Debug` shows no part of it, so a
/// logged message never leaks one.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps `text`.
    pub fn new(text: impl Into<String>) -> Secret {
        Secret(text.into())
    }

    /// The secret itself, for the one place that uses it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(****)")
    }
}

/// What a parent issues a child that joined with a join token; the child keeps it in its
/// data folder and needs the join token no more.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    /// The CA certificates (PEM) the child trusts from now on: its parent's chain up to the
    /// deployment's root CA.
    pub ca_pem: String,
    /// What the child sends as [`RegisterRequest::auth`] from now on.
    pub credential: Secret,
    /// A cluster's own intermediate CA certificate (PEM), for its listeners and its workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert_pem: Option<String>,
    /// That CA's private key (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_key_pem: Option<Secret>,
    /// When that CA expires, seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_not_after: Option<i64>,
    /// A worker's MQTT password (its user name is its id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mqtt_password: Option<Secret>,
    /// The key that signs messages end to end over brokers the cluster does not control.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key: Option<Secret>,
}

/// Which transport carries the channel after registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelKind {
    /// MQTT through the cluster's broker.
    Mqtt,
    /// The registration WebSocket itself.
    Ws,
}

/// MQTT topics of one node (`edgeio/nodes/{node}/…`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topics {
    /// Commands down, QoS 1.
    pub control: String,
    /// Status up, every interval.
    pub info: String,
    /// Instance state changes and acks up, QoS 1.
    pub events: String,
    /// Last will: the broker announces a dead link.
    pub will: String,
}

impl Topics {
    /// The standard topics of `node`.
    pub fn for_node(node: &str) -> Topics {
        let base = format!("edgeio/nodes/{node}");
        Topics {
            control: format!("{base}/control"),
            info: format!("{base}/info"),
            events: format!("{base}/events"),
            will: format!("{base}/will"),
        }
    }
}

/// How the child talks to its parent after registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelSettings {
    /// MQTT or WebSocket.
    pub kind: ChannelKind,
    /// Broker URL (`mqtt://127.0.0.1:1883`) when `kind` is MQTT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub broker: Option<String>,
    /// Topics when `kind` is MQTT.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topics: Option<Topics>,
    /// How often the child reports status (the parent owns this value).
    pub status_interval_ms: u64,
    /// Largest message either side may send.
    pub max_message_bytes: usize,
}

/// `register_reply`: the parent's answer, with the child's id and its channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterReply {
    /// The id the child uses from now on (and keeps for re-registration).
    pub id: String,
    /// How to talk from now on.
    pub channel: ChannelSettings,
    /// What a child that joined with a join token keeps from now on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<Credentials>,
}

/// One instance as a node reports it in its status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceReport {
    /// The instance.
    pub instance: InstanceId,
    /// Its job.
    pub job: JobId,
    /// Its state.
    pub state: InstanceState,
}

/// How busy a node's host is, in thousandths (integers keep messages comparable).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct HostUsage {
    /// CPU in use over the last status interval, averaged over all cores: 0 ..= 1000.
    pub cpu_permille: u16,
    /// Memory in use: 0 ..= 1000.
    pub memory_permille: u16,
}

/// `node_status`: a worker's periodic report (information channel).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Resources not in use.
    pub free: Resources,
    /// Resources in all.
    pub total: Resources,
    /// What it runs.
    #[serde(default)]
    pub instances: Vec<InstanceReport>,
    /// How busy the host is, when the worker measures it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<HostUsage>,
}

/// `cluster_aggregate`: a cluster's periodic summary for the root scheduler.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterAggregate {
    /// Nodes registered.
    pub nodes: u32,
    /// Nodes READY.
    pub ready_nodes: u32,
    /// Sum over READY nodes.
    pub total: Resources,
    /// Sum of free resources over READY nodes.
    pub free: Resources,
    /// The most any single node has free (a job needs one node that fits).
    pub largest_free: Resources,
    /// Union of the nodes' architectures.
    #[serde(default)]
    pub architectures: Vec<Arch>,
    /// Union of the nodes' runtimes.
    #[serde(default)]
    pub runtimes: Vec<RuntimeKind>,
    /// The cluster's labels.
    #[serde(default)]
    pub labels: Labels,
    /// Where the cluster is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// Its READY nodes' label sets, summarized per key (capped: see [`LabelSummary`]), so the
    /// root can tell whether some node may match a job's `node_selector`. `None` from a
    /// cluster that does not send one (older versions): the root then takes it as "maybe".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_label_summary: Option<LabelSummary>,
    /// A Bloom filter of its READY node ids, so the root can route a job pinned to one
    /// (`worker_node`) without the aggregate naming every node. `None` as above.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_filter: Option<NodeFilter>,
    /// The number ([`Deploy::seq`]) of the last deploy from the root the cluster had handled
    /// (taken or refused) when it summed these figures: the root still counts the resources
    /// of the deploys it sent after that one against the cluster's offer, since they are not
    /// in it yet. `Some(0)`: none handled yet; `None` from a cluster that does not say (older
    /// versions): the root then takes the figures as counting everything it sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deploys_seen: Option<u64>,
}

/// `deploy`: run a job (root → cluster) or one instance of it (cluster → node).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deploy {
    /// The job.
    pub job: JobId,
    /// Its normalized spec.
    pub spec: JobSpec,
    /// Set by a cluster when it asks a node for one instance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<InstanceSpec>,
    /// Set by the root when the job ran elsewhere before: the cluster numbers its instances
    /// from here, so instance ids stay unique across the job's moves.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub first_instance: u32,
    /// Set by the root when the job is spread over several clusters and this deploy is one
    /// part of it: the cluster names its instances `{prefix}-{n}` instead of `{job}-{n}`, so
    /// that two clusters never number the same id. It must be the job's id, a `.`, and more.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_prefix: Option<String>,
    /// Set by the root: its deploys are numbered in the order it sends them, and a cluster
    /// reports the number of the last one it handled in its aggregate
    /// ([`ClusterAggregate::deploys_seen`]). `0`: not numbered (a cluster's deploy to a node,
    /// an older root).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub seq: u64,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

/// The longest [`Deploy::instance_prefix`] a cluster accepts: with `-` and a number of up to
/// eleven digits, an instance id stays within the 128 characters ids may have.
pub const MAX_PREFIX: usize = 116;

/// `terminate`: stop a job's instances, or one of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Terminate {
    /// The job.
    pub job: JobId,
    /// Only this instance; all of the job's when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<InstanceId>,
    /// Time allowed to stop before a kill, in milliseconds.
    pub grace_ms: u64,
}

/// Where a migration goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MigrateTarget {
    /// To this node.
    Node(String),
    /// To this cluster.
    Cluster(String),
    /// Anywhere other than where it is.
    Anywhere,
}

/// `migrate`: move an instance make-before-break.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Migrate {
    /// The job.
    pub job: JobId,
    /// The instance to move; the job's only instance when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<InstanceId>,
    /// Where to.
    pub target: MigrateTarget,
}

/// `scale`: change a job's number of replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scale {
    /// The job.
    pub job: JobId,
    /// The new count.
    pub replicas: u32,
}

/// `ack`: the command with this id was accepted and persisted; progress follows as events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// The id of the command it answers.
    pub re: String,
}

/// What went wrong, in a form both machines and people read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable code a program can match (`not_found`, `invalid`, `unsupported`, `unknown_kind` …).
    pub code: String,
    /// Human explanation naming the thing and the rule.
    pub message: String,
}

impl ErrorBody {
    /// The code of a refusal that holds only for now ([`ErrorBody::unavailable`]).
    pub const UNAVAILABLE: &'static str = "unavailable";

    /// `unavailable`: the receiver cannot take the request now (its store refused the write,
    /// a part it needs is down); the same request may succeed later.
    pub fn unavailable(message: impl Into<String>) -> ErrorBody {
        ErrorBody {
            code: Self::UNAVAILABLE.into(),
            message: message.into(),
        }
    }
}

/// `nack`: the command with this id was refused. Unless `retry` is set, it will not be
/// applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nack {
    /// The id of the command it answers.
    pub re: String,
    /// Why.
    pub error: ErrorBody,
    /// When a deploy was refused because nothing fits: the scheduler's explanation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unschedulable: Option<Unschedulable>,
    /// The refusal holds only for now (`unavailable`: the receiver could not persist what the
    /// command changes): the receiver has not applied the command and keeps no answer for its
    /// id, and the sender re-sends the same command later instead of taking this as final.
    /// Absent (false) on the wire for a final refusal, so older peers read it as before.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retry: bool,
}

/// `query`: a parent asks a child for a view it keeps (answered by a `query_reply` whose `re`
/// is the query's id). Not a command: it changes nothing, so it is neither acked nor re-sent;
/// the asker gives up after a deadline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "what", rename_all = "snake_case")]
pub enum Query {
    /// A cluster's nodes (root → cluster).
    Nodes,
    /// The logs of a job's instances (root → cluster → worker).
    Logs {
        /// The job.
        job: JobId,
        /// Only the last lines.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tail: Option<usize>,
        /// Keep sending new lines (several replies with `more`) until cancelled or the
        /// instances end.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        follow: bool,
    },
    /// Every live job a cluster keeps, as one `instance_event` per instance (root → cluster,
    /// when the link comes up: the root re-syncs what it missed while it was down).
    Jobs,
    /// Stop answering the query with this id (a followed log the reader left).
    Cancel {
        /// The id of the query to stop.
        query: String,
    },
}

/// `query_reply`: the answer to a `query`, a JSON value or an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueryReply {
    /// The id of the query it answers.
    pub re: String,
    /// The answer (`Vec<NodeView>` for nodes, a string for logs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// Why there is no answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
    /// More replies to the same query follow (a followed log); the last one has `false`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub more: bool,
}

/// `instance_event`: an instance changed state (sent at once, not on the next status tick).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceEvent {
    /// The job.
    pub job: JobId,
    /// The instance.
    pub instance: InstanceId,
    /// The node it runs on.
    pub node: String,
    /// The new state.
    pub state: InstanceState,
    /// Exit code when it exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// Why, for people.
    #[serde(default)]
    pub reason: String,
    /// Set by a cluster that cannot replace this (lost or failed) instance on any of its
    /// nodes, with its scheduler's explanation: the root places the job elsewhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unschedulable: Option<Unschedulable>,
}

/// `error`: a message could not be handled (bad message, unknown kind …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorMessage {
    /// The id of the message it answers, when that could be read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub re: Option<String>,
    /// What went wrong.
    pub error: ErrorBody,
}

/// Every message body, tagged by its `kind` on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Message {
    /// `register_request`
    RegisterRequest(RegisterRequest),
    /// `register_reply`
    RegisterReply(RegisterReply),
    /// `node_status`
    NodeStatus(NodeStatus),
    /// `cluster_aggregate`
    ClusterAggregate(ClusterAggregate),
    /// `deploy` (boxed: a job spec is far larger than every other body)
    Deploy(Box<Deploy>),
    /// `terminate`
    Terminate(Terminate),
    /// `migrate`
    Migrate(Migrate),
    /// `scale`
    Scale(Scale),
    /// `ack`
    Ack(Ack),
    /// `nack`
    Nack(Nack),
    /// `instance_event`
    InstanceEvent(InstanceEvent),
    /// `error`
    Error(ErrorMessage),
    /// `query`
    Query(Query),
    /// `query_reply`
    QueryReply(QueryReply),
}

/// Which logical channel a message travels on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// Commands, down.
    Control,
    /// Periodic status and aggregates, up.
    Info,
    /// Instance events, acks, nacks, errors.
    Events,
}

impl Message {
    /// Every kind name, in wire spelling.
    pub const KINDS: &'static [&'static str] = &[
        "register_request",
        "register_reply",
        "node_status",
        "cluster_aggregate",
        "deploy",
        "terminate",
        "migrate",
        "scale",
        "ack",
        "nack",
        "instance_event",
        "error",
        "query",
        "query_reply",
    ];

    /// The kind name on the wire.
    pub fn kind(&self) -> &'static str {
        match self {
            Message::RegisterRequest(_) => "register_request",
            Message::RegisterReply(_) => "register_reply",
            Message::NodeStatus(_) => "node_status",
            Message::ClusterAggregate(_) => "cluster_aggregate",
            Message::Deploy(_) => "deploy",
            Message::Terminate(_) => "terminate",
            Message::Migrate(_) => "migrate",
            Message::Scale(_) => "scale",
            Message::Ack(_) => "ack",
            Message::Nack(_) => "nack",
            Message::InstanceEvent(_) => "instance_event",
            Message::Error(_) => "error",
            Message::Query(_) => "query",
            Message::QueryReply(_) => "query_reply",
        }
    }

    /// Commands are acknowledged by the receiver and re-sent by the sender until acked.
    pub fn is_command(&self) -> bool {
        matches!(
            self,
            Message::Deploy(_) | Message::Terminate(_) | Message::Migrate(_) | Message::Scale(_)
        )
    }

    /// The logical channel this message travels on.
    pub fn channel(&self) -> Channel {
        match self {
            Message::Deploy(_)
            | Message::Terminate(_)
            | Message::Migrate(_)
            | Message::Scale(_)
            | Message::Query(_) => Channel::Control,
            Message::NodeStatus(_) | Message::ClusterAggregate(_) => Channel::Info,
            _ => Channel::Events,
        }
    }

    pub(crate) fn body_json(&self) -> Result<serde_json::Value, serde_json::Error> {
        match self {
            Message::RegisterRequest(b) => serde_json::to_value(b),
            Message::RegisterReply(b) => serde_json::to_value(b),
            Message::NodeStatus(b) => serde_json::to_value(b),
            Message::ClusterAggregate(b) => serde_json::to_value(b),
            Message::Deploy(b) => serde_json::to_value(b),
            Message::Terminate(b) => serde_json::to_value(b),
            Message::Migrate(b) => serde_json::to_value(b),
            Message::Scale(b) => serde_json::to_value(b),
            Message::Ack(b) => serde_json::to_value(b),
            Message::Nack(b) => serde_json::to_value(b),
            Message::InstanceEvent(b) => serde_json::to_value(b),
            Message::Error(b) => serde_json::to_value(b),
            Message::Query(b) => serde_json::to_value(b),
            Message::QueryReply(b) => serde_json::to_value(b),
        }
    }

    /// Builds the body of `kind` from JSON; `None` when the kind is unknown.
    pub(crate) fn from_kind_and_body(
        kind: &str,
        body: serde_json::Value,
    ) -> Option<Result<Message, serde_json::Error>> {
        use serde_json::from_value as v;
        Some(match kind {
            "register_request" => v(body).map(Message::RegisterRequest),
            "register_reply" => v(body).map(Message::RegisterReply),
            "node_status" => v(body).map(Message::NodeStatus),
            "cluster_aggregate" => v(body).map(Message::ClusterAggregate),
            "deploy" => v::<Deploy>(body).map(|d| Message::Deploy(Box::new(d))),
            "terminate" => v(body).map(Message::Terminate),
            "migrate" => v(body).map(Message::Migrate),
            "scale" => v(body).map(Message::Scale),
            "ack" => v(body).map(Message::Ack),
            "nack" => v(body).map(Message::Nack),
            "instance_event" => v(body).map(Message::InstanceEvent),
            "error" => v(body).map(Message::Error),
            "query" => v(body).map(Message::Query),
            "query_reply" => v(body).map(Message::QueryReply),
            _ => return None,
        })
    }
}
