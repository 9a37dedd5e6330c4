//! A short coding-agent loop, SWE-bench style, on the in-process engine: a small repository
//! with a failing test, and the steps a model would take to fix it: run the tests with
//! `bash:run`, look at the code with `bash:edit` `view`, fix it with `str_replace`, run the
//! tests again. The steps are scripted (a stand-in for the model's choices); each tool's answer
//! is printed as the model would read it. Exits non-zero unless the tests pass at the end.
//!
//!     cargo run --example coding_agent --features bash
//!
//! Needs `python3` (the repository's tests are `unittest`s).

use std::sync::Arc;

use agentflow_sandbox::backends::bash::BashBackend;
use agentflow_sandbox::protocol::CreateSessionRequest;
use agentflow_sandbox::Engine;
use serde_json::{json, Map, Value};

/// The repository: a function with a bug, and its test.
const FILES: &[(&str, &str)] = &[
    ("calc.py", "def add(a, b):\n    \"\"\"The sum of a and b.\"\"\"\n    return a - b\n\n\ndef double(x):\n    return add(x, x)\n"),
    (
        "test_calc.py",
        "import unittest\n\nfrom calc import add, double\n\n\nclass CalcTest(unittest.TestCase):\n    \
         def test_add(self):\n        self.assertEqual(add(2, 3), 5)\n\n    def test_double(self):\n        \
         self.assertEqual(double(4), 8)\n\n\nif __name__ == \"__main__\":\n    unittest.main()\n",
    ),
];

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let repo = std::env::temp_dir().join(format!("agentflow-coding-agent-{}", std::process::id()));
    std::fs::create_dir_all(&repo)?;
    for (name, text) in FILES {
        std::fs::write(repo.join(name), text)?;
    }
    let engine = Engine::builder().backend(Arc::new(BashBackend::new(Map::new())?)).build()?;
    let request: CreateSessionRequest = serde_json::from_value(
        json!({"worker_id": "coder", "resource_type": "bash", "config": {"cwd": repo.display().to_string()}}),
    )?;
    let created = engine.create_session(request).await;
    if created.code != 0 {
        return Err(created.message.into());
    }

    // -B: no bytecode cache, which could outlive an edit made within the same second.
    let tests = json!({"command": "python3 -B -m unittest -q"});
    let steps: Vec<(&str, Value)> = vec![
        ("bash:run", tests.clone()),
        ("bash:edit", json!({"command": "view", "path": "."})),
        ("bash:edit", json!({"command": "view", "path": "calc.py"})),
        (
            "bash:edit",
            json!({"command": "str_replace", "path": "calc.py", "old_str": "return a - b", "new_str": "return a + b"}),
        ),
        ("bash:run", tests),
    ];
    let mut last = Value::Null;
    for (i, (tool, params)) in steps.into_iter().enumerate() {
        println!("── step {} · {tool} {params}", i + 1);
        let answer = engine.execute("coder", tool, params).await;
        let shown = match (answer.code, tool) {
            (0, "bash:run") => {
                format!("{}[exit code {}]", answer.data["stdout"].as_str().unwrap_or(""), answer.data["exit_code"])
            }
            (0, _) => answer.data["output"].as_str().unwrap_or("").to_owned(),
            (code, _) => format!("error {code}: {}", answer.message),
        };
        println!("{}\n", shown.trim_end());
        last = answer.data;
    }
    engine.shutdown(false, true).await;
    let _ = std::fs::remove_dir_all(&repo);
    if last["exit_code"] != json!(0) {
        return Err("the tests still fail".into());
    }
    println!("the tests pass");
    Ok(())
}
