//! Integration tests of the jail: a jailed shell writes only where it may, has no network unless
//! asked, cannot fork or allocate past its limits, and dies with its engine; through the
//! `Engine` as an agent would use it.
//!
//! Checks read the kernel's view independently of the code under test: `/proc` (processes, PID
//! namespaces), real sockets, the file system. Needs `bwrap` (bubblewrap), `prlimit`
//! (util-linux) and `curl`.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::common::{
    command_ok, create_session, eventually, host_dir, in_namespace, jail_engine, jailed, need, run_command, temp_dir,
    this_test_again,
};

#[tokio::test]
async fn a_jail_writes_only_its_work_directory_and_named_paths() {
    need("bwrap");
    let root = temp_dir("fs-root");
    let engine = jail_engine(&root);
    let shared = host_dir("fs-shared");
    // A jail runs as a host uid of its own: a path named writable must let that uid write.
    std::fs::set_permissions(&shared, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let outside = host_dir("fs-outside");
    std::fs::write(outside.join("host-file"), "host").unwrap();
    let config = jailed(json!({"writable": [shared.display().to_string()]}));
    let created = create_session(&engine, "fs", "bash", config).await;
    assert_eq!(created.code, 0, "{}", created.message);
    // The work directory is the shell's directory and HOME, under the configured root.
    let work = PathBuf::from(command_ok(&engine, "fs", "pwd").await.trim());
    assert!(work.starts_with(&root), "{} is not under {}", work.display(), root.display());
    assert_eq!(command_ok(&engine, "fs", "echo $HOME").await.trim(), work.display().to_string());
    command_ok(&engine, "fs", "echo data > note.txt").await;
    assert_eq!(std::fs::read_to_string(work.join("note.txt")).unwrap(), "data\n");
    // Outside it, the file system is read-only, even for root, and the host's file is intact.
    for target in [outside.join("host-file"), outside.join("new"), PathBuf::from("/etc/agentflow-escape")] {
        let e = run_command(&engine, "fs", &format!("echo x > {}", target.display()), 10.0).await;
        assert_eq!(e.code, 0, "{}", e.message);
        assert_ne!(e.data["exit_code"], 0, "writing {} succeeded", target.display());
        assert!(e.data["stdout"].as_str().unwrap().contains("Read-only file system"), "{}", e.data);
    }
    assert_eq!(std::fs::read_to_string(outside.join("host-file")).unwrap(), "host");
    assert!(!outside.join("new").exists() && !Path::new("/etc/agentflow-escape").exists());
    // A path named writable is, and the host sees what was written.
    command_ok(&engine, "fs", &format!("echo shared > {}/out", shared.display())).await;
    assert_eq!(std::fs::read_to_string(shared.join("out")).unwrap(), "shared\n");
    // /tmp is the jail's own: the host's files are not there, and what it writes stays inside.
    let host_tmp = std::env::temp_dir().join(format!("agentflow-test-{}-host-tmp", std::process::id()));
    std::fs::write(&host_tmp, "host").unwrap();
    let probe =
        format!("test -e {} && echo visible; echo private > /tmp/jail-only; cat /tmp/jail-only", host_tmp.display());
    assert_eq!(command_ok(&engine, "fs", &probe).await, "private\n");
    assert!(!Path::new("/tmp/jail-only").exists());
    let _ = std::fs::remove_file(host_tmp);
    // Long commands (read from a file, not typed) reach the jailed shell too.
    let long = format!("echo {} | wc -c", "y".repeat(100_000));
    assert_eq!(command_ok(&engine, "fs", &long).await.trim(), "100001");
    // Its own hostname and PID namespace: bash is not pid 1, and sees no host process.
    assert_eq!(command_ok(&engine, "fs", "hostname").await, "jail\n");
    let seen: usize = command_ok(&engine, "fs", "ls -d /proc/[0-9]* | wc -l").await.trim().parse().unwrap();
    assert!(seen < 10, "the jail sees {seen} processes");
    // Another jail does not see this one's work directory.
    assert_eq!(create_session(&engine, "fs2", "bash", jailed(json!({}))).await.code, 0);
    let probe = format!("test -e {}/note.txt && echo visible; ls {} | wc -l", work.display(), root.display());
    assert_eq!(command_ok(&engine, "fs2", &probe).await, "1\n");
    assert_eq!(engine.destroy_session("fs2", "bash").await.code, 0);
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
    let root = temp_dir("net-root");
    let engine = jail_engine(&root);
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
    assert_eq!(create_session(&engine, "off", "bash", jailed(json!({}))).await.code, 0);
    let out = command_ok(&engine, "off", &curl).await;
    assert!(out.contains("rc=7"), "curl reached the host from a jail without network: {out}");
    let out = command_ok(&engine, "off", &format!("(echo > /dev/tcp/127.0.0.1/{port}) 2>&1; echo rc=$?")).await;
    assert!(out.contains("rc=1"), "bash reached the host: {out}");
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 0);
    // With network: true, the same request reaches the same server.
    assert_eq!(create_session(&engine, "on", "bash", jailed(json!({"network": true}))).await.code, 0);
    let out = command_ok(&engine, "on", &curl).await;
    assert_eq!(out, "hello rc=0\n");
    assert_eq!(accepted.load(std::sync::atomic::Ordering::SeqCst), 1);
    engine.shutdown(false, true).await;
    let _ = std::fs::remove_dir_all(root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_bomb_is_contained() {
    need("bwrap");
    let root = temp_dir("bomb-root");
    let engine = jail_engine(&root);
    let max = 64;
    assert_eq!(create_session(&engine, "bomb", "bash", jailed(json!({"max_processes": max}))).await.code, 0);
    assert_eq!(create_session(&engine, "calm", "bash", json!({})).await.code, 0);
    let ns = command_ok(&engine, "bomb", "readlink /proc/self/ns/pid").await.trim().to_owned();
    let baseline = in_namespace(&ns);
    let bomber = engine.clone();
    let start = Instant::now();
    // The bomb goes to the background at once; the `sleep` holds the call until its timeout.
    let bomb = tokio::spawn(async move { run_command(&bomber, "bomb", ":(){ :|:& };:; sleep 60", 3.0).await });
    // While it runs: the bomb stays under its cap, and another session keeps answering.
    let mut peak = 0;
    let mut answers = 0;
    while !bomb.is_finished() {
        peak = peak.max(in_namespace(&ns));
        let t = Instant::now();
        assert_eq!(command_ok(&engine, "calm", "echo ok").await, "ok\n");
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
    assert_eq!(command_ok(&engine, "calm", "echo still").await, "still\n");
    engine.shutdown(false, true).await;
    let _ = std::fs::remove_dir_all(root);
}

#[tokio::test]
async fn memory_and_file_size_limits_stop_a_command_with_a_clear_message() {
    need("bwrap");
    let root = temp_dir("mem-root");
    let engine = jail_engine(&root);
    let config = jailed(json!({"memory_mb": 256, "file_size_mb": 1}));
    assert_eq!(create_session(&engine, "mem", "bash", config).await.code, 0);
    let start = Instant::now();
    let e = run_command(&engine, "mem", "head -c 2G /dev/zero | tail", 60.0).await;
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
    let out = command_ok(&engine, "mem", "head -c 5M /dev/zero > big; echo rc=$?; stat -c %s big").await;
    assert!(out.contains("File size limit exceeded") && out.contains(&format!("{}", 1 << 20)), "{out}");
    // The shell is fine afterwards.
    assert_eq!(command_ok(&engine, "mem", "echo fine").await, "fine\n");
    engine.shutdown(false, true).await;
    let _ = std::fs::remove_dir_all(root);
}

/// Set in the child process that plays an engine killed with its jails.
const DYING_ENGINE: &str = "AGENTFLOW_ISOLATION_DYING_ENGINE";

/// An engine killed with SIGKILL (no destroy, no drop) takes its jails with it: the PTY hangs
/// up, which ends the outer bwrap, and `--die-with-parent` ends the namespace.
#[test]
fn a_jail_dies_with_its_engine() {
    if std::env::var_os(DYING_ENGINE).is_some() {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
        runtime.block_on(async {
            let root = PathBuf::from(std::env::var_os(DYING_ENGINE).unwrap());
            let engine = jail_engine(&root);
            assert_eq!(create_session(&engine, "dying", "bash", jailed(json!({}))).await.code, 0);
            command_ok(&engine, "dying", "sleep 1000 &").await;
            println!("NS={}", command_ok(&engine, "dying", "readlink /proc/self/ns/pid").await.trim());
            println!("ENGINE={}", std::process::id());
            // SAFETY: kill(2) has no memory-safety preconditions; this process ends here.
            unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
        });
        unreachable!("the engine was killed");
    }
    need("bwrap");
    let root = temp_dir("dying-root");
    let out = this_test_again(module_path!(), "a_jail_dies_with_its_engine")
        .env(DYING_ENGINE, &root)
        .output()
        .expect("the test binary runs again");
    assert_eq!(out.status.signal(), Some(libc::SIGKILL), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let ns =
        stdout.lines().find_map(|l| Some(l.split_once("NS=")?.1)).unwrap_or_else(|| panic!("no namespace: {stdout}"));
    assert!(ns.starts_with("pid:["), "{ns}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while in_namespace(ns) > 0 {
        assert!(Instant::now() < deadline, "{} processes of the jail outlived its engine", in_namespace(ns));
        std::thread::sleep(Duration::from_millis(20));
    }
    // What it left is swept away by the next jail made under the same root.
    let engine_pid = stdout.lines().find_map(|l| Some(l.split_once("ENGINE=")?.1));
    let prefix = format!("{}-", engine_pid.unwrap_or_else(|| panic!("no engine pid: {stdout}")));
    let left_dir =
        || std::fs::read_dir(&root).unwrap().flatten().any(|e| e.file_name().to_string_lossy().starts_with(&prefix));
    let left_cgroup = || {
        let pids = std::fs::read_dir("/sys/fs/cgroup/pids");
        pids.is_ok_and(|d| {
            d.flatten().any(|e| e.file_name().to_string_lossy().starts_with(&format!("agentflow-{prefix}")))
        })
    };
    assert!(left_dir(), "the killed engine left nothing to sweep");
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let engine = jail_engine(&root);
        assert_eq!(create_session(&engine, "sweeper", "bash", jailed(json!({}))).await.code, 0);
        engine.shutdown(false, true).await;
    });
    assert!(!left_dir(), "the dead engine's directory is still in {}", root.display());
    assert!(!left_cgroup(), "the dead engine's cgroup is still there");
    let _ = std::fs::remove_dir_all(&root);
}
