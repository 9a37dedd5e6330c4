//! The crate's one error type. What a caller sees of it (codes, JSON) is the adapter's business.

use std::path::PathBuf;

/// What went wrong with an [`Index`](crate::Index) or its corpus.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A corpus line that is not a document: loading stops there, so nothing is silently dropped.
    #[error("corpus {}: line {line}: {reason}", path.display())]
    Corpus {
        /// The corpus file.
        path: PathBuf,
        /// The 1-based line number.
        line: u64,
        /// What is wrong with the line.
        reason: String,
    },
    /// A file or directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The failure.
        source: std::io::Error,
    },
    /// `index_dir` cannot hold this index (not empty and not ours, another schema, locked).
    #[error("index directory {}: {reason}", path.display())]
    IndexDir {
        /// The directory.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },
    /// A query with no text at all.
    #[error("the query is empty")]
    EmptyQuery,
    /// A document given to [`Index::add`](crate::Index::add) that cannot be indexed.
    #[error("document {position}: {reason}")]
    Document {
        /// Its 0-based position in the batch.
        position: usize,
        /// What is wrong with it.
        reason: String,
    },
    /// The hits of a search cost more than its [`Budget`](crate::Budget) allows.
    #[error("the hits exceed the budget of {limit} bytes")]
    OverBudget {
        /// The budget, in bytes.
        limit: usize,
    },
    /// Loading was cancelled (the owner is shutting down).
    #[error("loading was cancelled")]
    Cancelled,
    /// A sentence encoder's model directory that cannot be loaded, or a failed encoding.
    #[error("model {}: {reason}", path.display())]
    Model {
        /// The model directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The search engine failed.
    #[error("index: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
