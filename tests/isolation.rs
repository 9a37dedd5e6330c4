//! Integration tests of isolation (jailed shells, limits) and fault tolerance.
