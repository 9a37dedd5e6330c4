//! What several test modules share: polling a condition with a deadline (never a bare sleep as
//! synchronisation), making a session through the engine's public API, this process's memory;
//! and, for the bash-area tests (feature `bash`), the kernel's view of processes read from
//! `/proc` independently of the code under test, fresh directories, jails, and re-running one
//! test of this binary in a child process.

use std::time::{Duration, Instant};

use agentflow_sandbox::protocol::CreateSessionRequest;
use agentflow_sandbox::{Engine, Envelope};
use serde_json::{json, Value};

#[cfg(feature = "bash")]
pub use self::bash_area::*;

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

/// A field of this process's `/proc/self/status` given in KiB (`VmRSS:`, `RssAnon:`, …).
#[cfg(any(feature = "bash", feature = "rag"))]
pub fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("no {field} in {status}"));
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Processes, directories and jails: what the bash-area tests (bash, jail, faults, load,
/// security) share.
#[cfg(feature = "bash")]
mod bash_area {
    use std::collections::HashSet;
    use std::path::{Path, PathBuf};
    use std::sync::Arc;

    use agentflow_sandbox::backends::bash::BashBackend;
    use agentflow_sandbox::{Engine, Envelope};
    use serde_json::{json, Value};

    // ---- commands ----------------------------------------------------------------------------

    /// Runs `command` in `worker`'s bash session, with a timeout in seconds.
    pub async fn run_command(engine: &Engine, worker: &str, command: &str, timeout: f64) -> Envelope {
        engine.execute(worker, "bash:run", json!({"command": command, "timeout": timeout})).await
    }

    /// Runs a command that must succeed; its stdout.
    pub async fn command_ok(engine: &Engine, worker: &str, command: &str) -> String {
        let e = run_command(engine, worker, command, 20.0).await;
        assert_eq!(e.code, 0, "{command}: {} {}", e.message, e.data);
        e.data["stdout"].as_str().unwrap().to_owned()
    }

    // ---- jails and directories ----------------------------------------------------------------

    /// An engine whose jails (sessions opt in) make their directories under `root`, an operator
    /// setting.
    pub fn jail_engine(root: &Path) -> Engine {
        let defaults = json!({"work_root": root.display().to_string()}).as_object().unwrap().clone();
        Engine::builder().backend(Arc::new(BashBackend::new(defaults).unwrap())).build().unwrap()
    }

    /// A jailed session's config.
    pub fn jailed(extra: Value) -> Value {
        let mut config = json!({"isolation": "bwrap"});
        for (k, v) in extra.as_object().unwrap() {
            config[k] = v.clone();
        }
        config
    }

    /// Fails the test, saying what to install, unless `program` is on `PATH`.
    pub fn need(program: &str) {
        let found = std::env::split_paths(&std::env::var_os("PATH").unwrap()).any(|d| d.join(program).is_file());
        assert!(found, "{program} is not installed: the isolation tests need it (see the module documentation)");
    }

    /// A fresh directory for one test, under the system's temporary directory.
    pub fn temp_dir(name: &str) -> PathBuf {
        fresh_dir(&std::env::temp_dir(), name)
    }

    /// A fresh directory for one test, outside `/tmp` (which a jail replaces with its own).
    /// The target's temp dir, or `/var/tmp` when the checkout itself lives under `/tmp` (as a CI
    /// clone may).
    pub fn host_dir(name: &str) -> PathBuf {
        let target = Path::new(env!("CARGO_TARGET_TMPDIR"));
        let parent = if target.starts_with("/tmp") { Path::new("/var/tmp") } else { target };
        fresh_dir(parent, name)
    }

    fn fresh_dir(parent: &Path, name: &str) -> PathBuf {
        let dir = parent.join(format!("agentflow-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    // ---- a test in a child process ------------------------------------------------------------

    /// This test binary, set to run only `test` of `module` (its `module_path!()`), alone and
    /// with its output shown: for a test that plays its own child process.
    pub fn this_test_again(module: &str, test: &str) -> std::process::Command {
        // `main::jail` names the test `jail::…`: the crate's own name is not part of it.
        let module = module.split_once("::").map_or(module, |(_, m)| m);
        let mut command = std::process::Command::new(std::env::current_exe().unwrap());
        command.args([&format!("{module}::{test}"), "--exact", "--nocapture", "--test-threads=1"]);
        command
    }

    // ---- processes, from /proc ----------------------------------------------------------------

    /// Every pid of the system.
    pub fn all_pids() -> Vec<i32> {
        std::fs::read_dir("/proc").unwrap().flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect()
    }

    /// Stat fields of a process: (state, ppid).
    pub fn stat(pid: i32) -> Option<(char, i32)> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let mut rest = text[text.rfind(')')? + 1..].split_ascii_whitespace();
        Some((rest.next()?.chars().next()?, rest.next()?.parse().ok()?))
    }

    /// Whether `/proc/<pid>` still exists (a zombie counts: it is still in the process table).
    pub fn in_process_table(pid: i32) -> bool {
        Path::new(&format!("/proc/{pid}")).exists()
    }

    /// The pids whose command line contains `needle` (its arguments joined by spaces).
    pub fn pids_with(needle: &str) -> Vec<i32> {
        all_pids()
            .into_iter()
            .filter(|p| {
                std::fs::read(format!("/proc/{p}/cmdline"))
                    .is_ok_and(|c| String::from_utf8_lossy(&c).replace('\0', " ").contains(needle))
            })
            .collect()
    }

    /// This process's descendants, zombies included.
    pub fn descendants() -> Vec<i32> {
        let me = std::process::id() as i32;
        let parents: Vec<(i32, i32)> = all_pids().into_iter().filter_map(|p| Some((p, stat(p)?.1))).collect();
        let mut inside: HashSet<i32> = HashSet::from([me]);
        loop {
            let before = inside.len();
            for (p, pp) in &parents {
                if inside.contains(pp) {
                    inside.insert(*p);
                }
            }
            if inside.len() == before {
                break;
            }
        }
        inside.remove(&me);
        inside.into_iter().collect()
    }

    /// The processes (zombies included) in the PID namespace named `ns` (`pid:[…]`).
    pub fn in_namespace(ns: &str) -> usize {
        all_pids()
            .into_iter()
            .filter(|p| std::fs::read_link(format!("/proc/{p}/ns/pid")).is_ok_and(|l| l.to_string_lossy() == ns))
            .count()
    }

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

    /// The pid of the X server of `display` (`:N`), from the process table: the Xvfb that holds a
    /// listening socket named `/tmp/.X11-unix/XN` (in `/proc/net/unix`).
    #[cfg(feature = "vm")]
    pub fn x_server_pid(display: &str) -> i32 {
        let name = format!("/tmp/.X11-unix/X{}", display.trim_start_matches(':').split('.').next().unwrap());
        let table = std::fs::read_to_string("/proc/net/unix").unwrap();
        let sockets: HashSet<String> = table
            .lines()
            .filter(|l| l.ends_with(&name))
            .filter_map(|l| Some(format!("socket:[{}]", l.split_ascii_whitespace().nth(6)?)))
            .collect();
        assert!(!sockets.is_empty(), "no socket {name} in /proc/net/unix");
        all_pids()
            .into_iter()
            .filter(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() == "Xvfb"))
            .find(|p| {
                std::fs::read_dir(format!("/proc/{p}/fd")).is_ok_and(|fds| {
                    fds.flatten()
                        .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|l| sockets.contains(&*l.to_string_lossy())))
                })
            })
            .unwrap_or_else(|| panic!("no Xvfb holds {name}"))
    }

    /// The display of `worker`'s vm session (`vm:info`).
    #[cfg(feature = "vm")]
    pub async fn display_of(engine: &Engine, worker: &str) -> String {
        let e = engine.execute(worker, "vm:info", json!({})).await;
        assert_eq!(e.code, 0, "{}", e.message);
        e.data["display"].as_str().unwrap().to_owned()
    }
}
