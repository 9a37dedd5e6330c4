//! The engine's one error type and its stable numeric codes (docs/protocol.md §2).
//!
//! Every failure a caller can see is an [`Error`]; [`Error::code`] is the only place that maps a
//! variant to its wire code. Mapping codes to HTTP statuses is left to `src/http/`.

use serde_json::{json, Value};

/// Numeric codes of the wire protocol.
pub mod code {
    /// Success.
    pub const SUCCESS: u32 = 0;
    /// Tool not found, or an ambiguous short name.
    pub const TOOL_NOT_FOUND: u32 = 1001;
    /// Parameter error: missing, mistyped or out of range.
    pub const PARAM: u32 = 1002;
    /// Session error: no such session, broken, busy.
    pub const SESSION: u32 = 1003;
    /// Worker not found.
    pub const WORKER_NOT_FOUND: u32 = 1004;
    /// Resource type not found.
    pub const RESOURCE_NOT_FOUND: u32 = 1005;
    /// Not permitted: missing or wrong credentials.
    pub const NOT_PERMITTED: u32 = 1006;
    /// The backend failed.
    pub const BACKEND: u32 = 2001;
    /// Execution timeout.
    pub const TIMEOUT: u32 = 2002;
    /// Backend not warmed up or failed to warm up.
    pub const NOT_WARMED_UP: u32 = 2003;
    /// A limit was reached.
    pub const UNAVAILABLE: u32 = 2004;
    /// A bug: a panic in a tool.
    pub const INTERNAL: u32 = 5000;
    /// Configuration error.
    pub const CONFIG: u32 = 5001;
    /// The engine is shutting down.
    pub const SHUTTING_DOWN: u32 = 5002;
}

/// The kind of an error: its wire code, and the finer distinctions the HTTP facade maps to
/// statuses (a busy session is 409, a destroyed one 410, a policy refusal 403), so that no
/// layer reads them back out of an answer's `data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// 1001.
    ToolNotFound,
    /// 1002.
    Param,
    /// 1003: no such session, or a broken one.
    Session,
    /// 1003: busy past the caller's wait, or a program still running in it.
    SessionBusy,
    /// 1003: destroyed during the call.
    SessionDestroyed,
    /// 1004.
    WorkerNotFound,
    /// 1005.
    ResourceNotFound,
    /// 1006: missing or wrong credentials.
    NotPermitted,
    /// 1006: refused by the operator's policy.
    Policy,
    /// 2001.
    Backend,
    /// 2002.
    Timeout,
    /// 2003.
    NotWarmedUp,
    /// 2004.
    Unavailable,
    /// 5000.
    Internal,
    /// 5001.
    Config,
    /// 5002.
    ShuttingDown,
}

impl ErrorCode {
    /// The numeric code on the wire.
    pub fn wire(self) -> u32 {
        match self {
            ErrorCode::ToolNotFound => code::TOOL_NOT_FOUND,
            ErrorCode::Param => code::PARAM,
            ErrorCode::Session | ErrorCode::SessionBusy | ErrorCode::SessionDestroyed => code::SESSION,
            ErrorCode::WorkerNotFound => code::WORKER_NOT_FOUND,
            ErrorCode::ResourceNotFound => code::RESOURCE_NOT_FOUND,
            ErrorCode::NotPermitted | ErrorCode::Policy => code::NOT_PERMITTED,
            ErrorCode::Backend => code::BACKEND,
            ErrorCode::Timeout => code::TIMEOUT,
            ErrorCode::NotWarmedUp => code::NOT_WARMED_UP,
            ErrorCode::Unavailable => code::UNAVAILABLE,
            ErrorCode::Internal => code::INTERNAL,
            ErrorCode::Config => code::CONFIG,
            ErrorCode::ShuttingDown => code::SHUTTING_DOWN,
        }
    }

    /// The kind a wire code stands for, without the finer distinctions (an answer read back
    /// from the wire); `None` for 0 and unknown codes.
    pub fn from_wire(n: u32) -> Option<ErrorCode> {
        Some(match n {
            code::TOOL_NOT_FOUND => ErrorCode::ToolNotFound,
            code::PARAM => ErrorCode::Param,
            code::SESSION => ErrorCode::Session,
            code::WORKER_NOT_FOUND => ErrorCode::WorkerNotFound,
            code::RESOURCE_NOT_FOUND => ErrorCode::ResourceNotFound,
            code::NOT_PERMITTED => ErrorCode::NotPermitted,
            code::BACKEND => ErrorCode::Backend,
            code::TIMEOUT => ErrorCode::Timeout,
            code::NOT_WARMED_UP => ErrorCode::NotWarmedUp,
            code::UNAVAILABLE => ErrorCode::Unavailable,
            code::INTERNAL => ErrorCode::Internal,
            code::CONFIG => ErrorCode::Config,
            code::SHUTTING_DOWN => ErrorCode::ShuttingDown,
            _ => return None,
        })
    }
}

/// What went wrong, as the caller sees it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No tool has this name.
    #[error("tool not found: {0}")]
    ToolNotFound(String),
    /// A short name that several tools share.
    #[error("ambiguous tool name '{name}': use one of {}", candidates.join(", "))]
    AmbiguousTool {
        /// The name asked for.
        name: String,
        /// The full names it could mean.
        candidates: Vec<String>,
    },
    /// A parameter is missing, mistyped or out of range.
    #[error("parameter '{field}': {reason}")]
    Param {
        /// The offending field.
        field: String,
        /// What was expected.
        reason: String,
    },
    /// No such session, or a broken one.
    #[error("{0}")]
    Session(String),
    /// A session that cannot take this call now: busy past the caller's wait, or a program
    /// still running in it. Same code as [`Error::Session`]; HTTP answers 409 rather than 404.
    #[error("{0}")]
    SessionBusy(String),
    /// The session was destroyed while the call ran in it (or waited for it): the call was
    /// abandoned. Same code as [`Error::Session`]; `data.destroyed` is true, HTTP answers 410.
    #[error("session {0} was destroyed during the call")]
    Destroyed(String),
    /// No session of this worker.
    #[error("worker not found: {0}")]
    WorkerNotFound(String),
    /// No backend serves this resource type.
    #[error("resource type not found: {0}")]
    ResourceNotFound(String),
    /// Missing or wrong credentials.
    #[error("{0}")]
    NotPermitted(String),
    /// A session asked for more than the operator's policy allows (a looser jail, a bigger
    /// screen, an operator-only key). Same code as [`Error::NotPermitted`]; HTTP answers 403.
    #[error("session config '{field}' is not permitted: {reason}")]
    Policy {
        /// The offending config key.
        field: String,
        /// What the policy allows, and where the operator opens it.
        reason: String,
    },
    /// The backend failed; `data` carries what helps the caller act.
    #[error("{message}")]
    Backend {
        /// What failed.
        message: String,
        /// Partial results or details.
        data: Value,
    },
    /// The call ran past its timeout; `data` carries the partial output.
    #[error("{message}")]
    Timeout {
        /// What timed out.
        message: String,
        /// Partial results.
        data: Value,
    },
    /// A backend could not warm up.
    #[error("backend '{backend}' is not warmed up: {reason}")]
    NotWarmedUp {
        /// The backend.
        backend: String,
        /// Why.
        reason: String,
    },
    /// A limit was reached (max sessions, pool empty).
    #[error("{0}")]
    Unavailable(String),
    /// A bug: a panic in a tool, an invariant broken.
    #[error("internal error: {0}")]
    Internal(String),
    /// The configuration is wrong.
    #[error("configuration error: {0}")]
    Config(String),
    /// The engine is shutting down.
    #[error("service unavailable: shutting down")]
    ShuttingDown,
}

impl Error {
    /// A parameter error naming `field`.
    pub fn param(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Param { field: field.into(), reason: reason.into() }
    }

    /// A session config key refused by the operator's policy.
    pub fn policy(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Policy { field: field.into(), reason: reason.into() }
    }

    /// A backend failure with no extra data.
    pub fn backend(message: impl Into<String>) -> Self {
        Error::Backend { message: message.into(), data: Value::Null }
    }

    /// The kind of this error.
    pub fn kind(&self) -> ErrorCode {
        match self {
            Error::ToolNotFound(_) | Error::AmbiguousTool { .. } => ErrorCode::ToolNotFound,
            Error::Param { .. } => ErrorCode::Param,
            Error::Session(_) => ErrorCode::Session,
            Error::SessionBusy(_) => ErrorCode::SessionBusy,
            Error::Destroyed(_) => ErrorCode::SessionDestroyed,
            Error::WorkerNotFound(_) => ErrorCode::WorkerNotFound,
            Error::ResourceNotFound(_) => ErrorCode::ResourceNotFound,
            Error::NotPermitted(_) => ErrorCode::NotPermitted,
            Error::Policy { .. } => ErrorCode::Policy,
            Error::Backend { .. } => ErrorCode::Backend,
            Error::Timeout { .. } => ErrorCode::Timeout,
            Error::NotWarmedUp { .. } => ErrorCode::NotWarmedUp,
            Error::Unavailable(_) => ErrorCode::Unavailable,
            Error::Internal(_) => ErrorCode::Internal,
            Error::Config(_) => ErrorCode::Config,
            Error::ShuttingDown => ErrorCode::ShuttingDown,
        }
    }

    /// The wire code of this error.
    pub fn code(&self) -> u32 {
        self.kind().wire()
    }

    /// The `data` of the error envelope: what helps the caller act.
    pub fn data(&self) -> Value {
        match self {
            Error::AmbiguousTool { candidates, .. } => json!({ "candidates": candidates }),
            Error::Param { field, reason } => json!({ "field": field, "reason": reason }),
            Error::Policy { field, reason } => json!({ "field": field, "reason": reason, "policy": true }),
            Error::Backend { data, .. } | Error::Timeout { data, .. } => data.clone(),
            Error::SessionBusy(_) => json!({ "busy": true }),
            Error::Destroyed(id) => json!({ "destroyed": true, "session_id": id }),
            _ => Value::Null,
        }
    }
}

/// The engine's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
