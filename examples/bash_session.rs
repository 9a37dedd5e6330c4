//! An agent-style bash session through the in-process [`Engine`]: create a session, run a few
//! commands that build on each other's state (directory, variables, a function), see an exact
//! exit code, hit a timeout (the shell is usable right after), drive an interactive program kept
//! at its timeout, and destroy the session (its processes go with it).
//!
//! Run: `cargo run --no-default-features --features bash --example bash_session`

use std::sync::Arc;

use agentflow_sandbox::backends::bash::BashBackend;
use agentflow_sandbox::protocol::CreateSessionRequest;
use agentflow_sandbox::{Engine, Envelope};
use serde_json::{json, Map, Value};

fn show(step: &str, e: &Envelope) {
    let d = &e.data;
    println!("── {step}\n   code {} ({}), exit_code {}, cwd {}", e.code, e.message, d["exit_code"], d["cwd"]);
    if let Some(out) = d["stdout"].as_str().filter(|s| !s.is_empty()) {
        for line in out.lines() {
            println!("   │ {line}");
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let engine = Engine::builder().backend(Arc::new(BashBackend::new(Map::new())?)).build()?;
    let req: CreateSessionRequest = serde_json::from_value(json!({
        "worker_id": "agent-1", "resource_type": "bash",
        "config": {"cwd": std::env::temp_dir(), "env": {"PROJECT": "demo"}, "timeout": 30}
    }))?;
    let created = engine.create_session(req).await;
    println!("session {} ({})", created.data["session_id"], created.message);

    let run = |command: &str, extra: Value| {
        let mut params = json!({"command": command});
        params.as_object_mut().unwrap().extend(extra.as_object().cloned().unwrap_or_default());
        engine.execute("agent-1", "bash:run", params)
    };
    show("make a work directory and go there", &run("mkdir -p af-demo && cd af-demo", json!({})).await);
    show(
        "state persists: a variable and a function",
        &run("export COUNT=3; greet() { echo \"hello $1 from $PROJECT\"; }", json!({})).await,
    );
    show("use them", &run("greet agent; seq $COUNT > numbers.txt; wc -l < numbers.txt", json!({})).await);
    show("exact exit codes", &run("grep -q 7 numbers.txt", json!({})).await);
    show("a pager never blocks", &run("seq 1 3 | less", json!({})).await);
    show("a command past its timeout is interrupted", &run("echo working; sleep 60", json!({"timeout": 1})).await);
    show("the shell is usable right after", &run("echo still here in $(basename $PWD)", json!({})).await);

    show(
        "an interactive program kept at its timeout",
        &run("python3 -q -i", json!({"timeout": 1, "on_timeout": "keep"})).await,
    );
    show("type into it", &engine.execute("agent-1", "bash:write", json!({"text": "print(6 * 7)\n"})).await);
    show("leave it", &engine.execute("agent-1", "bash:write", json!({"text": "exit()\n"})).await);

    show("clean up", &run("cd .. && rm -r af-demo", json!({})).await);
    let destroyed = engine.destroy_session("agent-1", "bash").await;
    println!("destroyed {} ({})", destroyed.data["session_id"], destroyed.message);
    engine.shutdown(false, true).await;
    Ok(())
}
