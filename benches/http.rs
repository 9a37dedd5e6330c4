//! The HTTP facade's cost: a no-op `/execute` over loopback, one keep-alive client (target p50
//! under 100 µs) and 64 concurrent keep-alive connections (target over 40,000 requests/s on this
//! 2-core machine, load generator included: the time per request printed is 1/throughput).
//! The client is a minimal HTTP/1.1 writer/reader so that it measures the server, not a client
//! library. Run: `cargo bench --features http --bench http`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentflow_sandbox::backends::memory::MemoryBackend;
use agentflow_sandbox::http::{serve, Options};
use agentflow_sandbox::Engine;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

const BODY: &str = r#"{"worker_id":"w1","action":"mem:noop","params":{}}"#;

struct Conn {
    stream: BufReader<TcpStream>,
    request: Vec<u8>,
    line: String,
    body: Vec<u8>,
}

impl Conn {
    async fn open(addr: SocketAddr, worker: &str) -> Conn {
        let stream = TcpStream::connect(addr).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let body = BODY.replace("w1", worker);
        let request = format!(
            "POST /execute HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes();
        Conn { stream: BufReader::new(stream), request, line: String::new(), body: Vec::new() }
    }

    /// One request and its whole response; checks the status line.
    async fn round_trip(&mut self) {
        self.stream.get_mut().write_all(&self.request).await.unwrap();
        let mut length = 0;
        let mut first = true;
        loop {
            self.line.clear();
            self.stream.read_line(&mut self.line).await.unwrap();
            if first {
                assert!(self.line.starts_with("HTTP/1.1 200"), "{}", self.line);
                first = false;
            }
            if self.line == "\r\n" {
                break;
            }
            if let Some(v) = self.line.strip_prefix("content-length: ") {
                length = v.trim().parse().unwrap();
            }
        }
        self.body.resize(length, 0);
        self.stream.read_exact(&mut self.body).await.unwrap();
    }
}

fn http(c: &mut Criterion) {
    let server_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let addr = server_rt.block_on(async {
        let engine = Engine::builder().backend(Arc::new(MemoryBackend::new("mem"))).build().unwrap();
        for w in 0..64 {
            let req = serde_json::from_value(json!({"worker_id": format!("w{w}"), "resource_type": "mem"})).unwrap();
            assert_eq!(engine.create_session(req).await.code, 0);
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, engine, Options::default(), std::future::pending()));
        addr
    });
    let client_rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();

    let mut group = c.benchmark_group("http");
    group.measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1));
    let mut single = client_rt.block_on(Conn::open(addr, "w0"));
    group.bench_function("execute_noop_one_client", |b| {
        b.iter_custom(|iters| {
            client_rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    single.round_trip().await;
                }
                start.elapsed()
            })
        })
    });

    let conns: Vec<Conn> = client_rt.block_on(async {
        let mut v = Vec::new();
        for w in 0..64 {
            v.push(Conn::open(addr, &format!("w{w}")).await);
        }
        v
    });
    let mut conns = Some(conns);
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    group.bench_function("execute_noop_64_connections", |b| {
        b.iter_custom(|iters| {
            let per_conn = iters.div_ceil(64).max(1);
            let taken = conns.take().unwrap();
            let (elapsed, back) = client_rt.block_on(async move {
                let start = Instant::now();
                let tasks: Vec<_> = taken
                    .into_iter()
                    .map(|mut c| {
                        tokio::spawn(async move {
                            for _ in 0..per_conn {
                                c.round_trip().await;
                            }
                            c
                        })
                    })
                    .collect();
                let mut back = Vec::new();
                for t in tasks {
                    back.push(t.await.unwrap());
                }
                (start.elapsed(), back)
            });
            conns = Some(back);
            // Time per request, so that criterion's "elements/s" is requests per second.
            elapsed.mul_f64(iters as f64 / (per_conn * 64) as f64)
        })
    });
    group.finish();
}

criterion_group!(benches, http);
criterion_main!(benches);
