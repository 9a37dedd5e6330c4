//! The Rust client of the HTTP API and the [`Sandbox`] facade (feature `client`).
//!
//! - [`HttpServiceClient`] / [`HttpClientConfig`] (seed 000): one method per endpoint, the
//!   `X-Worker-ID` and `Authorization: Bearer` headers, a client-side timeout, retries that never
//!   run a tool twice, an optional heartbeat.
//! - [`Sandbox`] / [`SandboxConfig`] (seed 001): the same methods and the same [`Envelope`]s over an
//!   in-process [`Engine`](crate::Engine) or over HTTP; it can start the server binary itself
//!   (`auto_start_server`), and has blocking `*_sync` variants.
//! - [`Error`]: connection, timeout, request (with the server's envelope).
//! - [`Trajectory`]: an agent run as JSON Lines.
//!
//! This module knows the wire from the client's side only; serving it is `crate::http`'s, and
//! what a call does is the engine's.
//!
//! ```no_run
//! use agentflow_sandbox::client::{Sandbox, SandboxConfig};
//! use serde_json::json;
//!
//! # async fn run() -> Result<(), agentflow_sandbox::client::Error> {
//! // In-process: Sandbox::embedded(engine). Over the network: the line below.
//! let sandbox = Sandbox::remote(SandboxConfig::new("http://127.0.0.1:18890").auto_start_server(true))?;
//! sandbox.start().await?;
//! sandbox.create_session("bash", json!(null)).await?;
//! let answer = sandbox.execute("bash:run", json!({"command": "echo hi"})).await?;
//! println!("{}", answer.data["stdout"]);
//! sandbox.close().await
//! # }
//! ```
//!
//! [`Envelope`]: crate::protocol::Envelope

mod error;
mod sandbox;
mod server;
mod service;
mod trajectory;
mod transport;

pub use error::{Error, Result};
pub use sandbox::{Sandbox, SandboxConfig};
pub use server::{locate as locate_server_binary, ServerProcess};
pub use service::{HttpClientConfig, HttpServiceClient};
pub use trajectory::Trajectory;
