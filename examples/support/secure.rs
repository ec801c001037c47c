//! The one way the process tests and measurement examples reach a secure deployment, so
//! none forges its own tokens: each tier runs secure (the default), a cluster joins with the
//! token its root wrote (`ROOT_DATA/join.token`), a worker with its cluster's, and clients
//! call the API with the admin token the root wrote (`ROOT_DATA/admin.token`), trusting the
//! deployment's CA (`ROOT_DATA/ca.crt`). Shared by `tests/support` and `examples/` through
//! `#[path]`.
#![allow(dead_code)] // each user takes its part

use edgeio::transport_ws::RootClient;
use std::path::Path;

/// The URL a secure root or cluster on `port` of loopback answers at.
pub fn https(port: u16) -> String {
    format!("https://127.0.0.1:{port}")
}

/// The arguments that let a child join the parent whose data folder is `parent_data`.
pub fn join_args(parent_data: &Path) -> [String; 2] {
    [
        "--join-token-file".to_string(),
        parent_data.join("join.token").display().to_string(),
    ]
}

/// The admin token the root with data folder `root_data` wrote on its first start.
pub fn admin_token(root_data: &Path) -> Option<String> {
    let text = std::fs::read_to_string(root_data.join("admin.token")).ok()?;
    Some(text.trim().to_string()).filter(|t| !t.is_empty())
}

/// A client of the root on `port` with `token` (none for `/healthz` only), trusting the CA
/// of the root with data folder `root_data`; `None` until the root has written its CA.
pub fn client_with(root_data: &Path, port: u16, token: Option<String>) -> Option<RootClient> {
    let ca = std::fs::read(root_data.join("ca.crt")).ok()?;
    RootClient::builder(&https(port))
        .token(token)
        .ca_pem(Some(ca))
        .build()
        .ok()
}

/// A client of the root on `port` with the admin token; `None` until the root has written
/// its CA and token.
pub fn admin_client(root_data: &Path, port: u16) -> Option<RootClient> {
    client_with(root_data, port, Some(admin_token(root_data)?))
}

/// A client that only asks `/healthz` of the root or of a cluster (whose certificate chains
/// to the same CA) on `port`.
pub fn health_client(root_data: &Path, port: u16) -> Option<RootClient> {
    client_with(root_data, port, None)
}
