//! # agentflow-rag
//!
//! BM25 full-text retrieval over a document collection, on tantivy: an [`Index`] with the fields
//! `id`, `title` and `content`, English analysis with stemming ("indexes" finds "index"), loaded
//! from a JSONL corpus by streaming it, kept in RAM or persisted in a directory that is reopened
//! without re-indexing while it is current, open to additions while it serves searches.
//!
//! This crate knows nothing of sessions, JSON tool parameters, async runtimes or HTTP: the engine's
//! `rag` adapter (`src/backends/rag.rs` of `agentflow-sandbox`) maps those onto it. Every method
//! blocks; run them off async worker threads.
//!
//! ```
//! use agentflow_rag::{Document, Index, Options};
//!
//! let index = Index::open(&Options::default())?;
//! index.add(vec![Document { id: Some("1".into()), title: Some("Tantivy".into()),
//!     content: "A full-text search engine library written in Rust.".into() }])?;
//! let hits = index.search("search engines", 5)?;
//! assert_eq!(hits[0].id, "1");
//! # Ok::<(), agentflow_rag::Error>(())
//! ```

pub mod corpus;
#[cfg(feature = "dense")]
pub mod dense;
mod error;
mod index;
pub mod synthetic;

pub use corpus::{CorpusReader, CorpusStamp, Document};
#[cfg(feature = "dense")]
pub use dense::{fuse, Dense, Encoder, EncoderConfig, Fused, Vectors};
pub use error::{Error, Result};
pub use index::{Added, Analysis, Budget, Hit, Index, Options, Origin, Stats, MIN_WRITER_MEMORY, TITLE_WEIGHT};
pub use tantivy::tokenizer::Language;
