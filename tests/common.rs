//! What several test modules share: polling a condition with a deadline (never a bare sleep as
//! synchronisation) and making a session through the engine's public API.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[cfg(feature = "bash")]
use agentflow_sandbox::backends::bash::BashBackend;
use agentflow_sandbox::protocol::CreateSessionRequest;
use agentflow_sandbox::{Engine, Envelope};
use serde_json::{json, Value};

/// Polls `cond` until it holds or `limit` passes; whether it held.
pub async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

/// Creates `worker`'s session of `resource` with `config`.
#[allow(dead_code)] // unused in some feature combinations
pub async fn create_session(engine: &Engine, worker: &str, resource: &str, config: Value) -> Envelope {
    let req: CreateSessionRequest =
        serde_json::from_value(json!({"worker_id": worker, "resource_type": resource, "config": config})).unwrap();
    engine.create_session(req).await
}

/// POSTs `body` to `path` of a server on 127.0.0.1:`port` (a real binary's) and parses its answer.
#[cfg(feature = "http")]
#[allow(dead_code)]
pub fn post_to(port: u16, path: &str, body: &Value) -> Value {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let body = body.to_string();
    write!(s, "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    serde_json::from_str(text.split_once("\r\n\r\n").unwrap().1).unwrap()
}

// ---- processes, directories and jails (isolation and security tests) ------------------------

#[cfg(feature = "bash")]
#[allow(dead_code)]
/// An engine whose jails (sessions opt in) make their directories under `root`, an operator
/// setting.
pub fn jail_engine(root: &Path) -> Engine {
    let defaults = json!({"work_root": root.display().to_string()}).as_object().unwrap().clone();
    Engine::builder().backend(Arc::new(BashBackend::new(defaults).unwrap())).build().unwrap()
}

#[allow(dead_code)]
/// A fresh directory for one test, under the system's temporary directory.
pub fn temp_dir(name: &str) -> PathBuf {
    fresh_dir(&std::env::temp_dir(), name)
}

#[allow(dead_code)]
/// A fresh directory for one test, outside `/tmp` (which a jail replaces with its own).
/// The target's temp dir, or `/var/tmp` when the checkout itself lives under `/tmp` (as a CI
/// clone may).
pub fn host_dir(name: &str) -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let parent = if target.starts_with("/tmp") { Path::new("/var/tmp") } else { target };
    fresh_dir(parent, name)
}

#[allow(dead_code)]
pub fn fresh_dir(parent: &Path, name: &str) -> PathBuf {
    let dir = parent.join(format!("agentflow-isolation-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[allow(dead_code)]
/// A jailed session's config.
pub fn jailed(extra: Value) -> Value {
    let mut config = json!({"isolation": "bwrap"});
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    config
}

#[allow(dead_code)]
pub fn need(program: &str) {
    let found = std::env::split_paths(&std::env::var_os("PATH").unwrap()).any(|d| d.join(program).is_file());
    assert!(found, "{program} is not installed: the isolation tests need it (see the module documentation)");
}

#[allow(dead_code)]
/// Every pid of the system.
pub fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc").unwrap().flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect()
}

#[allow(dead_code)]
/// The processes (zombies included) in the PID namespace named `ns` (`pid:[…]`).
pub fn in_namespace(ns: &str) -> usize {
    all_pids()
        .into_iter()
        .filter(|p| std::fs::read_link(format!("/proc/{p}/ns/pid")).is_ok_and(|l| l.to_string_lossy() == ns))
        .count()
}

#[allow(dead_code)]
/// The pid of a process as this process sees it, from its pid in its own namespace `ns`.
pub fn host_pid(ns: &str, inner: i32) -> Option<i32> {
    all_pids().into_iter().find(|p| {
        std::fs::read_link(format!("/proc/{p}/ns/pid")).is_ok_and(|l| l.to_string_lossy() == ns)
            && std::fs::read_to_string(format!("/proc/{p}/status")).is_ok_and(|s| {
                s.lines()
                    .find(|l| l.starts_with("NSpid:"))
                    .and_then(|l| l.split_ascii_whitespace().last()?.parse::<i32>().ok())
                    == Some(inner)
            })
    })
}

#[allow(dead_code)]
/// Stat fields of a process: (state, ppid).
pub fn stat(pid: i32) -> Option<(char, i32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut rest = text[text.rfind(')')? + 1..].split_ascii_whitespace();
    Some((rest.next()?.chars().next()?, rest.next()?.parse().ok()?))
}
