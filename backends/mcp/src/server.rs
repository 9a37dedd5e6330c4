//! A [`Server`]: one MCP server started from its [`ServerSpec`], with one client connection.
//!
//! Requests on one server may run at once (the protocol matches answers by id); the caller
//! decides what order it wants. A request past its timeout is dropped, which makes the SDK send
//! `notifications/cancelled` for it. An answer that is not JSON (a server printing garbage on
//! stdout) is skipped by the SDK's line reader and does not break the connection.

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use rmcp::model::{CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation};
use rmcp::service::{RoleClient, RunningService, ServiceError};
use rmcp::transport::async_rw::AsyncRwTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::ServiceExt;
use serde_json::{Map, Value};

use crate::process::Process;
use crate::{Error, Result};

/// How to reach a server.
#[derive(Debug, Clone)]
pub enum ServerSpec {
    /// A program spoken to over its stdin and stdout.
    Stdio(Launch),
    /// A server at a URL, spoken to over streamable HTTP.
    Http(Remote),
}

/// A stdio server's program.
#[derive(Debug, Clone, Default)]
pub struct Launch {
    /// The program (searched in `PATH` when it has no `/`).
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Its variables, over the host's `PATH`, `HOME`, user, locale and `TERM`.
    pub env: Vec<(String, String)>,
    /// Where it starts (this process's directory if none).
    pub cwd: Option<PathBuf>,
    /// What it runs under, program first (a jail: the server's program and arguments follow).
    /// With one, `env` is the wrapper's to set inside (this crate sets only `wrapper_env` and
    /// the mark on the wrapper itself).
    pub wrapper: Vec<OsString>,
    /// The wrapper's own environment.
    pub wrapper_env: Vec<(String, String)>,
}

/// A server at a URL.
#[derive(Debug, Clone, Default)]
pub struct Remote {
    /// Its endpoint (`http://host:port/mcp`).
    pub url: String,
    /// Headers sent with every request (`Authorization`, …).
    pub headers: Vec<(String, String)>,
}

/// A tool as its server describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolInfo {
    /// Its name on the server.
    pub name: String,
    /// Its description (empty if the server gives none).
    pub description: String,
    /// The JSON Schema of its arguments, as the server gives it.
    pub input_schema: Map<String, Value>,
}

/// A started server and its connection. Dropping it kills its process group; [`Server::stop`]
/// also sweeps the processes that left the group.
pub struct Server {
    name: String,
    service: RunningService<RoleClient, ClientConfig>,
    process: Option<Process>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("name", &self.name).field("pid", &self.pid()).finish()
    }
}

/// What this client says it is in the handshake.
fn client_config() -> ClientConfig {
    ClientConfig::new(
        ClientCapabilities::default(),
        Implementation::new("agentflow-sandbox", env!("CARGO_PKG_VERSION")),
    )
}

impl Server {
    /// Starts the server named `name` and completes the handshake within `timeout`.
    pub async fn start(name: &str, spec: &ServerSpec, timeout: Duration) -> Result<Server> {
        let fail = |reason: String, stderr: String| Error::Start { server: name.to_owned(), reason, stderr };
        match spec {
            ServerSpec::Stdio(launch) => {
                let (mut process, stdout, stdin) = Process::spawn(launch)
                    .map_err(|e| fail(format!("cannot run {}: {e}", launch.program.display()), String::new()))?;
                let transport = AsyncRwTransport::new(stdout, stdin);
                let service = match tokio::time::timeout(timeout, client_config().serve(transport)).await {
                    Ok(Ok(service)) => service,
                    outcome => {
                        let reason = match outcome {
                            Ok(Err(e)) => format!("handshake failed: {e}"),
                            _ => format!("no answer to the handshake within {:.1} s", timeout.as_secs_f64()),
                        };
                        // Its last words come after it died: give it a moment to be read.
                        let ended = process.ended().map(|s| format!(" (it exited: {s})")).unwrap_or_default();
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        let stderr = process.stderr.last_lines();
                        stop_process(process).await;
                        return Err(fail(format!("{reason}{ended}"), stderr));
                    }
                };
                Ok(Server { name: name.to_owned(), service, process: Some(process) })
            }
            ServerSpec::Http(remote) => {
                let mut headers = HashMap::new();
                for (k, v) in &remote.headers {
                    let name = http::HeaderName::try_from(k.as_str())
                        .map_err(|e| fail(format!("header '{k}': {e}"), String::new()))?;
                    let value = http::HeaderValue::try_from(v.as_str())
                        .map_err(|e| fail(format!("header '{k}': {e}"), String::new()))?;
                    headers.insert(name, value);
                }
                let config = StreamableHttpClientTransportConfig::with_uri(remote.url.clone()).custom_headers(headers);
                let transport = StreamableHttpClientTransport::from_config(config);
                let service = match tokio::time::timeout(timeout, client_config().serve(transport)).await {
                    Ok(Ok(service)) => service,
                    Ok(Err(e)) => {
                        return Err(fail(format!("handshake with {} failed: {e}", remote.url), String::new()))
                    }
                    Err(_) => {
                        return Err(fail(
                            format!("no answer from {} within {:.1} s", remote.url, timeout.as_secs_f64()),
                            String::new(),
                        ))
                    }
                };
                Ok(Server { name: name.to_owned(), service, process: None })
            }
        }
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its process's pid (its wrapper's when it has one); none for a server at a URL.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Process::pid)
    }

    /// The last lines it wrote to stderr (none for a server at a URL).
    pub fn stderr(&self) -> String {
        self.process.as_ref().map(|p| p.stderr.last_lines()).unwrap_or_default()
    }

    /// Whether it is still there: its process running and its connection open.
    pub fn is_alive(&mut self) -> bool {
        let ended = self.process.as_mut().is_some_and(|p| p.ended().is_some());
        !ended && !self.service.is_closed() && !self.service.peer().is_transport_closed()
    }

    /// Every tool it offers (`tools/list`, all pages), within `timeout`.
    pub async fn tools(&mut self, timeout: Duration) -> Result<Vec<ToolInfo>> {
        let listed = tokio::time::timeout(timeout, self.service.peer().list_all_tools()).await;
        let tools = self.answer(listed, "tools/list", timeout)?;
        Ok(tools
            .into_iter()
            .map(|t| ToolInfo {
                name: t.name.into_owned(),
                description: t.description.map(|d| d.into_owned()).unwrap_or_default(),
                input_schema: (*t.input_schema).clone(),
            })
            .collect())
    }

    /// Calls `tool` with `arguments` (`tools/call`), within `timeout`: the server's result as
    /// the protocol gives it (`content`, `isError`, `structuredContent`), whether or not the
    /// tool reports an error. Past the timeout the request is cancelled.
    pub async fn call(&mut self, tool: &str, arguments: Map<String, Value>, timeout: Duration) -> Result<Value> {
        let params = CallToolRequestParams::new(tool.to_owned()).with_arguments(arguments);
        let called = tokio::time::timeout(timeout, self.service.call_tool(params)).await;
        let result = self.answer(called, &format!("tools/call {tool}"), timeout)?;
        serde_json::to_value(result).map_err(|e| Error::Gone {
            server: self.name.clone(),
            reason: format!("its result cannot be written out: {e}"),
            stderr: String::new(),
        })
    }

    /// A request's outcome as this crate's result.
    fn answer<T>(
        &mut self,
        outcome: std::result::Result<std::result::Result<T, ServiceError>, tokio::time::error::Elapsed>,
        what: &str,
        timeout: Duration,
    ) -> Result<T> {
        match outcome {
            Ok(Ok(value)) => Ok(value),
            Err(_) => Err(Error::Timeout { server: self.name.clone(), what: what.to_owned(), timeout }),
            Ok(Err(ServiceError::McpError(e))) => Err(Error::Refused {
                server: self.name.clone(),
                what: what.to_owned(),
                code: e.code.0,
                message: e.message.into_owned(),
            }),
            Ok(Err(e)) => {
                let ended = self.process.as_mut().and_then(Process::ended);
                let reason = match ended {
                    Some(status) => format!("its process ended ({status}) during {what}"),
                    None => format!("{what} failed: {e}"),
                };
                let stderr = self.process.as_ref().map(|p| p.stderr.last_lines()).unwrap_or_default();
                Err(Error::Gone { server: self.name.clone(), reason, stderr })
            }
        }
    }

    /// Closes the connection and kills the server's process tree.
    pub async fn stop(mut self) {
        if let Some(process) = self.process.take() {
            stop_process(process).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), self.service.close()).await;
    }
}

/// Kills a process's tree off the async threads (it reads `/proc`).
async fn stop_process(mut process: Process) {
    let _ = tokio::task::spawn_blocking(move || {
        process.kill_tree();
        process
    })
    .await;
}
