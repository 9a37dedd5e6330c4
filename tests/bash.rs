//! Integration tests of the bash area.
