//! Several calls as one (docs/protocol.md §3.3), and the [`Summary`] that answers for several
//! outcomes (a batch, several creates or destroys).

use std::collections::BTreeMap;
use std::time::Instant;

use serde_json::{json, Value};

use crate::error::{Error, Result};
use crate::protocol::{check_worker_id, BatchAction, BatchRequest, Envelope, ExecuteRequest};

use super::Engine;

impl Engine {
    /// Runs a batch (docs/protocol.md §3.3) and answers one envelope for it.
    pub async fn execute_batch(&self, req: BatchRequest) -> Envelope {
        let (start, trace_id) = (Instant::now(), req.trace_id.clone());
        match self.run_batch(req).await {
            Ok(summary) => summary.batch_envelope(start, trace_id),
            Err(e) => Envelope::error(&e).traced(trace_id),
        }
    }

    /// Runs a batch: in order (stopping at the first failure when asked), or in parallel with
    /// same-session actions still in order. Each action answers its own envelope.
    pub async fn run_batch(&self, req: BatchRequest) -> Result<Summary> {
        check_worker_id(&req.worker_id)?;
        let total = req.actions.len();
        let call = |a: BatchAction| ExecuteRequest {
            worker_id: req.worker_id.clone(),
            action: a.action,
            params: a.params,
            timeout: a.timeout,
            trace_id: req.trace_id.clone(),
        };
        let mut results: Vec<Envelope> = Vec::with_capacity(total);
        if req.parallel {
            // One lane per resource type (one session each), lanes run concurrently.
            let mut lanes: BTreeMap<String, Vec<(usize, ExecuteRequest)>> = BTreeMap::new();
            for (i, a) in req.actions.into_iter().enumerate() {
                let lane = match self.resolve(&a.action) {
                    Ok(t) => self.inner.slots[t.slot].name.clone(),
                    Err(_) => format!("\0{i}"),
                };
                lanes.entry(lane).or_default().push((i, call(a)));
            }
            let mut set = tokio::task::JoinSet::new();
            for (_, lane) in lanes {
                let engine = self.clone();
                set.spawn(async move {
                    let mut out = Vec::with_capacity(lane.len());
                    for (i, r) in lane {
                        out.push((i, engine.execute_request(r).await));
                    }
                    out
                });
            }
            let mut slots: Vec<Option<Envelope>> = vec![None; total];
            while let Some(done) = set.join_next().await {
                let lane = done.map_err(|e| Error::Internal(format!("batch lane failed: {e}")))?;
                lane.into_iter().for_each(|(i, e)| slots[i] = Some(e));
            }
            results.extend(slots.into_iter().flatten());
        } else {
            for a in req.actions {
                let envelope = self.execute_request(call(a)).await;
                let failed = !envelope.is_ok();
                results.push(envelope);
                if failed && req.stop_on_error {
                    break;
                }
            }
        }
        Ok(Summary { results, total })
    }
}

/// Several answers given as one: a batch's actions, or several creates or destroys.
#[derive(Debug)]
pub struct Summary {
    /// Each answer, in order (fewer than `total` when a batch stopped at a failure).
    pub results: Vec<Envelope>,
    /// How many were asked for.
    pub total: usize,
}

impl Summary {
    /// How many succeeded.
    pub fn succeeded(&self) -> usize {
        self.results.iter().filter(|e| e.is_ok()).count()
    }

    /// Whether some succeeded and some failed (HTTP 207).
    pub fn is_partial(&self) -> bool {
        let ok = self.succeeded();
        ok > 0 && ok < self.results.len()
    }

    /// Code 0 if all succeeded, else the first failure's code, and how many failed.
    fn envelope(&self, data: Value, what: &str) -> Envelope {
        let mut envelope = Envelope::ok(data);
        if let Some(first) = self.results.iter().find(|e| !e.is_ok()) {
            envelope.code = first.code;
            envelope.message = format!("{} of {} {what}failed", self.results.len() - self.succeeded(), self.total);
        }
        envelope
    }

    /// A batch's answer: every action's envelope, `total`, `executed`, `success_count`.
    pub fn batch_envelope(self, start: Instant, trace_id: Option<String>) -> Envelope {
        let data = json!({
            "total": self.total,
            "executed": self.results.len(),
            "success_count": self.succeeded(),
        });
        let mut envelope = self.envelope(data, "actions ");
        envelope.data["results"] = json!(self.results);
        envelope.meta.execution_time_ms = start.elapsed().as_secs_f64() * 1000.0;
        envelope.traced(trace_id)
    }

    /// Several creates or destroys: `sessions` (each one's data, or its code, message and data
    /// when it failed), `total`, `success_count`.
    pub fn sessions_envelope(self) -> Envelope {
        let mut envelope = self.envelope(json!({"total": self.total, "success_count": self.succeeded()}), "");
        let sessions: Vec<Value> = self
            .results
            .into_iter()
            .map(|e| if e.is_ok() { e.data } else { json!({"code": e.code, "message": e.message, "data": e.data}) })
            .collect();
        envelope.data["sessions"] = json!(sessions);
        envelope.traced(None)
    }
}
