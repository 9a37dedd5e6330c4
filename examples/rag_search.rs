//! Indexes a JSONL corpus (one document a line: `id`, `title`, `contents` or `text`) and answers
//! queries from the command line through the engine's `rag:search`, printing each hit with its
//! score. With no query arguments it reads one query a line from standard input.
//!
//! Run (the corpus that ships with the project, two queries):
//! `cargo run --release --no-default-features --features rag --example rag_search -- backends/rag/corpus/agentflow-docs.jsonl "session ttl" "error codes"`
//!
//! Options before the corpus: `--top-k N` (default 5), `--index-dir DIR` (keep the index on disk
//! and reopen it next time without re-indexing).

use std::io::BufRead;
use std::sync::Arc;
use std::time::Instant;

use agentflow_sandbox::backends::rag::RagBackend;
use agentflow_sandbox::Engine;
use serde_json::{json, Map, Value};

fn usage() -> ! {
    eprintln!("usage: rag_search [--top-k N] [--index-dir DIR] CORPUS.jsonl [QUERY ...]");
    std::process::exit(2)
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let mut config = Map::new();
    let mut top_k = 5u64;
    let corpus = loop {
        match args.next().as_deref() {
            Some("--top-k") => top_k = args.next().and_then(|n| n.parse().ok()).unwrap_or_else(|| usage()),
            Some("--index-dir") => {
                config.insert("index_dir".into(), Value::from(args.next().unwrap_or_else(|| usage())));
            }
            Some(flag) if flag.starts_with("--") => usage(),
            Some(path) => break path.to_owned(),
            None => usage(),
        }
    };
    config.insert("corpus_path".into(), Value::from(corpus));
    let backend = RagBackend::new(config).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2)
    });
    let engine = Engine::builder().backend(Arc::new(backend)).build().expect("engine");

    let start = Instant::now();
    let warm = engine.warmup(&[]).await;
    if warm.code != 0 {
        eprintln!("cannot load the corpus: {}", warm.message);
        std::process::exit(1);
    }
    let stats = engine.execute("cli", "rag:stats", json!({})).await.data;
    eprintln!(
        "{} documents ({}) in {:.2} s, {} KB of index",
        stats["documents"],
        stats["loaded"]["kind"].as_str().unwrap_or("?"),
        start.elapsed().as_secs_f64(),
        stats["index_bytes"].as_u64().unwrap_or(0) / 1024
    );

    let queries: Vec<String> = args.collect();
    let from_stdin = queries.is_empty();
    let mut lines = std::io::stdin().lock().lines();
    let mut queries = queries.into_iter();
    loop {
        let query = if from_stdin { lines.next().and_then(Result::ok) } else { queries.next() };
        let Some(query) = query else { break };
        if query.trim().is_empty() {
            continue;
        }
        let answer = engine.execute("cli", "rag:search", json!({"query": query, "top_k": top_k})).await;
        if answer.code != 0 {
            println!("{query:?}: error {}: {}", answer.code, answer.message);
            continue;
        }
        println!("{query:?} ({:.2} ms)", answer.meta.execution_time_ms);
        for (rank, hit) in answer.data["results"].as_array().into_iter().flatten().enumerate() {
            let content = hit["content"].as_str().unwrap_or("").replace('\n', " ");
            let preview: String = content.chars().take(100).collect();
            println!("  {}. [{:.3}] {} {}: {preview}", rank + 1, hit["score"], hit["id"], hit["title"]);
        }
    }
    engine.shutdown(false, true).await;
}
