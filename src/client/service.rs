//! [`HttpServiceClient`]: the Rust client of the HTTP API (seed 000), with [`HttpClientConfig`].
//!
//! It owns the transport: one pooled hyper connection set per client, the `X-Worker-ID` and
//! `Authorization: Bearer` headers, the client-side timeout, retries with backoff, and an optional
//! heartbeat task. Retry rule: a request that failed while connecting never reached the server and
//! is re-sent whatever it is; one that failed after that is re-sent only when it is idempotent
//! (reads, session create, refresh, warm-up), so a tool call is never run twice by the client. A
//! timeout is never retried. What the answers mean is the engine's (docs/protocol.md).

use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use parking_lot::Mutex;
use serde_json::{json, Map, Value};

use super::error::{check, Error, Result};
use crate::protocol::{new_trace_id, BatchAction, BatchRequest, CreateSessionRequest, Envelope, ExecuteRequest};

/// How an [`HttpServiceClient`] reaches the server (seed 000, `HTTPClientConfig`).
#[derive(Clone)]
pub struct HttpClientConfig {
    /// The server's base URL (default `http://localhost:18890`). Only `http://` is spoken; put a
    /// TLS-terminating proxy in front of a remote server.
    pub base_url: String,
    /// Longest a call may take, end to end, retries included (default 60 s). A call that gives its
    /// own tool timeout waits at least that long plus 5 s.
    pub timeout: Duration,
    /// Re-sends after a failure that allows it (default 3).
    pub max_retries: u32,
    /// The worker this client acts as; generated (`sandbox_<hex>`) when absent.
    pub worker_id: Option<String>,
    /// Send `/api/v1/lifecycle/heartbeat` every `heartbeat_interval` after `connect` (default false).
    pub auto_heartbeat: bool,
    /// Period of the heartbeat (default 30 s).
    pub heartbeat_interval: Duration,
    /// Sent as `Authorization: Bearer <key>` when set. Never printed by `Debug`.
    pub api_key: Option<String>,
}

impl Default for HttpClientConfig {
    fn default() -> Self {
        HttpClientConfig {
            base_url: "http://localhost:18890".into(),
            timeout: Duration::from_secs(60),
            max_retries: 3,
            worker_id: None,
            auto_heartbeat: false,
            heartbeat_interval: Duration::from_secs(30),
            api_key: None,
        }
    }
}

impl std::fmt::Debug for HttpClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClientConfig")
            .field("base_url", &self.base_url)
            .field("timeout", &self.timeout)
            .field("max_retries", &self.max_retries)
            .field("worker_id", &self.worker_id)
            .field("auto_heartbeat", &self.auto_heartbeat)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl HttpClientConfig {
    /// The defaults, at `base_url`.
    pub fn new(base_url: impl Into<String>) -> Self {
        HttpClientConfig { base_url: base_url.into(), ..HttpClientConfig::default() }
    }

    /// Sets the worker id.
    pub fn worker_id(mut self, worker_id: impl Into<String>) -> Self {
        self.worker_id = Some(worker_id.into());
        self
    }

    /// Sets the API key.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// Sets the overall timeout of a call.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the number of retries.
    pub fn max_retries(mut self, n: u32) -> Self {
        self.max_retries = n;
        self
    }
}

/// A fresh worker id: `sandbox_` and 12 hex digits.
pub(crate) fn generated_worker_id() -> String {
    format!("sandbox_{}", &new_trace_id()[20..])
}

/// Whether a failed request may be sent again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Only if it never reached the server (connecting failed).
    Unsent,
    /// Also after it may have reached the server: doing it twice is doing it once.
    Idempotent,
}

/// Whether attempt number `attempt` (0-based) that failed may be followed by another.
fn may_retry(retry: Retry, connect_failed: bool, attempt: u32, max_retries: u32) -> bool {
    attempt < max_retries && (connect_failed || retry == Retry::Idempotent)
}

/// Pause before retry `attempt + 1`: 50 ms doubling, at most 1 s.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(50u64.saturating_mul(1 << attempt.min(5))).min(Duration::from_secs(1))
}

/// What a round trip answers before interpretation.
struct Answer {
    status: StatusCode,
    body: Bytes,
}

/// The parts of a client a heartbeat task needs too: cheap to clone.
#[derive(Clone)]
struct Transport {
    http: Client<HttpConnector, Full<Bytes>>,
    base: String,
    worker: HeaderValue,
    auth: Option<HeaderValue>,
    max_retries: u32,
}

impl Transport {
    fn build(config: &HttpClientConfig, worker_id: &str) -> Result<Self> {
        let base = config.base_url.trim_end_matches('/').to_owned();
        let uri: Uri = base.parse().map_err(|e| Error::Config(format!("base_url '{base}': {e}")))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => {
                return Err(Error::Config(format!(
                    "base_url '{base}': scheme '{other}' is not supported (http only; use a TLS proxy)"
                )))
            }
            None => return Err(Error::Config(format!("base_url '{base}' has no scheme (http://host:port)"))),
        }
        if uri.host().is_none() {
            return Err(Error::Config(format!("base_url '{base}' has no host")));
        }
        let worker = HeaderValue::from_str(worker_id)
            .map_err(|_| Error::Config(format!("worker_id '{worker_id}' is not a header value")))?;
        let auth = match &config.api_key {
            Some(key) => {
                let mut v = HeaderValue::from_str(&format!("Bearer {key}"))
                    .map_err(|_| Error::Config("api_key is not a header value".into()))?;
                v.set_sensitive(true);
                Some(v)
            }
            None => None,
        };
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.timeout.min(Duration::from_secs(10))));
        // Idle connections are dropped before hyper's 30 s header-read timeout can close them
        // under a request about to be sent.
        let http = Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(20)).build(connector);
        Ok(Transport { http, base, worker, auth, max_retries: config.max_retries })
    }

    /// Sends one request, re-sending it as `retry` allows, all within `timeout`.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
        retry: Retry,
        timeout: Duration,
    ) -> Result<Answer> {
        let uri: Uri =
            format!("{}{path}", self.base).parse().map_err(|e| Error::Config(format!("path '{path}': {e}")))?;
        let deadline = Instant::now() + timeout;
        let mut attempt = 0;
        loop {
            let mut req = Request::builder()
                .method(method.clone())
                .uri(uri.clone())
                .header(USER_AGENT, concat!("agentflow-sandbox-client/", env!("CARGO_PKG_VERSION")))
                .header("x-worker-id", self.worker.clone());
            if body.is_some() {
                req = req.header(CONTENT_TYPE, "application/json");
            }
            if let Some(auth) = &self.auth {
                req = req.header(AUTHORIZATION, auth.clone());
            }
            let req = req
                .body(Full::new(body.clone().unwrap_or_default()))
                .map_err(|e| Error::Config(format!("cannot build the request: {e}")))?;
            let round_trip = async {
                let response = self.http.request(req).await.map_err(|e| (e.is_connect(), chain(&e)))?;
                let status = response.status();
                let body = response.into_body().collect().await.map_err(|e| (false, chain(&e)))?.to_bytes();
                Ok::<_, (bool, String)>(Answer { status, body })
            };
            let failure = match tokio::time::timeout_at(deadline.into(), round_trip).await {
                Ok(Ok(answer)) => return Ok(answer),
                Ok(Err(failure)) => failure,
                Err(_) => return Err(Error::Timeout { url: self.base.clone(), timeout }),
            };
            let (connect_failed, reason) = failure;
            let pause = backoff(attempt);
            if !may_retry(retry, connect_failed, attempt, self.max_retries) || Instant::now() + pause >= deadline {
                return Err(Error::Connection { url: self.base.clone(), reason });
            }
            tokio::time::sleep(pause).await;
            attempt += 1;
        }
    }
}

/// An error and its causes, one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// Reads an envelope; an answer that is not one is [`Error::InvalidResponse`].
fn envelope_of(answer: &Answer) -> Result<Envelope> {
    serde_json::from_slice(&answer.body).map_err(|e| invalid(answer, &format!("not an envelope: {e}")))
}

fn json_of(answer: &Answer) -> Result<Value> {
    serde_json::from_slice(&answer.body).map_err(|e| invalid(answer, &format!("not JSON: {e}")))
}

fn invalid(answer: &Answer, reason: &str) -> Error {
    let head = String::from_utf8_lossy(&answer.body[..answer.body.len().min(120)]).into_owned();
    Error::InvalidResponse { status: answer.status.as_u16(), reason: format!("{reason} (body starts {head:?})") }
}

struct Inner {
    transport: Transport,
    config: HttpClientConfig,
    worker_id: String,
    heartbeat: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(task) = self.heartbeat.get_mut().take() {
            task.abort();
        }
    }
}

/// The client of the HTTP API (seed 000, `HTTPServiceClient`): cheap to clone, all clones share
/// one connection pool. Every call but [`HttpServiceClient::request_json`] answers `Ok` with the
/// envelope when its code is 0, else [`Error::Request`] with the envelope.
///
/// Calls need a tokio runtime; `connect` is optional (it checks `/health` and starts the
/// heartbeat), calls connect lazily.
#[derive(Clone)]
pub struct HttpServiceClient {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for HttpServiceClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpServiceClient")
            .field("base_url", &self.inner.transport.base)
            .field("worker_id", &self.inner.worker_id)
            .finish()
    }
}

impl HttpServiceClient {
    /// A client with `config`. Does no I/O; fails only on a bad URL, worker id or key.
    pub fn new(config: HttpClientConfig) -> Result<Self> {
        let worker_id = config.worker_id.clone().filter(|w| !w.is_empty()).unwrap_or_else(generated_worker_id);
        let transport = Transport::build(&config, &worker_id)?;
        Ok(HttpServiceClient { inner: Arc::new(Inner { transport, config, worker_id, heartbeat: Mutex::new(None) }) })
    }

    /// A client of `base_url` with the other defaults.
    pub fn with_url(base_url: impl Into<String>) -> Result<Self> {
        Self::new(HttpClientConfig::new(base_url))
    }

    /// The worker this client acts as.
    pub fn worker_id(&self) -> &str {
        &self.inner.worker_id
    }

    /// The base URL, without a trailing `/`.
    pub fn base_url(&self) -> &str {
        &self.inner.transport.base
    }

    /// The configuration.
    pub fn config(&self) -> &HttpClientConfig {
        &self.inner.config
    }

    fn timeout(&self) -> Duration {
        self.inner.config.timeout
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>, retry: Retry) -> Result<Envelope> {
        self.call_within(method, path, body, retry, self.timeout()).await
    }

    async fn call_within(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        retry: Retry,
        timeout: Duration,
    ) -> Result<Envelope> {
        let bytes = match body {
            Some(v) => Some(Bytes::from(
                serde_json::to_vec(&v).map_err(|e| Error::Config(format!("cannot encode the request: {e}")))?,
            )),
            None => None,
        };
        let answer = self.inner.transport.send(method, path, bytes, retry, timeout).await?;
        check(envelope_of(&answer)?, Some(answer.status.as_u16()))
    }

    /// Checks that the server answers `/health` (retrying as configured) and starts the heartbeat
    /// when `auto_heartbeat` is set. Answers the health body (`status`, `version`).
    pub async fn connect(&self) -> Result<Value> {
        let health = self.health().await?;
        if self.inner.config.auto_heartbeat {
            let mut slot = self.inner.heartbeat.lock();
            if slot.as_ref().is_none_or(|t| t.is_finished()) {
                *slot = Some(tokio::spawn(beat(
                    self.inner.transport.clone(),
                    self.inner.config.heartbeat_interval.max(Duration::from_millis(10)),
                    self.timeout(),
                )));
            }
        }
        Ok(health)
    }

    /// Stops the heartbeat. Idle pooled connections close when the last clone is dropped.
    pub async fn close(&self) {
        if let Some(task) = self.inner.heartbeat.lock().take() {
            task.abort();
        }
    }

    /// Whether the heartbeat task is running.
    pub fn is_heartbeating(&self) -> bool {
        self.inner.heartbeat.lock().as_ref().is_some_and(|t| !t.is_finished())
    }

    /// `GET /health` (not enveloped).
    pub async fn health(&self) -> Result<Value> {
        let answer = self.inner.transport.send(Method::GET, "/health", None, Retry::Idempotent, self.timeout()).await?;
        let value = json_of(&answer)?;
        if answer.status.is_success() {
            Ok(value)
        } else {
            Err(invalid(&answer, "health check failed"))
        }
    }

    /// Runs a tool. `timeout` (seconds) bounds the tool on the server; the client then waits at
    /// least that long plus 5 s. Sent once: a call that may have reached the server is not re-sent.
    pub async fn execute(&self, action: &str, params: Value, timeout: Option<f64>) -> Result<Envelope> {
        let mut req = ExecuteRequest::new(self.worker_id(), action, params);
        req.timeout = timeout;
        self.execute_request(req).await
    }

    /// Runs a tool from a full request (trace id, timeout). An empty `worker_id` is this client's.
    pub async fn execute_request(&self, mut req: ExecuteRequest) -> Result<Envelope> {
        if req.worker_id.is_empty() {
            req.worker_id = self.worker_id().to_owned();
        }
        let wait = self.wait_for(req.timeout);
        let body = serde_json::to_value(&req).map_err(|e| Error::Config(e.to_string()))?;
        self.call_within(Method::POST, "/execute", Some(body), Retry::Unsent, wait).await
    }

    /// How long to wait for a call whose tool may take `tool_timeout` seconds.
    fn wait_for(&self, tool_timeout: Option<f64>) -> Duration {
        let tool = tool_timeout
            .filter(|t| t.is_finite() && *t > 0.0)
            .map(|t| Duration::from_secs_f64(t.min(86_400.0)) + Duration::from_secs(5));
        tool.map_or(self.timeout(), |t| t.max(self.timeout()))
    }

    /// Runs several tools (`/execute/batch`). A batch with a failed action is [`Error::Request`]
    /// whose envelope still holds every result.
    pub async fn execute_batch(
        &self,
        actions: Vec<BatchAction>,
        parallel: bool,
        stop_on_error: bool,
    ) -> Result<Envelope> {
        let tool_time: f64 = actions.iter().filter_map(|a| a.timeout).sum();
        let wait = self.wait_for((tool_time > 0.0).then_some(tool_time));
        let req =
            BatchRequest { worker_id: self.worker_id().to_owned(), actions, parallel, stop_on_error, trace_id: None };
        let body = serde_json::to_value(&req).map_err(|e| Error::Config(e.to_string()))?;
        self.call_within(Method::POST, "/execute/batch", Some(body), Retry::Unsent, wait).await
    }

    /// Creates this worker's session of `resource_type`, or answers the one it has.
    pub async fn create_session(
        &self,
        resource_type: &str,
        config: Option<Map<String, Value>>,
        custom_name: Option<&str>,
    ) -> Result<Envelope> {
        let req = CreateSessionRequest {
            worker_id: self.worker_id().to_owned(),
            resource_type: resource_type.to_owned(),
            config,
            custom_name: custom_name.map(str::to_owned),
        };
        let body = serde_json::to_value(&req).map_err(|e| Error::Config(e.to_string()))?;
        self.call(Method::POST, "/session/create", Some(body), Retry::Idempotent).await
    }

    /// Destroys this worker's session of `resource_type`.
    pub async fn destroy_session(&self, resource_type: &str) -> Result<Envelope> {
        let body = json!({"worker_id": self.worker_id(), "resource_type": resource_type});
        self.call(Method::POST, "/session/destroy", Some(body), Retry::Unsent).await
    }

    /// This worker's sessions.
    pub async fn list_sessions(&self) -> Result<Envelope> {
        let body = json!({"worker_id": self.worker_id()});
        self.call(Method::POST, "/session/list", Some(body), Retry::Idempotent).await
    }

    /// The tools (`data.tools` of `/tools`), each with its JSON Schema.
    pub async fn list_tools(&self, include_hidden: bool) -> Result<Vec<Value>> {
        let envelope = self.tools(include_hidden).await?;
        match envelope.data.get("tools") {
            Some(Value::Array(tools)) => Ok(tools.clone()),
            _ => Err(Error::InvalidResponse { status: 200, reason: "/tools answered no data.tools list".into() }),
        }
    }

    /// `/tools` as its envelope.
    pub async fn tools(&self, include_hidden: bool) -> Result<Envelope> {
        let path = if include_hidden { "/tools?include_hidden=true" } else { "/tools" };
        self.call(Method::GET, path, None, Retry::Idempotent).await
    }

    /// This worker's state (`/api/v1/lifecycle/status`): its sessions and how many tools exist.
    pub async fn get_status(&self) -> Result<Envelope> {
        let body = json!({"worker_id": self.worker_id()});
        self.call(Method::POST, "/api/v1/lifecycle/status", Some(body), Retry::Idempotent).await
    }

    /// Extends this worker's session of `resource_type` (all of them when `None`) to now + TTL.
    pub async fn refresh_session(&self, resource_type: Option<&str>) -> Result<Envelope> {
        let body = json!({"worker_id": self.worker_id(), "resource_type": resource_type});
        self.call(Method::POST, "/session/refresh", Some(body), Retry::Idempotent).await
    }

    /// Warms the named backends up (all when empty).
    pub async fn warmup(&self, backends: &[&str]) -> Result<Envelope> {
        self.call(Method::POST, "/warmup", Some(json!({"backends": backends})), Retry::Idempotent).await
    }

    /// Each backend's warm-up state.
    pub async fn warmup_status(&self) -> Result<Envelope> {
        self.call(Method::GET, "/warmup/status", None, Retry::Idempotent).await
    }

    /// Tells the server this worker is alive (`/api/v1/lifecycle/heartbeat`); keeps nothing alive.
    pub async fn heartbeat(&self) -> Result<Envelope> {
        let body = json!({"worker_id": self.worker_id()});
        self.call(Method::POST, "/api/v1/lifecycle/heartbeat", Some(body), Retry::Idempotent).await
    }

    /// Destroys every session of this worker (`/api/v1/worker/disconnect`).
    pub async fn disconnect(&self) -> Result<Envelope> {
        let body = json!({"worker_id": self.worker_id()});
        self.call(Method::POST, "/api/v1/worker/disconnect", Some(body), Retry::Unsent).await
    }

    /// Stops the server (`/shutdown`): it answers once running calls have finished (cancelled with
    /// `force`) and sessions are destroyed (if `cleanup_sessions`), then exits.
    pub async fn shutdown_server(&self, force: bool, cleanup_sessions: bool) -> Result<Envelope> {
        let body = json!({"force": force, "cleanup_sessions": cleanup_sessions});
        self.call(Method::POST, "/shutdown", Some(body), Retry::Unsent).await
    }

    /// Any path, any method: answers the HTTP status and the JSON body as they are, whatever the
    /// code. Re-sent only if it never reached the server.
    pub async fn request_json(&self, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value)> {
        let method = Method::from_bytes(method.as_bytes()).map_err(|e| Error::Config(format!("method: {e}")))?;
        let bytes = match body {
            Some(v) => Some(Bytes::from(serde_json::to_vec(v).map_err(|e| Error::Config(e.to_string()))?)),
            None => None,
        };
        let answer = self.inner.transport.send(method, path, bytes, Retry::Unsent, self.timeout()).await?;
        Ok((answer.status.as_u16(), json_of(&answer)?))
    }
}

/// Sends a heartbeat every `period` until aborted; failures are ignored (the next beat retries).
async fn beat(transport: Transport, period: Duration, timeout: Duration) {
    let mut interval = tokio::time::interval(period);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let body = Bytes::from_static(b"{}");
    loop {
        interval.tick().await;
        let _ = transport
            .send(Method::POST, "/api/v1/lifecycle/heartbeat", Some(body.clone()), Retry::Idempotent, timeout)
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_idempotent_or_unsent_requests_are_retried() {
        assert!(may_retry(Retry::Unsent, true, 0, 3), "a refused connection is always retried");
        assert!(!may_retry(Retry::Unsent, false, 0, 3), "a tool call that may have arrived is not");
        assert!(may_retry(Retry::Idempotent, false, 2, 3));
        assert!(!may_retry(Retry::Idempotent, true, 3, 3), "at most max_retries re-sends");
        assert!(!may_retry(Retry::Idempotent, true, 0, 0));
    }

    #[test]
    fn backoff_doubles_up_to_a_second() {
        let pauses: Vec<u64> = (0..8).map(|a| backoff(a).as_millis() as u64).collect();
        assert_eq!(pauses, [50, 100, 200, 400, 800, 1000, 1000, 1000]);
    }

    #[test]
    fn config_checks_the_url_and_hides_the_key() {
        assert!(matches!(HttpServiceClient::with_url("https://x:1"), Err(Error::Config(_))));
        assert!(matches!(HttpServiceClient::with_url("localhost:18890/x y"), Err(Error::Config(_))));
        let config = HttpClientConfig::new("http://127.0.0.1:1/").api_key("k-123");
        assert!(!format!("{config:?}").contains("k-123"));
        let client = HttpServiceClient::new(config).unwrap();
        assert_eq!(client.base_url(), "http://127.0.0.1:1");
        assert!(client.worker_id().starts_with("sandbox_") && client.worker_id().len() == 20);
        assert!(!format!("{client:?}").contains("k-123"));
    }

    #[test]
    fn a_tool_timeout_lengthens_the_wait() {
        let client =
            HttpServiceClient::new(HttpClientConfig::new("http://127.0.0.1:1").timeout(Duration::from_secs(2)))
                .unwrap();
        assert_eq!(client.wait_for(None), Duration::from_secs(2));
        assert_eq!(client.wait_for(Some(0.5)), Duration::from_millis(5500));
        assert_eq!(client.wait_for(Some(f64::NAN)), Duration::from_secs(2));
        assert_eq!(client.wait_for(Some(10.0)), Duration::from_secs(15));
    }
}
