//! The `mcp:` tools through the engine, on real MCP servers installed by `tests/mcp/install.sh`
//! (npm's reference filesystem, memory and everything servers, PyPI's mcp-server-time): their
//! tools discovered with their own schemas, calls checked against those schemas, files that land
//! in the session's work directory (read back from disk, not through the server), sessions kept
//! apart, results with images, timeouts, a server killed from outside, servers that fail to
//! start or print garbage, a server over streamable HTTP, a jailed session, and no process left
//! behind (every server of a test carries the session's work directory in its environment, and
//! `/proc` is searched for it).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentflow_sandbox::backends::mcp::McpBackend;
use agentflow_sandbox::protocol::ExecuteRequest;
use agentflow_sandbox::{Engine, Envelope};
use base64::Engine as _;
use serde_json::{json, Value};

use crate::common::{all_pids, create_session, eventually, need};

/// Where the servers are installed.
fn servers_dir() -> PathBuf {
    let dir = std::env::var_os("AGENTFLOW_MCP_SERVERS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/mcp-servers"));
    assert!(
        dir.join("node_modules/.bin/mcp-server-everything").exists() && dir.join("venv/bin/mcp-server-time").exists(),
        "the MCP servers are not installed in {}: run tests/mcp/install.sh",
        dir.display()
    );
    dir
}

/// A stdio server's config: `program` from the install, with the session's work directory in
/// its environment (`TAG`), where the leak checks look for it.
fn stdio(program: &str, args: Value, env: Value) -> Value {
    let dir = servers_dir();
    let path = if program.starts_with("mcp-server-time") {
        dir.join("venv/bin").join(program)
    } else {
        dir.join("node_modules/.bin").join(program)
    };
    let mut env = env;
    env["TAG"] = json!("${agent_workspace}");
    json!({"command": path, "args": args, "env": env})
}

/// The four servers of the issue.
fn servers() -> Value {
    json!({
        "filesystem": stdio("mcp-server-filesystem", json!(["${agent_workspace}"]), json!({})),
        "memory": stdio("mcp-server-memory", json!([]), json!({"MEMORY_FILE_PATH": "${agent_workspace}/memory.jsonl"})),
        "everything": stdio("mcp-server-everything", json!([]), json!({})),
        "time": stdio("mcp-server-time", json!([]), json!({})),
    })
}

fn engine_with(config: Value) -> Engine {
    let backend = McpBackend::new(config.as_object().unwrap().clone()).unwrap();
    Engine::builder().backend(Arc::new(backend)).build().unwrap()
}

fn engine() -> Engine {
    engine_with(json!({"servers": servers()}))
}

fn ok(envelope: Envelope) -> Value {
    assert_eq!(envelope.code, 0, "{envelope:?}");
    envelope.data
}

/// The text of a result's first content item.
fn text(data: &Value) -> &str {
    data["content"][0]["text"].as_str().unwrap_or_else(|| panic!("no text in {data}"))
}

/// A session of `worker` with `config`, and its work directory (`mcp:info`).
async fn session(engine: &Engine, worker: &str, config: Value) -> PathBuf {
    ok(create_session(engine, worker, "mcp", config).await);
    let info = ok(engine.execute(worker, "mcp:info", json!({})).await);
    PathBuf::from(info["workspace"].as_str().unwrap())
}

/// The processes whose environment or command line mentions `needle`, as `/proc` shows them.
fn processes_mentioning(needle: &Path) -> Vec<i32> {
    let needle = needle.as_os_str().as_encoded_bytes();
    all_pids()
        .into_iter()
        .filter(|p| {
            ["environ", "cmdline"].iter().any(|f| {
                std::fs::read(format!("/proc/{p}/{f}")).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle))
            })
        })
        .collect()
}

/// Destroys `worker`'s session and checks that nothing of it is left: no process mentioning its
/// work directory, and the directory itself gone.
async fn destroy_leaves_nothing(engine: &Engine, worker: &str, workspace: &Path) {
    assert!(!processes_mentioning(workspace).is_empty(), "the servers were not found in /proc");
    let destroyed = engine.destroy_session(worker, "mcp").await;
    assert_eq!(destroyed.code, 0, "{destroyed:?}");
    let gone = eventually(Duration::from_secs(5), || processes_mentioning(workspace).is_empty()).await;
    assert!(gone, "left behind: {:?}", processes_mentioning(workspace));
    assert!(!workspace.exists(), "{} is still there", workspace.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_are_discovered_with_the_servers_own_schemas() {
    let engine = engine();
    let before = engine.list_tools(false).data["total"].as_u64().unwrap();
    assert_eq!(before, 0, "no server tool is known before warm-up");
    ok(engine.warmup(&[]).await);
    let tools = engine.list_tools(false).data;
    let by_name = |name: &str| {
        tools["tools"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name} is not listed: {}", tools["tools"].as_array().unwrap().len()))
    };
    let write = by_name("mcp:filesystem.write_file");
    assert_eq!(write["parameters"]["required"], json!(["path", "content"]), "{write}");
    assert_eq!(write["parameters"]["properties"]["content"]["type"], "string");
    assert!(!write["description"].as_str().unwrap().is_empty());
    for name in
        ["mcp:filesystem.read_text_file", "mcp:memory.read_graph", "mcp:everything.echo", "mcp:time.get_current_time"]
    {
        by_name(name);
    }
    // The schema as the server gave it: the time server's names its timezone parameter.
    let time = by_name("mcp:time.get_current_time");
    assert!(time["parameters"]["properties"]["timezone"].is_object(), "{time}");
    // The hidden info tool is not listed.
    assert!(tools["tools"].as_array().unwrap().iter().all(|t| t["name"] != "mcp:info"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_written_through_the_server_is_in_the_sessions_work_directory() {
    let engine = engine();
    let worker = "fs-writer";
    let workspace = session(&engine, worker, json!({"enabled": ["filesystem"]})).await;
    let path = workspace.join("notes/today.txt");
    ok(engine.execute(worker, "mcp:filesystem.create_directory", json!({"path": workspace.join("notes")})).await);
    let written =
        ok(engine.execute(worker, "mcp:filesystem.write_file", json!({"path": path, "content": "tea at 5\n"})).await);
    assert_eq!(written["isError"], json!(false), "{written}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "tea at 5\n", "the file on disk");
    let read = ok(engine.execute(worker, "mcp:filesystem.read_text_file", json!({"path": path})).await);
    assert_eq!(text(&read), "tea at 5\n");
    assert_eq!(read["content"][0]["type"], "text");
    destroy_leaves_nothing(&engine, worker, &workspace).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sessions_see_neither_each_others_files_nor_memory() {
    let engine = engine();
    let config = json!({"enabled": ["filesystem", "memory"]});
    let (a, b) = tokio::join!(session(&engine, "alice", config.clone()), session(&engine, "bob", config));
    assert_ne!(a, b);
    let secret = a.join("secret.txt");
    ok(engine.execute("alice", "mcp:filesystem.write_file", json!({"path": secret, "content": "mine"})).await);
    // Bob's filesystem server is rooted at his own directory: Alice's file is out of its reach.
    let peek = engine.execute("bob", "mcp:filesystem.read_text_file", json!({"path": secret})).await;
    assert_eq!(peek.code, 2001, "{peek:?}");
    assert_eq!(peek.data["isError"], json!(true), "the server's own error is kept: {}", peek.data);
    assert!(peek.message.contains("reported an error"), "{}", peek.message);
    let listing = ok(engine.execute("bob", "mcp:filesystem.list_directory", json!({"path": b})).await);
    assert!(!text(&listing).contains("secret"), "{listing}");
    // Memory graphs are kept in each session's own directory.
    let entity = json!({"entities": [{"name": "alice", "entityType": "person", "observations": ["likes tea"]}]});
    ok(engine.execute("alice", "mcp:memory.create_entities", entity).await);
    let mine = ok(engine.execute("alice", "mcp:memory.read_graph", json!({})).await);
    assert!(text(&mine).contains("likes tea"), "{mine}");
    let theirs = ok(engine.execute("bob", "mcp:memory.read_graph", json!({})).await);
    assert!(!text(&theirs).contains("likes tea"), "{theirs}");
    assert!(std::fs::read_to_string(a.join("memory.jsonl")).unwrap().contains("likes tea"));
    assert!(!b.join("memory.jsonl").exists());
    destroy_leaves_nothing(&engine, "alice", &a).await;
    destroy_leaves_nothing(&engine, "bob", &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_an_image_and_a_long_call_past_its_timeout() {
    let engine = engine();
    let worker = "everything";
    let workspace = session(&engine, worker, json!({"enabled": ["everything"]})).await;
    let echo = ok(engine.execute(worker, "mcp:everything.echo", json!({"message": "héllo ✓"})).await);
    assert!(text(&echo).contains("héllo ✓"), "{echo}");
    let image = ok(engine.execute(worker, "mcp:everything.get-tiny-image", json!({})).await);
    let item = image["content"].as_array().unwrap().iter().find(|c| c["type"] == "image").expect("an image item");
    assert_eq!(item["mimeType"], "image/png");
    let png = base64::engine::general_purpose::STANDARD.decode(item["data"].as_str().unwrap()).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "a PNG");
    // A 30 s operation with a 1 s timeout: 2002 in about a second; the server stays usable.
    let start = Instant::now();
    let mut req = ExecuteRequest::new(
        worker,
        "mcp:everything.trigger-long-running-operation",
        json!({"duration": 30, "steps": 3}),
    );
    req.timeout = Some(1.0);
    let slow = engine.execute_request(req).await;
    assert_eq!(slow.code, 2002, "{slow:?}");
    assert!(start.elapsed() < Duration::from_secs(4), "{:?}", start.elapsed());
    let start = Instant::now();
    let again = ok(engine.execute(worker, "mcp:everything.echo", json!({"message": "still here"})).await);
    assert!(text(&again).contains("still here"));
    assert!(start.elapsed() < Duration::from_secs(3), "the next call waited {:?}", start.elapsed());
    destroy_leaves_nothing(&engine, worker, &workspace).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameters_are_checked_against_the_servers_schema_naming_the_field() {
    let engine = engine();
    ok(engine.warmup(&[]).await);
    let worker = "careless";
    let field = |e: &Envelope| e.data["field"].as_str().unwrap_or_default().to_owned();
    let missing = engine.execute(worker, "mcp:everything.echo", json!({})).await;
    assert_eq!((missing.code, field(&missing)), (1002, "message".into()), "{missing:?}");
    let mistyped = engine.execute(worker, "mcp:everything.echo", json!({"message": 5})).await;
    assert_eq!((mistyped.code, field(&mistyped)), (1002, "message".into()), "{mistyped:?}");
    let nested = engine
        .execute(worker, "mcp:filesystem.edit_file", json!({"path": "/x", "edits": [{"oldText": 1, "newText": "b"}]}))
        .await;
    assert_eq!((nested.code, field(&nested)), (1002, "edits[0].oldText".into()), "{nested:?}");
    let not_object = engine.execute(worker, "mcp:everything.echo", json!(["hi"])).await;
    assert_eq!((not_object.code, field(&not_object)), (1002, "params".into()), "{not_object:?}");
    // None of these started a session.
    assert_eq!(engine.overview()["live_sessions"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_is_a_2001_then_works_again() {
    let engine = engine();
    let worker = "victim";
    let workspace = session(&engine, worker, json!({"enabled": ["everything"]})).await;
    ok(engine.execute(worker, "mcp:everything.echo", json!({"message": "one"})).await);
    let info = ok(engine.execute(worker, "mcp:info", json!({})).await);
    let pid = info["servers"]["everything"]["pid"].as_i64().unwrap() as i32;
    // SAFETY: a plain syscall on the server's process, from outside the engine.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    assert!(
        eventually(Duration::from_secs(5), || !Path::new(&format!("/proc/{pid}/cmdline")).exists()
            || std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| c.is_empty()))
        .await
    );
    let dead = engine.execute(worker, "mcp:everything.echo", json!({"message": "two"})).await;
    assert_eq!(dead.code, 2001, "{dead:?}");
    assert!(dead.message.contains("everything"), "{}", dead.message);
    let back = ok(engine.execute(worker, "mcp:everything.echo", json!({"message": "three"})).await);
    assert!(text(&back).contains("three"));
    let info = ok(engine.execute(worker, "mcp:info", json!({})).await);
    assert_ne!(info["servers"]["everything"]["pid"].as_i64().unwrap() as i32, pid, "a new process");
    destroy_leaves_nothing(&engine, worker, &workspace).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_cannot_start_is_named_with_its_stderr() {
    let broken = json!({"command": "/bin/sh", "args": ["-c", "echo 'cannot open the database' >&2; exit 3"]});
    let engine =
        engine_with(json!({"servers": {"broken": broken, "time": stdio("mcp-server-time", json!([]), json!({}))}}));
    // Warm-up publishes the tools of the servers that start; the broken one has none.
    ok(engine.warmup(&[]).await);
    let names: Vec<String> = engine.list_tools(false).data["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(names.contains(&"mcp:time.get_current_time".to_owned()), "{names:?}");
    assert!(!names.iter().any(|n| n.starts_with("mcp:broken.")), "{names:?}");
    let created = create_session(&engine, "w", "mcp", json!({})).await;
    assert_eq!(created.code, 2001, "{created:?}");
    assert!(created.message.contains("'broken'"), "{}", created.message);
    assert_eq!(created.data["stderr"], "cannot open the database", "{created:?}");
    // A session that leaves it out works.
    let workspace = session(&engine, "w", json!({"enabled": ["time"]})).await;
    destroy_leaves_nothing(&engine, "w", &workspace).await;
    // A program that does not exist: with no other server, warm-up fails, naming it.
    let engine = engine_with(json!({"servers": {"ghost": {"command": "/nonexistent/mcp-server"}}}));
    let created = create_session(&engine, "w", "mcp", json!({})).await;
    assert_eq!(created.code, 2003, "{created:?}");
    assert!(
        created.message.contains("ghost") && created.message.contains("/nonexistent/mcp-server"),
        "{}",
        created.message
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_a_servers_stdout_does_not_break_the_client() {
    let everything = servers_dir().join("node_modules/.bin/mcp-server-everything");
    let script = format!(
        "echo 'Starting up, please wait...'; echo '{{not json'; printf '\\001\\002\\377\\n'; exec {}",
        everything.display()
    );
    let noisy = json!({"command": "/bin/sh", "args": ["-c", script], "env": {"TAG": "${agent_workspace}"}});
    let engine = engine_with(json!({"servers": {"noisy": noisy}}));
    let workspace = session(&engine, "w", json!({})).await;
    let echo = ok(engine.execute("w", "mcp:noisy.echo", json!({"message": "clear"})).await);
    assert!(text(&echo).contains("clear"));
    destroy_leaves_nothing(&engine, "w", &workspace).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_may_narrow_the_servers_but_not_add_or_reconfigure_them() {
    let engine = engine();
    let refused = create_session(&engine, "w", "mcp", json!({"enabled": ["time", "shell"]})).await;
    assert_eq!((refused.code, refused.data["field"].as_str()), (1006, Some("enabled[1]")), "{refused:?}");
    let refused = create_session(&engine, "w", "mcp", json!({"servers": {"evil": {"command": "/bin/sh"}}})).await;
    assert_eq!((refused.code, refused.data["field"].as_str()), (1006, Some("servers")), "{refused:?}");
    let refused = create_session(&engine, "w", "mcp", json!({"isolation": "none"})).await;
    assert_eq!((refused.code, refused.data["field"].as_str()), (1006, Some("isolation")), "{refused:?}");
    let refused = create_session(&engine, "w", "mcp", json!({"colour": "red"})).await;
    assert_eq!((refused.code, refused.data["field"].as_str()), (1002, Some("colour")), "{refused:?}");
    let workspace = session(&engine, "w", json!({"enabled": ["time"]})).await;
    let now = ok(engine.execute("w", "mcp:time.get_current_time", json!({"timezone": "Etc/UTC"})).await);
    assert!(text(&now).contains("Etc/UTC"), "{now}");
    let other = engine.execute("w", "mcp:everything.echo", json!({"message": "x"})).await;
    assert_eq!(other.code, 1003, "{other:?}");
    destroy_leaves_nothing(&engine, "w", &workspace).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_given_by_url_over_streamable_http() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let everything = servers_dir().join("node_modules/.bin/mcp-server-everything");
    let mut server = std::process::Command::new(everything)
        .arg("streamableHttp")
        .env("PORT", port.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let up = eventually(Duration::from_secs(20), || std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()).await;
    assert!(up, "the HTTP server did not listen on {port}");
    let url = format!("http://127.0.0.1:{port}/mcp");
    let engine = engine_with(json!({"servers": {"remote": {"url": url, "headers": {"X-Session": "${session_id}"}}}}));
    ok(create_session(&engine, "w", "mcp", json!({})).await);
    let echo = ok(engine.execute("w", "mcp:remote.echo", json!({"message": "over http"})).await);
    assert!(text(&echo).contains("over http"));
    ok(engine.destroy_session("w", "mcp").await);
    server.kill().unwrap();
    server.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jailed_sessions_servers_run_as_the_jails_own_uid_writing_only_its_work_directory() {
    need("bwrap");
    let mut config = json!({"servers": servers(), "isolation": "bwrap", "enabled": ["filesystem"]});
    config["work_root"] = json!(crate::common::host_dir("mcp-jail").display().to_string());
    let engine = engine_with(config);
    let workspace = session(&engine, "jailed", json!({})).await;
    let info = ok(engine.execute("jailed", "mcp:info", json!({})).await);
    assert_eq!(info["isolation"], "bwrap");
    let path = workspace.join("out.txt");
    ok(engine.execute("jailed", "mcp:filesystem.write_file", json!({"path": path, "content": "inside"})).await);
    use std::os::unix::fs::MetadataExt;
    let owner = std::fs::metadata(&path).unwrap().uid();
    assert!(owner >= 1_000_000, "the file was written by uid {owner}, not the jail's");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "inside");
    destroy_leaves_nothing(&engine, "jailed", &workspace).await;
}

#[tokio::test]
async fn the_example_config_names_the_filesystem_and_memory_servers() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/mcp.json");
    let mut config = agentflow_sandbox::Config::load(&path).unwrap();
    let mcp = &config.resources["mcp"].config;
    assert_eq!(mcp["servers"]["filesystem"]["args"][2], "${agent_workspace}", "left for the session to fill");
    assert_eq!(mcp["servers"]["memory"]["env"]["MEMORY_FILE_PATH"], "${agent_workspace}/memory.jsonl");
    // The engine accepts it (without warming up: that would download the servers).
    config.warmup.enabled = false;
    let engine = config.engine().unwrap();
    assert_eq!(engine.backend_names(), ["bash", "mcp"]);
}

#[cfg(feature = "http")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tools_over_http_list_the_servers_tools_without_a_warm_up_first() {
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;
    let engine = engine_with(json!({"servers": {"time": stdio("mcp-server-time", json!([]), json!({}))}}));
    let app = agentflow_sandbox::http::router(engine);
    let get = |uri: &str| Request::builder().uri(uri).body(Body::empty()).unwrap();
    for uri in ["/tools", "/api/v1/tools"] {
        let response = app.clone().oneshot(get(uri)).await.unwrap();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("mcp:time.get_current_time"), "{uri}: {text}");
    }
}
