//! Integration tests of isolation (jailed shells and their limits) and fault tolerance (children
//! killed from outside, load with faults), through the [`Engine`] as an agent would use it.
//!
//! Checks read the kernel's view independently of the code under test: `/proc` (processes, PID
//! namespaces, descriptors, RSS), real sockets, the file system. The engine, the bash backend and
//! the jail are what is tested; the vm and rag backends only as far as faults under them go.
//! Needs `bwrap` (bubblewrap), `prlimit` (util-linux), `curl`, and for the vm tests `Xvfb`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentflow_sandbox::backends::bash::BashBackend;
use agentflow_sandbox::protocol::CreateSessionRequest;
use agentflow_sandbox::{Engine, Envelope};
use serde_json::{json, Map, Value};

fn bash_engine() -> Engine {
    Engine::builder().backend(Arc::new(BashBackend::new(Map::new()).unwrap())).build().unwrap()
}

async fn create(engine: &Engine, worker: &str, resource: &str, config: Value) -> Envelope {
    let req: CreateSessionRequest =
        serde_json::from_value(json!({"worker_id": worker, "resource_type": resource, "config": config})).unwrap();
    engine.create_session(req).await
}

async fn run(engine: &Engine, worker: &str, command: &str, timeout: f64) -> Envelope {
    engine.execute(worker, "bash:run", json!({"command": command, "timeout": timeout})).await
}

/// Runs a command that must succeed; its stdout.
async fn ok(engine: &Engine, worker: &str, command: &str) -> String {
    let e = run(engine, worker, command, 20.0).await;
    assert_eq!(e.code, 0, "{command}: {} {}", e.message, e.data);
    e.data["stdout"].as_str().unwrap().to_owned()
}

/// A fresh directory for one test, under the system's temporary directory.
fn temp_dir(name: &str) -> PathBuf {
    fresh_dir(&std::env::temp_dir(), name)
}

/// A fresh directory for one test, outside `/tmp` (which a jail replaces with its own).
fn host_dir(name: &str) -> PathBuf {
    fresh_dir(Path::new(env!("CARGO_TARGET_TMPDIR")), name)
}

fn fresh_dir(parent: &Path, name: &str) -> PathBuf {
    let dir = parent.join(format!("agentflow-isolation-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A jailed session's config, its work directories under `root`.
fn jailed(root: &Path, extra: Value) -> Value {
    let mut config = json!({"isolation": "bwrap", "work_root": root.display().to_string()});
    for (k, v) in extra.as_object().unwrap() {
        config[k] = v.clone();
    }
    config
}

fn need(program: &str) {
    let found = std::env::split_paths(&std::env::var_os("PATH").unwrap()).any(|d| d.join(program).is_file());
    assert!(found, "{program} is not installed: the isolation tests need it (see the module documentation)");
}

/// Every pid of the system.
fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc").unwrap().flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect()
}

/// The processes (zombies included) in the PID namespace named `ns` (`pid:[…]`).
fn in_namespace(ns: &str) -> usize {
    all_pids()
        .into_iter()
        .filter(|p| std::fs::read_link(format!("/proc/{p}/ns/pid")).is_ok_and(|l| l.to_string_lossy() == ns))
        .count()
}

/// The pid of a process as this process sees it, from its pid in its own namespace `ns`.
fn host_pid(ns: &str, inner: i32) -> Option<i32> {
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

/// Stat fields of a process: (state, ppid).
fn stat(pid: i32) -> Option<(char, i32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut rest = text[text.rfind(')')? + 1..].split_ascii_whitespace();
    Some((rest.next()?.chars().next()?, rest.next()?.parse().ok()?))
}

async fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cond()
}

// ---- the jail ------------------------------------------------------------------------------

#[tokio::test]
async fn a_jail_writes_only_its_work_directory_and_named_paths() {
    need("bwrap");
    let engine = bash_engine();
    let root = temp_dir("fs-root");
    let shared = host_dir("fs-shared");
    let outside = host_dir("fs-outside");
    std::fs::write(outside.join("host-file"), "host").unwrap();
    let config = jailed(&root, json!({"writable": [shared.display().to_string()]}));
    let created = create(&engine, "fs", "bash", config).await;
    assert_eq!(created.code, 0, "{}", created.message);
    // The work directory is the shell's directory and HOME, under the configured root.
    let work = PathBuf::from(ok(&engine, "fs", "pwd").await.trim());
    assert!(work.starts_with(&root), "{} is not under {}", work.display(), root.display());
    assert_eq!(ok(&engine, "fs", "echo $HOME").await.trim(), work.display().to_string());
    ok(&engine, "fs", "echo data > note.txt").await;
    assert_eq!(std::fs::read_to_string(work.join("note.txt")).unwrap(), "data\n");
    // Outside it, the file system is read-only, even for root, and the host's file is intact.
    for target in [outside.join("host-file"), outside.join("new"), PathBuf::from("/etc/agentflow-escape")] {
        let e = run(&engine, "fs", &format!("echo x > {}", target.display()), 10.0).await;
        assert_eq!(e.code, 0, "{}", e.message);
        assert_ne!(e.data["exit_code"], 0, "writing {} succeeded", target.display());
        assert!(e.data["stdout"].as_str().unwrap().contains("Read-only file system"), "{}", e.data);
    }
    assert_eq!(std::fs::read_to_string(outside.join("host-file")).unwrap(), "host");
    assert!(!outside.join("new").exists() && !Path::new("/etc/agentflow-escape").exists());
    // A path named writable is, and the host sees what was written.
    ok(&engine, "fs", &format!("echo shared > {}/out", shared.display())).await;
    assert_eq!(std::fs::read_to_string(shared.join("out")).unwrap(), "shared\n");
    // /tmp is the jail's own: the host's files are not there, and what it writes stays inside.
    let host_tmp = std::env::temp_dir().join(format!("agentflow-isolation-{}-host-tmp", std::process::id()));
    std::fs::write(&host_tmp, "host").unwrap();
    let probe =
        format!("test -e {} && echo visible; echo private > /tmp/jail-only; cat /tmp/jail-only", host_tmp.display());
    assert_eq!(ok(&engine, "fs", &probe).await, "private\n");
    assert!(!Path::new("/tmp/jail-only").exists());
    let _ = std::fs::remove_file(host_tmp);
    // Long commands (read from a file, not typed) reach the jailed shell too.
    let long = format!("echo {} | wc -c", "y".repeat(100_000));
    assert_eq!(ok(&engine, "fs", &long).await.trim(), "100001");
    // Its own hostname and PID namespace: bash is not pid 1, and sees no host process.
    assert_eq!(ok(&engine, "fs", "hostname").await, "jail\n");
    let seen: usize = ok(&engine, "fs", "ls -d /proc/[0-9]* | wc -l").await.trim().parse().unwrap();
    assert!(seen < 10, "the jail sees {seen} processes");
    // Destroy removes the session's directory.
    assert_eq!(engine.destroy_session("fs", "bash").await.code, 0);
    assert!(!work.exists(), "{} outlived its session", work.display());
    assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0, "something is left in {}", root.display());
    engine.shutdown(false, true).await;
    for d in [root, shared, outside] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[tokio::test]
async fn a_jail_has_no_network_unless_asked() {
    need("bwrap");
    need("curl");
    let engine = bash_engine();
    let root = temp_dir("net-root");
    // A real server on the host's loopback, counting the connections it accepts.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            use std::io::Write;
            let _ = (&stream).write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 5\r\n\r\nhello");
        }
    });
    let url = format!("http://127.0.0.1:{port}/");
    let curl = format!("curl -sS -m 5 {url}; echo \" rc=$?\"");
    assert_eq!(create(&engine, "off", "bash", jailed(&root, json!({}))).await.code, 0);
    let out = ok(&engine, "off", &curl).await;
    assert!(out.contains("rc=7"), "curl reached the host from a jail without network: {out}");
    let out = ok(&engine, "off", &format!("(echo > /dev/tcp/127.0.0.1/{port}) 2>&1; echo rc=$?")).await;
    assert!(out.contains("rc=1"), "bash reached the host: {out}");
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 0);
    // With network: true, the same request reaches the same server.
    assert_eq!(create(&engine, "on", "bash", jailed(&root, json!({"network": true}))).await.code, 0);
    let out = ok(&engine, "on", &curl).await;
    assert_eq!(out, "hello rc=0\n");
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    engine.shutdown(false, true).await;
    let _ = std::fs::remove_dir_all(root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_bomb_is_contained() {
    need("bwrap");
    let engine = bash_engine();
    let root = temp_dir("bomb-root");
    let max = 64;
    assert_eq!(create(&engine, "bomb", "bash", jailed(&root, json!({"max_processes": max}))).await.code, 0);
    assert_eq!(create(&engine, "calm", "bash", json!({})).await.code, 0);
    let ns = ok(&engine, "bomb", "readlink /proc/self/ns/pid").await.trim().to_owned();
    let baseline = in_namespace(&ns);
    let bomber = engine.clone();
    let start = Instant::now();
    // The bomb goes to the background at once; the `sleep` holds the call until its timeout.
    let bomb = tokio::spawn(async move { run(&bomber, "bomb", ":(){ :|:& };:; sleep 60", 3.0).await });
    // While it runs: the bomb stays under its cap, and another session keeps answering.
    let mut peak = 0;
    let mut answers = 0;
    while !bomb.is_finished() {
        peak = peak.max(in_namespace(&ns));
        let t = Instant::now();
        assert_eq!(ok(&engine, "calm", "echo ok").await, "ok\n");
        assert!(t.elapsed() < Duration::from_secs(5), "another session took {:?}", t.elapsed());
        answers += 1;
    }
    let e = bomb.await.unwrap();
    let took = start.elapsed();
    assert!(answers > 0, "{} {} {}", e.code, e.message, e.data);
    assert!(matches!(e.code, 2001 | 2002), "{} {} {}", e.code, e.message, e.data);
    assert!(took < Duration::from_secs(3 + 4), "the call took {took:?}");
    // The namespace holds bwrap, bash and what it forked: the bomb ran, and never past its cap.
    assert!(peak > 8 && peak <= max as usize, "{peak} processes in the jail (cap {max})");
    assert_eq!(engine.destroy_session("bomb", "bash").await.code, 0);
    assert!(
        eventually(Duration::from_secs(10), || in_namespace(&ns) == 0).await,
        "{} processes left in the jail after destroy (baseline {baseline})",
        in_namespace(&ns)
    );
    assert_eq!(ok(&engine, "calm", "echo still").await, "still\n");
    engine.shutdown(false, true).await;
    let _ = std::fs::remove_dir_all(root);
}

#[tokio::test]
async fn memory_and_file_size_limits_stop_a_command_with_a_clear_message() {
    need("bwrap");
    let engine = bash_engine();
    let root = temp_dir("mem-root");
    let config = jailed(&root, json!({"memory_mb": 256, "file_size_mb": 1}));
    assert_eq!(create(&engine, "mem", "bash", config).await.code, 0);
    let start = Instant::now();
    let e = run(&engine, "mem", "head -c 2G /dev/zero | tail", 60.0).await;
    assert!(start.elapsed() < Duration::from_secs(30), "took {:?}", start.elapsed());
    assert_eq!(e.code, 0, "{} {}", e.message, e.data);
    let out = e.data["stdout"].as_str().unwrap();
    assert_ne!(e.data["exit_code"], 0, "{}", e.data);
    assert!(
        out.contains("memory exhausted") || e.data["limit"].as_str().is_some_and(|l| l.contains("memory limit")),
        "no clear message: {}",
        e.data
    );
    // A file past the size limit is cut there, and the writer is told.
    let out = ok(&engine, "mem", "head -c 5M /dev/zero > big; echo rc=$?; stat -c %s big").await;
    assert!(out.contains("File size limit exceeded") && out.contains(&format!("{}", 1 << 20)), "{out}");
    // The shell is fine afterwards.
    assert_eq!(ok(&engine, "mem", "echo fine").await, "fine\n");
    engine.shutdown(false, true).await;
    let _ = std::fs::remove_dir_all(root);
}

// ---- faults --------------------------------------------------------------------------------

#[tokio::test]
async fn a_shell_killed_from_outside_is_reported_then_replaced() {
    need("bwrap");
    let engine = bash_engine();
    let root = temp_dir("kill-root");
    assert_eq!(create(&engine, "plain", "bash", json!({})).await.code, 0);
    assert_eq!(create(&engine, "jailed", "bash", jailed(&root, json!({}))).await.code, 0);
    ok(&engine, "jailed", "echo kept > state.txt").await;
    let work = ok(&engine, "jailed", "pwd").await.trim().to_owned();
    // The plain shell's pid is its `$$`; the jailed one's is found through its namespace.
    let plain: i32 = ok(&engine, "plain", "echo $$").await.trim().parse().unwrap();
    let ns = ok(&engine, "jailed", "readlink /proc/self/ns/pid").await.trim().to_owned();
    let inner: i32 = ok(&engine, "jailed", "echo $$").await.trim().parse().unwrap();
    let jailed_pid = host_pid(&ns, inner).expect("the jailed bash is in the process table");
    for (worker, pid) in [("plain", plain), ("jailed", jailed_pid)] {
        // SAFETY: kill(2) has no memory-safety preconditions.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
        assert!(eventually(Duration::from_secs(5), || stat(pid).is_none_or(|s| s.0 == 'Z')).await);
        let e = run(&engine, worker, "echo after", 10.0).await;
        assert_eq!(e.code, 2001, "{worker}: {} {}", e.message, e.data);
        assert!(e.message.contains("exited") && e.message.contains("fresh shell"), "{worker}: {}", e.message);
        assert_eq!(ok(&engine, worker, "echo recovered").await, "recovered\n", "{worker}");
    }
    // The jailed session's work directory survived its shell.
    assert_eq!(ok(&engine, "jailed", "cat state.txt; pwd").await, format!("kept\n{work}\n"));
    engine.shutdown(false, true).await;
    let _ = std::fs::remove_dir_all(root);
}

#[tokio::test]
async fn a_missing_bwrap_is_a_warm_up_error_only_where_asked_for() {
    // bwrap is installed here, so the look-up is shown on a PATH without it.
    assert!(agentflow_bash::find_program("bwrap", std::ffi::OsStr::new("/nonexistent")).is_none());
    assert!(agentflow_bash::INSTALL_HINT.contains("apt-get install bubblewrap"));
    // A backend defaulting to a jail warms up where bwrap is found.
    let defaults = json!({"isolation": "bwrap"}).as_object().unwrap().clone();
    let engine = Engine::builder().backend(Arc::new(BashBackend::new(defaults).unwrap())).build().unwrap();
    let e = engine.warmup(&[]).await;
    assert_eq!(e.code, 0, "{}", e.message);
    // A mistyped jail key is 1002 naming it.
    let e = create(&engine, "typo", "bash", json!({"memory_mb": "lots"})).await;
    assert_eq!((e.code, &e.data["field"]), (1002, &json!("memory_mb")), "{}", e.message);
    engine.shutdown(false, true).await;
}
