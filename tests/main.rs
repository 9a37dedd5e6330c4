//! The one integration-test binary: a list of modules, one per area (ripgrep's `tests/tests.rs`).

mod common;
mod engine;

#[cfg(feature = "bash")]
mod bash;
#[cfg(all(feature = "http", feature = "bash"))]
mod cli;
#[cfg(all(feature = "client", feature = "http"))]
mod client;
#[cfg(all(feature = "vm", feature = "bash"))]
mod desktop;
#[cfg(feature = "bash")]
mod faults;
#[cfg(feature = "bash")]
mod files;
#[cfg(feature = "http")]
mod http;
#[cfg(feature = "bash")]
mod jail;
#[cfg(feature = "bash")]
mod load;
#[cfg(feature = "mcp")]
mod mcp;
#[cfg(all(feature = "http", feature = "bash", feature = "vm", feature = "rag"))]
mod mcp_server;
#[cfg(feature = "rag")]
mod rag;
#[cfg(feature = "bash")]
mod security;
#[cfg(feature = "vm")]
mod vm;
