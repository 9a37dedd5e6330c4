//! The engine as an MCP server (feature `mcp-server`): every visible tool of the [`Engine`] is
//! an MCP tool, for any MCP client, over stdio ([`serve_stdio`]) or, with the `http` feature,
//! streamable HTTP at `/mcp` on the server's port ([`http_service`]). Built on `rmcp`'s server
//! side.
//!
//! - **Names.** MCP clients refuse `:` in tool names, so `bash:run` is listed as `bash_run`
//!   (the first `:` becomes `_`; `mcp:memory.read_graph` is `mcp_memory.read_graph`). The input
//!   schema and description are the ones `/tools` publishes.
//! - **Workers.** An MCP connection is one worker, with a fresh id of its own (`mcp-…`); over
//!   HTTP, a request may name the worker with the `X-Worker-ID` header instead (the protocol's
//!   stateless versions have no connection to hang state on). A tool of a per-worker backend
//!   runs in the worker's session of that backend, created on its first use; the worker's
//!   sessions are destroyed when the connection ends (stdin closed, the HTTP session deleted or
//!   expired) or by the session TTL. Two connections never share a shell.
//! - **Results.** The envelope's `data` as `structuredContent`, and as text: a shell's output
//!   (with its exit code when not 0), the editor's text, or else the data as JSON; a base64 PNG
//!   in `data.image` (a screenshot) also as an `image` content item; an error as `isError:
//!   true`, its text `error <code>: <message>` and its structured content the envelope's code,
//!   message and data.
//!
//! It knows the engine only through its public calls: `list_tools`, `open_session`,
//! `execute_request`, `destroy_worker`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation, ListToolsResult,
    PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::RequestContext;
use rmcp::{ErrorData as McpError, RoleServer, ServerHandler, ServiceExt};
use serde_json::{json, Value};

use crate::protocol::{CreateSessionRequest, ExecuteRequest};
use crate::{Engine, Envelope};

/// The header that names the worker of an HTTP request (as for `/execute`).
pub const WORKER_HEADER: &str = "x-worker-id";

static NEXT: AtomicU64 = AtomicU64::new(1);

/// One MCP connection: a worker of the engine.
#[derive(Clone)]
pub struct McpServer {
    engine: Engine,
    worker: Arc<str>,
    /// The resource types whose session this worker has opened (per worker id).
    opened: Arc<Mutex<HashMap<String, HashSet<String>>>>,
    /// The workers this connection has used, destroyed when it ends.
    used: Arc<Mutex<HashSet<String>>>,
    /// MCP tool names to the engine's, as last listed.
    names: Arc<Mutex<HashMap<String, String>>>,
}

impl McpServer {
    /// A connection's server: a worker of `engine` with a fresh id.
    pub fn new(engine: Engine) -> McpServer {
        let worker = format!("mcp-{}-{}-{:08x}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed), random());
        McpServer { engine, worker: worker.into(), opened: Arc::default(), used: Arc::default(), names: Arc::default() }
    }

    /// The worker id of this connection.
    pub fn worker(&self) -> &str {
        &self.worker
    }

    /// Destroys the sessions of every worker this connection used.
    pub async fn end(&self) {
        let workers: Vec<String> = self.used.lock().drain().collect();
        for worker in workers {
            self.engine.destroy_worker(&worker).await;
        }
        self.opened.lock().clear();
    }

    /// The engine's visible tools, with MCP names; and the map back to the engine's names.
    fn tools(&self) -> (Vec<Tool>, HashMap<String, String>) {
        let listing = self.engine.list_tools(false);
        let mut tools = Vec::new();
        let mut names = HashMap::new();
        for t in listing.data["tools"].as_array().into_iter().flatten() {
            let Some(name) = t["name"].as_str() else { continue };
            let mcp_name = mcp_name(name);
            let schema = match &t["parameters"] {
                Value::Object(schema) => schema.clone(),
                _ => json!({"type": "object"}).as_object().cloned().unwrap_or_default(),
            };
            let description = t["description"].as_str().unwrap_or_default().to_owned();
            tools.push(Tool::new(mcp_name.clone(), description, Arc::new(schema)));
            names.insert(mcp_name, name.to_owned());
        }
        (tools, names)
    }

    /// Runs a call as `worker`, in its session of the tool's resource (opened on first use).
    async fn run(&self, worker: &str, tool: &str, params: Value) -> Envelope {
        self.used.lock().insert(worker.to_owned());
        let resource = tool.split(':').next().unwrap_or(tool).to_owned();
        let fresh = !self.opened.lock().get(worker).is_some_and(|o| o.contains(&resource));
        if fresh {
            let request: Result<CreateSessionRequest, _> =
                serde_json::from_value(json!({"worker_id": worker, "resource_type": resource, "config": {}}));
            if let Ok(request) = request {
                // A failure here (a limit, a backend not warmed up) is the call's to report:
                // the call then runs as the engine runs any call with no session.
                if self.engine.open_session(request).await.is_ok() {
                    self.opened.lock().entry(worker.to_owned()).or_default().insert(resource);
                }
            }
        }
        self.engine.execute_request(ExecuteRequest::new(worker, tool, params)).await
    }
}

/// `bash:run` as MCP clients accept it: `bash_run` (the first `:` as `_`).
pub fn mcp_name(engine_name: &str) -> String {
    engine_name.replacen(':', "_", 1)
}

fn random() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(NEXT.load(Ordering::Relaxed));
    h.finish() as u32
}

/// An envelope as MCP content.
fn result(envelope: Envelope) -> CallToolResult {
    if envelope.code != 0 {
        let text = format!("error {}: {}", envelope.code, envelope.message);
        let mut r = CallToolResult::error(vec![ContentBlock::text(text)]);
        r.structured_content = Some(json!({"code": envelope.code, "message": envelope.message, "data": envelope.data}));
        return r;
    }
    let mut data = envelope.data;
    let mut content = Vec::new();
    // A picture is an image item, and not repeated in the text.
    if let Some(Value::String(png)) = data.as_object_mut().and_then(|d| d.remove("image")) {
        content.push(ContentBlock::image(png, "image/png"));
    }
    let text = match (data["stdout"].as_str(), data["output"].as_str()) {
        // A shell's answer reads as the terminal did, with how the command ended when that is news.
        (Some(stdout), _) => match (&data["exit_code"], data["running"].as_bool()) {
            (_, Some(true)) => format!("{stdout}\n[still running]"),
            (Value::Number(code), _) if code.as_i64() != Some(0) => format!("{stdout}\n[exit code {code}]"),
            _ => stdout.to_owned(),
        },
        // The editor's answer is its text.
        (None, Some(output)) => output.to_owned(),
        _ => data.to_string(),
    };
    content.insert(0, ContentBlock::text(text));
    let mut r = CallToolResult::success(content);
    r.structured_content = Some(match data {
        Value::Object(map) => Value::Object(map),
        other => json!({"result": other}),
    });
    r
}

impl ServerHandler for McpServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("agentflow-sandbox", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Tools of an agentflow-sandbox engine: a persistent shell (bash_*), a desktop (vm_*), \
                 retrieval (rag_*). State persists across calls of this connection.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let (tools, names) = self.tools();
        *self.names.lock() = names;
        Ok(ListToolsResult::with_all_items(tools))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        // The names as last listed; listed again for one not known (a backend warmed up since).
        let mut tool = self.names.lock().get(request.name.as_ref()).cloned();
        if tool.is_none() {
            let (_, names) = self.tools();
            tool = names.get(request.name.as_ref()).cloned();
            *self.names.lock() = names;
        }
        let Some(tool) = tool else {
            let text = format!("error 1001: no tool named {}", request.name);
            return Ok(CallToolResult::error(vec![ContentBlock::text(text)]).into());
        };
        let worker = named_worker(&context).unwrap_or_else(|| self.worker.to_string());
        let params = Value::Object(request.arguments.unwrap_or_default());
        Ok(result(self.run(&worker, &tool, params).await).into())
    }
}

/// The worker an HTTP request names in its `X-Worker-ID` header.
#[cfg(feature = "http")]
fn named_worker(context: &RequestContext<RoleServer>) -> Option<String> {
    let parts = context.extensions.get::<axum::http::request::Parts>()?;
    parts.headers.get(WORKER_HEADER)?.to_str().ok().map(str::to_owned)
}

#[cfg(not(feature = "http"))]
fn named_worker(_context: &RequestContext<RoleServer>) -> Option<String> {
    None
}

/// Serves `engine` over MCP on this process's stdin and stdout until the client closes stdin;
/// then destroys the connection's sessions.
pub async fn serve_stdio(engine: Engine) -> Result<(), String> {
    let server = McpServer::new(engine);
    let running = server.clone().serve(rmcp::transport::stdio_pipes()).await.map_err(|e| e.to_string())?;
    let ended = running.waiting().await;
    server.end().await;
    ended.map(|_| ()).map_err(|e| e.to_string())
}

/// Ends a connection's sessions when the HTTP transport drops its handler (the MCP session was
/// deleted or expired).
#[cfg(feature = "http")]
struct EndOnDrop(McpServer);

#[cfg(feature = "http")]
impl Drop for EndOnDrop {
    fn drop(&mut self) {
        let server = self.0.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { server.end().await });
        }
    }
}

/// The streamable HTTP transport's service for `/mcp`: one [`McpServer`] (one worker) per MCP
/// session, its sessions destroyed when the MCP session ends. `hosts`: the `Host` values it
/// accepts (DNS-rebinding protection); empty for any.
#[cfg(feature = "http")]
pub fn http_service(
    engine: Engine,
    hosts: Vec<String>,
) -> rmcp::transport::streamable_http_server::StreamableHttpService<
    HttpServer,
    rmcp::transport::streamable_http_server::session::local::LocalSessionManager,
> {
    use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
    let mut config = StreamableHttpServerConfig::default().with_sse_keep_alive(None);
    config = if hosts.is_empty() { config.disable_allowed_hosts() } else { config.with_allowed_hosts(hosts) };
    StreamableHttpService::new(
        move || {
            let server = McpServer::new(engine.clone());
            Ok(HttpServer { guard: Arc::new(EndOnDrop(server.clone())), server })
        },
        Arc::default(),
        config,
    )
}

/// The newest protocol version served over HTTP.
#[cfg(feature = "http")]
const HTTP_PROTOCOL: rmcp::model::ProtocolVersion = rmcp::model::ProtocolVersion::V_2025_11_25;

/// An [`McpServer`] as the HTTP transport holds it: its sessions end when the last copy goes.
#[cfg(feature = "http")]
#[derive(Clone)]
pub struct HttpServer {
    server: McpServer,
    #[allow(dead_code)]
    guard: Arc<EndOnDrop>,
}

#[cfg(feature = "http")]
impl ServerHandler for HttpServer {
    fn get_info(&self) -> ServerConfig {
        self.server.get_info().with_protocol_version(HTTP_PROTOCOL)
    }

    /// Up to the last version with sessions: the newest (2026-07-28) is stateless over HTTP,
    /// which would leave a connection no worker of its own to keep a shell in.
    fn supported_protocol_versions(&self) -> std::borrow::Cow<'static, [rmcp::model::ProtocolVersion]> {
        std::borrow::Cow::Borrowed(rmcp::model::ProtocolVersion::known_up_to(&HTTP_PROTOCOL))
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        self.server.list_tools(request, context).await
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        self.server.call_tool(request, context).await
    }
}
