//! The `rag` adapter: the engine's [`Backend`] over [`agentflow_rag::Index`].
//!
//! It owns the tools' parameters and JSON (`rag:search`, `rag:batch_search`, `rag:index`,
//! `rag:stats`, the `context` string of docs/backends.md), the backend's config keys, and when the
//! index is loaded: [`Backend::warmup`] awaits the load, which runs on a blocking thread and goes
//! on if the caller stops waiting (the next warm-up waits for the same load). Every call on the
//! index (search, commit, stats) runs off the runtime's worker threads. Ranking, analysis,
//! persistence and the corpus format are the `agentflow-rag` crate's.
//!
//! What one call may cost is capped by operator settings: `max_top_k` hits per query,
//! `max_batch` queries per `rag:batch_search`, and `max_answer_bytes` of answer (`data`, as JSON),
//! counted while the hits are gathered so that an answer over the cap is never built. A request
//! over a cap is a 1002 naming the parameter and the cap.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use agentflow_rag::{Budget, Document, Hit, Index, Options, Origin};
use async_trait::async_trait;
use parking_lot::RwLock;
use serde_json::{json, Map, Value};
use tokio::task::JoinHandle;

use crate::backend::{param, Backend, CallContext, Scope, SessionState};
use crate::error::{Error, Result};
use crate::tool::{Kind, Param, ToolSpec};

/// Most hits one query may ask for, unless the config's `max_top_k` says otherwise: a prompt
/// holds a few dozen passages at most, and 100 leaves room for re-ranking.
pub const MAX_TOP_K: usize = 100;
/// Most queries in one `rag:batch_search`, unless the config's `max_batch` says otherwise (an
/// evaluation sweep sends its queries in batches of this size).
pub const MAX_BATCH: usize = 1000;
/// Largest answer of one call (its `data` as JSON, in bytes), unless the config's
/// `max_answer_bytes` says otherwise.
pub const MAX_ANSWER_BYTES: usize = 16 << 20;
/// Most documents in one `rag:index`.
pub const MAX_DOCUMENTS: usize = 100_000;

/// JSON bytes of one hit beyond its text: the keys, quotes and score of its `results` entry and
/// the brackets and separator of its `context` (an upper bound).
const HIT_OVERHEAD: usize = 72;

/// What a hit adds to an answer: its text twice (in `results` and in `context`), its id, and the
/// JSON around them. Escapes (a quote, a newline) are not counted: the estimate is of the text's
/// size, which is what the memory follows.
fn hit_cost(hit: &Hit) -> usize {
    2 * (hit.title.len() + hit.content.len()) + hit.id.len() + HIT_OVERHEAD
}

/// The backend's config, checked once.
#[derive(Debug, Clone)]
struct Settings {
    corpus_path: Option<PathBuf>,
    default_top_k: usize,
    max_top_k: usize,
    max_batch: usize,
    max_answer_bytes: usize,
    options: Options,
}

impl Settings {
    fn parse(config: &Map<String, Value>) -> Result<Settings> {
        let bad = |key: &str, expected: &str, got: &Value| {
            Error::Config(format!("rag config '{key}': expected {expected}, got {got}"))
        };
        let path = |key: &str| -> Result<Option<PathBuf>> {
            match config.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if !s.is_empty() => Ok(Some(PathBuf::from(s))),
                Some(other) => Err(bad(key, "a non-empty path", other)),
            }
        };
        let integer = |key: &str, min: u64, max: u64, default: u64| -> Result<u64> {
            match config.get(key) {
                None | Some(Value::Null) => Ok(default),
                Some(v) => v
                    .as_u64()
                    .or_else(|| v.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0).map(|f| f as u64))
                    .filter(|n| (min..=max).contains(n))
                    .ok_or_else(|| bad(key, &format!("an integer in [{min}, {max}]"), v)),
            }
        };
        match config.get("method") {
            None | Some(Value::Null) => {}
            Some(Value::String(m)) if m == "bm25" => {}
            Some(other) => return Err(bad("method", "\"bm25\" (the only ranking built in)", other)),
        }
        let defaults = Options::default();
        let writer_memory =
            integer("writer_memory", agentflow_rag::MIN_WRITER_MEMORY as u64, 64 << 30, defaults.writer_memory as u64)?;
        let max_top_k = integer("max_top_k", 1, 10_000, MAX_TOP_K as u64)? as usize;
        Ok(Settings {
            corpus_path: path("corpus_path")?,
            default_top_k: integer("default_top_k", 1, max_top_k as u64, 5.min(max_top_k as u64))? as usize,
            max_top_k,
            max_batch: integer("max_batch", 1, 100_000, MAX_BATCH as u64)? as usize,
            max_answer_bytes: integer("max_answer_bytes", 1024, 1 << 30, MAX_ANSWER_BYTES as u64)? as usize,
            options: Options { index_dir: path("index_dir")?, writer_memory: writer_memory as usize },
        })
    }
}

/// The `rag` backend: one index shared by all workers.
#[derive(Debug)]
pub struct RagBackend {
    settings: Settings,
    index: RwLock<Option<Arc<Index>>>,
    /// The load in progress, if any; kept when a warm-up stops waiting for it.
    loading: tokio::sync::Mutex<Option<JoinHandle<agentflow_rag::Result<Index>>>>,
    /// Tells a load in progress to stop (shutdown).
    cancel: Arc<AtomicBool>,
}

impl RagBackend {
    /// A backend with these defaults (`corpus_path`, `index_dir`, `default_top_k`,
    /// `writer_memory`, `method`) and caps (`max_top_k`, default [`MAX_TOP_K`]; `max_batch`,
    /// default [`MAX_BATCH`]; `max_answer_bytes`, default [`MAX_ANSWER_BYTES`]); a mistyped key
    /// is a configuration error naming it.
    pub fn new(defaults: Map<String, Value>) -> Result<Self> {
        Ok(RagBackend {
            settings: Settings::parse(&defaults)?,
            index: RwLock::new(None),
            loading: tokio::sync::Mutex::new(None),
            cancel: Arc::new(AtomicBool::new(false)),
        })
    }

    fn index(&self) -> Result<Arc<Index>> {
        self.index
            .read()
            .clone()
            .ok_or_else(|| Error::NotWarmedUp { backend: "rag".into(), reason: "the index is not loaded".into() })
    }

    fn top_k(&self, params: &Value) -> Result<usize> {
        Ok(param::<usize>(params, "top_k")?.unwrap_or(self.settings.default_top_k))
    }

    /// The 1002 of an answer over `max_answer_bytes`, on the parameter that makes it large.
    fn too_large(&self, field: &str) -> Error {
        Error::param(
            field,
            format!(
                "the answer would exceed max_answer_bytes ({} bytes); ask for fewer results",
                self.settings.max_answer_bytes
            ),
        )
    }
}

/// Runs blocking index work off the runtime's worker threads.
async fn blocking<T: Send + 'static>(
    index: Arc<Index>,
    work: impl FnOnce(&Index) -> agentflow_rag::Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(move || work(&index))
        .await
        .map_err(|e| Error::Internal(format!("index task failed: {e}")))?
        .map_err(index_error)
}

/// A search within a budget: `None` when it went over, for the caller to name its parameter.
fn within<T>(outcome: agentflow_rag::Result<T>) -> agentflow_rag::Result<Option<T>> {
    match outcome {
        Err(agentflow_rag::Error::OverBudget { .. }) => Ok(None),
        other => other.map(Some),
    }
}

fn index_error(e: agentflow_rag::Error) -> Error {
    match e {
        agentflow_rag::Error::EmptyQuery => Error::param("query", "the query is empty"),
        agentflow_rag::Error::Document { position, reason } => Error::param(format!("documents[{position}]"), reason),
        other => Error::backend(other.to_string()),
    }
}

/// The hits as the original project rendered them for prompts: `[title]\ntext` (just the text
/// without a title), joined by `\n---\n`.
pub fn context(hits: &[Hit]) -> String {
    let mut out = String::new();
    for (i, hit) in hits.iter().enumerate() {
        if i > 0 {
            out.push_str("\n---\n");
        }
        if !hit.title.is_empty() {
            out.push('[');
            out.push_str(&hit.title);
            out.push_str("]\n");
        }
        out.push_str(&hit.content);
    }
    out
}

/// The hits as `results` entries, their strings moved rather than copied.
fn hits_json(hits: Vec<Hit>) -> Value {
    Value::Array(
        hits.into_iter()
            .map(|h| {
                let mut entry = Map::new();
                entry.insert("id".into(), Value::String(h.id));
                entry.insert("title".into(), Value::String(h.title));
                entry.insert("content".into(), Value::String(h.content));
                entry.insert("score".into(), json!(score(h.score)));
                Value::Object(entry)
            })
            .collect(),
    )
}

/// The score as its shortest decimal (4.8623233, not the f64 widening 4.86232328414917).
fn score(s: f32) -> f64 {
    s.to_string().parse().unwrap_or(f64::from(s))
}

fn check_query(field: &str, query: &str) -> Result<()> {
    if query.trim().is_empty() {
        return Err(Error::param(field, "the query is empty"));
    }
    Ok(())
}

/// One document of `rag:index`: `content` (or `contents`, `text`), optional `id` and `title`.
fn document(i: usize, value: &Value) -> Result<Document> {
    let field = |name: &str| format!("documents[{i}].{name}");
    let obj = value.as_object().ok_or_else(|| Error::param(format!("documents[{i}]"), "expected an object"))?;
    let content = ["content", "contents", "text"]
        .iter()
        .find_map(|k| obj.get(*k).filter(|v| !v.is_null()).map(|v| (*k, v)))
        .ok_or_else(|| Error::param(field("content"), "missing required field (a string)"))?;
    let content = match content {
        (_, Value::String(s)) => s.clone(),
        (k, other) => return Err(Error::param(field(k), format!("expected a string, got {other}"))),
    };
    let id = match obj.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => return Err(Error::param(field("id"), "the id is empty")),
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) if n.is_u64() || n.is_i64() => Some(n.to_string()),
        Some(other) => return Err(Error::param(field("id"), format!("expected a string or an integer, got {other}"))),
    };
    let title = match obj.get("title") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()).filter(|s| !s.is_empty()),
        Some(other) => return Err(Error::param(field("title"), format!("expected a string, got {other}"))),
    };
    Ok(Document { id, title, content })
}

impl Drop for RagBackend {
    /// A load still running stops at its next line.
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Release);
    }
}

#[async_trait]
impl Backend for RagBackend {
    fn name(&self) -> &str {
        "rag"
    }

    fn scope(&self) -> Scope {
        Scope::Shared
    }

    fn tools(&self) -> Vec<ToolSpec> {
        let top_k = || {
            Param::optional("top_k", Kind::Integer, "how many documents to return, best first")
                .range(Some(1.0), Some(self.settings.max_top_k as f64))
                .default(json!(self.settings.default_top_k))
        };
        vec![
            ToolSpec::new(
                "search",
                "Full-text search (BM25) of the document collection. Returns the best passages with their \
                 scores, and `context`: the passages rendered for a prompt.",
                vec![
                    Param::required("query", Kind::String, "what to look for, in plain words").range(Some(1.0), None),
                    top_k(),
                ],
            ),
            ToolSpec::new(
                "batch_search",
                "Runs several searches at once, in parallel; one result list and one context per query.",
                vec![
                    Param::required("queries", Kind::Array(Box::new(Kind::String)), "the queries")
                        .range(Some(1.0), Some(self.settings.max_batch as f64)),
                    top_k(),
                ],
            ),
            ToolSpec::new(
                "index",
                "Adds documents to the collection (a document with an existing id replaces it). They are \
                 searchable when the call returns.",
                vec![Param::required(
                    "documents",
                    Kind::Array(Box::new(Kind::Object)),
                    "documents: {content, id?, title?}",
                )
                .range(Some(1.0), Some(MAX_DOCUMENTS as f64))],
            ),
            ToolSpec::new("stats", "Figures about the collection: documents, ranking method, index size.", vec![]),
        ]
    }

    /// Loads the index (opens `index_dir` as it is when current, or builds it from `corpus_path`),
    /// and returns when it is loaded. A failure (a bad corpus line: its number and problem) is
    /// returned, and the next warm-up tries again.
    async fn warmup(&self) -> Result<()> {
        if self.index.read().is_some() {
            return Ok(());
        }
        let mut loading = self.loading.lock().await;
        if self.index.read().is_some() {
            return Ok(());
        }
        let handle = loading.get_or_insert_with(|| {
            let settings = self.settings.clone();
            let cancel = self.cancel.clone();
            tokio::task::spawn_blocking(move || match &settings.corpus_path {
                Some(corpus) => Index::load(corpus, &settings.options, &cancel),
                None => Index::open(&settings.options),
            })
        });
        // Awaiting `&mut handle` leaves the load running if this future is dropped.
        let outcome = handle.await;
        *loading = None;
        match outcome {
            Ok(Ok(index)) => {
                *self.index.write() = Some(Arc::new(index));
                Ok(())
            }
            Ok(Err(e)) => Err(Error::backend(e.to_string())),
            Err(e) => Err(Error::Internal(format!("index load failed: {e}"))),
        }
    }

    async fn call(
        &self,
        tool: &str,
        params: Value,
        _session: Option<&mut SessionState>,
        _ctx: &CallContext<'_>,
    ) -> Result<Value> {
        match tool {
            "search" => {
                let query: String = param(&params, "query")?.unwrap_or_default();
                check_query("query", &query)?;
                let top_k = self.top_k(&params)?;
                let limit = self.settings.max_answer_bytes.saturating_sub(2 * query.len() + 64);
                let (query, hits) = blocking(self.index()?, move |index| {
                    let hits = within(index.search_within(&query, top_k, &Budget::new(limit, &hit_cost)))?;
                    Ok((query, hits))
                })
                .await?;
                let hits = hits.ok_or_else(|| self.too_large("top_k"))?;
                let context = context(&hits);
                Ok(json!({"query": query, "results": hits_json(hits), "context": context}))
            }
            "batch_search" => {
                let queries: Vec<String> = param(&params, "queries")?.unwrap_or_default();
                for (i, q) in queries.iter().enumerate() {
                    check_query(&format!("queries[{i}]"), q)?;
                }
                let top_k = self.top_k(&params)?;
                // Each query adds its two lists' brackets and commas, and the hits their cost.
                let limit = self.settings.max_answer_bytes.saturating_sub(8 * queries.len() + 64);
                let all = blocking(self.index()?, move |index| {
                    within(index.batch_search_within(&queries, top_k, &Budget::new(limit, &hit_cost)))
                })
                .await?
                .ok_or_else(|| self.too_large("queries"))?;
                let contexts: Vec<Value> = all.iter().map(|h| Value::String(context(h))).collect();
                let results: Vec<Value> = all.into_iter().map(hits_json).collect();
                Ok(json!({"results": results, "contexts": contexts}))
            }
            "index" => {
                let docs = params.get("documents").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
                let docs = docs.iter().enumerate().map(|(i, d)| document(i, d)).collect::<Result<Vec<_>>>()?;
                let added = blocking(self.index()?, move |index| index.add(docs)).await?;
                Ok(json!({"indexed": added.ids.len(), "ids": added.ids, "total": added.total}))
            }
            "stats" => {
                let stats = blocking(self.index()?, |index| index.stats()).await?;
                let origin = match stats.origin {
                    Origin::Empty => json!({"kind": "empty"}),
                    Origin::Built { documents, seconds } => {
                        json!({"kind": "built", "documents": documents, "seconds": seconds})
                    }
                    Origin::Reopened => json!({"kind": "reopened"}),
                    _ => json!({"kind": "other"}),
                };
                Ok(json!({
                    "documents": stats.documents,
                    "method": "bm25",
                    "index_bytes": stats.index_bytes,
                    "segments": stats.segments,
                    "loaded": origin,
                    "corpus_path": stats.corpus,
                    "index_dir": stats.index_dir,
                    "default_top_k": self.settings.default_top_k,
                    "max_top_k": self.settings.max_top_k,
                    "max_batch": self.settings.max_batch,
                    "max_answer_bytes": self.settings.max_answer_bytes,
                }))
            }
            other => Err(Error::ToolNotFound(other.to_owned())),
        }
    }

    /// Stops a load in progress and releases the index (and its directory lock).
    async fn shutdown(&self) {
        self.cancel.store(true, Ordering::Release);
        if let Some(handle) = self.loading.lock().await.take() {
            let _ = handle.await;
        }
        let index = self.index.write().take();
        if let Some(index) = index {
            // Dropping the writer joins its threads: not on a runtime worker.
            let _ = tokio::task::spawn_blocking(move || drop(index)).await;
        }
    }
}
