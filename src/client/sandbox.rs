//! [`Sandbox`]: the agent's entry point (seed 001), one API whether the engine runs in this process
//! or behind an HTTP server.
//!
//! It owns the transport (an [`Engine`] handle or an [`HttpServiceClient`], behind one trait in
//! `transport.rs`), the worker id, the sessions it created (for `reinitialize`), the server process
//! it started (`auto_start_server`), and the runtime behind the blocking `*_sync` methods. Every
//! method answers the same [`Envelope`] either way: `Ok` for code 0, else [`Error::Request`] with
//! the envelope. What a call does is the engine's.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{json, Map, Value};

use super::error::{check, Error, Result};
use super::server::ServerProcess;
use super::service::{generated_worker_id, HttpClientConfig, HttpServiceClient};
use super::transport::{InProcess, Remote, Transport};
use crate::protocol::{BatchAction, Envelope, ExecuteRequest};
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

    pub(super) fn client_config(&self, worker_id: &str) -> HttpClientConfig {
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
    transport: Arc<dyn Transport>,
    worker_id: String,
    created: Mutex<BTreeMap<String, Created>>,
    server: Mutex<Option<ServerProcess>>,
    runtime: OnceLock<tokio::runtime::Runtime>,
    closed: AtomicBool,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("target", &self.transport.describe())
            .field("worker_id", &self.worker_id)
            .finish()
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
    fn with_transport(transport: Arc<dyn Transport>, worker_id: String) -> Self {
        Sandbox {
            transport,
            worker_id,
            created: Mutex::new(BTreeMap::new()),
            server: Mutex::new(None),
            runtime: OnceLock::new(),
            closed: AtomicBool::new(false),
        }
    }

    /// A sandbox over an engine in this process, with a generated worker id.
    pub fn embedded(engine: Engine) -> Self {
        let worker_id = generated_worker_id();
        Self::with_transport(Arc::new(InProcess { engine, worker_id: worker_id.clone() }), worker_id)
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
        let remote = Remote::new(Box::new(config), &worker_id)?;
        Ok(Self::with_transport(Arc::new(remote), worker_id))
    }

    /// A sandbox over the HTTP server at `server_url`, with the other defaults.
    pub fn connect(server_url: impl Into<String>) -> Result<Self> {
        Self::remote(SandboxConfig::new(server_url))
    }

    /// Sets the worker id (before any session is created).
    pub fn with_worker_id(mut self, worker_id: impl Into<String>) -> Result<Self> {
        let worker_id = worker_id.into();
        self.transport = self.transport.for_worker(&worker_id)?;
        self.worker_id = worker_id;
        Ok(self)
    }

    /// The worker this sandbox acts as.
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// Whether the engine runs in this process.
    pub fn is_embedded(&self) -> bool {
        self.transport.engine().is_some()
    }

    /// The in-process engine, if embedded.
    pub fn engine(&self) -> Option<&Engine> {
        self.transport.engine()
    }

    /// The HTTP client, if remote.
    pub fn client(&self) -> Option<&HttpServiceClient> {
        self.transport.client()
    }

    /// The pid of the server this sandbox started, while it runs.
    pub fn server_pid(&self) -> Option<u32> {
        self.server.lock().as_ref().and_then(ServerProcess::id)
    }

    // ---- lifecycle ------------------------------------------------------------------------

    /// Connects: checks that the server answers, starting it first if nothing answers and
    /// `auto_start_server` is set. In-process, there is nothing to do.
    pub async fn start(&self) -> Result<()> {
        self.transport.start(&self.server).await
    }

    /// Destroys this worker's sessions, stops the server this sandbox started (waiting for it to
    /// exit) and closes the client. Idempotent; a server already gone is not an error.
    pub async fn close(&self) -> Result<()> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let server = self.server.lock().take();
        let released = if server.is_some() {
            self.transport.shutdown(false, true).await
        } else {
            self.transport.release_worker().await
        };
        match &released {
            Err(e) if !e.is_transport() => {
                tracing::warn!("releasing worker {}'s sessions: {e}", self.worker_id)
            }
            _ => {}
        }
        self.transport.close().await;
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
        self.transport.create_session(resource_type, created.config.clone(), created.custom_name.as_deref()).await
    }

    /// Destroys this worker's session of `resource_type`.
    pub async fn destroy_session(&self, resource_type: &str) -> Result<Envelope> {
        let result = self.transport.destroy_session(resource_type).await;
        if result.is_ok() {
            self.created.lock().remove(resource_type);
        }
        result
    }

    /// This worker's sessions.
    pub async fn list_sessions(&self) -> Result<Envelope> {
        self.transport.list_sessions().await
    }

    /// Extends this worker's session of `resource_type` (all when `None`) to now + TTL.
    pub async fn refresh_sessions(&self, resource_type: Option<&str>) -> Result<Envelope> {
        self.transport.refresh_sessions(resource_type).await
    }

    /// Destroys every session of this worker and creates again, fresh, those this sandbox created
    /// (same config and name). `data.sessions` has each creation's data (or its error),
    /// `data.sessions_cleaned` how many were destroyed.
    pub async fn reinitialize(&self) -> Result<Envelope> {
        let cleaned = self.transport.release_worker().await?;
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
        self.transport.execute_request(req).await
    }

    /// Runs several tools (docs/protocol.md §3.3). A failed action makes it [`Error::Request`],
    /// whose envelope still holds every result.
    pub async fn execute_batch(
        &self,
        actions: Vec<BatchAction>,
        parallel: bool,
        stop_on_error: bool,
    ) -> Result<Envelope> {
        self.transport.execute_batch(actions, parallel, stop_on_error).await
    }

    /// The tools with their JSON Schemas (`data.tools`).
    pub async fn get_tools(&self, include_hidden: bool) -> Result<Envelope> {
        self.transport.tools(include_hidden).await
    }

    /// This worker's state: its sessions by resource type, how many tools exist.
    pub async fn get_status(&self) -> Result<Envelope> {
        self.transport.status().await
    }

    // ---- warm-up and server ---------------------------------------------------------------

    /// Warms the named backends (all when empty).
    pub async fn warmup(&self, resources: &[&str]) -> Result<Envelope> {
        self.transport.warmup(resources).await
    }

    /// Each backend's warm-up state.
    pub async fn get_warmup_status(&self) -> Result<Envelope> {
        self.transport.warmup_status().await
    }

    /// Stops the engine: over HTTP the server then exits; in-process the engine refuses further
    /// calls (5002). Answers `sessions_cleaned`.
    pub async fn shutdown_server(&self, force: bool, cleanup_sessions: bool) -> Result<Envelope> {
        self.transport.shutdown(force, cleanup_sessions).await
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
                    // A server this sandbox started destroys every session itself as it stops.
                    if self.server.lock().is_none() {
                        let transport = self.transport.clone();
                        handle.spawn(async move { transport.release_worker().await });
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
