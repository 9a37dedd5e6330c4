//! Integration tests of the bash area: real `bash` processes on real PTYs, driven through the
//! [`Engine`] as an agent would. Process checks read `/proc` directly, independently of the code
//! under test. Needs `bash`, `python3`, `git`, `man`, `less` and coreutils.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentflow_sandbox::backends::bash::BashBackend;
use agentflow_sandbox::protocol::ExecuteRequest;
use agentflow_sandbox::{Engine, Envelope};
use serde_json::{json, Map, Value};

use crate::common::{
    command_ok, create_session, descendants, eventually, in_process_table, pids_with, stat, status_kib, temp_dir,
};

fn engine() -> Engine {
    Engine::builder().backend(Arc::new(BashBackend::new(Map::new()).unwrap())).build().unwrap()
}

async fn create(engine: &Engine, worker: &str, config: Value) -> Envelope {
    create_session(engine, worker, "bash", config).await
}

async fn run(engine: &Engine, worker: &str, params: Value) -> Envelope {
    engine.execute(worker, "bash:run", params).await
}

fn stdout(e: &Envelope) -> &str {
    e.data["stdout"].as_str().unwrap_or_else(|| panic!("no stdout in {}", e.data))
}

#[tokio::test]
async fn state_persists_across_calls() {
    let engine = engine();
    let dir = temp_dir("state");
    assert_eq!(create(&engine, "st", json!({})).await.code, 0);
    command_ok(&engine, "st", &format!("cd {}", dir.display())).await;
    command_ok(&engine, "st", "export GREETING=hello; greet() { echo \"$GREETING, $1\"; }").await;
    assert_eq!(command_ok(&engine, "st", "greet world; pwd").await, format!("hello, world\n{}\n", dir.display()));
    let e = run(&engine, "st", json!({"command": "true"})).await;
    assert_eq!(e.data["cwd"], json!(dir.display().to_string()));
    // A real virtualenv, activated in one call, active in the next.
    command_ok(&engine, "st", "python3 -m venv --without-pip venv").await;
    command_ok(&engine, "st", "source venv/bin/activate").await;
    let out = command_ok(&engine, "st", "echo $VIRTUAL_ENV; command -v python").await;
    assert_eq!(out, format!("{0}/venv\n{0}/venv/bin/python\n", dir.display()));
    // stdout and stderr together, in order.
    assert_eq!(command_ok(&engine, "st", "echo out; echo err >&2; echo out2").await, "out\nerr\nout2\n");
    engine.shutdown(false, true).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn exit_codes_are_exact() {
    let engine = engine();
    assert_eq!(create(&engine, "ec", json!({})).await.code, 0);
    for (command, code) in [("true", 0), ("false", 1), ("no_such_command_af", 127), ("bash -c 'exit 42'", 42)] {
        let e = run(&engine, "ec", json!({"command": command})).await;
        assert_eq!((e.code, &e.data["exit_code"]), (0, &json!(code)), "{command}: {}", e.data);
    }
    // `$?` carries over to the next call.
    command_ok(&engine, "ec", "(exit 7)").await;
    assert_eq!(command_ok(&engine, "ec", "echo $?").await, "7\n");
    // 130 when interrupted.
    let e = run(&engine, "ec", json!({"command": "sleep 100", "timeout": 0.3, "on_timeout": "keep"})).await;
    assert_eq!((e.code, &e.data["running"]), (0, &json!(true)), "{}", e.data);
    let e = engine.execute("ec", "bash:interrupt", json!({})).await;
    assert_eq!((e.code, &e.data["exit_code"], &e.data["running"]), (0, &json!(130), &json!(false)), "{}", e.data);
    engine.shutdown(false, true).await;
}

/// Each of these must come back by its timeout (plus the SIGKILL grace), and leave the shell usable.
#[tokio::test]
async fn nothing_hangs_a_call_past_its_timeout() {
    let engine = engine();
    assert_eq!(create(&engine, "hang", json!({})).await.code, 0);
    let cases = [
        "echo before; sleep 100",
        "trap '' INT; sleep 100",
        "cat",
        "read line",
        "sleep 60 & wait",
        "python3 -c 'import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(100)'",
    ];
    for command in cases {
        let start = Instant::now();
        let e = run(&engine, "hang", json!({"command": command, "timeout": 1})).await;
        let took = start.elapsed();
        assert!(took < Duration::from_secs(2), "{command}: took {took:?}");
        assert_eq!(e.code, 2002, "{command}: {} {}", e.message, e.data);
        assert_eq!((&e.data["timed_out"], &e.data["running"]), (&json!(true), &json!(false)), "{command}");
        assert_eq!(command_ok(&engine, "hang", "echo ok").await, "ok\n", "after {command}");
    }
    let e = run(&engine, "hang", json!({"command": "echo before; sleep 100", "timeout": 1})).await;
    assert_eq!((stdout(&e), &e.data["exit_code"]), ("before\n", &json!(130)));
    // The shell itself ignoring SIGINT in a builtin loop: it is replaced, the call still returns.
    let start = Instant::now();
    let e = run(&engine, "hang", json!({"command": "trap '' INT; while :; do :; done", "timeout": 1})).await;
    assert!(start.elapsed() < Duration::from_secs(3), "took {:?}", start.elapsed());
    assert_eq!((e.code, &e.data["running"]), (2002, &json!(false)), "{}", e.message);
    assert_eq!(command_ok(&engine, "hang", "echo fresh").await, "fresh\n");
    // A background job that keeps the terminal open does not hold the call.
    let start = Instant::now();
    assert_eq!(
        command_ok(&engine, "hang", "(sleep 30 &); sleep 31 & echo started").await.lines().last(),
        Some("started")
    );
    assert!(start.elapsed() < Duration::from_secs(2));
    engine.shutdown(false, true).await;
}

#[tokio::test]
async fn huge_output_is_bounded() {
    let engine = engine();
    assert_eq!(create(&engine, "big", json!({"max_output_bytes": 65536})).await.code, 0);
    command_ok(&engine, "big", "true").await;
    let before = status_kib("VmRSS:");
    let e = run(&engine, "big", json!({"command": "yes | head -c 50000000; echo; echo end", "timeout": 60})).await;
    let grown_mib = status_kib("VmRSS:").saturating_sub(before) / 1024;
    assert_eq!(e.code, 0, "{} {}", e.message, e.data);
    let out = stdout(&e);
    assert_eq!(e.data["truncated"], json!(true));
    assert!(out.len() < 65536 + 200, "{} bytes", out.len());
    assert!(out.starts_with("y\ny\ny\n"));
    assert!(out.ends_with("y\ny\n\nend\n"));
    let left_out: u64 = out.split("[... ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!(left_out > 49_000_000, "{left_out}");
    assert!(grown_mib < 40, "RSS grew by {grown_mib} MiB for 50 MB of output");
    engine.shutdown(false, true).await;
}

#[tokio::test]
async fn pagers_never_block() {
    let engine = engine();
    let dir = temp_dir("pager");
    assert_eq!(create(&engine, "pg", json!({"cwd": dir.display().to_string()})).await.code, 0);
    // The programs this test is about must be there (CI installs them): fail loudly if not.
    let e = run(&engine, "pg", json!({"command": "command -v git man less more"})).await;
    assert_eq!(e.data["exit_code"], json!(0), "missing system packages (git, man-db, less): {}", e.data);
    command_ok(&engine, "pg", "git init -q . && for i in $(seq 1 60); do echo $i > f; git add f; git -c user.name=a -c user.email=a@b commit -qm \"commit $i\"; done").await;
    for command in [
        "git log",
        "git log -p | head -c 100000 > /dev/null; git log --oneline",
        "man ls",
        "less /etc/passwd",
        "seq 1 5000 | less",
        "more /etc/passwd",
        "git commit --allow-empty -q",
    ] {
        let e = run(&engine, "pg", json!({"command": command, "timeout": 15})).await;
        assert_eq!(e.code, 0, "{command}: {} {}", e.message, e.data);
        assert_eq!(e.data["timed_out"], json!(false), "{command}");
    }
    assert!(command_ok(&engine, "pg", "git log --oneline | wc -l").await.trim() == "60");
    assert!(command_ok(&engine, "pg", "seq 1 5000 | less | tail -n 1").await == "5000\n");
    engine.shutdown(false, true).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn text_is_clean_utf8() {
    let engine = engine();
    assert_eq!(create(&engine, "u8", json!({})).await.code, 0);
    // A character split across two reads of the terminal.
    let out = command_ok(
        &engine,
        "u8",
        "printf '\\xe2\\x82'; sleep 0.2; printf '\\xac and \\xf0\\x9f'; sleep 0.2; printf '\\x98\\x80\\n'",
    )
    .await;
    assert_eq!(out, "€ and 😀\n");
    // Invalid bytes, colours, progress bars, titles.
    let out = command_ok(
        &engine,
        "u8",
        "printf 'a\\xffb\\n\\033[1;31mred\\033[0m\\n10%%\\r50%%\\r100%%\\n\\033]0;title\\007done\\n'",
    )
    .await;
    assert_eq!(out, "a\u{FFFD}b\nred\n100%\ndone\n");
    // Multi-line commands and the command's own text never show.
    assert_eq!(command_ok(&engine, "u8", "for i in 1 2; do\n  echo \"line $i\"\ndone").await, "line 1\nline 2\n");
    // Even after a program turned the terminal's echo back on.
    command_ok(&engine, "u8", "stty sane echo").await;
    assert_eq!(command_ok(&engine, "u8", "echo clean").await, "clean\n");
    engine.shutdown(false, true).await;
}

#[tokio::test]
async fn a_dead_shell_is_reported_and_replaced() {
    let engine = engine();
    assert_eq!(create(&engine, "dead", json!({})).await.code, 0);
    command_ok(&engine, "dead", "export MARK=old").await;
    let first_pid = command_ok(&engine, "dead", "echo $$").await;
    let e = run(&engine, "dead", json!({"command": "echo bye; exit 3"})).await;
    assert_eq!(e.code, 2001, "{} {}", e.message, e.data);
    assert_eq!(e.data["exit_code"], json!(3));
    assert!(stdout(&e).contains("bye"));
    let second_pid = command_ok(&engine, "dead", "echo $$").await;
    assert_ne!(first_pid, second_pid);
    assert_eq!(command_ok(&engine, "dead", "echo ${MARK:-fresh}").await, "fresh\n");
    // Killed from outside, likewise.
    let pid: i32 = second_pid.trim().parse().unwrap();
    let e = run(&engine, "dead", json!({"command": format!("kill -9 {pid}")})).await;
    assert_eq!((e.code, &e.data["exit_code"]), (2001, &json!(137)), "{} {}", e.message, e.data);
    assert!(e.message.contains("killed by signal 9"), "{}", e.message);
    assert_eq!(command_ok(&engine, "dead", "echo again").await, "again\n");
    // Killed between calls: the next call says so, without running its command; the one after runs.
    let pid: i32 = command_ok(&engine, "dead", "echo $$").await.trim().parse().unwrap();
    // SAFETY: kill(2) has no memory-safety preconditions; `pid` is this test's own shell.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    assert!(eventually(Duration::from_secs(3), || matches!(stat(pid).map(|s| s.0), None | Some('Z'))).await);
    let e = run(&engine, "dead", json!({"command": "echo lost"})).await;
    assert_eq!((e.code, &e.data["exit_code"]), (2001, &json!(137)), "{} {}", e.message, e.data);
    assert!(e.message.contains("killed by signal 9"), "{}", e.message);
    assert_eq!(command_ok(&engine, "dead", "echo fresh").await, "fresh\n");
    engine.shutdown(false, true).await;
}

#[tokio::test]
async fn an_interactive_program_is_kept_and_fed() {
    let engine = engine();
    assert_eq!(create(&engine, "py", json!({})).await.code, 0);
    let e = run(&engine, "py", json!({"command": "python3 -i -q", "timeout": 1, "on_timeout": "keep"})).await;
    assert_eq!(e.code, 0, "{} {}", e.message, e.data);
    assert_eq!(
        (&e.data["timed_out"], &e.data["running"], &e.data["exit_code"]),
        (&json!(true), &json!(true), &Value::Null)
    );
    let busy = run(&engine, "py", json!({"command": "echo no"})).await;
    assert_eq!(busy.code, 1003, "{}", busy.message);
    let e = engine.execute("py", "bash:write", json!({"text": "print(6*7)\n"})).await;
    assert_eq!(e.code, 0, "{} {}", e.message, e.data);
    assert!(stdout(&e).contains("42"), "{}", e.data);
    assert_eq!(e.data["running"], json!(true));
    let e = engine.execute("py", "bash:write", json!({"text": "exit()\n"})).await;
    assert_eq!((e.code, &e.data["running"], &e.data["exit_code"]), (0, &json!(false), &json!(0)), "{}", e.data);
    assert_eq!(command_ok(&engine, "py", "echo back").await, "back\n");
    // Nothing running: write has nothing to feed; interrupt has nothing to stop.
    assert_eq!(engine.execute("py", "bash:write", json!({"text": "x\n"})).await.code, 1003);
    let e = engine.execute("py", "bash:interrupt", json!({})).await;
    assert_eq!((e.code, &e.data["running"]), (0, &json!(false)));
    engine.shutdown(false, true).await;
}

#[tokio::test]
async fn output_that_looks_like_a_marker_does_not_end_a_command() {
    let engine = engine();
    assert_eq!(create(&engine, "mk", json!({})).await.code, 0);
    // Markers with a wrong or empty nonce, as a line and inside a line.
    let forged =
        "printf '\\033]697;%s;0;/\\007\\n' 0123456789abcdef0123456789abcdef; printf 'x\\033]697;;0;/\\007y\\n'; \
                  sleep 0.3; echo after";
    let e = run(&engine, "mk", json!({"command": forged})).await;
    assert_eq!((e.code, &e.data["exit_code"]), (0, &json!(0)), "{}", e.data);
    assert_eq!(stdout(&e), "\nxy\nafter\n", "{}", e.data);
    // A marker cut short swallows what follows, as on a terminal, but not the real marker.
    let e = run(&engine, "mk", json!({"command": "printf '\\033]697;'; echo swallowed; false"})).await;
    assert_eq!((e.code, &e.data["exit_code"]), (0, &json!(1)), "{}", e.data);
    assert_eq!(command_ok(&engine, "mk", "echo next").await, "next\n");
    engine.shutdown(false, true).await;
}

#[tokio::test]
async fn destroy_leaves_no_process_behind() {
    let engine = engine();
    assert_eq!(create(&engine, "ds", json!({})).await.code, 0);
    let shell: i32 = command_ok(&engine, "ds", "echo $$").await.trim().parse().unwrap();
    command_ok(&engine, "ds", "sleep 1000.4242 & sleep 1000.4343 | cat & (sleep 1000.4444 &); echo started").await;
    assert!(
        eventually(Duration::from_secs(5), || ["1000.4242", "1000.4343", "1000.4444"]
            .iter()
            .all(|n| !pids_with(n).is_empty()))
        .await
    );
    let children: Vec<i32> = ["1000.4242", "1000.4343"].iter().flat_map(|n| pids_with(n)).collect();
    let orphan = pids_with("1000.4444");
    assert_eq!(engine.destroy_session("ds", "bash").await.code, 0);
    // The shell and its jobs are gone from the process table: killed and reaped, no zombie.
    let gone = eventually(Duration::from_secs(3), || {
        !in_process_table(shell) && children.iter().all(|&p| !in_process_table(p))
    })
    .await;
    assert!(
        gone,
        "left: shell {:?}, children {:?}",
        stat(shell).map(|s| s.0),
        children.iter().map(|&p| (p, stat(p).map(|s| s.0))).collect::<Vec<_>>()
    );
    // A process orphaned before the destroy was killed too (its reaping is up to init).
    assert!(
        eventually(Duration::from_secs(3), || orphan.iter().all(|&p| matches!(stat(p).map(|s| s.0), None | Some('Z'))))
            .await
    );
    engine.shutdown(false, true).await;
}

#[tokio::test]
async fn dropping_the_engine_kills_the_shell() {
    let (shell, job): (i32, Vec<i32>);
    {
        let engine = engine();
        assert_eq!(create(&engine, "drop", json!({})).await.code, 0);
        shell = command_ok(&engine, "drop", "sleep 1000.5151 & echo $$")
            .await
            .lines()
            .last()
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(eventually(Duration::from_secs(3), || !pids_with("1000.5151").is_empty()).await);
        job = pids_with("1000.5151");
        assert!(in_process_table(shell));
    }
    // Dropped without shutdown: the shell and its job are killed and reaped (no zombie left).
    assert!(
        eventually(Duration::from_secs(3), || !in_process_table(shell) && job.iter().all(|&p| !in_process_table(p)))
            .await
    );
}

#[tokio::test]
async fn an_abandoned_call_leaves_the_shell_usable() {
    let engine = engine();
    assert_eq!(create(&engine, "ab", json!({})).await.code, 0);
    command_ok(&engine, "ab", "true").await;
    // The caller gives up (its future is dropped) while the command runs.
    let call = engine.execute("ab", "bash:run", json!({"command": "sleep 100", "timeout": 100}));
    assert!(tokio::time::timeout(Duration::from_millis(300), call).await.is_err());
    let start = Instant::now();
    assert_eq!(command_ok(&engine, "ab", "echo ok").await, "ok\n");
    assert!(start.elapsed() < Duration::from_secs(2));
    // The caller's overall timeout caps the tool's own.
    let req =
        ExecuteRequest { timeout: Some(1.0), ..ExecuteRequest::new("ab", "bash:run", json!({"command": "sleep 100"})) };
    let start = Instant::now();
    let e = engine.execute_request(req).await;
    assert_eq!(e.code, 2002, "{}", e.message);
    assert!(start.elapsed() < Duration::from_secs(2));
    engine.shutdown(false, true).await;
}

#[tokio::test]
async fn long_commands_are_delivered_whole() {
    let engine = engine();
    assert_eq!(create(&engine, "long", json!({})).await.code, 0);
    let lines = 120_000;
    let body: String = (1..=lines).map(|i| format!("line {i}\n")).collect();
    assert!(body.len() > 1_000_000);
    let command = format!("cat > /dev/null <<'EOF'\n{body}EOF\ncat <<'EOF' | wc -l\n{body}EOF\necho \"tail: $(cat <<'EOF' | tail -n 1\n{body}EOF\n)\"");
    let out = command_ok(&engine, "long", &command).await;
    assert_eq!(out, format!("{lines}\ntail: line {lines}\n"));
    // A long single line too.
    let word = "x".repeat(10_000);
    assert_eq!(command_ok(&engine, "long", &format!("echo {word} | wc -c")).await, "10001\n");
    engine.shutdown(false, true).await;
}

#[tokio::test]
async fn session_config_is_applied_and_checked() {
    let engine = engine();
    let dir = temp_dir("config");
    let config = json!({"cwd": dir.display().to_string(), "env": {"AF_TEST": "yes"}, "rows": 40, "cols": 123,
                        "timeout": 1, "isolation": "none"});
    assert_eq!(create(&engine, "cfg", config).await.code, 0);
    let out = command_ok(&engine, "cfg", "pwd; echo $AF_TEST; stty size; echo $TERM $PAGER").await;
    assert_eq!(out, format!("{}\nyes\n40 123\ndumb cat\n", dir.display()));
    // The session's timeout is the default.
    let start = Instant::now();
    assert_eq!(run(&engine, "cfg", json!({"command": "sleep 100"})).await.code, 2002);
    assert!(start.elapsed() < Duration::from_secs(2));
    for (config, field) in [
        (json!({"colour": true}), "colour"),
        (json!({"timeout": "x"}), "timeout"),
        (json!({"isolation": "chroot"}), "isolation"),
        (json!({"isolation": "bwrap", "network": "yes"}), "network"),
        (json!({"cwd": "/no/such/dir"}), "cwd"),
    ] {
        let e = create(&engine, "cfg-bad", config).await;
        assert_eq!((e.code, &e.data["field"]), (1002, &json!(field)), "{}", e.message);
    }
    // A shell that cannot start: the session is not kept, and says why.
    let e = create(&engine, "cfg-bad", json!({"shell": "/no/such/bash"})).await;
    assert_eq!(e.code, 2001, "{}", e.message);
    assert!(e.message.contains("/no/such/bash"), "{}", e.message);
    engine.shutdown(false, true).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn two_hundred_sessions_at_once() {
    let engine = engine();
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..200u64 {
        let engine = engine.clone();
        tasks.spawn(async move {
            let worker = format!("many{i}");
            let created = create(&engine, &worker, json!({})).await;
            assert_eq!(created.code, 0, "session {i}: {}", created.message);
            let e = run(&engine, &worker, json!({"command": format!("echo $(( {i} * {i} )) $$"), "timeout": 60})).await;
            (i, e)
        });
    }
    let mut pids = HashSet::new();
    while let Some(done) = tasks.join_next().await {
        let (i, e) = done.unwrap();
        assert_eq!(e.code, 0, "session {i}: {} {}", e.message, e.data);
        let out = stdout(&e);
        let mut words = out.split_whitespace();
        assert_eq!(words.next(), Some((i * i).to_string().as_str()), "session {i}: {out}");
        pids.insert(words.next().unwrap().to_owned());
    }
    assert_eq!(pids.len(), 200, "each session has its own shell");
    eprintln!("200 sessions created and run in {:?}", start.elapsed());
    let envelope = engine.shutdown(false, true).await;
    assert_eq!(envelope.data["sessions_cleaned"], json!(200));
    assert!(eventually(Duration::from_secs(5), || pids.iter().all(|p| !in_process_table(p.parse().unwrap()))).await);
}

#[tokio::test]
async fn tools_are_listed_with_their_schema() {
    let engine = engine();
    let tools = engine.list_tools(false);
    let names: Vec<&str> =
        tools.data["tools"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        ["bash:run", "bash:write", "bash:interrupt", "bash:read_file", "bash:write_file", "bash:list_dir", "bash:edit"]
    );
    let run_schema = &tools.data["tools"][0]["parameters"];
    assert_eq!(run_schema["required"], json!(["command"]));
    assert_eq!(run_schema["properties"]["on_timeout"]["enum"], json!(["interrupt", "keep"]));
    let e = run(&engine, "schema", json!({"command": 5})).await;
    assert_eq!((e.code, &e.data["field"]), (1002, &json!("command")));
}

/// A bash engine with a warm pool of `size` and at most `max` sessions.
fn pooled_engine(size: usize, max: usize) -> Engine {
    let backend = Arc::new(BashBackend::new(Map::new()).unwrap());
    Engine::builder().backend(backend).pool("bash", size).max_sessions(max).build().unwrap()
}

/// The shells this test's engine has started, as `/proc` shows them.
fn shells() -> HashSet<i32> {
    descendants()
        .into_iter()
        .filter(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c == "bash\n"))
        .collect()
}

async fn pool_filled(engine: &Engine, size: usize) -> bool {
    eventually(Duration::from_secs(10), || engine.overview()["pooled_sessions"] == size).await
}

#[tokio::test]
async fn a_warm_pool_hands_each_shell_out_once_with_the_sessions_own_cwd_and_env() {
    let engine = pooled_engine(3, 20);
    assert!(pool_filled(&engine, 3).await, "{}", engine.overview());
    let dir = temp_dir("pool-cwd");
    let mut used = HashSet::new();
    for i in 0..3 {
        // The shell a session gets was running before it was asked for.
        let ahead = shells();
        let worker = format!("pool-{i}");
        let config = json!({"cwd": dir.display().to_string(), "env": {"GREETING": format!("hi {i}"), "N": i}});
        assert_eq!(create(&engine, &worker, config).await.code, 0);
        let out = command_ok(&engine, &worker, "echo \"$GREETING|$N|$PWD|$$\"").await;
        let fields: Vec<&str> = out.trim().split('|').collect();
        assert_eq!(fields[..3], [format!("hi {i}").as_str(), &i.to_string(), &dir.display().to_string()]);
        let pid: i32 = fields[3].parse().unwrap();
        assert!(ahead.contains(&pid), "session {i}'s shell {pid} was not one of the pool's {ahead:?}");
        assert!(used.insert(pid), "shell {pid} was handed out twice");
        // A variable set at start is in the environment of what the shell runs.
        assert_eq!(command_ok(&engine, &worker, "env | grep '^GREETING='").await, format!("GREETING=hi {i}\n"));
    }
    // A config a pooled shell cannot serve starts a fresh one, with that config.
    let ahead = shells();
    assert_eq!(create(&engine, "fresh", json!({"cols": 123})).await.code, 0);
    let pid: i32 = command_ok(&engine, "fresh", "echo $$").await.trim().parse().unwrap();
    assert!(!ahead.contains(&pid), "a pooled shell served a config it cannot");
    assert_eq!(command_ok(&engine, "fresh", "stty size").await, "50 123\n");
    // A config that is refused is refused as without a pool, and costs the pool nothing.
    assert!(pool_filled(&engine, 3).await);
    let e = create(&engine, "bad", json!({"cwd": "/no/such/dir"})).await;
    assert_eq!((e.code, &e.data["field"]), (1002, &json!("cwd")), "{}", e.message);
    assert_eq!(engine.overview()["pooled_sessions"], 3);
    // Shutdown ends the sessions and the pool alike.
    engine.shutdown(false, true).await;
    assert!(eventually(Duration::from_secs(5), || shells().is_empty()).await, "left: {:?}", shells());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn pooled_shells_count_under_max_sessions_and_give_their_place_up() {
    let engine = pooled_engine(4, 6);
    assert!(pool_filled(&engine, 4).await, "{}", engine.overview());
    assert_eq!(shells().len(), 4);
    // Six sessions no pooled shell can serve: the pool gives its places up, one by one.
    for i in 0..6 {
        let e = create(&engine, &format!("cap-{i}"), json!({"rows": 30})).await;
        assert_eq!(e.code, 0, "cap-{i}: {}", e.message);
        assert!(engine.overview()["live_sessions"].as_u64().unwrap() <= 6, "{}", engine.overview());
    }
    let e = create(&engine, "cap-6", json!({})).await;
    assert_eq!(e.code, 2004, "{}", e.message);
    assert!(e.message.contains("max_sessions"), "{}", e.message);
    assert!(eventually(Duration::from_secs(5), || shells().len() == 6).await, "{:?}", shells());
    // Places freed go back to the pool.
    for i in 0..3 {
        assert_eq!(engine.destroy_session(&format!("cap-{i}"), "bash").await.code, 0);
    }
    assert!(pool_filled(&engine, 3).await, "{}", engine.overview());
    assert_eq!(engine.overview()["live_sessions"], 6);
    engine.shutdown(false, true).await;
    assert!(eventually(Duration::from_secs(5), || shells().is_empty()).await, "left: {:?}", shells());
}
