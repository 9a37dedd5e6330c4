//! Integration tests of the Rust client and the Sandbox facade, against real servers on
//! 127.0.0.1:0 (an in-process `serve` on its own runtime thread, or the `agentflow-sandbox` binary).
//!
//! The same body drives the facade over an embedded engine and over HTTP. The memory backend's
//! counters (read in the server, not through the client) and the `count` tool's own answers are
//! the independent checks. The server side (`src/http`) is tested in `tests/http.rs`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentflow_sandbox::backends::memory::{Counters, MemoryBackend};
use agentflow_sandbox::client::{Error, HttpClientConfig, HttpServiceClient, Sandbox, SandboxConfig};
use agentflow_sandbox::http::{serve, Options};
use agentflow_sandbox::protocol::{BatchAction, Envelope};
use agentflow_sandbox::{Config, Engine};
use serde_json::{json, Value};

/// A server on 127.0.0.1:0, on a runtime of its own, so that it can be killed at once (every
/// connection task dropped) as a crashed process would be.
struct Server {
    addr: SocketAddr,
    engine: Engine,
    counters: Arc<Counters>,
    kill: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

fn memory_engine() -> (Engine, Arc<Counters>) {
    let mem = MemoryBackend::new("mem");
    let counters = mem.counters();
    let engine = Engine::builder().backend(Arc::new(mem)).backend(Arc::new(MemoryBackend::new("kv"))).build().unwrap();
    (engine, counters)
}

impl Server {
    fn start(options: Options) -> Server {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let (kill, killed) = tokio::sync::oneshot::channel::<()>();
        let (handles_tx, handles_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            runtime.block_on(async move {
                let (engine, counters) = memory_engine();
                handles_tx.send((engine.clone(), counters)).unwrap();
                let listener = tokio::net::TcpListener::from_std(listener).unwrap();
                tokio::select! {
                    served = serve(listener, engine, options, std::future::pending()) => served.unwrap(),
                    _ = killed => {}
                }
            });
            runtime.shutdown_background();
        });
        let (engine, counters) = handles_rx.recv().unwrap();
        Server { addr, engine, counters, kill: Some(kill), thread: Some(thread) }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Drops the server's runtime: listener and connections close with no answer.
    fn kill(&mut self) {
        drop(self.kill.take());
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }

    /// Whether the server stopped by itself (after `/shutdown`) within `limit`.
    fn stops_within(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.thread.as_ref().is_some_and(|t| t.is_finished()) {
                self.kill();
                return true;
            }
            std::thread::yield_now();
        }
        false
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn client(url: &str, worker: &str) -> HttpServiceClient {
    HttpServiceClient::new(HttpClientConfig::new(url).worker_id(worker).timeout(Duration::from_secs(20))).unwrap()
}

/// The code of a failed call, panicking on success.
fn code_of(result: Result<Envelope, Error>) -> u32 {
    match result {
        Ok(e) => panic!("expected a failure, got {e:?}"),
        Err(e) => e.code(),
    }
}

fn strings(v: &Value, key: &str) -> Vec<String> {
    let mut out: Vec<String> =
        v.as_array().unwrap().iter().map(|x| x[key].as_str().unwrap_or_default().to_owned()).collect();
    out.sort();
    out
}

/// Every facade method, with the same expectations whatever the transport.
async fn exercise(sandbox: &Sandbox) {
    let worker = sandbox.worker_id().to_owned();
    sandbox.start().await.unwrap();

    let tools = sandbox.get_tools(false).await.unwrap();
    let names = strings(&tools.data["tools"], "name");
    assert!(names.contains(&"mem:push".to_owned()) && !names.contains(&"mem:secret".to_owned()), "{names:?}");
    let all = sandbox.get_tools(true).await.unwrap();
    assert!(strings(&all.data["tools"], "name").contains(&"mem:secret".to_owned()));
    assert_eq!(tools.data["tools"][0]["parameters"]["type"], "object");

    let warm = sandbox.warmup(&["mem"]).await.unwrap();
    assert_eq!(warm.data["backends"]["mem"]["warmed_up"], true);
    assert_eq!(code_of(sandbox.warmup(&["nope"]).await), 1005);
    let status = sandbox.get_warmup_status().await.unwrap();
    assert_eq!(status.data["backends"]["mem"], json!({"loaded": true, "warmed_up": true}));

    let created = sandbox.create_session("mem", json!({"flavour": "plain"})).await.unwrap();
    let mem_id = created.data["session_id"].as_str().unwrap().to_owned();
    assert!(mem_id.starts_with(&format!("mem_{worker}_")), "{mem_id}");
    assert_eq!(created.data["session_status"], "active");
    let again = sandbox.create_session("mem", json!(null)).await.unwrap();
    assert_eq!(again.data["session_id"], mem_id.as_str(), "creating an existing session returns it");
    let kv = sandbox.create_session_named("kv", json!(null), Some("my_kv")).await.unwrap();
    assert_eq!(kv.data["session_name"], "my_kv");
    assert_eq!(code_of(sandbox.create_session("mem", json!(5)).await), 1002);
    assert_eq!(code_of(sandbox.create_session("nope", json!(null)).await), 1005);

    sandbox.execute("mem:push", json!({"value": 1})).await.unwrap();
    let pushed = sandbox.execute("push", json!({"value": 2})).await;
    assert_eq!(code_of(pushed), 1001, "'push' is ambiguous between mem and kv");
    let pushed = sandbox.execute("mem.push", json!({"value": 2})).await.unwrap();
    assert_eq!(pushed.data["values"], json!([1, 2]));
    assert_eq!(pushed.meta.session_id.as_deref(), Some(mem_id.as_str()));
    assert!(!pushed.meta.temporary_session);
    let slept = sandbox.execute_with_timeout("mem:sleep", json!({"ms": 10}), 5.0).await.unwrap();
    assert_eq!(slept.data["slept_ms"], 10);
    match sandbox.execute("mem:push", json!({"value": "x"})).await {
        Err(Error::Request { envelope, .. }) => {
            assert_eq!((envelope.code, envelope.data["field"].as_str()), (1002, Some("value")));
        }
        other => panic!("expected a parameter error, got {other:?}"),
    }
    assert_eq!(code_of(sandbox.execute("mem:fly", json!({})).await), 1001);
    assert_eq!(code_of(sandbox.execute("mem:panic", json!({})).await), 5000);

    let listed = sandbox.list_sessions().await.unwrap();
    assert_eq!(strings(&listed.data["sessions"], "resource_type"), ["kv", "mem"]);
    let status = sandbox.get_status().await.unwrap();
    assert_eq!(status.data["worker_id"], worker.as_str());
    assert_eq!(status.data["sessions"]["mem"]["session_id"], mem_id.as_str());
    assert_eq!(status.data["tools_available"], 14);
    let refreshed = sandbox.refresh_sessions(Some("mem")).await.unwrap();
    assert_eq!(refreshed.data["refreshed"].as_array().unwrap().len(), 1);
    let refreshed = sandbox.refresh_sessions(None).await.unwrap();
    assert_eq!(refreshed.data["refreshed"].as_array().unwrap().len(), 2);

    let batch = vec![
        BatchAction { action: "mem:push".into(), params: json!({"value": 3}), timeout: None },
        BatchAction { action: "kv:echo".into(), params: json!({"value": "e"}), timeout: Some(5.0) },
    ];
    let ran = sandbox.execute_batch(batch, true, true).await.unwrap();
    assert_eq!(ran.data["results"][0]["data"]["values"], json!([1, 2, 3]));
    assert_eq!((ran.data["executed"].as_u64(), ran.data["success_count"].as_u64()), (Some(2), Some(2)));
    let failing = vec![
        BatchAction { action: "mem:fly".into(), params: json!({}), timeout: None },
        BatchAction { action: "mem:noop".into(), params: json!({}), timeout: None },
    ];
    match sandbox.execute_batch(failing, false, true).await {
        Err(Error::Request { envelope, .. }) => {
            assert_eq!((envelope.code, envelope.data["executed"].as_u64()), (1001, Some(1)));
        }
        other => panic!("expected a failed batch, got {other:?}"),
    }

    let re = sandbox.reinitialize().await.unwrap();
    assert_eq!(re.data["sessions_cleaned"], 2);
    assert_eq!(strings(&re.data["sessions"], "session_name")[1], "my_kv");
    let fresh = sandbox.execute("mem:push", json!({"value": 9})).await.unwrap();
    assert_eq!(fresh.data["values"], json!([9]), "reinitialize gives fresh sessions");
    assert_ne!(fresh.meta.session_id.as_deref(), Some(mem_id.as_str()));

    sandbox.destroy_session("kv").await.unwrap();
    assert_eq!(code_of(sandbox.destroy_session("kv").await), 1003);
    sandbox.close().await.unwrap();
    sandbox.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_body_passes_in_process() {
    let (engine, counters) = memory_engine();
    let sandbox = Sandbox::embedded(engine.clone()).with_worker_id("w_embedded").unwrap();
    assert!(sandbox.is_embedded());
    exercise(&sandbox).await;
    assert_eq!(engine.list_sessions("w_embedded").await.data["total"], 0, "close destroyed the sessions");
    assert_eq!(counters.created.load(std::sync::atomic::Ordering::Acquire), 2);
    assert_eq!(counters.destroyed.load(std::sync::atomic::Ordering::Acquire), 2);
    let stop = sandbox.shutdown_server(false, true).await.unwrap();
    assert_eq!(stop.data["sessions_cleaned"], 0);
    assert_eq!(code_of(sandbox.execute("mem:noop", json!({})).await), 5002);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_body_passes_over_http() {
    let mut server = Server::start(Options::default());
    let sandbox = Sandbox::remote(SandboxConfig::new(server.url()).worker_id("w_http")).unwrap();
    assert!(!sandbox.is_embedded());
    exercise(&sandbox).await;
    assert_eq!(server.engine.list_sessions("w_http").await.data["total"], 0, "close destroyed the sessions");
    assert_eq!(server.counters.created.load(std::sync::atomic::Ordering::Acquire), 2);
    assert_eq!(server.counters.destroyed.load(std::sync::atomic::Ordering::Acquire), 2);
    let stop = sandbox.shutdown_server(false, true).await.unwrap();
    assert_eq!(stop.data["sessions_cleaned"], 0);
    assert!(tokio::task::block_in_place(|| server.stops_within(Duration::from_secs(10))), "/shutdown stops the server");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_method_against_a_real_server() {
    let mut server = Server::start(Options::default());
    let config = HttpClientConfig {
        auto_heartbeat: true,
        heartbeat_interval: Duration::from_millis(20),
        ..HttpClientConfig::new(format!("{}/", server.url())).worker_id("cw")
    };
    let c = HttpServiceClient::new(config).unwrap();
    let health = c.connect().await.unwrap();
    assert_eq!(health, json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}));
    assert!(c.is_heartbeating());
    c.close().await;
    assert!(!c.is_heartbeating());

    let s = c.create_session("mem", Some(serde_json::Map::new()), Some("m")).await.unwrap();
    assert_eq!((s.data["session_id"].as_str(), s.data["session_name"].as_str()), (Some("mem_cw_001"), Some("m")));
    let e = c.execute("mem:push", json!({"value": 5}), Some(5.0)).await.unwrap();
    assert_eq!(e.data["values"], json!([5]));
    assert_eq!(e.meta.tool.as_deref(), Some("push"));
    assert_eq!(e.meta.trace_id.len(), 32);
    let b = c
        .execute_batch(vec![BatchAction { action: "mem:count".into(), params: json!({}), timeout: None }], false, true)
        .await
        .unwrap();
    assert_eq!(b.data["results"][0]["data"]["count"], 1);
    let l = c.list_sessions().await.unwrap();
    assert_eq!(l.data["sessions"][0]["session_id"], "mem_cw_001");
    let tools = c.list_tools(false).await.unwrap();
    assert_eq!(tools.len(), 12);
    assert_eq!(c.list_tools(true).await.unwrap().len(), 14);
    assert_eq!(c.tools(false).await.unwrap().data["total"], 12);
    let st = c.get_status().await.unwrap();
    assert_eq!(st.data["active_resources"], json!(["mem"]));
    assert_eq!(c.refresh_session(None).await.unwrap().data["refreshed"][0]["session_id"], "mem_cw_001");
    assert_eq!(c.warmup(&[]).await.unwrap().data["backends"]["kv"]["warmed_up"], true);
    assert_eq!(c.warmup_status().await.unwrap().data["backends"]["kv"]["warmed_up"], true);
    assert_eq!(c.heartbeat().await.unwrap().data["active_sessions"], json!(["mem"]));
    let (status, v) = c.request_json("GET", "/api/v1/tools?include_hidden=True", None).await.unwrap();
    assert_eq!((status, v["count"].as_u64()), (200, Some(14)));
    let (status, v) = c.request_json("POST", "/api/v1/execute", Some(&json!({"action": "mem:count"}))).await.unwrap();
    assert_eq!((status, &v["data"]["count"]), (200, &json!(2)), "X-Worker-ID stands for a missing worker_id");
    assert_eq!(c.destroy_session("mem").await.unwrap().data["session_id"], "mem_cw_001");
    c.create_session("kv", None, None).await.unwrap();
    assert_eq!(c.disconnect().await.unwrap().data["sessions_cleaned"], 1);
    assert_eq!(server.counters.created.load(std::sync::atomic::Ordering::Acquire), 1);

    let stop = c.shutdown_server(false, true).await.unwrap();
    assert_eq!(stop.data["sessions_cleaned"], 0);
    assert!(tokio::task::block_in_place(|| server.stops_within(Duration::from_secs(10))));
    match c.health().await {
        Err(Error::Connection { reason, .. }) => assert!(reason.contains("onnect"), "{reason}"),
        other => panic!("expected a connection error after shutdown, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_killed_mid_call_is_a_connection_error_not_a_hang() {
    let mut server = Server::start(Options::default());
    let c = client(&server.url(), "kw");
    let long = c.clone();
    let call = tokio::spawn(async move { long.execute("mem:sleep", json!({"ms": 60_000}), None).await });
    // The call is in the engine once its temporary session exists.
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.engine.overview()["live_sessions"] != 1 {
        assert!(Instant::now() < deadline, "the call never reached the engine");
        tokio::task::yield_now().await;
    }
    tokio::task::block_in_place(|| server.kill());
    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(10), call).await.expect("the client hung").unwrap();
    assert!(matches!(result, Err(Error::Connection { .. })), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let result = c.list_sessions().await;
    assert!(matches!(result, Err(Error::Connection { .. })), "a dead server refuses: {result:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_times_out_on_the_client_runs_once() {
    let server = Server::start(Options::default());
    let patient = client(&server.url(), "tw");
    let hurried = HttpServiceClient::new(
        HttpClientConfig::new(server.url()).worker_id("tw").timeout(Duration::from_millis(300)).max_retries(3),
    )
    .unwrap();
    // `count` runs as soon as the request arrives; the sleep after it keeps the answer from coming
    // back before the client's timeout.
    let actions = vec![
        BatchAction { action: "mem:count".into(), params: json!({}), timeout: None },
        BatchAction { action: "mem:sleep".into(), params: json!({"ms": 1500}), timeout: None },
    ];
    let started = Instant::now();
    let result = hurried.execute_batch(actions, false, true).await;
    assert!(matches!(result, Err(Error::Timeout { .. })), "{result:?}");
    assert!(started.elapsed() < Duration::from_millis(1000), "no retry after a timeout: {:?}", started.elapsed());
    // By the tool's own count (and the backend's counter), the timed-out call ran exactly once.
    let after = patient.execute("mem:count", json!({}), None).await.unwrap();
    assert_eq!(after.data["count"], 2, "the timed-out call ran once, not twice");
    assert_eq!(server.counters.counted.load(std::sync::atomic::Ordering::Acquire), 2);
}

/// Every route of the server: native paths and the original client's `/api/v1/...` ones.
const ROUTES: &[(&str, &str)] = &[
    ("POST", "/execute"),
    ("POST", "/execute/batch"),
    ("POST", "/session/create"),
    ("POST", "/session/destroy"),
    ("POST", "/session/list"),
    ("POST", "/session/refresh"),
    ("GET", "/tools"),
    ("POST", "/warmup"),
    ("GET", "/warmup/status"),
    ("POST", "/shutdown"),
    ("GET", "/ready"),
    ("POST", "/api/v1/execute"),
    ("POST", "/api/v1/execute/batch"),
    ("POST", "/api/v1/session/create"),
    ("POST", "/api/v1/session/destroy"),
    ("POST", "/api/v1/session/list"),
    ("POST", "/api/v1/session/refresh"),
    ("GET", "/api/v1/tools?include_hidden=False"),
    ("GET", "/api/v1/tools/mem:noop/schema"),
    ("POST", "/api/v1/warmup"),
    ("GET", "/api/v1/warmup/status"),
    ("POST", "/api/v1/server/shutdown"),
    ("POST", "/api/v1/lifecycle/heartbeat"),
    ("GET", "/api/v1/lifecycle/status"),
    ("POST", "/api/v1/worker/disconnect"),
    ("GET", "/api/v1/ready"),
    ("GET", "/no/such/path"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_wrong_key_gets_401_everywhere_but_health() {
    let server = Server::start(Options { api_key: Some("k-7f3a9c".into()), ..Options::default() });
    for key in [None, Some("wrong"), Some("k-7f3a9"), Some("k-7f3a9cc")] {
        let mut config = HttpClientConfig::new(server.url()).worker_id("aw");
        config.api_key = key.map(str::to_owned);
        let c = HttpServiceClient::new(config).unwrap();
        c.connect().await.expect("/health is open");
        let (status, _) = c.request_json("GET", "/api/v1/health", None).await.unwrap();
        assert_eq!(status, 200);
        for (method, path) in ROUTES {
            let (status, v) = c.request_json(method, path, Some(&json!({"worker_id": "aw"}))).await.unwrap();
            assert_eq!((status, v["code"].as_u64()), (401, Some(1006)), "{method} {path} with key {key:?}");
        }
        let calls: Vec<Result<Envelope, Error>> = vec![
            c.execute("mem:count", json!({}), None).await,
            c.execute_batch(vec![], false, true).await,
            c.create_session("mem", None, None).await,
            c.destroy_session("mem").await,
            c.list_sessions().await,
            c.tools(false).await,
            c.get_status().await,
            c.refresh_session(None).await,
            c.warmup(&[]).await,
            c.warmup_status().await,
            c.heartbeat().await,
            c.disconnect().await,
            c.shutdown_server(true, true).await,
        ];
        for (i, result) in calls.into_iter().enumerate() {
            match result {
                Err(Error::Request { status: Some(401), envelope }) => assert_eq!(envelope.code, 1006),
                other => panic!("call {i} with key {key:?}: {other:?}"),
            }
        }
        assert!(matches!(c.list_tools(false).await, Err(Error::Request { status: Some(401), .. })));
    }
    assert_eq!(server.counters.counted.load(std::sync::atomic::Ordering::Acquire), 0, "nothing ran");
    let c = HttpServiceClient::new(HttpClientConfig::new(server.url()).worker_id("aw").api_key("k-7f3a9c")).unwrap();
    assert_eq!(c.execute("mem:count", json!({}), None).await.unwrap().data["count"], 1);
    assert_eq!(c.list_tools(false).await.unwrap().len(), 12, "the refused /shutdown calls stopped nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mb_body_is_413_and_the_server_keeps_serving() {
    let server = Server::start(Options::default());
    let c = client(&server.url(), "bw");
    let huge = "x".repeat(100 << 20);
    match c.execute("mem:echo", json!({"value": huge}), None).await {
        Err(Error::Request { status: Some(413), envelope }) => {
            assert_eq!((envelope.code, envelope.data["field"].as_str()), (1002, Some("body")));
        }
        other => panic!("expected 413, got {:?}", other.map(|e| e.code)),
    }
    assert_eq!(c.execute("mem:count", json!({}), None).await.unwrap().data["count"], 1);
    let other = client(&server.url(), "bw2");
    assert_eq!(other.execute("mem:echo", json!({"value": "small"}), None).await.unwrap().data["value"], "small");
}

/// A scratch directory, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("agentflow-client-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn process_alive(pid: u32) -> bool {
    // A reaped child has no /proc entry; a zombie would show state Z.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_start_server_starts_the_binary_and_stops_it_on_close() {
    let scratch = Scratch::new("autostart");
    let config_path = scratch.0.join("server.json");
    std::fs::write(&config_path, r#"{"resources": {}, "server": {"session_ttl": 60}}"#).unwrap();
    let url = format!("http://127.0.0.1:{}", free_port());
    let config = SandboxConfig {
        auto_start_server: true,
        server_binary: Some(env!("CARGO_BIN_EXE_agentflow-sandbox").into()),
        server_config: Some(config_path.clone()),
        ..SandboxConfig::new(&url).worker_id("starter")
    };

    let refused = Sandbox::connect(&url).unwrap();
    assert!(matches!(refused.start().await, Err(Error::Connection { .. })), "no auto-start: nothing answers");

    let owner = Sandbox::remote(config.clone()).unwrap();
    owner.start().await.unwrap();
    let pid = owner.server_pid().expect("the sandbox owns the server it started");
    assert!(process_alive(pid));
    assert_eq!(owner.get_tools(false).await.unwrap().data["total"], 0, "the config file was used");

    let guest = Sandbox::remote(SandboxConfig { server_binary: None, ..config.clone() }.worker_id("guest")).unwrap();
    guest.start().await.unwrap();
    assert_eq!(guest.server_pid(), None, "a server that answers is not started again");
    guest.close().await.unwrap();
    assert!(process_alive(pid), "closing a sandbox that did not start the server leaves it running");
    owner.get_status().await.unwrap();

    owner.close().await.unwrap();
    assert!(!process_alive(pid), "close stopped and reaped the server");
    assert!(matches!(owner.get_status().await, Err(Error::Connection { .. })));

    // Dropped without close: the server still stops.
    let dropped = Sandbox::remote(config).unwrap();
    dropped.start().await.unwrap();
    let pid = dropped.server_pid().unwrap();
    tokio::task::block_in_place(|| drop(dropped));
    assert!(!process_alive(pid), "drop stopped the server");
}

#[test]
fn blocking_variants_work_without_a_runtime() {
    let server = Server::start(Options::default());
    let sandbox = Sandbox::remote(SandboxConfig::new(server.url()).worker_id("sync")).unwrap();
    sandbox.start_sync().unwrap();
    assert_eq!(sandbox.warmup_sync(&["mem"]).unwrap().data["backends"]["mem"]["warmed_up"], true);
    assert_eq!(sandbox.get_warmup_status_sync().unwrap().data["backends"]["kv"]["loaded"], true);
    sandbox.create_session_sync("mem", json!(null)).unwrap();
    assert_eq!(sandbox.execute_sync("mem:push", json!({"value": 4})).unwrap().data["values"], json!([4]));
    let batch = vec![BatchAction { action: "mem:push".into(), params: json!({"value": 5}), timeout: None }];
    let ran = sandbox.execute_batch_sync(batch, false, true).unwrap();
    assert_eq!(ran.data["results"][0]["data"]["values"], json!([4, 5]));
    assert_eq!(sandbox.list_sessions_sync().unwrap().data["total"], 1);
    assert_eq!(sandbox.get_status_sync().unwrap().data["active_resources"], json!(["mem"]));
    assert_eq!(sandbox.get_tools_sync(false).unwrap().data["total"], 12);
    assert_eq!(sandbox.refresh_sessions_sync(None).unwrap().data["refreshed"].as_array().unwrap().len(), 1);
    assert_eq!(sandbox.reinitialize_sync().unwrap().data["sessions_cleaned"], 1);
    sandbox.destroy_session_sync("mem").unwrap();
    sandbox.close_sync().unwrap();
    assert_eq!(server.counters.created.load(std::sync::atomic::Ordering::Acquire), 2);
    assert_eq!(server.counters.destroyed.load(std::sync::atomic::Ordering::Acquire), 2);

    let embedded = Sandbox::embedded_from(&Config::parse(r#"{"resources": {}}"#).unwrap()).unwrap();
    assert_eq!(embedded.execute_sync("mem:noop", json!({})).unwrap_err().code(), 1001);
    assert_eq!(embedded.get_tools_sync(false).unwrap().data["total"], 0);
    let stop = embedded.shutdown_server_sync(false, true).unwrap();
    assert_eq!(stop.data["sessions_cleaned"], 0);
    drop(embedded);

    let remote = Sandbox::remote(SandboxConfig::new(server.url())).unwrap();
    assert!(remote.worker_id().starts_with("sandbox_"), "a worker id is generated");
    remote.shutdown_server_sync(false, true).unwrap();
}

#[tokio::test]
async fn blocking_variants_refuse_to_block_a_runtime() {
    let (engine, _) = memory_engine();
    let sandbox = Sandbox::embedded(engine);
    assert!(matches!(sandbox.execute_sync("mem:noop", json!({})), Err(Error::Config(_))));
    sandbox.execute("mem:noop", json!({})).await.unwrap();
}
