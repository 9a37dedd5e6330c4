//! The engine as an MCP server, driven by an MCP client nobody here wrote: the official Python
//! SDK (PyPI `mcp`, in the venv `tests/mcp/install.sh` makes), through `tests/mcp_server/client.py`,
//! over stdio (`agentflow-sandbox mcp`) and over streamable HTTP (`/mcp` of `serve`, behind an
//! API key). The client lists the tools, keeps shell state across calls, decodes a screenshot's
//! PNG, searches rag and makes a bad call; the processes the connection started (read by the
//! shell itself, `ps --ppid`) must be gone once it ends. Needs Xvfb and python3.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::{eventually, in_process_table, temp_dir};

const BIN: &str = env!("CARGO_BIN_EXE_agentflow-sandbox");

/// Where `tests/mcp/install.sh` put the MCP clients.
fn clients() -> PathBuf {
    std::env::var_os("AGENTFLOW_MCP_SERVERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/mcp-servers"))
}

/// The Python of the venv that has the `mcp` SDK.
fn python() -> PathBuf {
    let python = clients().join("venv/bin/python");
    assert!(python.exists(), "{} is missing: run tests/mcp/install.sh (.ci/test does)", python.display());
    python
}

fn client() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp_server/client.py")
}

/// A config with bash, vm and rag (a corpus of three documents), and `extra` merged at the top.
fn write_config(dir: &Path, extra: Value) -> PathBuf {
    let corpus = dir.join("corpus.jsonl");
    let docs = [
        json!({"id": "a", "title": "Sessions", "contents": "a session holds a shell for one worker"}),
        json!({"id": "b", "title": "Desktops", "contents": "a desktop is an X display"}),
        json!({"id": "c", "title": "Search", "contents": "retrieval over documents"}),
    ];
    std::fs::write(&corpus, docs.iter().map(|d| format!("{d}\n")).collect::<String>()).unwrap();
    let mut config = json!({"resources": {
        "bash": {"enabled": true},
        "vm": {"enabled": true},
        "rag": {"enabled": true, "config": {"corpus_path": corpus.display().to_string()}},
    }});
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    let path = dir.join("config.json");
    std::fs::write(&path, config.to_string()).unwrap();
    path
}

/// Runs the client with `args` and parses the JSON line it prints.
fn run_client(args: &[&str]) -> Value {
    let out = Command::new(python()).arg(client()).args(args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "the MCP client failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// What every client run must have seen.
fn check(seen: &Value) {
    let tools: Vec<&str> = seen["tools"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    for tool in ["bash_run", "bash_edit", "vm_screenshot", "vm_click", "rag_search"] {
        assert!(tools.contains(&tool), "{tool} is not listed: {tools:?}");
    }
    assert!(tools.iter().all(|t| !t.contains(':') && !t.ends_with("_info")), "{tools:?}");
    assert_eq!(seen["bash_run_required"], json!(["command"]));
    // State persists from one call of the connection to the next.
    assert_eq!(seen["state"], json!("1\n/tmp\n"), "{seen}");
    assert_eq!(seen["state_structured"]["exit_code"], json!(0));
    // The screenshot is a real PNG of the desktop's size.
    assert_eq!(seen["screenshot"], json!([1920, 1080, "image/png"]), "{seen}");
    assert_eq!((&seen["rag_error"], seen["rag_hits"].as_u64()), (&json!(false), Some(1)), "{seen}");
    // A bad call is a tool error carrying the engine's code, not a broken connection.
    assert_eq!(seen["bad"]["isError"], json!(true));
    assert!(seen["bad"]["text"].as_str().unwrap().starts_with("error 1002"), "{seen}");
}

/// The connection's processes: its shell and every child of the server seen during it.
fn processes(seen: &Value) -> Vec<i32> {
    let mut pids = vec![seen["bash_pid"].as_i64().unwrap() as i32];
    pids.extend(seen["server_children"].as_array().unwrap().iter().map(|p| p.as_i64().unwrap() as i32));
    assert!(pids.len() >= 2, "the shell and the desktop's Xvfb at least: {pids:?}");
    pids
}

/// Waits for every one of `pids` to leave the process table.
async fn all_gone(pids: Vec<i32>) {
    let gone = eventually(Duration::from_secs(10), || pids.iter().all(|&p| !in_process_table(p))).await;
    let left: Vec<&i32> = pids.iter().filter(|&&p| in_process_table(p)).collect();
    assert!(gone, "processes outlived the connection: {left:?}");
}

#[tokio::test]
async fn an_mcp_client_over_stdio_keeps_state_sees_the_desktop_and_leaves_nothing() {
    let dir = temp_dir("mcp-server-stdio");
    let config = write_config(&dir, json!({}));
    let seen = run_client(&["stdio", BIN, config.to_str().unwrap()]);
    check(&seen);
    // The client closed the server's stdin: the server destroyed the sessions and exited.
    all_gone(processes(&seen)).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn an_mcp_client_over_http_is_one_worker_behind_the_api_key() {
    let dir = temp_dir("mcp-server-http");
    let config = write_config(&dir, json!({"security": {"auth": {"enabled": true, "api_key": "mcp-key"}}}));
    let mut server = Command::new(BIN)
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
    let url = format!("http://127.0.0.1:{port}/mcp");
    // Without the key: refused before MCP is spoken.
    let refused = std::process::Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "POST",
            &url,
            "-H",
            "content-type: application/json",
        ])
        .args(["-d", r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{}}"#])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&refused.stdout), "401");
    let seen = run_client(&["http", &url, "mcp-key"]);
    check(&seen);
    // The client deleted its MCP session: its worker's shell and desktop are gone, the server
    // is still up.
    all_gone(processes(&seen)).await;
    assert!(server.try_wait().unwrap().is_none(), "the server died");
    // A second connection is another worker, with a shell of its own.
    let again = run_client(&["http", &url, "mcp-key"]);
    assert_ne!(again["bash_pid"], seen["bash_pid"]);
    let _ = Command::new("kill").arg(server.id().to_string()).status();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(dir);
}

/// The MCP Inspector's command-line mode (npm), a client of another SDK (TypeScript), lists the
/// tools over stdio and runs one.
#[tokio::test]
async fn the_mcp_inspector_lists_the_tools_and_runs_one() {
    let inspector = clients().join("node_modules/.bin/mcp-inspector");
    assert!(inspector.exists(), "{} is missing: run tests/mcp/install.sh (.ci/test does)", inspector.display());
    let dir = temp_dir("mcp-server-inspector");
    let config = write_config(&dir, json!({}));
    let env = format!("AGENTFLOW_CONFIG={}", config.display());
    let inspect = |extra: &[&str]| -> Value {
        let out = Command::new(&inspector).args(["--cli", "-e", &env, BIN, "mcp"]).args(extra).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "the inspector failed: {}\n{stdout}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
    };
    let listed = inspect(&["--method", "tools/list"]);
    let names: Vec<&str> = listed["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert!(
        names.contains(&"bash_run") && names.contains(&"vm_screenshot") && names.contains(&"rag_search"),
        "{names:?}"
    );
    let run = listed["tools"].as_array().unwrap().iter().find(|t| t["name"] == "bash_run").unwrap();
    assert_eq!(run["inputSchema"]["required"], json!(["command"]));
    let called =
        inspect(&["--method", "tools/call", "--tool-name", "bash_run", "--tool-arg", "command=echo $((6 * 7))"]);
    assert_eq!(called["content"][0]["text"], json!("42\n"), "{called}");
    assert_eq!(called["structuredContent"]["exit_code"], json!(0));
    let _ = std::fs::remove_dir_all(dir);
}
