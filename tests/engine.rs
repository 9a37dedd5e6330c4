//! Integration tests of the engine through its public API, with the in-memory backend: sessions,
//! ordering, names, parameters, panics, timeouts, warm-up, batches, limits and shutdown.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentflow_sandbox::backends::memory::MemoryBackend;
use agentflow_sandbox::protocol::{BatchRequest, CreateSessionRequest, ExecuteRequest};
use agentflow_sandbox::{Engine, Envelope};
use serde_json::{json, Value};

use crate::common::{create_session, eventually};

fn create_req(worker: &str, resource: &str, config: Value) -> CreateSessionRequest {
    serde_json::from_value(json!({"worker_id": worker, "resource_type": resource, "config": config})).unwrap()
}

async fn create(engine: &Engine, worker: &str, resource: &str) -> Envelope {
    create_session(engine, worker, resource, json!({})).await
}

fn mem_engine() -> (Engine, Arc<agentflow_sandbox::backends::memory::Counters>) {
    let mem = MemoryBackend::new("mem");
    let counters = mem.counters();
    (Engine::builder().backend(Arc::new(mem)).build().unwrap(), counters)
}

#[tokio::test]
async fn session_ids_names_and_listing() {
    let (engine, _) = mem_engine();
    let mut req = create_req("w1", "mem", json!({}));
    req.custom_name = Some("my_mem".into());
    let a = engine.create_session(req).await;
    assert_eq!(a.code, 0, "{a:?}");
    let id = a.data["session_id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("mem_w1_"), "{id}");
    assert_eq!(a.data["session_name"], "my_mem");
    assert_eq!(a.data["session_status"], "active");
    // Creating it again returns the same session, unchanged.
    let again = create(&engine, "w1", "mem").await;
    assert_eq!(again.data["session_id"], id.as_str());
    assert_eq!(again.data["session_name"], "my_mem");
    let list = engine.list_sessions("w1").await;
    let sessions = list.data["sessions"].as_array().unwrap();
    assert_eq!(sessions.len(), 1);
    for key in ["created_at", "last_activity", "expires_at"] {
        let t = sessions[0][key].as_str().unwrap();
        assert!(t.ends_with('Z') && t.len() == 20, "{key}: {t}");
    }
}

#[tokio::test]
async fn two_workers_never_see_each_others_sessions() {
    let (engine, _) = mem_engine();
    create(&engine, "alice", "mem").await;
    create(&engine, "bob", "mem").await;
    engine.execute("alice", "mem:push", json!({"value": 1})).await;
    let bob = engine.execute("bob", "mem:push", json!({"value": 2})).await;
    assert_eq!(bob.data["values"], json!([2]));
    let alice = engine.execute("alice", "mem:push", json!({"value": 3})).await;
    assert_eq!(alice.data["values"], json!([1, 3]));
    let listed = engine.list_sessions("bob").await;
    let ids: Vec<&str> =
        listed.data["sessions"].as_array().unwrap().iter().map(|s| s["session_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 1);
    assert!(ids[0].contains("_bob_"));
    let gone = engine.destroy_session("bob", "mem").await;
    assert_eq!(gone.code, 0);
    assert_eq!(engine.list_sessions("alice").await.data["sessions"].as_array().unwrap().len(), 1);
}

// Current-thread runtime: spawned tasks first run in spawn order, so spawn order is arrival order.
#[tokio::test]
async fn calls_on_one_session_run_in_arrival_order() {
    let (engine, _) = mem_engine();
    create(&engine, "w", "mem").await;
    // Hold the session so that all 100 calls queue up behind it.
    let blocker = tokio::spawn({
        let e = engine.clone();
        async move { e.execute("w", "mem:sleep", json!({"ms": 100})).await }
    });
    tokio::task::yield_now().await;
    let mut calls = Vec::new();
    for i in 0..100 {
        let e = engine.clone();
        calls.push(tokio::spawn(async move { e.execute("w", "mem:push", json!({"value": i})).await }));
    }
    assert_eq!(blocker.await.unwrap().code, 0);
    for (i, call) in calls.into_iter().enumerate() {
        let envelope = call.await.unwrap();
        let expected: Vec<i64> = (0..=i as i64).collect();
        assert_eq!(envelope.data["values"], json!(expected), "call {i} ran out of order");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_on_different_sessions_overlap() {
    let (engine, _) = mem_engine();
    let mut calls = Vec::new();
    for w in 0..8 {
        create(&engine, &format!("w{w}"), "mem").await;
    }
    for w in 0..8 {
        let e = engine.clone();
        calls.push(tokio::spawn(async move {
            let start = Instant::now();
            let r = e.execute(&format!("w{w}"), "mem:sleep", json!({"ms": 300})).await;
            (start, Instant::now(), r.code)
        }));
    }
    let mut spans = Vec::new();
    for c in calls {
        spans.push(c.await.unwrap());
    }
    assert!(spans.iter().all(|s| s.2 == 0));
    let last_start = spans.iter().map(|s| s.0).max().unwrap();
    let first_end = spans.iter().map(|s| s.1).min().unwrap();
    assert!(last_start < first_end, "the 8 sessions' calls did not all run at the same time");
}

#[tokio::test]
async fn expired_session_is_reaped_and_destroyed() {
    let mem = MemoryBackend::new("mem");
    let counters = mem.counters();
    let engine = Engine::builder().backend(Arc::new(mem)).session_ttl(Duration::from_secs(1)).build().unwrap();
    create(&engine, "w", "mem").await;
    assert_eq!(counters.created.load(Ordering::Acquire), 1);
    assert!(
        eventually(Duration::from_secs(5), || counters.destroyed.load(Ordering::Acquire) == 1).await,
        "the reaper did not destroy the expired session"
    );
    assert!(engine.list_sessions("w").await.data["sessions"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn activity_and_refresh_extend_a_session() {
    let mem = MemoryBackend::new("mem");
    let engine = Engine::builder().backend(Arc::new(mem)).session_ttl(Duration::from_secs(100)).build().unwrap();
    create(&engine, "w", "mem").await;
    let r = engine.refresh_sessions("w", Some("mem")).await;
    assert_eq!(r.code, 0);
    assert_eq!(r.data["refreshed"][0]["resource_type"], "mem");
    assert_eq!(engine.refresh_sessions("w", None).await.data["refreshed"].as_array().unwrap().len(), 1);
    assert_eq!(engine.refresh_sessions("nobody", Some("mem")).await.code, 1003);
}

#[tokio::test]
async fn a_panicking_tool_answers_5000_and_the_engine_keeps_serving() {
    let (engine, _) = mem_engine();
    create(&engine, "w", "mem").await;
    let r = engine.execute("w", "mem:panic", json!({})).await;
    assert_eq!(r.code, 5000);
    assert!(r.message.contains("panicked"), "{}", r.message);
    let next = engine.execute("w", "mem:push", json!({"value": 1})).await;
    assert_eq!(next.code, 0, "{next:?}");
}

#[tokio::test]
async fn names_resolve_or_fail_clearly() {
    let engine = Engine::builder()
        .backend(Arc::new(MemoryBackend::new("mem")))
        .backend(Arc::new(MemoryBackend::new("kv")))
        .build()
        .unwrap();
    for name in ["mem:noop", "mem.noop", "mem-noop", "mem_noop"] {
        let r = engine.execute("w", name, json!({})).await;
        assert_eq!((r.code, r.meta.tool.as_deref(), r.meta.resource_type.as_deref()), (0, Some("noop"), Some("mem")));
    }
    let ambiguous = engine.execute("w", "noop", json!({})).await;
    assert_eq!(ambiguous.code, 1001);
    assert_eq!(ambiguous.data["candidates"], json!(["mem:noop", "kv:noop"]));
    let unknown = engine.execute("w", "mem:fly", json!({})).await;
    assert_eq!(unknown.code, 1001);
    assert!(unknown.message.contains("mem:fly"));
}

#[tokio::test]
async fn bad_parameters_are_1002_naming_the_field() {
    let (engine, _) = mem_engine();
    let missing = engine.execute("w", "push", json!({})).await;
    assert_eq!((missing.code, missing.data["field"].as_str()), (1002, Some("value")));
    assert!(missing.message.contains("'value'"), "{}", missing.message);
    let mistyped = engine.execute("w", "push", json!({"value": "seven"})).await;
    assert_eq!((mistyped.code, mistyped.data["field"].as_str()), (1002, Some("value")));
    assert!(mistyped.message.contains("integer"), "{}", mistyped.message);
    let range = engine.execute("w", "sleep", json!({"ms": -5})).await;
    assert_eq!((range.code, range.data["field"].as_str()), (1002, Some("ms")));
    let not_object = engine.execute("w", "noop", json!([1, 2])).await;
    assert_eq!((not_object.code, not_object.data["field"].as_str()), (1002, Some("params")));
    let bad_timeout = engine.execute_request(ExecuteRequest::new("w", "noop", json!({})).timeout(-1.0)).await;
    assert_eq!((bad_timeout.code, bad_timeout.data["field"].as_str()), (1002, Some("timeout")));
}

#[tokio::test]
async fn a_call_without_a_session_gets_a_temporary_one() {
    let (engine, counters) = mem_engine();
    let r = engine.execute("w", "mem:push", json!({"value": 5})).await;
    assert_eq!(r.code, 0);
    assert!(r.meta.temporary_session);
    assert!(r.meta.session_id.as_deref().unwrap().starts_with("mem_w_"));
    assert_eq!(counters.created.load(Ordering::Acquire), 1);
    assert_eq!(counters.destroyed.load(Ordering::Acquire), 1);
    // It was temporary: a second call starts from an empty log.
    assert_eq!(engine.execute("w", "mem:push", json!({"value": 6})).await.data["values"], json!([6]));
    assert!(engine.list_sessions("w").await.data["sessions"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn meta_is_filled_and_trace_id_echoed() {
    let (engine, _) = mem_engine();
    create(&engine, "w", "mem").await;
    let mut req = ExecuteRequest::new("w", "mem:noop", json!({}));
    req.trace_id = Some("trace-123".into());
    let r = engine.execute_request(req).await;
    assert_eq!(r.meta.trace_id, "trace-123");
    assert!(!r.meta.temporary_session);
    assert!(r.meta.session_id.as_deref().unwrap().starts_with("mem_w_"));
    assert!(r.meta.execution_time_ms >= 0.0);
    let fresh = engine.execute("w", "mem:noop", json!({})).await;
    assert_eq!(fresh.meta.trace_id.len(), 32);
}

#[tokio::test]
async fn session_errors_and_unknown_resources() {
    let (engine, _) = mem_engine();
    assert_eq!(engine.destroy_session("w", "mem").await.code, 1003);
    assert_eq!(create(&engine, "w", "nope").await.code, 1005);
    assert_eq!(engine.destroy_session("w", "nope").await.code, 1005);
}

#[tokio::test]
async fn a_failed_creation_is_not_kept() {
    let (engine, counters) = mem_engine();
    let failed = engine.create_session(create_req("w", "mem", json!({"fail": true}))).await;
    assert_eq!(failed.code, 2001);
    assert!(failed.message.contains("on purpose"), "{}", failed.message);
    assert!(engine.list_sessions("w").await.data["sessions"].as_array().unwrap().is_empty());
    assert_eq!(create(&engine, "w", "mem").await.code, 0);
    assert_eq!(counters.created.load(Ordering::Acquire), 1);
}

#[tokio::test]
async fn a_failed_warmup_is_2003_and_retried() {
    let mem = MemoryBackend::new("mem").failing_warmups(1);
    let engine = Engine::builder().backend(Arc::new(mem)).build().unwrap();
    let first = engine.execute("w", "mem:noop", json!({})).await;
    assert_eq!(first.code, 2003);
    assert!(first.message.contains("on purpose"));
    assert_eq!(engine.warmup_status().data["backends"]["mem"]["warmed_up"], false);
    assert_eq!(engine.execute("w", "mem:noop", json!({})).await.code, 0);
    assert_eq!(engine.warmup_status().data["backends"]["mem"]["warmed_up"], true);
}

#[tokio::test]
async fn explicit_warmup_reports_each_backend() {
    let engine = Engine::builder()
        .backend(Arc::new(MemoryBackend::new("mem")))
        .backend(Arc::new(MemoryBackend::new("bad").failing_warmups(10)))
        .build()
        .unwrap();
    let r = engine.warmup(&[]).await;
    assert_eq!(r.code, 2003);
    assert_eq!(r.data["backends"]["mem"]["warmed_up"], true);
    assert_eq!(r.data["backends"]["bad"]["warmed_up"], false);
    assert!(r.data["backends"]["bad"]["error"].as_str().unwrap().contains("on purpose"));
    assert_eq!(engine.warmup(&["nope".into()]).await.code, 1005);
}

#[tokio::test]
async fn a_call_past_its_timeout_is_2002() {
    let (engine, _) = mem_engine();
    create(&engine, "w", "mem").await;
    let r = engine.execute_request(ExecuteRequest::new("w", "mem:sleep", json!({"ms": 60_000})).timeout(0.2)).await;
    assert_eq!(r.code, 2002, "{r:?}");
    assert_eq!(engine.execute("w", "mem:push", json!({"value": 1})).await.code, 0);
}

#[tokio::test]
async fn a_busy_session_is_1003_past_the_callers_wait() {
    let (engine, _) = mem_engine();
    create(&engine, "w", "mem").await;
    let holder = tokio::spawn({
        let e = engine.clone();
        async move { e.execute("w", "mem:sleep", json!({"ms": 1500})).await }
    });
    tokio::task::yield_now().await;
    let r = engine.execute_request(ExecuteRequest::new("w", "mem:noop", json!({})).timeout(0.2)).await;
    assert_eq!(r.code, 1003, "{r:?}");
    assert_eq!(r.data["busy"], true);
    assert_eq!(holder.await.unwrap().code, 0);
}

#[tokio::test]
async fn batches_run_in_order_and_report_failures() {
    let (engine, _) = mem_engine();
    create(&engine, "w", "mem").await;
    let batch = |parallel, stop_on_error| -> BatchRequest {
        serde_json::from_value(json!({
            "worker_id": "w",
            "parallel": parallel,
            "stop_on_error": stop_on_error,
            "actions": [
                {"action": "mem:push", "params": {"value": 1}},
                {"action": "mem:fly"},
                {"action": "mem:push", "params": {"value": 2}},
            ]
        }))
        .unwrap()
    };
    let stopped = engine.execute_batch(batch(false, true)).await;
    assert_eq!(stopped.code, 1001);
    assert_eq!(stopped.message, "1 of 3 actions failed");
    assert_eq!((stopped.data["executed"].as_u64(), stopped.data["success_count"].as_u64()), (Some(2), Some(1)));
    let all = engine.execute_batch(batch(true, true)).await;
    assert_eq!(all.data["executed"], 3);
    let results = all.data["results"].as_array().unwrap();
    assert_eq!(results[1]["code"], 1001);
    // Same-session actions ran in input order: [1] from before, then 1 and 2.
    assert_eq!(results[2]["data"]["values"], json!([1, 1, 2]));
}

#[tokio::test]
async fn session_caps_are_2004_naming_the_limit() {
    let engine = Engine::builder()
        .backend(Arc::new(MemoryBackend::new("mem")))
        .backend(Arc::new(MemoryBackend::new("kv")))
        .max_sessions(2)
        .max_sessions_per_worker(1)
        .build()
        .unwrap();
    assert_eq!(create(&engine, "a", "mem").await.code, 0);
    let per_worker = create(&engine, "a", "kv").await;
    assert_eq!(per_worker.code, 2004);
    assert!(per_worker.message.contains("max_sessions_per_worker"));
    assert_eq!(create(&engine, "b", "mem").await.code, 0);
    let global = create(&engine, "c", "mem").await;
    assert_eq!(global.code, 2004);
    assert!(global.message.contains("max_sessions"));
    engine.destroy_session("b", "mem").await;
    assert_eq!(create(&engine, "c", "mem").await.code, 0);
}

#[tokio::test]
async fn disconnect_and_shutdown_release_everything() {
    let mem = MemoryBackend::new("mem");
    let counters = mem.counters();
    let engine = Engine::builder().backend(Arc::new(mem)).build().unwrap();
    for w in ["a", "b", "c"] {
        create(&engine, w, "mem").await;
    }
    let gone = engine.destroy_worker("a").await;
    assert_eq!(gone.data["sessions_cleaned"], 1);
    let down = engine.shutdown(false, true).await;
    assert_eq!(down.data["sessions_cleaned"], 2);
    assert_eq!(counters.destroyed.load(Ordering::Acquire), 3);
    assert_eq!(counters.shutdowns.load(Ordering::Acquire), 1);
    assert_eq!(engine.execute("a", "mem:noop", json!({})).await.code, 5002);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_waits_for_running_calls_unless_forced() {
    let (engine, _) = mem_engine();
    create(&engine, "w", "mem").await;
    let running = tokio::spawn({
        let e = engine.clone();
        async move { e.execute("w", "mem:sleep", json!({"ms": 300})).await }
    });
    assert!(eventually(Duration::from_secs(2), || engine.overview()["live_sessions"] == 1).await);
    tokio::time::sleep(Duration::from_millis(50)).await;
    engine.shutdown(false, true).await;
    assert_eq!(running.await.unwrap().code, 0, "a graceful shutdown let the running call finish");

    let (engine, _) = mem_engine();
    let running = tokio::spawn({
        let e = engine.clone();
        async move { e.execute("w", "mem:sleep", json!({"ms": 60_000})).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    engine.shutdown(true, true).await;
    assert_eq!(running.await.unwrap().code, 5002, "a forced shutdown cancelled the running call");
}

#[tokio::test]
async fn tools_are_listed_with_schemas_and_hidden_on_request() {
    let (engine, _) = mem_engine();
    let visible = engine.list_tools(false);
    let names: Vec<&str> =
        visible.data["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"mem:push") && !names.contains(&"mem:secret"));
    let push = visible.data["tools"].as_array().unwrap().iter().find(|t| t["name"] == "mem:push").unwrap();
    assert_eq!(push["parameters"]["required"], json!(["value"]));
    assert_eq!(push["resource_type"], "mem");
    let all = engine.list_tools(true);
    assert!(all.data["tools"].as_array().unwrap().iter().any(|t| t["name"] == "mem:secret"));
    // Hidden tools still run.
    assert_eq!(engine.execute("w", "mem:secret", json!({})).await.code, 0);
}

#[tokio::test]
async fn shared_backends_need_no_session() {
    let engine = Engine::builder().backend(Arc::new(MemoryBackend::shared("kv"))).build().unwrap();
    let r = engine.execute("w", "kv:count", json!({})).await;
    assert_eq!((r.code, r.meta.session_id.as_deref(), r.meta.temporary_session), (0, None, false));
    assert_eq!(create(&engine, "w", "kv").await.data["session_status"], "shared");
}

#[tokio::test]
async fn a_backend_enabled_in_the_config_is_registered_by_name() {
    // Built or not: a disabled feature registers a stub of the same name, whose answer (2003
    // naming the feature) is tested in src/backends/mod.rs, since CI builds every feature.
    let engine =
        agentflow_sandbox::Config::parse(r#"{"resources": {"vm": {"enabled": true}}}"#).unwrap().engine().unwrap();
    assert_eq!(engine.backend_names(), ["vm"]);
}
