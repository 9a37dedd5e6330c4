//! Building the engine and what it serves: the [`EngineBuilder`], the registry of tool names
//! (full, `.`/`-`/`_` spellings, short names), the `/tools` listings, and warm-up.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use serde_json::{json, Value};
use tokio::sync::{watch, Notify};

use crate::backend::{Backend, Scope};
use crate::error::{Error, Result};
use crate::protocol::Envelope;
use crate::session::Table;

use super::pool::Pool;
use super::sessions::reap;
use super::{Engine, Inner, Registry, Slot, Tool};

/// Builds an [`Engine`].
#[derive(Default)]
pub struct EngineBuilder {
    backends: Vec<Arc<dyn Backend>>,
    ttl: Option<Duration>,
    max_sessions: Option<usize>,
    max_sessions_per_worker: Option<usize>,
    call_timeout: Option<Duration>,
    reap_orphans: bool,
    pools: HashMap<String, usize>,
}

impl std::fmt::Debug for EngineBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EngineBuilder").field("backends", &self.backends.len()).finish()
    }
}

impl EngineBuilder {
    /// Registers a backend.
    pub fn backend(mut self, backend: Arc<dyn Backend>) -> Self {
        self.backends.push(backend);
        self
    }

    /// Session time-to-live after the last activity (default 300 s).
    pub fn session_ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// At most this many live sessions in all (temporary ones included).
    pub fn max_sessions(mut self, n: usize) -> Self {
        self.max_sessions = Some(n);
        self
    }

    /// At most this many sessions per worker.
    pub fn max_sessions_per_worker(mut self, n: usize) -> Self {
        self.max_sessions_per_worker = Some(n);
        self
    }

    /// A timeout for calls that give none (default: none; backends bound their own work).
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = Some(timeout);
        self
    }

    /// Whether this process becomes a child subreaper and reaps, once a second, the zombies of
    /// whatever agents' commands orphaned (`src/reaper.rs`). A process-wide change, so off by
    /// default for a library; the server (`Config::engine`) turns it on. Off, orphans go to the
    /// machine's init, which on a container's PID 1 may never reap them.
    pub fn reap_orphans(mut self, reap: bool) -> Self {
        self.reap_orphans = reap;
        self
    }

    /// A warm pool for the backend `resource`: `size` sessions started ahead with its default
    /// config, handed out on create when the session's config allows (see
    /// [`Backend::pool_serves`]), replenished in the background, and counted under
    /// `max_sessions` (`src/engine/pool.rs`). 0, the default, for none.
    pub fn pool(mut self, resource: &str, size: usize) -> Self {
        self.pools.insert(resource.to_owned(), size);
        self
    }

    /// Builds the engine and starts its session reaper (and the fillers of its warm pools).
    /// Must be called inside a tokio runtime.
    pub fn build(mut self) -> Result<Engine> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|_| Error::Config("Engine must be built inside a tokio runtime".into()))?;
        let reap_orphans = self.reap_orphans;
        if reap_orphans {
            if let Err(e) = crate::reaper::become_subreaper() {
                tracing::warn!("cannot become a child subreaper ({e}): orphans go to init");
            }
        }
        let mut slots = Vec::new();
        let mut by_resource = HashMap::new();
        for backend in self.backends {
            let name = backend.name().to_owned();
            if name.is_empty() || name.contains([':', '.', '-', '_']) {
                return Err(Error::Config(format!("backend name '{name}' must be non-empty, without : . - _")));
            }
            if by_resource.insert(name.clone(), slots.len()).is_some() {
                return Err(Error::Config(format!("two backends are named '{name}'")));
            }
            let pool = match self.pools.remove(&name) {
                Some(size) if size > 0 && backend.scope() == Scope::Shared => {
                    return Err(Error::Config(format!(
                        "'{name}' is shared by every worker: it has no sessions to pool"
                    )))
                }
                Some(size) if size > 0 && !backend.pool_serves(&serde_json::Map::new()) => {
                    return Err(Error::Config(format!("'{name}' sessions cannot be pooled: each starts its own")))
                }
                Some(size) if size > 0 => Some(Pool::new(size)),
                _ => None,
            };
            slots.push(Slot {
                scope: backend.scope(),
                backend,
                name,
                warmed: AtomicBool::new(false),
                warming: tokio::sync::Mutex::new(None),
                pool,
            });
        }
        if let Some(name) = self.pools.keys().next() {
            return Err(Error::Config(format!("a pool for '{name}', which is not a backend of this engine")));
        }
        let ttl = self.ttl.unwrap_or(Duration::from_secs(300));
        let registry = RwLock::new(Arc::new(Registry::of(&slots)));
        let inner = Arc::new(Inner {
            slots,
            by_resource,
            registry,
            sessions: RwLock::new(Table::default()),
            temporaries: Mutex::new(HashMap::new()),
            live_sessions: AtomicUsize::new(0),
            next_session: AtomicU64::new(1),
            ttl,
            max_sessions: self.max_sessions,
            max_sessions_per_worker: self.max_sessions_per_worker,
            call_timeout: self.call_timeout,
            reap_orphans,
            stopping: AtomicBool::new(false),
            stopped: AtomicBool::new(false),
            inflight: AtomicUsize::new(0),
            idle: Notify::new(),
            cancel: watch::channel(false).0,
            reaper: Mutex::new(None),
            fillers: Mutex::new(Vec::new()),
            desktops: RwLock::new(HashMap::new()),
            desktops_live: AtomicUsize::new(0),
        });
        let tick = (ttl / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let reaper = runtime.spawn(reap(Arc::downgrade(&inner), tick, reap_orphans));
        *inner.reaper.lock() = Some(reaper);
        *inner.fillers.lock() = super::pool::start(&inner, &runtime);
        Ok(Engine { inner })
    }
}

impl Registry {
    /// The tools of `slots`' backends as they list them now.
    pub(super) fn of(slots: &[Slot]) -> Registry {
        let mut registry = Registry::default();
        for (index, slot) in slots.iter().enumerate() {
            let name = &slot.name;
            for spec in slot.backend.tools() {
                let full = format!("{name}:{}", spec.name);
                let at = registry.tools.len();
                for sep in [':', '.', '-', '_'] {
                    registry.aliases.insert(format!("{name}{sep}{}", spec.name), at);
                }
                registry.short.entry(spec.name.to_owned()).or_default().push(at);
                let listing = json!({
                    "name": full,
                    "description": spec.description,
                    "resource_type": name,
                    "parameters": spec.schema(),
                });
                registry.tools.push(Arc::new(Tool { slot: index, spec, full, listing }));
            }
        }
        registry
    }
}

impl Engine {
    /// A builder with no backends.
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }

    /// Warms up every backend that [discovers its tools](Backend::discovers_tools) and has not
    /// been warmed yet, so that a listing that follows has their tools (a failure is logged:
    /// such a backend then lists what it knows). The HTTP `/tools` endpoints call this first.
    /// A backend whose warm-up already failed is not tried again here (a listing must not start
    /// servers each time it is asked for); a call of one of its tools, or `/warmup`, tries again.
    pub async fn discover_tools(&self) {
        for (index, slot) in self.inner.slots.iter().enumerate() {
            if slot.backend.discovers_tools() && !slot.warmed.load(Ordering::Acquire) {
                if slot.warming.lock().await.is_some() {
                    continue;
                }
                if let Err(e) = self.ensure_warm(index).await {
                    tracing::warn!("'{}' could not list its tools: {e}", slot.name);
                }
            }
        }
    }

    /// Every tool with its JSON Schema; hidden ones only when asked.
    pub fn list_tools(&self, include_hidden: bool) -> Envelope {
        let registry = self.registry();
        let tools: Vec<&Value> =
            registry.tools.iter().filter(|t| include_hidden || !t.spec.hidden).map(|t| &t.listing).collect();
        Envelope::ok(json!({"tools": tools, "total": tools.len()})).traced(None)
    }

    /// The tools as the original project's `/api/v1/tools` listed them.
    pub fn tool_summaries(&self, include_hidden: bool) -> Vec<Value> {
        self.registry()
            .tools
            .iter()
            .filter(|t| include_hidden || !t.spec.hidden)
            .map(|t| {
                let slot = &self.inner.slots[t.slot];
                json!({
                    "name": t.spec.name,
                    "full_name": t.full,
                    "resource_type": slot.name,
                    "stateless": slot.scope == Scope::Shared,
                    "description": t.spec.description,
                    "hidden": t.spec.hidden,
                })
            })
            .collect()
    }

    /// One tool's listing with its schema, by any name that resolves to it.
    pub fn tool_schema(&self, name: &str) -> Result<Value> {
        let t = self.resolve(name)?;
        let mut v = t.listing.clone();
        v["short_name"] = json!(t.spec.name);
        v["hidden"] = json!(t.spec.hidden);
        Ok(v)
    }

    /// Warms the named backends (all when empty). `data.backends` gives each outcome; the code
    /// is 2003 if any failed, 1005 if a name is unknown.
    pub async fn warmup(&self, backends: &[String]) -> Envelope {
        let start = Instant::now();
        let mut envelope = match self.warm_up(backends).await {
            Err(e) => Envelope::error(&e),
            Ok((states, first_error)) => {
                let data = json!({ "backends": states });
                match first_error {
                    None => Envelope::ok(data),
                    Some(e) => Envelope { data, ..Envelope::error(&e) },
                }
            }
        };
        envelope.meta.execution_time_ms = start.elapsed().as_secs_f64() * 1000.0;
        envelope.traced(None)
    }

    /// [`Engine::warmup`], typed: each backend's state, and the first failure if any failed.
    /// An unknown name is an error before anything is warmed up.
    pub async fn warm_up(&self, backends: &[String]) -> Result<(BTreeMap<String, WarmupState>, Option<Error>)> {
        let names: Vec<String> = if backends.is_empty() { self.backend_names() } else { backends.to_vec() };
        let slots = names.iter().map(|n| self.slot_of(n)).collect::<Result<Vec<_>>>()?;
        let mut states = BTreeMap::new();
        let mut first_error = None;
        for (name, slot) in names.into_iter().zip(slots) {
            let state = match self.ensure_warm(slot).await {
                Ok(()) => WarmupState { loaded: true, warmed_up: true, error: None },
                Err(e) => {
                    let text = match &e {
                        Error::NotWarmedUp { reason, .. } => reason.clone(),
                        other => other.to_string(),
                    };
                    first_error.get_or_insert(e);
                    WarmupState { loaded: true, warmed_up: false, error: Some(text) }
                }
            };
            states.insert(name, state);
        }
        Ok((states, first_error))
    }

    /// Each backend's warm-up state.
    pub fn warmup_status(&self) -> Envelope {
        Envelope::ok(json!({ "backends": self.warmup_states() })).traced(None)
    }

    /// [`Engine::warmup_status`], typed.
    pub fn warmup_states(&self) -> BTreeMap<String, WarmupState> {
        let state = |s: &Slot| WarmupState { loaded: true, warmed_up: s.warmed.load(Ordering::Acquire), error: None };
        self.inner.slots.iter().map(|s| (s.name.clone(), state(s))).collect()
    }
}

/// One backend's warm-up state (an entry of `data.backends` of `/warmup`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct WarmupState {
    /// Always true: a registered backend is loaded.
    pub loaded: bool,
    /// Whether its warm-up succeeded.
    pub warmed_up: bool,
    /// Why it failed, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}
