//! A minimal agent loop over the embedded `Sandbox`: list the tools an LLM would be offered,
//! create a shell session, run a scripted plan of tool calls (a stand-in for the model's
//! choices), and record the trajectory as JSON Lines. The engine runs in this process: no server.
//!
//!     cargo run --example agent_loop --features client -- [trajectory.jsonl]
//!
//! `examples/remote.rs` is the same loop against a server; the only line that differs is the one
//! that makes the `Sandbox`.

use agentflow_sandbox::client::{Sandbox, Trajectory};
use agentflow_sandbox::Config;
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
    let out =
        std::env::args().nth(1).unwrap_or_else(|| std::env::temp_dir().join("agent_loop.jsonl").display().to_string());
    let mut config = Config::default();
    config.resources.retain(|name, _| name != "vm"); // a shell and retrieval are enough here
    let sandbox = Sandbox::embedded(config.engine()?).with_worker_id("agent_1")?;
    sandbox.start().await?;
    let trajectory = run_agent(&sandbox).await?;
    sandbox.close().await?;
    let text = trajectory.to_jsonl();
    let path = out.clone();
    tokio::task::spawn_blocking(move || std::fs::write(path, text)).await??;
    println!("{} steps ({} succeeded) written to {out}", trajectory.steps().len(), trajectory.successes());
    Ok(())
}
