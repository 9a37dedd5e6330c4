//! A deterministic synthetic corpus with queries whose right answer is known, for benches and
//! recall checks: a port of `shared/bench/gen_corpus.py`, bit for bit (same PRNG, vocabulary,
//! Zipf draw and output files), so figures measured here compare with the Python bm25s baseline.
//!
//! It owns generation and the generator's file formats only; indexing them is [`crate::Index`]'s.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

/// Size of the vocabulary.
pub const VOCABULARY: usize = 50_000;
/// Seed of the document stream.
pub const DOCUMENT_SEED: u64 = 42;
/// Seed of the query stream.
pub const QUERY_SEED: u64 = 4242;

const CONSONANTS: &[u8] = b"bcdfghjklmnprstvz";
const VOWELS: &[u8] = b"aeiou";

/// The splitmix64 generator the Python script uses.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from its seed.
    pub fn new(seed: u64) -> Self {
        SplitMix64(seed)
    }

    /// The next 64 random bits.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A float in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// The word of frequency rank `rank`: base-85 digits of `rank + 85`, one syllable per digit.
pub fn word(rank: usize) -> String {
    let mut n = rank + 85;
    let mut digits = Vec::new();
    while n > 0 {
        digits.push(n % 85);
        n /= 85;
    }
    let mut out = String::with_capacity(digits.len() * 2);
    for &d in digits.iter().rev() {
        out.push(CONSONANTS[d / 5] as char);
        out.push(VOWELS[d % 5] as char);
    }
    out
}

/// A generated query and the passage it was drawn from.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    /// Five words of the source passage, space separated.
    pub text: String,
    /// Index (and id) of the source passage.
    pub source: usize,
}

/// Passages and queries.
#[derive(Debug, Clone)]
pub struct Corpus {
    /// Passage texts; passage `i` has id `i`.
    pub passages: Vec<String>,
    /// Queries, each with its source passage.
    pub queries: Vec<Query>,
}

impl Corpus {
    /// Generates `passages` passages of 20 to 80 Zipf-distributed words and `queries` queries.
    pub fn generate(passages: usize, queries: usize) -> Corpus {
        let vocabulary: Vec<String> = (0..VOCABULARY).map(word).collect();
        let mut cdf = Vec::with_capacity(VOCABULARY);
        let mut acc = 0.0f64;
        for r in 0..VOCABULARY {
            acc += 1.0 / (r as f64 + 1.0);
            cdf.push(acc);
        }
        let total = acc;
        let mut rng = SplitMix64::new(DOCUMENT_SEED);
        let mut docs: Vec<Vec<usize>> = Vec::with_capacity(passages);
        for _ in 0..passages {
            let len = 20 + (rng.next() % 61) as usize;
            let doc = (0..len)
                .map(|_| {
                    let x = rng.unit() * total;
                    // bisect_right: the first rank whose cumulative weight exceeds x.
                    cdf.partition_point(|&c| c <= x).min(VOCABULARY - 1)
                })
                .collect();
            docs.push(doc);
        }
        let mut qrng = SplitMix64::new(QUERY_SEED);
        let mut out_queries = Vec::with_capacity(queries);
        if passages > 0 {
            for _ in 0..queries {
                let source = (qrng.next() % passages as u64) as usize;
                let doc = &docs[source];
                let words: Vec<&str> =
                    (0..5).map(|_| vocabulary[doc[(qrng.next() % doc.len() as u64) as usize]].as_str()).collect();
                out_queries.push(Query { text: words.join(" "), source });
            }
        }
        let passages = docs
            .iter()
            .map(|d| {
                let mut s = String::with_capacity(d.len() * 7);
                for (i, &r) in d.iter().enumerate() {
                    if i > 0 {
                        s.push(' ');
                    }
                    s.push_str(&vocabulary[r]);
                }
                s
            })
            .collect();
        Corpus { passages, queries: out_queries }
    }

    /// Writes `corpus.tsv`, `corpus.jsonl` and `queries.tsv` into `dir`, as the Python script does.
    pub fn write(&self, dir: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let mut tsv = BufWriter::new(File::create(dir.join("corpus.tsv"))?);
        for (i, p) in self.passages.iter().enumerate() {
            writeln!(tsv, "{i}\t{p}")?;
        }
        tsv.flush()?;
        self.write_jsonl(&dir.join("corpus.jsonl"))?;
        let mut q = BufWriter::new(File::create(dir.join("queries.tsv"))?);
        for (i, query) in self.queries.iter().enumerate() {
            writeln!(q, "{i}\t{}\t{}", query.text, query.source)?;
        }
        q.flush()
    }

    /// Writes the passages as the rag corpus format: `{"id": "i", "contents": "..."}` a line.
    pub fn write_jsonl(&self, path: &Path) -> io::Result<()> {
        let mut out = BufWriter::new(File::create(path)?);
        let mut line = String::new();
        for (i, p) in self.passages.iter().enumerate() {
            line.clear();
            // The words are plain ASCII letters: nothing to escape.
            let _ = writeln!(line, "{{\"id\": \"{i}\", \"contents\": \"{p}\"}}");
            out.write_all(line.as_bytes())?;
        }
        out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_distinct_and_short_first() {
        assert_eq!(word(0), "beba");
        assert_eq!(word(1), "bebe");
        let all: std::collections::HashSet<String> = (0..VOCABULARY).map(word).collect();
        assert_eq!(all.len(), VOCABULARY);
    }

    #[test]
    fn queries_are_drawn_from_their_source() {
        let c = Corpus::generate(200, 50);
        assert_eq!(c.queries.len(), 50);
        for q in &c.queries {
            let passage: std::collections::HashSet<&str> = c.passages[q.source].split(' ').collect();
            assert!(q.text.split(' ').all(|w| passage.contains(w)), "{q:?}");
        }
    }

    /// The files match the Python generator's, byte for byte: the sha256 values below are what
    /// `python3 shared/bench/gen_corpus.py OUT 1000 10` prints; `sha256sum` checks ours.
    #[test]
    fn files_match_the_python_generator() {
        let dir = std::env::temp_dir().join(format!("agentflow-rag-synthetic-{}", std::process::id()));
        Corpus::generate(1000, 10).write(&dir).unwrap();
        let sum = |name: &str| {
            let out = std::process::Command::new("sha256sum")
                .arg(dir.join(name))
                .output()
                .expect("sha256sum (coreutils) must be installed");
            String::from_utf8(out.stdout).unwrap().split_whitespace().next().unwrap_or_default().to_owned()
        };
        let (corpus, queries) = (sum("corpus.tsv"), sum("queries.tsv"));
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(corpus, PYTHON_CORPUS_SHA256);
        assert_eq!(queries, PYTHON_QUERIES_SHA256);
    }

    const PYTHON_CORPUS_SHA256: &str = "d04fcb4843a4fe0fa92f44c66bb322b990df9059ca4b79f297eeaef968bc011b";
    const PYTHON_QUERIES_SHA256: &str = "60b317d8736f18f8a6b85474723202996949cc7a151cf5ec743c9ae54f533332";
}
