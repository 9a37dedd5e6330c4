//! The agent loop of `examples/agent_loop.rs` against an HTTP server: same `Sandbox` methods, same
//! envelopes; only the line that makes the `Sandbox` differs. With `auto_start_server`, the
//! `agentflow-sandbox` binary (next to this example, or on PATH) is started when nothing answers
//! at the URL, and stopped when the sandbox closes.
//!
//!     cargo build --features http --bin agentflow-sandbox
//!     cargo run --example remote --features client -- [URL] [trajectory.jsonl]
//!
//! URL defaults to `$AGENTFLOW_URL` or `http://127.0.0.1:18890`; `$AGENTFLOW_API_KEY` is sent as
//! `Authorization: Bearer` when set.

use agentflow_sandbox::client::{Sandbox, SandboxConfig, Trajectory};
use serde_json::{json, Value};

/// The plan a model would produce, one tool call at a time.
fn plan() -> Vec<(&'static str, Value)> {
    vec![
        ("bash:run", json!({"command": "echo hello from the agent"})),
        ("bash:run", json!({"command": "cd /tmp && pwd"})),
        ("bash:run", json!({"command": "pwd"})), // the shell is persistent: still /tmp
        ("rag:search", json!({"query": "session", "top_k": 2})),
        ("bash:no_such_tool", json!({})), // a wrong call is recorded with its error envelope
    ]
}

/// Runs the plan on `sandbox`, recording every step.
async fn run_agent(sandbox: &Sandbox) -> Result<Trajectory, agentflow_sandbox::client::Error> {
    let mut trajectory = Trajectory::new();
    let tools = sandbox.get_tools(false).await?;
    let offered: Vec<&str> =
        tools.data["tools"].as_array().into_iter().flatten().filter_map(|t| t["name"].as_str()).collect();
    println!("{} tools offered: {}", offered.len(), offered.join(", "));
    if offered.contains(&"bash:run") {
        sandbox.create_session("bash", json!({})).await?;
    }
    for (action, params) in plan() {
        let outcome = sandbox.execute(action, params.clone()).await;
        if let Err(e) = &outcome {
            if e.is_transport() {
                return Err(outcome.unwrap_err());
            }
        }
        let step = trajectory.record(action, &params, outcome);
        println!("step {} {action}: code {} {}", step["step"], step["code"], step["message"]);
    }
    Ok(trajectory)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let url =
        args.next().or_else(|| std::env::var("AGENTFLOW_URL").ok()).unwrap_or_else(|| "http://127.0.0.1:18890".into());
    let out = args.next().unwrap_or_else(|| std::env::temp_dir().join("remote_agent.jsonl").display().to_string());
    let mut config = SandboxConfig::new(&url).worker_id("agent_1").auto_start_server(true);
    config.api_key = std::env::var("AGENTFLOW_API_KEY").ok().filter(|k| !k.is_empty());
    let sandbox = Sandbox::remote(config)?;
    sandbox.start().await?;
    if let Some(pid) = sandbox.server_pid() {
        println!("started the server at {url} (pid {pid}); it stops when the sandbox closes");
    }
    let trajectory = run_agent(&sandbox).await?;
    sandbox.close().await?;
    let text = trajectory.to_jsonl();
    let path = out.clone();
    tokio::task::spawn_blocking(move || std::fs::write(path, text)).await??;
    println!("{} steps ({} succeeded) written to {out}", trajectory.steps().len(), trajectory.successes());
    Ok(())
}
