//! placeholder, filled by the vm backend work
