//! Round trip of a no-op `execute` through `HttpServiceClient` on loopback, next to the same call
//! on the in-process `Engine` (target: HTTP p50 under 150 µs).
//!
//! The server runs `serve` on its own one-worker runtime thread, with a shared memory backend (no
//! session involved); the client drives it from a current-thread runtime, one call at a time over
//! a pooled keep-alive connection. Before criterion's estimates, it prints p50/p90/p99 of single
//! round trips (criterion reports means of batches, not percentiles).
//!
//!     cargo bench --no-default-features --features client,http --bench client

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentflow_sandbox::backends::memory::MemoryBackend;
use agentflow_sandbox::client::{HttpClientConfig, HttpServiceClient};
use agentflow_sandbox::http::{serve, Options};
use agentflow_sandbox::Engine;
use criterion::Criterion;
use serde_json::json;

struct Fixture {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: Option<std::thread::JoinHandle<()>>,
}

impl Fixture {
    fn start() -> Fixture {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
            runtime.block_on(async move {
                let engine = Engine::builder().backend(Arc::new(MemoryBackend::shared("mem"))).build().unwrap();
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                let shutdown = async move {
                    let _ = stopped.await;
                };
                serve(listener, engine, Options::default(), shutdown).await.unwrap();
            });
        });
        Fixture { url, stop: Some(stop), server: Some(server) }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(s) = self.server.take() {
            let _ = s.join();
        }
    }
}

fn percentiles(label: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
    println!(
        "{label}: n={} p50={:.1} µs p90={:.1} µs p99={:.1} µs min={:.1} µs",
        samples.len(),
        at(0.5),
        at(0.9),
        at(0.99),
        at(0.0)
    );
}

fn main() {
    let fixture = Fixture::start();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let client = HttpServiceClient::new(HttpClientConfig::new(&fixture.url).worker_id("bench")).unwrap();
    let engine =
        runtime.block_on(async { Engine::builder().backend(Arc::new(MemoryBackend::shared("mem"))).build() }).unwrap();
    runtime.block_on(async {
        client.connect().await.unwrap();
        assert_eq!(client.execute("mem:noop", json!({}), None).await.unwrap().code, 0);
    });

    if std::env::args().any(|a| a == "--bench") {
        let samples = runtime.block_on(async {
            let mut http = Vec::with_capacity(20_000);
            let mut local = Vec::with_capacity(20_000);
            for _ in 0..1_000 {
                client.execute("mem:noop", json!({}), None).await.unwrap();
            }
            for _ in 0..20_000 {
                let t = Instant::now();
                client.execute("mem:noop", json!({}), None).await.unwrap();
                http.push(t.elapsed());
                let t = Instant::now();
                let e = engine.execute("bench", "mem:noop", json!({})).await;
                local.push(t.elapsed());
                assert_eq!(e.code, 0);
            }
            (http, local)
        });
        percentiles("execute mem:noop over HTTP (HttpServiceClient, loopback)", samples.0);
        percentiles("execute mem:noop in-process (Engine::execute)", samples.1);
    }

    let mut c = Criterion::default()
        .configure_from_args()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .sample_size(50);
    let mut group = c.benchmark_group("execute_noop");
    group.bench_function("http_client_loopback", |b| {
        b.iter(|| runtime.block_on(client.execute("mem:noop", json!({}), None)).unwrap())
    });
    group.bench_function("engine_in_process", |b| {
        b.iter(|| runtime.block_on(engine.execute("bench", "mem:noop", json!({}))))
    });
    group.finish();
    c.final_summary();
    drop(client);
    drop(fixture);
}
