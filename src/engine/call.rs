//! The path of one call: resolve the name, check the parameters, warm the backend up, find or
//! make the session, then run the backend's `call` (in one place) with the caller's deadline,
//! panics caught, and the session's destroyed signal raced; wrap the outcome in the envelope.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use tracing::Instrument;

use crate::backend::{CallContext, Scope, SessionState};
use crate::error::{Error, Result};
use crate::protocol::{check_worker_id, new_trace_id, Envelope, ExecuteRequest, Meta};
use crate::session::{Session, Status};

use super::{Engine, Inner, Tool, GRACE};

/// Where a call runs; see [`Engine::place`].
enum Place {
    Bare,
    Session(Arc<Session>, tokio::sync::OwnedMutexGuard<Option<SessionState>>),
    Temporary(Temporary),
}

/// Counts a call in flight for graceful shutdown.
pub(super) struct InFlight<'a>(&'a Inner);

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
pub(super) struct Temporary {
    engine: Engine,
    session: Arc<Session>,
    state: Option<SessionState>,
}

impl Temporary {
    pub(super) fn new(engine: &Engine, session: Session) -> Self {
        let session = Arc::new(session);
        engine.inner.temporaries.lock().entry(session.worker.clone()).or_default().push(session.clone());
        Temporary { engine: engine.clone(), session, state: None }
    }

    pub(super) fn unlist(&self) {
        let mut all = self.engine.inner.temporaries.lock();
        if let Some(list) = all.get_mut(&self.session.worker) {
            list.retain(|s| !Arc::ptr_eq(s, &self.session));
            if list.is_empty() {
                all.remove(&self.session.worker);
            }
        }
    }

    pub(super) async fn finish(mut self) {
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
pub(super) struct CatchUnwind<F>(F);

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

pub(super) async fn catching<T>(fut: Pin<Box<dyn Future<Output = Result<T>> + Send + '_>>, what: &str) -> Result<T> {
    CatchUnwind(fut).await.unwrap_or_else(|panic| Err(Error::Internal(format!("{what} panicked: {panic}"))))
}

pub(super) fn timeout_param(timeout: Option<f64>) -> Result<Option<Duration>> {
    match timeout {
        None => Ok(None),
        Some(t) if t.is_finite() && t > 0.0 && t <= 86_400.0 => Ok(Some(Duration::from_secs_f64(t))),
        Some(t) => Err(Error::param("timeout", format!("expected seconds in (0, 86400], got {t}"))),
    }
}

impl Engine {
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
                let call = self.run(&req.worker_id, &req.action, req.params, req.timeout, start, &mut meta);
                // Entering a span nobody listens to on every poll is not free on this path.
                if span.is_disabled() {
                    call.await
                } else {
                    call.instrument(span.clone()).await
                }
            }
            Err(e) => Err(e),
        };
        let mut envelope = Envelope::from_result(result);
        // A call in a session has its end time read once, for the session's activity too.
        if meta.execution_time_ms == 0.0 {
            meta.execution_time_ms = start.elapsed().as_secs_f64() * 1000.0;
        }
        meta.trace_id = req.trace_id.unwrap_or_else(new_trace_id);
        envelope.meta = meta;
        crate::logging::call_ended(&span, &envelope);
        envelope
    }

    pub(super) fn enter(&self) -> Result<InFlight<'_>> {
        self.inner.inflight.fetch_add(1, Ordering::AcqRel);
        let guard = InFlight(&self.inner);
        if self.inner.stopping.load(Ordering::Acquire) {
            return Err(Error::ShuttingDown);
        }
        Ok(guard)
    }

    /// Resolves a tool name (docs/protocol.md §4) to its tool.
    pub(super) fn resolve(&self, name: &str) -> Result<Arc<Tool>> {
        let registry = self.inner.registry.read();
        if let Some(&i) = registry.aliases.get(name) {
            return Ok(registry.tools[i].clone());
        }
        match registry.short.get(name).map(Vec::as_slice) {
            Some([i]) => Ok(registry.tools[*i].clone()),
            Some(many) => Err(Error::AmbiguousTool {
                name: name.to_owned(),
                candidates: many.iter().map(|&i| registry.tools[i].full.clone()).collect(),
            }),
            None => Err(Error::ToolNotFound(name.to_owned())),
        }
    }

    /// The backend a tool name points at, when the name is unknown but its prefix is a resource.
    pub(super) fn prefix_slot(&self, name: &str) -> Option<usize> {
        let end = name.find([':', '.', '-', '_'])?;
        self.inner.by_resource.get(&name[..end]).copied()
    }

    pub(super) async fn run(
        &self,
        worker: &str,
        action: &str,
        params: Value,
        timeout: Option<f64>,
        start: Instant,
        meta: &mut Meta,
    ) -> Result<Value> {
        check_worker_id(worker)?;
        let tool = match self.resolve(action) {
            Ok(tool) => tool,
            Err(e) => match self.prefix_slot(action) {
                // A resource whose backend cannot start says so, rather than "no such tool"; one
                // that discovers its tools knows them once warm.
                Some(slot) if !self.inner.slots[slot].warmed.load(Ordering::Acquire) => {
                    self.ensure_warm(slot).await?;
                    self.resolve(action)?
                }
                _ => return Err(e),
            },
        };
        let tool = &*tool;
        let inner = &*self.inner;
        let slot = &inner.slots[tool.slot];
        meta.tool = Some(tool.spec.name.clone());
        meta.resource_type = Some(slot.name.clone());
        tool.spec.validate(&params)?;
        let timeout = timeout_param(timeout)?.or(inner.call_timeout);
        let deadline = timeout.map(|t| Instant::now() + t);
        self.ensure_warm(tool.slot).await?;
        let name = tool.spec.name.as_str();
        let mut place = self.place(worker, tool, deadline, meta).await?;
        let (state, session) = match &mut place {
            Place::Bare => (None, None),
            Place::Session(session, guard) => (guard.as_mut(), Some(&**session)),
            Place::Temporary(temp) => (temp.state.as_mut(), Some(&*temp.session)),
        };
        let ctx = CallContext {
            worker_id: worker,
            session_id: session.map(|s| s.id.as_str()),
            timeout: deadline.map_or(timeout, |d| Some(d.saturating_duration_since(Instant::now()))),
            desktop: session.and_then(|_| self.desktop_of(worker)),
        };
        let result = self.guarded(slot.backend.call(name, params, state, &ctx), deadline, name, session).await;
        match place {
            Place::Bare => {}
            Place::Session(session, _guard) => {
                let end = Instant::now();
                session.touch_at(end, inner.ttl);
                meta.execution_time_ms = (end - start).as_secs_f64() * 1000.0;
            }
            Place::Temporary(temp) => temp.finish().await,
        }
        result
    }

    /// Where a call runs: with no state (a shared backend, or a sessionless tool of a worker
    /// with no session), in the worker's session (its turn taken, within the deadline), or in a
    /// temporary session made for it.
    async fn place(&self, worker: &str, tool: &Tool, deadline: Option<Instant>, meta: &mut Meta) -> Result<Place> {
        let inner = &*self.inner;
        let slot = &inner.slots[tool.slot];
        if slot.scope == Scope::Shared {
            return Ok(Place::Bare);
        }
        let existing = inner.sessions.read().get(worker, &slot.name).cloned();
        if let Some(session) = existing {
            meta.session_id = Some(session.id.clone());
            let lock = session.state.clone().lock_owned();
            let guard = match deadline {
                None => lock.await,
                Some(d) => tokio::time::timeout_at(d.into(), lock).await.map_err(|_| {
                    Error::SessionBusy(format!("session {} is busy: the call waited past its timeout", session.id))
                })?,
            };
            if guard.is_none() || session.is_destroyed() {
                return Err(Error::Destroyed(session.id.clone()));
            }
            // Touched when the call ends: while it holds the lock, the reaper leaves it alone.
            return Ok(Place::Session(session, guard));
        }
        if tool.spec.sessionless {
            return Ok(Place::Bare);
        }
        let pooled = self.take_pooled(tool.slot, &Map::new());
        if pooled.is_none() {
            self.reserve(worker, None)?;
        }
        let id = self.session_id(&slot.name, worker);
        meta.session_id = Some(id.clone());
        meta.temporary_session = true;
        let mut temp =
            Temporary::new(self, Session::new(id.clone(), id.clone(), worker, &slot.name, tool.slot, inner.ttl));
        temp.session.settle(Status::Active);
        match self.start_state(tool.slot, &id, &Map::new(), pooled).await {
            Ok(state) => temp.state = Some(state),
            Err(e) => {
                inner.live_sessions.fetch_sub(1, Ordering::AcqRel);
                return Err(e);
            }
        }
        if temp.session.is_destroyed() {
            temp.finish().await;
            return Err(Error::Destroyed(id));
        }
        Ok(Place::Temporary(temp))
    }

    /// Runs a backend future with panics caught, the caller's deadline (plus a grace for the
    /// backend to report its own timeout), cancellation by a forced shutdown, and abandoned
    /// when `session` is destroyed (the future is dropped: the backend then releases the state).
    pub(super) async fn guarded<'a>(
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
    pub(super) async fn ensure_warm(&self, slot: usize) -> Result<()> {
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
                if slot.backend.discovers_tools() {
                    *self.inner.registry.write() = Arc::new(super::Registry::of(&self.inner.slots));
                }
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
}
