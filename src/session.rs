//! Sessions: their key, id, lifetime and the table that holds them (docs/protocol.md §5).
//!
//! A session is one backend state owned by one worker for one resource type. Its state sits behind
//! a FIFO async mutex, so calls on one session run one at a time in arrival order while calls on
//! different sessions run in parallel. A session also carries a signal raised when it is
//! destroyed, which the call running in it races, so that destroy does not wait for the call.
//! This module keeps the bookkeeping (ids, times, the table); what the state is and how it is
//! made or released is the backend's, and when it is released is the engine's.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::backend::SessionState;

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// The backend is still making it.
    Creating,
    /// Ready for calls.
    Active,
    /// Creation failed, or it was destroyed.
    Gone,
}

struct Times {
    last_activity: Instant,
    expires: Instant,
}

/// One worker's session of one resource type.
pub(crate) struct Session {
    pub id: String,
    pub name: String,
    pub worker: String,
    pub resource: String,
    pub backend: usize,
    pub created_at: SystemTime,
    /// `created_at` on the monotonic clock: activity is kept as an `Instant` (one clock read per
    /// call) and turned into wall time from this pair when listed.
    created: Instant,
    times: Mutex<Times>,
    status: Mutex<Status>,
    settled: Notify,
    /// Set once, when the session is destroyed: its running call is abandoned.
    is_destroyed: AtomicBool,
    /// Wakes the call racing `is_destroyed`.
    destroyed: Notify,
    /// The backend's state; `None` once destroyed or if creation failed.
    pub state: Arc<tokio::sync::Mutex<Option<SessionState>>>,
}

impl Session {
    pub fn new(id: String, name: String, worker: &str, resource: &str, backend: usize, ttl: Duration) -> Self {
        let now = Instant::now();
        Session {
            id,
            name,
            worker: worker.to_owned(),
            resource: resource.to_owned(),
            backend,
            created_at: SystemTime::now(),
            created: now,
            times: Mutex::new(Times { last_activity: now, expires: now + ttl }),
            status: Mutex::new(Status::Creating),
            settled: Notify::new(),
            is_destroyed: AtomicBool::new(false),
            destroyed: Notify::new(),
            state: Arc::new(tokio::sync::Mutex::new(None)),
        }
    }

    /// Records activity and extends the session to now + `ttl`.
    pub fn touch(&self, ttl: Duration) {
        self.touch_at(Instant::now(), ttl);
    }

    /// [`Session::touch`] with the time already read.
    pub fn touch_at(&self, now: Instant, ttl: Duration) {
        let mut t = self.times.lock();
        t.last_activity = now;
        t.expires = now + ttl;
    }

    pub fn expired(&self, now: Instant) -> bool {
        self.times.lock().expires <= now
    }

    pub fn status(&self) -> Status {
        *self.status.lock()
    }

    /// The status as the wire names it.
    pub fn status_name(&self) -> &'static str {
        match self.status() {
            Status::Creating => "creating",
            Status::Active => "active",
            Status::Gone => "closed",
        }
    }

    pub fn settle(&self, status: Status) {
        *self.status.lock() = status;
        self.settled.notify_waiters();
    }

    /// Raises the destroyed signal: the call running in the session is abandoned, and calls
    /// waiting for it do not start.
    pub fn mark_destroyed(&self) {
        self.is_destroyed.store(true, Ordering::Release);
        self.destroyed.notify_waiters();
    }

    pub fn is_destroyed(&self) -> bool {
        self.is_destroyed.load(Ordering::Acquire)
    }

    /// Resolves once the session is destroyed.
    pub async fn destroyed(&self) {
        let notified = self.destroyed.notified();
        tokio::pin!(notified);
        // Registered before the flag is read, so a destroy in between is not missed.
        notified.as_mut().enable();
        if !self.is_destroyed() {
            notified.await;
        }
    }

    /// Waits until the session is gone (its state released).
    pub async fn gone(&self) {
        loop {
            let notified = self.settled.notified();
            if self.status() == Status::Gone {
                return;
            }
            notified.await;
        }
    }

    /// Waits until creation has succeeded or failed; true when the session is active.
    pub async fn settled(&self) -> bool {
        loop {
            let notified = self.settled.notified();
            match self.status() {
                Status::Creating => notified.await,
                s => return s == Status::Active,
            }
        }
    }

    pub fn expires_at(&self) -> SystemTime {
        let t = self.times.lock();
        let left = t.expires.saturating_duration_since(Instant::now());
        SystemTime::now() + left
    }

    pub fn last_activity(&self) -> SystemTime {
        self.created_at + self.times.lock().last_activity.saturating_duration_since(self.created)
    }
}

/// All sessions, by worker then resource type (looked up without allocating a key).
#[derive(Default)]
pub(crate) struct Table {
    by_worker: HashMap<String, HashMap<String, Arc<Session>>>,
    len: usize,
}

impl Table {
    pub fn get(&self, worker: &str, resource: &str) -> Option<&Arc<Session>> {
        self.by_worker.get(worker)?.get(resource)
    }

    pub fn insert(&mut self, session: Arc<Session>) {
        let slot = self.by_worker.entry(session.worker.clone()).or_default();
        if slot.insert(session.resource.clone(), session).is_none() {
            self.len += 1;
        }
    }

    /// Removes the session at its key if it is this very session.
    pub fn remove_exact(&mut self, session: &Arc<Session>) -> bool {
        let Some(slot) = self.by_worker.get_mut(&session.worker) else { return false };
        match slot.get(&session.resource) {
            Some(s) if Arc::ptr_eq(s, session) => {
                slot.remove(&session.resource);
                if slot.is_empty() {
                    self.by_worker.remove(&session.worker);
                }
                self.len -= 1;
                true
            }
            _ => false,
        }
    }

    pub fn worker(&self, worker: &str) -> Vec<Arc<Session>> {
        let mut v: Vec<_> = self.by_worker.get(worker).map(|m| m.values().cloned().collect()).unwrap_or_default();
        v.sort_by(|a, b| a.resource.cmp(&b.resource));
        v
    }

    pub fn worker_count(&self, worker: &str) -> usize {
        self.by_worker.get(worker).map_or(0, HashMap::len)
    }

    pub fn workers(&self) -> usize {
        self.by_worker.len()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn all(&self) -> Vec<Arc<Session>> {
        self.by_worker.values().flat_map(|m| m.values().cloned()).collect()
    }
}
