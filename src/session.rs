//! Sessions: their key, id, lifetime and the table that holds them (docs/protocol.md §5).
//!
//! A session is one backend state owned by one worker for one resource type. Its state sits behind
//! a FIFO async mutex, so calls on one session run one at a time in arrival order while calls on
//! different sessions run in parallel. A session also carries a signal raised when it is
//! destroyed, which the call running in it races, so that destroy does not wait for the call.
//! This module keeps the bookkeeping (ids, times, the table); what the state is and how it is
//! made or released is the backend's, and when it is released is the engine's.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::sync::Notify;

use crate::backend::SessionState;
use crate::protocol::rfc3339;

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
    last_activity: SystemTime,
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
    times: Mutex<Times>,
    status: Mutex<Status>,
    settled: Notify,
    /// Raised once, when the session is destroyed: its running call is abandoned.
    destroyed: tokio::sync::watch::Sender<bool>,
    /// The same, read on every call without the channel's lock.
    is_destroyed: std::sync::atomic::AtomicBool,
    /// The backend's state; `None` once destroyed or if creation failed.
    pub state: Arc<tokio::sync::Mutex<Option<SessionState>>>,
}

impl Session {
    pub fn new(id: String, name: String, worker: &str, resource: &str, backend: usize, ttl: Duration) -> Self {
        Session {
            id,
            name,
            worker: worker.to_owned(),
            resource: resource.to_owned(),
            backend,
            created_at: SystemTime::now(),
            times: Mutex::new(Times { last_activity: SystemTime::now(), expires: Instant::now() + ttl }),
            status: Mutex::new(Status::Creating),
            settled: Notify::new(),
            destroyed: tokio::sync::watch::Sender::new(false),
            is_destroyed: std::sync::atomic::AtomicBool::new(false),
            state: Arc::new(tokio::sync::Mutex::new(None)),
        }
    }

    /// Records activity and extends the session to now + `ttl`.
    pub fn touch(&self, ttl: Duration) {
        let mut t = self.times.lock();
        t.last_activity = SystemTime::now();
        t.expires = Instant::now() + ttl;
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
        self.is_destroyed.store(true, std::sync::atomic::Ordering::Release);
        self.destroyed.send_replace(true);
    }

    pub fn is_destroyed(&self) -> bool {
        self.is_destroyed.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Resolves once the session is destroyed.
    pub async fn destroyed(&self) {
        let mut rx = self.destroyed.subscribe();
        let _ = rx.wait_for(|d| *d).await;
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
        self.times.lock().last_activity
    }

    /// The `/session/list` entry.
    pub fn describe(&self) -> Value {
        json!({
            "resource_type": self.resource,
            "session_id": self.id,
            "session_name": self.name,
            "status": self.status_name(),
            "created_at": rfc3339(self.created_at),
            "last_activity": rfc3339(self.last_activity()),
            "expires_at": rfc3339(self.expires_at()),
        })
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
