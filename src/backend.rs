//! The [`Backend`] trait: what a tool provider implements to plug into the [`Engine`](crate::Engine).
//!
//! A backend owns its domain (a shell, a desktop, an index) and turns JSON parameters into domain
//! calls. It knows nothing of workers, session keys, TTLs, queues, timeouts of the transport or
//! HTTP: the engine resolves names, checks parameters against the [`ToolSpec`]s, serialises calls
//! on a session, and wraps results in the envelope. Third-party crates implement this trait too.

use std::any::Any;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value};

use crate::error::Result;
use crate::tool::ToolSpec;

/// What a backend keeps per session (a shell, a desktop). The engine stores it and hands it back,
/// one call at a time, to the backend that made it.
pub type SessionState = Box<dyn Any + Send>;

/// Whether a backend's tools run in a per-worker session or on one shared resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// One session per worker (bash, vm); a call with no session gets a temporary one.
    Session,
    /// One resource shared by all workers (rag); no session is involved.
    Shared,
}

/// What the engine tells a backend about the call it is making.
#[derive(Debug, Clone)]
pub struct CallContext<'a> {
    /// The calling worker.
    pub worker_id: &'a str,
    /// The session the call runs in, if any.
    pub session_id: Option<&'a str>,
    /// The caller's overall timeout for this call, if it gave one. A backend that can stop its
    /// work cleanly (a shell command) should stop by then and return its partial result; the
    /// engine cancels the call a short grace later if it has not.
    pub timeout: Option<Duration>,
    /// The desktop of the worker's `vm` session (or of any session whose backend
    /// [offers](Backend::offers) one), for a backend that shares it: bash gives its shell the
    /// desktop's `DISPLAY`.
    pub desktop: Option<Arc<SharedDesktop>>,
}

/// A desktop a session offers the other sessions of its worker: how a program reaches it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedDesktop {
    /// The X display, e.g. `:3`.
    pub display: String,
    /// Its unix socket, e.g. `/tmp/.X11-unix/X3` (bound into a jail).
    pub socket: PathBuf,
    /// The file holding its cookie, if it has one.
    pub xauthority: Option<PathBuf>,
    /// What a program on it has in its environment (`DISPLAY`, `XAUTHORITY`, the D-Bus session
    /// and accessibility buses, the toolkits' accessibility switches).
    pub env: Vec<(String, String)>,
}

/// A tool provider. See the module documentation.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// The resource type, which prefixes every tool name (`bash` in `bash:run`).
    fn name(&self) -> &str;

    /// The tools this backend offers, with their parameters.
    fn tools(&self) -> Vec<ToolSpec>;

    /// Whether its tools are known only once it is warmed up (an MCP backend lists its servers'
    /// then): the engine asks [`Backend::tools`] again after each successful warm-up, and a call
    /// of an unknown tool of its resource warms it up first.
    fn discovers_tools(&self) -> bool {
        false
    }

    /// Per-session or shared.
    fn scope(&self) -> Scope {
        Scope::Session
    }

    /// Prepares costly state (an index, a display pool). Called once before the first tool
    /// call, on `/warmup`, or at start-up; called again after a failure.
    async fn warmup(&self) -> Result<()> {
        Ok(())
    }

    /// Starts a session. `config` holds the session's overrides of the backend's defaults.
    async fn create_session(&self, config: &Map<String, Value>) -> Result<SessionState> {
        let _ = config;
        Err(crate::Error::Internal(format!("backend '{}' has no sessions", self.name())))
    }

    /// Starts the session `id`: [`Backend::create_session`] unless the backend needs the id
    /// (MCP names things after it). A pooled session is started with no id, by `create_session`.
    async fn create_named_session(&self, id: &str, config: &Map<String, Value>) -> Result<SessionState> {
        let _ = id;
        self.create_session(config).await
    }

    /// Whether a session started with the default config (`create_session` of an empty map, as
    /// a warm pool makes them ahead) can become a session asking for `config`, through
    /// [`Backend::adopt`]. The default: only when `config` asks for nothing. A backend that can
    /// apply some keys to a running session (bash: its directory and environment) says yes to
    /// those; a config it would refuse is a no here, so that the error comes from a fresh
    /// `create_session`.
    fn pool_serves(&self, config: &Map<String, Value>) -> bool {
        config.is_empty()
    }

    /// Makes a session started with the default config into one with `config`, for which
    /// [`Backend::pool_serves`] said yes. An error: the engine destroys `state` and starts a
    /// fresh session instead.
    async fn adopt(&self, state: &mut SessionState, config: &Map<String, Value>) -> Result<()> {
        let _ = (state, config);
        Ok(())
    }

    /// The desktop this session offers its worker's other sessions ([`CallContext::desktop`]),
    /// asked once when the session has started. The default: none.
    fn offers(&self, state: &SessionState) -> Option<SharedDesktop> {
        let _ = state;
        None
    }

    /// Releases everything the session holds: processes, displays, files.
    async fn destroy_session(&self, state: SessionState) {
        drop(state);
    }

    /// Runs one tool. `session` is the session's state for [`Scope::Session`] backends and `None`
    /// for shared ones and for a [`ToolSpec::sessionless`] tool called with no session. `params`
    /// has been checked against the tool's [`ToolSpec`].
    async fn call(
        &self,
        tool: &str,
        params: Value,
        session: Option<&mut SessionState>,
        ctx: &CallContext<'_>,
    ) -> Result<Value>;

    /// Stops everything the backend started. Sessions are destroyed before this is called.
    async fn shutdown(&self) {}
}

/// Downcasts a session's state to the backend's own type; a mismatch is an internal error.
pub fn state_mut<T: 'static>(session: Option<&mut SessionState>) -> Result<&mut T> {
    session
        .and_then(|s| s.downcast_mut::<T>())
        .ok_or_else(|| crate::Error::Internal("session state of the wrong type".into()))
}

/// Takes a field of the parameters (already validated) as a typed value.
pub fn param<T: serde::de::DeserializeOwned>(params: &Value, field: &str) -> Result<Option<T>> {
    match params.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => T::deserialize(v).map(Some).map_err(|e| crate::Error::param(field, e.to_string())),
    }
}

/// Merges a session's config over a backend's defaults, key by key.
pub fn merge_config(defaults: &Map<String, Value>, overrides: &Map<String, Value>) -> Map<String, Value> {
    let mut merged = defaults.clone();
    for (k, v) in overrides {
        merged.insert(k.clone(), v.clone());
    }
    merged
}
