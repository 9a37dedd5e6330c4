//! The configuration file (docs/protocol.md §7): its shape, `${VAR}` expansion, and building an
//! [`Engine`] from it.
//!
//! The file has the original project's shape; unknown top-level and `server` keys are ignored.
//! Each backend reads its `config` through its own typed keys (an unknown key there is an error
//! naming it and listing the known ones); what the server does with `server` and `security` is
//! `src/http/`'s.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde_json::{Map, Value};

use crate::engine::Engine;
use crate::error::{Error, Result};

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Listening address and engine limits.
    pub server: ServerConfig,
    /// Backends by name, each with its defaults.
    pub resources: BTreeMap<String, ResourceConfig>,
    /// What to warm at start.
    pub warmup: WarmupConfig,
    /// Credentials.
    pub security: SecurityConfig,
}

/// `server`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ServerConfig {
    /// Bind address (default 127.0.0.1).
    pub host: String,
    /// Port (default 18890).
    pub port: u16,
    /// Session time-to-live in seconds (default 300).
    pub session_ttl: f64,
    /// Cap on live sessions; unset, [`default_max_sessions`] of this machine.
    pub max_sessions: Option<usize>,
    /// Cap on sessions per worker.
    pub max_sessions_per_worker: Option<usize>,
    /// Largest request body in bytes (default 32 MiB).
    pub max_body_bytes: usize,
    /// Most requests served at once (default 1024).
    pub max_concurrent_requests: usize,
    /// Longest a request may take, seconds (default 3600).
    pub request_timeout: f64,
    /// Longest wait for a request's headers, seconds (default 30): from a connection's start or
    /// the end of its previous request, so also how long an idle keep-alive connection is kept.
    /// The default is above the Rust client's 20 s pool idle time, so the server does not close
    /// a connection the client is about to reuse.
    pub header_timeout: f64,
    /// Longest wait for a request's body once its headers are in, seconds (default 30): at the
    /// 32 MiB body limit, about 1 MiB/s. Past it, 2002 with HTTP 408.
    pub body_timeout: f64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: "127.0.0.1".into(),
            port: 18890,
            session_ttl: 300.0,
            max_sessions: None,
            max_sessions_per_worker: None,
            max_body_bytes: 32 << 20,
            max_concurrent_requests: 1024,
            request_timeout: 3600.0,
            header_timeout: 30.0,
            body_timeout: 30.0,
        }
    }
}

/// One entry of `resources`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ResourceConfig {
    /// Whether the backend is registered.
    pub enabled: bool,
    /// The backend's defaults; a session's config overrides them key by key, within the
    /// policy: for the keys a backend guards (a jail's limits, a screen's size), these defaults
    /// are also the floor a session may tighten but never loosen.
    pub config: Map<String, Value>,
    /// What the operator opens to sessions beyond `config` (each backend documents its keys:
    /// ceilings, allowed values). Empty: sessions may only tighten the defaults.
    pub policy: Map<String, Value>,
    /// Its warm pool: sessions started ahead with `config` (see [`EngineBuilder::pool`]).
    ///
    /// [`EngineBuilder::pool`]: crate::EngineBuilder::pool
    pub pool: PoolConfig,
}

impl Default for ResourceConfig {
    fn default() -> Self {
        ResourceConfig { enabled: true, config: Map::new(), policy: Map::new(), pool: PoolConfig::default() }
    }
}

/// `resources.<name>.pool`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolConfig {
    /// Idle sessions kept started (default 0: none). They count under `server.max_sessions`.
    pub size: usize,
}

/// `warmup`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct WarmupConfig {
    /// Warm at start.
    pub enabled: bool,
    /// Which backends (empty: all).
    pub resources: Vec<String>,
}

/// `security`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SecurityConfig {
    /// API-key authentication.
    pub auth: AuthConfig,
}

/// `security.auth`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AuthConfig {
    /// Whether requests must carry the key.
    pub enabled: bool,
    /// The key (`${AGENTFLOW_API_KEY}` in the file, typically).
    pub api_key: Option<String>,
}

/// The corpus that ships with the project, served by the default config's `rag` backend.
pub const SHIPPED_CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/backends/rag/corpus/agentflow-docs.jsonl");

impl Default for Config {
    /// The built-in backends with their defaults; `rag` serves the shipped corpus, `mcp` has no server.
    fn default() -> Self {
        let mut resources = BTreeMap::new();
        for name in crate::backends::BUILTIN {
            resources.insert(name.to_owned(), ResourceConfig::default());
        }
        if let Some(rag) = resources.get_mut("rag") {
            rag.config.insert("corpus_path".into(), SHIPPED_CORPUS.into());
        }
        Config {
            server: ServerConfig::default(),
            resources,
            warmup: WarmupConfig::default(),
            security: SecurityConfig::default(),
        }
    }
}

impl Config {
    /// Reads a JSON config file, expanding `${VAR}` and `${VAR:-default}` from the environment.
    pub fn load(path: &Path) -> Result<Config> {
        let text =
            std::fs::read_to_string(path).map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        Config::parse(&text)
    }

    /// Parses a config from JSON text, expanding variables.
    pub fn parse(text: &str) -> Result<Config> {
        let mut value: Value = serde_json::from_str(text).map_err(|e| Error::Config(format!("invalid JSON: {e}")))?;
        expand_value(&mut value, &|name| std::env::var(name).ok())?;
        serde_json::from_value(value).map_err(|e| Error::Config(e.to_string()))
    }

    /// The API key, when authentication is on and a non-empty key is set.
    pub fn api_key(&self) -> Option<&str> {
        let auth = &self.security.auth;
        auth.api_key.as_deref().filter(|k| auth.enabled && !k.is_empty())
    }

    /// Builds the engine as the server runs it: the enabled backends with their defaults, the
    /// session limits, orphans reaped ([`EngineBuilder::reap_orphans`](crate::EngineBuilder::reap_orphans)),
    /// and a warm-up in the background when `warmup.enabled`. Must be called inside a tokio
    /// runtime.
    pub fn engine(&self) -> Result<Engine> {
        let ttl = self.server.session_ttl;
        if !(ttl.is_finite() && ttl > 0.0) {
            return Err(Error::Config(format!("server.session_ttl must be positive, got {ttl}")));
        }
        let mut builder = Engine::builder().session_ttl(Duration::from_secs_f64(ttl)).reap_orphans(true);
        builder = builder.max_sessions(self.server.max_sessions.unwrap_or_else(default_max_sessions));
        if let Some(n) = self.server.max_sessions_per_worker {
            builder = builder.max_sessions_per_worker(n);
        }
        for (name, resource) in &self.resources {
            if resource.enabled {
                builder = builder.backend(crate::backends::builtin(name, &resource.config, &resource.policy)?);
                builder = builder.pool(name, resource.pool.size);
            }
        }
        let engine = builder.build()?;
        if self.warmup.enabled {
            let engine = engine.clone();
            let names = self.warmup.resources.clone();
            tokio::spawn(async move {
                let report = engine.warmup(&names).await;
                if !report.is_ok() {
                    tracing::warn!("warm-up at start failed: {}", report.message);
                }
            });
        }
        Ok(engine)
    }
}

/// Live sessions allowed when `server.max_sessions` is not set: the smaller of one per 64 MiB of
/// the machine's memory and 256 per core, and at least 256.
///
/// A session is a process tree (a shell and what it runs) or a display (an Xvfb of a few tens of
/// MiB); 64 MiB each keeps a full table within the machine's memory with room for the commands'
/// own use. The per-core bound keeps the reaper, shutdown and process accounting in proportion
/// to the CPU that must do them. The floor of 256 is what a load test of the original project
/// creates. On a 24 GiB, 2-core machine (23.5 GiB of `MemTotal`): min(376, 512) = 376. When
/// memory cannot be read, 256.
pub fn default_max_sessions() -> usize {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let by_memory = mem_total_bytes().map(|b| (b >> 26) as usize).unwrap_or(0);
    sessions_for(by_memory, cores)
}

fn sessions_for(by_memory: usize, cores: usize) -> usize {
    by_memory.min(cores.saturating_mul(256)).max(256)
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
fn mem_total_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Expands `${VAR}` and `${VAR:-default}` in every string of `value`.
fn expand_value(value: &mut Value, lookup: &dyn Fn(&str) -> Option<String>) -> Result<()> {
    match value {
        Value::String(s) if s.contains("${") => *s = expand(s, lookup)?,
        Value::Array(items) => items.iter_mut().try_for_each(|v| expand_value(v, lookup))?,
        Value::Object(map) => map.values_mut().try_for_each(|v| expand_value(v, lookup))?,
        _ => {}
    }
    Ok(())
}

/// Placeholders a config file's expansion leaves as they are, for each session to fill.
pub const SESSION_PLACEHOLDERS: [&str; 2] = ["agent_workspace", "session_id"];

fn expand(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').ok_or_else(|| Error::Config(format!("unclosed ${{ in '{s}'")))?;
        let body = &after[..end];
        let (name, default) = match body.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (body, None),
        };
        if SESSION_PLACEHOLDERS.contains(&body) {
            // Filled per session by the backend (mcp: a server's command, args, env, cwd).
            out.push_str(&rest[start..start + 2 + end + 1]);
            rest = &after[end + 1..];
            continue;
        }
        match lookup(name).filter(|v| !v.is_empty() || default.is_none()) {
            Some(v) => out.push_str(&v),
            None => out.push_str(default.unwrap_or("")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        (name == "SET").then(|| "value".to_string())
    }

    #[test]
    fn expands_variables_and_defaults() {
        assert_eq!(expand("a${SET}b", &env).unwrap(), "avalueb");
        assert_eq!(expand("${UNSET:-x}", &env).unwrap(), "x");
        assert_eq!(expand("${SET:-x}", &env).unwrap(), "value");
        assert_eq!(expand("${UNSET}", &env).unwrap(), "");
        assert!(expand("${OPEN", &env).is_err());
        // A session's placeholders are left for the session.
        assert_eq!(expand("${agent_workspace}/m.json ${SET}", &env).unwrap(), "${agent_workspace}/m.json value");
        assert_eq!(expand("${session_id}", &env).unwrap(), "${session_id}");
    }

    #[test]
    fn max_sessions_has_a_default_sized_from_the_machine() {
        let n = default_max_sessions();
        assert!(n >= 256, "{n}");
        let cores = std::thread::available_parallelism().unwrap().get();
        assert!(n <= (cores * 256).max(256), "{n} for {cores} cores");
        assert_eq!(sessions_for(384, 2), 384);
        assert_eq!(sessions_for(10_000, 2), 512);
        assert_eq!(sessions_for(16, 1), 256);
        assert_eq!(sessions_for(0, 64), 256);
        let c = Config::parse(r#"{"server": {"header_timeout": 5, "body_timeout": 7.5}}"#).unwrap();
        assert_eq!((c.server.header_timeout, c.server.body_timeout, c.server.max_sessions), (5.0, 7.5, None));
    }

    #[test]
    fn parses_the_original_shape_ignoring_unknown_keys() {
        let c = Config::parse(
            r#"{"server": {"port": 1234, "session_ttl": 5, "extra": 1},
                "resources": {"bash": {"enabled": false, "config": {}}},
                "warmup": {"enabled": true, "resources": ["rag"]},
                "security": {"auth": {"enabled": true, "api_key": "${NO_SUCH_VAR_XYZ:-k}"}},
                "logging": {"level": "info"}}"#,
        )
        .unwrap();
        assert_eq!(c.server.port, 1234);
        assert!(!c.resources["bash"].enabled);
        assert_eq!(c.api_key(), Some("k"));
        assert_eq!(c.warmup.resources, ["rag"]);
    }

    #[test]
    fn a_pool_has_a_size_and_nothing_else() {
        let c = Config::parse(r#"{"resources": {"bash": {"pool": {"size": 64}}}}"#).unwrap();
        assert_eq!(c.resources["bash"].pool.size, 64);
        assert_eq!(Config::parse(r#"{"resources": {"bash": {}}}"#).unwrap().resources["bash"].pool.size, 0);
        let e = Config::parse(r#"{"resources": {"bash": {"pool": {"sise": 64}}}}"#).unwrap_err();
        assert!(e.to_string().contains("sise"), "{e}");
    }
}
