//! Warm pools: sessions of a backend started ahead with its default config, handed out on
//! create (through [`Backend::adopt`](crate::Backend::adopt), which applies the session's own
//! keys) and replenished in the background.
//!
//! A pooled session is a live session: it holds a place under `max_sessions` from the moment it
//! is started, and gives that place to the session it becomes (so taking one never fails for
//! want of room, and a full engine never holds more processes than its cap). When a fresh
//! session needs a place that only idle pooled ones hold, one of them is given up. A pooled
//! session is taken by one create only (popped under a lock), belongs to nobody until then, and
//! is destroyed with the engine. Fillers (two per pool, so that one slow start does not stall
//! the pool) start sessions while the pool is short; they wait, holding no strong reference to
//! the engine, while it is full.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::Map;
use tokio::sync::Notify;

use crate::backend::SessionState;

use super::call::catching;
use super::sessions::release_state;
use super::{Engine, Inner};

/// Filler tasks per pool.
const FILLERS: usize = 2;

/// How long a filler waits after a failed start (the backend failing, or no room under
/// `max_sessions`) before it tries again.
const RETRY: Duration = Duration::from_secs(1);

/// One backend's pool.
pub(super) struct Pool {
    /// How many idle sessions it keeps.
    size: usize,
    idle: Mutex<Vec<SessionState>>,
    /// Sessions being started for it now.
    starting: AtomicUsize,
    /// Raised when a session is taken (or the engine stops): the fillers look again.
    wanted: Arc<Notify>,
}

impl Pool {
    pub(super) fn new(size: usize) -> Self {
        Pool { size, idle: Mutex::new(Vec::new()), starting: AtomicUsize::new(0), wanted: Arc::new(Notify::new()) }
    }

    /// An idle session, if there is one; its place under `max_sessions` goes with it.
    pub(super) fn take(&self) -> Option<SessionState> {
        let state = self.idle.lock().pop();
        if state.is_some() {
            // The fillers wait with their wake-up registered before they looked.
            self.wanted.notify_waiters();
        }
        state
    }

    /// Puts back a session taken but not used (its place under `max_sessions` with it).
    pub(super) fn put_back(&self, state: SessionState) {
        self.idle.lock().push(state);
    }

    /// How many sessions are idle in it.
    pub(super) fn idle(&self) -> usize {
        self.idle.lock().len()
    }

    /// Takes a place for one more session to start, if the pool is short of its size.
    fn claim(&self) -> bool {
        let idle = self.idle.lock();
        let starting = self.starting.load(Ordering::Acquire);
        if idle.len() + starting >= self.size {
            return false;
        }
        self.starting.fetch_add(1, Ordering::AcqRel);
        true
    }
}

/// Starts the fillers of every pooled backend.
pub(super) fn start(inner: &Arc<Inner>, runtime: &tokio::runtime::Handle) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for (slot, s) in inner.slots.iter().enumerate() {
        if s.pool.is_some() {
            for _ in 0..FILLERS {
                tasks.push(runtime.spawn(fill(Arc::downgrade(inner), slot)));
            }
        }
    }
    tasks
}

/// Keeps one backend's pool full until the engine stops or is dropped.
async fn fill(engine: Weak<Inner>, slot: usize) {
    loop {
        let Some(inner) = engine.upgrade() else { return };
        if inner.stopping.load(Ordering::Acquire) {
            return;
        }
        let pool = inner.slots[slot].pool.as_ref().expect("fillers run for pooled backends");
        let wanted = pool.wanted.clone();
        let notified = wanted.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if !pool.claim() {
            drop(inner);
            notified.await;
            continue;
        }
        let engine = Engine { inner };
        let started = engine.start_pooled(slot).await;
        let pool = engine.inner.slots[slot].pool.as_ref().expect("a pooled backend");
        pool.starting.fetch_sub(1, Ordering::AcqRel);
        if !started {
            drop(engine);
            tokio::time::sleep(RETRY).await;
        }
    }
}

impl Engine {
    /// Starts one session for `slot`'s pool; false when it could not (no room, or the backend
    /// failed: said in the log).
    async fn start_pooled(&self, slot: usize) -> bool {
        let inner = &*self.inner;
        if self.reserve("", None).is_err() {
            return false;
        }
        if let Err(e) = self.ensure_warm(slot).await {
            inner.live_sessions.fetch_sub(1, Ordering::AcqRel);
            tracing::warn!(backend = %inner.slots[slot].name, "cannot fill the warm pool: {e}");
            return false;
        }
        let s = &inner.slots[slot];
        match catching(s.backend.create_session(&Map::new()), "pooled session creation").await {
            Ok(state) if inner.stopping.load(Ordering::Acquire) => {
                self.destroy_state(slot, state).await;
                false
            }
            Ok(state) => {
                s.pool.as_ref().expect("a pooled backend").idle.lock().push(state);
                true
            }
            Err(e) => {
                inner.live_sessions.fetch_sub(1, Ordering::AcqRel);
                tracing::warn!(backend = %s.name, "cannot fill the warm pool: {e}");
                false
            }
        }
    }

    /// Gives up one idle pooled session, of any backend, so that its place under
    /// `max_sessions` goes to a session being created; whether there was one. It is destroyed
    /// in the background, and not replaced (its place is taken).
    pub(super) fn give_up_pooled(&self) -> bool {
        for (slot, s) in self.inner.slots.iter().enumerate() {
            if let Some(state) = s.pool.as_ref().and_then(|p| p.idle.lock().pop()) {
                self.discard(slot, state);
                // Its fillers look again (and find no room until a session ends).
                self.wake_fillers();
                return true;
            }
        }
        false
    }

    /// Wakes every pool's fillers: a place under `max_sessions` may have been freed.
    pub(super) fn wake_fillers(&self) {
        for pool in self.inner.slots.iter().filter_map(|s| s.pool.as_ref()) {
            pool.wanted.notify_waiters();
        }
    }

    /// Destroys a session's state in the background, leaving its place under `max_sessions`
    /// to whoever took it over.
    pub(super) fn discard(&self, slot: usize, state: SessionState) {
        let backend = self.inner.slots[slot].backend.clone();
        tokio::spawn(async move { release_state(&*backend, state).await });
    }

    /// Destroys every idle pooled session, waiting (a bounded time) for those being started.
    pub(super) async fn drain_pools(&self) {
        let inner = &*self.inner;
        for (slot, s) in inner.slots.iter().enumerate() {
            let Some(pool) = &s.pool else { continue };
            pool.wanted.notify_waiters();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            loop {
                let idle: Vec<SessionState> = std::mem::take(&mut *pool.idle.lock());
                for state in idle {
                    self.destroy_state(slot, state).await;
                }
                if pool.starting.load(Ordering::Acquire) == 0 || tokio::time::Instant::now() > deadline {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}
