//! Dense retrieval on the CPU (feature `dense`): an [`Encoder`] (a BERT-family sentence encoder
//! run with candle, tokenized with the `tokenizers` crate, loaded from a local model directory,
//! never a hub) and [`Vectors`], the passages' embeddings searched exactly.
//!
//! The model directory holds what a sentence-transformers model ships: `config.json`,
//! `tokenizer.json`, `model.safetensors`, and optionally `1_Pooling/config.json` (mean or CLS
//! pooling; mean when absent) and `modules.json` (a `Normalize` module: unit vectors). Queries
//! and passages get the prefixes e5/bge-style models need (`query: `, `passage: `), as
//! configured. Texts are encoded in batches of about the same length (sorted longest first),
//! padded to the longest of the batch and truncated at `max_tokens`; candle's matrix products use
//! every core.
//!
//! Search is exact: one dot product per passage over a flat, row-major `f32` matrix, in
//! fixed-size chunks the compiler vectorises, keeping the best `k` in a small heap. At 384
//! dimensions that is 5.9 ms per 100,000 passages on one core (`benches/rag.rs`), about half of
//! encoding the query (10.7 ms): below about a million passages an approximate index would save
//! little, and there is none yet.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use crate::error::{Error, Result};

/// How to load an [`Encoder`].
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderConfig {
    /// The model's directory.
    pub model_dir: PathBuf,
    /// Put before every query (`"query: "` for e5 models; empty for MiniLM).
    pub query_prefix: String,
    /// Put before every passage (`"passage: "` for e5 models).
    pub passage_prefix: String,
    /// Tokens kept per text (the rest is cut).
    pub max_tokens: usize,
    /// Texts per forward pass.
    pub batch: usize,
}

impl EncoderConfig {
    /// A model in `model_dir`, no prefixes, 256 tokens, batches of 32.
    pub fn new(model_dir: impl Into<PathBuf>) -> Self {
        EncoderConfig {
            model_dir: model_dir.into(),
            query_prefix: String::new(),
            passage_prefix: String::new(),
            max_tokens: 256,
            batch: 32,
        }
    }
}

/// A sentence encoder. See the module documentation.
pub struct Encoder {
    model: BertModel,
    tokenizer: Tokenizer,
    config: EncoderConfig,
    mean: bool,
    normalize: bool,
    dim: usize,
}

impl std::fmt::Debug for Encoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Encoder").field("model_dir", &self.config.model_dir).field("dim", &self.dim).finish()
    }
}

fn model_error(dir: &Path, what: impl std::fmt::Display) -> Error {
    Error::Model { path: dir.to_owned(), reason: what.to_string() }
}

impl Encoder {
    /// Loads the model in `config.model_dir` (see the module documentation).
    pub fn load(config: EncoderConfig) -> Result<Encoder> {
        let dir = config.model_dir.clone();
        let read = |name: &str| std::fs::read_to_string(dir.join(name)).map_err(|e| Error::io(dir.join(name), e));
        let bert: Config = serde_json::from_str(&read("config.json")?).map_err(|e| model_error(&dir, e))?;
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json")).map_err(|e| model_error(&dir, e))?;
        tokenizer.with_padding(Some(PaddingParams { strategy: PaddingStrategy::BatchLongest, ..Default::default() }));
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: config.max_tokens, ..Default::default() }))
            .map_err(|e| model_error(&dir, e))?;
        let weights = dir.join("model.safetensors");
        if !weights.is_file() {
            return Err(model_error(&dir, "no model.safetensors"));
        }
        // SAFETY: the weights file is mapped read-only; it must not change while the model lives
        // (a model directory is installed once, not rewritten in place).
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&[weights], DType::F32, &Device::Cpu) }
            .map_err(|e| model_error(&dir, e))?;
        let model = BertModel::load(vb, &bert).map_err(|e| model_error(&dir, e))?;
        let pooling: serde_json::Value =
            read("1_Pooling/config.json").ok().and_then(|t| serde_json::from_str(&t).ok()).unwrap_or_default();
        let mean = !pooling.get("pooling_mode_cls_token").and_then(|v| v.as_bool()).unwrap_or(false);
        let normalize = read("modules.json").map(|t| t.contains("Normalize")).unwrap_or(true);
        Ok(Encoder { model, tokenizer, mean, normalize, dim: bert.hidden_size, config })
    }

    /// The length of its vectors.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The config it was loaded with.
    pub fn config(&self) -> &EncoderConfig {
        &self.config
    }

    /// The queries' vectors, one row of [`Encoder::dim`] floats each.
    pub fn encode_queries<S: AsRef<str>>(&self, queries: &[S]) -> Result<Vec<f32>> {
        self.encode(queries, &self.config.query_prefix)
    }

    /// The passages' vectors, one row each.
    pub fn encode_passages<S: AsRef<str>>(&self, passages: &[S]) -> Result<Vec<f32>> {
        self.encode(passages, &self.config.passage_prefix)
    }

    /// The texts' rows, in order. Batches are made of texts of about the same length (longest
    /// first, as sentence-transformers does), so that little of a batch is padding: in batches
    /// taken in order, passages of 20 to 80 words are padded to the longest of 32.
    fn encode<S: AsRef<str>>(&self, texts: &[S], prefix: &str) -> Result<Vec<f32>> {
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(texts[i].as_ref().len()));
        let mut sorted = Vec::with_capacity(texts.len() * self.dim);
        for chunk in order.chunks(self.config.batch.max(1)) {
            let inputs: Vec<String> = chunk.iter().map(|&i| format!("{prefix}{}", texts[i].as_ref())).collect();
            self.forward(inputs, &mut sorted).map_err(|e| model_error(&self.config.model_dir, e))?;
        }
        let mut out = vec![0.0; sorted.len()];
        for (row, &i) in sorted.chunks_exact(self.dim).zip(&order) {
            out[i * self.dim..(i + 1) * self.dim].copy_from_slice(row);
        }
        Ok(out)
    }

    /// One batch through the model, pooled (and normalised) rows appended to `out`.
    fn forward(
        &self,
        inputs: Vec<String>,
        out: &mut Vec<f32>,
    ) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let encodings = self.tokenizer.encode_batch(inputs, true)?;
        let rows = encodings.len();
        let cols = encodings.first().map_or(0, |e| e.get_ids().len());
        let flat = |f: &dyn Fn(&tokenizers::Encoding) -> &[u32]| -> Vec<u32> {
            encodings.iter().flat_map(|e| f(e).iter().copied()).collect()
        };
        let device = &Device::Cpu;
        let ids = Tensor::from_vec(flat(&|e| e.get_ids()), (rows, cols), device)?;
        let types = Tensor::from_vec(flat(&|e| e.get_type_ids()), (rows, cols), device)?;
        let mask = Tensor::from_vec(flat(&|e| e.get_attention_mask()), (rows, cols), device)?;
        let hidden = self.model.forward(&ids, &types, Some(&mask))?;
        let pooled = if self.mean {
            let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
            let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
            let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?;
            summed.broadcast_div(&counts)?
        } else {
            hidden.narrow(1, 0, 1)?.squeeze(1)?
        };
        let pooled = if self.normalize {
            let norms = pooled.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
            pooled.broadcast_div(&norms)?
        } else {
            pooled
        };
        out.extend(pooled.flatten_all()?.to_vec1::<f32>()?);
        Ok(())
    }
}

/// Passages' vectors, by row, with the id of each row's passage.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Vectors {
    dim: usize,
    data: Vec<f32>,
    ids: Vec<String>,
}

/// A row and its score, ordered so that a max-heap keeps the worst on top.
#[derive(PartialEq)]
struct Scored(f32, usize);

impl Eq for Scored {}

impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        // Reversed: the heap's top is the lowest score (then the highest row, for a stable order).
        other.0.total_cmp(&self.0).then(self.1.cmp(&other.1))
    }
}

impl Vectors {
    /// No rows, of vectors of `dim` floats.
    pub fn new(dim: usize) -> Self {
        Vectors { dim, data: Vec::new(), ids: Vec::new() }
    }

    /// How many rows.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Adds `ids`' vectors (`rows`, row-major), replacing the rows of ids already there.
    pub fn add(&mut self, ids: Vec<String>, rows: &[f32]) {
        assert_eq!(rows.len(), ids.len() * self.dim, "one row of {} floats per id", self.dim);
        let replaced: std::collections::HashSet<&String> = ids.iter().collect();
        if self.ids.iter().any(|id| replaced.contains(id)) {
            let mut keep_data = Vec::with_capacity(self.data.len());
            let mut keep_ids = Vec::with_capacity(self.ids.len());
            for (i, id) in self.ids.iter().enumerate() {
                if !replaced.contains(id) {
                    keep_data.extend_from_slice(&self.data[i * self.dim..(i + 1) * self.dim]);
                    keep_ids.push(id.clone());
                }
            }
            self.data = keep_data;
            self.ids = keep_ids;
        }
        self.data.extend_from_slice(rows);
        self.ids.extend(ids);
    }

    /// The `k` rows nearest `query` by dot product (cosine for unit vectors), best first: each
    /// row's id and score.
    pub fn top_k(&self, query: &[f32], k: usize) -> Vec<(&str, f32)> {
        if k == 0 || self.dim == 0 || query.len() != self.dim {
            return Vec::new();
        }
        let mut heap: BinaryHeap<Scored> = BinaryHeap::with_capacity(k + 1);
        for (row, vector) in self.data.chunks_exact(self.dim).enumerate() {
            let score = dot(query, vector);
            if heap.len() < k {
                heap.push(Scored(score, row));
            } else if heap.peek().is_some_and(|worst| score > worst.0) {
                heap.pop();
                heap.push(Scored(score, row));
            }
        }
        let mut best: Vec<Scored> = heap.into_vec();
        best.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        best.into_iter().map(|Scored(score, row)| (self.ids[row].as_str(), score)).collect()
    }

    /// Writes the vectors to `dir` (`vectors.f32`: little-endian floats; `vectors.ids`: one id a
    /// line, JSON-quoted), with `stamp` (what they were made from) in `vectors.stamp`.
    pub fn save(&self, dir: &Path, stamp: &str) -> Result<()> {
        let write =
            |name: &str, bytes: &[u8]| std::fs::write(dir.join(name), bytes).map_err(|e| Error::io(dir.join(name), e));
        let floats: Vec<u8> = self.data.iter().flat_map(|f| f.to_le_bytes()).collect();
        write("vectors.f32", &floats)?;
        let ids: String = self.ids.iter().map(|id| serde_json::to_string(id).unwrap_or_default() + "\n").collect();
        write("vectors.ids", ids.as_bytes())?;
        write("vectors.stamp", format!("{}\n{stamp}", self.dim).as_bytes())
    }

    /// The vectors saved in `dir` with this `stamp`, if they are there and current.
    pub fn load(dir: &Path, stamp: &str) -> Option<Vectors> {
        let saved = std::fs::read_to_string(dir.join("vectors.stamp")).ok()?;
        let (dim, saved_stamp) = saved.split_once('\n')?;
        if saved_stamp != stamp {
            return None;
        }
        let dim: usize = dim.parse().ok()?;
        let bytes = std::fs::read(dir.join("vectors.f32")).ok()?;
        let data: Vec<f32> = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        let ids: Vec<String> = std::fs::read_to_string(dir.join("vectors.ids"))
            .ok()?
            .lines()
            .map(|l| serde_json::from_str(l).ok())
            .collect::<Option<_>>()?;
        (dim > 0 && data.len() == ids.len() * dim).then_some(Vectors { dim, data, ids })
    }
}

/// The dense side of an [`Index`](crate::Index): its encoder and every document's vector, kept
/// current with the index ([`Dense::attach`], [`Dense::add`]) and saved beside it.
pub struct Dense {
    encoder: Encoder,
    vectors: parking_lot::RwLock<Vectors>,
    dir: Option<PathBuf>,
    /// Whether the vectors were read back from the directory rather than computed.
    reused: bool,
}

impl std::fmt::Debug for Dense {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dense").field("encoder", &self.encoder).field("vectors", &self.vectors.read().len()).finish()
    }
}

/// The text of a document as the encoder sees it: its title, then its content.
fn passage(hit: &crate::Hit) -> String {
    if hit.title.is_empty() {
        hit.content.clone()
    } else {
        format!("{}. {}", hit.title, hit.content)
    }
}

impl Dense {
    /// The vectors of every document of `index`: read from `dir` when they were saved there for
    /// this model and this state of the index, else computed (in batches, on every core) and
    /// saved there ([`Dense::reused`] tells which).
    pub fn attach(encoder: Encoder, index: &crate::Index, dir: Option<&Path>) -> Result<Dense> {
        let stamp = Dense::stamp(&encoder, index)?;
        let saved = dir.and_then(|d| Vectors::load(d, &stamp));
        let reused = saved.is_some();
        let vectors = match saved {
            Some(v) => v,
            None => {
                let docs = index.documents()?;
                let texts: Vec<String> = docs.iter().map(passage).collect();
                let rows = encoder.encode_passages(&texts)?;
                let mut v = Vectors::new(encoder.dim());
                v.add(docs.into_iter().map(|d| d.id).collect(), &rows);
                if let Some(dir) = dir {
                    v.save(dir, &stamp)?;
                }
                v
            }
        };
        Ok(Dense { encoder, vectors: parking_lot::RwLock::new(vectors), dir: dir.map(Path::to_owned), reused })
    }

    /// What saved vectors must have been made from: the model, its prefixes and token limit,
    /// and the index's generation.
    fn stamp(encoder: &Encoder, index: &crate::Index) -> Result<String> {
        let c = encoder.config();
        Ok(format!(
            "{}|{:?}|{:?}|{}|{}",
            c.model_dir.display(),
            c.query_prefix,
            c.passage_prefix,
            c.max_tokens,
            index.generation()?
        ))
    }

    /// Embeds documents just added to `index` (replacing the vectors of their ids), and saves.
    pub fn add(&self, index: &crate::Index, documents: &[crate::Document], ids: &[String]) -> Result<()> {
        let texts: Vec<String> = documents
            .iter()
            .map(|d| {
                passage(&crate::Hit {
                    id: String::new(),
                    title: d.title.clone().unwrap_or_default(),
                    content: d.content.clone(),
                    score: 0.0,
                })
            })
            .collect();
        let rows = self.encoder.encode_passages(&texts)?;
        let mut vectors = self.vectors.write();
        vectors.add(ids.to_vec(), &rows);
        if let Some(dir) = &self.dir {
            vectors.save(dir, &Dense::stamp(&self.encoder, index)?)?;
        }
        Ok(())
    }

    /// The `k` documents nearest each query: ids and cosine scores, best first.
    pub fn search<S: AsRef<str>>(&self, queries: &[S], k: usize) -> Result<Vec<Vec<(String, f32)>>> {
        let rows = self.encoder.encode_queries(queries)?;
        let vectors = self.vectors.read();
        let dim = self.encoder.dim();
        Ok(rows
            .chunks_exact(dim)
            .map(|q| vectors.top_k(q, k).into_iter().map(|(id, s)| (id.to_owned(), s)).collect())
            .collect())
    }

    /// Whether the vectors were read back from the directory (current for this model and
    /// index) rather than computed when attached.
    pub fn reused(&self) -> bool {
        self.reused
    }

    /// The encoder.
    pub fn encoder(&self) -> &Encoder {
        &self.encoder
    }

    /// How many documents have a vector.
    pub fn len(&self) -> usize {
        self.vectors.read().len()
    }

    /// Whether none has.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One document of a fused ranking: its id, fused score, and where each method ranked it
/// (1-based) with what score.
#[derive(Debug, Clone, PartialEq)]
pub struct Fused {
    /// The document.
    pub id: String,
    /// Its reciprocal-rank-fusion score.
    pub score: f32,
    /// Its rank and score by BM25, if BM25 found it.
    pub bm25: Option<(usize, f32)>,
    /// Its rank and score by the encoder, if it was among the encoder's candidates.
    pub dense: Option<(usize, f32)>,
}

/// The constant of reciprocal rank fusion (Cormack et al.): a document's score is the sum over
/// the rankings of `1 / (RRF_K + rank)`.
pub const RRF_K: f32 = 60.0;

/// Fuses two rankings (ids and scores, best first) by reciprocal rank fusion; the best `k`.
pub fn fuse(bm25: &[(String, f32)], dense: &[(String, f32)], k: usize) -> Vec<Fused> {
    let mut by_id: std::collections::HashMap<&str, Fused> = std::collections::HashMap::new();
    for (rank, (id, score)) in bm25.iter().enumerate() {
        let entry = by_id.entry(id).or_insert_with(|| Fused { id: id.clone(), score: 0.0, bm25: None, dense: None });
        entry.score += 1.0 / (RRF_K + (rank + 1) as f32);
        entry.bm25 = Some((rank + 1, *score));
    }
    for (rank, (id, score)) in dense.iter().enumerate() {
        let entry = by_id.entry(id).or_insert_with(|| Fused { id: id.clone(), score: 0.0, bm25: None, dense: None });
        entry.score += 1.0 / (RRF_K + (rank + 1) as f32);
        entry.dense = Some((rank + 1, *score));
    }
    let mut fused: Vec<Fused> = by_id.into_values().collect();
    fused.sort_by(|a, b| b.score.total_cmp(&a.score).then_with(|| a.id.cmp(&b.id)));
    fused.truncate(k);
    fused
}

/// The dot product, in eight lanes the compiler turns into SIMD.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_top_k_is_best_first_and_replaces_by_id() {
        let mut v = Vectors::new(2);
        v.add(vec!["a".into(), "b".into(), "c".into()], &[1.0, 0.0, 0.0, 1.0, 0.7, 0.7]);
        assert_eq!(v.top_k(&[1.0, 0.1], 2).iter().map(|(id, _)| *id).collect::<Vec<_>>(), ["a", "c"]);
        v.add(vec!["a".into()], &[0.0, -1.0]);
        assert_eq!(v.len(), 3);
        assert_eq!(v.top_k(&[1.0, 0.1], 1)[0].0, "c");
        let dir = std::env::temp_dir().join(format!("agentflow-vectors-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        v.save(&dir, "stamp-1").unwrap();
        assert_eq!(Vectors::load(&dir, "stamp-1"), Some(v.clone()));
        assert_eq!(Vectors::load(&dir, "stamp-2"), None, "another corpus or model");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The model the tests use, installed by `tests/rag/install_model.sh`.
    pub(crate) fn model_dir() -> PathBuf {
        let dir = std::env::var_os("AGENTFLOW_RAG_MODEL")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/models/all-MiniLM-L6-v2"));
        assert!(
            dir.join("model.safetensors").is_file(),
            "no model in {}: run tests/rag/install_model.sh",
            dir.display()
        );
        dir
    }

    #[test]
    fn paraphrases_find_their_passages_with_unit_vectors() {
        let encoder = Encoder::load(EncoderConfig::new(model_dir())).unwrap();
        assert_eq!(encoder.dim(), 384);
        let passages = [
            "The cat sleeps on the warm mat by the fire.",
            "Stock markets fell sharply after the central bank raised interest rates.",
            "Knead the dough and let it rise before baking the bread.",
            "The spacecraft entered orbit around Jupiter after a five-year journey.",
        ];
        let rows = encoder.encode_passages(&passages).unwrap();
        for row in rows.chunks_exact(384) {
            let norm: f32 = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            assert!((norm - 1.0).abs() < 1e-4, "{norm}");
        }
        let mut vectors = Vectors::new(384);
        vectors.add((0..passages.len()).map(|i| i.to_string()).collect(), &rows);
        // Paraphrases sharing no content word with their passage.
        let queries = [
            "a kitten napping on a rug",
            "shares dropped when borrowing got dearer",
            "how to make a loaf",
            "a probe reaches the gas giant",
        ];
        let encoded = encoder.encode_queries(&queries).unwrap();
        for (i, q) in encoded.chunks_exact(384).enumerate() {
            assert_eq!(vectors.top_k(q, 1)[0].0, i.to_string(), "{}", queries[i]);
        }
        // Batching does not change a text's vector (padding is masked out of the pooling).
        let alone = encoder.encode_passages(&passages[1..2]).unwrap();
        let drift: f32 = alone.iter().zip(&rows[384..768]).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
        assert!(drift < 1e-4, "{drift}");
        // Rows come back in the texts' order, whatever order their batches ran in.
        let small = Encoder::load(EncoderConfig { batch: 1, ..EncoderConfig::new(model_dir()) }).unwrap();
        let reversed: Vec<&str> = passages.iter().rev().copied().collect();
        let back = small.encode_passages(&reversed).unwrap();
        for (i, row) in back.chunks_exact(384).enumerate() {
            let j = passages.len() - 1 - i;
            let drift = row.iter().zip(&rows[j * 384..(j + 1) * 384]).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max);
            assert!(drift < 1e-4, "row {i}: {drift}");
        }
    }

    #[test]
    fn fusion_rewards_agreement() {
        let s =
            |ids: &[&str]| ids.iter().enumerate().map(|(i, id)| (id.to_string(), 10.0 - i as f32)).collect::<Vec<_>>();
        let fused = fuse(&s(&["a", "b", "c"]), &s(&["c", "d", "a"]), 3);
        let ids: Vec<&str> = fused.iter().map(|f| f.id.as_str()).collect();
        assert_eq!(ids, ["a", "c", "b"], "in both lists first, then the best of one");
        assert_eq!((fused[0].bm25.unwrap().0, fused[0].dense.unwrap().0), (1, 3));
        assert_eq!(fused[2].dense, None);
    }

    #[test]
    fn dot_matches_the_plain_sum() {
        let a: Vec<f32> = (0..389).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..389).map(|i| (i as f32 * 0.11).cos()).collect();
        let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot(&a, &b) - plain).abs() < 1e-3);
    }
}
