//! Integration tests of the http area.
