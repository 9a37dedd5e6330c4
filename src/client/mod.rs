//! The Rust client of the HTTP API (placeholder until the client work lands).
