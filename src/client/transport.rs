//! How a [`Sandbox`](super::Sandbox) reaches the engine: the [`Transport`] trait, one call per
//! engine operation as one worker sees it, and its two implementations: [`InProcess`] (an
//! [`Engine`] handle in this process) and [`Remote`] (an [`HttpServiceClient`], with what it needs
//! to start its server).
//!
//! Both answer the same checked [`Envelope`]: `Ok` for code 0, else [`Error::Request`]. The
//! sandbox's own logic (the sessions it created, closing, the `*_sync` methods) is written once,
//! over the trait, in `sandbox.rs`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use parking_lot::Mutex;
use serde_json::{Map, Value};

use super::error::{check, Error, Result};
use super::sandbox::SandboxConfig;
use super::server::{locate, ServerProcess};
use super::service::{HttpClientConfig, HttpServiceClient};
use crate::protocol::{BatchAction, BatchRequest, CreateSessionRequest, Envelope, ExecuteRequest};
use crate::Engine;

/// The engine as one worker reaches it.
#[async_trait]
pub(super) trait Transport: Send + Sync {
    /// The same transport acting as `worker_id`.
    fn for_worker(&self, worker_id: &str) -> Result<Arc<dyn Transport>>;

    /// What `Debug` shows: `embedded`, or the server's URL.
    fn describe(&self) -> String;

    /// The in-process engine, if it is one.
    fn engine(&self) -> Option<&Engine> {
        None
    }

    /// The HTTP client, if it is one.
    fn client(&self) -> Option<&HttpServiceClient> {
        None
    }

    /// Gets ready for calls: checks that the server answers, starting it (then kept in
    /// `server`) when configured to. In-process, there is nothing to do.
    async fn start(&self, server: &Mutex<Option<ServerProcess>>) -> Result<()>;

    /// Stops what `start` started of the connection (the heartbeat). Idempotent.
    async fn close(&self) {}

    /// Creates the worker's session of `resource_type`, or answers the one it has.
    async fn create_session(
        &self,
        resource_type: &str,
        config: Option<Map<String, Value>>,
        custom_name: Option<&str>,
    ) -> Result<Envelope>;

    /// Destroys the worker's session of `resource_type`.
    async fn destroy_session(&self, resource_type: &str) -> Result<Envelope>;

    /// Destroys every session of the worker. In-process, the engine's answer is taken as it is,
    /// never as an error.
    async fn release_worker(&self) -> Result<Envelope>;

    /// The worker's sessions.
    async fn list_sessions(&self) -> Result<Envelope>;

    /// Extends the worker's session of `resource_type` (all when `None`).
    async fn refresh_sessions(&self, resource_type: Option<&str>) -> Result<Envelope>;

    /// Runs a tool; the request names its worker.
    async fn execute_request(&self, req: ExecuteRequest) -> Result<Envelope>;

    /// Runs several tools as the worker.
    async fn execute_batch(&self, actions: Vec<BatchAction>, parallel: bool, stop_on_error: bool) -> Result<Envelope>;

    /// The tools with their JSON Schemas.
    async fn tools(&self, include_hidden: bool) -> Result<Envelope>;

    /// The worker's state.
    async fn status(&self) -> Result<Envelope>;

    /// Warms the named backends (all when empty).
    async fn warmup(&self, resources: &[&str]) -> Result<Envelope>;

    /// Each backend's warm-up state.
    async fn warmup_status(&self) -> Result<Envelope>;

    /// Stops the engine.
    async fn shutdown(&self, force: bool, cleanup_sessions: bool) -> Result<Envelope>;
}

/// An engine in this process, called as `worker_id`.
pub(super) struct InProcess {
    pub engine: Engine,
    pub worker_id: String,
}

#[async_trait]
impl Transport for InProcess {
    fn for_worker(&self, worker_id: &str) -> Result<Arc<dyn Transport>> {
        Ok(Arc::new(InProcess { engine: self.engine.clone(), worker_id: worker_id.to_owned() }))
    }

    fn describe(&self) -> String {
        "embedded".to_owned()
    }

    fn engine(&self) -> Option<&Engine> {
        Some(&self.engine)
    }

    async fn start(&self, _server: &Mutex<Option<ServerProcess>>) -> Result<()> {
        Ok(())
    }

    async fn create_session(
        &self,
        resource_type: &str,
        config: Option<Map<String, Value>>,
        custom_name: Option<&str>,
    ) -> Result<Envelope> {
        let req = CreateSessionRequest {
            worker_id: self.worker_id.clone(),
            resource_type: resource_type.to_owned(),
            config,
            custom_name: custom_name.map(str::to_owned),
        };
        check(self.engine.create_session(req).await, None)
    }

    async fn destroy_session(&self, resource_type: &str) -> Result<Envelope> {
        check(self.engine.destroy_session(&self.worker_id, resource_type).await, None)
    }

    async fn release_worker(&self) -> Result<Envelope> {
        Ok(self.engine.destroy_worker(&self.worker_id).await)
    }

    async fn list_sessions(&self) -> Result<Envelope> {
        check(self.engine.list_sessions(&self.worker_id).await, None)
    }

    async fn refresh_sessions(&self, resource_type: Option<&str>) -> Result<Envelope> {
        check(self.engine.refresh_sessions(&self.worker_id, resource_type).await, None)
    }

    async fn execute_request(&self, req: ExecuteRequest) -> Result<Envelope> {
        check(self.engine.execute_request(req).await, None)
    }

    async fn execute_batch(&self, actions: Vec<BatchAction>, parallel: bool, stop_on_error: bool) -> Result<Envelope> {
        let req = BatchRequest { worker_id: self.worker_id.clone(), actions, parallel, stop_on_error, trace_id: None };
        check(self.engine.execute_batch(req).await, None)
    }

    async fn tools(&self, include_hidden: bool) -> Result<Envelope> {
        self.engine.discover_tools().await;
        check(self.engine.list_tools(include_hidden), None)
    }

    async fn status(&self) -> Result<Envelope> {
        check(self.engine.status(&self.worker_id), None)
    }

    async fn warmup(&self, resources: &[&str]) -> Result<Envelope> {
        let names: Vec<String> = resources.iter().map(|s| s.to_string()).collect();
        check(self.engine.warmup(&names).await, None)
    }

    async fn warmup_status(&self) -> Result<Envelope> {
        check(self.engine.warmup_status(), None)
    }

    async fn shutdown(&self, force: bool, cleanup_sessions: bool) -> Result<Envelope> {
        check(self.engine.shutdown(force, cleanup_sessions).await, None)
    }
}

/// An HTTP server, reached (or started) as `config` says; the client acts as its worker.
pub(super) struct Remote {
    pub client: HttpServiceClient,
    pub config: Box<SandboxConfig>,
}

impl Remote {
    /// A client of the server at `config.server_url`, acting as `worker_id`. Does no I/O.
    pub fn new(config: Box<SandboxConfig>, worker_id: &str) -> Result<Remote> {
        Ok(Remote { client: HttpServiceClient::new(config.client_config(worker_id))?, config })
    }

    /// Starts `agentflow-sandbox serve` on the URL's host and port and waits for its `/health`.
    async fn start_server(&self, server: &Mutex<Option<ServerProcess>>) -> Result<()> {
        let (client, config) = (&self.client, &self.config);
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
        *server.lock() = Some(process);
        client.connect().await.map(drop)
    }
}

#[async_trait]
impl Transport for Remote {
    fn for_worker(&self, worker_id: &str) -> Result<Arc<dyn Transport>> {
        let mut config = self.config.clone();
        config.worker_id = Some(worker_id.to_owned());
        Ok(Arc::new(Remote::new(config, worker_id)?))
    }

    fn describe(&self) -> String {
        self.client.base_url().to_owned()
    }

    fn client(&self) -> Option<&HttpServiceClient> {
        Some(&self.client)
    }

    async fn start(&self, server: &Mutex<Option<ServerProcess>>) -> Result<()> {
        match self.client.connect().await {
            Ok(_) => Ok(()),
            Err(Error::Connection { .. }) if self.config.auto_start_server => self.start_server(server).await,
            Err(e) => Err(e),
        }
    }

    async fn close(&self) {
        self.client.close().await
    }

    async fn create_session(
        &self,
        resource_type: &str,
        config: Option<Map<String, Value>>,
        custom_name: Option<&str>,
    ) -> Result<Envelope> {
        self.client.create_session(resource_type, config, custom_name).await
    }

    async fn destroy_session(&self, resource_type: &str) -> Result<Envelope> {
        self.client.destroy_session(resource_type).await
    }

    async fn release_worker(&self) -> Result<Envelope> {
        self.client.disconnect().await
    }

    async fn list_sessions(&self) -> Result<Envelope> {
        self.client.list_sessions().await
    }

    async fn refresh_sessions(&self, resource_type: Option<&str>) -> Result<Envelope> {
        self.client.refresh_session(resource_type).await
    }

    async fn execute_request(&self, req: ExecuteRequest) -> Result<Envelope> {
        self.client.execute_request(req).await
    }

    async fn execute_batch(&self, actions: Vec<BatchAction>, parallel: bool, stop_on_error: bool) -> Result<Envelope> {
        self.client.execute_batch(actions, parallel, stop_on_error).await
    }

    async fn tools(&self, include_hidden: bool) -> Result<Envelope> {
        self.client.tools(include_hidden).await
    }

    async fn status(&self) -> Result<Envelope> {
        self.client.get_status().await
    }

    async fn warmup(&self, resources: &[&str]) -> Result<Envelope> {
        self.client.warmup(resources).await
    }

    async fn warmup_status(&self) -> Result<Envelope> {
        self.client.warmup_status().await
    }

    async fn shutdown(&self, force: bool, cleanup_sessions: bool) -> Result<Envelope> {
        self.client.shutdown_server(force, cleanup_sessions).await
    }
}
