//! The HTTP facade (feature `http`): the only code that knows HTTP or axum.
//!
//! It parses requests, routes them to the [`Engine`], and maps envelope codes to HTTP statuses
//! (docs/protocol.md §2, §3). Every endpoint of the user's documents is served, plus the `/api/v1/...`
//! paths of the original Python client. A malformed body is a 1002 envelope, never a framework
//! page (a wrong method on a known path too: 1002 with HTTP 405). Authentication, the body limit
//! and body timeout, the concurrency limit and the request timeout are one middleware layer in
//! front of the routes. [`serve`] drives hyper itself, so that reading a request's headers is
//! bounded in time too. What a call does is the engine's.

// Handlers answer their rejections as ready `Response`s; boxing them would only add an allocation.
#![allow(clippy::result_large_err)]

mod compat;
mod retrieve;

use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::config::Config;
use crate::error::{Error, ErrorCode};
use crate::protocol::{
    BatchRequest, CreateSessionRequest, Envelope, ExecuteRequest, SessionRequest, ShutdownRequest, WarmupRequest,
    WorkerRequest,
};
use crate::Engine;

/// How the server guards itself.
#[derive(Debug, Clone)]
pub struct Options {
    /// When set, every endpoint but `/health` needs this key (`Authorization: Bearer KEY` or
    /// `X-API-Key: KEY`).
    pub api_key: Option<String>,
    /// Largest request body; a larger one is a 1002 envelope with HTTP 413.
    pub max_body_bytes: usize,
    /// Requests served at once (`/health` aside); past it, callers wait. A request takes its
    /// place only once its body has been read, so slow senders never hold one.
    pub max_concurrent_requests: usize,
    /// Longest a request may take before it is answered 2002 with HTTP 504.
    pub request_timeout: Duration,
    /// Longest wait for a request's headers, from the connection's start or from the end of its
    /// previous request (so also how long an idle keep-alive connection stays open). Past it,
    /// [`serve`] closes the connection. Not applied by [`router`] alone.
    pub header_timeout: Duration,
    /// Longest wait for a request's whole body once its headers are in; past it, the answer is
    /// 2002 with HTTP 408 and the connection is closed.
    pub body_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options::from(&Config::default())
    }
}

impl From<&Config> for Options {
    fn from(config: &Config) -> Self {
        let env_key = std::env::var("AGENTFLOW_API_KEY").ok().filter(|k| !k.is_empty());
        Options {
            api_key: config.api_key().map(str::to_owned).or(env_key),
            max_body_bytes: config.server.max_body_bytes,
            max_concurrent_requests: config.server.max_concurrent_requests.max(1),
            request_timeout: seconds(config.server.request_timeout),
            header_timeout: seconds(config.server.header_timeout),
            body_timeout: seconds(config.server.body_timeout),
        }
    }
}

/// A config's seconds as a duration: at least 1 ms, and a non-finite or huge value is an hour
/// rather than a panic.
fn seconds(s: f64) -> Duration {
    Duration::try_from_secs_f64(s.max(0.001)).unwrap_or(Duration::from_secs(3600))
}

#[derive(Clone)]
struct AppState {
    engine: Engine,
    options: Arc<Options>,
    permits: Arc<Semaphore>,
    /// Set to true by `/shutdown` once the engine has stopped: the server then stops too.
    stop: watch::Sender<bool>,
}

/// The HTTP status for an envelope code (docs/protocol.md §2).
pub fn status_of(envelope: &Envelope) -> StatusCode {
    if envelope.is_ok() {
        return StatusCode::OK;
    }
    match envelope.kind.or_else(|| ErrorCode::from_wire(envelope.code)) {
        Some(ErrorCode::ToolNotFound | ErrorCode::WorkerNotFound | ErrorCode::ResourceNotFound) => {
            StatusCode::NOT_FOUND
        }
        Some(ErrorCode::Param) => StatusCode::BAD_REQUEST,
        Some(ErrorCode::SessionBusy) => StatusCode::CONFLICT,
        Some(ErrorCode::SessionDestroyed) => StatusCode::GONE,
        Some(ErrorCode::Session) => StatusCode::NOT_FOUND,
        Some(ErrorCode::Policy) => StatusCode::FORBIDDEN,
        Some(ErrorCode::NotPermitted) => StatusCode::UNAUTHORIZED,
        Some(ErrorCode::Backend) => StatusCode::BAD_GATEWAY,
        Some(ErrorCode::Timeout) => StatusCode::GATEWAY_TIMEOUT,
        Some(ErrorCode::NotWarmedUp | ErrorCode::Unavailable | ErrorCode::ShuttingDown) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn json_response<T: Serialize>(status: StatusCode, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// An envelope as an HTTP response, with its status.
struct Reply(Envelope);

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        json_response(status_of(&self.0), &self.0)
    }
}

fn error_reply(status: StatusCode, err: Error) -> Response {
    json_response(status, &Envelope::error(&err).traced(None))
}

/// A JSON body whose every failure (too large, not JSON, a field missing or mistyped) is a 1002
/// envelope. An empty body reads as `{}`. The content type is not checked: clients that forget
/// it still work.
struct Body<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Body<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            let status = rejection.status();
            let reason = if status == StatusCode::PAYLOAD_TOO_LARGE {
                "request body is larger than the server's limit".to_owned()
            } else {
                rejection.body_text()
            };
            error_reply(status, Error::param("body", reason))
        })?;
        let text: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}" } else { &bytes };
        serde_json::from_slice(text)
            .map(Body)
            .map_err(|e| error_reply(StatusCode::BAD_REQUEST, Error::param("body", format!("invalid JSON body: {e}"))))
    }
}

/// The worker id: the body's, else the `X-Worker-ID` header's.
fn worker(body: &str, headers: &HeaderMap) -> String {
    if !body.is_empty() {
        return body.to_owned();
    }
    headers.get("x-worker-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned()
}

fn require_worker(body: &str, headers: &HeaderMap) -> Result<String, Response> {
    let w = worker(body, headers);
    if w.is_empty() {
        return Err(error_reply(
            StatusCode::BAD_REQUEST,
            Error::param("worker_id", "missing (body field or X-Worker-ID header)"),
        ));
    }
    // The engine checks it too; here it is checked before anything echoes it.
    crate::protocol::check_worker_id(&w).map_err(|e| error_reply(StatusCode::BAD_REQUEST, e))?;
    Ok(w)
}

/// Parses `true/false/True/False/1/0` (and yes/no).
fn query_bool(query: &HashMap<String, String>, key: &str) -> Result<bool, Response> {
    match query.get(key).map(|s| s.as_str()) {
        None => Ok(false),
        Some("true" | "True" | "TRUE" | "1" | "yes") => Ok(true),
        Some("false" | "False" | "FALSE" | "0" | "no" | "") => Ok(false),
        Some(other) => Err(error_reply(
            StatusCode::BAD_REQUEST,
            Error::param(key, format!("expected true or false, got '{other}'")),
        )),
    }
}

/// The routes, with the guard layer, over `engine`, with default [`Options`].
pub fn router(engine: Engine) -> Router {
    router_with(engine, Options::default()).0
}

/// The routes over `engine` with `options`, and a receiver that turns true when `/shutdown` has
/// stopped the engine (so that the server can stop too).
pub fn router_with(engine: Engine, options: Options) -> (Router, watch::Receiver<bool>) {
    let (stop, stopped) = watch::channel(false);
    let state = AppState {
        engine,
        permits: Arc::new(Semaphore::new(options.max_concurrent_requests)),
        options: Arc::new(options),
        stop,
    };
    let limit = state.options.max_body_bytes;
    // Paths served alike at the root and under /api/v1 (the original Python client's prefix).
    let common = || {
        Router::new()
            .route("/execute", post(execute))
            .route("/execute/batch", post(execute_batch))
            .route("/session/create", post(session_create))
            .route("/session/destroy", post(session_destroy))
            .route("/session/list", post(session_list))
            .route("/session/refresh", post(session_refresh))
            .route("/health", get(health))
            .route("/ready", get(ready))
    };
    let routes = common()
        .route("/tools", get(tools))
        .route("/warmup", post(warmup))
        .route("/warmup/status", get(warmup_status))
        .route("/shutdown", post(shutdown))
        .route("/retrieve", post(retrieve::retrieve));
    let v1 = common()
        .route("/tools", get(compat::tools))
        .route("/tools/{name}/schema", get(compat::tool_schema))
        .route("/warmup", post(compat::warmup))
        .route("/warmup/status", get(compat::warmup_status))
        .route("/server/shutdown", post(compat::shutdown))
        .route("/lifecycle/heartbeat", post(compat::heartbeat).get(compat::heartbeat))
        .route("/lifecycle/status", post(compat::lifecycle_status).get(compat::lifecycle_status))
        .route("/worker/disconnect", post(compat::disconnect));
    // MCP clients: DNS-rebinding protection (the Host header) unless an API key guards the port.
    let hosts = match &state.options.api_key {
        Some(_) => Vec::new(),
        None => ["localhost", "127.0.0.1", "::1", "[::1]"].map(str::to_owned).to_vec(),
    };
    let router = routes
        .nest_service("/mcp", crate::mcp_server::http_service(state.engine.clone(), hosts))
        .nest("/api/v1", v1)
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state);
    (router, stopped)
}

async fn not_found(req: Request) -> Response {
    error_reply(
        StatusCode::NOT_FOUND,
        Error::ToolNotFound(format!("no endpoint {} {}", req.method(), req.uri().path())),
    )
}

/// A known path asked with a method it does not serve: a 1002 naming the method, HTTP 405 (axum
/// adds the `Allow` header).
async fn method_not_allowed(req: Request) -> Response {
    error_reply(
        StatusCode::METHOD_NOT_ALLOWED,
        Error::param("method", format!("{} is not allowed on {}", req.method(), req.uri().path())),
    )
}

/// Compares two byte strings in time that depends only on their lengths.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
        return Some(v.trim());
    }
    let auth = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    auth.strip_prefix("Bearer ").or_else(|| auth.strip_prefix("bearer ")).map(str::trim)
}

/// Authentication, the body (its size and the time to receive it), the concurrency limit and the
/// request timeout, in front of every route. The body is read here, before a permit is taken: a
/// client that sends it slowly holds no permit, and only for `body_timeout`. `/health` takes no
/// permit, so it answers even when every permit is in use.
async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    let open = path == "/health" || path == "/api/v1/health";
    if let (Some(key), false) = (&state.options.api_key, open) {
        let ok = presented_key(req.headers()).is_some_and(|k| constant_time_eq(k.as_bytes(), key.as_bytes()));
        if !ok {
            return error_reply(StatusCode::UNAUTHORIZED, Error::NotPermitted("missing or wrong API key".into()));
        }
    }
    let req = match read_body(req, &state.options).await {
        Ok(req) => req,
        Err(response) => return response,
    };
    if open {
        return next.run(req).await;
    }
    let Ok(_permit) = state.permits.clone().acquire_owned().await else {
        return error_reply(StatusCode::SERVICE_UNAVAILABLE, Error::ShuttingDown);
    };
    match tokio::time::timeout(state.options.request_timeout, next.run(req)).await {
        Ok(response) => response,
        Err(_) => error_reply(
            StatusCode::GATEWAY_TIMEOUT,
            Error::Timeout { message: "request exceeded the server's request timeout".into(), data: json!({}) },
        ),
    }
}

fn too_large() -> Response {
    error_reply(StatusCode::PAYLOAD_TOO_LARGE, Error::param("body", "request body is larger than the server's limit"))
}

/// The request with its body read into memory, within `max_body_bytes` and `body_timeout`.
async fn read_body(req: Request, options: &Options) -> Result<Request, Response> {
    let (parts, body) = req.into_parts();
    let limit = options.max_body_bytes;
    // A body declared too large is still read up to the limit, not refused at once: a client
    // still sending when the answer comes and the connection closes sees a broken pipe, not 413.
    let bytes = match tokio::time::timeout(options.body_timeout, Limited::new(body, limit).collect()).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(e)) if e.downcast_ref::<LengthLimitError>().is_some() => return Err(too_large()),
        Ok(Err(e)) => {
            return Err(error_reply(
                StatusCode::BAD_REQUEST,
                Error::param("body", format!("cannot read the body: {e}")),
            ))
        }
        Err(_) => {
            let message = format!(
                "request body not received within the server's body timeout ({} s)",
                options.body_timeout.as_secs_f64()
            );
            let mut response = error_reply(
                StatusCode::REQUEST_TIMEOUT,
                Error::Timeout { message, data: json!({"body_timeout": options.body_timeout.as_secs_f64()}) },
            );
            // The rest of the body will not be read: the connection cannot carry another request.
            response.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
            return Err(response);
        }
    };
    Ok(Request::from_parts(parts, axum::body::Body::from(bytes)))
}

async fn execute(State(s): State<AppState>, headers: HeaderMap, Body(mut req): Body<ExecuteRequest>) -> Response {
    req.worker_id = worker(&req.worker_id, &headers);
    if req.worker_id.is_empty() {
        req.worker_id = "default".into();
    }
    Reply(s.engine.execute_request(req).await).into_response()
}

async fn execute_batch(State(s): State<AppState>, headers: HeaderMap, Body(mut req): Body<BatchRequest>) -> Response {
    req.worker_id = worker(&req.worker_id, &headers);
    if req.worker_id.is_empty() {
        req.worker_id = "default".into();
    }
    let (start, trace_id) = (std::time::Instant::now(), req.trace_id.clone());
    match s.engine.run_batch(req).await {
        Ok(summary) => {
            let partial = summary.is_partial();
            let envelope = summary.batch_envelope(start, trace_id);
            let status = if partial { StatusCode::MULTI_STATUS } else { status_of(&envelope) };
            json_response(status, &envelope)
        }
        Err(e) => Reply(Envelope::error(&e).traced(trace_id)).into_response(),
    }
}

async fn session_create(
    State(s): State<AppState>,
    headers: HeaderMap,
    Body(mut req): Body<CreateSessionRequest>,
) -> Response {
    req.worker_id = match require_worker(&req.worker_id, &headers) {
        Ok(w) => w,
        Err(r) => return r,
    };
    Reply(s.engine.create_session(req).await).into_response()
}

async fn session_destroy(State(s): State<AppState>, headers: HeaderMap, Body(req): Body<SessionRequest>) -> Response {
    let worker = match require_worker(&req.worker_id, &headers) {
        Ok(w) => w,
        Err(r) => return r,
    };
    let Some(resource) = req.resource_type.filter(|r| !r.is_empty()) else {
        return error_reply(StatusCode::BAD_REQUEST, Error::param("resource_type", "missing"));
    };
    Reply(s.engine.destroy_session(&worker, &resource).await).into_response()
}

async fn session_list(State(s): State<AppState>, headers: HeaderMap, Body(req): Body<WorkerRequest>) -> Response {
    match require_worker(&req.worker_id, &headers) {
        Ok(w) => Reply(s.engine.list_sessions(&w).await).into_response(),
        Err(r) => r,
    }
}

async fn session_refresh(State(s): State<AppState>, headers: HeaderMap, Body(req): Body<SessionRequest>) -> Response {
    match require_worker(&req.worker_id, &headers) {
        Ok(w) => Reply(s.engine.refresh_sessions(&w, req.resource_type.as_deref()).await).into_response(),
        Err(r) => r,
    }
}

async fn tools(State(s): State<AppState>, Query(q): Query<HashMap<String, String>>) -> Response {
    match query_bool(&q, "include_hidden") {
        Ok(hidden) => {
            s.engine.discover_tools().await;
            Reply(s.engine.list_tools(hidden)).into_response()
        }
        Err(r) => r,
    }
}

async fn warmup(State(s): State<AppState>, Body(req): Body<WarmupRequest>) -> Response {
    Reply(s.engine.warmup(&req.backends.unwrap_or_default()).await).into_response()
}

async fn warmup_status(State(s): State<AppState>) -> Response {
    Reply(s.engine.warmup_status()).into_response()
}

/// Stops the engine (draining or cancelling calls, destroying sessions), answers, then lets the
/// server stop.
async fn shutdown(State(s): State<AppState>, Body(req): Body<ShutdownRequest>) -> Response {
    Reply(stop_server(&s, &req).await.envelope()).into_response()
}

/// `/shutdown` and its compatibility path: stops the engine, then lets the server stop.
async fn stop_server(s: &AppState, req: &ShutdownRequest) -> crate::engine::Stopped {
    let stopped = s.engine.stop(req.force, req.cleanup_sessions).await;
    s.stop.send_replace(true);
    stopped
}

async fn health() -> Response {
    json_response(StatusCode::OK, &json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}))
}

async fn ready(State(s): State<AppState>) -> Response {
    let mut v = s.engine.overview();
    v["status"] = json!(if s.engine.is_stopping() { "stopping" } else { "ready" });
    json_response(StatusCode::OK, &v)
}

/// Serves `engine` on `listener` until `shutdown` resolves or `/shutdown` is called, then shuts
/// the engine down (destroying every session) and returns.
///
/// Each connection is served by hyper's HTTP/1 server with `options.header_timeout` on reading
/// headers. On shutdown, the listener is closed, idle connections are closed, and requests in
/// progress finish first.
pub async fn serve(
    listener: TcpListener,
    engine: Engine,
    options: Options,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let header_timeout = options.header_timeout;
    let (router, mut stopped) = router_with(engine.clone(), options);
    let signal = async move {
        tokio::select! {
            _ = shutdown => {}
            _ = stopped.wait_for(|s| *s) => {}
        }
    };
    serve_connections(listener, router, header_timeout, signal).await;
    engine.shutdown(false, true).await;
    Ok(())
}

/// Accepts connections until `signal`, serving each on its own task; then asks every connection
/// to finish and waits until all have.
async fn serve_connections(listener: TcpListener, router: Router, header_timeout: Duration, signal: impl Future) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(header_timeout);
    // Every connection task holds a receiver: the sender's `closed` is "all connections ended".
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut signal = pin!(signal);
    loop {
        let stream = tokio::select! {
            _ = &mut signal => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) if is_connection_error(&e) => continue,
                Err(e) => {
                    // Out of descriptors or memory: accepting again at once would spin.
                    tracing::error!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let builder = builder.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut conn = pin!(builder.serve_connection(TokioIo::new(stream), service));
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = stop.wait_for(|s| *s) => conn.as_mut().graceful_shutdown(),
            }
            let _ = conn.await;
            drop(stop);
        });
    }
    drop(listener);
    stop_tx.send_replace(true);
    drop(stop_rx);
    stop_tx.closed().await;
}

/// Errors of one connection that `accept` reports, after which accepting goes on at once.
fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset)
}
