//! The client's errors (seed 000, "Exceptions"): connection, timeout, request.
//!
//! A transport failure is [`Error::Connection`] or [`Error::Timeout`]; an answer whose code is not 0
//! is [`Error::Request`] carrying the server's envelope, so the caller can act on the code and
//! `data` exactly as it would in-process. The engine's own errors stay in [`crate::Error`]; this
//! enum only adds what a network hop (or a server this process starts) can break.

use std::time::Duration;

use serde_json::json;

use crate::error::code;
use crate::protocol::Envelope;

/// What went wrong between the caller and the engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Nothing answered at the URL, or the connection broke before an answer came.
    #[error("connection to {url} failed: {reason}")]
    Connection {
        /// The server's base URL.
        url: String,
        /// What the transport said.
        reason: String,
    },
    /// No answer within the client's timeout. The request may have reached the server: it is
    /// never re-sent.
    #[error("no answer from {url} within {}s", timeout.as_secs_f64())]
    Timeout {
        /// The server's base URL.
        url: String,
        /// How long the client waited.
        timeout: Duration,
    },
    /// The engine answered with a non-zero code; the envelope says what and why.
    #[error("request failed with code {}: {}", envelope.code, envelope.message)]
    Request {
        /// The HTTP status, or `None` when the engine runs in-process.
        status: Option<u16>,
        /// The server's envelope.
        envelope: Box<Envelope>,
    },
    /// The server answered something that is not the protocol (not JSON, not an envelope).
    #[error("invalid answer (HTTP {status}): {reason}")]
    InvalidResponse {
        /// The HTTP status.
        status: u16,
        /// What could not be read.
        reason: String,
    },
    /// The client or sandbox is configured wrongly (a URL that does not parse, no server binary).
    #[error("client configuration error: {0}")]
    Config(String),
    /// The server this process started did not come up, or could not be stopped.
    #[error("server process: {0}")]
    Server(String),
}

impl Error {
    /// The server's envelope, for [`Error::Request`].
    pub fn envelope(&self) -> Option<&Envelope> {
        match self {
            Error::Request { envelope, .. } => Some(envelope),
            _ => None,
        }
    }

    /// The protocol code: the envelope's for [`Error::Request`], 2002 for a timeout, 5002 (service
    /// unavailable) for a connection failure, 5000 for an unreadable answer, 5001 for configuration.
    pub fn code(&self) -> u32 {
        match self {
            Error::Request { envelope, .. } => envelope.code,
            Error::Timeout { .. } => code::TIMEOUT,
            Error::Connection { .. } | Error::Server(_) => code::SHUTTING_DOWN,
            Error::InvalidResponse { .. } => code::INTERNAL,
            Error::Config(_) => code::CONFIG,
        }
    }

    /// An envelope for any error: the server's own for [`Error::Request`], else one built from
    /// [`Error::code`] and the message, so that an agent loop can record every outcome alike.
    pub fn into_envelope(self) -> Envelope {
        match self {
            Error::Request { envelope, .. } => *envelope,
            other => {
                let mut e = Envelope::ok(json!({"client_error": true}));
                e.code = other.code();
                e.message = other.to_string();
                e.traced(None)
            }
        }
    }

    /// Whether this is a transport failure ([`Error::Connection`] or [`Error::Timeout`]).
    pub fn is_transport(&self) -> bool {
        matches!(self, Error::Connection { .. } | Error::Timeout { .. })
    }
}

/// The client's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `Ok` for code 0, else [`Error::Request`].
pub(crate) fn check(envelope: Envelope, status: Option<u16>) -> Result<Envelope> {
    if envelope.is_ok() {
        Ok(envelope)
    } else {
        Err(Error::Request { status, envelope: Box::new(envelope) })
    }
}
