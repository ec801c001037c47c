//! Mapping bollard's errors onto [`RuntimeError`] variants a caller can act on.

use bollard::errors::Error;
use edgeio_core::runtime::RuntimeError;

/// The runtime kind, as error texts name it.
pub(crate) const KIND: &str = "docker";

/// The HTTP status the engine answered with, if it answered at all.
pub(crate) fn status(err: &Error) -> Option<u16> {
    match err {
        Error::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// The engine's own explanation, or the client's error text.
pub(crate) fn message(err: &Error) -> String {
    match err {
        Error::DockerResponseServerError { message, .. } => message.trim().to_string(),
        other => other.to_string(),
    }
}

/// True when the engine said "no such container/image".
pub(crate) fn is_not_found(err: &Error) -> bool {
    status(err) == Some(404)
}

/// True when the request never got an answer: the engine is down or unreachable.
pub(crate) fn is_unreachable(err: &Error) -> bool {
    matches!(
        err,
        Error::IOError { .. }
            | Error::HyperResponseError { .. }
            | Error::HyperLegacyError { .. }
            | Error::RequestTimeoutError
            | Error::SocketNotFoundError(_)
    )
}

/// The engine cannot be reached: retry later.
pub(crate) fn unavailable(host: &str, err: &Error) -> RuntimeError {
    RuntimeError::Unavailable {
        runtime: KIND.to_string(),
        reason: format!("docker engine at {host} does not answer: {err}"),
    }
}

/// The fallback for an error about instance `id` that no caller classified more precisely.
pub(crate) fn other(host: &str, id: &str, err: Error) -> RuntimeError {
    if is_unreachable(&err) {
        return unavailable(host, &err);
    }
    match status(&err) {
        Some(404) => RuntimeError::NotFound { id: id.to_string() },
        Some(409) => RuntimeError::Conflict {
            id: id.to_string(),
            reason: message(&err),
        },
        _ => RuntimeError::Other {
            source: Box::new(err),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(status_code: u16, message: &str) -> Error {
        Error::DockerResponseServerError {
            status_code,
            message: message.to_string(),
        }
    }

    #[test]
    fn engine_answers_map_onto_what_a_caller_can_do() {
        let host = "unix:///var/run/docker.sock";
        assert!(matches!(
            other(host, "web-0", server(404, "No such container: edgeio-web-0")),
            RuntimeError::NotFound { id } if id == "web-0"
        ));
        assert!(matches!(
            other(host, "web-0", server(409, "removal in progress")),
            RuntimeError::Conflict { reason, .. } if reason == "removal in progress"
        ));
        assert!(matches!(
            other(host, "web-0", server(500, "boom")),
            RuntimeError::Other { .. }
        ));
        let down = other(
            host,
            "web-0",
            Error::SocketNotFoundError("/var/run/docker.sock".into()),
        );
        assert!(
            matches!(&down, RuntimeError::Unavailable { reason, .. } if reason.contains(host)),
            "{down:?}"
        );
    }
}
