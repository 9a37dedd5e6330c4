//! [`Sandbox`]: the agent's entry point (seed 001), one API whether the engine runs in this process
//! or behind an HTTP server.
//!
//! It owns the choice of transport (an [`Engine`] handle or an [`HttpServiceClient`]), the worker
//! id, the sessions it created (for `reinitialize`), the server process it started
//! (`auto_start_server`), and the runtime behind the blocking `*_sync` methods. Every method answers
//! the same [`Envelope`] either way: `Ok` for code 0, else [`Error::Request`] with the envelope.
//! What a call does is the engine's.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use serde_json::{json, Map, Value};

use super::error::{check, Error, Result};
use super::server::{locate, ServerProcess};
use super::service::{generated_worker_id, HttpClientConfig, HttpServiceClient};
use crate::protocol::{BatchAction, BatchRequest, CreateSessionRequest, Envelope, ExecuteRequest};
use crate::{Config, Engine};

/// How a remote [`Sandbox`] reaches (or starts) its server (seed 001's constructor arguments).
#[derive(Clone)]
pub struct SandboxConfig {
    /// The server's URL (default `http://127.0.0.1:18890`).
    pub server_url: String,
    /// The worker this sandbox acts as; generated when absent.
    pub worker_id: Option<String>,
    /// Start `agentflow-sandbox serve` on the URL's host and port when nothing answers there, and
    /// stop it when this sandbox closes (default false).
    pub auto_start_server: bool,
    /// The server binary; default: next to the current executable, then `PATH`.
    pub server_binary: Option<PathBuf>,
    /// `--config` for a started server.
    pub server_config: Option<PathBuf>,
    /// Longest a started server may take to answer `/health` (default 30 s).
    pub startup_timeout: Duration,
    /// Sent as `Authorization: Bearer`. Never printed by `Debug`.
    pub api_key: Option<String>,
    /// The client's overall timeout per call (default 60 s).
    pub timeout: Duration,
    /// The client's retries (default 3).
    pub max_retries: u32,
    /// Send heartbeats while started (default false).
    pub auto_heartbeat: bool,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        let client = HttpClientConfig::default();
        SandboxConfig {
            server_url: "http://127.0.0.1:18890".into(),
            worker_id: None,
            auto_start_server: false,
            server_binary: None,
            server_config: None,
            startup_timeout: Duration::from_secs(30),
            api_key: None,
            timeout: client.timeout,
            max_retries: client.max_retries,
            auto_heartbeat: false,
        }
    }
}

impl std::fmt::Debug for SandboxConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxConfig")
            .field("server_url", &self.server_url)
            .field("worker_id", &self.worker_id)
            .field("auto_start_server", &self.auto_start_server)
            .field("server_binary", &self.server_binary)
            .field("server_config", &self.server_config)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl SandboxConfig {
    /// The defaults, at `server_url`.
    pub fn new(server_url: impl Into<String>) -> Self {
        SandboxConfig { server_url: server_url.into(), ..SandboxConfig::default() }
    }

    /// Sets the worker id.
    pub fn worker_id(mut self, worker_id: impl Into<String>) -> Self {
        self.worker_id = Some(worker_id.into());
        self
    }

    /// Starts a server when none answers.
    pub fn auto_start_server(mut self, yes: bool) -> Self {
        self.auto_start_server = yes;
        self
    }

    /// Sets the API key.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    fn client_config(&self, worker_id: &str) -> HttpClientConfig {
        HttpClientConfig {
            base_url: self.server_url.clone(),
            timeout: self.timeout,
            max_retries: self.max_retries,
            worker_id: Some(worker_id.to_owned()),
            auto_heartbeat: self.auto_heartbeat,
            api_key: self.api_key.clone(),
            ..HttpClientConfig::default()
        }
    }
}

enum Target {
    Embedded(Engine),
    Remote { client: HttpServiceClient, config: Box<SandboxConfig> },
}

/// What a session was created with, to create it again on `reinitialize`.
#[derive(Clone)]
struct Created {
    config: Option<Map<String, Value>>,
    custom_name: Option<String>,
}

/// The agent's handle on the engine (seed 001). Switching between in-process and remote is the
/// constructor: [`Sandbox::embedded`] or [`Sandbox::remote`].
///
/// `close` (or `Drop`) destroys this worker's sessions and stops the server this sandbox started.
pub struct Sandbox {
    target: Target,
    worker_id: String,
    created: Mutex<BTreeMap<String, Created>>,
    server: Mutex<Option<ServerProcess>>,
    runtime: OnceLock<tokio::runtime::Runtime>,
    closed: AtomicBool,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let target = match &self.target {
            Target::Embedded(_) => "embedded".to_owned(),
            Target::Remote { client, .. } => client.base_url().to_owned(),
        };
        f.debug_struct("Sandbox").field("target", &target).field("worker_id", &self.worker_id).finish()
    }
}

fn new_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("agentflow-sandbox-client")
        .enable_all()
        .build()
        .map_err(|e| Error::Config(format!("cannot start a runtime for the *_sync methods: {e}")))
}

impl Sandbox {
    fn with_target(target: Target, worker_id: String) -> Self {
        Sandbox {
            target,
            worker_id,
            created: Mutex::new(BTreeMap::new()),
            server: Mutex::new(None),
            runtime: OnceLock::new(),
            closed: AtomicBool::new(false),
        }
    }

    /// A sandbox over an engine in this process, with a generated worker id.
    pub fn embedded(engine: Engine) -> Self {
        Self::with_target(Target::Embedded(engine), generated_worker_id())
    }

    /// A sandbox over an engine built from `config` in this process, on a runtime the sandbox owns:
    /// for programs with no tokio runtime of their own (use the `*_sync` methods).
    pub fn embedded_from(config: &Config) -> Result<Self> {
        let runtime = new_runtime()?;
        let engine = {
            let _entered = runtime.enter();
            config.engine().map_err(|e| Error::Config(e.to_string()))?
        };
        let sandbox = Self::embedded(engine);
        let _ = sandbox.runtime.set(runtime);
        Ok(sandbox)
    }

    /// A sandbox over the HTTP server at `config.server_url`. Does no I/O until [`Sandbox::start`].
    pub fn remote(config: SandboxConfig) -> Result<Self> {
        let worker_id = config.worker_id.clone().filter(|w| !w.is_empty()).unwrap_or_else(generated_worker_id);
        let client = HttpServiceClient::new(config.client_config(&worker_id))?;
        Ok(Self::with_target(Target::Remote { client, config: Box::new(config) }, worker_id))
    }

    /// A sandbox over the HTTP server at `server_url`, with the other defaults.
    pub fn connect(server_url: impl Into<String>) -> Result<Self> {
        Self::remote(SandboxConfig::new(server_url))
    }

    /// Sets the worker id (before any session is created).
    pub fn with_worker_id(mut self, worker_id: impl Into<String>) -> Result<Self> {
        let worker_id = worker_id.into();
        if let Target::Remote { client, config } = &mut self.target {
            config.worker_id = Some(worker_id.clone());
            *client = HttpServiceClient::new(config.client_config(&worker_id))?;
        }
        self.worker_id = worker_id;
        Ok(self)
    }

    /// The worker this sandbox acts as.
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// Whether the engine runs in this process.
    pub fn is_embedded(&self) -> bool {
        matches!(self.target, Target::Embedded(_))
    }

    /// The in-process engine, if embedded.
    pub fn engine(&self) -> Option<&Engine> {
        match &self.target {
            Target::Embedded(e) => Some(e),
            Target::Remote { .. } => None,
        }
    }

    /// The HTTP client, if remote.
    pub fn client(&self) -> Option<&HttpServiceClient> {
        match &self.target {
            Target::Remote { client, .. } => Some(client),
            Target::Embedded(_) => None,
        }
    }

    /// The pid of the server this sandbox started, while it runs.
    pub fn server_pid(&self) -> Option<u32> {
        self.server.lock().as_ref().and_then(ServerProcess::id)
    }

    // ---- lifecycle ------------------------------------------------------------------------

    /// Connects: checks that the server answers, starting it first if nothing answers and
    /// `auto_start_server` is set. In-process, there is nothing to do.
    pub async fn start(&self) -> Result<()> {
        let Target::Remote { client, config } = &self.target else { return Ok(()) };
        match client.connect().await {
            Ok(_) => Ok(()),
            Err(Error::Connection { .. }) if config.auto_start_server => self.start_server(client, config).await,
            Err(e) => Err(e),
        }
    }

    async fn start_server(&self, client: &HttpServiceClient, config: &SandboxConfig) -> Result<()> {
        let uri: hyper::Uri = client.base_url().parse().map_err(|e| Error::Config(format!("server_url: {e}")))?;
        let host = match uri.host().unwrap_or("127.0.0.1").trim_matches(['[', ']']) {
            "localhost" => "127.0.0.1".to_owned(),
            h => h.to_owned(),
        };
        let port = uri.port_u16().unwrap_or(80);
        let binary = locate(config.server_binary.as_deref())?;
        let server_config = config.server_config.clone();
        let mut process =
            tokio::task::spawn_blocking(move || ServerProcess::spawn(&binary, &host, port, server_config.as_deref()))
                .await
                .map_err(|e| Error::Server(format!("spawning the server panicked: {e}")))??;
        let deadline = Instant::now() + config.startup_timeout;
        // One quick try per poll: the client's own retries would only slow the polling down.
        let probe = HttpServiceClient::new(HttpClientConfig {
            max_retries: 0,
            timeout: Duration::from_secs(2),
            auto_heartbeat: false,
            ..client.config().clone()
        })?;
        loop {
            if let Some(status) = process.exited() {
                return Err(Error::Server(format!("the server exited ({status}) before answering /health")));
            }
            match probe.health().await {
                Ok(_) => break,
                Err(e) if Instant::now() >= deadline => {
                    drop(tokio::task::spawn_blocking(move || process.stop()));
                    return Err(Error::Server(format!(
                        "the server did not answer /health within {}s: {e}",
                        config.startup_timeout.as_secs_f64()
                    )));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        if process.exited().is_some() {
            // Another server answered (ours lost the port to it): nothing of ours to own.
            return client.connect().await.map(drop);
        }
        *self.server.lock() = Some(process);
        client.connect().await.map(drop)
    }

    /// Destroys this worker's sessions, stops the server this sandbox started (waiting for it to
    /// exit) and closes the client. Idempotent; a server already gone is not an error.
    pub async fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let server = self.server.lock().take();
        match &self.target {
            Target::Embedded(engine) => {
                engine.destroy_worker(&self.worker_id).await;
            }
            Target::Remote { client, .. } => {
                let released = if server.is_some() {
                    client.shutdown_server(false, true).await
                } else {
                    client.disconnect().await
                };
                match &released {
                    Err(e) if !e.is_transport() => {
                        tracing::warn!("releasing worker {}'s sessions: {e}", self.worker_id)
                    }
                    _ => {}
                }
                client.close().await;
            }
        }
        self.created.lock().clear();
        if let Some(process) = server {
            let status = tokio::task::spawn_blocking(move || process.wait_or_stop(Duration::from_secs(10)))
                .await
                .map_err(|e| Error::Server(format!("waiting for the server panicked: {e}")))??;
            if !status.success() {
                return Err(Error::Server(format!("the server it started exited with {status}")));
            }
        }
        Ok(())
    }

    // ---- sessions -------------------------------------------------------------------------

    /// Creates this worker's session of `resource_type` with `config` (an object of overrides, or
    /// null), or answers the one it has.
    pub async fn create_session(&self, resource_type: &str, config: Value) -> Result<Envelope> {
        self.create_session_named(resource_type, config, None).await
    }

    /// [`Sandbox::create_session`] with a `custom_name`.
    pub async fn create_session_named(
        &self,
        resource_type: &str,
        config: Value,
        custom_name: Option<&str>,
    ) -> Result<Envelope> {
        let config = match config {
            Value::Null => None,
            Value::Object(map) => Some(map),
            _ => {
                let err = crate::Error::param("config", "expected an object of session overrides");
                return check(Envelope::error(&err).traced(None), None);
            }
        };
        let created = Created { config, custom_name: custom_name.map(str::to_owned) };
        let envelope = self.create(resource_type, &created).await?;
        self.created.lock().insert(resource_type.to_owned(), created);
        Ok(envelope)
    }

    async fn create(&self, resource_type: &str, created: &Created) -> Result<Envelope> {
        match &self.target {
            Target::Embedded(engine) => {
                let req = CreateSessionRequest {
                    worker_id: self.worker_id.clone(),
                    resource_type: resource_type.to_owned(),
                    config: created.config.clone(),
                    custom_name: created.custom_name.clone(),
                };
                check(engine.create_session(req).await, None)
            }
            Target::Remote { client, .. } => {
                client.create_session(resource_type, created.config.clone(), created.custom_name.as_deref()).await
            }
        }
    }

    /// Destroys this worker's session of `resource_type`.
    pub async fn destroy_session(&self, resource_type: &str) -> Result<Envelope> {
        let result = match &self.target {
            Target::Embedded(engine) => check(engine.destroy_session(&self.worker_id, resource_type).await, None),
            Target::Remote { client, .. } => client.destroy_session(resource_type).await,
        };
        if result.is_ok() {
            self.created.lock().remove(resource_type);
        }
        result
    }

    /// This worker's sessions.
    pub async fn list_sessions(&self) -> Result<Envelope> {
        match &self.target {
            Target::Embedded(engine) => check(engine.list_sessions(&self.worker_id).await, None),
            Target::Remote { client, .. } => client.list_sessions().await,
        }
    }

    /// Extends this worker's session of `resource_type` (all when `None`) to now + TTL.
    pub async fn refresh_sessions(&self, resource_type: Option<&str>) -> Result<Envelope> {
        match &self.target {
            Target::Embedded(engine) => check(engine.refresh_sessions(&self.worker_id, resource_type).await, None),
            Target::Remote { client, .. } => client.refresh_session(resource_type).await,
        }
    }

    /// Destroys every session of this worker and creates again, fresh, those this sandbox created
    /// (same config and name). `data.sessions` has each creation's data (or its error),
    /// `data.sessions_cleaned` how many were destroyed.
    pub async fn reinitialize(&self) -> Result<Envelope> {
        let cleaned = match &self.target {
            Target::Embedded(engine) => engine.destroy_worker(&self.worker_id).await,
            Target::Remote { client, .. } => client.disconnect().await?,
        };
        let cleaned = cleaned.data.get("sessions_cleaned").cloned().unwrap_or(json!(0));
        let wanted: Vec<(String, Created)> = self.created.lock().iter().map(|(r, c)| (r.clone(), c.clone())).collect();
        let mut sessions = Vec::with_capacity(wanted.len());
        let mut first_failure = None;
        for (resource, created) in &wanted {
            match self.create(resource, created).await {
                Ok(e) => sessions.push(e.data),
                Err(Error::Request { envelope, .. }) => {
                    first_failure.get_or_insert(envelope.code);
                    sessions.push(json!({"code": envelope.code, "message": envelope.message, "data": envelope.data}));
                }
                Err(other) => return Err(other),
            }
        }
        let ok = sessions.len() - sessions.iter().filter(|s| s.get("code").is_some()).count();
        let mut envelope = Envelope::ok(json!({
            "sessions": sessions,
            "total": wanted.len(),
            "success_count": ok,
            "sessions_cleaned": cleaned,
        }));
        if let Some(code) = first_failure {
            envelope.code = code;
            envelope.message = format!("{} of {} sessions failed", wanted.len() - ok, wanted.len());
        }
        check(envelope.traced(None), None)
    }

    // ---- tools ----------------------------------------------------------------------------

    /// Runs a tool as this worker.
    pub async fn execute(&self, action: &str, params: Value) -> Result<Envelope> {
        self.execute_request(ExecuteRequest::new(self.worker_id.as_str(), action, params)).await
    }

    /// Runs a tool with an overall timeout in seconds.
    pub async fn execute_with_timeout(&self, action: &str, params: Value, timeout: f64) -> Result<Envelope> {
        self.execute_request(ExecuteRequest::new(self.worker_id.as_str(), action, params).timeout(timeout)).await
    }

    /// Runs a tool from a full request; an empty `worker_id` is this sandbox's.
    pub async fn execute_request(&self, mut req: ExecuteRequest) -> Result<Envelope> {
        if req.worker_id.is_empty() {
            req.worker_id = self.worker_id.clone();
        }
        match &self.target {
            Target::Embedded(engine) => check(engine.execute_request(req).await, None),
            Target::Remote { client, .. } => client.execute_request(req).await,
        }
    }

    /// Runs several tools (docs/protocol.md §3.3). A failed action makes it [`Error::Request`],
    /// whose envelope still holds every result.
    pub async fn execute_batch(
        &self,
        actions: Vec<BatchAction>,
        parallel: bool,
        stop_on_error: bool,
    ) -> Result<Envelope> {
        match &self.target {
            Target::Embedded(engine) => {
                let req = BatchRequest {
                    worker_id: self.worker_id.clone(),
                    actions,
                    parallel,
                    stop_on_error,
                    trace_id: None,
                };
                check(engine.execute_batch(req).await, None)
            }
            Target::Remote { client, .. } => client.execute_batch(actions, parallel, stop_on_error).await,
        }
    }

    /// The tools with their JSON Schemas (`data.tools`).
    pub async fn get_tools(&self, include_hidden: bool) -> Result<Envelope> {
        match &self.target {
            Target::Embedded(engine) => check(engine.list_tools(include_hidden), None),
            Target::Remote { client, .. } => client.tools(include_hidden).await,
        }
    }

    /// This worker's state: its sessions by resource type, how many tools exist.
    pub async fn get_status(&self) -> Result<Envelope> {
        match &self.target {
            Target::Embedded(engine) => check(engine.status(&self.worker_id), None),
            Target::Remote { client, .. } => client.get_status().await,
        }
    }

    // ---- warm-up and server ---------------------------------------------------------------

    /// Warms the named backends (all when empty).
    pub async fn warmup(&self, resources: &[&str]) -> Result<Envelope> {
        match &self.target {
            Target::Embedded(engine) => {
                let names: Vec<String> = resources.iter().map(|s| s.to_string()).collect();
                check(engine.warmup(&names).await, None)
            }
            Target::Remote { client, .. } => client.warmup(resources).await,
        }
    }

    /// Each backend's warm-up state.
    pub async fn get_warmup_status(&self) -> Result<Envelope> {
        match &self.target {
            Target::Embedded(engine) => check(engine.warmup_status(), None),
            Target::Remote { client, .. } => client.warmup_status().await,
        }
    }

    /// Stops the engine: over HTTP the server then exits; in-process the engine refuses further
    /// calls (5002). Answers `sessions_cleaned`.
    pub async fn shutdown_server(&self, force: bool, cleanup_sessions: bool) -> Result<Envelope> {
        match &self.target {
            Target::Embedded(engine) => check(engine.shutdown(force, cleanup_sessions).await, None),
            Target::Remote { client, .. } => client.shutdown_server(force, cleanup_sessions).await,
        }
    }

    // ---- blocking variants ----------------------------------------------------------------

    /// Runs `fut` to completion on the sandbox's own runtime. Refused inside an async runtime,
    /// where blocking would stall it: await the async method there.
    fn block_on<T>(&self, fut: impl Future<Output = Result<T>>) -> Result<T> {
        if tokio::runtime::Handle::try_current().is_ok() {
            return Err(Error::Config(
                "a *_sync method was called inside an async runtime: await the async method instead".into(),
            ));
        }
        if self.runtime.get().is_none() {
            let _ = self.runtime.set(new_runtime()?);
        }
        let runtime = self.runtime.get().ok_or_else(|| Error::Config("no runtime".into()))?;
        runtime.block_on(fut)
    }

    /// Blocking [`Sandbox::start`].
    pub fn start_sync(&self) -> Result<()> {
        self.block_on(self.start())
    }

    /// Blocking [`Sandbox::close`].
    pub fn close_sync(&self) -> Result<()> {
        self.block_on(self.close())
    }

    /// Blocking [`Sandbox::warmup`].
    pub fn warmup_sync(&self, resources: &[&str]) -> Result<Envelope> {
        self.block_on(self.warmup(resources))
    }

    /// Blocking [`Sandbox::create_session`].
    pub fn create_session_sync(&self, resource_type: &str, config: Value) -> Result<Envelope> {
        self.block_on(self.create_session(resource_type, config))
    }

    /// Blocking [`Sandbox::destroy_session`].
    pub fn destroy_session_sync(&self, resource_type: &str) -> Result<Envelope> {
        self.block_on(self.destroy_session(resource_type))
    }

    /// Blocking [`Sandbox::execute`].
    pub fn execute_sync(&self, action: &str, params: Value) -> Result<Envelope> {
        self.block_on(self.execute(action, params))
    }

    /// Blocking [`Sandbox::execute_batch`].
    pub fn execute_batch_sync(
        &self,
        actions: Vec<BatchAction>,
        parallel: bool,
        stop_on_error: bool,
    ) -> Result<Envelope> {
        self.block_on(self.execute_batch(actions, parallel, stop_on_error))
    }

    /// Blocking [`Sandbox::list_sessions`].
    pub fn list_sessions_sync(&self) -> Result<Envelope> {
        self.block_on(self.list_sessions())
    }

    /// Blocking [`Sandbox::get_status`].
    pub fn get_status_sync(&self) -> Result<Envelope> {
        self.block_on(self.get_status())
    }

    /// Blocking [`Sandbox::get_tools`].
    pub fn get_tools_sync(&self, include_hidden: bool) -> Result<Envelope> {
        self.block_on(self.get_tools(include_hidden))
    }

    /// Blocking [`Sandbox::get_warmup_status`].
    pub fn get_warmup_status_sync(&self) -> Result<Envelope> {
        self.block_on(self.get_warmup_status())
    }

    /// Blocking [`Sandbox::refresh_sessions`].
    pub fn refresh_sessions_sync(&self, resource_type: Option<&str>) -> Result<Envelope> {
        self.block_on(self.refresh_sessions(resource_type))
    }

    /// Blocking [`Sandbox::reinitialize`].
    pub fn reinitialize_sync(&self) -> Result<Envelope> {
        self.block_on(self.reinitialize())
    }

    /// Blocking [`Sandbox::shutdown_server`].
    pub fn shutdown_server_sync(&self, force: bool, cleanup_sessions: bool) -> Result<Envelope> {
        self.block_on(self.shutdown_server(force, cleanup_sessions))
    }
}

impl Drop for Sandbox {
    /// Closes: on the sandbox's own runtime when it has one and no other is current; else the
    /// sessions are released by a task on the current runtime, and a started server is stopped
    /// by SIGTERM (it destroys every session itself before exiting).
    fn drop(&mut self) {
        if !self.closed.load(Ordering::Acquire) {
            let current = tokio::runtime::Handle::try_current();
            match (self.runtime.get(), current) {
                (Some(runtime), Err(_)) => {
                    if let Err(e) = runtime.block_on(self.close()) {
                        tracing::warn!("closing on drop: {e}");
                    }
                }
                (_, Ok(handle)) => {
                    self.closed.store(true, Ordering::Release);
                    let worker = self.worker_id.clone();
                    let owns_server = self.server.lock().is_some();
                    match &self.target {
                        Target::Embedded(engine) => {
                            let engine = engine.clone();
                            handle.spawn(async move { engine.destroy_worker(&worker).await });
                        }
                        Target::Remote { client, .. } if !owns_server => {
                            let client = client.clone();
                            handle.spawn(async move { client.disconnect().await });
                        }
                        Target::Remote { .. } => {}
                    }
                }
                (None, Err(_)) => {}
            }
        }
        // A server still owned here is stopped by the process's own Drop (SIGTERM, then SIGKILL).
        drop(self.server.lock().take());
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}
