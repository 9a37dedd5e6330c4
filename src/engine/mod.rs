//! The [`Engine`]: names, parameter checks, sessions, timeouts, panics and the envelope.
//!
//! Every call, in-process or over HTTP, goes through here: resolve the tool's name
//! (docs/protocol.md §4), check its parameters against the tool's schema, warm the backend up if it
//! has not been, find or make the session (§5), run the tool with its timeout and with panics
//! caught, and wrap the outcome in the envelope (§1). The engine owns the sessions' lifetimes
//! (reaper, destroy, shutdown); backends own what a session holds.
//!
//! Its parts: `registry.rs` builds the engine and answers what it serves (the builder, tool
//! names and listings, warm-up); `call.rs` is the path of one call (the one place a backend's
//! `call` runs, with its deadline, its panic guard and its session's destroyed signal);
//! `sessions.rs` their lifetimes (create, destroy, expiry, status, shutdown); `pool.rs` the
//! warm pools (sessions started ahead, handed out on create); `batch.rs` several calls as one.

mod batch;
mod call;
mod pool;
mod registry;
mod sessions;

pub use batch::Summary;
pub use registry::{EngineBuilder, WarmupState};
pub use sessions::{ClosedSession, Refreshed, SessionInfo, SessionSummary, Stopped, WorkerStatus};

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use serde_json::{json, Value};
use tokio::sync::{watch, Notify};

use crate::backend::{Backend, Scope, SharedDesktop};
use crate::session::{Session, Table};
use crate::tool::ToolSpec;

/// How long past its own timeout a backend may take to return its partial result before the
/// engine cancels the call.
pub(super) const GRACE: Duration = Duration::from_secs(3);

/// A handle on the engine: cheap to clone, shared by every caller.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("backends", &self.backend_names()).finish()
    }
}

pub(super) struct Slot {
    backend: Arc<dyn Backend>,
    name: String,
    scope: Scope,
    warmed: AtomicBool,
    /// Serialises warm-ups; holds the last failure.
    warming: tokio::sync::Mutex<Option<String>>,
    /// Its warm pool, if it has one.
    pool: Option<pool::Pool>,
}

/// A map keyed by tool names, hashed with FNV-1a: a few times cheaper than the default SipHash
/// on these short keys, and safe here because the keys are the operator's (the backends' tool
/// names, fixed at build): a caller can only look names up, not fill a bucket.
pub(super) type NameMap<V> = HashMap<String, V, std::hash::BuildHasherDefault<Fnv>>;

/// The FNV-1a hash.
pub(super) struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

pub(super) struct Tool {
    slot: usize,
    spec: ToolSpec,
    full: String,
    listing: Value,
}

/// The tools the engine serves and their names: built from the backends' [`Backend::tools`]
/// at build, and again after the warm-up of a backend that [discovers](Backend::discovers_tools)
/// its tools; a call holds the registry it resolved its name in.
#[derive(Default)]
pub(super) struct Registry {
    tools: Vec<Arc<Tool>>,
    /// Full names and their `.`/`-`/`_` spellings, to a tool index.
    aliases: NameMap<usize>,
    /// Short names, to every tool index that has it.
    short: NameMap<Vec<usize>>,
}

pub(super) struct Inner {
    slots: Vec<Slot>,
    by_resource: HashMap<String, usize>,
    registry: RwLock<Arc<Registry>>,
    sessions: RwLock<Table>,
    /// Temporary sessions of calls running now, by worker, so that destroy finds them.
    temporaries: Mutex<HashMap<String, Vec<Arc<Session>>>>,
    live_sessions: AtomicUsize,
    next_session: AtomicU64,
    ttl: Duration,
    max_sessions: Option<usize>,
    max_sessions_per_worker: Option<usize>,
    call_timeout: Option<Duration>,
    reap_orphans: bool,
    stopping: AtomicBool,
    stopped: AtomicBool,
    inflight: AtomicUsize,
    idle: Notify,
    cancel: watch::Sender<bool>,
    reaper: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The warm pools' fillers.
    fillers: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// The desktop each worker's sessions share (docs/backends.md, vm), with the id of the
    /// session that offers it; and how many there are, so that a call reads the map only when
    /// some worker has one.
    desktops: RwLock<HashMap<String, (String, Arc<SharedDesktop>)>>,
    desktops_live: AtomicUsize,
}
impl Engine {
    /// The registered resource types, in registration order.
    pub fn backend_names(&self) -> Vec<String> {
        self.inner.slots.iter().map(|s| s.name.clone()).collect()
    }

    /// Engine-wide counts: tools, workers with sessions, sessions (`live_sessions` counts
    /// temporary and idle pooled ones too), idle pooled sessions.
    pub fn overview(&self) -> Value {
        let table = self.inner.sessions.read();
        json!({
            "tools_count": self.registry().tools.len(),
            "active_workers": table.workers(),
            "total_sessions": table.len(),
            "live_sessions": self.inner.live_sessions.load(Ordering::Acquire),
            "pooled_sessions": self.inner.slots.iter().filter_map(|s| s.pool.as_ref()).map(|p| p.idle()).sum::<usize>(),
        })
    }

    /// The tools as they are now.
    pub(super) fn registry(&self) -> Arc<Registry> {
        self.inner.registry.read().clone()
    }

    /// Whether [`Engine::shutdown`] has begun.
    pub fn is_stopping(&self) -> bool {
        self.inner.stopping.load(Ordering::Acquire)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(reaper) = self.reaper.get_mut().take() {
            reaper.abort();
        }
        for filler in self.fillers.get_mut().drain(..) {
            filler.abort();
        }
        // Session states (pooled ones too) release their processes in their own Drop.
    }
}
