//! # agentflow-mcp
//!
//! Model Context Protocol tool servers as a client sees them: a [`Server`] is started from a
//! [`ServerSpec`] (a program spoken to over its stdin and stdout, or a URL spoken to over
//! streamable HTTP), asked for its tools once ([`Server::tools`]), then called
//! ([`Server::call`]) with a timeout past which the request is cancelled
//! (`notifications/cancelled`). The protocol itself is the official Rust SDK's (`rmcp`); this
//! crate owns what the SDK leaves to its user: the server's process tree (started in a process
//! group of its own, each process marked in its environment, all killed with the server, even
//! those that left the group), its stderr (the last lines kept, to say why it failed), and
//! telling a server that is gone from one that refused a call.
//!
//! It knows nothing of sessions, tool names of the engine, JSON envelopes or HTTP serving: the
//! `agentflow-sandbox` engine adapts it in `src/backends/mcp.rs`. Linux only (it reads `/proc`).

mod process;
mod server;

pub use server::{Launch, Remote, Server, ServerSpec, ToolInfo};

/// What can go wrong with a server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// It did not start, or failed the protocol's handshake.
    #[error("MCP server '{server}' did not start: {reason}{}", quote(stderr))]
    Start {
        /// The server's name.
        server: String,
        /// Why.
        reason: String,
        /// The last lines it wrote to stderr.
        stderr: String,
    },
    /// It went away: its process ended or its connection closed.
    #[error("MCP server '{server}' is gone: {reason}{}", quote(stderr))]
    Gone {
        /// The server's name.
        server: String,
        /// What was seen.
        reason: String,
        /// The last lines it wrote to stderr.
        stderr: String,
    },
    /// It did not answer in time; the request was cancelled.
    #[error("MCP server '{server}' did not answer {what} within {:.3} s", timeout.as_secs_f64())]
    Timeout {
        /// The server's name.
        server: String,
        /// The request (`tools/call echo`).
        what: String,
        /// The time it had.
        timeout: std::time::Duration,
    },
    /// It answered with a protocol error (an unknown tool, arguments it refused).
    #[error("MCP server '{server}' refused {what}: {message} (JSON-RPC error {code})")]
    Refused {
        /// The server's name.
        server: String,
        /// The request.
        what: String,
        /// The JSON-RPC error code.
        code: i32,
        /// The server's message.
        message: String,
    },
}

fn quote(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!("; its stderr ends with:\n{stderr}")
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
