//! The engine's own cost: `execute` of a no-op tool on an existing session, through the whole
//! path (name resolution, parameter check, session lookup and lock, envelope with trace id).
//! Target: p50 about 1 µs, not slower than before the typed core. `execute_noop_session_logged`
//! is the same call under the binary's default subscriber (text, `info`), so the per-call span's
//! price for a server is visible (a few µs; nothing without a subscriber). Run:
//! `cargo bench --bench engine`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentflow_sandbox::backends::memory::MemoryBackend;
use agentflow_sandbox::protocol::{CreateSessionRequest, ExecuteRequest};
use agentflow_sandbox::Engine;
use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::json;

fn execute(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let engine = rt.block_on(async {
        let engine = Engine::builder().backend(Arc::new(MemoryBackend::new("mem"))).build().unwrap();
        let req: CreateSessionRequest =
            serde_json::from_value(json!({"worker_id": "w1", "resource_type": "mem"})).unwrap();
        assert_eq!(engine.create_session(req).await.code, 0);
        engine
    });
    let mut group = c.benchmark_group("engine");
    group.measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
    // Each sample runs `iters` calls back to back on one runtime: the per-call time.
    let noop_calls = |iters: u64| {
        rt.block_on(async {
            let start = Instant::now();
            for _ in 0..iters {
                let req = ExecuteRequest::new("w1", "mem:noop", json!({}));
                let envelope = engine.execute_request(req).await;
                assert_eq!(black_box(envelope).code, 0);
            }
            start.elapsed()
        })
    };
    group.bench_function("execute_noop_session", |b| b.iter_custom(noop_calls));
    // The same with the binary's default subscriber (text, `info`): what the per-call span costs
    // a server; the call's end is `debug`, so filtered out.
    group.bench_function("execute_noop_session_logged", |b| {
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("info"))
            .with_writer(std::io::sink)
            .finish();
        tracing::subscriber::with_default(subscriber, || b.iter_custom(noop_calls))
    });
    group.bench_function("execute_short_name_with_params", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for i in 0..iters {
                    let envelope = engine.execute("w1", "echo", json!({"value": "x"})).await;
                    black_box((envelope, i));
                }
                start.elapsed()
            })
        })
    });
    group.finish();
}

criterion_group!(benches, execute);
criterion_main!(benches);
