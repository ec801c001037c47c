//! The engine's side of registration: who a child is, which id it gets, how it talks next.

use async_trait::async_trait;
use edgeio_core::wire::{ErrorBody, RegisterReply, RegisterRequest};

/// Answers registration requests. The engine (cluster or root) implements it; the transport
/// only carries the request and the answer.
///
/// The transport never invents ids: the id in the reply is the one the child's channel is
/// known by from then on. A re-registration carries [`RegisterRequest::previous_id`]; a
/// registrar that recognises it should answer with the same id, so the child keeps its
/// identity across restarts.
///
/// A refusal is an [`ErrorBody`] (`code` a program can match, `message` for people); the
/// server sends it to the child as an `error` message answering the request, then closes.
#[async_trait]
pub trait Registrar: Send + Sync {
    /// Registers (or re-registers) a child.
    async fn register(&self, request: RegisterRequest) -> Result<RegisterReply, ErrorBody>;
}
