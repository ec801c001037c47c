//! A TLS listener for `axum::serve`: TCP accepts and TLS handshakes run in a task of their
//! own, each handshake in its own task bounded by a timeout, and only finished handshakes
//! reach the HTTP server. So a client that fails its handshake, or opens TCP and says
//! nothing, never stops or stalls the accept loop, and holds its socket for at most
//! the handshake timeout ([`crate::tls::HANDSHAKE_TIMEOUT`] by default).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// Handshakes in flight at most; beyond it the listener stops accepting until one ends, so a
/// flood of silent clients costs bounded memory and file descriptors.
const MAX_PENDING_HANDSHAKES: usize = 1024;
/// Pause after a failed accept (out of file descriptors, say) before trying again.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Connections whose handshake finished, in the order they finished.
pub(crate) struct TlsListener {
    addr: SocketAddr,
    ready: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    /// Accepts and handshakes; aborted (with every handshake in flight) when the listener is
    /// dropped, which `axum::serve` does when it shuts down.
    task: JoinHandle<()>,
}

impl TlsListener {
    pub(crate) fn new(
        listener: TcpListener,
        config: Arc<rustls::ServerConfig>,
        handshake_timeout: Duration,
    ) -> std::io::Result<TlsListener> {
        let addr = listener.local_addr()?;
        // Handshakes finished but not yet taken by the server wait here; a small queue is
        // enough since the server takes them as fast as it spawns connection tasks.
        let (tx, ready) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(config);
        let task = tokio::spawn(accept_loop(listener, acceptor, handshake_timeout, tx));
        Ok(TlsListener { addr, ready, task })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let mut handshakes = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept(), if handshakes.len() < MAX_PENDING_HANDSHAKES => {
                match accepted {
                    Ok((tcp, peer)) => {
                        let _ = tcp.set_nodelay(true);
                        handshakes.spawn(handshake(acceptor.clone(), tcp, peer, handshake_timeout, ready.clone()));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "tls listener: accept failed");
                        tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    }
                }
            }
            Some(_) = handshakes.join_next(), if !handshakes.is_empty() => {}
            _ = ready.closed() => return,
        }
    }
}

async fn handshake(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    timeout: Duration,
    ready: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => {
            let _ = ready.send((stream, peer)).await;
        }
        // Scanners, plain-http clients and clients that distrust us end here; debug, not warn,
        // so they cannot flood the log.
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "tls handshake failed"),
        Err(_) => tracing::debug!(%peer, ?timeout, "tls handshake timed out"),
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(connection) => connection,
            // The accept task ended only if it panicked: serve nothing more rather than spin.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
}
