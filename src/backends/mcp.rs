//! The `mcp` adapter: the tools of MCP servers as session tools `mcp:<server>.<tool>`, over
//! [`agentflow_mcp::Server`] (docs/backends.md, mcp).
//!
//! Tools are discovered, not declared: at warm-up each enabled server is started once (in a
//! scratch workspace), asked for its tools and stopped; each tool is published with the server's
//! own description and input schema, against which the engine checks every call. A session
//! starts its enabled servers at once (in parallel), in a work directory of its own that is
//! removed with it, and keeps one client per server.
//!
//! Config (`resources.mcp.config`), in the shape MCP clients use:
//!
//! | key | type | default | meaning |
//! |---|---|---|---|
//! | `servers` | object | `{}` | `{"<name>": {"command", "args", "env", "cwd"}}` or `{"<name>": {"url", "headers"}}` |
//! | `enabled` | list of names | every server | which servers a session starts; a session may narrow it |
//! | `start_timeout` | seconds | 60 | a server's start and handshake |
//! | `call_timeout` | seconds | 60 | a call's timeout when the caller gives none; a session may set it |
//! | `workspace_root` | path | `$TMPDIR/agentflow-mcp` | where sessions' work directories are made |
//! | `isolation` … | as bash's | `"none"` | `"bwrap"`: each session's servers run in one jail (bash's keys) |
//!
//! `${agent_workspace}` (the session's work directory) and `${session_id}` are filled in a
//! server's `command`, `args`, `env`, `cwd`, `url` and `headers`. A session may set only
//! `enabled` (a subset of the operator's) and `call_timeout`: the servers, their commands and
//! the jail are the operator's (1006 otherwise).
//!
//! Results: `data` is the MCP result object (`content`, `isError`, `structuredContent`). A
//! result with `isError: true` is a 2001 whose `data` keeps that object; a server that does not
//! start, or has died, is a 2001 naming it with the last lines of its stderr (a dead server is
//! started again on the next call); a call past its timeout is a 2002 and is cancelled at the
//! server; arguments the server refuses (JSON-RPC -32602) are a 1002, a tool it no longer has a
//! 1001.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::RwLock;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use agentflow_bash::{Jail, JailConfig, ShellConfig};
use agentflow_mcp::{Launch, Remote, Server, ServerSpec};

use crate::backend::{state_mut, Backend, CallContext, SessionState};
use crate::error::{Error, Result};
use crate::tool::{parse_config, ToolSpec};

use super::bash::{jail_config, JAIL_KEYS};

/// A server's start and handshake, when the config does not say.
const START_TIMEOUT: f64 = 60.0;
/// A call's timeout, when neither the caller nor the config says.
const CALL_TIMEOUT: f64 = 60.0;
/// How long a `tools/list` at warm-up may take.
const LIST_TIMEOUT: Duration = Duration::from_secs(30);

/// The `mcp` backend. See the module documentation.
pub struct McpBackend {
    servers: BTreeMap<String, ServerConfig>,
    enabled: Vec<String>,
    start_timeout: Duration,
    call_timeout: Duration,
    workspace_root: PathBuf,
    jail: Option<JailConfig>,
    /// The tools found at the last warm-up.
    discovered: RwLock<Vec<ToolSpec>>,
}

impl std::fmt::Debug for McpBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("McpBackend").field("servers", &self.servers.keys()).finish()
    }
}

/// The backend's config keys (module documentation), the jail's aside.
#[derive(Debug, Deserialize, JsonSchema)]
struct Keys {
    /// the servers, by name
    servers: Option<Map<String, Value>>,
    /// the servers a session starts
    enabled: Option<Vec<String>>,
    /// a server's start and handshake, in seconds
    #[schemars(range(min = 0.001, max = 86_400))]
    start_timeout: Option<f64>,
    /// a call's timeout when the caller gives none, in seconds
    #[schemars(range(min = 0.001, max = 86_400))]
    call_timeout: Option<f64>,
    /// where sessions' work directories are made (absolute)
    workspace_root: Option<PathBuf>,
}

/// What a session may set.
#[derive(Debug, Deserialize, JsonSchema)]
struct SessionKeys {
    /// the servers this session starts (of the operator's enabled ones)
    enabled: Option<Vec<String>>,
    /// a call's timeout when the caller gives none, in seconds
    #[schemars(range(min = 0.001, max = 86_400))]
    call_timeout: Option<f64>,
}

/// One server of `servers`, as MCP clients write it.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum ServerConfig {
    Stdio(StdioConfig),
    Http(HttpConfig),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct StdioConfig {
    command: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    cwd: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpConfig {
    url: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

/// Keys only the operator sets (the jail's too).
const OPERATOR_ONLY: &[&str] = &["servers", "start_timeout", "workspace_root"];

/// The hidden tool: what the session runs.
fn info_tool() -> ToolSpec {
    ToolSpec::new("info", "The session's work directory and its servers (pid, alive).", Vec::new()).hidden()
}

impl McpBackend {
    /// A backend with these defaults (module documentation); a wrong key or value is a
    /// configuration error.
    pub fn new(defaults: Map<String, Value>) -> Result<Self> {
        let config_error = |e: Error| Error::Config(format!("mcp backend: {e}"));
        let (jail_keys, keys): (Map<String, Value>, Map<String, Value>) =
            defaults.into_iter().partition(|(k, _)| JAIL_KEYS.contains(&k.as_str()));
        let keys: Keys = parse_config(&keys).map_err(config_error)?;
        let jail = jail_config(&jail_keys).map_err(config_error)?;
        let mut servers = BTreeMap::new();
        for (name, value) in keys.servers.unwrap_or_default() {
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return Err(Error::Config(format!(
                    "mcp backend: server name '{name}': letters, digits, '-' and '_' only (the tool names are <server>.<tool>)"
                )));
            }
            let server: ServerConfig = serde_json::from_value(value).map_err(|e| {
                Error::Config(format!(
                    "mcp backend: servers.{name}: expected {{\"command\", \"args\", \"env\", \"cwd\"}} or {{\"url\", \"headers\"}} ({e})"
                ))
            })?;
            if let ServerConfig::Http(http) = &server {
                if !http.url.starts_with("http://") {
                    return Err(Error::Config(format!(
                        "mcp backend: servers.{name}.url: only http:// URLs are supported (this build has no TLS)"
                    )));
                }
            }
            servers.insert(name, server);
        }
        let enabled = match keys.enabled {
            Some(names) => {
                if let Some(unknown) = names.iter().find(|n| !servers.contains_key(*n)) {
                    return Err(Error::Config(format!(
                        "mcp backend: enabled names '{unknown}', which is not a server"
                    )));
                }
                names
            }
            None => servers.keys().cloned().collect(),
        };
        let workspace_root = keys.workspace_root.unwrap_or_else(|| std::env::temp_dir().join("agentflow-mcp"));
        if !workspace_root.is_absolute() {
            return Err(Error::Config("mcp backend: workspace_root must be an absolute path".into()));
        }
        Ok(McpBackend {
            servers,
            enabled,
            start_timeout: Duration::from_secs_f64(keys.start_timeout.unwrap_or(START_TIMEOUT)),
            call_timeout: Duration::from_secs_f64(keys.call_timeout.unwrap_or(CALL_TIMEOUT)),
            workspace_root,
            jail,
            discovered: RwLock::new(Vec::new()),
        })
    }

    /// The spec of server `name` for a session: placeholders filled, in its jail if it has one.
    fn spec(&self, name: &str, fill: &Fill, jail: Option<&Jail>) -> ServerSpec {
        match &self.servers[name] {
            ServerConfig::Http(http) => ServerSpec::Http(Remote {
                url: fill.apply(&http.url),
                headers: http.headers.iter().map(|(k, v)| (k.clone(), fill.apply(v))).collect(),
            }),
            ServerConfig::Stdio(stdio) => {
                let env: Vec<(String, String)> = stdio.env.iter().map(|(k, v)| (k.clone(), fill.apply(v))).collect();
                let cwd = stdio.cwd.as_deref().map(|c| PathBuf::from(fill.apply(c)));
                let mut launch = Launch {
                    program: PathBuf::from(fill.apply(&stdio.command)),
                    args: stdio.args.iter().map(|a| OsString::from(fill.apply(a))).collect(),
                    env,
                    cwd,
                    ..Launch::default()
                };
                if let Some(jail) = jail {
                    let wrapped = jail.wrap(&ShellConfig {
                        program: launch.program.clone(),
                        env: launch.env.clone(),
                        cwd: launch.cwd.take(),
                        ..ShellConfig::default()
                    });
                    launch.wrapper = wrapped.wrapper;
                    launch.wrapper_env = wrapped.wrapper_env;
                }
                ServerSpec::Stdio(launch)
            }
        }
    }

    /// Starts servers at once, each with its spec: those that started, and why the others did not.
    async fn start_each(&self, specs: Vec<(String, ServerSpec)>) -> (BTreeMap<String, Server>, Vec<Error>) {
        let timeout = self.start_timeout;
        let mut set = tokio::task::JoinSet::new();
        for (name, spec) in specs {
            set.spawn(async move { (name.clone(), Server::start(&name, &spec, timeout).await) });
        }
        let mut started = BTreeMap::new();
        let mut failures = Vec::new();
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok((name, Ok(server))) => {
                    started.insert(name, server);
                }
                Ok((_, Err(e))) => failures.push(server_error(e)),
                Err(e) => failures.push(Error::Internal(format!("an MCP server's start panicked: {e}"))),
            }
        }
        (started, failures)
    }

    /// The work directory of a new session, and its jail when the backend has one.
    async fn workspace(&self, id: &str) -> Result<(Workspace, Option<Jail>)> {
        if let Some(config) = self.jail.clone() {
            let config = JailConfig {
                bwrap: agentflow_bash::find_bwrap().ok_or_else(|| Error::NotWarmedUp {
                    backend: "mcp".into(),
                    reason: agentflow_bash::INSTALL_HINT.into(),
                })?,
                ..config
            };
            let jail = agentflow_bash::blocking(move || Jail::create(config))
                .await
                .map_err(|e| Error::backend(e.to_string()))?
                .map_err(|e| Error::backend(e.to_string()))?;
            return Ok((Workspace { path: jail.work_dir().to_owned(), owned: false }, Some(jail)));
        }
        let root = self.workspace_root.clone();
        let name = format!("{}-{}", sanitise(id), unique());
        let path = agentflow_bash::blocking(move || -> std::io::Result<PathBuf> {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new().recursive(true).mode(0o711).create(&root)?;
            let path = root.join(name);
            std::fs::DirBuilder::new().mode(0o700).create(&path)?;
            Ok(path)
        })
        .await
        .map_err(|e| Error::backend(e.to_string()))?
        .map_err(|e| Error::backend(format!("cannot make the session's work directory: {e}")))?;
        Ok((Workspace { path, owned: true }, None))
    }

    /// The tool specs of the servers' tools.
    async fn discover(&self) -> Result<Vec<ToolSpec>> {
        let (workspace, jail) = self.workspace("warmup").await?;
        let fill = Fill { workspace: workspace.path.display().to_string(), session: "warmup".into() };
        let specs = self.enabled.iter().map(|n| (n.clone(), self.spec(n, &fill, jail.as_ref()))).collect();
        let (mut servers, mut failures) = self.start_each(specs).await;
        let mut tools = vec![info_tool()];
        let mut listed = 0;
        for (name, server) in &mut servers {
            match server.tools(LIST_TIMEOUT).await {
                Ok(found) => {
                    listed += 1;
                    tools.extend(found.into_iter().map(|t| {
                        ToolSpec::with_schema(
                            format!("{name}.{}", t.name),
                            t.description,
                            Value::Object(t.input_schema),
                        )
                    }));
                }
                Err(e) => failures.push(server_error(e)),
            }
        }
        stop_all(servers).await;
        for e in &failures {
            tracing::warn!("mcp warm-up: {e}: its tools are not published; sessions that enable it fail to start");
        }
        // Warm when some server offers tools (or none is configured): one broken server of many
        // leaves the others usable, and sessions that enable it say why it fails.
        let outcome = match failures.into_iter().next() {
            Some(e) if listed == 0 => Err(e),
            _ => Ok(()),
        };
        release(workspace, jail).await;
        outcome.map(|()| tools)
    }
}

/// What fills the placeholders of a server's config.
struct Fill {
    workspace: String,
    session: String,
}

impl Fill {
    fn apply(&self, text: &str) -> String {
        text.replace("${agent_workspace}", &self.workspace).replace("${session_id}", &self.session)
    }
}

/// A session id as a file name.
fn sanitise(id: &str) -> String {
    id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' }).take(64).collect()
}

/// A number no other work directory of this process has.
fn unique() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    format!("{}-{}", std::process::id(), NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
}

/// A session's work directory; removed with the session when this backend made it (a jail
/// removes its own).
struct Workspace {
    path: PathBuf,
    owned: bool,
}

/// What an mcp session holds.
struct McpSession {
    workspace: Workspace,
    jail: Option<Jail>,
    /// Each enabled server: its spec, and its running instance (none once it died).
    servers: BTreeMap<String, (ServerSpec, Option<Server>)>,
    call_timeout: Duration,
}

/// Stops servers at once.
async fn stop_all(servers: BTreeMap<String, Server>) {
    let mut set = tokio::task::JoinSet::new();
    for server in servers.into_values() {
        set.spawn(server.stop());
    }
    while set.join_next().await.is_some() {}
}

/// Drops a jail and removes a work directory, off the async threads.
async fn release(workspace: Workspace, jail: Option<Jail>) {
    let _ = agentflow_bash::blocking(move || {
        drop(jail);
        if workspace.owned {
            let _ = std::fs::remove_dir_all(&workspace.path);
        }
    })
    .await;
}

/// The crate's errors as the engine's.
fn server_error(e: agentflow_mcp::Error) -> Error {
    match e {
        agentflow_mcp::Error::Timeout { .. } => Error::Timeout { message: e.to_string(), data: json!({}) },
        agentflow_mcp::Error::Refused { code: -32602, ref message, .. } => {
            Error::param("params", format!("the server refused the arguments: {message}"))
        }
        agentflow_mcp::Error::Refused { code: -32601, .. } => Error::ToolNotFound(e.to_string()),
        agentflow_mcp::Error::Start { ref server, ref stderr, .. }
        | agentflow_mcp::Error::Gone { ref server, ref stderr, .. } => {
            let data = json!({"server": server, "stderr": stderr});
            Error::Backend { message: e.to_string(), data }
        }
        other => Error::backend(other.to_string()),
    }
}

#[async_trait]
impl Backend for McpBackend {
    fn name(&self) -> &str {
        "mcp"
    }

    fn tools(&self) -> Vec<ToolSpec> {
        let discovered = self.discovered.read();
        if discovered.is_empty() {
            vec![info_tool()]
        } else {
            discovered.clone()
        }
    }

    fn discovers_tools(&self) -> bool {
        true
    }

    async fn warmup(&self) -> Result<()> {
        let tools = self.discover().await?;
        *self.discovered.write() = tools;
        Ok(())
    }

    async fn create_named_session(&self, id: &str, config: &Map<String, Value>) -> Result<SessionState> {
        if let Some(key) =
            config.keys().find(|k| OPERATOR_ONLY.contains(&k.as_str()) || JAIL_KEYS.contains(&k.as_str()))
        {
            return Err(Error::policy(key, "set by the operator only, in resources.mcp.config"));
        }
        let keys: SessionKeys = parse_config(config)?;
        let enabled = match keys.enabled {
            None => self.enabled.clone(),
            Some(names) => {
                if let Some((i, name)) = names.iter().enumerate().find(|(_, n)| !self.enabled.contains(n)) {
                    return Err(Error::policy(
                        format!("enabled[{i}]"),
                        format!("'{name}' is not a server the operator enabled ({})", self.enabled.join(", ")),
                    ));
                }
                names
            }
        };
        let call_timeout = keys.call_timeout.map_or(self.call_timeout, Duration::from_secs_f64);
        let (workspace, jail) = self.workspace(id).await?;
        let fill = Fill { workspace: workspace.path.display().to_string(), session: id.to_owned() };
        let specs: Vec<(String, ServerSpec)> =
            enabled.iter().map(|n| (n.clone(), self.spec(n, &fill, jail.as_ref()))).collect();
        let (mut started, failures) = self.start_each(specs.clone()).await;
        if let Some(e) = failures.into_iter().next() {
            stop_all(started).await;
            release(workspace, jail).await;
            return Err(e);
        }
        let servers = specs.into_iter().map(|(name, spec)| {
            let server = started.remove(&name);
            (name, (spec, server))
        });
        Ok(Box::new(McpSession { workspace, jail, servers: servers.collect(), call_timeout }))
    }

    async fn create_session(&self, config: &Map<String, Value>) -> Result<SessionState> {
        self.create_named_session("pooled", config).await
    }

    /// Never: a session's servers are started with its own id and work directory.
    fn pool_serves(&self, _config: &Map<String, Value>) -> bool {
        false
    }

    async fn destroy_session(&self, state: SessionState) {
        let Ok(session) = state.downcast::<McpSession>() else { return };
        let McpSession { workspace, jail, servers, .. } = *session;
        stop_all(servers.into_iter().filter_map(|(name, (_, server))| Some((name, server?))).collect()).await;
        release(workspace, jail).await;
    }

    async fn call(
        &self,
        tool: &str,
        params: Value,
        session: Option<&mut SessionState>,
        ctx: &CallContext<'_>,
    ) -> Result<Value> {
        let session = state_mut::<McpSession>(session)?;
        if tool == "info" {
            let mut servers = Map::new();
            for (name, (_, server)) in &mut session.servers {
                let (pid, alive) = server.as_mut().map_or((None, false), |s| (s.pid(), s.is_alive()));
                servers.insert(name.clone(), json!({"pid": pid, "alive": alive}));
            }
            return Ok(json!({
                "workspace": session.workspace.path,
                "isolation": if session.jail.is_some() { "bwrap" } else { "none" },
                "servers": servers,
            }));
        }
        let (server_name, tool_name) =
            tool.split_once('.').ok_or_else(|| Error::ToolNotFound(format!("mcp:{tool}")))?;
        let Some((spec, running)) = session.servers.get_mut(server_name) else {
            return Err(Error::Session(format!(
                "server '{server_name}' is not enabled in this session (its config's `enabled` leaves it out)"
            )));
        };
        let timeout = ctx.timeout.unwrap_or(session.call_timeout);
        match running.as_mut().map(Server::is_alive) {
            Some(true) => {}
            Some(false) => {
                // It died since the last call: say so once (its state is lost); it is started
                // again on the next call.
                let dead = running.take().expect("it was there");
                let e = agentflow_mcp::Error::Gone {
                    server: server_name.to_owned(),
                    reason: format!(
                        "its process (pid {}) ended since the last call; it is started again on the next call",
                        dead.pid().map_or_else(|| "none".into(), |p| p.to_string())
                    ),
                    stderr: dead.stderr(),
                };
                dead.stop().await;
                return Err(server_error(e));
            }
            None => {
                *running = Some(Server::start(server_name, spec, self.start_timeout).await.map_err(server_error)?);
            }
        }
        let server = running.as_mut().expect("started above");
        let arguments = match params {
            Value::Object(map) => map,
            _ => Map::new(),
        };
        match server.call(tool_name, arguments, timeout).await {
            Ok(result) if result.get("isError").and_then(Value::as_bool) == Some(true) => {
                let text = result
                    .get("content")
                    .and_then(Value::as_array)
                    .and_then(|c| c.iter().find_map(|item| item.get("text").and_then(Value::as_str)))
                    .unwrap_or("no text");
                Err(Error::Backend { message: format!("mcp:{tool} reported an error: {text}"), data: result })
            }
            Ok(mut result) => {
                // Written out even when false (the SDK leaves it out), as clients read it.
                result["isError"] = json!(false);
                Ok(result)
            }
            Err(e @ agentflow_mcp::Error::Gone { .. }) => {
                if let Some(dead) = running.take() {
                    dead.stop().await;
                }
                Err(server_error(e))
            }
            Err(e) => Err(server_error(e)),
        }
    }

    async fn shutdown(&self) {}
}
