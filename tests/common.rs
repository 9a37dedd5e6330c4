//! What several test modules share: polling a condition with a deadline (never a bare sleep as
//! synchronisation) and making a session through the engine's public API.

use std::time::{Duration, Instant};

use agentflow_sandbox::protocol::CreateSessionRequest;
use agentflow_sandbox::{Engine, Envelope};
use serde_json::{json, Value};

/// Polls `cond` until it holds or `limit` passes; whether it held.
pub async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

/// Creates `worker`'s session of `resource` with `config`.
#[allow(dead_code)] // unused in some feature combinations
pub async fn create_session(engine: &Engine, worker: &str, resource: &str, config: Value) -> Envelope {
    let req: CreateSessionRequest =
        serde_json::from_value(json!({"worker_id": worker, "resource_type": resource, "config": config})).unwrap();
    engine.create_session(req).await
}
