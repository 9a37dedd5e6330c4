//! Integration tests of the Rust client and the Sandbox facade.
