//! Benchmarks of the `mcp` backend on the reference servers that `tests/mcp/install.sh`
//! installs (about two minutes on a 2-core machine):
//!
//! - `mcp:everything.echo` through the engine, in-process, in a session, against the same
//!   `tools/call` from a bare `rmcp` client (the SDK alone, over the same stdio transport) on a
//!   second process of the same server, measured in one run, alternating. Target: the engine adds
//!   under 50 µs at the median.
//! - a session's start with three servers (filesystem, memory, everything), against each of those
//!   servers' own start and handshake alone. Target: about the slowest one's, not their sum.
//!
//! Besides criterion's estimates, each bench prints its p10/p50/p90 over every iteration it ran.
//!
//! Run: `tests/mcp/install.sh && cargo bench --bench mcp`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentflow_mcp::{Launch, Server, ServerSpec};
use agentflow_sandbox::backends::mcp::McpBackend;
use agentflow_sandbox::protocol::CreateSessionRequest;
use agentflow_sandbox::Engine;
use criterion::{Criterion, SamplingMode};
use rmcp::model::CallToolRequestParams;
use rmcp::ServiceExt;
use serde_json::{json, Value};

/// The installed server programs.
fn program(name: &str) -> PathBuf {
    let dir = std::env::var_os("AGENTFLOW_MCP_SERVERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/mcp-servers")));
    let path = dir.join("node_modules/.bin").join(name);
    assert!(path.exists(), "{} is missing: run tests/mcp/install.sh", path.display());
    path
}

fn servers() -> Value {
    json!({
        "filesystem": {"command": program("mcp-server-filesystem"), "args": ["${agent_workspace}"]},
        "memory": {"command": program("mcp-server-memory"), "env": {"MEMORY_FILE_PATH": "${agent_workspace}/m.jsonl"}},
        "everything": {"command": program("mcp-server-everything")},
    })
}

/// Prints the p10/p50/p90 of `samples`; returns the median.
fn percentiles(name: &str, samples: &mut [Duration]) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    println!("{name}: p10 {:.3?}  p50 {:.3?}  p90 {:.3?}  ({} iterations)", at(0.1), at(0.5), at(0.9), samples.len());
    at(0.5)
}

fn create(worker: &str) -> CreateSessionRequest {
    serde_json::from_value(json!({"worker_id": worker, "resource_type": "mcp"})).unwrap()
}

fn echo(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let engine = rt.block_on(async {
        let backend =
            McpBackend::new(json!({"servers": servers(), "enabled": ["everything"]}).as_object().unwrap().clone())
                .unwrap();
        let engine = Engine::builder().backend(Arc::new(backend)).build().unwrap();
        let created = engine.create_session(create("bench")).await;
        assert_eq!(created.code, 0, "{created:?}");
        engine
    });
    // The bare client: rmcp over the server's stdin and stdout, nothing else.
    let workspace = std::env::temp_dir();
    let (bare, child) = rt.block_on(bare_start("mcp-server-everything", &[], &workspace));
    let arguments = json!({"message": "hello from the bench"}).as_object().unwrap().clone();
    let (mut through_engine, mut through_rmcp) = (Vec::new(), Vec::new());
    let mut group = c.benchmark_group("mcp_echo");
    group.bench_function("engine", |b| {
        b.iter_custom(|iters| {
            rt.block_on(timed(
                iters,
                &mut through_engine,
                async || engine.execute("bench", "mcp:everything.echo", Value::Object(arguments.clone())).await,
                async |answer| assert_eq!(answer.code, 0, "{answer:?}"),
            ))
        })
    });
    group.bench_function("bare_rmcp", |b| {
        b.iter_custom(|iters| {
            rt.block_on(timed(
                iters,
                &mut through_rmcp,
                async || bare.call_tool(CallToolRequestParams::new("echo").with_arguments(arguments.clone())).await,
                async |result| assert!(!result.expect("echo").content.is_empty()),
            ))
        })
    });
    group.finish();
    let engine_p50 = percentiles("mcp:everything.echo through the engine", &mut through_engine);
    let bare_p50 = percentiles("echo from a bare rmcp client", &mut through_rmcp);
    if !through_engine.is_empty() && !through_rmcp.is_empty() {
        let added = engine_p50.as_secs_f64() - bare_p50.as_secs_f64();
        println!("the engine adds {:.1} µs at the median (target: under 50 µs)", added * 1e6);
    }
    rt.block_on(async {
        let _ = engine.destroy_session("bench", "mcp").await;
        drop((bare, child));
    });
}

fn start(c: &mut Criterion, rt: &tokio::runtime::Runtime) {
    let engine = rt.block_on(async {
        let backend = McpBackend::new(json!({"servers": servers()}).as_object().unwrap().clone()).unwrap();
        Engine::builder().backend(Arc::new(backend)).build().unwrap()
    });
    let workspace = std::env::temp_dir().join(format!("agentflow-mcp-bench-{}", std::process::id()));
    std::fs::create_dir_all(&workspace).unwrap();
    let mut group = c.benchmark_group("mcp_start");
    group.sampling_mode(SamplingMode::Flat).sample_size(10).measurement_time(Duration::from_secs(10));
    let mut session = Vec::new();
    group.bench_function("session_with_three_servers", |b| {
        b.iter_custom(|iters| {
            rt.block_on(timed(
                iters,
                &mut session,
                async || engine.create_session(create("starter")).await,
                async |created| {
                    assert_eq!(created.code, 0, "{created:?}");
                    let _ = engine.destroy_session("starter", "mcp").await;
                },
            ))
        })
    });
    let mut alone: Vec<(&str, Vec<Duration>)> = Vec::new();
    for (name, args) in
        [("filesystem", vec![workspace.clone().into_os_string()]), ("memory", vec![]), ("everything", vec![])]
    {
        let launch = Launch {
            program: program(&format!("mcp-server-{name}")),
            args,
            env: vec![("MEMORY_FILE_PATH".into(), workspace.join("m.jsonl").display().to_string())],
            ..Launch::default()
        };
        let spec = ServerSpec::Stdio(launch);
        let mut samples = Vec::new();
        group.bench_function(format!("{name}_alone"), |b| {
            b.iter_custom(|iters| {
                rt.block_on(timed(
                    iters,
                    &mut samples,
                    async || Server::start(name, &spec, Duration::from_secs(60)).await.expect("start"),
                    async |server| server.stop().await,
                ))
            })
        });
        alone.push((name, samples));
    }
    // The floor on this machine: the same three started at once by bare rmcp clients, no engine
    // (a Node.js server's start is CPU-bound, about 0.4 s of CPU on two threads; three at once
    // on two cores cannot take as little as one alone).
    let mut bare_three = Vec::new();
    let root_arg = [workspace.as_os_str()];
    group.bench_function("three_at_once_bare_rmcp", |b| {
        b.iter_custom(|iters| {
            rt.block_on(timed(
                iters,
                &mut bare_three,
                async || {
                    tokio::join!(
                        bare_start("mcp-server-filesystem", &root_arg, &workspace),
                        bare_start("mcp-server-memory", &[], &workspace),
                        bare_start("mcp-server-everything", &[], &workspace)
                    )
                },
                async |started| drop(started),
            ))
        })
    });
    group.finish();
    let floor = percentiles("three at once, bare rmcp", &mut bare_three);
    let together = percentiles("a session with three servers", &mut session);
    let mut slowest = Duration::ZERO;
    let mut sum = Duration::ZERO;
    for (name, samples) in &mut alone {
        let p50 = percentiles(&format!("{name} alone"), samples);
        slowest = slowest.max(p50);
        sum += p50;
    }
    if !session.is_empty() && !slowest.is_zero() {
        println!(
            "session start p50 {together:.3?}: {:.2}× the slowest server alone ({slowest:.3?}), {:.2}× their sum ({sum:.3?})",
            together.as_secs_f64() / slowest.as_secs_f64(),
            together.as_secs_f64() / sum.as_secs_f64()
        );
    }
    if !floor.is_zero() && !together.is_zero() {
        println!(
            "session start p50: {:.2}× three bare rmcp clients started at once",
            together.as_secs_f64() / floor.as_secs_f64()
        );
    }
    let _ = std::fs::remove_dir_all(&workspace);
}

/// Runs `work` `iters` times, timing each run (kept in `samples`) but not `after`, which gets
/// what the run gave (checks, clean-up); the total time.
async fn timed<T>(
    iters: u64,
    samples: &mut Vec<Duration>,
    mut work: impl AsyncFnMut() -> T,
    mut after: impl AsyncFnMut(T),
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let start = Instant::now();
        let out = work().await;
        let took = start.elapsed();
        samples.push(took);
        total += took;
        after(out).await;
    }
    total
}

/// A server started and initialised by a bare rmcp client; killed when dropped.
async fn bare_start(
    name: &str,
    args: &[&std::ffi::OsStr],
    workspace: &std::path::Path,
) -> (rmcp::service::RunningService<rmcp::RoleClient, ()>, tokio::process::Child) {
    let mut child = tokio::process::Command::new(program(name))
        .args(args)
        .env("MEMORY_FILE_PATH", workspace.join("bare.jsonl"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let io = (child.stdout.take().unwrap(), child.stdin.take().unwrap());
    (().serve(io).await.expect("handshake"), child)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut c = Criterion::default().configure_from_args();
    echo(&mut c, &rt);
    start(&mut c, &rt);
    c.final_summary();
}
