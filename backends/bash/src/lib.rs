//! placeholder, filled by the bash backend work
