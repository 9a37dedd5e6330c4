//! The [`Engine`]: names, parameter checks, sessions, timeouts, panics and the envelope.
//!
//! Every call, in-process or over HTTP, goes through here: resolve the tool's name
//! (docs/protocol.md §4), check its parameters against the tool's schema, warm the backend up if it
//! has not been, find or make the session (§5), run the tool with its timeout and with panics
//! caught, and wrap the outcome in the envelope (§1). The engine owns the sessions' lifetimes
//! (reaper, destroy, shutdown); backends own what a session holds.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use serde_json::{json, Map, Value};
use tokio::sync::{watch, Notify};
use tracing::Instrument;

use crate::backend::{Backend, CallContext, Scope, SessionState};
use crate::error::{Error, Result};
use crate::protocol::{
    check_worker_id, new_trace_id, rfc3339, BatchAction, BatchRequest, CreateSessionRequest, Envelope, ExecuteRequest,
    Meta,
};
use crate::session::{Session, Status, Table};
use crate::tool::ToolSpec;

/// How long past its own timeout a backend may take to return its partial result before the
/// engine cancels the call.
const GRACE: Duration = Duration::from_secs(3);

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

struct Slot {
    backend: Arc<dyn Backend>,
    name: String,
    scope: Scope,
    warmed: AtomicBool,
    /// Serialises warm-ups; holds the last failure.
    warming: tokio::sync::Mutex<Option<String>>,
}

struct Tool {
    slot: usize,
    spec: ToolSpec,
    full: String,
    listing: Value,
}

struct Inner {
    slots: Vec<Slot>,
    by_resource: HashMap<String, usize>,
    tools: Vec<Tool>,
    /// Full names and their `.`/`-`/`_` spellings, to a tool index.
    aliases: HashMap<String, usize>,
    /// Short names, to every tool index that has it.
    short: HashMap<String, Vec<usize>>,
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
}

/// Builds an [`Engine`].
#[derive(Default)]
pub struct EngineBuilder {
    backends: Vec<Arc<dyn Backend>>,
    ttl: Option<Duration>,
    max_sessions: Option<usize>,
    max_sessions_per_worker: Option<usize>,
    call_timeout: Option<Duration>,
    reap_orphans: bool,
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

    /// Builds the engine and starts its session reaper. Must be called inside a tokio runtime.
    pub fn build(self) -> Result<Engine> {
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
        let mut tools = Vec::new();
        let mut aliases = HashMap::new();
        let mut short: HashMap<String, Vec<usize>> = HashMap::new();
        for backend in self.backends {
            let name = backend.name().to_owned();
            if name.is_empty() || name.contains([':', '.', '-', '_']) {
                return Err(Error::Config(format!("backend name '{name}' must be non-empty, without : . - _")));
            }
            if by_resource.insert(name.clone(), slots.len()).is_some() {
                return Err(Error::Config(format!("two backends are named '{name}'")));
            }
            for spec in backend.tools() {
                let full = format!("{name}:{}", spec.name);
                let index = tools.len();
                for sep in [':', '.', '-', '_'] {
                    aliases.insert(format!("{name}{sep}{}", spec.name), index);
                }
                short.entry(spec.name.to_owned()).or_default().push(index);
                let listing = json!({
                    "name": full,
                    "description": spec.description,
                    "resource_type": name,
                    "parameters": spec.schema(),
                });
                tools.push(Tool { slot: slots.len(), spec, full, listing });
            }
            slots.push(Slot {
                scope: backend.scope(),
                backend,
                name,
                warmed: AtomicBool::new(false),
                warming: tokio::sync::Mutex::new(None),
            });
        }
        let ttl = self.ttl.unwrap_or(Duration::from_secs(300));
        let inner = Arc::new(Inner {
            slots,
            by_resource,
            tools,
            aliases,
            short,
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
        });
        let tick = (ttl / 4).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let reaper = runtime.spawn(reap(Arc::downgrade(&inner), tick));
        *inner.reaper.lock() = Some(reaper);
        Ok(Engine { inner })
    }
}

/// Destroys expired sessions, and reaps orphaned zombies, until the engine is gone or stopped.
async fn reap(engine: Weak<Inner>, tick: Duration) {
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(inner) = engine.upgrade() else { return };
        if inner.stopped.load(Ordering::Acquire) {
            return;
        }
        if inner.reap_orphans {
            let _ = tokio::task::spawn_blocking(crate::reaper::reap_orphans).await;
        }
        let engine = Engine { inner };
        let now = Instant::now();
        let expired: Vec<_> = engine
            .inner
            .sessions
            .read()
            .all()
            .into_iter()
            .filter(|s| s.status() == Status::Active && s.expired(now))
            .collect();
        for session in expired {
            // A session in the middle of a call is not idle: leave it for a later tick.
            let Ok(guard) = session.state.clone().try_lock_owned() else { continue };
            if !session.expired(Instant::now()) || !engine.inner.sessions.write().remove_exact(&session) {
                continue;
            }
            engine.release(&session, guard).await;
        }
    }
}

/// Counts a call in flight for graceful shutdown.
struct InFlight<'a>(&'a Inner);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.0.inflight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// A temporary session's state, destroyed when the call ends, whatever the outcome (even if the
/// call's future is dropped half-way). Listed with the worker's temporaries meanwhile, so that
/// destroying the worker's session of its type abandons the call.
struct Temporary {
    engine: Engine,
    session: Arc<Session>,
    state: Option<SessionState>,
}

impl Temporary {
    fn new(engine: &Engine, session: Session) -> Self {
        let session = Arc::new(session);
        engine.inner.temporaries.lock().entry(session.worker.clone()).or_default().push(session.clone());
        Temporary { engine: engine.clone(), session, state: None }
    }

    fn unlist(&self) {
        let mut all = self.engine.inner.temporaries.lock();
        if let Some(list) = all.get_mut(&self.session.worker) {
            list.retain(|s| !Arc::ptr_eq(s, &self.session));
            if list.is_empty() {
                all.remove(&self.session.worker);
            }
        }
    }

    async fn finish(mut self) {
        self.unlist();
        if let Some(state) = self.state.take() {
            self.engine.destroy_state(self.session.backend, state).await;
        }
        self.session.settle(Status::Gone);
    }
}

impl Drop for Temporary {
    fn drop(&mut self) {
        self.unlist();
        let session = self.session.clone();
        match self.state.take() {
            Some(state) => {
                let engine = self.engine.clone();
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    rt.spawn(async move {
                        engine.destroy_state(session.backend, state).await;
                        session.settle(Status::Gone);
                    });
                } else {
                    engine.inner.live_sessions.fetch_sub(1, Ordering::AcqRel);
                    session.settle(Status::Gone);
                }
            }
            None => session.settle(Status::Gone),
        }
    }
}

/// Turns a panic while polling `F` into an error.
struct CatchUnwind<F>(F);

impl<F: Future + Unpin> Future for CatchUnwind<F> {
    type Output = std::result::Result<F::Output, String>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = &mut self.0;
        match std::panic::catch_unwind(AssertUnwindSafe(|| Pin::new(inner).poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
            Err(payload) => {
                let text = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                Poll::Ready(Err(text))
            }
        }
    }
}

async fn catching<T>(fut: Pin<Box<dyn Future<Output = Result<T>> + Send + '_>>, what: &str) -> Result<T> {
    CatchUnwind(fut).await.unwrap_or_else(|panic| Err(Error::Internal(format!("{what} panicked: {panic}"))))
}

fn timeout_param(timeout: Option<f64>) -> Result<Option<Duration>> {
    match timeout {
        None => Ok(None),
        Some(t) if t.is_finite() && t > 0.0 && t <= 86_400.0 => Ok(Some(Duration::from_secs_f64(t))),
        Some(t) => Err(Error::param("timeout", format!("expected seconds in (0, 86400], got {t}"))),
    }
}

impl Engine {
    /// A builder with no backends.
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }

    /// The registered resource types, in registration order.
    pub fn backend_names(&self) -> Vec<String> {
        self.inner.slots.iter().map(|s| s.name.clone()).collect()
    }

    // ---- execution -------------------------------------------------------------------------

    /// Runs `action` for `worker_id` with `params` (the common case of [`Engine::execute_request`]).
    pub async fn execute(&self, worker_id: &str, action: &str, params: Value) -> Envelope {
        self.execute_request(ExecuteRequest::new(worker_id, action, params)).await
    }

    /// Runs one tool call and answers with its envelope.
    pub async fn execute_request(&self, req: ExecuteRequest) -> Envelope {
        let start = Instant::now();
        let span = crate::logging::call_span(&req.worker_id, &req.action);
        let mut meta = Meta::default();
        let result = match self.enter() {
            Ok(_guard) => {
                self.run(&req.worker_id, &req.action, req.params, req.timeout, &mut meta).instrument(span.clone()).await
            }
            Err(e) => Err(e),
        };
        let mut envelope = Envelope::from_result(result);
        meta.execution_time_ms = start.elapsed().as_secs_f64() * 1000.0;
        meta.trace_id = req.trace_id.unwrap_or_else(new_trace_id);
        envelope.meta = meta;
        crate::logging::call_ended(&span, &envelope);
        envelope
    }

    fn enter(&self) -> Result<InFlight<'_>> {
        self.inner.inflight.fetch_add(1, Ordering::AcqRel);
        let guard = InFlight(&self.inner);
        if self.inner.stopping.load(Ordering::Acquire) {
            return Err(Error::ShuttingDown);
        }
        Ok(guard)
    }

    /// Resolves a tool name (docs/protocol.md §4) to its index.
    fn resolve(&self, name: &str) -> Result<usize> {
        if let Some(&i) = self.inner.aliases.get(name) {
            return Ok(i);
        }
        match self.inner.short.get(name).map(Vec::as_slice) {
            Some([i]) => Ok(*i),
            Some(many) => Err(Error::AmbiguousTool {
                name: name.to_owned(),
                candidates: many.iter().map(|&i| self.inner.tools[i].full.clone()).collect(),
            }),
            None => Err(Error::ToolNotFound(name.to_owned())),
        }
    }

    /// The backend a tool name points at, when the name is unknown but its prefix is a resource.
    fn prefix_slot(&self, name: &str) -> Option<usize> {
        let end = name.find([':', '.', '-', '_'])?;
        self.inner.by_resource.get(&name[..end]).copied()
    }

    async fn run(
        &self,
        worker: &str,
        action: &str,
        params: Value,
        timeout: Option<f64>,
        meta: &mut Meta,
    ) -> Result<Value> {
        check_worker_id(worker)?;
        let tool_index = match self.resolve(action) {
            Ok(i) => i,
            Err(e) => {
                // A resource whose backend cannot start says so, rather than "no such tool".
                if let Some(slot) = self.prefix_slot(action) {
                    self.ensure_warm(slot).await?;
                }
                return Err(e);
            }
        };
        let inner = &*self.inner;
        let tool = &inner.tools[tool_index];
        let slot = &inner.slots[tool.slot];
        meta.tool = Some(tool.spec.name.clone());
        meta.resource_type = Some(slot.name.clone());
        tool.spec.validate(&params)?;
        let timeout = timeout_param(timeout)?.or(inner.call_timeout);
        let deadline = timeout.map(|t| Instant::now() + t);
        self.ensure_warm(tool.slot).await?;
        let name = tool.spec.name.as_str();

        if slot.scope == Scope::Shared {
            let ctx = CallContext { worker_id: worker, session_id: None, timeout };
            return self.guarded(slot.backend.call(name, params, None, &ctx), deadline, name, None).await;
        }

        let existing = inner.sessions.read().get(worker, &slot.name).cloned();
        if let Some(session) = existing {
            meta.session_id = Some(session.id.clone());
            let lock = session.state.clone().lock_owned();
            let mut guard = match deadline {
                None => lock.await,
                Some(d) => tokio::time::timeout_at(d.into(), lock).await.map_err(|_| {
                    Error::SessionBusy(format!("session {} is busy: the call waited past its timeout", session.id))
                })?,
            };
            let Some(state) = guard.as_mut().filter(|_| !session.is_destroyed()) else {
                return Err(Error::Destroyed(session.id.clone()));
            };
            session.touch(inner.ttl);
            let ctx = CallContext {
                worker_id: worker,
                session_id: Some(&session.id),
                timeout: deadline.map(|d| d.saturating_duration_since(Instant::now())),
            };
            let result =
                self.guarded(slot.backend.call(name, params, Some(state), &ctx), deadline, name, Some(&session)).await;
            session.touch(inner.ttl);
            return result;
        }

        if tool.spec.sessionless {
            let ctx = CallContext { worker_id: worker, session_id: None, timeout };
            return self.guarded(slot.backend.call(name, params, None, &ctx), deadline, name, None).await;
        }

        // No session: a temporary one for this call only.
        self.reserve(worker, None)?;
        let id = self.session_id(&slot.name, worker);
        meta.session_id = Some(id.clone());
        meta.temporary_session = true;
        let mut temp =
            Temporary::new(self, Session::new(id.clone(), id.clone(), worker, &slot.name, tool.slot, inner.ttl));
        temp.session.settle(Status::Active);
        let created = catching(slot.backend.create_session(&Map::new()), "session creation").await;
        let state = match created {
            Ok(s) => temp.state.insert(s),
            Err(e) => {
                inner.live_sessions.fetch_sub(1, Ordering::AcqRel);
                return Err(e);
            }
        };
        if temp.session.is_destroyed() {
            temp.finish().await;
            return Err(Error::Destroyed(id));
        }
        let ctx = CallContext {
            worker_id: worker,
            session_id: Some(&id),
            timeout: deadline.map(|d| d.saturating_duration_since(Instant::now())),
        };
        let session = temp.session.clone();
        let result =
            self.guarded(slot.backend.call(name, params, Some(state), &ctx), deadline, name, Some(&session)).await;
        temp.finish().await;
        result
    }

    /// Runs a backend future with panics caught, the caller's deadline (plus a grace for the
    /// backend to report its own timeout), cancellation by a forced shutdown, and abandoned
    /// when `session` is destroyed (the future is dropped: the backend then releases the state).
    async fn guarded<'a>(
        &self,
        fut: Pin<Box<dyn Future<Output = Result<Value>> + Send + 'a>>,
        deadline: Option<Instant>,
        tool: &str,
        session: Option<&Session>,
    ) -> Result<Value> {
        let mut cancel = self.inner.cancel.subscribe();
        let call = catching(fut, tool);
        let bounded = async {
            match deadline {
                None => call.await,
                Some(d) => tokio::time::timeout_at((d + GRACE).into(), call).await.unwrap_or_else(|_| {
                    Err(Error::Timeout { message: format!("tool '{tool}' timed out"), data: json!({}) })
                }),
            }
        };
        let destroyed = async {
            match session {
                Some(s) => s.destroyed().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            r = bounded => r,
            _ = cancel.wait_for(|c| *c) => Err(Error::ShuttingDown),
            _ = destroyed => Err(Error::Destroyed(session.map(|s| s.id.clone()).unwrap_or_default())),
        }
    }

    /// Warms a backend up once; a failure is reported (2003) and retried on the next call.
    async fn ensure_warm(&self, slot: usize) -> Result<()> {
        let slot = &self.inner.slots[slot];
        if slot.warmed.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut last_error = slot.warming.lock().await;
        if slot.warmed.load(Ordering::Acquire) {
            return Ok(());
        }
        match catching(slot.backend.warmup(), "warm-up").await {
            Ok(()) => {
                slot.warmed.store(true, Ordering::Release);
                *last_error = None;
                Ok(())
            }
            Err(e) => {
                let reason = e.to_string();
                *last_error = Some(reason.clone());
                Err(Error::NotWarmedUp { backend: slot.name.clone(), reason })
            }
        }
    }

    /// Runs a batch (docs/protocol.md §3.3) and answers one envelope for it.
    pub async fn execute_batch(&self, req: BatchRequest) -> Envelope {
        let (start, trace_id) = (Instant::now(), req.trace_id.clone());
        match self.run_batch(req).await {
            Ok(summary) => summary.batch_envelope(start, trace_id),
            Err(e) => Envelope::error(&e).traced(trace_id),
        }
    }

    /// Runs a batch: in order (stopping at the first failure when asked), or in parallel with
    /// same-session actions still in order. Each action answers its own envelope.
    pub async fn run_batch(&self, req: BatchRequest) -> Result<Summary> {
        check_worker_id(&req.worker_id)?;
        let total = req.actions.len();
        let call = |a: BatchAction| ExecuteRequest {
            worker_id: req.worker_id.clone(),
            action: a.action,
            params: a.params,
            timeout: a.timeout,
            trace_id: req.trace_id.clone(),
        };
        let mut results: Vec<Envelope> = Vec::with_capacity(total);
        if req.parallel {
            // One lane per resource type (one session each), lanes run concurrently.
            let mut lanes: BTreeMap<String, Vec<(usize, ExecuteRequest)>> = BTreeMap::new();
            for (i, a) in req.actions.into_iter().enumerate() {
                let lane = match self.resolve(&a.action) {
                    Ok(t) => self.inner.slots[self.inner.tools[t].slot].name.clone(),
                    Err(_) => format!("\0{i}"),
                };
                lanes.entry(lane).or_default().push((i, call(a)));
            }
            let mut set = tokio::task::JoinSet::new();
            for (_, lane) in lanes {
                let engine = self.clone();
                set.spawn(async move {
                    let mut out = Vec::with_capacity(lane.len());
                    for (i, r) in lane {
                        out.push((i, engine.execute_request(r).await));
                    }
                    out
                });
            }
            let mut slots: Vec<Option<Envelope>> = vec![None; total];
            while let Some(done) = set.join_next().await {
                let lane = done.map_err(|e| Error::Internal(format!("batch lane failed: {e}")))?;
                lane.into_iter().for_each(|(i, e)| slots[i] = Some(e));
            }
            results.extend(slots.into_iter().flatten());
        } else {
            for a in req.actions {
                let envelope = self.execute_request(call(a)).await;
                let failed = !envelope.is_ok();
                results.push(envelope);
                if failed && req.stop_on_error {
                    break;
                }
            }
        }
        Ok(Summary { results, total })
    }

    // ---- sessions --------------------------------------------------------------------------

    fn slot_of(&self, resource: &str) -> Result<usize> {
        self.inner.by_resource.get(resource).copied().ok_or_else(|| Error::ResourceNotFound(resource.to_owned()))
    }

    fn session_id(&self, resource: &str, worker: &str) -> String {
        let n = self.inner.next_session.fetch_add(1, Ordering::Relaxed);
        format!("{resource}_{worker}_{n:03}")
    }

    /// Takes one place under the global cap, and under the worker's cap when `table` is given.
    fn reserve(&self, worker: &str, table: Option<&Table>) -> Result<()> {
        let inner = &*self.inner;
        if let (Some(max), Some(table)) = (inner.max_sessions_per_worker, table) {
            if table.worker_count(worker) >= max {
                return Err(Error::Unavailable(format!(
                    "max_sessions_per_worker reached: worker '{worker}' has {max} sessions"
                )));
            }
        }
        let live = inner.live_sessions.fetch_add(1, Ordering::AcqRel);
        if let Some(max) = inner.max_sessions.filter(|&m| live >= m) {
            inner.live_sessions.fetch_sub(1, Ordering::AcqRel);
            return Err(Error::Unavailable(format!("max_sessions reached: {max} sessions are live")));
        }
        Ok(())
    }

    /// Creates a worker's session of a resource type, or returns the one it has.
    pub async fn create_session(&self, req: CreateSessionRequest) -> Envelope {
        let start = Instant::now();
        let resource = req.resource_type.clone();
        let span = crate::logging::session_span("create", &req.worker_id, &resource);
        let result = match self.enter() {
            Ok(_g) => self.create(req).instrument(span.clone()).await,
            Err(e) => Err(e),
        };
        let envelope = self.session_envelope(result, start, &resource);
        crate::logging::session_ended(&span, &envelope);
        envelope
    }

    /// Creates several sessions, each with its config; `data.sessions` lists each outcome.
    pub async fn create_sessions(&self, worker_id: &str, resources: Vec<(String, Map<String, Value>)>) -> Envelope {
        let mut results = Vec::new();
        for (resource_type, config) in resources {
            let req = CreateSessionRequest {
                worker_id: worker_id.to_owned(),
                resource_type,
                config: Some(config),
                custom_name: None,
            };
            results.push(self.create_session(req).await);
        }
        Summary { total: results.len(), results }.sessions_envelope()
    }

    fn session_envelope(&self, result: Result<Value>, start: Instant, resource: &str) -> Envelope {
        let mut envelope = Envelope::from_result(result);
        envelope.meta.resource_type = Some(resource.to_owned());
        envelope.meta.session_id = envelope.data.get("session_id").and_then(Value::as_str).map(str::to_owned);
        envelope.meta.execution_time_ms = start.elapsed().as_secs_f64() * 1000.0;
        envelope.traced(None)
    }

    async fn create(&self, req: CreateSessionRequest) -> Result<Value> {
        let slot_index = self.slot_of(&req.resource_type)?;
        let slot = &self.inner.slots[slot_index];
        if slot.scope == Scope::Shared {
            return Ok(json!({
                "session_id": null,
                "session_name": null,
                "session_status": "shared",
                "resource_type": slot.name,
            }));
        }
        self.ensure_warm(slot_index).await?;
        let worker = req.worker_id.as_str();
        check_worker_id(worker)?;
        let (session, guard) = {
            let mut table = self.inner.sessions.write();
            match table.get(worker, &slot.name) {
                Some(s) => (s.clone(), None),
                None => {
                    self.reserve(worker, Some(&table))?;
                    let id = self.session_id(&slot.name, worker);
                    let name = req.custom_name.clone().unwrap_or_else(|| id.clone());
                    let s = Arc::new(Session::new(id, name, worker, &slot.name, slot_index, self.inner.ttl));
                    let guard = s.state.clone().try_lock_owned().expect("a new session's lock is free");
                    table.insert(s.clone());
                    (s, Some(guard))
                }
            }
        };
        let describe = |s: &Session| {
            json!({
                "session_id": s.id,
                "session_name": s.name,
                "session_status": "active",
                "resource_type": s.resource,
            })
        };
        let Some(mut guard) = guard else {
            return if session.settled().await {
                Ok(describe(&session))
            } else {
                Err(Error::Session(format!("session {} failed to start; try again", session.id)))
            };
        };
        let config = req.config.unwrap_or_default();
        match catching(slot.backend.create_session(&config), "session creation").await {
            Ok(state) => {
                *guard = Some(state);
                session.settle(Status::Active);
                Ok(describe(&session))
            }
            Err(e) => {
                self.inner.sessions.write().remove_exact(&session);
                self.inner.live_sessions.fetch_sub(1, Ordering::AcqRel);
                session.settle(Status::Gone);
                Err(match e {
                    e @ (Error::Param { .. }
                    | Error::Policy { .. }
                    | Error::Backend { .. }
                    | Error::Unavailable(_)
                    | Error::NotWarmedUp { .. }) => e,
                    other => Error::backend(format!("session creation failed: {other}")),
                })
            }
        }
    }

    /// Destroys a worker's session of a resource type.
    pub async fn destroy_session(&self, worker_id: &str, resource_type: &str) -> Envelope {
        let start = Instant::now();
        let span = crate::logging::session_span("destroy", worker_id, resource_type);
        let result = async {
            check_worker_id(worker_id)?;
            self.slot_of(resource_type)?;
            let session = self.inner.sessions.read().get(worker_id, resource_type).cloned();
            if let Some(session) = session {
                self.destroy(&session).await;
                return Ok(json!({"session_id": session.id, "resource_type": session.resource}));
            }
            // Only temporary sessions, of calls running now: they are abandoned.
            let temporaries = self.temporaries(worker_id, Some(resource_type));
            let Some(first) = temporaries.first() else {
                return Err(Error::Session(format!("worker '{worker_id}' has no '{resource_type}' session")));
            };
            let id = first.id.clone();
            self.destroy_temporaries(temporaries).await;
            Ok(json!({"session_id": id, "resource_type": resource_type, "temporary": true}))
        }
        .instrument(span.clone())
        .await;
        let envelope = self.session_envelope(result, start, resource_type);
        crate::logging::session_ended(&span, &envelope);
        envelope
    }

    /// Destroys several of a worker's sessions; `data.sessions` lists each outcome.
    pub async fn destroy_sessions(&self, worker_id: &str, resource_types: &[&str]) -> Envelope {
        let mut results = Vec::new();
        for r in resource_types {
            results.push(self.destroy_session(worker_id, r).await);
        }
        Summary { total: results.len(), results }.sessions_envelope()
    }

    /// Destroys every session of a worker (its disconnect); answers `sessions_cleaned`.
    pub async fn destroy_worker(&self, worker_id: &str) -> Envelope {
        if let Err(e) = check_worker_id(worker_id) {
            return Envelope::error(&e).traced(None);
        }
        let sessions = self.inner.sessions.read().worker(worker_id);
        for s in &sessions {
            self.destroy(s).await;
        }
        let temporaries = self.temporaries(worker_id, None);
        let cleaned = sessions.len() + temporaries.len();
        self.destroy_temporaries(temporaries).await;
        Envelope::ok(json!({"worker_id": worker_id, "sessions_cleaned": cleaned})).traced(None)
    }

    /// Removes a session from the table, abandons the call running in it (and those waiting),
    /// and releases it.
    async fn destroy(&self, session: &Arc<Session>) {
        if self.inner.sessions.write().remove_exact(session) {
            session.mark_destroyed();
            let guard = session.state.clone().lock_owned().await;
            self.release(session, guard).await;
        }
    }

    /// The temporary sessions of a worker's running calls (of one resource type, or all).
    fn temporaries(&self, worker: &str, resource: Option<&str>) -> Vec<Arc<Session>> {
        let all = self.inner.temporaries.lock();
        let list = all.get(worker).map(Vec::as_slice).unwrap_or_default();
        list.iter().filter(|s| resource.is_none_or(|r| s.resource == r)).cloned().collect()
    }

    /// Abandons the calls of temporary sessions and waits until each is released.
    async fn destroy_temporaries(&self, sessions: Vec<Arc<Session>>) {
        for s in &sessions {
            s.mark_destroyed();
        }
        for s in &sessions {
            s.gone().await;
        }
    }

    async fn release(&self, session: &Session, mut guard: tokio::sync::OwnedMutexGuard<Option<SessionState>>) {
        session.settle(Status::Gone);
        if let Some(state) = guard.take() {
            self.destroy_state(session.backend, state).await;
        }
    }

    async fn destroy_state(&self, slot: usize, state: SessionState) {
        let backend = &self.inner.slots[slot].backend;
        let destroyed = catching(
            Box::pin(async move {
                backend.destroy_session(state).await;
                Ok(())
            }),
            "session destroy",
        )
        .await;
        if let Err(e) = destroyed {
            tracing::error!("{e}");
        }
        self.inner.live_sessions.fetch_sub(1, Ordering::AcqRel);
    }

    /// A worker's sessions.
    pub async fn list_sessions(&self, worker_id: &str) -> Envelope {
        if let Err(e) = check_worker_id(worker_id) {
            return Envelope::error(&e).traced(None);
        }
        let sessions: Vec<Value> = self.inner.sessions.read().worker(worker_id).iter().map(|s| s.describe()).collect();
        Envelope::ok(json!({"sessions": sessions, "worker_id": worker_id, "total": sessions.len()})).traced(None)
    }

    /// Extends a worker's session of `resource_type` (or all of its sessions) to now + TTL.
    pub async fn refresh_sessions(&self, worker_id: &str, resource_type: Option<&str>) -> Envelope {
        let result = (|| {
            check_worker_id(worker_id)?;
            let sessions = match resource_type {
                Some(r) => {
                    self.slot_of(r)?;
                    let s = self.inner.sessions.read().get(worker_id, r).cloned();
                    vec![s.ok_or_else(|| Error::Session(format!("worker '{worker_id}' has no '{r}' session")))?]
                }
                None => self.inner.sessions.read().worker(worker_id),
            };
            let refreshed: Vec<Value> = sessions
                .iter()
                .map(|s| {
                    s.touch(self.inner.ttl);
                    json!({"resource_type": s.resource, "session_id": s.id, "expires_at": rfc3339(s.expires_at())})
                })
                .collect();
            Ok(json!({"refreshed": refreshed}))
        })();
        Envelope::from_result(result).traced(None)
    }

    // ---- tools, warm-up, status ------------------------------------------------------------

    /// Every tool with its JSON Schema; hidden ones only when asked.
    pub fn list_tools(&self, include_hidden: bool) -> Envelope {
        let tools: Vec<&Value> =
            self.inner.tools.iter().filter(|t| include_hidden || !t.spec.hidden).map(|t| &t.listing).collect();
        Envelope::ok(json!({"tools": tools, "total": tools.len()})).traced(None)
    }

    /// The tools as the original project's `/api/v1/tools` listed them.
    pub fn tool_summaries(&self, include_hidden: bool) -> Vec<Value> {
        self.inner
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
        let t = &self.inner.tools[self.resolve(name)?];
        let mut v = t.listing.clone();
        v["short_name"] = json!(t.spec.name);
        v["hidden"] = json!(t.spec.hidden);
        Ok(v)
    }

    /// Warms the named backends (all when empty). `data.backends` gives each outcome; the code
    /// is 2003 if any failed, 1005 if a name is unknown.
    pub async fn warmup(&self, backends: &[String]) -> Envelope {
        let start = Instant::now();
        let names: Vec<String> = if backends.is_empty() { self.backend_names() } else { backends.to_vec() };
        let mut report = Map::new();
        let mut first_error = None;
        for name in &names {
            let slot = match self.slot_of(name) {
                Ok(s) => s,
                Err(e) => return Envelope::error(&e).traced(None),
            };
            let entry = match self.ensure_warm(slot).await {
                Ok(()) => json!({"loaded": true, "warmed_up": true}),
                Err(e) => {
                    let text = match &e {
                        Error::NotWarmedUp { reason, .. } => reason.clone(),
                        other => other.to_string(),
                    };
                    first_error.get_or_insert(e);
                    json!({"loaded": true, "warmed_up": false, "error": text})
                }
            };
            report.insert(name.clone(), entry);
        }
        let data = json!({"backends": report});
        let mut envelope = match first_error {
            None => Envelope::ok(data),
            Some(e) => Envelope { data, ..Envelope::error(&e) },
        };
        envelope.meta.execution_time_ms = start.elapsed().as_secs_f64() * 1000.0;
        envelope.traced(None)
    }

    /// Each backend's warm-up state.
    pub fn warmup_status(&self) -> Envelope {
        let mut report = Map::new();
        for slot in &self.inner.slots {
            report.insert(slot.name.clone(), json!({"loaded": true, "warmed_up": slot.warmed.load(Ordering::Acquire)}));
        }
        Envelope::ok(json!({"backends": report})).traced(None)
    }

    /// A worker's state: its sessions and what tools exist.
    pub fn status(&self, worker_id: &str) -> Envelope {
        if let Err(e) = check_worker_id(worker_id) {
            return Envelope::error(&e).traced(None);
        }
        let sessions = self.inner.sessions.read().worker(worker_id);
        let mut by_type = Map::new();
        for s in &sessions {
            by_type.insert(
                s.resource.clone(),
                json!({
                    "session_id": s.id,
                    "status": s.status_name(),
                    "created_at": rfc3339(s.created_at),
                    "last_activity": rfc3339(s.last_activity()),
                }),
            );
        }
        let active: Vec<&String> = sessions.iter().map(|s| &s.resource).collect();
        Envelope::ok(json!({
            "worker_id": worker_id,
            "active_resources": active,
            "sessions": by_type,
            "tools_available": self.inner.tools.len(),
        }))
        .traced(None)
    }

    /// Engine-wide counts: tools, workers with sessions, sessions (temporary ones included).
    pub fn overview(&self) -> Value {
        let table = self.inner.sessions.read();
        json!({
            "tools_count": self.inner.tools.len(),
            "active_workers": table.workers(),
            "total_sessions": table.len(),
            "live_sessions": self.inner.live_sessions.load(Ordering::Acquire),
        })
    }

    /// Whether [`Engine::shutdown`] has begun.
    pub fn is_stopping(&self) -> bool {
        self.inner.stopping.load(Ordering::Acquire)
    }

    /// Stops taking calls, lets running ones finish (or cancels them with `force`), destroys
    /// every session if asked, and shuts the backends down. Answers `sessions_cleaned`.
    /// Sessions are always released by the time the engine is dropped.
    pub async fn shutdown(&self, force: bool, cleanup_sessions: bool) -> Envelope {
        let stopped = self.stop(force, cleanup_sessions).await;
        let mut data = json!({ "sessions_cleaned": stopped.sessions_cleaned });
        if stopped.already_stopping {
            data["already_stopping"] = json!(true);
        }
        Envelope::ok(data).traced(None)
    }

    /// Stops the engine: refuses new calls (5002), waits for running ones (cancels them with
    /// `force`), destroys every session (with `cleanup_sessions` or `force`), shuts the backends
    /// down.
    pub async fn stop(&self, force: bool, cleanup_sessions: bool) -> Stopped {
        let inner = &*self.inner;
        if inner.stopping.swap(true, Ordering::AcqRel) {
            return Stopped { sessions_cleaned: 0, already_stopping: true };
        }
        if force {
            inner.cancel.send_replace(true);
        }
        loop {
            let idle = inner.idle.notified();
            if inner.inflight.load(Ordering::Acquire) == 0 {
                break;
            }
            idle.await;
        }
        let mut cleaned = 0;
        if cleanup_sessions || force {
            let all = inner.sessions.read().all();
            for s in &all {
                self.destroy(s).await;
            }
            cleaned = all.len();
        }
        for slot in &inner.slots {
            let backend = &slot.backend;
            let _ = catching(
                Box::pin(async move {
                    backend.shutdown().await;
                    Ok(())
                }),
                "backend shutdown",
            )
            .await;
        }
        inner.stopped.store(true, Ordering::Release);
        if let Some(reaper) = inner.reaper.lock().take() {
            reaper.abort();
        }
        if inner.reap_orphans {
            let _ = tokio::task::spawn_blocking(crate::reaper::reap_orphans).await;
        }
        Stopped { sessions_cleaned: cleaned, already_stopping: false }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(reaper) = self.reaper.get_mut().take() {
            reaper.abort();
        }
        // Session states release their processes in their own Drop.
    }
}

/// Several answers given as one: a batch's actions, or several creates or destroys.
#[derive(Debug)]
pub struct Summary {
    /// Each answer, in order (fewer than `total` when a batch stopped at a failure).
    pub results: Vec<Envelope>,
    /// How many were asked for.
    pub total: usize,
}

impl Summary {
    /// How many succeeded.
    pub fn succeeded(&self) -> usize {
        self.results.iter().filter(|e| e.is_ok()).count()
    }

    /// Whether some succeeded and some failed (HTTP 207).
    pub fn is_partial(&self) -> bool {
        let ok = self.succeeded();
        ok > 0 && ok < self.results.len()
    }

    /// Code 0 if all succeeded, else the first failure's code, and how many failed.
    fn envelope(&self, data: Value, what: &str) -> Envelope {
        let mut envelope = Envelope::ok(data);
        if let Some(first) = self.results.iter().find(|e| !e.is_ok()) {
            envelope.code = first.code;
            envelope.message = format!("{} of {} {what}failed", self.results.len() - self.succeeded(), self.total);
        }
        envelope
    }

    /// A batch's answer: every action's envelope, `total`, `executed`, `success_count`.
    pub fn batch_envelope(self, start: Instant, trace_id: Option<String>) -> Envelope {
        let data = json!({
            "total": self.total,
            "executed": self.results.len(),
            "success_count": self.succeeded(),
        });
        let mut envelope = self.envelope(data, "actions ");
        envelope.data["results"] = json!(self.results);
        envelope.meta.execution_time_ms = start.elapsed().as_secs_f64() * 1000.0;
        envelope.traced(trace_id)
    }

    /// Several creates or destroys: `sessions` (each one's data, or its code, message and data
    /// when it failed), `total`, `success_count`.
    pub fn sessions_envelope(self) -> Envelope {
        let mut envelope = self.envelope(json!({"total": self.total, "success_count": self.succeeded()}), "");
        let sessions: Vec<Value> = self
            .results
            .into_iter()
            .map(|e| if e.is_ok() { e.data } else { json!({"code": e.code, "message": e.message, "data": e.data}) })
            .collect();
        envelope.data["sessions"] = json!(sessions);
        envelope.traced(None)
    }
}

/// What [`Engine::stop`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped {
    /// Sessions destroyed.
    pub sessions_cleaned: usize,
    /// Whether a shutdown had already begun (this call then did nothing).
    pub already_stopping: bool,
}
