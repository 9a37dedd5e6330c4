//! The rag backend on a generated 100,000-passage corpus (`agentflow_rag::synthetic`, the Rust
//! port of `shared/bench/gen_corpus.py`, fixed seeds): index build throughput (target over
//! 75,000 passages/s on 2 cores), `rag:search` top_k 10 through the `Engine` and directly on the
//! `Index` (target p50 under 0.25 ms), queries/s with both cores (target over 3,000), and
//! recall@10 of each query's source passage (bm25s: 94.9%).
//!
//! With the `dense` feature, also dense retrieval (`dense` below): passages embedded per second
//! (`benches/embed_baseline.py` measures sentence-transformers on the same passages, batch size
//! and threads), exact search over 100,000 vectors, and `rag:search` by mode through the engine.
//!
//! Run: `cargo bench --no-default-features --features rag --bench rag` (BM25), or with
//! `--features dense` after `tests/rag/install_model.sh`. Besides criterion's
//! figures it prints one summary line per target (p50/p90/p99 from 5 passes over the 1,000
//! queries, queries/s, recall).

use std::hint::black_box;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentflow_rag::synthetic::Corpus;
use agentflow_rag::{Index, Options};
use agentflow_sandbox::backends::rag::RagBackend;
use agentflow_sandbox::Engine;
use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use serde_json::{json, Map, Value};

const PASSAGES: usize = 100_000;
const QUERIES: usize = 1_000;
const TOP_K: usize = 10;

/// The generated corpus on disk, removed at the end.
struct Fixture {
    dir: PathBuf,
    corpus: Corpus,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = std::env::temp_dir().join(format!("agentflow-rag-bench-{}", std::process::id()));
        let corpus = Corpus::generate(PASSAGES, QUERIES);
        std::fs::create_dir_all(&dir).unwrap();
        corpus.write_jsonl(&dir.join("corpus.jsonl")).unwrap();
        Fixture { dir, corpus }
    }

    fn jsonl(&self) -> PathBuf {
        self.dir.join("corpus.jsonl")
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn percentiles(mut micros: Vec<f64>) -> String {
    micros.sort_by(|a, b| a.total_cmp(b));
    let at = |p: f64| micros[((micros.len() - 1) as f64 * p).round() as usize];
    format!("p50 {:.1} µs, p10 {:.1}, p90 {:.1}, p99 {:.1} (n={})", at(0.5), at(0.1), at(0.9), at(0.99), micros.len())
}

fn bench(c: &mut Criterion) {
    let fixture = Fixture::new();
    let never = AtomicBool::new(false);
    let options = Options::default();
    let queries: Vec<&str> = fixture.corpus.queries.iter().map(|q| q.text.as_str()).collect();

    // ---- build ----------------------------------------------------------------------------
    let mut group = c.benchmark_group("rag");
    group.sampling_mode(SamplingMode::Flat).sample_size(10).warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(20)).throughput(Throughput::Elements(PASSAGES as u64));
    group.bench_function("build_100k_passages", |b| {
        b.iter(|| black_box(Index::load(&fixture.jsonl(), &options, &never).unwrap()))
    });
    group.finish();

    let index = Index::load(&fixture.jsonl(), &options, &never).unwrap();
    let stats = index.stats().unwrap();
    if let agentflow_rag::Origin::Built { documents, seconds } = stats.origin {
        println!(
            "rag summary: build {documents} passages in {seconds:.2} s = {:.0} passages/s; {} segments, {} MB",
            documents as f64 / seconds,
            stats.segments,
            stats.index_bytes >> 20
        );
    }

    // ---- recall@10 ------------------------------------------------------------------------
    let found = fixture
        .corpus
        .queries
        .iter()
        .filter(|q| index.search(&q.text, TOP_K).unwrap().iter().any(|h| h.id == q.source.to_string()))
        .count();
    println!("rag summary: recall@10 {:.1}% ({found} of {QUERIES} source passages in the top 10)", found as f64 / 10.0);

    // ---- search, direct -------------------------------------------------------------------
    let mut group = c.benchmark_group("rag");
    group.measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1)).sample_size(50);
    let next = AtomicUsize::new(0);
    group.bench_function("search_top10_direct", |b| {
        b.iter(|| {
            let q = queries[next.fetch_add(1, Ordering::Relaxed) % QUERIES];
            black_box(index.search(q, TOP_K).unwrap())
        })
    });
    let mut micros = Vec::new();
    for _ in 0..5 {
        for q in &queries {
            let start = Instant::now();
            black_box(index.search(q, TOP_K).unwrap());
            micros.push(start.elapsed().as_secs_f64() * 1e6);
        }
    }
    println!("rag summary: search top 10, direct: {}", percentiles(micros));

    // ---- search, through the engine ---------------------------------------------------------
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut config = Map::new();
    config.insert("corpus_path".into(), Value::from(fixture.jsonl().to_string_lossy().into_owned()));
    let engine = rt.block_on(async {
        let engine = Engine::builder().backend(Arc::new(RagBackend::new(config).unwrap())).build().unwrap();
        assert_eq!(engine.warmup(&[]).await.code, 0);
        engine
    });
    group.bench_function("search_top10_engine", |b| {
        b.iter(|| {
            let q = queries[next.fetch_add(1, Ordering::Relaxed) % QUERIES];
            let e = rt.block_on(engine.execute("w", "rag:search", json!({"query": q, "top_k": TOP_K})));
            assert_eq!(black_box(e).code, 0)
        })
    });
    group.finish();
    let micros = rt.block_on(async {
        let mut micros = Vec::new();
        for _ in 0..5 {
            for q in &queries {
                let start = Instant::now();
                let e = engine.execute("w", "rag:search", json!({"query": q, "top_k": TOP_K})).await;
                assert_eq!(black_box(e).code, 0);
                micros.push(start.elapsed().as_secs_f64() * 1e6);
            }
        }
        micros
    });
    println!("rag summary: rag:search top 10 through the Engine: {}", percentiles(micros));

    // ---- throughput with both cores ---------------------------------------------------------
    let window = Duration::from_secs(3);
    let done = std::thread::scope(|s| {
        let workers: Vec<_> = (0..2)
            .map(|t| {
                let (index, queries) = (&index, &queries);
                s.spawn(move || {
                    let start = Instant::now();
                    let mut n = 0usize;
                    while start.elapsed() < window {
                        black_box(index.search(queries[(n * 2 + t) % QUERIES], TOP_K).unwrap());
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum::<usize>()
    });
    println!("rag summary: direct, 2 threads: {:.0} queries/s", done as f64 / window.as_secs_f64());
    let served = rt.block_on(async {
        let start = Instant::now();
        let tasks: Vec<_> = (0..8)
            .map(|t| {
                let (engine, queries) = (engine.clone(), queries.iter().map(|q| q.to_string()).collect::<Vec<_>>());
                tokio::spawn(async move {
                    let mut n = 0usize;
                    while start.elapsed() < window {
                        let q = &queries[(n * 8 + t) % QUERIES];
                        let e = engine.execute("w", "rag:search", json!({"query": q, "top_k": TOP_K})).await;
                        assert_eq!(e.code, 0);
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap();
        }
        total
    });
    println!(
        "rag summary: rag:search through the Engine, 8 callers on a 2-worker runtime: {:.0} queries/s",
        served as f64 / window.as_secs_f64()
    );
    let start = Instant::now();
    let batch = rt.block_on(engine.execute("w", "rag:batch_search", json!({"queries": queries, "top_k": TOP_K})));
    assert_eq!(batch.code, 0);
    println!(
        "rag summary: rag:batch_search of {QUERIES} queries: {:.0} queries/s",
        QUERIES as f64 / start.elapsed().as_secs_f64()
    );
    rt.block_on(engine.shutdown(false, true));
}

/// Dense retrieval (feature `dense`, the model of `tests/rag/install_model.sh`): passages
/// embedded per second on this machine, exact vector search over 100,000 vectors, and
/// `rag:search` in dense and hybrid modes through the engine on an index of 2,000 passages.
#[cfg(feature = "dense")]
fn dense(c: &mut Criterion) {
    use agentflow_rag::{Encoder, EncoderConfig, Vectors};
    let model = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/models/all-MiniLM-L6-v2"));
    assert!(model.join("model.safetensors").is_file(), "run tests/rag/install_model.sh");
    let corpus = Corpus::generate(2_000, 200);
    let encoder = Encoder::load(EncoderConfig::new(&model)).unwrap();
    // Passages embedded per second (20 to 80 generated words each, about 104 tokens).
    let sample = &corpus.passages[..256];
    let start = Instant::now();
    let rows = encoder.encode_passages(sample).unwrap();
    let rate = sample.len() as f64 / start.elapsed().as_secs_f64();
    let tokens: f64 = sample.iter().map(|p| p.split_whitespace().count() as f64).sum::<f64>() / sample.len() as f64;
    println!("rag dense summary: {rate:.1} passages/s embedded (about {tokens:.0} words each, 256 tokens at most, batches of 32)");
    // Exact search over 100,000 vectors (the rows repeated, perturbed).
    let mut vectors = Vectors::new(encoder.dim());
    let mut all = Vec::with_capacity(100_000 * encoder.dim());
    for i in 0..100_000 {
        let row = &rows[(i % 256) * encoder.dim()..(i % 256 + 1) * encoder.dim()];
        all.extend(row.iter().enumerate().map(|(j, x)| x + ((i * 31 + j) % 97) as f32 * 1e-4));
    }
    vectors.add((0..100_000).map(|i| i.to_string()).collect(), &all);
    let query = encoder.encode_queries(&["reference document about"]).unwrap();
    let mut group = c.benchmark_group("rag_dense");
    group.bench_function("exact_top10_of_100k_vectors", |b| b.iter(|| black_box(vectors.top_k(&query, 10))));
    group.bench_function("encode_one_query", |b| {
        b.iter(|| black_box(encoder.encode_queries(&["what is a reference document"]).unwrap()))
    });
    // Through the engine, on 2,000 passages.
    let dir = std::env::temp_dir().join(format!("agentflow-rag-dense-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let small = Corpus::generate(2_000, 200);
    small.write_jsonl(&dir.join("corpus.jsonl")).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let config: Map<String, Value> = serde_json::from_value(json!({
        "corpus_path": dir.join("corpus.jsonl"), "model_dir": model,
    }))
    .unwrap();
    let engine =
        rt.block_on(async { Engine::builder().backend(Arc::new(RagBackend::new(config).unwrap())).build().unwrap() });
    let start = Instant::now();
    assert_eq!(rt.block_on(engine.warmup(&[])).code, 0);
    println!("rag dense summary: warm-up with 2,000 passages embedded: {:.1} s", start.elapsed().as_secs_f64());
    let texts: Vec<&str> = small.queries.iter().map(|q| q.text.as_str()).collect();
    for mode in ["bm25", "dense", "hybrid"] {
        let mut micros = Vec::new();
        let next = AtomicUsize::new(0);
        group.bench_function(format!("search_top10_{mode}_2k"), |b| {
            b.iter(|| {
                let q = texts[next.fetch_add(1, Ordering::Relaxed) % texts.len()];
                let start = Instant::now();
                let answer =
                    rt.block_on(engine.execute("w", "rag:search", json!({"query": q, "top_k": TOP_K, "mode": mode})));
                micros.push(start.elapsed().as_secs_f64() * 1e6);
                assert_eq!(answer.code, 0, "{}", answer.message);
            })
        });
        if !micros.is_empty() {
            println!("rag dense summary: rag:search {mode} on 2,000 passages: {}", percentiles(micros));
        }
    }
    group.finish();
    rt.block_on(engine.shutdown(false, true));
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(not(feature = "dense"))]
fn dense(_: &mut Criterion) {}

criterion_group!(benches, bench, dense);
criterion_main!(benches);
