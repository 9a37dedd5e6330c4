//! Security tests: each performs an attack an agent's command (or a session's config) could make
//! on the host, the server or another session, and checks that it fails, by a witness
//! independent of the code under test: the host's own `/proc/sys` values and process table, a
//! listener the test binds, the files on the host's disk, a library's own log of who loaded it.
//! Needs `bwrap`, `prlimit`/`setpriv` (util-linux), `curl` and a C compiler (installed by
//! `.ci/test`).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentflow_sandbox::backends::bash::BashBackend;
use agentflow_sandbox::{Engine, Envelope};
use serde_json::{json, Map, Value};

use crate::common::{
    command_ok, create_session, eventually, host_dir, jail_engine, jailed, need, pids_with, run_command, stat, temp_dir,
};

fn object(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

/// An engine whose bash backend has these operator defaults and policy.
fn operator_engine(defaults: Value, policy: Value) -> Engine {
    let backend = BashBackend::with_policy(object(defaults), object(policy)).unwrap();
    Engine::builder().backend(Arc::new(backend)).build().unwrap()
}

/// The host uid a process runs as (`/proc/<pid>/status`, real uid).
fn host_uid(pid: i32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with("Uid:"))?.split_ascii_whitespace().nth(1)?.parse().ok()
}

// ---- the jail: a user namespace, as a host uid of its own ----------------------------------

#[tokio::test]
async fn a_jail_cannot_change_kernel_settings_or_read_root_only_files() {
    need("bwrap");
    let root = temp_dir("sec-kernel");
    let engine = jail_engine(&root);
    assert_eq!(create_session(&engine, "k", "bash", jailed(json!({}))).await.code, 0);
    let sysctls = ["/proc/sys/kernel/printk_ratelimit", "/proc/sys/kernel/core_pattern"];
    let before: Vec<String> = sysctls.iter().map(|p| std::fs::read_to_string(p).unwrap()).collect();
    // Root inside the jail, as the agent expects.
    assert_eq!(command_ok(&engine, "k", "id -u").await, "0\n");
    let attack = "echo 17 > /proc/sys/kernel/printk_ratelimit; echo rc=$?; \
                  echo '|/bin/sh -c id' > /proc/sys/kernel/core_pattern; echo rc=$?";
    let text = command_ok(&engine, "k", attack).await;
    assert!(!text.contains("rc=0"), "a kernel setting was written: {text}");
    let after: Vec<String> = sysctls.iter().map(|p| std::fs::read_to_string(p).unwrap()).collect();
    assert_eq!(before, after, "the host's kernel settings changed");
    // Root-only host files and directories are out of reach by ownership.
    for probe in ["cat /etc/shadow", "ls /root"] {
        let e = run_command(&engine, "k", probe, 20.0).await;
        assert_ne!(e.data["exit_code"], 0, "{probe}: {}", e.data);
        assert!(e.data["stdout"].as_str().unwrap().contains("Permission denied"), "{probe}: {}", e.data);
    }
    // bash:info names the host uid; the process table agrees, and it is not root.
    let info = engine.execute("k", "bash:info", json!({})).await;
    let uid = info.data["jail"]["host_uid"].as_u64().unwrap() as u32;
    assert!(uid >= 1_000_000, "{}", info.data);
    let pid = info.data["pid"].as_i64().unwrap() as i32;
    assert_eq!(host_uid(pid), Some(uid), "the jailed bash runs as another uid than bash:info says");
    for key in ["memory_mb", "max_processes", "cpu_seconds", "file_size_mb", "disk_mb", "enforcement"] {
        assert!(!info.data["jail"][key].is_null(), "bash:info lacks {key}: {}", info.data);
    }
    engine.shutdown(false, true).await;
    let _ = std::fs::remove_dir_all(root);
}

#[tokio::test]
async fn sessions_under_different_work_roots_cannot_read_each_other() {
    need("bwrap");
    let (root_a, root_b) = (temp_dir("sec-root-a"), temp_dir("sec-root-b"));
    let (a, b) = (jail_engine(&root_a), jail_engine(&root_b));
    assert_eq!(create_session(&a, "a", "bash", jailed(json!({}))).await.code, 0);
    assert_eq!(create_session(&b, "b", "bash", jailed(json!({}))).await.code, 0);
    command_ok(&a, "a", "echo secret > note; chmod 644 note").await;
    let work_a = command_ok(&a, "a", "pwd").await.trim().to_owned();
    assert!(Path::new(&work_a).join("note").is_file());
    let e = run_command(&b, "b", &format!("cat {work_a}/note"), 20.0).await;
    assert!(!e.data["stdout"].as_str().unwrap().contains("secret"), "another root's session read it: {}", e.data);
    assert_ne!(e.data["exit_code"], 0);
    // Each session runs as a uid of its own.
    let uid = |info: Envelope| info.data["jail"]["host_uid"].as_u64().unwrap();
    assert_ne!(uid(a.execute("a", "bash:info", json!({})).await), uid(b.execute("b", "bash:info", json!({})).await));
    a.shutdown(false, true).await;
    b.shutdown(false, true).await;
    let _ = (std::fs::remove_dir_all(root_a), std::fs::remove_dir_all(root_b));
}

#[tokio::test]
async fn host_unix_sockets_are_out_of_reach() {
    need("bwrap");
    need("curl");
    // A listener the test binds in the host's /run, open to everyone.
    let dir = Path::new("/run").join(format!("agentflow-sec-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let socket = dir.join("api.sock");
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o777)).unwrap();
    listener.set_nonblocking(true).unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let (counter, stop) = (accepted.clone(), Arc::new(std::sync::atomic::AtomicBool::new(false)));
    let stopper = stop.clone();
    let server = std::thread::spawn(move || {
        while !stopper.load(Ordering::SeqCst) {
            match listener.accept() {
                Ok((stream, _)) => {
                    counter.fetch_add(1, Ordering::SeqCst);
                    use std::io::{Read, Write};
                    // Read the request first: closing with it unread would reset the connection
                    // before curl reads the answer.
                    let _ = stream.set_nonblocking(false);
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match (&stream).read(&mut buf) {
                            Ok(n) if n > 0 => request.extend_from_slice(&buf[..n]),
                            _ => break,
                        }
                    }
                    let _ = (&stream).write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok");
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    // The host itself reaches it: the witness works.
    let host = std::process::Command::new("curl")
        .args(["-s", "-m", "5", "--unix-socket", socket.to_str().unwrap(), "http://x/"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&host.stdout), "ok");
    let root = temp_dir("sec-sockets");
    let engine = jail_engine(&root);
    for (worker, network) in [("closed", false), ("open", true)] {
        assert_eq!(create_session(&engine, worker, "bash", jailed(json!({"network": network}))).await.code, 0);
        let probe = format!("curl -s -m 5 --unix-socket {} http://x/; echo \" rc=$?\"", socket.display());
        let text = command_ok(&engine, worker, &probe).await;
        assert!(!text.starts_with("ok"), "{worker}: the jail reached a host socket: {text}");
        assert_eq!(command_ok(&engine, worker, "ls /run | wc -l").await, "0\n", "{worker}: the host's /run shows");
    }
    assert_eq!(accepted.load(Ordering::SeqCst), 1, "only the host's own request arrived");
    stop.store(true, Ordering::SeqCst);
    server.join().unwrap();
    engine.shutdown(false, true).await;
    let _ = (std::fs::remove_dir_all(dir), std::fs::remove_dir_all(root));
}

#[tokio::test]
async fn the_work_directory_has_a_total_disk_cap() {
    need("bwrap");
    let root = temp_dir("sec-disk");
    let engine = jail_engine(&root);
    let config = jailed(json!({"disk_mb": 64, "file_size_mb": 45}));
    assert_eq!(create_session(&engine, "disk", "bash", config).await.code, 0);
    let work = command_ok(&engine, "disk", "pwd").await.trim().to_owned();
    // Six files of 45 MB each fit the per-file limit, not the session's total.
    let text =
        command_ok(&engine, "disk", "for i in 1 2 3 4 5 6; do head -c 45M /dev/zero > f$i || echo fail$i; done").await;
    assert!(text.contains("No space left on device"), "{text}");
    // Counted on the host, file by file: the session holds no more than its cap.
    let total: u64 = std::fs::read_dir(&work).unwrap().flatten().map(|e| e.metadata().unwrap().len()).sum();
    assert!(total <= 64 << 20, "{total} bytes written under a 64 MiB cap");
    assert!(total >= 40 << 20, "the cap stopped writing too early: {total} bytes");
    // The session goes on once space is freed.
    assert_eq!(command_ok(&engine, "disk", "rm f*; echo again > f; cat f").await, "again\n");
    engine.shutdown(false, true).await;
    let _ = std::fs::remove_dir_all(root);
}

// ---- the operator's policy -----------------------------------------------------------------

#[tokio::test]
async fn a_session_cannot_loosen_the_operators_jail() {
    need("bwrap");
    let root = temp_dir("sec-policy");
    let defaults = json!({"isolation": "bwrap", "work_root": root.display().to_string()});
    let engine = operator_engine(defaults.clone(), json!({}));
    let attempts = [
        json!({"isolation": "none"}),
        json!({"network": true}),
        json!({"memory_mb": 1_073_741_824u64}),
        json!({"max_processes": 4_194_304}),
        json!({"cpu_seconds": 100_000}),
        json!({"disk_mb": 100_000}),
        json!({"writable": ["/"]}),
        json!({"writable": ["/etc"]}),
        json!({"writable": ["/proc"]}),
        json!({"work_root": "/"}),
        json!({"uid_first": 1}),
        json!({"env": {"LD_PRELOAD": "/tmp/x.so"}}),
        json!({"max_output_bytes": 1u64 << 30}),
    ];
    for (i, attempt) in attempts.iter().enumerate() {
        let e = create_session(&engine, &format!("w{i}"), "bash", attempt.clone()).await;
        assert_eq!(e.code, 1006, "{attempt} was accepted: {} {}", e.message, e.data);
        let key = attempt.as_object().unwrap().keys().next().unwrap();
        assert!(e.data["field"].as_str().unwrap().starts_with(key.as_str()), "{attempt}: {}", e.data);
        assert!(e.message.contains("policy") || e.message.contains("operator"), "{}", e.message);
        #[cfg(feature = "http")]
        assert_eq!(agentflow_sandbox::http::status_of(&e), 403);
    }
    assert_eq!(engine.list_sessions("w0").await.data["total"], 0, "a refused session was kept");
    // Tightening is always allowed, and bash:info shows what is in force.
    let tight = json!({"memory_mb": 128, "max_processes": 32, "network": false, "disk_mb": 16});
    assert_eq!(create_session(&engine, "tight", "bash", tight).await.code, 0);
    let info = engine.execute("tight", "bash:info", json!({})).await;
    let jail = &info.data["jail"];
    assert_eq!((&jail["memory_mb"], &jail["max_processes"], &jail["disk_mb"]), (&json!(128), &json!(32), &json!(16)));
    engine.shutdown(false, true).await;
    // The operator's policy opens keys and ceilings.
    let shared = host_dir("sec-policy-shared");
    let policy = json!({"isolation": ["bwrap", "none"], "network": true, "memory_mb": 2048,
                        "writable": [shared.display().to_string()]});
    let engine = operator_engine(defaults, policy);
    for (i, ok) in [
        json!({"isolation": "none"}),
        json!({"network": true, "memory_mb": 2048, "writable": [shared.display().to_string()]}),
    ]
    .into_iter()
    .enumerate()
    {
        let e = create_session(&engine, &format!("open{i}"), "bash", ok.clone()).await;
        assert_eq!(e.code, 0, "{ok}: {} {}", e.message, e.data);
    }
    let e = create_session(&engine, "over", "bash", json!({"memory_mb": 4096})).await;
    assert_eq!((e.code, &e.data["field"]), (1006, &json!("memory_mb")), "{}", e.message);
    engine.shutdown(false, true).await;
    // Unjailed too, what a session may keep in memory per answer is capped.
    let engine = operator_engine(json!({}), json!({"max_output_bytes": 1 << 20}));
    let e = create_session(&engine, "big", "bash", json!({"max_output_bytes": 2 << 20})).await;
    assert_eq!((e.code, &e.data["field"]), (1006, &json!("max_output_bytes")), "{}", e.message);
    assert_eq!(create_session(&engine, "ok", "bash", json!({"max_output_bytes": 1 << 20})).await.code, 0);
    engine.shutdown(false, true).await;
    let _ = (std::fs::remove_dir_all(root), std::fs::remove_dir_all(shared));
}

#[test]
fn a_policy_is_read_as_configs_are() {
    // An unknown or mistyped policy key is a configuration error naming it (and the known ones).
    for (policy, field) in [
        (json!({"memory": 4096}), "memory"),
        (json!({"memory_mb": "4096"}), "memory_mb"),
        (json!({"isolation": ["jail"]}), "isolation"),
        (json!({"writable": ["relative/path"]}), "writable"),
    ] {
        let Err(e) = BashBackend::with_policy(object(json!({})), object(policy.clone())) else {
            panic!("{policy} was accepted")
        };
        assert!(e.to_string().contains(field), "{policy}: {e}");
    }
    let Err(e) = BashBackend::with_policy(object(json!({})), object(json!({"memroy_mb": 1}))) else { panic!() };
    assert!(e.to_string().contains("known:") && e.to_string().contains("memory_mb"), "{e}");
    // One isolation level may be written alone.
    assert!(BashBackend::with_policy(object(json!({})), object(json!({"isolation": "none"}))).is_ok());
}

#[test]
fn work_root_is_the_operators_and_never_a_system_directory() {
    for dir in ["/", "/etc", "/usr", "/var", "/tmp", "relative"] {
        let defaults = object(json!({"isolation": "bwrap", "work_root": dir}));
        assert!(BashBackend::new(defaults).is_err(), "work_root {dir} was accepted");
    }
}

#[tokio::test]
async fn the_sweep_removes_only_what_a_jail_made() {
    need("bwrap");
    let root = temp_dir("sec-sweep");
    // Entries that look like a dead engine's (a number that is no live pid) but are not ours.
    let dead_pid = (4_000_000..).find(|p| !Path::new(&format!("/proc/{p}")).exists()).unwrap();
    let lookalike = root.join(format!("{dead_pid}-1-deadbeef"));
    std::fs::create_dir_all(&lookalike).unwrap();
    std::fs::write(lookalike.join("precious"), "keep").unwrap();
    std::fs::write(root.join(dead_pid.to_string()), "keep").unwrap();
    let engine = jail_engine(&root);
    let e = create_session(&engine, "s", "bash", jailed(json!({}))).await;
    assert_eq!(e.code, 0, "{} {}", e.message, e.data);
    engine.shutdown(false, true).await;
    assert_eq!(std::fs::read_to_string(lookalike.join("precious")).unwrap(), "keep");
    assert!(root.join(dead_pid.to_string()).is_file());
    let _ = std::fs::remove_dir_all(root);
}

/// Builds a shared library that, when loaded, appends "<pid namespace> <program>" to the file
/// named by `AF_PRELOAD_LOG`: a witness of every process that ran with `LD_PRELOAD` set to it, and
/// of whether it ran in the host's PID namespace or a jail's.
fn preload_witness(dir: &Path) -> std::path::PathBuf {
    let source = dir.join("witness.c");
    std::fs::write(
        &source,
        r#"#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
__attribute__((constructor)) static void witness(void) {
    const char *log = getenv("AF_PRELOAD_LOG");
    char exe[256] = {0}, ns[64] = {0};
    if (!log || readlink("/proc/self/exe", exe, sizeof exe - 1) < 0) return;
    if (readlink("/proc/self/ns/pid", ns, sizeof ns - 1) < 0) return;
    FILE *f = fopen(log, "a");
    if (f) { fprintf(f, "%s %s\n", ns, exe); fclose(f); }
}
"#,
    )
    .unwrap();
    let lib = dir.join("witness.so");
    let status = std::process::Command::new("cc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&lib)
        .arg(&source)
        .status()
        .expect("a C compiler (cc) is installed");
    assert!(status.success());
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    lib
}

#[tokio::test]
async fn a_sessions_env_reaches_only_the_jailed_shell() {
    need("bwrap");
    let root = temp_dir("sec-env");
    let lib_dir = host_dir("sec-env-lib");
    let lib = preload_witness(&lib_dir);
    // The log is a world-writable file of the host, visible in the jail (read-only /, so the
    // jailed side appends through a writable bind of its directory).
    let log_dir = host_dir("sec-env-log");
    std::fs::set_permissions(&log_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    let log = log_dir.join("loaded");
    let defaults = json!({"work_root": root.display().to_string(), "isolation": "bwrap",
                          "writable": [log_dir.display().to_string()]});
    let engine = operator_engine(defaults, json!({"loader_env": true}));
    let env = json!({"LD_PRELOAD": lib.display().to_string(), "AF_PRELOAD_LOG": log.display().to_string()});
    let e = create_session(&engine, "env", "bash", json!({"env": env})).await;
    assert_eq!(e.code, 0, "{} {}", e.message, e.data);
    command_ok(&engine, "env", "/bin/true").await;
    let lines = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(!lines.is_empty(), "the witness never loaded: the test proves nothing");
    // Every process that loaded it ran inside the jail: none of the host-side helpers (sh,
    // prlimit, setpriv, bwrap), which share the host's PID namespace with this test.
    let host_ns = std::fs::read_link("/proc/self/ns/pid").unwrap().display().to_string();
    for line in lines.lines() {
        let (ns, exe) = line.split_once(' ').unwrap();
        assert_ne!(ns, host_ns, "{exe} ran outside the jail with the session's LD_PRELOAD: {lines}");
    }
    engine.shutdown(false, true).await;
    let _ = (std::fs::remove_dir_all(root), std::fs::remove_dir_all(lib_dir), std::fs::remove_dir_all(log_dir));
}

// ---- unjailed sessions ---------------------------------------------------------------------

#[tokio::test]
async fn a_shell_never_sees_the_servers_environment() {
    // nextest runs each test in its own process: setting a variable here touches no other test.
    // SAFETY: no other thread of this test process reads the environment yet.
    unsafe { std::env::set_var("AGENTFLOW_API_KEY", "k-very-secret") };
    unsafe { std::env::set_var("AGENTFLOW_SERVER_SETTING", "internal") };
    let engine = Engine::builder().backend(Arc::new(BashBackend::new(Map::new()).unwrap())).build().unwrap();
    let text = command_ok(&engine, "plain", "echo ${AGENTFLOW_API_KEY:-unset}; env | grep -c AGENTFLOW").await;
    assert_eq!(text, "unset\n0\n");
    // What a shell needs is there.
    assert!(!command_ok(&engine, "plain", "echo $PATH").await.trim().is_empty());
    assert_eq!(command_ok(&engine, "plain", "echo $TERM").await, "dumb\n");
    engine.shutdown(false, true).await;
}

#[tokio::test]
async fn processes_that_left_the_shell_die_with_their_session() {
    let engine =
        Engine::builder().backend(Arc::new(BashBackend::new(Map::new()).unwrap())).reap_orphans(true).build().unwrap();
    let me = std::process::id() as i32;
    // Escapes from the shell's tree and session: setsid in the background, setsid -f, a double
    // fork with nohup.
    let marks = ["127.0.0.17", "127.0.0.18", "127.0.0.19"];
    assert_eq!(create_session(&engine, "esc", "bash", json!({})).await.code, 0);
    // Each is a `sh` whose argument is a mark to find it by in the process table.
    let escape = format!(
        "setsid sh -c 'sleep 120' sh {} & setsid -f sh -c 'sleep 120' sh {}; \
         (nohup sh -c 'sleep 120' sh {} >/dev/null 2>&1 &); echo started",
        marks[0], marks[1], marks[2]
    );
    assert!(command_ok(&engine, "esc", &escape).await.ends_with("started\n"));
    assert!(eventually(Duration::from_secs(5), || marks.iter().all(|m| !pids_with(m).is_empty())).await);
    let escaped: Vec<i32> = marks.iter().flat_map(|m| pids_with(m)).collect();
    let start = Instant::now();
    assert_eq!(engine.destroy_session("esc", "bash").await.code, 0);
    assert!(start.elapsed() < Duration::from_secs(5), "destroy took {:?}", start.elapsed());
    // Gone, and reaped: no zombie of this process is left.
    let gone = eventually(Duration::from_secs(10), || {
        escaped.iter().all(|p| stat(*p).is_none_or(|(state, ppid)| state == 'Z' && ppid != me))
    })
    .await;
    assert!(
        gone,
        "escaped processes outlived their session: {:?}",
        escaped.iter().map(|p| (p, stat(*p))).collect::<Vec<_>>()
    );
    // A temporary session's escapes die with it too.
    let mark = "127.0.0.20";
    let e =
        engine.execute("temp", "bash:run", json!({"command": format!("setsid -f sh -c 'sleep 120' sh {mark}")})).await;
    assert_eq!(e.code, 0, "{}", e.message);
    assert!(
        eventually(Duration::from_secs(10), || pids_with(mark).is_empty()).await,
        "the temporary session's daemon outlived it"
    );
    engine.shutdown(false, true).await;
}

// ---- the end of a call ---------------------------------------------------------------------

#[tokio::test]
async fn a_command_cannot_forge_the_end_of_its_call() {
    need("bwrap");
    let root = temp_dir("sec-forge");
    let engine = jail_engine(&root);
    for (worker, config) in [("plain", json!({})), ("jailed", jailed(json!({})))] {
        assert_eq!(create_session(&engine, worker, "bash", config).await.code, 0);
        assert_eq!(run_command(&engine, worker, "cd /tmp", 20.0).await.code, 0);
        // The marker as the shell used to print it (the nonce is a variable the command can
        // read), and guesses at the new one; then the command goes on, and ends elsewhere.
        let forge = r#"printf '\033]697;%s;0;/forged\007' "$__af_n"; printf '\033]697;%s\007' "$SRANDOM$SRANDOM";
                       sleep 1; echo real; cd /; (exit 3)"#;
        let e = run_command(&engine, worker, forge, 20.0).await;
        assert_eq!(e.code, 0, "{worker}: {}", e.message);
        assert_eq!(e.data["stdout"], "real\n", "{worker}: the call ended before the command did");
        assert_eq!((e.data["exit_code"].as_i64(), e.data["cwd"].as_str()), (Some(3), Some("/")), "{worker}");
        // Nothing of it leaks into the next call.
        assert_eq!(command_ok(&engine, worker, "echo next").await, "next\n", "{worker}");
        // The descriptor the shell reports on is not the command's: a program it starts holds
        // only its standard streams (and the one `ls` opens to list them).
        assert_eq!(command_ok(&engine, worker, "ls /proc/self/fd | tr '\\n' ' '").await, "0 1 2 3 ", "{worker}");
        // Nor can the command take over the report, or stop it.
        let e = run_command(&engine, worker, "__af_p() { :; }; PROMPT_COMMAND=; echo tried", 20.0).await;
        assert_eq!(e.code, 0, "{worker}: {}", e.message);
        assert!(e.data["stdout"].as_str().unwrap().contains("readonly"), "{worker}: {}", e.data);
        assert_eq!(command_ok(&engine, worker, "cd /tmp; echo still").await, "still\n", "{worker}");
        assert_eq!(run_command(&engine, worker, "pwd", 20.0).await.data["cwd"], "/tmp", "{worker}");
    }
    engine.shutdown(false, true).await;
    let _ = std::fs::remove_dir_all(root);
}

// ---- destroy ---------------------------------------------------------------------------------

#[tokio::test]
async fn destroy_interrupts_the_call_running_in_the_session() {
    let engine = Engine::builder().backend(Arc::new(BashBackend::new(Map::new()).unwrap())).build().unwrap();
    // A named session, then a temporary one (a call with no session), each running a long
    // command with a mark to find it by in the process table.
    for (worker, mark, named) in [("named", "21.25", true), ("temp", "21.5", false)] {
        if named {
            assert_eq!(create_session(&engine, worker, "bash", json!({})).await.code, 0);
        }
        let call = {
            let engine = engine.clone();
            let command = format!("sleep {mark}; echo never");
            tokio::spawn(async move {
                let e = engine.execute(worker, "bash:run", json!({"command": command, "timeout": 60})).await;
                (e, Instant::now())
            })
        };
        assert!(eventually(Duration::from_secs(10), || !pids_with(mark).is_empty()).await, "{worker}");
        let sleeper = pids_with(mark);
        let start = Instant::now();
        let destroyed = engine.destroy_session(worker, "bash").await;
        let took = start.elapsed();
        assert_eq!(destroyed.code, 0, "{worker}: {}", destroyed.message);
        assert_eq!(destroyed.data["temporary"].as_bool(), (!named).then_some(true), "{worker}: {}", destroyed.data);
        assert!(took < Duration::from_secs(3), "{worker}: destroy took {took:?}");
        let (e, answered) = call.await.unwrap();
        assert!(answered.duration_since(start) < Duration::from_secs(3), "{worker}: the call ran on");
        assert_eq!(e.code, 1003, "{worker}: {} {}", e.message, e.data);
        assert_eq!(e.data["destroyed"], true, "{worker}: {}", e.data);
        assert!(e.message.contains("destroyed"), "{worker}: {}", e.message);
        #[cfg(feature = "http")]
        assert_eq!(agentflow_sandbox::http::status_of(&e), 410);
        // The command is gone with its session, by the host's process table.
        assert!(
            eventually(Duration::from_secs(2), || sleeper.iter().all(|p| stat(*p).is_none_or(|(s, _)| s == 'Z'))).await,
            "{worker}: the command outlived its session"
        );
        // The worker has no session left; a new one works.
        assert_eq!(engine.destroy_session(worker, "bash").await.code, 1003);
        assert_eq!(command_ok(&engine, worker, "echo again").await, "again\n");
    }
    // A call queued behind the running one does not start on the destroyed session either.
    assert_eq!(create_session(&engine, "queue", "bash", json!({})).await.code, 0);
    let spawn = |command: &'static str| {
        let engine = engine.clone();
        tokio::spawn(
            async move { engine.execute("queue", "bash:run", json!({"command": command, "timeout": 60})).await },
        )
    };
    let first = spawn("sleep 21.75");
    assert!(eventually(Duration::from_secs(10), || !pids_with("21.75").is_empty()).await);
    let second = spawn("touch /tmp/agentflow-must-not-exist; sleep 22");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(engine.destroy_session("queue", "bash").await.code, 0);
    for call in [first, second] {
        let e = call.await.unwrap();
        assert_eq!((e.code, &e.data["destroyed"]), (1003, &json!(true)), "{}", e.message);
    }
    assert!(!Path::new("/tmp/agentflow-must-not-exist").exists());
    engine.shutdown(false, true).await;
}
