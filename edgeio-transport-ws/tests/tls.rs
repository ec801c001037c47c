//! TLS on loopback with certificates made here by rcgen: the REST API and the WebSocket
//! registration over `serve_tls`, bearer tokens, refusals that name their fix, the pinned
//! first contact, hostile or silent clients, and a certificate renewed while serving.
#![cfg(feature = "testing")]

mod common;

use axum::extract::Request;
use axum::http::{header::AUTHORIZATION, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use common::*;
use edgeio_core::auth::{AuthError, Caller, MockTokenAuthority, Role, TokenAuthority};
use edgeio_core::model::KnownRuntimes;
use edgeio_core::transport::{ChildTransport, ParentEvent, TransportError};
use edgeio_core::wire::{Ack, Envelope, Message, PeerRole};
use edgeio_transport_ws::testing::FakeRootApi;
use edgeio_transport_ws::tls::{self, CertHash, ServerCert, ServerTrust};
use edgeio_transport_ws::{
    register, router, secured_router, serve_tls, serve_tls_with_timeout, ClientError,
    ErrorResponse, RootClient, ServerHandle, WsClientConfig, WsParent, WsServerConfig,
};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncReadExt;

const DESCRIPTOR: &str = "api_version: v0.1
job_name: tls_job
image: quay.io/codait/max-object-detector
image_runtime: docker
requirements:
    cpu: 1
    memory: 100
";

const TOKEN: &str = "s3cret-token-value";

/// A CA made for one test.
struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A server certificate: its chain (end certificate first) and key, PEM.
struct Leaf {
    chain_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().expect("ca key");
        Ca {
            issuer: CertifiedIssuer::self_signed(params, key).expect("ca certificate"),
        }
    }

    fn pem(&self) -> Vec<u8> {
        self.issuer.pem().into_bytes()
    }

    fn hash(&self) -> CertHash {
        CertHash::of(self.issuer.der())
    }

    /// An intermediate CA under this one (as a cluster's CA is under the deployment's).
    fn intermediate(&self, name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        let key = KeyPair::generate().expect("intermediate key");
        Ca {
            issuer: CertifiedIssuer::signed_by(params, key, &self.issuer).expect("intermediate"),
        }
    }

    /// A certificate for 127.0.0.1 and localhost; with `include_ca` the chain carries this CA's
    /// certificate after it (as a server must for pinned first contact).
    fn leaf(&self, include_ca: bool) -> Leaf {
        let params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
            .expect("params");
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("leaf");
        let mut chain_pem = cert.pem();
        if include_ca {
            chain_pem.push_str(&self.issuer.pem());
        }
        Leaf {
            chain_pem,
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

async fn bind() -> tokio::net::TcpListener {
    tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0")
}

fn server_config(leaf: &Leaf) -> Arc<rustls::ServerConfig> {
    tls::server_config_from_pem(leaf.chain_pem.as_bytes(), leaf.key_pem.as_bytes())
        .expect("server config")
}

/// The REST API over TLS in front of a `FakeRootApi`.
async fn https_root(leaf: &Leaf) -> ServerHandle {
    let api = Arc::new(FakeRootApi::new());
    serve_tls(bind().await, router(api), server_config(leaf)).expect("serve_tls")
}

fn client(url: &str, ca: &Ca) -> RootClient {
    RootClient::builder(url)
        .ca_pem(Some(ca.pem()))
        .ca_origin("ca.crt")
        .build()
        .expect("client")
}

/// Refuses every upgrade without `Authorization: Bearer TOKEN`, as a parent checking the
/// credential of a registering child will.
async fn require_token(request: Request, next: Next) -> Response {
    let expected = format!("Bearer {TOKEN}");
    match request.headers().get(AUTHORIZATION) {
        Some(value) if value.as_bytes() == expected.as_bytes() => next.run(request).await,
        _ => (
            StatusCode::UNAUTHORIZED,
            axum::Json(ErrorResponse::new(
                "unauthorized",
                "a valid bearer token is required",
                Vec::new(),
            )),
        )
            .into_response(),
    }
}

/// The end certificate a fresh TLS connection to `addr` is shown (trusting every CA in
/// `cas`).
async fn presented_certificate(addr: std::net::SocketAddr, ca: &Ca) -> Vec<u8> {
    let config = tls::client_config(&ServerTrust::CaPem(ca.pem())).expect("client config");
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let stream = tokio::time::timeout(
        WAIT,
        tokio_rustls::TlsConnector::from(config).connect(name, tcp),
    )
    .await
    .expect("handshake in time")
    .expect("handshake");
    let (_, connection) = stream.get_ref();
    connection.peer_certificates().expect("certificates")[0].to_vec()
}

#[tokio::test]
async fn https_rest_round_trip_through_the_router() {
    let ca = Ca::new("edgeio test CA");
    let server = https_root(&ca.leaf(false)).await;
    assert!(
        server.url().starts_with("https://127.0.0.1:"),
        "{}",
        server.url()
    );
    let client = client(&server.url(), &ca);
    client.health().await.expect("health over https");
    let job = client
        .submit(DESCRIPTOR.into(), "application/yaml")
        .await
        .expect("submit over https");
    let jobs = client.jobs().await.expect("jobs over https");
    assert_eq!(jobs.len(), 1);
    assert_eq!(client.job(job.id.as_str()).await.expect("job").id, job.id);
    server.shutdown().await.expect("shutdown");
}

/// Knows one token, [`TOKEN`], an operator's.
fn one_token() -> Arc<dyn TokenAuthority> {
    let mut tokens = MockTokenAuthority::new();
    tokens.expect_authenticate().returning(|token| {
        if token == TOKEN {
            Ok(Caller {
                token_id: "ops-1".to_string(),
                name: "ops".to_string(),
                role: Role::Operator,
            })
        } else {
            Err(AuthError::Unknown {
                id: "unknown".to_string(),
            })
        }
    });
    Arc::new(tokens)
}

#[tokio::test]
async fn bearer_token_is_sent_and_never_shown() {
    let ca = Ca::new("edgeio test CA");
    let app = secured_router(
        Arc::new(FakeRootApi::new()),
        KnownRuntimes::default(),
        one_token(),
    );
    let server = serve_tls(bind().await, app, server_config(&ca.leaf(false))).expect("serve_tls");

    let with_token = RootClient::builder(&server.url())
        .ca_pem(Some(ca.pem()))
        .token(Some(TOKEN.to_string()))
        .build()
        .expect("client");
    with_token
        .submit(DESCRIPTOR.into(), "application/yaml")
        .await
        .expect("the token is accepted");
    with_token.jobs().await.expect("the token is accepted");
    let shown = format!("{with_token:?}");
    assert!(!shown.contains(TOKEN), "Debug shows the token: {shown}");

    let without = client(&server.url(), &ca);
    let err = without.jobs().await.expect_err("no token");
    assert_eq!(err.status(), Some(401));
    assert_eq!(err.code(), Some("unauthenticated"));
    assert!(
        err.to_string()
            .starts_with("no token: send the header Authorization: Bearer TOKEN"),
        "{err}"
    );

    let wrong = RootClient::builder(&server.url())
        .ca_pem(Some(ca.pem()))
        .token(Some("not-the-token".to_string()))
        .build()
        .expect("client");
    let err = wrong.jobs().await.expect_err("wrong token");
    assert_eq!(err.status(), Some(401));
    assert!(!format!("{err:?}").contains("not-the-token"), "{err:?}");
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn untrusted_certificate_is_refused_naming_the_fix() {
    let ca = Ca::new("edgeio test CA");
    let other = Ca::new("another CA");
    let server = https_root(&ca.leaf(false)).await;
    let err = client(&server.url(), &other)
        .health()
        .await
        .expect_err("a certificate of another CA");
    assert!(matches!(err, ClientError::Tls { .. }), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!(
            "tls with {}: the server's certificate is not signed by the CA in ca.crt — pass \
             the deployment's CA with --ca FILE / EDGEIO_CA",
            server.url()
        )
    );
    // the server is not hurt by the refusal
    client(&server.url(), &ca)
        .health()
        .await
        .expect("still serves");
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn https_without_a_ca_or_with_a_broken_one_is_refused_at_build() {
    let err = RootClient::new("https://127.0.0.1:7070").expect_err("no CA");
    assert!(matches!(err, ClientError::Tls { .. }), "{err:?}");
    assert!(
        err.to_string().contains("pass --ca FILE / EDGEIO_CA"),
        "{err}"
    );
    let err = RootClient::builder("https://127.0.0.1:7070")
        .ca_pem(Some(b"not a certificate".to_vec()))
        .ca_origin("/etc/edgeio/ca.crt")
        .build()
        .expect_err("broken CA");
    assert!(
        err.to_string()
            .contains("/etc/edgeio/ca.crt: the CA (PEM): holds no certificate"),
        "{err}"
    );
    let err = RootClient::builder("http://127.0.0.1:7070")
        .token(Some("line\nbreak".to_string()))
        .build()
        .expect_err("a token that is no header value");
    assert!(matches!(err, ClientError::InvalidToken { .. }), "{err:?}");
    assert!(!err.to_string().contains("line"), "{err}");
}

#[tokio::test]
async fn plain_http_to_a_tls_listener_fails_cleanly_and_the_server_keeps_serving() {
    let ca = Ca::new("edgeio test CA");
    let server = https_root(&ca.leaf(false)).await;
    let plain_url = format!("http://{}", server.addr());
    let err = RootClient::new(&plain_url)
        .expect("client")
        .health()
        .await
        .expect_err("http to an https server");
    assert!(matches!(err, ClientError::Unreachable { .. }), "{err:?}");
    // a WebSocket child dialing http:// fails the same way, without hanging
    let started = Instant::now();
    let err = register(
        &plain_url,
        PeerRole::Node,
        request("plain", PeerRole::Node),
        WsClientConfig::default(),
    )
    .await
    .expect_err("ws to an https server");
    assert!(matches!(err, TransportError::Unavailable { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    client(&server.url(), &ca)
        .health()
        .await
        .expect("still serves");
    server.shutdown().await.expect("shutdown");
}

/// A WebSocket parent over TLS that wants the bearer token on the upgrade.
async fn wss_parent(leaf: &Leaf) -> (WsParent, ServerHandle) {
    let parent = WsParent::new(
        "tls-parent",
        Arc::new(TestRegistrar),
        WsServerConfig::default(),
    );
    let app = parent.router().layer(middleware::from_fn(require_token));
    let server = serve_tls(bind().await, app, server_config(leaf)).expect("serve_tls");
    (parent, server)
}

fn ws_config(trust: ServerTrust) -> WsClientConfig {
    WsClientConfig {
        tls: Some(tls::client_config(&trust).expect("client config")),
        token: Some(TOKEN.into()),
        ..WsClientConfig::default()
    }
}

#[tokio::test]
async fn wss_registration_round_trip_with_the_token() {
    let ca = Ca::new("edgeio test CA");
    let (parent, server) = wss_parent(&ca.leaf(false)).await;
    let config = ws_config(ServerTrust::CaPem(ca.pem()));
    assert!(!format!("{config:?}").contains(TOKEN), "{config:?}");
    let registration = register(
        &server.url(),
        PeerRole::Cluster,
        request("cluster-tls", PeerRole::Cluster),
        config.clone(),
    )
    .await
    .expect("registration over wss");
    let child = registration.channel.expect("a ws channel");
    wait_up(&parent, "cluster-tls").await;
    let ack = Envelope::new(
        "cluster-tls",
        Message::Ack(Ack {
            re: "r-1".to_string(),
        }),
    );
    child.send(&ack).await.expect("send up");
    match wait_event(&parent, "cluster-tls", |e| {
        matches!(e, ParentEvent::Message { .. })
    })
    .await
    {
        ParentEvent::Message { envelope, .. } => assert_eq!(envelope, ack),
        _ => unreachable!(),
    }
    child.close().await.expect("close");
    wait_lost(&parent, "cluster-tls").await;

    // without the token the upgrade is refused, and says so
    let no_token = WsClientConfig {
        token: None,
        ..config
    };
    let err = register(
        &server.url(),
        PeerRole::Cluster,
        request("cluster-anon", PeerRole::Cluster),
        no_token,
    )
    .await
    .expect_err("no token");
    assert!(err.to_string().contains("401"), "{err}");

    // a parent whose certificate the CA does not vouch for is refused for good, naming the fix
    let other = Ca::new("another CA");
    let err = register(
        &server.url(),
        PeerRole::Cluster,
        request("cluster-distrusting", PeerRole::Cluster),
        ws_config(ServerTrust::CaPem(other.pem())),
    )
    .await
    .expect_err("a certificate of another CA");
    match err {
        TransportError::Invalid { reason, .. } => assert!(
            reason.contains("not signed by the CA in WsClientConfig::tls")
                && reason.contains("--ca FILE / EDGEIO_CA"),
            "{reason}"
        ),
        other => panic!("expected Invalid, got {other:?}"),
    }

    // https without TLS settings names the fix
    let err = register(
        &server.url(),
        PeerRole::Node,
        request("n", PeerRole::Node),
        WsClientConfig::default(),
    )
    .await
    .expect_err("no tls settings");
    match err {
        TransportError::Invalid { reason, .. } => {
            assert!(reason.contains("no TLS settings are given"), "{reason}")
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn pinning_by_hash_accepts_the_right_ca_and_refuses_another() {
    let ca = Ca::new("edgeio test CA");
    let other = Ca::new("another CA");
    let (parent, server) = wss_parent(&ca.leaf(true)).await;

    let registration = register(
        &server.url(),
        PeerRole::Cluster,
        request("joiner", PeerRole::Cluster),
        ws_config(ServerTrust::Pinned(ca.hash())),
    )
    .await
    .expect("the pinned CA is accepted");
    wait_up(&parent, "joiner").await;
    registration
        .channel
        .expect("channel")
        .close()
        .await
        .expect("close");

    let err = register(
        &server.url(),
        PeerRole::Cluster,
        request("joiner-2", PeerRole::Cluster),
        ws_config(ServerTrust::Pinned(other.hash())),
    )
    .await
    .expect_err("another CA's hash");
    match &err {
        TransportError::Invalid { reason, .. } => assert!(
            reason.contains(&format!("pinned hash {}", other.hash()))
                && reason.contains("check the join token's CA hash"),
            "{reason}"
        ),
        other => panic!("expected Invalid, got {other:?}"),
    }
    server.shutdown().await.expect("shutdown");

    // A cluster's server: its chain carries the cluster's intermediate CA, which the token pins.
    let cluster_ca = ca.intermediate("cluster c1 CA");
    let (parent, cluster_server) = wss_parent(&cluster_ca.leaf(true)).await;
    let registration = register(
        &cluster_server.url(),
        PeerRole::Node,
        request("worker-joiner", PeerRole::Node),
        ws_config(ServerTrust::Pinned(cluster_ca.hash())),
    )
    .await
    .expect("the pinned intermediate is accepted");
    wait_up(&parent, "worker-joiner").await;
    registration
        .channel
        .expect("channel")
        .close()
        .await
        .expect("close");
    cluster_server.shutdown().await.expect("shutdown");

    // A server that carries the pinned CA's certificate in its chain, under a certificate
    // the pinned CA never issued, is refused too.
    let forged_leaf = other.leaf(false);
    let forged = Leaf {
        chain_pem: format!("{}{}", forged_leaf.chain_pem, ca.issuer.pem()),
        ..forged_leaf
    };
    let (_parent, forged_server) = wss_parent(&forged).await;
    let err = register(
        &forged_server.url(),
        PeerRole::Cluster,
        request("joiner-3", PeerRole::Cluster),
        ws_config(ServerTrust::Pinned(ca.hash())),
    )
    .await
    .expect_err("a chain that only carries the pinned certificate");
    match &err {
        TransportError::Invalid { reason, .. } => {
            assert!(
                reason.contains(&format!("not issued under the pinned CA {}", ca.hash()))
                    && reason.contains("check the join token's CA hash"),
                "{reason}"
            )
        }
        other => panic!("expected Invalid, got {other:?}"),
    }
    forged_server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_silent_tcp_client_neither_blocks_other_handshakes_nor_stays_forever() {
    let ca = Ca::new("edgeio test CA");
    let api = Arc::new(FakeRootApi::new());
    let server = serve_tls_with_timeout(
        bind().await,
        router(api),
        server_config(&ca.leaf(false)),
        Duration::from_secs(2),
    )
    .expect("serve_tls");
    let mut silent: Vec<tokio::net::TcpStream> = Vec::new();
    for _ in 0..5 {
        silent.push(
            tokio::net::TcpStream::connect(server.addr())
                .await
                .expect("connect"),
        );
    }
    let started = Instant::now();
    client(&server.url(), &ca)
        .health()
        .await
        .expect("served while others say nothing");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "waited {:?} behind silent clients",
        started.elapsed()
    );
    // each silent socket is closed by the server once its handshake time is up
    for socket in &mut silent {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(WAIT, socket.read(&mut byte))
            .await
            .expect("the server closes a silent socket");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    client(&server.url(), &ca)
        .health()
        .await
        .expect("still serves");
    server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn a_certificate_replaced_while_serving_is_shown_to_new_handshakes() {
    let old_ca = Ca::new("old CA");
    let new_ca = Ca::new("new CA");
    let old = old_ca.leaf(false);
    let new = new_ca.leaf(false);
    let cert = ServerCert::from_pem(old.chain_pem.as_bytes(), old.key_pem.as_bytes())
        .expect("server cert");
    let api = Arc::new(FakeRootApi::new());
    let server = serve_tls(bind().await, router(api), cert.server_config()).expect("serve_tls");
    let before = client(&server.url(), &old_ca);
    before.health().await.expect("old certificate");
    assert_eq!(presented_certificate(server.addr(), &old_ca).await, old.der);

    // a damaged renewal leaves the old certificate in place
    let err = cert
        .replace_pem(new.chain_pem.as_bytes(), old.key_pem.as_bytes())
        .expect_err("the old key does not fit the new certificate");
    assert!(
        err.to_string()
            .starts_with("the private key (PEM): does not fit"),
        "{err}"
    );
    assert_eq!(presented_certificate(server.addr(), &old_ca).await, old.der);

    cert.replace_pem(new.chain_pem.as_bytes(), new.key_pem.as_bytes())
        .expect("renewal");
    assert_eq!(presented_certificate(server.addr(), &new_ca).await, new.der);
    client(&server.url(), &new_ca)
        .health()
        .await
        .expect("new certificate");
    let err = client(&server.url(), &old_ca)
        .health()
        .await
        .expect_err("a fresh client of the old CA");
    assert!(matches!(err, ClientError::Tls { .. }), "{err:?}");
    server.shutdown().await.expect("shutdown");
}
