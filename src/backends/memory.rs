//! An in-memory backend for tests, benches and examples: no processes, only bookkeeping.
//!
//! It exercises every path of the engine (sessions, ordering, panics, timeouts, warm-up
//! failures, hidden tools) and counts what happened to it, so that tests can check the engine
//! from the outside. It is not registered by default.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::backend::{state_mut, Backend, CallContext, Scope, SessionState};
use crate::error::{Error, Result};
use crate::tool::{parse_call, tool_specs, ToolSpec};

/// The memory backend's tools.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(tag = "tool", content = "params", rename_all = "snake_case")]
enum Tool {
    /// does nothing
    Noop {},
    /// returns its parameter
    Echo {
        /// anything
        value: Option<String>,
    },
    /// appends a value to the session's log and returns the log
    Push {
        /// the value
        value: i64,
    },
    /// sleeps, then answers
    Sleep {
        /// milliseconds
        #[schemars(range(min = 0, max = 600_000))]
        ms: u64,
    },
    /// panics
    Panic {},
    /// increments a counter shared by all sessions
    Count {},
    /// a hidden tool
    #[schemars(extend("x-hidden" = true))]
    Secret {},
}

/// What happened to a [`MemoryBackend`], readable from outside.
#[derive(Debug, Default)]
pub struct Counters {
    /// Sessions created.
    pub created: AtomicUsize,
    /// Sessions destroyed.
    pub destroyed: AtomicUsize,
    /// Calls of `count`.
    pub counted: AtomicUsize,
    /// Warm-ups attempted.
    pub warmups: AtomicUsize,
    /// Backend shutdowns.
    pub shutdowns: AtomicUsize,
}

/// A backend whose sessions hold a list of integers.
#[derive(Debug)]
pub struct MemoryBackend {
    name: String,
    scope: Scope,
    failing_warmups: usize,
    counters: Arc<Counters>,
}

/// A memory session's state.
#[derive(Debug, Default)]
struct Log {
    values: Vec<i64>,
}

impl MemoryBackend {
    /// A session-scoped backend named `name`.
    pub fn new(name: &str) -> Self {
        MemoryBackend { name: name.into(), scope: Scope::Session, failing_warmups: 0, counters: Arc::default() }
    }

    /// The same, shared by all workers (no sessions).
    pub fn shared(name: &str) -> Self {
        MemoryBackend { scope: Scope::Shared, ..MemoryBackend::new(name) }
    }

    /// Fails its first `n` warm-ups.
    pub fn failing_warmups(mut self, n: usize) -> Self {
        self.failing_warmups = n;
        self
    }

    /// Its counters.
    pub fn counters(&self) -> Arc<Counters> {
        self.counters.clone()
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    fn name(&self) -> &str {
        &self.name
    }

    fn scope(&self) -> Scope {
        self.scope
    }

    fn tools(&self) -> Vec<ToolSpec> {
        tool_specs::<Tool>()
    }

    async fn warmup(&self) -> Result<()> {
        let n = self.counters.warmups.fetch_add(1, Ordering::AcqRel);
        if n < self.failing_warmups {
            return Err(Error::backend(format!("warm-up {} of {} fails on purpose", n + 1, self.failing_warmups)));
        }
        Ok(())
    }

    async fn create_session(&self, config: &Map<String, Value>) -> Result<SessionState> {
        if config.get("fail").and_then(Value::as_bool) == Some(true) {
            return Err(Error::backend("session creation fails on purpose"));
        }
        self.counters.created.fetch_add(1, Ordering::AcqRel);
        Ok(Box::new(Log::default()))
    }

    async fn destroy_session(&self, state: SessionState) {
        drop(state);
        self.counters.destroyed.fetch_add(1, Ordering::AcqRel);
    }

    async fn call(
        &self,
        tool: &str,
        params: Value,
        session: Option<&mut SessionState>,
        _ctx: &CallContext<'_>,
    ) -> Result<Value> {
        match parse_call::<Tool>(tool, params)? {
            Tool::Noop {} | Tool::Secret {} => Ok(Value::Object(Map::new())),
            Tool::Echo { value } => Ok(json!({ "value": value })),
            Tool::Push { value } => {
                let log: &mut Log = state_mut(session)?;
                log.values.push(value);
                Ok(json!({"values": log.values}))
            }
            Tool::Sleep { ms } => {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(json!({"slept_ms": ms}))
            }
            Tool::Panic {} => panic!("the panic tool panicked"),
            Tool::Count {} => Ok(json!({"count": self.counters.counted.fetch_add(1, Ordering::AcqRel) + 1})),
        }
    }

    async fn shutdown(&self) {
        self.counters.shutdowns.fetch_add(1, Ordering::AcqRel);
    }
}
