//! The [`Index`]: a BM25 full-text index over tantivy with the fields `id`, `title` and
//! `content` (English analysis with stemming), built from a JSONL corpus, kept in RAM or in a
//! directory that is reopened without re-indexing while it is current for its corpus, and open
//! to additions while it serves searches.
//!
//! It knows nothing of sessions, JSON parameters or async runtimes: every method blocks, and the
//! caller decides on which thread. Reading the corpus format is [`crate::corpus`]'s.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use rayon::prelude::*;
use tantivy::collector::TopDocs;
use tantivy::indexer::UserOperation;
use tantivy::query::{BooleanQuery, BoostQuery, Occur, Query, TermQuery};
use tantivy::schema::{Field, IndexRecordOption, Schema, TextFieldIndexing, TextOptions, Value, STORED, STRING};
use tantivy::tokenizer::TextAnalyzer;
use tantivy::{IndexReader, IndexSettings, IndexWriter, ReloadPolicy, Searcher, TantivyDocument, Term};

use crate::corpus::{CorpusReader, CorpusStamp, Document};
use crate::error::{Error, Result};

/// The name of the analyzer of `title` and `content` in the schema. Which analysis it stands for
/// is [`Analysis`]'s, registered under this name whenever an index is opened (and recorded in
/// the corpus stamp, so that another analysis rebuilds the index).
const ANALYZER: &str = "en_stem";

/// How text is analysed: words (runs of letters and digits), lowercased, without stop words
/// (optionally), reduced to their Snowball stems.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Analysis {
    /// The language of the stemmer and the stop-word list.
    pub language: tantivy::tokenizer::Language,
    /// Whether the language's stop words ("the", "of", …) are dropped, from documents and
    /// queries alike.
    pub stopwords: bool,
}

impl Default for Analysis {
    /// English, stop words dropped: what the reference BM25 (bm25s) does.
    fn default() -> Self {
        Analysis { language: tantivy::tokenizer::Language::English, stopwords: true }
    }
}

impl Analysis {
    fn analyzer(&self) -> TextAnalyzer {
        use tantivy::tokenizer::{LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter};
        let base =
            TextAnalyzer::builder(SimpleTokenizer::default()).filter(RemoveLongFilter::limit(40)).filter(LowerCaser);
        match self.stopwords.then(|| StopWordFilter::new(self.language)).flatten() {
            Some(stop) => base.filter(stop).filter(Stemmer::new(self.language)).build(),
            None => base.filter(Stemmer::new(self.language)).build(),
        }
    }

    fn describe(&self) -> String {
        format!("{:?}{}", self.language, if self.stopwords { "+stopwords" } else { "" })
    }
}

/// Bytes of documents compressed together in the doc store. A hit costs the decompression of
/// its block: small blocks keep fetching ten hits cheap (16 KiB, tantivy's default, measured
/// about 100 µs more per top-10 search than 2 KiB on 100,000 passages) for a slightly larger store.
const DOCSTORE_BLOCK: usize = 2048;

/// [`Options::title_weight`] by default.
pub const TITLE_WEIGHT: f32 = 0.4;

/// The smallest indexing memory tantivy accepts per indexing thread.
pub const MIN_WRITER_MEMORY: usize = 15_000_000;

/// How an index is opened or built.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where the index lives on disk; `None` keeps it in RAM.
    pub index_dir: Option<PathBuf>,
    /// Memory for indexing, in bytes, shared by the indexing threads (at least
    /// [`MIN_WRITER_MEMORY`]; one thread per `MIN_WRITER_MEMORY`, up to the number of cores).
    pub writer_memory: usize,
    /// How text is analysed.
    pub analysis: Analysis,
    /// What a query word found in a title counts for, against 1 for the content. A title is
    /// short, so BM25 scores its words high: counted whole, the title outweighs the text (on the
    /// man-page set of `tests/rag/quality`, recall@10 0.821 at 1, 0.846 at 0.4, flat from 0.3 to
    /// 0.5). Read at query time: no rebuild.
    pub title_weight: f32,
}

impl Default for Options {
    fn default() -> Self {
        Options { index_dir: None, writer_memory: 256 << 20, analysis: Analysis::default(), title_weight: TITLE_WEIGHT }
    }
}

/// How the index came to be.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum Origin {
    /// A new, empty index (no corpus, no index on disk).
    Empty,
    /// Built from the corpus now.
    Built {
        /// Documents read from the corpus.
        documents: u64,
        /// Time the build took.
        seconds: f64,
    },
    /// An index on disk, opened as it was (current for its corpus, or with no corpus given).
    Reopened,
}

/// A cap on what searches may gather: each hit's `cost` (bytes, as the caller counts them) is
/// added to a total shared by every query of a batch, and past `limit` the search stops with
/// [`Error::OverBudget`] instead of building more hits.
pub struct Budget<'a> {
    limit: usize,
    used: AtomicUsize,
    cost: &'a (dyn Fn(&Hit) -> usize + Sync),
}

impl<'a> Budget<'a> {
    /// A budget of `limit` bytes, each hit costing `cost(hit)`.
    pub fn new(limit: usize, cost: &'a (dyn Fn(&Hit) -> usize + Sync)) -> Self {
        Budget { limit, used: AtomicUsize::new(0), cost }
    }

    /// What the hits gathered so far cost.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Counts `hit`; an error once the total is over the limit.
    /// Adds `hit`'s cost; [`Error::OverBudget`] once the total is over the limit.
    pub fn charge(&self, hit: &Hit) -> Result<()> {
        let cost = (self.cost)(hit);
        let before = self.used.fetch_add(cost, Ordering::Relaxed);
        if before.saturating_add(cost) > self.limit {
            return Err(Error::OverBudget { limit: self.limit });
        }
        Ok(())
    }

    fn exhausted(&self) -> bool {
        self.used() > self.limit
    }
}

impl std::fmt::Debug for Budget<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budget").field("limit", &self.limit).field("used", &self.used()).finish_non_exhaustive()
    }
}

/// A search hit.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// The document's id.
    pub id: String,
    /// Its title, empty when it has none.
    pub title: String,
    /// Its text.
    pub content: String,
    /// Its BM25 score for the query.
    pub score: f32,
}

/// What [`Index::add`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct Added {
    /// The ids of the documents added, in order (given or assigned).
    pub ids: Vec<String>,
    /// Documents in the index now.
    pub total: u64,
}

/// Figures about the index.
#[derive(Debug, Clone, PartialEq)]
pub struct Stats {
    /// Searchable documents.
    pub documents: u64,
    /// Segments (a search visits each).
    pub segments: usize,
    /// Size of the index files.
    pub index_bytes: u64,
    /// How the index came to be.
    pub origin: Origin,
    /// The corpus it was loaded from, if any.
    pub corpus: Option<PathBuf>,
    /// Where it lives on disk, if it does.
    pub index_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy)]
struct Fields {
    id: Field,
    title: Field,
    content: Field,
}

fn schema() -> (Schema, Fields) {
    let mut builder = Schema::builder();
    let text = TextOptions::default()
        .set_indexing_options(
            TextFieldIndexing::default().set_tokenizer(ANALYZER).set_index_option(IndexRecordOption::WithFreqs),
        )
        .set_stored();
    let id = builder.add_text_field("id", STRING | STORED);
    let title = builder.add_text_field("title", text.clone());
    let content = builder.add_text_field("content", text);
    (builder.build(), Fields { id, title, content })
}

fn create(dir: Option<&Path>) -> Result<tantivy::Index> {
    let settings = IndexSettings { docstore_blocksize: DOCSTORE_BLOCK, ..IndexSettings::default() };
    let builder = tantivy::Index::builder().schema(schema().0).settings(settings);
    Ok(match dir {
        None => builder.create_in_ram()?,
        Some(dir) => builder.create_in_dir(dir)?,
    })
}

/// A searchable document collection. See the module documentation.
pub struct Index {
    index: tantivy::Index,
    reader: IndexReader,
    fields: Fields,
    analyzer: TextAnalyzer,
    /// Made on the first [`Index::add`]; holds the directory's lock while it lives.
    writer: Mutex<Option<IndexWriter>>,
    options: Options,
    origin: Origin,
    corpus: Option<PathBuf>,
}

impl std::fmt::Debug for Index {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Index")
            .field("index_dir", &self.options.index_dir)
            .field("corpus", &self.corpus)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl Index {
    /// Opens the index in `options.index_dir` (creating an empty one if the directory is empty or
    /// missing), or an empty index in RAM.
    pub fn open(options: &Options) -> Result<Index> {
        check_memory(options.writer_memory)?;
        let (index, existed) = match &options.index_dir {
            None => (create(None)?, false),
            Some(dir) => open_dir(dir)?,
        };
        let origin = if existed { Origin::Reopened } else { Origin::Empty };
        index.tokenizers().register(ANALYZER, options.analysis.analyzer());
        Index::assemble(index, options.clone(), origin, None)
    }

    /// Loads the JSONL corpus at `corpus`: reopens `options.index_dir` as it is when it was built
    /// from this very corpus file (same path, size and modification time), otherwise builds the
    /// index from the corpus, streaming it, and saves it there. A bad line stops the load with
    /// [`Error::Corpus`] and leaves nothing half-loaded visible. Setting `cancel` stops it with
    /// [`Error::Cancelled`].
    pub fn load(corpus: &Path, options: &Options, cancel: &AtomicBool) -> Result<Index> {
        check_memory(options.writer_memory)?;
        let stamp = CorpusStamp { analysis: options.analysis.describe(), ..CorpusStamp::of(corpus)? };
        let index = match &options.index_dir {
            None => create(None)?,
            Some(dir) => {
                let (index, existed) = open_dir(dir)?;
                index.tokenizers().register(ANALYZER, options.analysis.analyzer());
                if existed && CorpusStamp::saved(dir).as_ref() == Some(&stamp) {
                    return Index::assemble(index, options.clone(), Origin::Reopened, Some(stamp.corpus));
                }
                // Built from another corpus or with another analysis: rebuilt (`build` empties it).
                CorpusStamp::remove(dir)?;
                index
            }
        };
        index.tokenizers().register(ANALYZER, options.analysis.analyzer());
        let start = Instant::now();
        let documents = build(&index, corpus, options.writer_memory, cancel)?;
        if let Some(dir) = &options.index_dir {
            stamp.save(dir)?;
        }
        let origin = Origin::Built { documents, seconds: start.elapsed().as_secs_f64() };
        Index::assemble(index, options.clone(), origin, Some(stamp.corpus))
    }

    fn assemble(index: tantivy::Index, options: Options, origin: Origin, corpus: Option<PathBuf>) -> Result<Index> {
        let (_, fields) = schema();
        let analyzer = index
            .tokenizers()
            .get(ANALYZER)
            .ok_or_else(|| tantivy::TantivyError::InvalidArgument(format!("no '{ANALYZER}' tokenizer")))?;
        let reader = index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into()?;
        Ok(Index { index, reader, fields, analyzer, writer: Mutex::new(None), options, origin, corpus })
    }

    /// The best `top_k` documents for `query`, best first, with their BM25 scores. A query with
    /// no matching document gives an empty list; a blank one is [`Error::EmptyQuery`].
    pub fn search(&self, query: &str, top_k: usize) -> Result<Vec<Hit>> {
        self.search_in(&self.reader.searcher(), query, top_k, None)
    }

    /// [`Index::search`] within `budget`: [`Error::OverBudget`] as soon as the hits cost more.
    pub fn search_within(&self, query: &str, top_k: usize, budget: &Budget) -> Result<Vec<Hit>> {
        self.search_in(&self.reader.searcher(), query, top_k, Some(budget))
    }

    /// [`Index::search`] for each query, in parallel over the cores, on one snapshot of the index.
    pub fn batch_search<Q: AsRef<str> + Sync>(&self, queries: &[Q], top_k: usize) -> Result<Vec<Vec<Hit>>> {
        let searcher = self.reader.searcher();
        each(queries, |q| self.search_in(&searcher, q.as_ref(), top_k, None))
    }

    /// [`Index::batch_search`] within `budget`, shared by all the queries: once it is spent, every
    /// query stops and the answer is [`Error::OverBudget`] (the hits gathered are dropped).
    pub fn batch_search_within<Q: AsRef<str> + Sync>(
        &self,
        queries: &[Q],
        top_k: usize,
        budget: &Budget,
    ) -> Result<Vec<Vec<Hit>>> {
        let searcher = self.reader.searcher();
        each(queries, |q| self.search_in(&searcher, q.as_ref(), top_k, Some(budget)))
    }

    fn search_in(&self, searcher: &Searcher, query: &str, top_k: usize, budget: Option<&Budget>) -> Result<Vec<Hit>> {
        if let Some(budget) = budget.filter(|b| b.exhausted()) {
            return Err(Error::OverBudget { limit: budget.limit });
        }
        if query.trim().is_empty() {
            return Err(Error::EmptyQuery);
        }
        let query = self.query(query);
        if top_k == 0 || query.clauses().is_empty() {
            return Ok(Vec::new());
        }
        let top = searcher.search(&query, &TopDocs::with_limit(top_k).order_by_score())?;
        top.into_iter()
            .map(|(score, address)| {
                let doc: TantivyDocument = searcher.doc(address)?;
                let text = |field| doc.get_first(field).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
                let hit = Hit {
                    id: text(self.fields.id),
                    title: text(self.fields.title),
                    content: text(self.fields.content),
                    score,
                };
                if let Some(budget) = budget {
                    budget.charge(&hit)?;
                }
                Ok(hit)
            })
            .collect()
    }

    /// Every word of the query, analysed as the documents are, looked up in the title and the
    /// content; a document's score is the sum of its BM25 scores for each (the title's weighted
    /// by [`Options::title_weight`]), a word that occurs `n` times in the query counting `n` times
    /// (one boosted term: its postings are read once).
    fn query(&self, text: &str) -> BooleanQuery {
        let mut analyzer = self.analyzer.clone();
        let mut stream = analyzer.token_stream(text);
        let mut words: Vec<(String, f32)> = Vec::new();
        while let Some(token) = stream.next() {
            match words.iter_mut().find(|(w, _)| *w == token.text) {
                Some((_, n)) => *n += 1.0,
                None => words.push((token.text.clone(), 1.0)),
            }
        }
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::with_capacity(words.len() * 2);
        for (word, n) in &words {
            for (field, w) in [(self.fields.title, self.options.title_weight), (self.fields.content, 1.0)] {
                if w == 0.0 {
                    continue;
                }
                let term = TermQuery::new(Term::from_field_text(field, word), IndexRecordOption::WithFreqs);
                // A boost keeps the term scorer (and its block-max pruning) underneath.
                let query: Box<dyn Query> =
                    if *n * w == 1.0 { Box::new(term) } else { Box::new(BoostQuery::new(Box::new(term), *n * w)) };
                clauses.push((Occur::Should, query));
            }
        }
        BooleanQuery::new(clauses)
    }

    /// Adds documents, replacing any with the same id, and commits: they are searchable when this
    /// returns, and durable when the index is on disk. A document without an id gets the next free
    /// number. Searches keep running meanwhile; additions are serialised.
    pub fn add(&self, documents: Vec<Document>) -> Result<Added> {
        let mut guard = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let writer = match guard.as_mut() {
            Some(w) => w,
            None => guard.insert(writer(&self.index, self.options.writer_memory)?),
        };
        let searcher = self.reader.searcher();
        let mut next = searcher.num_docs();
        let mut ids = Vec::with_capacity(documents.len());
        let mut taken = std::collections::HashSet::new();
        for (position, doc) in documents.iter().enumerate() {
            let id = match &doc.id {
                Some(id) if id.is_empty() => return Err(Error::Document { position, reason: "empty id".into() }),
                Some(id) => id.clone(),
                None => loop {
                    next += 1;
                    let candidate = next.to_string();
                    let term = Term::from_field_text(self.fields.id, &candidate);
                    if !taken.contains(&candidate) && searcher.doc_freq(&term)? == 0 {
                        break candidate;
                    }
                },
            };
            taken.insert(id.clone());
            ids.push(id);
        }
        let result = (|| -> Result<()> {
            for (doc, id) in documents.into_iter().zip(&ids) {
                writer.delete_term(Term::from_field_text(self.fields.id, id));
                writer.add_document(self.document(id, doc.title.as_deref(), &doc.content))?;
            }
            writer.commit()?;
            Ok(())
        })();
        if let Err(e) = result {
            let _ = writer.rollback();
            return Err(self.explain(e));
        }
        self.reader.reload().map_err(|e| self.explain(e.into()))?;
        Ok(Added { ids, total: self.reader.searcher().num_docs() })
    }

    /// A failure on disk says so plainly when its cause is that `index_dir` was removed.
    fn explain(&self, e: Error) -> Error {
        match &self.options.index_dir {
            Some(dir) if !dir.is_dir() => Error::IndexDir {
                path: dir.clone(),
                reason: "is gone (removed while in use): restart the engine to rebuild the index from the corpus"
                    .into(),
            },
            _ => e,
        }
    }

    fn document(&self, id: &str, title: Option<&str>, content: &str) -> TantivyDocument {
        document(self.fields, id, title, content)
    }

    /// Figures about the index as searches see it now.
    pub fn stats(&self) -> Result<Stats> {
        let searcher = self.reader.searcher();
        let usage = searcher.space_usage().map_err(|e| Error::Tantivy(e.into()))?;
        Ok(Stats {
            documents: searcher.num_docs(),
            segments: searcher.segment_readers().len(),
            index_bytes: usage.total().get_bytes(),
            origin: self.origin.clone(),
            corpus: self.corpus.clone(),
            index_dir: self.options.index_dir.clone(),
        })
    }

    /// Every document searchable now, as hits of score 0 (for embedding them all).
    pub fn documents(&self) -> Result<Vec<Hit>> {
        let searcher = self.reader.searcher();
        let mut out = Vec::with_capacity(searcher.num_docs() as usize);
        for segment in searcher.segment_readers() {
            let store = segment.get_store_reader(64).map_err(|e| Error::Tantivy(e.into()))?;
            for doc in segment.doc_ids_alive() {
                out.push(self.hit(&store.get::<TantivyDocument>(doc)?, 0.0));
            }
        }
        Ok(out)
    }

    /// The documents with these ids, in this order, each with its given score (an id no
    /// document has is left out), within `budget` if one is given.
    pub fn get(&self, wanted: &[(String, f32)], budget: Option<&Budget>) -> Result<Vec<Hit>> {
        let searcher = self.reader.searcher();
        let mut out = Vec::with_capacity(wanted.len());
        for (id, score) in wanted {
            let term = TermQuery::new(Term::from_field_text(self.fields.id, id), IndexRecordOption::Basic);
            if let Some((_, address)) = searcher.search(&term, &TopDocs::with_limit(1).order_by_score())?.first() {
                let hit = self.hit(&searcher.doc(*address)?, *score);
                if let Some(budget) = budget {
                    budget.charge(&hit)?;
                }
                out.push(hit);
            }
        }
        Ok(out)
    }

    fn hit(&self, doc: &TantivyDocument, score: f32) -> Hit {
        let text = |field| doc.get_first(field).and_then(|v| v.as_str()).unwrap_or_default().to_owned();
        Hit { id: text(self.fields.id), title: text(self.fields.title), content: text(self.fields.content), score }
    }

    /// A number that changes with every change of the index's documents (tantivy's opstamp of
    /// the last commit): what derived data, such as embeddings, is current for.
    pub fn generation(&self) -> Result<u64> {
        Ok(self.index.load_metas()?.opstamp)
    }

    /// Documents searchable now.
    pub fn len(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// Whether no document is searchable.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn document(fields: Fields, id: &str, title: Option<&str>, content: &str) -> TantivyDocument {
    let mut doc = TantivyDocument::new();
    doc.add_text(fields.id, id);
    if let Some(title) = title {
        doc.add_text(fields.title, title);
    }
    doc.add_text(fields.content, content);
    doc
}

fn check_memory(bytes: usize) -> Result<()> {
    if bytes < MIN_WRITER_MEMORY {
        return Err(Error::Tantivy(tantivy::TantivyError::InvalidArgument(format!(
            "writer memory {bytes} is below the minimum {MIN_WRITER_MEMORY} bytes"
        ))));
    }
    Ok(())
}

/// `work` on each query, in parallel over the cores when there are several; one query runs on
/// the calling thread (handing it to the pool and waiting for it costs more than it saves).
fn each<Q: Sync, T: Send>(queries: &[Q], work: impl Fn(&Q) -> Result<T> + Sync) -> Result<Vec<T>> {
    match queries {
        [one] => Ok(vec![work(one)?]),
        many => many.par_iter().map(&work).collect(),
    }
}

/// A writer with one indexing thread per [`MIN_WRITER_MEMORY`] of `memory`, up to the cores.
fn writer(index: &tantivy::Index, memory: usize) -> Result<IndexWriter> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = cores.min(memory / MIN_WRITER_MEMORY).clamp(1, 8);
    // Tantivy caps a thread's arena just under 4 GiB.
    let memory = memory.min(threads * (4000 << 20));
    Ok(index.writer_with_num_threads(threads, memory)?)
}

/// Opens the index in `dir`, or creates one there if `dir` is missing or empty. Says whether an
/// index was there.
fn open_dir(dir: &Path) -> Result<(tantivy::Index, bool)> {
    let bad = |reason: String| Error::IndexDir { path: dir.to_owned(), reason };
    if dir.join("meta.json").exists() {
        let index = tantivy::Index::open_in_dir(dir)?;
        let ours = serde_json::to_value(schema().0).ok();
        if serde_json::to_value(index.schema()).ok() != ours {
            return Err(bad("it holds an index with other fields: remove it, or choose another directory".into()));
        }
        return Ok((index, true));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    if entries.any(|e| e.map_or(true, |e| e.file_name() != crate::corpus::STAMP_FILE)) {
        return Err(bad("it is not empty and holds no index: choose an empty or new directory".into()));
    }
    Ok((create(Some(dir))?, false))
}

/// Documents handed to the indexing threads at once while building, rather than one hand-off
/// (and often one wake-up of a thread) per document: 100,000 passages built at 78,000 and
/// 93,000 a second in batches against 72,000 and 71,000 one by one (`benches/rag.rs`).
const BUILD_BATCH: usize = 256;

/// Streams the corpus into `index` (replacing what it held) and commits; nothing is committed if
/// a line is bad or the load is cancelled. Answers the number of documents read.
fn build(index: &tantivy::Index, corpus: &Path, memory: usize, cancel: &AtomicBool) -> Result<u64> {
    let (_, fields) = schema();
    let mut writer = writer(index, memory)?;
    writer.delete_all_documents()?;
    let mut documents = 0u64;
    let mut number = String::new();
    let mut batch = Vec::with_capacity(BUILD_BATCH);
    for item in CorpusReader::open(corpus)? {
        if cancel.load(Ordering::Relaxed) {
            return Err(Error::Cancelled);
        }
        let (line, doc) = item?;
        let id = match &doc.id {
            Some(id) => id.as_str(),
            None => {
                number.clear();
                number.push_str(&line.to_string());
                &number
            }
        };
        batch.push(UserOperation::Add(document(fields, id, doc.title.as_deref(), &doc.content)));
        documents += 1;
        if batch.len() == BUILD_BATCH {
            writer.run(batch.drain(..))?;
        }
    }
    writer.run(batch)?;
    writer.commit()?;
    // One segment: a search then sets up and prunes once rather than per segment.
    let segments = index.searchable_segment_ids()?;
    if segments.len() > 1 {
        writer.merge(&segments).wait()?;
    }
    writer.wait_merging_threads()?;
    Ok(documents)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A directory removed when the test ends.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(what: &str) -> Scratch {
            static N: AtomicUsize = AtomicUsize::new(0);
            let n = N.fetch_add(1, Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!("agentflow-rag-{what}-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Scratch(dir)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn write_corpus(path: &Path, lines: &[&str]) {
        std::fs::write(path, lines.join("\n") + "\n").unwrap();
    }

    static NOT_CANCELLED: AtomicBool = AtomicBool::new(false);

    #[test]
    fn shipped_corpus_loads_and_answers() {
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/corpus/agentflow-docs.jsonl"));
        let lines = std::fs::read_to_string(path).unwrap().lines().filter(|l| !l.trim().is_empty()).count();
        let index = Index::load(path, &Options::default(), &NOT_CANCELLED).unwrap();
        assert_eq!(index.len(), lines as u64);
        assert!(lines >= 20, "the shipped corpus has only {lines} passages");
        let hits = index.search("how large is a screenshot PNG and how fast is it encoded", 3).unwrap();
        assert!(hits[0].id.starts_with("backends-"), "{hits:?}");
        assert!(hits[0].content.contains("screenshot"), "{hits:?}");
        let hits = index.search("error codes", 3).unwrap();
        assert!(hits.iter().any(|h| h.content.contains("| 1002 |")), "{hits:?}");
    }

    #[test]
    fn reopens_a_current_index_and_rebuilds_a_stale_one() {
        let scratch = Scratch::new("reopen");
        let corpus = scratch.0.join("corpus.jsonl");
        write_corpus(&corpus, &[r#"{"id": "a", "contents": "red apples"}"#, r#"{"contents": "green pears"}"#]);
        let options = Options { index_dir: Some(scratch.0.join("index")), ..Options::default() };

        let first = Index::load(&corpus, &options, &NOT_CANCELLED).unwrap();
        assert!(matches!(first.stats().unwrap().origin, Origin::Built { documents: 2, .. }));
        assert_eq!(first.search("pear", 5).unwrap()[0].id, "2", "a missing id is the line number");
        first.add(vec![Document { id: Some("added".into()), title: None, content: "yellow bananas".into() }]).unwrap();
        drop(first);

        let second = Index::load(&corpus, &options, &NOT_CANCELLED).unwrap();
        assert_eq!(second.stats().unwrap().origin, Origin::Reopened);
        assert_eq!(second.search("banana", 5).unwrap()[0].id, "added", "added documents are durable");
        drop(second);

        write_corpus(&corpus, &[r#"{"id": "b", "contents": "blue plums"}"#]);
        let third = Index::load(&corpus, &options, &NOT_CANCELLED).unwrap();
        assert!(matches!(third.stats().unwrap().origin, Origin::Built { documents: 1, .. }));
        assert_eq!(third.len(), 1, "a rebuild replaces what the directory held");
        assert!(third.search("apple", 5).unwrap().is_empty());
    }

    #[test]
    fn a_bad_line_leaves_nothing_committed() {
        let scratch = Scratch::new("bad");
        let corpus = scratch.0.join("corpus.jsonl");
        write_corpus(&corpus, &[r#"{"contents": "one"}"#, r#"{"contents": "two"}"#, r#"{"id": "x"}"#]);
        let options = Options { index_dir: Some(scratch.0.join("index")), ..Options::default() };
        match Index::load(&corpus, &options, &NOT_CANCELLED) {
            Err(Error::Corpus { line: 3, .. }) => {}
            other => panic!("expected a corpus error on line 3, got {other:?}"),
        }
        let reopened = Index::open(&options).unwrap();
        assert_eq!(reopened.len(), 0);
        assert!(CorpusStamp::saved(&scratch.0.join("index")).is_none());
    }

    #[test]
    fn refuses_a_directory_that_is_not_an_index() {
        let scratch = Scratch::new("foreign");
        std::fs::write(scratch.0.join("notes.txt"), "mine").unwrap();
        let options = Options { index_dir: Some(scratch.0.clone()), ..Options::default() };
        assert!(matches!(Index::open(&options), Err(Error::IndexDir { .. })));
        assert_eq!(std::fs::read_to_string(scratch.0.join("notes.txt")).unwrap(), "mine");
    }

    #[test]
    fn cancelling_stops_the_load() {
        let scratch = Scratch::new("cancel");
        let corpus = scratch.0.join("corpus.jsonl");
        write_corpus(&corpus, &[r#"{"contents": "one"}"#]);
        let cancel = AtomicBool::new(true);
        assert!(matches!(Index::load(&corpus, &Options::default(), &cancel), Err(Error::Cancelled)));
    }

    #[test]
    fn added_documents_replace_by_id_and_get_free_ids() {
        let index = Index::open(&Options::default()).unwrap();
        let doc =
            |id: Option<&str>, content: &str| Document { id: id.map(Into::into), title: None, content: content.into() };
        let added = index.add(vec![doc(Some("2"), "alpha"), doc(None, "beta"), doc(None, "gamma")]).unwrap();
        assert_eq!(added.ids, ["2", "1", "3"]);
        assert_eq!(added.total, 3);
        let added = index.add(vec![doc(Some("2"), "delta")]).unwrap();
        assert_eq!(added.total, 3, "same id: replaced, not duplicated");
        assert!(index.search("alpha", 5).unwrap().is_empty());
        assert_eq!(index.search("delta", 5).unwrap()[0].id, "2");
        assert!(matches!(index.add(vec![doc(Some(""), "x")]), Err(Error::Document { position: 0, .. })));
        assert!(matches!(index.search("  \t", 5), Err(Error::EmptyQuery)));
        assert!(index.search("?!", 5).unwrap().is_empty(), "no words: no match, not an error");
    }

    /// Scores checked against the BM25 formula computed here (k1 = 1.2, b = 0.75, Lucene's idf),
    /// on passages short enough for tantivy's field lengths to be exact.
    #[test]
    fn scores_are_bm25() {
        let passages = ["apple banana apple", "banana cherry", "cherry date elder fig", "apple"];
        let index = Index::open(&Options::default()).unwrap();
        let docs = passages.iter().enumerate();
        index
            .add(docs.map(|(i, p)| Document { id: Some(i.to_string()), title: None, content: p.to_string() }).collect())
            .unwrap();
        let lengths: Vec<f32> = passages.iter().map(|p| p.split(' ').count() as f32).collect();
        let average = lengths.iter().sum::<f32>() / lengths.len() as f32;
        let bm25 = |term: &str, doc: usize| {
            let n = passages.iter().filter(|p| p.split(' ').any(|w| w == term)).count() as f32;
            let idf = (1.0 + (passages.len() as f32 - n + 0.5) / (n + 0.5)).ln();
            let tf = passages[doc].split(' ').filter(|w| *w == term).count() as f32;
            idf * tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * lengths[doc] / average))
        };
        for (query, terms) in [("apple", &["apple"][..]), ("banana cherry", &["banana", "cherry"][..])] {
            for hit in index.search(query, 10).unwrap() {
                let doc: usize = hit.id.parse().unwrap();
                let expected: f32 = terms.iter().map(|t| bm25(t, doc)).sum();
                assert!((hit.score - expected).abs() < 1e-4, "{query:?} doc {doc}: {} vs {expected}", hit.score);
            }
        }
    }

    #[test]
    fn stems_and_ranks_by_bm25() {
        let index = Index::open(&Options::default()).unwrap();
        let doc = |id: &str, title: Option<&str>, content: &str| Document {
            id: Some(id.into()),
            title: title.map(Into::into),
            content: content.into(),
        };
        index
            .add(vec![
                doc("idx", Some("Inverted index"), "An index maps each term to the documents that contain it."),
                doc("run", None, "The runner was running a long run."),
                doc("other", None, "Nothing to see here."),
            ])
            .unwrap();
        assert_eq!(index.search("indexes", 5).unwrap()[0].id, "idx");
        assert_eq!(index.search("runs", 5).unwrap()[0].id, "run");
        let hits = index.batch_search(&["indexing terms", "running", "absent words"], 5).unwrap();
        assert_eq!(hits[0][0].id, "idx");
        assert_eq!(hits[1][0].id, "run");
        assert!(hits[2].is_empty());
    }

    #[test]
    fn a_budget_stops_searches_that_gather_too_much() {
        let index = Index::open(&Options::default()).unwrap();
        let docs = (0..50)
            .map(|i| Document { id: Some(format!("d{i}")), title: None, content: format!("common word number {i}") })
            .collect();
        index.add(docs).unwrap();
        let cost = |h: &Hit| h.content.len();
        let queries = vec!["common"; 10];
        let roomy = Budget::new(1 << 20, &cost);
        let hits = index.batch_search_within(&queries, 50, &roomy).unwrap();
        assert_eq!(hits.iter().map(Vec::len).sum::<usize>(), 500);
        let spent = roomy.used();
        let tight = Budget::new(spent - 1, &cost);
        let err = index.batch_search_within(&queries, 50, &tight).unwrap_err();
        assert!(matches!(err, Error::OverBudget { limit } if limit == spent - 1), "{err}");
        assert!(tight.used() < spent + 50 * 30, "stopped early: {} of {spent}", tight.used());
        let one = Budget::new(10, &cost);
        assert!(matches!(index.search_within("common", 5, &one), Err(Error::OverBudget { limit: 10 })));
        assert_eq!(index.search_within("common", 5, &Budget::new(1000, &cost)).unwrap().len(), 5);
    }
}
