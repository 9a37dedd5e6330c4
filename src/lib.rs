//! # agentflow-sandbox
//!
//! The execution engine AI agents act through: a persistent shell per session on a real
//! pseudo-terminal (`bash`), a desktop per session on a real X11 display (`vm`), and retrieval over
//! a document collection shared by all workers (`rag`). The [`Engine`] runs them in-process, so an
//! agent binary calls tools with no network hop; with the `http` feature the same engine is served
//! over HTTP with the endpoints of the original AgentFlow sandbox server, so agents in Python (or
//! anything else) use it unchanged.
//!
//! ## Feature flags
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `bash` | yes | the `bash` backend (`agentflow-bash`: portable-pty) |
//! | `vm`   | yes | the `vm` backend (`agentflow-vm`: Xvfb, x11rb, PNG) |
//! | `rag`  | yes | the `rag` backend (`agentflow-rag`: tantivy BM25) |
//! | `http` | no  | [`http::router`], [`http::serve`] and the `agentflow-sandbox serve` binary (axum) |
//! | `client` | no | [`client::HttpServiceClient`], the Rust client of the HTTP API (hyper) |
//!
//! A backend whose feature is off is still known by name; calling it answers 2003 saying which
//! feature to enable, so the wire format does not depend on the build.
//!
//! ## Example
//!
//! ```
//! use agentflow_sandbox::{backends::memory::MemoryBackend, Engine};
//! use serde_json::json;
//! use std::sync::Arc;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let engine = Engine::builder().backend(Arc::new(MemoryBackend::new("mem"))).build()?;
//! let created = engine.create_session(serde_json::from_value(json!({
//!     "worker_id": "w1", "resource_type": "mem"}))?).await;
//! assert_eq!(created.data["session_id"], "mem_w1_001");
//! let answer = engine.execute("w1", "mem:push", json!({"value": 7})).await;
//! assert_eq!((answer.code, &answer.data["values"]), (0, &json!([7])));
//! let bad = engine.execute("w1", "push", json!({"value": "seven"})).await;
//! assert_eq!(bad.code, 1002); // names the field: "parameter 'value': expected an integer…"
//! engine.shutdown(false, true).await;
//! # Ok::<(), Box<dyn std::error::Error>>(()) }).unwrap();
//! ```
//!
//! See `ARCHITECTURE.md` for the map of the code, and `docs/protocol.md` (the wire protocol) and
//! `docs/backends.md` (the tools and their data) for the contract.

pub mod backend;
pub mod backends;
pub mod config;
mod engine;
pub mod error;
mod logging;
pub mod protocol;
mod reaper;
mod session;
pub mod tool;

#[cfg(feature = "client")]
pub mod client;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "mcp-server")]
pub mod mcp_server;

pub use backend::{Backend, CallContext, Scope, SessionState, SharedDesktop};
pub use config::Config;
pub use engine::{
    ClosedSession, Engine, EngineBuilder, Refreshed, SessionInfo, SessionSummary, Stopped, Summary, WarmupState,
    WorkerStatus,
};
pub use error::{Error, ErrorCode, Result};
pub use protocol::Envelope;
pub use tool::{Kind, Param, ToolSpec};

/// The README's example, compiled and run as a doctest so that it stays true.
#[cfg(all(doctest, feature = "bash"))]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
