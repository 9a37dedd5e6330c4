//! Sessions' lifetimes: create (one per worker and resource type, inserted already locked so
//! concurrent callers wait for the outcome), destroy (abandoning the running call), expiry (the
//! reaper task), listing and status, and shutdown.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Map, Value};
use tracing::Instrument;

use crate::backend::{Backend, Scope, SessionState, SharedDesktop};
use crate::error::{Error, Result};
use crate::protocol::{check_worker_id, rfc3339, CreateSessionRequest, Envelope};
use crate::session::{Session, Status, Table};

use super::batch::Summary;
use super::call::catching;
use super::{Engine, Inner};

/// Destroys expired sessions, and reaps orphaned zombies, until the engine is gone or stopped.
///
/// Orphans are looked for only after a child of this process has ended (SIGCHLD), at most once a
/// tick: the look reads every process of the machine, and an idle server should not do that
/// every second (nor keep a blocking thread awake for it).
pub(super) async fn reap(engine: Weak<Inner>, tick: Duration, reap_orphans: bool) {
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    use tokio::signal::unix::{signal, SignalKind};
    // Without the signal (none can be registered), every tick looks.
    let mut child_ended = if reap_orphans { signal(SignalKind::child()).ok() } else { None };
    loop {
        interval.tick().await;
        let Some(inner) = engine.upgrade() else { return };
        if inner.stopped.load(Ordering::Acquire) {
            return;
        }
        let look = match &mut child_ended {
            Some(signal) => std::future::poll_fn(|cx| std::task::Poll::Ready(signal.poll_recv(cx).is_ready())).await,
            None => reap_orphans,
        };
        if look {
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

/// Has the backend release a session's state, a panic in it caught and logged.
pub(super) async fn release_state(backend: &dyn Backend, state: SessionState) {
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
}

impl Engine {
    pub(super) fn slot_of(&self, resource: &str) -> Result<usize> {
        self.inner.by_resource.get(resource).copied().ok_or_else(|| Error::ResourceNotFound(resource.to_owned()))
    }

    pub(super) fn session_id(&self, resource: &str, worker: &str) -> String {
        let n = self.inner.next_session.fetch_add(1, Ordering::Relaxed);
        format!("{resource}_{worker}_{n:03}")
    }

    /// Takes one place under the global cap (given up by an idle pooled session if need be),
    /// and under the worker's cap when `table` is given.
    pub(super) fn reserve(&self, worker: &str, table: Option<&Table>) -> Result<()> {
        if let Some(table) = table {
            self.check_worker_cap(worker, table)?;
        }
        let inner = &*self.inner;
        let live = inner.live_sessions.fetch_add(1, Ordering::AcqRel);
        if let Some(max) = inner.max_sessions.filter(|&m| live >= m) {
            inner.live_sessions.fetch_sub(1, Ordering::AcqRel);
            // A place an idle pooled session holds is given up to a session someone asked for.
            if !worker.is_empty() && self.give_up_pooled() {
                return Ok(());
            }
            return Err(Error::Unavailable(format!("max_sessions reached: {max} sessions are live")));
        }
        Ok(())
    }

    /// Whether the worker may have one more session.
    fn check_worker_cap(&self, worker: &str, table: &Table) -> Result<()> {
        match self.inner.max_sessions_per_worker {
            Some(max) if table.worker_count(worker) >= max => Err(Error::Unavailable(format!(
                "max_sessions_per_worker reached: worker '{worker}' has {max} sessions"
            ))),
            _ => Ok(()),
        }
    }

    /// The state of session `id` of `slot` with `config`: from the warm pool (`pooled`, already
    /// holding its place under the cap, adopted to `config`) or freshly started. A pooled
    /// session the backend cannot adopt is destroyed and a fresh one started in its place.
    pub(super) async fn start_state(
        &self,
        slot: usize,
        id: &str,
        config: &Map<String, Value>,
        pooled: Option<SessionState>,
    ) -> Result<SessionState> {
        let backend = &self.inner.slots[slot].backend;
        if let Some(mut state) = pooled {
            match catching(backend.adopt(&mut state, config), "pooled session adoption").await {
                Ok(()) => return Ok(state),
                Err(e) => {
                    tracing::debug!("a pooled session could not be adopted ({e}): starting a fresh one");
                    self.discard(slot, state);
                }
            }
        }
        catching(backend.create_named_session(id, config), "session creation").await
    }

    /// An idle pooled session of `slot` that can serve `config`, if there is one.
    pub(super) fn take_pooled(&self, slot: usize, config: &Map<String, Value>) -> Option<SessionState> {
        let s = &self.inner.slots[slot];
        s.pool.as_ref().filter(|_| s.backend.pool_serves(config))?.take()
    }

    /// Creates a worker's session of a resource type, or returns the one it has.
    pub async fn create_session(&self, req: CreateSessionRequest) -> Envelope {
        let start = Instant::now();
        let resource = req.resource_type.clone();
        let span = crate::logging::session_span("create", &req.worker_id, &resource);
        let result = self.open_session(req).instrument(span.clone()).await;
        let envelope = self.session_envelope(result, start, &resource);
        crate::logging::session_ended(&span, &envelope);
        envelope
    }

    /// [`Engine::create_session`], typed: what the session is.
    pub async fn open_session(&self, req: CreateSessionRequest) -> Result<SessionInfo> {
        let _g = self.enter()?;
        self.create(req).await
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

    pub(super) fn session_envelope<T: Serialize + SessionIdentified>(
        &self,
        result: Result<T>,
        start: Instant,
        resource: &str,
    ) -> Envelope {
        let session_id = result.as_ref().ok().and_then(|r| r.session_id().map(str::to_owned));
        let mut envelope = Envelope::from_result(result.map(|r| json!(r)));
        envelope.meta.resource_type = Some(resource.to_owned());
        envelope.meta.session_id = session_id;
        envelope.meta.execution_time_ms = start.elapsed().as_secs_f64() * 1000.0;
        envelope.traced(None)
    }

    pub(super) async fn create(&self, req: CreateSessionRequest) -> Result<SessionInfo> {
        let slot_index = self.slot_of(&req.resource_type)?;
        let slot = &self.inner.slots[slot_index];
        if slot.scope == Scope::Shared {
            return Ok(SessionInfo {
                session_id: None,
                session_name: None,
                session_status: "shared",
                resource_type: slot.name.clone(),
            });
        }
        self.ensure_warm(slot_index).await?;
        let worker = req.worker_id.as_str();
        check_worker_id(worker)?;
        let config = req.config.unwrap_or_default();
        // Taken before the table's lock (which no await may hold); put back if not used.
        let mut pooled = self.take_pooled(slot_index, &config);
        let put_back = |pooled: Option<SessionState>| {
            if let (Some(state), Some(pool)) = (pooled, &slot.pool) {
                pool.put_back(state);
            }
        };
        let (session, guard) = {
            let mut table = self.inner.sessions.write();
            match table.get(worker, &slot.name) {
                Some(s) => {
                    put_back(pooled.take());
                    (s.clone(), None)
                }
                None => {
                    // A pooled session already holds its place under the global cap.
                    let placed = match pooled {
                        Some(_) => self.check_worker_cap(worker, &table),
                        None => self.reserve(worker, Some(&table)),
                    };
                    if let Err(e) = placed {
                        put_back(pooled.take());
                        return Err(e);
                    }
                    let id = self.session_id(&slot.name, worker);
                    let name = req.custom_name.clone().unwrap_or_else(|| id.clone());
                    let s = Arc::new(Session::new(id, name, worker, &slot.name, slot_index, self.inner.ttl));
                    let guard = s.state.clone().try_lock_owned().expect("a new session's lock is free");
                    table.insert(s.clone());
                    (s, Some(guard))
                }
            }
        };
        let describe = |s: &Session| SessionInfo {
            session_id: Some(s.id.clone()),
            session_name: Some(s.name.clone()),
            session_status: "active",
            resource_type: s.resource.clone(),
        };
        let Some(mut guard) = guard else {
            return if session.settled().await {
                Ok(describe(&session))
            } else {
                Err(Error::Session(format!("session {} failed to start; try again", session.id)))
            };
        };
        match self.start_state(slot_index, &session.id, &config, pooled).await {
            Ok(state) => {
                if let Some(desktop) = slot.backend.offers(&state) {
                    self.offer_desktop(worker, &session.id, desktop);
                }
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
        let result = self.close_session(worker_id, resource_type).instrument(span.clone()).await;
        let envelope = self.session_envelope(result, start, resource_type);
        crate::logging::session_ended(&span, &envelope);
        envelope
    }

    /// [`Engine::destroy_session`], typed: which session was destroyed.
    pub async fn close_session(&self, worker_id: &str, resource_type: &str) -> Result<ClosedSession> {
        check_worker_id(worker_id)?;
        self.slot_of(resource_type)?;
        let session = self.inner.sessions.read().get(worker_id, resource_type).cloned();
        if let Some(session) = session {
            self.destroy(&session).await;
            return Ok(ClosedSession {
                session_id: session.id.clone(),
                resource_type: session.resource.clone(),
                temporary: false,
            });
        }
        // Only temporary sessions, of calls running now: they are abandoned.
        let temporaries = self.temporaries(worker_id, Some(resource_type));
        let Some(first) = temporaries.first() else {
            return Err(Error::Session(format!("worker '{worker_id}' has no '{resource_type}' session")));
        };
        let id = first.id.clone();
        self.destroy_temporaries(temporaries).await;
        Ok(ClosedSession { session_id: id, resource_type: resource_type.to_owned(), temporary: true })
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
    pub(super) async fn destroy(&self, session: &Arc<Session>) {
        if self.inner.sessions.write().remove_exact(session) {
            session.mark_destroyed();
            let guard = session.state.clone().lock_owned().await;
            self.release(session, guard).await;
        }
    }

    /// The temporary sessions of a worker's running calls (of one resource type, or all).
    pub(super) fn temporaries(&self, worker: &str, resource: Option<&str>) -> Vec<Arc<Session>> {
        let all = self.inner.temporaries.lock();
        let list = all.get(worker).map(Vec::as_slice).unwrap_or_default();
        list.iter().filter(|s| resource.is_none_or(|r| s.resource == r)).cloned().collect()
    }

    /// Abandons the calls of temporary sessions and waits until each is released.
    pub(super) async fn destroy_temporaries(&self, sessions: Vec<Arc<Session>>) {
        for s in &sessions {
            s.mark_destroyed();
        }
        for s in &sessions {
            s.gone().await;
        }
    }

    pub(super) async fn release(
        &self,
        session: &Session,
        mut guard: tokio::sync::OwnedMutexGuard<Option<SessionState>>,
    ) {
        session.settle(Status::Gone);
        self.withdraw_desktop(session);
        if let Some(state) = guard.take() {
            self.destroy_state(session.backend, state).await;
        }
    }

    /// Makes `desktop` the one the worker's sessions share, until the session `session_id`
    /// goes.
    fn offer_desktop(&self, worker: &str, session_id: &str, desktop: SharedDesktop) {
        let mut desktops = self.inner.desktops.write();
        if desktops.insert(worker.to_owned(), (session_id.to_owned(), Arc::new(desktop))).is_none() {
            self.inner.desktops_live.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Forgets the desktop `session` offered, if it offered one.
    fn withdraw_desktop(&self, session: &Session) {
        if self.inner.desktops_live.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut desktops = self.inner.desktops.write();
        if desktops.get(&session.worker).is_some_and(|(id, _)| *id == session.id) {
            desktops.remove(&session.worker);
            self.inner.desktops_live.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// The desktop the worker's sessions share, if any.
    pub(super) fn desktop_of(&self, worker: &str) -> Option<Arc<SharedDesktop>> {
        if self.inner.desktops_live.load(Ordering::Acquire) == 0 {
            return None;
        }
        self.inner.desktops.read().get(worker).map(|(_, d)| d.clone())
    }

    pub(super) async fn destroy_state(&self, slot: usize, state: SessionState) {
        release_state(&*self.inner.slots[slot].backend, state).await;
        self.inner.live_sessions.fetch_sub(1, Ordering::AcqRel);
        self.wake_fillers();
    }

    /// A worker's sessions (`data.sessions`, `total`).
    pub async fn list_sessions(&self, worker_id: &str) -> Envelope {
        let result = self
            .sessions_of(worker_id)
            .map(|sessions| json!({"total": sessions.len(), "sessions": sessions, "worker_id": worker_id}));
        Envelope::from_result(result).traced(None)
    }

    /// [`Engine::list_sessions`], typed.
    pub fn sessions_of(&self, worker_id: &str) -> Result<Vec<SessionSummary>> {
        check_worker_id(worker_id)?;
        Ok(self.inner.sessions.read().worker(worker_id).iter().map(|s| SessionSummary::of(s)).collect())
    }

    /// Extends a worker's session of `resource_type` (or all of its sessions) to now + TTL.
    pub async fn refresh_sessions(&self, worker_id: &str, resource_type: Option<&str>) -> Envelope {
        let result = self.refresh(worker_id, resource_type).map(|refreshed| json!({"refreshed": refreshed}));
        Envelope::from_result(result).traced(None)
    }

    /// [`Engine::refresh_sessions`], typed: each session refreshed.
    pub fn refresh(&self, worker_id: &str, resource_type: Option<&str>) -> Result<Vec<Refreshed>> {
        check_worker_id(worker_id)?;
        let sessions = match resource_type {
            Some(r) => {
                self.slot_of(r)?;
                let s = self.inner.sessions.read().get(worker_id, r).cloned();
                vec![s.ok_or_else(|| Error::Session(format!("worker '{worker_id}' has no '{r}' session")))?]
            }
            None => self.inner.sessions.read().worker(worker_id),
        };
        Ok(sessions
            .iter()
            .map(|s| {
                s.touch(self.inner.ttl);
                Refreshed {
                    resource_type: s.resource.clone(),
                    session_id: s.id.clone(),
                    expires_at: rfc3339(s.expires_at()),
                }
            })
            .collect())
    }

    /// A worker's state: its sessions and what tools exist.
    pub fn status(&self, worker_id: &str) -> Envelope {
        Envelope::from_result(self.worker_status(worker_id).map(|s| json!(s))).traced(None)
    }

    /// [`Engine::status`], typed.
    pub fn worker_status(&self, worker_id: &str) -> Result<WorkerStatus> {
        check_worker_id(worker_id)?;
        let sessions = self.inner.sessions.read().worker(worker_id);
        Ok(WorkerStatus {
            worker_id: worker_id.to_owned(),
            active_resources: sessions.iter().map(|s| s.resource.clone()).collect(),
            sessions: sessions.iter().map(|s| (s.resource.clone(), SessionSummary::of(s))).collect(),
            tools_available: self.registry().tools.len(),
        })
    }

    /// The resource types a worker has sessions of, in name order (the worker id already
    /// checked by the caller).
    pub fn active_resources(&self, worker_id: &str) -> Vec<String> {
        self.inner.sessions.read().worker(worker_id).iter().map(|s| s.resource.clone()).collect()
    }

    /// Stops taking calls, lets running ones finish (or cancels them with `force`), destroys
    /// every session if asked, and shuts the backends down. Answers `sessions_cleaned`.
    /// Sessions are always released by the time the engine is dropped.
    pub async fn shutdown(&self, force: bool, cleanup_sessions: bool) -> Envelope {
        self.stop(force, cleanup_sessions).await.envelope()
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
        // The fillers see `stopping` and end; what they were starting is waited for.
        self.drain_pools().await;
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

/// What [`Engine::stop`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stopped {
    /// Sessions destroyed.
    pub sessions_cleaned: usize,
    /// Whether a shutdown had already begun (this call then did nothing).
    pub already_stopping: bool,
}

impl Stopped {
    /// The answer of `/shutdown`: `sessions_cleaned`, and `already_stopping` when it was.
    pub fn envelope(self) -> Envelope {
        let mut data = json!({ "sessions_cleaned": self.sessions_cleaned });
        if self.already_stopping {
            data["already_stopping"] = json!(true);
        }
        Envelope::ok(data).traced(None)
    }
}

/// A session as `/session/create` describes it (its `data`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionInfo {
    /// Its id; `None` for a shared backend, which has no sessions.
    pub session_id: Option<String>,
    /// Its name (`custom_name`, else its id).
    pub session_name: Option<String>,
    /// `"active"`, or `"shared"` for a shared backend.
    pub session_status: &'static str,
    /// Its backend.
    pub resource_type: String,
}

/// A session as `/session/list` and `/status` describe it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionSummary {
    /// Its backend.
    pub resource_type: String,
    /// Its id.
    pub session_id: String,
    /// Its name (`custom_name`, else its id).
    pub session_name: String,
    /// `"creating"`, `"active"` or `"closed"`.
    pub status: &'static str,
    /// When it was made, RFC 3339 UTC.
    pub created_at: String,
    /// Its last call's end (or its refresh), RFC 3339 UTC.
    pub last_activity: String,
    /// When it expires unless used, RFC 3339 UTC.
    pub expires_at: String,
}

impl SessionSummary {
    fn of(s: &Session) -> Self {
        SessionSummary {
            resource_type: s.resource.clone(),
            session_id: s.id.clone(),
            session_name: s.name.clone(),
            status: s.status_name(),
            created_at: rfc3339(s.created_at),
            last_activity: rfc3339(s.last_activity()),
            expires_at: rfc3339(s.expires_at()),
        }
    }
}

/// A worker's state (the `data` of `/status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkerStatus {
    /// The worker.
    pub worker_id: String,
    /// The resource types it has sessions of, in name order.
    pub active_resources: Vec<String>,
    /// Its sessions by resource type.
    pub sessions: BTreeMap<String, SessionSummary>,
    /// How many tools the engine has.
    pub tools_available: usize,
}

/// A refreshed session (an entry of `data.refreshed` of `/session/refresh`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refreshed {
    /// Its backend.
    pub resource_type: String,
    /// Its id.
    pub session_id: String,
    /// Its new expiry, RFC 3339 UTC.
    pub expires_at: String,
}

/// A destroyed session (the `data` of `/session/destroy`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ClosedSession {
    /// Its id.
    pub session_id: String,
    /// Its backend.
    pub resource_type: String,
    /// Whether it was the temporary session of a running call.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub temporary: bool,
}

/// What names a session in an answer's `meta`.
pub(super) trait SessionIdentified {
    fn session_id(&self) -> Option<&str>;
}

impl SessionIdentified for SessionInfo {
    fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }
}

impl SessionIdentified for ClosedSession {
    fn session_id(&self) -> Option<&str> {
        Some(&self.session_id)
    }
}
