//! # edgeio-transport-ws
//!
//! The WebSocket side of edgeio: the registration handshake every child runs with its parent
//! (`/ws/node` for workers, `/ws/cluster` for clusters), and the WebSocket channel that
//! follows it when the parent's reply says `channel.kind = ws`.
//!
//! * [`WsParent`] is the parent's side: an axum [`Router`](axum::Router) to merge with the
//!   parent's own routes (or to run alone with [`serve`]), and a
//!   [`ParentTransport`](edgeio_core::transport::ParentTransport) over the children whose
//!   channel stayed on their socket.
//! * [`register`] is the child's side: it dials the parent's `http://HOST:PORT`, registers,
//!   and returns the reply plus, for a WebSocket channel, a [`WsChild`]
//!   ([`ChildTransport`](edgeio_core::transport::ChildTransport)).
//! * [`Registrar`] is what the engine implements: it assigns or confirms ids.
//!
//! Messages cross as text frames holding one JSON envelope each, through the core
//! [`Codec`](edgeio_core::wire::Codec); the WebSocket message and frame limits equal the codec
//! limit. Acks and re-sending are not done here: they live in `edgeio_core::reliable`, over
//! any transport.
//!
//! # TLS and tokens
//!
//! [`serve_tls`] serves a router over TLS (rustls on ring, the workspace's one provider), with
//! a certificate that [`tls::ServerCert`] can replace while the server runs. The clients dial
//! `https://` with a CA ([`RootClientBuilder::ca_pem`], [`WsClientConfig::tls`] from
//! [`tls::client_config`]) or, on first contact, a pinned CA hash ([`tls::PinnedVerifier`]),
//! and send a bearer token ([`RootClientBuilder::token`], [`WsClientConfig::token`]), which
//! [`secured_router`] checks on the REST API (the WebSocket endpoints do not check theirs
//! yet; see the README).
//!
//! ```
//! use async_trait::async_trait;
//! use edgeio_core::transport::{ChildTransport, ParentEvent, ParentTransport};
//! use edgeio_core::wire::*;
//! use edgeio_transport_ws::*;
//! use std::sync::Arc;
//!
//! struct Names; // gives each child its requested name as id
//! #[async_trait]
//! impl Registrar for Names {
//!     async fn register(&self, r: RegisterRequest) -> Result<RegisterReply, ErrorBody> {
//!         let channel = ChannelSettings { kind: ChannelKind::Ws, broker: None, topics: None,
//!             status_interval_ms: 1000, max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES };
//!         Ok(RegisterReply { id: r.previous_id.unwrap_or(r.name), channel, credentials: None })
//!     }
//! }
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let parent = WsParent::new("root", Arc::new(Names), WsServerConfig::default());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! let server = serve(listener, parent.router()).unwrap();
//!
//! let request = RegisterRequest { role: PeerRole::Cluster, name: "cluster-a".into(),
//!     previous_id: None, capabilities: None, location: None, labels: Default::default() , auth: None };
//! let registration = register(&server.url(), PeerRole::Cluster, request, WsClientConfig::default())
//!     .await.unwrap();
//! let child = registration.channel.unwrap();
//! assert_eq!(parent.recv().await.unwrap(), ParentEvent::ChildUp { child: "cluster-a".into() });
//! child.close().await.unwrap();
//! server.shutdown().await.unwrap();
//! # });
//! ```
//!
//! # The root's REST API
//!
//! * [`router`] maps HTTP onto a [`RootApi`](edgeio_core::api::RootApi) (`/api/v1/jobs`,
//!   `/api/v1/clusters` …, plus `/healthz`); every error is one JSON shape, [`ErrorResponse`].
//!   [`health_router`] is `/healthz` alone, for the binaries that serve no API.
//! * [`RootClient`] is its typed client, one async method per `RootApi` operation; failures
//!   are [`ClientError`]s.
//! * With the `testing` feature, [`testing::FakeRootApi`](crate::testing) is an in-memory
//!   `RootApi` to test both against.
//!
//! The routes, status codes and error shape are listed in [`rest`] and the README.

mod client;
mod registrar;
pub mod rest;
mod rest_client;
mod server;
#[cfg(feature = "testing")]
pub mod testing;
pub mod tls;
mod tls_listener;
mod token;

pub use client::{register, Registration, WsChild, WsClientConfig, WsDial};
pub use registrar::Registrar;
pub use rest::{
    health_router, health_warning, needed_role, router, router_with_runtimes, secured_router,
    ErrorDetail, ErrorInfo, ErrorResponse,
};
pub use rest_client::{
    ClientError, LogBytes, RootClient, RootClientBuilder, CONNECT_TIMEOUT, REQUEST_TIMEOUT,
};
pub use server::{
    serve, serve_tls, serve_tls_with_timeout, ServerHandle, WsParent, WsServerConfig,
};
pub use token::BearerToken;
