//! Integration tests of fault tolerance: a shell or an X server killed from outside, an index
//! directory removed under rag, a jail program missing; each is reported clearly, and the engine
//! and the other sessions go on. Through the [`Engine`] as an agent would use it.
//!
//! Checks read the kernel's view independently of the code under test (`/proc`). The vm and rag
//! backends are tested only as far as faults under them go. Needs `bwrap` (bubblewrap), and for
//! the vm test `Xvfb`.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use agentflow_sandbox::backends::bash::BashBackend;
use agentflow_sandbox::Engine;
use serde_json::{json, Map};

use crate::common::{
    command_ok, create_session, eventually, host_pid, jail_engine, jailed, need, run_command, stat, temp_dir,
};
#[cfg(feature = "vm")]
use crate::common::{display_of, x_server_pid};

#[tokio::test]
async fn a_shell_killed_from_outside_is_reported_then_replaced() {
    need("bwrap");
    let root = temp_dir("kill-root");
    let engine = jail_engine(&root);
    assert_eq!(create_session(&engine, "plain", "bash", json!({})).await.code, 0);
    assert_eq!(create_session(&engine, "jailed", "bash", jailed(json!({}))).await.code, 0);
    command_ok(&engine, "jailed", "echo kept > state.txt").await;
    let work = command_ok(&engine, "jailed", "pwd").await.trim().to_owned();
    // The plain shell's pid is its `$$`; the jailed one's is found through its namespace.
    let plain: i32 = command_ok(&engine, "plain", "echo $$").await.trim().parse().unwrap();
    let ns = command_ok(&engine, "jailed", "readlink /proc/self/ns/pid").await.trim().to_owned();
    let inner: i32 = command_ok(&engine, "jailed", "echo $$").await.trim().parse().unwrap();
    let jailed_pid = host_pid(&ns, inner).expect("the jailed bash is in the process table");
    // The hidden bash:info agrees with the process table, and says how the limits are enforced.
    let info = engine.execute("jailed", "bash:info", json!({})).await;
    assert_eq!((info.code, &info.data["pid"], &info.data["isolation"]), (0, &json!(jailed_pid), &json!("bwrap")));
    assert_eq!(info.data["jail"]["work_dir"], json!(work));
    let enforcement = info.data["jail"]["enforcement"].as_str().unwrap();
    if Path::new("/sys/fs/cgroup/pids/tasks").exists() {
        assert!(enforcement.starts_with("cgroup v1: pids"), "{enforcement}");
    } else {
        assert!(!enforcement.is_empty());
    }
    let info = engine.execute("plain", "bash:info", json!({})).await;
    assert_eq!((&info.data["pid"], &info.data["isolation"]), (&json!(plain), &json!("none")));
    for (worker, pid) in [("plain", plain), ("jailed", jailed_pid)] {
        // SAFETY: kill(2) has no memory-safety preconditions.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
        assert!(eventually(Duration::from_secs(5), || stat(pid).is_none_or(|s| s.0 == 'Z')).await);
        let e = run_command(&engine, worker, "echo after", 10.0).await;
        assert_eq!(e.code, 2001, "{worker}: {} {}", e.message, e.data);
        assert!(e.message.contains("exited (killed by signal 9)"), "{worker}: {}", e.message);
        assert!(e.message.contains("fresh shell"), "{worker}: {}", e.message);
        assert_eq!(command_ok(&engine, worker, "echo recovered").await, "recovered\n", "{worker}");
    }
    // The jailed session's work directory survived its shell.
    assert_eq!(command_ok(&engine, "jailed", "cat state.txt; pwd").await, format!("kept\n{work}\n"));
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
    let e = create_session(&engine, "typo", "bash", json!({"memory_mb": "lots"})).await;
    assert_eq!((e.code, &e.data["field"]), (1002, &json!("memory_mb")), "{}", e.message);
    engine.shutdown(false, true).await;
}

#[cfg(feature = "vm")]
#[tokio::test]
async fn an_xvfb_killed_under_a_vm_session_is_reported_and_the_session_can_be_recreated() {
    need("Xvfb");
    let engine = Engine::builder()
        .backend(Arc::new(BashBackend::new(Map::new()).unwrap()))
        .backend(Arc::new(agentflow_sandbox::backends::vm::VmBackend::new(Map::new()).unwrap()))
        .build()
        .unwrap();
    let small = json!({"screen_size": [320, 240]});
    assert_eq!(create_session(&engine, "xk", "vm", small.clone()).await.code, 0);
    assert_eq!(create_session(&engine, "xk", "bash", json!({})).await.code, 0);
    assert_eq!(engine.execute("xk", "vm:screenshot", json!({})).await.code, 0);
    let display = display_of(&engine, "xk").await;
    let pid = x_server_pid(&display);
    // SAFETY: kill(2) has no memory-safety preconditions.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    assert!(eventually(Duration::from_secs(5), || stat(pid).is_none_or(|s| s.0 == 'Z')).await);
    let e = engine.execute("xk", "vm:screenshot", json!({})).await;
    assert_eq!(e.code, 2001, "{} {}", e.message, e.data);
    assert!(e.message.contains(&display) || e.data["display"] == json!(display), "{} {}", e.message, e.data);
    // The rest of the engine is unaffected, even in the same worker.
    assert_eq!(command_ok(&engine, "xk", "echo bash-fine").await, "bash-fine\n");
    // Destroy and create give a working desktop again.
    assert_eq!(engine.destroy_session("xk", "vm").await.code, 0);
    assert_eq!(create_session(&engine, "xk", "vm", small).await.code, 0);
    let e = engine.execute("xk", "vm:screenshot", json!({})).await;
    assert_eq!((e.code, &e.data["size"]), (0, &json!([320, 240])), "{}", e.message);
    engine.shutdown(false, true).await;
    assert!(eventually(Duration::from_secs(5), || stat(pid).is_none()).await, "the killed Xvfb was not reaped");
}

#[cfg(feature = "rag")]
#[tokio::test]
async fn an_index_dir_removed_under_rag_gives_a_clear_error_and_the_engine_goes_on() {
    let index_dir = temp_dir("rag-index");
    let defaults = json!({"index_dir": index_dir.display().to_string()}).as_object().unwrap().clone();
    let engine = Engine::builder()
        .backend(Arc::new(BashBackend::new(Map::new()).unwrap()))
        .backend(Arc::new(agentflow_sandbox::backends::rag::RagBackend::new(defaults).unwrap()))
        .build()
        .unwrap();
    let docs = json!({"documents": [{"id": "a", "title": "Otters", "content": "otters hold hands while sleeping"}]});
    let e = engine.execute("r", "rag:index", docs).await;
    assert_eq!(e.code, 0, "{}", e.message);
    let e = engine.execute("r", "rag:search", json!({"query": "otters"})).await;
    assert_eq!((e.code, &e.data["results"][0]["id"]), (0, &json!("a")), "{}", e.message);
    std::fs::remove_dir_all(&index_dir).unwrap();
    // Adding documents needs the directory: a clear error naming what is wrong.
    let more = json!({"documents": [{"id": "b", "content": "beavers build dams"}]});
    let e = engine.execute("r", "rag:index", more.clone()).await;
    assert_eq!(e.code, 2001, "{} {}", e.message, e.data);
    // It names the directory and says what happened to it.
    assert!(e.message.contains(&*index_dir.to_string_lossy()) && e.message.contains("is gone"), "{}", e.message);
    // Whatever rag answers, bash goes on.
    assert_eq!(create_session(&engine, "r", "bash", json!({})).await.code, 0);
    assert_eq!(command_ok(&engine, "r", "echo bash-fine").await, "bash-fine\n");
    let e = engine.execute("r", "rag:search", json!({"query": "otters"})).await;
    assert!(matches!(e.code, 0 | 2001), "{} {}", e.code, e.message);
    engine.shutdown(false, true).await;
}
