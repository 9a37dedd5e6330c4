//! Integration tests of the engine area.
