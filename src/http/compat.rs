//! The `/api/v1/...` paths of the original Python client whose answers differ from the native
//! endpoints (docs/protocol.md §3.7): some not enveloped, some shaped otherwise.
//!
//! The paths that answer exactly as the native ones are routed to the native handlers in
//! `mod.rs`; only the reshaping lives here.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Map, Value};

use super::{error_reply, json_response, query_bool, require_worker, AppState, Body, Reply};
use crate::engine::WarmupState;
use crate::protocol::{Envelope, ShutdownRequest, WarmupRequest, WorkerRequest};

pub(super) async fn tools(State(s): State<AppState>, Query(q): Query<HashMap<String, String>>) -> Response {
    let hidden = match query_bool(&q, "include_hidden") {
        Ok(h) => h,
        Err(r) => return r,
    };
    s.engine.discover_tools().await;
    let tools = s.engine.tool_summaries(hidden);
    json_response(StatusCode::OK, &json!({"count": tools.len(), "tools": tools}))
}

pub(super) async fn tool_schema(State(s): State<AppState>, Path(name): Path<String>) -> Response {
    s.engine.discover_tools().await;
    match s.engine.tool_schema(&name) {
        Ok(v) => json_response(StatusCode::OK, &v),
        Err(e) => error_reply(StatusCode::NOT_FOUND, e),
    }
}

fn summary(backends: &BTreeMap<String, WarmupState>) -> Value {
    let warmed = backends.values().filter(|b| b.warmed_up).count();
    json!({"total": backends.len(), "warmed_up": warmed, "pending": backends.len() - warmed})
}

pub(super) async fn warmup(State(s): State<AppState>, Body(req): Body<WarmupRequest>) -> Response {
    let backends = match s.engine.warm_up(&req.backends.unwrap_or_default()).await {
        Ok((backends, _)) => backends,
        Err(e) => return Reply(Envelope::error(&e).traced(None)).into_response(),
    };
    let results: Map<String, Value> = backends.iter().map(|(k, v)| (k.clone(), json!(v.warmed_up))).collect();
    let errors: Map<String, Value> =
        backends.iter().filter_map(|(k, v)| v.error.as_ref().map(|e| (k.clone(), json!(e)))).collect();
    let mut body = json!({
        "status": if errors.is_empty() { "success" } else { "partial_error" },
        "results": results,
        "summary": summary(&backends),
    });
    if !errors.is_empty() {
        body["errors"] = Value::Object(errors);
    }
    json_response(StatusCode::OK, &body)
}

pub(super) async fn warmup_status(State(s): State<AppState>) -> Response {
    let backends = s.engine.warmup_states();
    let summary = summary(&backends);
    json_response(StatusCode::OK, &json!({"backends": backends, "summary": summary}))
}

pub(super) async fn shutdown(State(s): State<AppState>, Body(req): Body<ShutdownRequest>) -> Response {
    let cleaned = super::stop_server(&s, &req).await.sessions_cleaned;
    json_response(
        StatusCode::OK,
        &json!({"status": "success", "message": "Server shutdown initiated", "sessions_cleaned": cleaned}),
    )
}

/// The worker id of a lifecycle call: the body's, else the `X-Worker-ID` header's, else the
/// query string's; a request with none is answered 1002.
pub(super) struct Worker(String);

impl<S: Send + Sync> FromRequest<S> for Worker {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let Query(query) = Query::<HashMap<String, String>>::from_request_parts(&mut parts, state)
            .await
            .map_err(|e| error_reply(StatusCode::BAD_REQUEST, crate::Error::param("query", e.body_text())))?;
        let headers = parts.headers.clone();
        let Body(body) = Body::<WorkerRequest>::from_request(Request::from_parts(parts, body), state).await?;
        let from_query = query.get("worker_id").map(String::as_str).unwrap_or_default();
        let body_or_query = if body.worker_id.is_empty() { from_query } else { &body.worker_id };
        require_worker(body_or_query, &headers).map(Worker)
    }
}

pub(super) async fn heartbeat(State(s): State<AppState>, Worker(worker): Worker) -> Response {
    let active = s.engine.active_resources(&worker);
    let envelope = Envelope::ok(json!({
        "worker_id": worker,
        "active_sessions": active,
        "timestamp": crate::protocol::rfc3339(std::time::SystemTime::now()),
    }));
    Reply(envelope.traced(None)).into_response()
}

pub(super) async fn lifecycle_status(State(s): State<AppState>, Worker(worker): Worker) -> Response {
    Reply(s.engine.status(&worker)).into_response()
}

pub(super) async fn disconnect(State(s): State<AppState>, Worker(worker): Worker) -> Response {
    Reply(s.engine.destroy_worker(&worker).await).into_response()
}
