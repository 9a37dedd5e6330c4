//! Integration tests of the rag backend through the [`Engine`]: a fixture corpus whose right
//! answers are known (stemming included), ranking and `top_k`, the `context` string, documents
//! added at run time (found at once, and again after a restart on the same `index_dir`), a bad
//! corpus line named by its number, searches running while documents are being indexed, config
//! errors, the corpus the default server config ships, and the caps on what one call may cost
//! (hits per query, queries per batch, answer bytes, and the memory a large answer leaves).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use agentflow_sandbox::backends::rag::RagBackend;
use agentflow_sandbox::{Engine, Envelope};
use serde_json::{json, Map, Value};

use crate::common::status_kib;

/// A directory removed when the test ends.
struct Scratch(PathBuf);

impl Scratch {
    fn new(what: &str) -> Scratch {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("agentflow-rag-it-{what}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).to_string_lossy().into_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Twelve passages on distinct topics; line 11 has no id (so its id is "11") and line 7 no title.
const FIXTURE: &[&str] = &[
    r#"{"id": "photosynthesis", "title": "Photosynthesis", "contents": "Plants convert sunlight, water and carbon dioxide into glucose and oxygen in their leaves."}"#,
    r#"{"id": "tides", "title": "Tides", "contents": "The gravitational pull of the moon raises the ocean tides twice a day."}"#,
    r#"{"id": "index", "title": "Inverted index", "contents": "A search engine keeps an index that maps every term to the documents containing it."}"#,
    r#"{"id": "volcano", "title": "Volcanoes", "contents": "Magma rises through the crust and erupts as lava from a volcano."}"#,
    r#"{"id": "bread", "title": "Baking bread", "text": "Yeast ferments the dough, which rises before it is baked in a hot oven."}"#,
    r#"{"id": "rust", "title": "Rust ownership", "contents": "Each value in Rust has an owner; the borrow checker makes sure references never outlive it."}"#,
    r#"{"id": "chess", "contents": "The knight moves in an L shape and can jump over the other pieces on the chessboard."}"#,
    r#"{"id": "honey", "title": "Honey bees", "contents": "Bees collect nectar from flowers and store honey in wax combs in the hive."}"#,
    r#"{"id": "glacier", "title": "Glaciers", "contents": "Glaciers carve valleys as compacted snow and ice flow slowly downhill."}"#,
    r#"{"id": "marathon", "title": "Marathon", "contents": "Runners train for months before running the 42 kilometre marathon race."}"#,
    r#"{"title": "Comets", "contents": "A comet's tail of gas and dust always points away from the sun."}"#,
    r#"{"id": "vaccine", "title": "Vaccines", "contents": "A vaccine trains the immune system to recognise a virus without causing the disease."}"#,
];

/// Queries and the passage that must rank first.
const ANSWERS: &[(&str, &str)] = &[
    ("how do plants make oxygen from sunlight", "photosynthesis"),
    ("moon gravity and the ocean", "tides"),
    ("indexes", "index"),
    ("lava eruptions", "volcano"),
    ("bakers baking in ovens", "bread"),
    ("borrowing references", "rust"),
    ("knights jumping", "chess"),
    ("bee hives", "honey"),
    ("valleys carved by ice", "glacier"),
    ("runs", "marathon"),
    ("comet tails", "11"),
    ("immunization against viruses", "vaccine"),
];

fn write_fixture(scratch: &Scratch) -> String {
    let path = scratch.path("corpus.jsonl");
    std::fs::write(&path, FIXTURE.join("\n") + "\n").unwrap();
    path
}

fn engine_with(config: Value) -> Engine {
    let config: Map<String, Value> = serde_json::from_value(config).unwrap();
    Engine::builder().backend(Arc::new(RagBackend::new(config).unwrap())).build().unwrap()
}

fn ok(envelope: Envelope) -> Value {
    assert_eq!(envelope.code, 0, "{}: {}", envelope.message, envelope.data);
    envelope.data
}

fn ids(data: &Value) -> Vec<String> {
    data["results"].as_array().unwrap().iter().map(|h| h["id"].as_str().unwrap().to_owned()).collect()
}

#[tokio::test]
async fn the_expected_passage_ranks_first() {
    let scratch = Scratch::new("rank");
    let engine = engine_with(json!({"corpus_path": write_fixture(&scratch)}));
    for (query, expected) in ANSWERS {
        let data = ok(engine.execute("w", "rag:search", json!({"query": query})).await);
        assert_eq!(data["query"], *query);
        assert_eq!(ids(&data).first().map(String::as_str), Some(*expected), "query {query:?}: {data}");
    }
    let stats = ok(engine.execute("w", "rag:stats", json!({})).await);
    assert_eq!(stats["documents"], FIXTURE.len());
    assert_eq!(stats["method"], "bm25");
    assert!(stats["index_bytes"].as_u64().unwrap() > 0, "{stats}");
    assert_eq!(stats["loaded"]["kind"], "built");
    engine.shutdown(false, true).await;
}

#[tokio::test]
async fn scores_descend_and_top_k_is_honoured() {
    let scratch = Scratch::new("topk");
    let corpus = write_fixture(&scratch);
    // Stop words are dropped by default: a query of nothing else finds nothing.
    let default = engine_with(json!({"corpus_path": corpus}));
    let none = ok(default.execute("w", "rag:search", json!({"query": "the a in of"})).await);
    assert_eq!(none["results"], json!([]), "{none}");
    let engine = engine_with(json!({"corpus_path": corpus, "default_top_k": 4, "stopwords": false}));
    // Kept, "the" and "a" occur in most passages.
    let query = "the a in of";
    let default = ok(engine.execute("w", "rag:search", json!({"query": query})).await);
    assert_eq!(default["results"].as_array().unwrap().len(), 4, "default_top_k from the config");
    for k in [1, 3, 10] {
        let data = ok(engine.execute("w", "rag:search", json!({"query": query, "top_k": k})).await);
        let scores: Vec<f64> =
            data["results"].as_array().unwrap().iter().map(|h| h["score"].as_f64().unwrap()).collect();
        assert_eq!(scores.len(), k, "top_k {k}: {data}");
        assert!(scores.windows(2).all(|w| w[0] >= w[1]), "scores not descending: {scores:?}");
        assert!(scores.iter().all(|&s| s > 0.0));
    }
    let too_many = engine.execute("w", "rag:search", json!({"query": query, "top_k": 0})).await;
    assert_eq!(too_many.code, 1002);
    engine.shutdown(false, true).await;
}

#[tokio::test]
async fn context_renders_hits_as_the_original_did() {
    let scratch = Scratch::new("context");
    let engine = engine_with(json!({"corpus_path": write_fixture(&scratch)}));
    let data = ok(engine.execute("w", "rag:search", json!({"query": "knight inverted index", "top_k": 2})).await);
    let results = data["results"].as_array().unwrap();
    let render = |h: &Value| match h["title"].as_str().unwrap() {
        "" => h["content"].as_str().unwrap().to_owned(),
        title => format!("[{title}]\n{}", h["content"].as_str().unwrap()),
    };
    let expected = results.iter().map(render).collect::<Vec<_>>().join("\n---\n");
    assert_eq!(data["context"], expected);
    assert!(expected.contains("[Inverted index]\nA search engine keeps"), "{expected}");
    assert!(expected.contains("\n---\nThe knight moves") || expected.starts_with("The knight moves"), "{expected}");
    engine.shutdown(false, true).await;
}

#[tokio::test]
async fn empty_queries_are_parameter_errors_and_no_match_is_empty() {
    let scratch = Scratch::new("empty");
    let engine = engine_with(json!({"corpus_path": write_fixture(&scratch)}));
    for query in ["", "   \n"] {
        let e = engine.execute("w", "rag:search", json!({"query": query})).await;
        assert_eq!(e.code, 1002, "{query:?}: {}", e.message);
        assert_eq!(e.data["field"], "query");
    }
    let none = ok(engine.execute("w", "rag:search", json!({"query": "xylophone zeppelin"})).await);
    assert_eq!(none["results"], json!([]));
    assert_eq!(none["context"], "");
    let batch = engine.execute("w", "rag:batch_search", json!({"queries": ["tides", " "]})).await;
    assert_eq!((batch.code, &batch.data["field"]), (1002, &json!("queries[1]")));
    let missing = engine.execute("w", "rag:search", json!({})).await;
    assert_eq!(missing.code, 1002);
    engine.shutdown(false, true).await;
}

#[tokio::test]
async fn batch_search_answers_each_query_in_order() {
    let scratch = Scratch::new("batch");
    let engine = engine_with(json!({"corpus_path": write_fixture(&scratch)}));
    let queries: Vec<&str> = ANSWERS.iter().map(|(q, _)| *q).collect();
    let data = ok(engine.execute("w", "rag:batch_search", json!({"queries": queries, "top_k": 2})).await);
    let results = data["results"].as_array().unwrap();
    assert_eq!(results.len(), ANSWERS.len());
    assert_eq!(data["contexts"].as_array().unwrap().len(), ANSWERS.len());
    for ((query, expected), hits) in ANSWERS.iter().zip(results) {
        assert!(hits.as_array().unwrap().len() <= 2);
        assert_eq!(hits[0]["id"], *expected, "query {query:?}");
    }
    engine.shutdown(false, true).await;
}

#[tokio::test]
async fn added_documents_are_found_at_once_and_after_a_restart() {
    let scratch = Scratch::new("restart");
    let config = json!({"corpus_path": write_fixture(&scratch), "index_dir": scratch.path("index")});
    let first = engine_with(config.clone());
    let added = ok(first
        .execute(
            "w",
            "rag:index",
            json!({"documents": [
                {"id": "quasar", "title": "Quasars", "content": "Quasars are luminous active galactic nuclei."},
                {"content": "Pulsars are rotating neutron stars that emit beams of radiation."},
            ]}),
        )
        .await);
    assert_eq!(added["indexed"], 2);
    assert_eq!(added["total"], FIXTURE.len() + 2);
    let pulsar_id = added["ids"][1].as_str().unwrap().to_owned();
    assert_eq!(ids(&ok(first.execute("w", "rag:search", json!({"query": "quasars"})).await))[0], "quasar");
    assert_eq!(ids(&ok(first.execute("w", "rag:search", json!({"query": "neutron star"})).await))[0], pulsar_id);
    first.shutdown(false, true).await;
    drop(first);

    let second = engine_with(config);
    let stats = ok(second.execute("w", "rag:stats", json!({})).await);
    assert_eq!(stats["loaded"]["kind"], "reopened", "the index is current: not rebuilt");
    assert_eq!(stats["documents"], FIXTURE.len() + 2);
    assert_eq!(ids(&ok(second.execute("w", "rag:search", json!({"query": "quasar"})).await))[0], "quasar");
    assert_eq!(ids(&ok(second.execute("w", "rag:search", json!({"query": "indexes"})).await))[0], "index");
    let bad = second.execute("w", "rag:index", json!({"documents": [{"title": "no content"}]})).await;
    assert_eq!((bad.code, &bad.data["field"]), (1002, &json!("documents[0].content")));
    second.shutdown(false, true).await;
}

#[tokio::test]
async fn a_bad_corpus_line_fails_the_load_naming_it() {
    let scratch = Scratch::new("badline");
    let mut lines: Vec<&str> = FIXTURE[..6].to_vec();
    lines.push(r#"{"id": "broken", "title": "a document without its text"}"#);
    lines.extend(&FIXTURE[7..]);
    let path = scratch.path("corpus.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    let engine = engine_with(json!({"corpus_path": path}));
    let e = engine.execute("w", "rag:search", json!({"query": "tides"})).await;
    assert_eq!(e.code, 2003, "{}", e.message);
    assert!(e.message.contains("line 7"), "{}", e.message);
    assert!(e.message.contains("'contents' or 'text'"), "{}", e.message);
    let report = engine.warmup(&["rag".into()]).await;
    assert_eq!(report.code, 2003);
    assert!(report.data["backends"]["rag"]["error"].as_str().unwrap().contains("line 7"), "{}", report.data);

    // Fixed, the next call loads it: a failed warm-up is retried.
    std::fs::write(&path, FIXTURE.join("\n") + "\n").unwrap();
    assert_eq!(ids(&ok(engine.execute("w", "rag:search", json!({"query": "tides"})).await))[0], "tides");
    engine.shutdown(false, true).await;
}

/// `n` documents to index in bulk: `bulk-<i>`, each saying its number.
fn bulk_documents(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| json!({"id": format!("bulk-{i}"), "content": format!("bulk passage number {i} about nothing much")}))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn searches_keep_running_while_documents_are_indexed() {
    let scratch = Scratch::new("concurrent");
    let engine = engine_with(json!({"corpus_path": write_fixture(&scratch)}));
    ok(engine.warmup(&[]).await);
    let documents = bulk_documents(40_000);
    let indexing = Arc::new(AtomicBool::new(true));
    let indexer = {
        let (engine, indexing) = (engine.clone(), indexing.clone());
        tokio::spawn(async move {
            let e = engine.execute("w", "rag:index", json!({"documents": documents})).await;
            indexing.store(false, Ordering::Release);
            e
        })
    };
    let searchers: Vec<_> = (0..16)
        .map(|i| {
            let (engine, indexing) = (engine.clone(), indexing.clone());
            let (query, expected) = ANSWERS[i % ANSWERS.len()];
            tokio::spawn(async move {
                let (mut during, mut total) = (0, 0);
                loop {
                    let was_indexing = indexing.load(Ordering::Acquire);
                    let e = engine.execute(&format!("w{i}"), "rag:search", json!({"query": query})).await;
                    assert_eq!(e.code, 0, "{}", e.message);
                    assert_eq!(e.data["results"][0]["id"], expected, "query {query:?}");
                    total += 1;
                    if was_indexing && indexing.load(Ordering::Acquire) {
                        during += 1;
                    }
                    if !indexing.load(Ordering::Acquire) || total >= 100_000 {
                        return (during, total);
                    }
                }
            })
        })
        .collect();
    let mut overlapping = 0;
    for s in searchers {
        let (during, _) = s.await.unwrap();
        overlapping += usize::from(during > 0);
    }
    let indexed = ok(indexer.await.unwrap());
    assert_eq!(indexed["indexed"], 40_000);
    assert_eq!(overlapping, 16, "every one of the 16 searchers completed a search while indexing ran");
    let data = ok(engine.execute("w", "rag:search", json!({"query": "bulk passage number 31415"})).await);
    assert_eq!(data["results"][0]["id"], "bulk-31415");
    engine.shutdown(false, true).await;
}

/// Indexing many documents outlasts a short timeout: the call answers 2002 when its timeout
/// passes, before the documents are in (the indexing goes on behind it), and they are searchable
/// once it ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexing_that_outlasts_its_timeout_answers_on_time_and_finishes_behind() {
    let scratch = Scratch::new("index-timeout");
    let engine = engine_with(json!({"corpus_path": write_fixture(&scratch)}));
    ok(engine.warmup(&[]).await);
    let documents = bulk_documents(40_000);
    let request = serde_json::from_value(json!({
        "worker_id": "w", "action": "rag:index", "params": {"documents": documents}, "timeout": 0.05,
    }))
    .unwrap();
    let e = engine.execute_request(request).await;
    assert_eq!(e.code, 2002, "{}", e.message);
    let found = |e: &Envelope| e.data["results"].as_array().is_some_and(|r| r.iter().any(|h| h["id"] == "bulk-31415"));
    let search = || engine.execute("w", "rag:search", json!({"query": "bulk passage number 31415"}));
    assert!(!found(&search().await), "the answer came before the documents were in");
    let mut tries = 0;
    while !found(&search().await) {
        tries += 1;
        assert!(tries < 1200, "the indexing never finished");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    engine.shutdown(false, true).await;
}

#[tokio::test]
async fn mistyped_config_is_a_configuration_error_naming_the_key() {
    for (key, value) in [
        ("default_top_k", json!("five")),
        ("default_top_k", json!(0)),
        ("corpus_path", json!(3)),
        ("index_dir", json!(["a"])),
        ("writer_memory", json!(1000)),
        ("method", json!("dense")),
        ("max_top_k", json!(0)),
        ("max_batch", json!(-1)),
        ("max_answer_bytes", json!(10)),
    ] {
        let mut config = Map::new();
        config.insert(key.into(), value);
        let e = RagBackend::new(config).unwrap_err();
        assert_eq!(e.code(), 5001, "{key}");
        assert!(e.to_string().contains(key), "{e}");
    }
}

#[tokio::test]
async fn no_corpus_starts_empty_and_a_missing_corpus_is_named() {
    let engine = engine_with(json!({}));
    let data = ok(engine.execute("w", "rag:search", json!({"query": "anything"})).await);
    assert_eq!(data["results"], json!([]));
    ok(engine.execute("w", "rag:index", json!({"documents": [{"content": "the first document"}]})).await);
    assert_eq!(ids(&ok(engine.execute("w", "rag:search", json!({"query": "first"})).await)), ["1"]);
    engine.shutdown(false, true).await;

    let engine = engine_with(json!({"corpus_path": "/nonexistent/corpus.jsonl"}));
    let e = engine.execute("w", "rag:stats", json!({})).await;
    assert_eq!(e.code, 2003);
    assert!(e.message.contains("/nonexistent/corpus.jsonl"), "{}", e.message);
}

#[tokio::test]
async fn the_default_config_serves_the_shipped_corpus() {
    let config = agentflow_sandbox::config::Config::default();
    let rag = config.resources["rag"].config.clone();
    let engine = Engine::builder().backend(Arc::new(RagBackend::new(rag).unwrap())).build().unwrap();
    let data = ok(engine.execute("w", "rag:search", json!({"query": "session time-to-live", "top_k": 3})).await);
    assert_eq!(data["results"].as_array().unwrap().len(), 3, "{data}");
    assert!(data["context"].as_str().unwrap().contains("PROTOCOL.md"), "{}", data["context"]);
    engine.shutdown(false, true).await;
}

/// `n` documents of about `size` bytes, each holding the word "common" (so that every query with
/// it matches them all) and a word of its own.
fn big_documents(n: usize, size: usize) -> Value {
    let filler = "lorem ipsum dolor sit amet ".repeat(size / 27 + 1);
    let docs: Vec<Value> = (0..n)
        .map(|i| json!({"id": format!("d{i}"), "title": format!("Doc {i}"), "content": format!("common unique{i} {}", &filler[..size])}))
        .collect();
    json!({"documents": docs})
}

/// The process's resident memory, from `/proc/self/status`, in bytes.
fn rss() -> u64 {
    status_kib("VmRSS:") * 1024
}

fn assert_param(envelope: &Envelope, field: &str, cap: &str) {
    assert_eq!(envelope.code, 1002, "{}: {}", envelope.message, envelope.data);
    assert_eq!(envelope.data["field"], field, "{}", envelope.message);
    assert!(envelope.message.contains(cap), "the message names the cap {cap}: {}", envelope.message);
}

/// The attack of the security review (10,000 queries, top_k 1,000) and anything past the
/// default or configured caps is a 1002 naming the parameter and the cap.
#[tokio::test]
async fn top_k_and_batch_size_are_capped() {
    let scratch = Scratch::new("caps");
    let engine = engine_with(json!({"corpus_path": write_fixture(&scratch)}));
    let queries = vec!["the tides"; 10_000];
    let e = engine.execute("w", "rag:batch_search", json!({"queries": queries, "top_k": 1000})).await;
    assert_eq!(e.code, 1002, "{}", e.message);
    let e = engine.execute("w", "rag:batch_search", json!({"queries": vec!["tides"; 1001]})).await;
    assert_param(&e, "queries", "1000");
    let e = engine.execute("w", "rag:search", json!({"query": "tides", "top_k": 101})).await;
    assert_param(&e, "top_k", "100");
    ok(engine.execute("w", "rag:batch_search", json!({"queries": vec!["tides"; 1000], "top_k": 100})).await);
    let stats = ok(engine.execute("w", "rag:stats", json!({})).await);
    assert_eq!((stats["max_top_k"].as_u64(), stats["max_batch"].as_u64()), (Some(100), Some(1000)));
    assert_eq!(stats["max_answer_bytes"].as_u64(), Some(16 << 20));
    engine.shutdown(false, true).await;

    let config = json!({"corpus_path": write_fixture(&scratch), "max_top_k": 3, "max_batch": 2, "default_top_k": 2});
    let engine = engine_with(config);
    let e = engine.execute("w", "rag:search", json!({"query": "tides", "top_k": 4})).await;
    assert_param(&e, "top_k", "3");
    let e = engine.execute("w", "rag:batch_search", json!({"queries": ["a", "b", "c"]})).await;
    assert_param(&e, "queries", "2");
    ok(engine.execute("w", "rag:batch_search", json!({"queries": ["tides", "moon"], "top_k": 3})).await);
    engine.shutdown(false, true).await;
    let mut config = Map::new();
    config.insert("max_top_k".into(), json!(3));
    config.insert("default_top_k".into(), json!(5));
    let e = RagBackend::new(config).unwrap_err();
    assert!(e.to_string().contains("default_top_k"), "{e}");
}

/// An answer over `max_answer_bytes` is refused with a 1002 naming the parameter and the cap;
/// under it, the answer's `data` is indeed within the cap.
#[tokio::test]
async fn answers_over_max_answer_bytes_are_refused() {
    let engine = engine_with(json!({"max_answer_bytes": 64 * 1024}));
    ok(engine.execute("w", "rag:index", big_documents(40, 1000)).await);
    let e = engine.execute("w", "rag:batch_search", json!({"queries": vec!["common"; 40], "top_k": 40})).await;
    assert_param(&e, "queries", "max_answer_bytes (65536 bytes)");
    let e = engine.execute("w", "rag:search", json!({"query": "common", "top_k": 40})).await;
    assert_param(&e, "top_k", "max_answer_bytes (65536 bytes)");
    // The largest batch that fits: its JSON is within the cap.
    let mut fitted = 0;
    for n in 1..=40 {
        let e = engine.execute("w", "rag:batch_search", json!({"queries": vec!["common"; n], "top_k": 10})).await;
        if e.code != 0 {
            assert_param(&e, "queries", "65536");
            break;
        }
        let bytes = serde_json::to_vec(&e.data).unwrap().len();
        assert!(bytes <= 64 * 1024, "{n} queries: {bytes} bytes of data");
        fitted = n;
    }
    assert!(fitted >= 2, "a few queries fit: {fitted}");
    assert!(fitted < 40, "not all do");
    engine.shutdown(false, true).await;
}

/// A batch near the default 16 MiB cap, answered and serialised as the HTTP layer does, eight
/// times: resident memory reaches a plateau (nothing kept per answer), and a batch far over the
/// cap is refused without growing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_returns_after_large_answers() {
    let engine = engine_with(json!({}));
    for chunk in 0..4 {
        let docs = big_documents(50, 1000);
        let docs: Vec<Value> = docs["documents"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                let mut d = d.clone();
                d["id"] = json!(format!("c{chunk}-{}", d["id"].as_str().unwrap()));
                d
            })
            .collect();
        ok(engine.execute("w", "rag:index", json!({"documents": docs})).await);
    }
    ok(engine.execute("w", "rag:search", json!({"query": "common"})).await);
    let queries: Vec<String> = (0..75).map(|i| format!("common unique{i}")).collect();
    let mut sizes = Vec::new();
    let before = rss();
    let mut after_first = 0;
    let mut warm = 0;
    for round in 0..8 {
        let envelope = engine.execute("w", "rag:batch_search", json!({"queries": queries, "top_k": 100})).await;
        assert_eq!(envelope.code, 0, "{}", envelope.message);
        let bytes = serde_json::to_vec(&envelope).unwrap();
        sizes.push(bytes.len());
        drop((envelope, bytes));
        match round {
            0 => after_first = rss(),
            2 => warm = rss(),
            _ => {}
        }
    }
    let after = rss();
    let far_over = engine.execute("w", "rag:batch_search", json!({"queries": vec!["common"; 1000], "top_k": 100}));
    let far_over_code = far_over.await.code;
    let after_refusal = rss();
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    eprintln!(
        "rag rss: before {:.1} MiB, after 1 answer {:.1}, after 3 {:.1}, after 8 {:.1}, after a refused \
         1000x100 batch {:.1}; answers {} bytes",
        mib(before),
        mib(after_first),
        mib(warm),
        mib(after),
        mib(after_refusal),
        sizes[0]
    );
    assert_eq!(far_over_code, 1002, "a 1000 x 100 batch of 1 KB passages is over the cap");
    assert!(sizes[0] > 14 << 20 && sizes[0] < 17 << 20, "near the cap: {} bytes", sizes[0]);
    // The allocator keeps one answer's peak for the next; answers after that add nothing.
    assert!(after < warm + (8 << 20), "answers leave memory behind: {:.1} -> {:.1} MiB", mib(warm), mib(after));
    assert!(after < before + (64 << 20), "16 MiB answers keep {:.1} MiB", mib(after - before));
    let kept = after_refusal.saturating_sub(after);
    assert!(kept < 8 << 20, "a refused batch keeps {:.1} MiB", mib(kept));
    engine.shutdown(false, true).await;
}

/// What Search-R1's retriever client sends (`search_r1/llm_agent/generation.py`:
/// `requests.post(url, json={"queries": .., "topk": .., "return_scores": True})`), and reads
/// back (`result`, then each `document["contents"]` split into its title line and text); a
/// corpus already in that project's shape (`{"id", "contents": "\"title\"\ntext"}`) loads as
/// it is and comes back unchanged.
#[cfg(feature = "http")]
#[tokio::test]
async fn retrieve_answers_the_search_r1_client_in_its_shapes() {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;
    let scratch = Scratch::new("retrieve");
    let mut lines: Vec<String> = FIXTURE.iter().map(|l| l.to_string()).collect();
    lines.push(r#"{"id": "wiki-7", "contents": "\"Aurora\"\nThe aurora is light in the polar sky made by solar wind particles."}"#.into());
    let corpus = scratch.path("corpus.jsonl");
    std::fs::write(&corpus, lines.join("\n") + "\n").unwrap();
    let app = agentflow_sandbox::http::router(engine_with(json!({"corpus_path": corpus})));
    let post = |body: Value| {
        let app = app.clone();
        async move {
            let req = Request::post("/retrieve")
                .header("content-type", "application/json")
                .body(Body::from(body.to_string()));
            let response = app.oneshot(req.unwrap()).await.unwrap();
            let status = response.status();
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
            (status, serde_json::from_slice::<Value>(&bytes).unwrap())
        }
    };
    let queries = json!(["polar sky lights", "how do plants make oxygen from sunlight"]);
    let (status, scored) = post(json!({"queries": queries, "topk": 3, "return_scores": true})).await;
    assert_eq!(status, 200, "{scored}");
    let result = scored["result"].as_array().unwrap();
    assert_eq!(result.len(), 2);
    assert!(result.iter().all(|hits| (1..=3).contains(&hits.as_array().unwrap().len())), "{scored}");
    let first = &result[0][0];
    assert_eq!(first["document"]["id"], "wiki-7", "{first}");
    assert_eq!(
        first["document"]["contents"],
        "\"Aurora\"\nThe aurora is light in the polar sky made by solar wind particles."
    );
    let scores: Vec<f64> = result[1].as_array().unwrap().iter().map(|h| h["score"].as_f64().unwrap()).collect();
    assert!(scores.windows(2).all(|w| w[0] >= w[1]), "best first: {scores:?}");
    // A passage with a title of its own comes back as that project's corpora store it.
    let photo = &result[1][0]["document"];
    assert_eq!(photo["id"], "photosynthesis");
    let contents = photo["contents"].as_str().unwrap();
    let (title, text) = contents.split_once('\n').unwrap();
    assert_eq!(title, "\"Photosynthesis\"");
    assert!(text.starts_with("Plants convert sunlight"), "{text}");
    // Without scores: the documents alone.
    let (_, plain) = post(json!({"queries": ["polar sky lights"], "topk": 1})).await;
    assert_eq!(plain["result"][0][0]["id"], "wiki-7", "{plain}");
    assert!(plain["result"][0][0].get("score").is_none());
    // A request without queries is a 1002 naming it.
    let (status, error) = post(json!({"topk": 3})).await;
    assert_eq!((status.as_u16(), &error["code"]), (400, &json!(1002)), "{error}");
}

/// The sentence encoder the dense tests use, installed by `tests/rag/install_model.sh`.
#[cfg(feature = "dense")]
fn model_dir() -> String {
    let dir = std::env::var("AGENTFLOW_RAG_MODEL")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target/models/all-MiniLM-L6-v2").to_owned());
    assert!(
        std::path::Path::new(&dir).join("model.safetensors").is_file(),
        "no model in {dir}: run tests/rag/install_model.sh"
    );
    dir
}

/// Queries that share no word (after stemming) with their passage: BM25 cannot find them.
#[cfg(feature = "dense")]
const PARAPHRASES: &[(&str, &str)] = &[
    ("insects that produce a sweet food", "honey"),
    ("molten rock pouring out of a mountain", "volcano"),
    ("getting protected from an illness by an injection", "vaccine"),
];

#[cfg(feature = "dense")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dense_finds_paraphrases_and_hybrid_keeps_both_rankings() {
    let scratch = Scratch::new("dense");
    let corpus = write_fixture(&scratch);
    let engine = engine_with(json!({"corpus_path": corpus, "model_dir": model_dir()}));
    for (query, expected) in PARAPHRASES {
        let words = ok(engine.execute("w", "rag:search", json!({"query": query, "mode": "bm25"})).await);
        assert!(ids(&words).first().is_none_or(|id| id != expected), "BM25 should miss '{query}': {words}");
        let meaning = ok(engine.execute("w", "rag:search", json!({"query": query, "mode": "dense", "top_k": 3})).await);
        assert_eq!(ids(&meaning)[0], *expected, "{query}: {meaning}");
        let score = meaning["results"][0]["score"].as_f64().unwrap();
        assert!(score > 0.0 && score <= 1.0, "a cosine: {score}");
    }
    // Hybrid is the default with a model; each hit says where each method ranked it.
    let hybrid = ok(engine.execute("w", "rag:search", json!({"query": "bee hives", "top_k": 3})).await);
    assert_eq!(hybrid["mode"], "hybrid");
    let first = &hybrid["results"][0];
    assert_eq!(first["id"], "honey", "{hybrid}");
    assert_eq!((first["bm25_rank"].as_u64(), first["dense_rank"].as_u64()), (Some(1), Some(1)), "{first}");
    // A passage only the encoder found has no BM25 rank.
    let only_meaning = ok(engine.execute("w", "rag:search", json!({"query": PARAPHRASES[0].0, "top_k": 12})).await);
    let honey = only_meaning["results"].as_array().unwrap().iter().find(|h| h["id"] == "honey").unwrap();
    assert!(honey["bm25_rank"].is_null() && honey["dense_rank"] == 1, "{honey}");
    // Documents added at run time are found by meaning at once.
    let doc = json!({"id": "aurora", "title": "Aurora", "content": "Charged particles from the sun make the polar sky glow green."});
    ok(engine.execute("w", "rag:index", json!({"documents": [doc]})).await);
    let found =
        ok(engine.execute("w", "rag:search", json!({"query": "northern lights", "mode": "dense", "top_k": 1})).await);
    assert_eq!(ids(&found), ["aurora"]);
    let batch = ok(engine
        .execute(
            "w",
            "rag:batch_search",
            json!({"queries": ["northern lights", "bee hives"], "mode": "dense", "top_k": 1}),
        )
        .await);
    assert_eq!(
        (batch["results"][0][0]["id"].as_str(), batch["results"][1][0]["id"].as_str()),
        (Some("aurora"), Some("honey"))
    );
}

#[cfg(feature = "dense")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vectors_are_kept_beside_the_index_and_reused() {
    let scratch = Scratch::new("dense-dir");
    let corpus = write_fixture(&scratch);
    let config = json!({"corpus_path": corpus, "index_dir": scratch.path("index"), "model_dir": model_dir()});
    let dense = |stats: &Value| stats["dense"]["vectors"].as_str().map(str::to_owned);
    let first = engine_with(config.clone());
    let stats = ok(first.execute("w", "rag:stats", json!({})).await);
    assert_eq!(dense(&stats).as_deref(), Some("computed"), "{stats}");
    assert_eq!(stats["dense"]["documents"], 12);
    first.shutdown(false, true).await;
    drop(first);
    let second = engine_with(config);
    let stats = ok(second.execute("w", "rag:stats", json!({})).await);
    assert_eq!(dense(&stats).as_deref(), Some("reopened"), "{stats}");
    let found = ok(second.execute("w", "rag:search", json!({"query": PARAPHRASES[1].0, "mode": "dense"})).await);
    assert_eq!(ids(&found)[0], "volcano");
}

#[tokio::test]
async fn without_a_model_bm25_serves_and_dense_says_how_to_get_one() {
    let scratch = Scratch::new("no-model");
    let corpus = write_fixture(&scratch);
    for config in
        [json!({"corpus_path": corpus}), json!({"corpus_path": corpus, "model_dir": scratch.path("no-such-model")})]
    {
        let engine = engine_with(config.clone());
        let words = ok(engine.execute("w", "rag:search", json!({"query": "bee hives"})).await);
        assert_eq!((words["mode"].as_str(), ids(&words)[0].as_str()), (Some("bm25"), "honey"), "{config}");
        for mode in ["dense", "hybrid"] {
            let refused = engine.execute("w", "rag:search", json!({"query": "bee hives", "mode": mode})).await;
            assert_eq!(refused.code, 2003, "{config} {mode}: {refused:?}");
            let how = if cfg!(feature = "dense") { "install_model.sh" } else { "--features dense" };
            assert!(refused.message.contains(how), "{}", refused.message);
        }
    }
}

/// Recall@1, recall@10 and MRR@10 of ranked ids against each query's one right answer.
#[cfg(feature = "dense")]
fn quality(ranked: &[Vec<String>], answers: &[String]) -> (f64, f64, f64) {
    let n = answers.len() as f64;
    let rank = |ids: &Vec<String>, answer: &String| ids.iter().take(10).position(|id| id == answer).map(|r| r + 1);
    let ranks: Vec<Option<usize>> = ranked.iter().zip(answers).map(|(ids, a)| rank(ids, a)).collect();
    let recall = |k: usize| ranks.iter().filter(|r| r.is_some_and(|r| r <= k)).count() as f64 / n;
    let mrr = ranks.iter().map(|r| r.map_or(0.0, |r| 1.0 / r as f64)).sum::<f64>() / n;
    (recall(1), recall(10), mrr)
}

/// Retrieval quality on real text: the man pages of a fixed list of Debian packages
/// (`tests/rag/quality/build_set.py`), each page's own one-line summary as the query whose one
/// right answer is that page (the summary is removed from the page's text). BM25, dense and
/// hybrid through the engine, and bm25s (stop words, stemming) on the same set in the same run.
#[cfg(feature = "dense")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quality_on_man_pages_hybrid_beats_both_and_bm25_matches_bm25s() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let set = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("rag-quality");
    let built = std::process::Command::new("python3")
        .arg(root.join("tests/rag/quality/build_set.py"))
        .arg(&set)
        .output()
        .unwrap();
    assert!(built.status.success(), "build_set.py: {}", String::from_utf8_lossy(&built.stderr));
    let python = root.join("target/rag-quality-venv/bin/python");
    assert!(python.exists(), "no bm25s: run tests/rag/quality/install.sh");
    let baseline = std::process::Command::new(&python)
        .arg(root.join("tests/rag/quality/bm25s_baseline.py"))
        .arg(&set)
        .output()
        .unwrap();
    assert!(baseline.status.success(), "bm25s: {}", String::from_utf8_lossy(&baseline.stderr));
    let bm25s: Value = serde_json::from_slice(baseline.stdout.trim_ascii()).unwrap();
    let queries: Vec<Value> = std::fs::read_to_string(set.join("queries.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let texts: Vec<String> = queries.iter().map(|q| q["query"].as_str().unwrap().to_owned()).collect();
    let answers: Vec<String> = queries.iter().map(|q| q["answer"].as_str().unwrap().to_owned()).collect();
    let corpus = set.join("corpus.jsonl").display().to_string();
    // 128 tokens of each page (the model reads 256): half the encoding time, which on two cores
    // is minutes; the vectors are kept in the target directory and reused by later runs.
    let engine = engine_with(json!({
        "corpus_path": corpus,
        "index_dir": set.join("index").display().to_string(),
        "model_dir": model_dir(),
        "max_tokens": 128,
        "max_batch": 2000,
        "max_answer_bytes": 1_073_741_824u64,
    }));
    let mut figures = serde_json::Map::new();
    for mode in ["bm25", "dense", "hybrid"] {
        let data =
            ok(engine.execute("q", "rag:batch_search", json!({"queries": texts, "top_k": 10, "mode": mode})).await);
        let ranked: Vec<Vec<String>> = data["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|hits| hits.as_array().unwrap().iter().map(|h| h["id"].as_str().unwrap().to_owned()).collect())
            .collect();
        let (r1, r10, mrr) = quality(&ranked, &answers);
        figures.insert(mode.into(), json!({"recall@1": r1, "recall@10": r10, "mrr@10": mrr}));
    }
    figures.insert("bm25s".into(), bm25s.clone());
    eprintln!("quality on {} man pages, {} queries: {}", bm25s["docs"], answers.len(), Value::Object(figures.clone()));
    let r10 = |m: &str| figures[m]["recall@10"].as_f64().unwrap();
    let mrr = |m: &str| figures[m]["mrr@10"].as_f64().unwrap();
    assert!(
        r10("bm25") >= r10("bm25s") - 0.005 && mrr("bm25") >= mrr("bm25s") - 0.005,
        "BM25 below bm25s: {figures:?}"
    );
    assert!(r10("hybrid") >= r10("bm25").max(r10("dense")) + 0.03, "hybrid not 3 points above both: {figures:?}");
}
