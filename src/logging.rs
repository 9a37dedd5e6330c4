//! The engine's structured log records: a span around each tool call and each session create or
//! destroy, filled in with the outcome when the envelope is ready, and one event at the end.
//!
//! Kept out of `src/engine/` so the engine only opens a span and closes it. Everything here costs
//! a load and a branch when no subscriber listens (the library's users that do not log): the
//! spans are then disabled and recording into them does nothing. Targets are
//! `agentflow_sandbox::engine`, so `RUST_LOG=agentflow_sandbox::engine=debug` shows every call.
//!
//! Levels: the spans are `info`, so a warning raised during a call (a backend's, say) carries
//! the worker, action and session. The end of a call is `debug`: calls are the hot path, an agent
//! fleet makes thousands a minute, and an `info` line for each would drown the log by default.
//! The end of a session create or destroy is `info`: sessions are rarer and hold resources
//! (shells, X servers), so who made and released what belongs in the default log.

use tracing::field::Empty;
use tracing::Span;

use crate::protocol::Envelope;

/// At most this much of a caller's string goes into a log record: the span opens before the
/// engine has checked the worker id, and a request may carry a very long one.
const MAX_LOGGED: usize = 128;

/// `text`, cut to [`MAX_LOGGED`] bytes (at a character boundary) with `…` when longer.
fn bounded(text: &str) -> std::borrow::Cow<'_, str> {
    if text.len() <= MAX_LOGGED {
        return text.into();
    }
    let mut end = MAX_LOGGED;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end]).into()
}

/// The span of one tool call; [`call_ended`] fills in the rest.
pub(crate) fn call_span(worker: &str, action: &str) -> Span {
    let (worker, action) = (bounded(worker), bounded(action));
    tracing::info_span!(
        target: "agentflow_sandbox::engine",
        "call",
        worker = &*worker,
        action = &*action,
        tool = Empty,
        resource = Empty,
        session = Empty,
        code = Empty,
        duration_ms = Empty,
        trace_id = Empty,
    )
}

/// Records a call's outcome in its span and logs its end (`debug`).
pub(crate) fn call_ended(span: &Span, envelope: &Envelope) {
    // Nobody listens (a library without a logger): finding each field by name would be the
    // whole cost of this call.
    if span.is_disabled() {
        return;
    }
    let meta = &envelope.meta;
    record(span, envelope);
    span.record("tool", meta.tool.as_deref());
    span.record("resource", meta.resource_type.as_deref());
    span.record("trace_id", meta.trace_id.as_str());
    tracing::debug!(
        target: "agentflow_sandbox::engine",
        parent: span,
        code = envelope.code,
        duration_ms = meta.execution_time_ms,
        "call answered"
    );
}

/// The span of a session create (`op = "create"`) or destroy (`op = "destroy"`).
pub(crate) fn session_span(op: &'static str, worker: &str, resource: &str) -> Span {
    let (worker, resource) = (bounded(worker), bounded(resource));
    tracing::info_span!(
        target: "agentflow_sandbox::engine",
        "session",
        op,
        worker = &*worker,
        resource = &*resource,
        session = Empty,
        code = Empty,
        duration_ms = Empty,
    )
}

/// Records a session create's or destroy's outcome in its span and logs its end (`info`).
pub(crate) fn session_ended(span: &Span, envelope: &Envelope) {
    if span.is_disabled() {
        return;
    }
    record(span, envelope);
    tracing::info!(
        target: "agentflow_sandbox::engine",
        parent: span,
        code = envelope.code,
        duration_ms = envelope.meta.execution_time_ms,
        "session request answered"
    );
}

/// The fields both kinds of span share.
fn record(span: &Span, envelope: &Envelope) {
    let meta = &envelope.meta;
    span.record("session", meta.session_id.as_deref());
    span.record("code", envelope.code);
    span.record("duration_ms", meta.execution_time_ms);
}
