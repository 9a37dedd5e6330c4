//! The engine as an MCP server, from a Rust MCP client (`rmcp`'s): `bash_run` of `true` on a live
//! session over MCP stdio (`agentflow-sandbox mcp`; target p50 under 0.3 ms), beside the same call
//! over HTTP `/execute` of `agentflow-sandbox serve` from the crate's own client, and in-process
//! (`Engine::execute`: what the transports add), in the same run. Both servers are the release binary, bash only. Besides criterion's estimates, each
//! prints its p10/p50/p90 over every iteration it ran.
//!
//! Run: `cargo bench --features http,client --bench mcp_server`.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use agentflow_sandbox::client::{HttpClientConfig, HttpServiceClient};
use criterion::Criterion;
use rmcp::model::CallToolRequestParams;
use rmcp::ServiceExt;
use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_agentflow-sandbox");

/// Prints the percentiles of `samples`.
fn report(name: &str, samples: &mut [Duration]) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e6;
    println!("{name}: p10 {:.1} µs, p50 {:.1} µs, p90 {:.1} µs (n={})", at(0.1), at(0.5), at(0.9), samples.len());
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = std::env::temp_dir().join(format!("agentflow-bench-mcp-server-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.json");
    let resources =
        json!({"resources": {"bash": {"enabled": true}, "vm": {"enabled": false}, "rag": {"enabled": false}}});
    std::fs::write(&config, resources.to_string()).unwrap();

    // The MCP server on stdio, and a session opened by a first call.
    let mut command = tokio::process::Command::new(BIN);
    command.arg("mcp").env("AGENTFLOW_CONFIG", &config).kill_on_drop(true);
    command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::null());
    let mcp = rt.block_on(async {
        let mut child = command.spawn().unwrap();
        let io = (child.stdout.take().unwrap(), child.stdin.take().unwrap());
        (().serve(io).await.expect("handshake"), child)
    });
    let arguments = json!({"command": "true"}).as_object().unwrap().clone();
    let call = || CallToolRequestParams::new("bash_run").with_arguments(arguments.clone());
    let first = rt.block_on(mcp.0.call_tool(call())).unwrap();
    assert_eq!(first.is_error, Some(false), "{first:?}");

    // The HTTP server, and a session for the same call over /execute.
    let mut server = std::process::Command::new(BIN)
        .args(["serve", "--port", "0", "--config", config.to_str().unwrap()])
        .env_remove("AGENTFLOW_CONFIG")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(server.stderr.take().unwrap());
    let port: u16 = loop {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "the server exited before listening");
        if let Some(rest) = line.split("http://127.0.0.1:").nth(1) {
            break rest.chars().take_while(char::is_ascii_digit).collect::<String>().parse().unwrap();
        }
    };
    std::thread::spawn(move || for _ in stderr.lines() {});
    let http = rt.block_on(async {
        let config = HttpClientConfig::new(format!("http://127.0.0.1:{port}")).worker_id("bench").max_retries(0);
        let client = HttpServiceClient::new(config).unwrap();
        let created = client.create_session("bash", None, None).await.unwrap();
        assert_eq!(created.code, 0, "{}", created.message);
        client
    });

    // The same call in-process, for what the transports add.
    let engine = rt.block_on(async {
        let backend = agentflow_sandbox::backends::bash::BashBackend::new(serde_json::Map::new()).unwrap();
        let engine = agentflow_sandbox::Engine::builder().backend(std::sync::Arc::new(backend)).build().unwrap();
        let request = serde_json::from_value(json!({"worker_id": "bench", "resource_type": "bash"})).unwrap();
        assert_eq!(engine.create_session(request).await.code, 0);
        engine
    });

    let mut c = Criterion::default().configure_from_args();
    let mut group = c.benchmark_group("mcp_server");
    let (mut over_mcp, mut over_http, mut in_process) = (Vec::new(), Vec::new(), Vec::new());
    group.bench_function("stdio_bash_run_true", |b| {
        b.iter(|| {
            let start = Instant::now();
            let result = rt.block_on(mcp.0.call_tool(call())).unwrap();
            over_mcp.push(start.elapsed());
            assert_eq!(result.is_error, Some(false));
        })
    });
    group.bench_function("execute_bash_run_true", |b| {
        b.iter(|| {
            let start = Instant::now();
            let e = rt.block_on(http.execute("bash:run", json!({"command": "true"}), None)).unwrap();
            over_http.push(start.elapsed());
            assert_eq!(e.code, 0);
        })
    });
    group.bench_function("in_process_bash_run_true", |b| {
        b.iter(|| {
            let start = Instant::now();
            let e = rt.block_on(engine.execute("bench", "bash:run", json!({"command": "true"})));
            in_process.push(start.elapsed());
            assert_eq!(e.code, 0);
        })
    });
    group.finish();
    report("mcp_server/stdio_bash_run_true", &mut over_mcp);
    report("mcp_server/execute_bash_run_true", &mut over_http);
    report("mcp_server/in_process_bash_run_true", &mut in_process);
    rt.block_on(engine.shutdown(false, true));
    c.final_summary();
    drop(mcp);
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(dir);
}
