//! The HTTP facade (placeholder until the http work lands).
