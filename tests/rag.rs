//! Integration tests of the rag area.
