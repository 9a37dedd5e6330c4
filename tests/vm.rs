//! Integration tests of the vm area.
