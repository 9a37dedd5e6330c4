//! placeholder, filled by the rag backend work
