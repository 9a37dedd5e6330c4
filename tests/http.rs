//! Integration tests of the HTTP facade: the router through `tower::ServiceExt::oneshot`, real
//! sockets on 127.0.0.1:0 (serving until shutdown, and holding up under slow senders), and the
//! server binary stopped by `/shutdown`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentflow_sandbox::backends::memory::MemoryBackend;
use agentflow_sandbox::http::{router, router_with, serve, Options};
use agentflow_sandbox::Engine;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tower::ServiceExt;

fn engine() -> Engine {
    Engine::builder()
        .backend(Arc::new(MemoryBackend::new("mem")))
        .backend(Arc::new(MemoryBackend::new("kv")))
        .build()
        .unwrap()
}

async fn call(
    app: &axum::Router,
    method: &str,
    uri: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, Value) {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let response = app.clone().oneshot(req.body(Body::from(body.to_owned())).unwrap()).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| panic!("not JSON ({status}): {}", String::from_utf8_lossy(&bytes)));
    (status, value)
}

async fn post(app: &axum::Router, uri: &str, body: Value) -> (StatusCode, Value) {
    call(app, "POST", uri, &body.to_string(), &[("content-type", "application/json")]).await
}

#[tokio::test]
async fn execute_answers_the_envelope() {
    let app = router(engine());
    let (status, v) =
        post(&app, "/execute", json!({"worker_id": "w", "action": "mem:echo", "params": {"value": "x"}})).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["code"], 0);
    assert_eq!(v["message"], "success");
    assert_eq!(v["data"]["value"], "x");
    for key in ["execution_time_ms", "tool", "resource_type", "session_id", "temporary_session", "trace_id"] {
        assert!(v["meta"].get(key).is_some(), "meta.{key} missing: {v}");
    }
    assert_eq!(v["meta"]["temporary_session"], true);
}

#[tokio::test]
async fn bad_requests_get_codes_statuses_and_named_problems() {
    let app = router(engine());
    let (status, v) = call(&app, "POST", "/execute", "{not json", &[]).await;
    assert_eq!((status, v["code"].as_u64()), (StatusCode::BAD_REQUEST, Some(1002)));
    assert!(v["message"].as_str().unwrap().contains("invalid JSON"), "{v}");
    let (status, v) = post(&app, "/execute", json!({"worker_id": "w"})).await;
    assert_eq!((status, v["code"].as_u64()), (StatusCode::BAD_REQUEST, Some(1002)));
    assert!(v["message"].as_str().unwrap().contains("action"), "{v}");
    let (status, v) = post(&app, "/execute", json!({"worker_id": "w", "action": "mem:fly"})).await;
    assert_eq!((status, v["code"].as_u64()), (StatusCode::NOT_FOUND, Some(1001)));
    let (status, v) = post(&app, "/execute", json!({"worker_id": "w", "action": "noop"})).await;
    assert_eq!((status, v["code"].as_u64()), (StatusCode::NOT_FOUND, Some(1001)));
    assert_eq!(v["data"]["candidates"], json!(["mem:noop", "kv:noop"]));
    let (status, v) =
        post(&app, "/execute", json!({"worker_id": "w", "action": "mem:push", "params": {"value": "a"}})).await;
    assert_eq!((status, v["data"]["field"].as_str()), (StatusCode::BAD_REQUEST, Some("value")));
    let (status, v) = post(&app, "/execute", json!({"worker_id": "w", "action": "mem:panic"})).await;
    assert_eq!((status, v["code"].as_u64()), (StatusCode::INTERNAL_SERVER_ERROR, Some(5000)));
    let (status, v) = call(&app, "GET", "/no/such/path", "", &[]).await;
    assert_eq!((status, v["code"].as_u64()), (StatusCode::NOT_FOUND, Some(1001)));
    let (status, v) = post(&app, "/session/destroy", json!({"worker_id": "w", "resource_type": "mem"})).await;
    assert_eq!((status, v["code"].as_u64()), (StatusCode::NOT_FOUND, Some(1003)));
}

#[tokio::test]
async fn sessions_over_http_with_the_worker_header() {
    let app = router(engine());
    let h = [("x-worker-id", "hw"), ("content-type", "application/json")];
    let (status, v) = call(&app, "POST", "/session/create", r#"{"resource_type":"mem","custom_name":"n"}"#, &h).await;
    assert_eq!((status, v["data"]["session_name"].as_str()), (StatusCode::OK, Some("n")));
    let (_, v) = call(&app, "POST", "/api/v1/session/list", "{}", &h).await;
    assert_eq!(v["data"]["sessions"][0]["resource_type"], "mem");
    let (_, v) = call(&app, "POST", "/session/refresh", "{}", &h).await;
    assert_eq!(v["data"]["refreshed"].as_array().unwrap().len(), 1);
    let (_, v) = call(&app, "POST", "/api/v1/lifecycle/status", "", &h).await;
    assert_eq!(v["data"]["active_resources"], json!(["mem"]));
    let (_, v) = call(&app, "POST", "/api/v1/lifecycle/heartbeat", "", &h).await;
    assert_eq!(v["data"]["active_sessions"], json!(["mem"]));
    let (_, v) = call(&app, "POST", "/api/v1/worker/disconnect", "", &h).await;
    assert_eq!(v["data"]["sessions_cleaned"], 1);
    let (status, v) = post(&app, "/session/create", json!({"resource_type": "mem"})).await;
    assert_eq!((status, v["data"]["field"].as_str()), (StatusCode::BAD_REQUEST, Some("worker_id")));
}

#[tokio::test]
async fn batch_partial_failure_is_207() {
    let app = router(engine());
    let body = json!({"worker_id": "w", "actions": [{"action": "mem:noop"}, {"action": "mem:fly"}]});
    let (status, v) = post(&app, "/execute/batch", body).await;
    assert_eq!(status, StatusCode::MULTI_STATUS);
    assert_eq!((v["code"].as_u64(), v["message"].as_str()), (Some(1001), Some("1 of 2 actions failed")));
}

#[tokio::test]
async fn tools_warmup_health_and_compat_shapes() {
    let app = router(engine());
    let (_, v) = call(&app, "GET", "/tools", "", &[]).await;
    assert_eq!(v["code"], 0);
    assert!(v["data"]["tools"].as_array().unwrap().iter().all(|t| t["name"].as_str().unwrap().contains(':')));
    let (_, v) = call(&app, "GET", "/api/v1/tools?include_hidden=False", "", &[]).await;
    let n_visible = v["count"].as_u64().unwrap();
    assert_eq!(v["tools"][0]["full_name"], "mem:noop");
    assert_eq!(v["tools"][0]["name"], "noop");
    let (_, v) = call(&app, "GET", "/api/v1/tools?include_hidden=True", "", &[]).await;
    assert_eq!(v["count"].as_u64().unwrap(), n_visible + 2);
    let (status, _) = call(&app, "GET", "/api/v1/tools?include_hidden=maybe", "", &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, v) = call(&app, "GET", "/api/v1/tools/mem:push/schema", "", &[]).await;
    assert_eq!((status, &v["parameters"]["required"]), (StatusCode::OK, &json!(["value"])));
    let (status, _) = call(&app, "GET", "/api/v1/tools/nope/schema", "", &[]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (_, v) = call(&app, "GET", "/health", "", &[]).await;
    assert_eq!(v, json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}));
    let (_, v) = call(&app, "POST", "/warmup", "", &[]).await;
    assert_eq!(v["data"]["backends"]["mem"]["warmed_up"], true);
    let (_, v) = call(&app, "POST", "/api/v1/warmup", r#"{"backends":["kv"]}"#, &[]).await;
    assert_eq!(v["status"], "success");
    assert_eq!(v["results"]["kv"], true);
    let (_, v) = call(&app, "GET", "/api/v1/warmup/status", "", &[]).await;
    assert_eq!(v["summary"], json!({"total": 2, "warmed_up": 2, "pending": 0}));
    let (_, v) = call(&app, "GET", "/ready", "", &[]).await;
    assert_eq!(v["status"], "ready");
}

#[tokio::test]
async fn an_api_key_guards_every_endpoint_but_health() {
    let options = Options { api_key: Some("s3cret".into()), ..Options::default() };
    let (app, _) = router_with(engine(), options);
    for (method, uri) in [("POST", "/execute"), ("GET", "/tools"), ("POST", "/api/v1/execute"), ("POST", "/shutdown")] {
        let (status, v) = call(&app, method, uri, "{}", &[]).await;
        assert_eq!((status, v["code"].as_u64()), (StatusCode::UNAUTHORIZED, Some(1006)), "{method} {uri}");
        let (status, _) = call(&app, method, uri, "{}", &[("authorization", "Bearer wrong")]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri} with a wrong key");
    }
    let (status, _) = call(&app, "GET", "/health", "", &[]).await;
    assert_eq!(status, StatusCode::OK);
    let body = r#"{"worker_id":"w","action":"mem:noop"}"#;
    let (status, _) = call(&app, "POST", "/execute", body, &[("authorization", "Bearer s3cret")]).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = call(&app, "POST", "/execute", body, &[("x-api-key", "s3cret")]).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn an_oversized_body_is_413_with_an_envelope() {
    let options = Options { max_body_bytes: 1024, ..Options::default() };
    let (app, _) = router_with(engine(), options);
    let big = json!({"worker_id": "w", "action": "mem:echo", "params": {"value": "x".repeat(4096)}}).to_string();
    let (status, v) = call(&app, "POST", "/execute", &big, &[]).await;
    assert_eq!((status, v["code"].as_u64()), (StatusCode::PAYLOAD_TOO_LARGE, Some(1002)));
    let (status, _) = post(&app, "/execute", json!({"worker_id": "w", "action": "mem:noop"})).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn a_wrong_method_on_a_known_path_is_405_with_an_envelope() {
    let app = router(engine());
    for (method, uri, allowed) in
        [("GET", "/execute", "POST"), ("GET", "/api/v1/execute", "POST"), ("POST", "/health", "GET,HEAD")]
    {
        let response = app.clone().oneshot(Request::builder().method(method).uri(uri).body(Body::empty()).unwrap());
        let response = response.await.unwrap();
        let status = response.status();
        let allow = response.headers().get("allow").map(|v| v.to_str().unwrap().replace(' ', ""));
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let v: Value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("{method} {uri}: not JSON ({status}): {}", String::from_utf8_lossy(&bytes)));
        assert_eq!((status, v["code"].as_u64()), (StatusCode::METHOD_NOT_ALLOWED, Some(1002)), "{method} {uri}: {v}");
        assert_eq!(v["data"]["field"], "method", "{v}");
        let message = v["message"].as_str().unwrap();
        assert!(message.contains(method) && message.contains(uri), "{message}");
        assert!(v["meta"].get("trace_id").is_some(), "{v}");
        assert_eq!(allow.as_deref(), Some(allowed), "{method} {uri}");
    }
}

#[tokio::test]
async fn a_worker_id_that_could_be_a_path_or_a_header_is_refused_everywhere() {
    let engine = engine();
    let app = router(engine.clone());
    let long = "w".repeat(100_000);
    for bad in ["a\0b", "a\r\nX-Injected: 1", "../../etc", "a/b", long.as_str()] {
        for (uri, body) in [
            ("/execute", json!({"worker_id": bad, "action": "mem:echo", "params": {"value": 1}})),
            ("/execute/batch", json!({"worker_id": bad, "actions": [{"action": "mem:echo", "params": {"value": 1}}]})),
            ("/session/create", json!({"worker_id": bad, "resource_type": "mem"})),
            ("/session/destroy", json!({"worker_id": bad, "resource_type": "mem"})),
            ("/session/list", json!({"worker_id": bad})),
            ("/session/refresh", json!({"worker_id": bad})),
            ("/api/v1/lifecycle/heartbeat", json!({"worker_id": bad})),
            ("/api/v1/worker/disconnect", json!({"worker_id": bad})),
        ] {
            let (status, v) = post(&app, uri, body).await;
            let shown: String = bad.chars().take(12).collect();
            assert_eq!((status, v["code"].as_u64()), (StatusCode::BAD_REQUEST, Some(1002)), "{uri} {shown:?}: {v}");
            assert_eq!(v["data"]["field"], "worker_id", "{uri} {shown:?}: {v}");
            // Never echoed back.
            assert!(!v.to_string().contains(&long[..200]), "{uri}: the long id came back");
        }
    }
    // Nothing was made for any of them; a good id works.
    assert_eq!(engine.overview()["live_sessions"], 0, "{}", engine.overview());
    let (status, v) =
        post(&app, "/session/create", json!({"worker_id": "runner-3@host:1", "resource_type": "mem"})).await;
    assert_eq!((status, v["code"].as_u64()), (StatusCode::OK, Some(0)), "{v}");
    // The same holds in-process.
    let e = engine.execute("a/../b", "mem:echo", json!({"value": 1})).await;
    assert_eq!((e.code, e.data["field"].as_str()), (1002, Some("worker_id")));
}

/// One request over a real socket, `Connection: close`; returns status and body.
async fn raw(addr: std::net::SocketAddr, method: &str, path: &str, body: &str) -> (u16, Value) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let text = String::from_utf8(response).unwrap();
    let status = text[9..12].parse().unwrap();
    let (_, body) = text.split_once("\r\n\r\n").unwrap();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_socket_serves_until_shutdown() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let engine = engine();
    let server = tokio::spawn(serve(listener, engine.clone(), Options::default(), std::future::pending()));
    let (status, v) = raw(addr, "POST", "/session/create", r#"{"worker_id":"w","resource_type":"mem"}"#).await;
    assert_eq!((status, v["code"].as_u64()), (200, Some(0)));
    let (status, v) =
        raw(addr, "POST", "/execute", r#"{"worker_id":"w","action":"mem:push","params":{"value":4}}"#).await;
    assert_eq!((status, &v["data"]["values"]), (200, &json!([4])));
    let (status, v) = raw(addr, "POST", "/api/v1/server/shutdown", "{}").await;
    assert_eq!((status, v["status"].as_str(), v["sessions_cleaned"].as_u64()), (200, Some("success"), Some(1)));
    tokio::time::timeout(Duration::from_secs(10), server).await.expect("server stopped").unwrap().unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "the port is closed after shutdown");
}

/// A slow sender on its own connection: `head`, then one byte every 50 ms (at most `max_bytes`),
/// until the server answers or closes. Returns whether the server closed the connection, when,
/// and what it answered.
fn slow_sender(
    addr: std::net::SocketAddr,
    head: &'static str,
    max_bytes: usize,
    started: tokio::sync::mpsc::Sender<()>,
) -> tokio::task::JoinHandle<(bool, Duration, String)> {
    tokio::spawn(async move {
        let t0 = Instant::now();
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(head.as_bytes()).await.unwrap();
        started.send(()).await.unwrap();
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        for _ in 0..max_bytes {
            if stream.write_all(b" ").await.is_err() {
                break;
            }
            // Paces the sender and notices an answer or a close.
            match tokio::time::timeout(Duration::from_millis(50), stream.read(&mut buf)).await {
                Err(_) => continue,
                Ok(Ok(n)) if n > 0 => answer.extend_from_slice(&buf[..n]),
                Ok(_) => break,
            }
            // Answered: the rest of the answer, then the close (or not, within 5 s).
            while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
                if n == 0 {
                    return (true, t0.elapsed(), String::from_utf8_lossy(&answer).into_owned());
                }
                answer.extend_from_slice(&buf[..n]);
            }
            return (false, t0.elapsed(), String::from_utf8_lossy(&answer).into_owned());
        }
        let closed = matches!(stream.read(&mut buf).await, Ok(0) | Err(_));
        (closed, t0.elapsed(), String::from_utf8_lossy(&answer).into_owned())
    })
}

/// More slow senders than the concurrency limit (bodies sent a byte at a time, headers too): the
/// server keeps answering `/health` and a tool call, and closes the slow connections at the body
/// (header) timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_senders_hold_no_permit_and_are_cut_off() {
    const LIMIT: usize = 4;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let options = Options {
        max_concurrent_requests: LIMIT,
        body_timeout: Duration::from_secs(1),
        header_timeout: Duration::from_secs(1),
        ..Options::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, engine(), options, async move {
        let _ = stopped.await;
    }));
    let (started_tx, mut started) = tokio::sync::mpsc::channel(64);
    let slow_body =
        "POST /execute HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{";
    let slow_head = "POST /execute HTTP/1.1\r\nHost: x\r\nX-Slow: ";
    let bodies: Vec<_> = (0..3 * LIMIT).map(|_| slow_sender(addr, slow_body, 400, started_tx.clone())).collect();
    let heads: Vec<_> = (0..LIMIT).map(|_| slow_sender(addr, slow_head, 400, started_tx.clone())).collect();
    for _ in 0..bodies.len() + heads.len() {
        started.recv().await.unwrap();
    }

    let t0 = Instant::now();
    let (status, v) = tokio::time::timeout(Duration::from_secs(3), raw(addr, "GET", "/health", ""))
        .await
        .expect("/health answers while slow senders are connected");
    assert_eq!((status, v["status"].as_str()), (200, Some("ok")));
    let body = r#"{"worker_id":"w","action":"mem:noop"}"#;
    let (status, v) = tokio::time::timeout(Duration::from_secs(3), raw(addr, "POST", "/execute", body))
        .await
        .expect("/execute answers while slow senders are connected");
    assert_eq!((status, v["code"].as_u64()), (200, Some(0)), "{v}");
    assert!(t0.elapsed() < Duration::from_secs(3), "answered in {:?}", t0.elapsed());

    for task in bodies {
        let (closed, after, answer) = task.await.unwrap();
        assert!(closed, "a slow body's connection is closed by the server (answer: {answer})");
        assert!(after < Duration::from_secs(6), "closed after {after:?}, the body timeout is 1 s");
        assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
        assert!(answer.contains(r#""code":2002"#), "{answer}");
    }
    for task in heads {
        let (closed, after, _) = task.await.unwrap();
        assert!(closed, "a slow header's connection is closed by the server");
        assert!(after < Duration::from_secs(6), "closed after {after:?}, the header timeout is 1 s");
    }
    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server).await.expect("server stopped").unwrap().unwrap();
}

/// `server.max_sessions` of the config file caps live sessions: past it, 2004 with HTTP 503 naming
/// the cap, and room again once one is destroyed.
#[cfg(feature = "bash")]
#[tokio::test]
async fn the_config_caps_live_sessions_with_2004() {
    let config = agentflow_sandbox::Config::parse(
        r#"{"server": {"max_sessions": 2},
            "resources": {"bash": {"enabled": true}, "vm": {"enabled": false}, "rag": {"enabled": false}}}"#,
    )
    .unwrap();
    let engine = config.engine().unwrap();
    let app = router(engine.clone());
    for worker in ["a", "b"] {
        let (status, v) = post(&app, "/session/create", json!({"worker_id": worker, "resource_type": "bash"})).await;
        assert_eq!((status, v["code"].as_u64()), (StatusCode::OK, Some(0)), "{v}");
    }
    let (status, v) = post(&app, "/session/create", json!({"worker_id": "c", "resource_type": "bash"})).await;
    assert_eq!((status, v["code"].as_u64()), (StatusCode::SERVICE_UNAVAILABLE, Some(2004)), "{v}");
    assert!(v["message"].as_str().unwrap().contains("max_sessions reached: 2"), "{v}");
    let (_, v) = post(&app, "/session/destroy", json!({"worker_id": "a", "resource_type": "bash"})).await;
    assert_eq!(v["code"], 0, "{v}");
    let (_, v) = post(&app, "/session/create", json!({"worker_id": "c", "resource_type": "bash"})).await;
    assert_eq!(v["code"], 0, "{v}");
    engine.shutdown(true, true).await;
}

/// The `agentflow-sandbox` binary, stopped by `/shutdown`, exits 0 and leaves no process behind.
#[cfg(feature = "bash")]
mod binary {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use serde_json::json;

    use crate::common::post_to as request;

    /// Every live (not zombie) descendant of `root`, from `/proc`.
    fn descendants(root: u32) -> Vec<u32> {
        let mut parent = std::collections::HashMap::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
            let after = &stat[stat.rfind(')').unwrap() + 2..];
            let mut fields = after.split(' ');
            let state = fields.next().unwrap();
            let ppid: u32 = fields.next().unwrap().parse().unwrap();
            if state != "Z" {
                parent.insert(pid, ppid);
            }
        }
        let mut out = Vec::new();
        let mut frontier = vec![root];
        while let Some(p) = frontier.pop() {
            for (&child, &pp) in &parent {
                if pp == p {
                    out.push(child);
                    frontier.push(child);
                }
            }
        }
        out
    }

    fn alive(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s[s.rfind(')').unwrap() + 2..].starts_with('Z'))
            .unwrap_or(false)
    }

    #[test]
    fn shutdown_exits_0_and_leaves_no_child_process() {
        let dir = std::env::temp_dir().join(format!("afs-bin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("config.json");
        std::fs::write(&config, r#"{"resources": {"bash": {"enabled": true}}}"#).unwrap();
        let mut server = Command::new(env!("CARGO_BIN_EXE_agentflow-sandbox"))
            .args(["serve", "--port", "0", "--config"])
            .arg(&config)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = BufReader::new(server.stderr.take().unwrap());
        let mut line = String::new();
        let port: u16 = loop {
            line.clear();
            assert!(stderr.read_line(&mut line).unwrap() > 0, "the server exited before listening");
            if let Some(rest) = line.split("http://127.0.0.1:").nth(1) {
                break rest.split_whitespace().next().unwrap().parse().unwrap();
            }
        };
        let created = request(port, "/session/create", &json!({"worker_id": "w", "resource_type": "bash"}));
        assert_eq!(created["code"], 0, "{created}");
        let ran = request(
            port,
            "/execute",
            &json!({"worker_id": "w", "action": "bash:run", "params": {"command": "sleep 1000 & echo started"}}),
        );
        assert_eq!(ran["code"], 0, "{ran}");
        // A temporary session's shell too, running while nothing else is.
        let children = descendants(server.id());
        assert!(children.len() >= 2, "the shell and its sleep run under the server: {children:?}");

        let answer = request(port, "/shutdown", &json!({}));
        assert_eq!(answer["data"]["sessions_cleaned"], 1, "{answer}");
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = server.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "the server did not exit after /shutdown");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "exit status {status}");
        // SIGKILLed processes die asynchronously: give them a moment, which a `sleep 1000` that
        // nobody killed would not use.
        let deadline = Instant::now() + Duration::from_secs(2);
        while children.iter().any(|&p| alive(p)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        let left: Vec<u32> = children.into_iter().filter(|&p| alive(p)).collect();
        let names: Vec<String> =
            left.iter().map(|p| std::fs::read_to_string(format!("/proc/{p}/cmdline")).unwrap_or_default()).collect();
        assert!(left.is_empty(), "processes outlived the server: {left:?} {names:?}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
