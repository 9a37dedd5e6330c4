//! Retrieval quality on a known-item set: recall@1, recall@10 and MRR@10 of BM25 (and, given a
//! model, dense and hybrid) through the engine, for comparing settings quickly.
//!
//! The set is the man-page one of `tests/rag/quality/build_set.py` (`corpus.jsonl`, and
//! `queries.jsonl` with one right answer per query). Extra `key=value` arguments are rag config
//! keys (`stopwords=false`, `max_tokens=128`, `model_dir=...`).
//!
//! Run: `python3 tests/rag/quality/build_set.py target/rag-quality &&
//! cargo run --example rag_quality -- target/rag-quality [key=value ...]`

use std::sync::Arc;

use agentflow_sandbox::backends::rag::RagBackend;
use agentflow_sandbox::Engine;
use serde_json::{json, Map, Value};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let set = std::path::PathBuf::from(args.next().expect("usage: rag_quality SET_DIR [key=value ...]"));
    let mut config = Map::new();
    config.insert("corpus_path".into(), json!(set.join("corpus.jsonl")));
    config.insert("max_batch".into(), json!(100_000));
    config.insert("max_answer_bytes".into(), json!(1u64 << 30));
    for arg in args {
        let (key, value) = arg.split_once('=').expect("key=value");
        config.insert(key.into(), serde_json::from_str(value).unwrap_or_else(|_| json!(value)));
    }
    let with_model = config.contains_key("model_dir");
    let engine = Engine::builder().backend(Arc::new(RagBackend::new(config).expect("config"))).build().unwrap();
    let queries: Vec<Value> = std::fs::read_to_string(set.join("queries.jsonl"))
        .expect("queries.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let texts: Vec<&str> = queries.iter().map(|q| q["query"].as_str().unwrap()).collect();
    let modes: &[&str] = if with_model { &["bm25", "dense", "hybrid"] } else { &["bm25"] };
    for mode in modes {
        let start = std::time::Instant::now();
        let answer =
            engine.execute("q", "rag:batch_search", json!({"queries": texts, "top_k": 10, "mode": mode})).await;
        assert_eq!(answer.code, 0, "{}", answer.message);
        let ranks: Vec<Option<usize>> = answer.data["results"]
            .as_array()
            .unwrap()
            .iter()
            .zip(&queries)
            .map(|(hits, q)| hits.as_array().unwrap().iter().position(|h| h["id"] == q["answer"]).map(|r| r + 1))
            .collect();
        let n = ranks.len() as f64;
        let recall = |k: usize| ranks.iter().filter(|r| r.is_some_and(|r| r <= k)).count() as f64 / n;
        let mrr = ranks.iter().map(|r| r.map_or(0.0, |r| 1.0 / r as f64)).sum::<f64>() / n;
        println!(
            "{}",
            json!({"method": mode, "recall@1": recall(1), "recall@10": recall(10), "mrr@10": mrr,
                   "queries": ranks.len(), "seconds": start.elapsed().as_secs_f64()})
        );
    }
}
