//! `POST /retrieve`: the retriever API of Search-R1 and the search-agent training stacks built
//! on it, over the `rag` backend (docs/protocol.md §3.8), so that such a training script points
//! at this server unchanged.
//!
//! The request is `{"queries": [..], "topk": k, "return_scores": bool}`; the answer, not
//! enveloped, `{"result": [[doc, ..], ..]}` (one list per query, best first) or, with scores,
//! `{"result": [[{"document": doc, "score": s}, ..], ..]}`, where `doc` is `{"id", "contents"}`
//! and `contents` is the passage as those corpora store it: `"title"\ntext` (the text alone for
//! a passage with no title, such as one loaded from a corpus already in that shape). The search
//! is `rag:batch_search`, with its caps; an error is the envelope of that call, with its status.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{json_response, AppState, Body, Reply};

/// The worker the retriever's searches are made for (rag has no sessions: a name for the logs).
const WORKER: &str = "retrieve";

/// The request, as Search-R1's client sends it.
#[derive(Debug, Deserialize)]
pub(super) struct RetrieveRequest {
    queries: Vec<String>,
    /// Hits per query; the backend's `default_top_k` when absent.
    topk: Option<usize>,
    #[serde(default)]
    return_scores: bool,
}

pub(super) async fn retrieve(State(s): State<AppState>, Body(req): Body<RetrieveRequest>) -> Response {
    let mut params = json!({"queries": req.queries});
    if let Some(k) = req.topk {
        params["top_k"] = json!(k);
    }
    let mut answer = s.engine.execute(WORKER, "rag:batch_search", params).await;
    if !answer.is_ok() {
        return Reply(answer).into_response();
    }
    let lists = match answer.data.get_mut("results").map(Value::take) {
        Some(Value::Array(lists)) => lists,
        _ => Vec::new(),
    };
    let result: Vec<Value> = lists
        .into_iter()
        .map(|hits| {
            let Value::Array(hits) = hits else { return Value::Array(Vec::new()) };
            Value::Array(hits.into_iter().map(|hit| document(hit, req.return_scores)).collect())
        })
        .collect();
    json_response(StatusCode::OK, &json!({"result": result}))
}

/// One hit of `rag:batch_search` as Search-R1's document, with its score when asked.
fn document(mut hit: Value, with_score: bool) -> Value {
    let take = |hit: &mut Value, key: &str| hit.get_mut(key).map(Value::take).unwrap_or(Value::Null);
    let title = take(&mut hit, "title");
    let content = take(&mut hit, "content");
    let contents = match (title.as_str(), content.as_str()) {
        (Some(t), Some(c)) if !t.is_empty() => Value::String(format!("\"{t}\"\n{c}")),
        _ => content,
    };
    let doc = json!({"id": take(&mut hit, "id"), "contents": contents});
    if with_score {
        json!({"document": doc, "score": take(&mut hit, "score")})
    } else {
        doc
    }
}
