//! The `agentflow-sandbox` binary's command line and logs: `--help` and `--version`, the config
//! from `AGENTFLOW_CONFIG`, the `RUST_LOG` default, and `--log-format json` (one JSON object per
//! line, with the call and session spans' fields).

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::{post_to, temp_dir};

const BIN: &str = env!("CARGO_BIN_EXE_agentflow-sandbox");

/// A bash-only config (vm and rag off, so nothing but a shell starts), with `server` merged in.
fn write_config(dir: &Path, server: Value) -> PathBuf {
    let path = dir.join("config.json");
    let config = json!({
        "server": server,
        "resources": {"bash": {"enabled": true}, "vm": {"enabled": false}, "rag": {"enabled": false}},
    });
    std::fs::write(&path, config.to_string()).unwrap();
    path
}

fn output(args: &[&str]) -> Output {
    Command::new(BIN).args(args).env_remove("AGENTFLOW_CONFIG").output().unwrap()
}

/// A running server: its stderr lines up to the one saying where it listens, and the rest.
struct Server {
    child: Child,
    port: u16,
    lines: Vec<String>,
    stderr: BufReader<ChildStderr>,
}

impl Server {
    #[allow(clippy::zombie_processes)] // reaped by `Drop`
    fn start(command: &mut Command) -> Server {
        let mut child = command.stderr(Stdio::piped()).spawn().unwrap();
        let mut stderr = BufReader::new(child.stderr.take().unwrap());
        let mut lines = Vec::new();
        loop {
            let mut line = String::new();
            assert!(stderr.read_line(&mut line).unwrap() > 0, "the server exited before listening: {lines:?}");
            let port = line.split("http://127.0.0.1:").nth(1).map(|rest| {
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().unwrap()
            });
            lines.push(line.trim_end().to_owned());
            if let Some(port) = port {
                return Server { child, port, lines, stderr };
            }
        }
    }

    fn post(&self, path: &str, body: Value) -> Value {
        post_to(self.port, path, &body)
    }

    /// Stops the server with `/shutdown`, checks it exits 0, and returns every stderr line.
    fn stop(mut self) -> Vec<String> {
        assert_eq!(self.post("/shutdown", json!({}))["code"], 0);
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "the server did not exit after /shutdown");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "exit status {status}");
        let mut rest = String::new();
        self.stderr.read_to_string(&mut rest).unwrap();
        self.lines.extend(rest.lines().map(str::to_owned));
        std::mem::take(&mut self.lines)
    }
}

/// A test that fails halfway leaves no server running.
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn help_and_version_exit_0_and_describe_every_option() {
    let long = output(&["serve", "--help"]);
    assert!(long.status.success(), "{long:?}");
    let long = String::from_utf8(long.stdout).unwrap();
    for needle in [
        "-c, --config <FILE>",
        "[env: AGENTFLOW_CONFIG=]",
        "--host <HOST>",
        "-p, --port <PORT>",
        "--log-format <FORMAT>",
        "[possible values: text, json]",
        "[default: text]",
        "RUST_LOG",
        "-h, --help",
        "-V, --version",
    ] {
        assert!(long.contains(needle), "`serve --help` lacks {needle:?}:\n{long}");
    }
    // The short help puts each option and its description on one line: none is bare.
    let short = output(&["serve", "-h"]);
    assert!(short.status.success(), "{short:?}");
    let short = String::from_utf8(short.stdout).unwrap();
    let options: Vec<&str> = short.lines().filter(|l| l.trim_start().starts_with('-')).collect();
    assert_eq!(options.len(), 6, "config, host, port, log-format, help, version:\n{short}");
    for line in options {
        // "  -c, --config <FILE>  The JSON config file ...": the flag, then its description.
        let parts: Vec<&str> = line.trim().split("  ").filter(|p| !p.trim().is_empty()).collect();
        assert!(parts.len() >= 2 && parts[1].trim().len() > 5, "an option without a description: {line:?}");
    }
    let top = output(&["--help"]);
    assert!(top.status.success() && String::from_utf8_lossy(&top.stdout).contains("serve"), "{top:?}");
    for args in [&["--version"][..], &["serve", "--version"], &["-V"]] {
        let out = output(args);
        assert!(out.status.success(), "{args:?}: {out:?}");
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            format!("agentflow-sandbox {}\n", env!("CARGO_PKG_VERSION"))
        );
    }
    // Bad command lines still exit 2, as before clap.
    for args in [&[][..], &["serve", "--port", "x"], &["serve", "--log-format", "xml"], &["serve", "--nope"]] {
        assert_eq!(output(args).status.code(), Some(2), "{args:?}");
    }
}

#[test]
fn log_format_json_writes_one_object_per_line_with_the_spans_fields() {
    let dir = temp_dir("cli-json");
    let config = write_config(&dir, json!({}));
    let server = Server::start(
        Command::new(BIN)
            .args(["serve", "--port", "0", "--log-format", "json", "--config"])
            .arg(&config)
            .env("RUST_LOG", "agentflow_sandbox=debug"),
    );
    let created = server.post("/session/create", json!({"worker_id": "w", "resource_type": "bash"}));
    assert_eq!(created["code"], 0, "{created}");
    let session = created["data"]["session_id"].as_str().unwrap().to_owned();
    let ran = server.post("/execute", json!({"worker_id": "w", "action": "bash:run", "params": {"command": "true"}}));
    assert_eq!(ran["code"], 0, "{ran}");
    let lines = server.stop();

    let records: Vec<Value> =
        lines.iter().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect();
    for r in &records {
        assert!(r.is_object() && r["timestamp"].is_string() && r["level"].is_string(), "{r}");
        assert!(r["target"].as_str().unwrap().starts_with("agentflow_sandbox"), "{r}");
    }
    let find = |message: &str| {
        records
            .iter()
            .find(|r| r["message"].as_str().unwrap().contains(message))
            .unwrap_or_else(|| panic!("no {message:?} in {lines:#?}"))
    };
    let listening = find("listening on http://127.0.0.1:");
    assert_eq!(listening["level"], "INFO", "{listening}");
    assert!(listening["message"].as_str().unwrap().ends_with("(backends: bash)"), "{listening}");

    let created = find("session request answered");
    assert_eq!(created["level"], "INFO");
    assert_eq!(created["code"], 0);
    let span = &created["span"];
    assert_eq!((&span["op"], &span["worker"], &span["resource"]), (&json!("create"), &json!("w"), &json!("bash")));
    assert_eq!(span["session"], session.as_str(), "{created}");

    let call = find("call answered");
    assert_eq!(call["level"], "DEBUG");
    assert_eq!(call["code"], 0);
    assert!(call["duration_ms"].as_f64().unwrap() > 0.0, "{call}");
    let span = &call["span"];
    assert_eq!(span["name"], "call");
    assert_eq!((&span["worker"], &span["action"], &span["tool"]), (&json!("w"), &json!("bash:run"), &json!("run")));
    assert_eq!((&span["session"], &span["code"]), (&json!(session), &json!(0)), "{call}");
    assert_eq!(span["trace_id"], ran["meta"]["trace_id"], "{call}");
    assert!(span["duration_ms"].as_f64().unwrap() > 0.0, "{call}");

    assert_eq!(records.last().unwrap()["message"], "stopped", "{lines:#?}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_config_comes_from_agentflow_config_and_logs_default_to_info_as_text() {
    let dir = temp_dir("cli-env");
    // Port 0 and bash alone: the defaults would be port 18890 and bash, vm and rag.
    let config = write_config(&dir, json!({"port": 0}));
    let server = Server::start(Command::new(BIN).arg("serve").env("AGENTFLOW_CONFIG", &config).env_remove("RUST_LOG"));
    assert_ne!(server.port, 18890);
    // A call, whose end is logged at debug: not shown by the default filter.
    let ran = server.post("/execute", json!({"worker_id": "w", "action": "bash:run", "params": {"command": "true"}}));
    assert_eq!(ran["code"], 0, "{ran}");
    let lines = server.stop();
    let listening = lines.iter().find(|l| l.contains("listening on")).unwrap();
    assert!(listening.contains(" INFO ") && listening.ends_with("(backends: bash)"), "{listening}");
    assert!(lines.iter().any(|l| l.contains(" INFO ") && l.ends_with("stopped")), "{lines:#?}");
    assert!(
        !lines.iter().any(|l| l.starts_with('{') || l.contains("DEBUG") || l.contains("call answered")),
        "{lines:#?}"
    );

    // The variable is what is read: a file that is not there stops the start, naming it.
    let missing = dir.join("missing.json");
    let out = Command::new(BIN).arg("serve").env("AGENTFLOW_CONFIG", &missing).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("ERROR") && stderr.contains(&format!("cannot read {}", missing.display())), "{stderr}");
    // An explicit --config wins over the variable.
    let server =
        Server::start(Command::new(BIN).args(["serve", "--config"]).arg(&config).env("AGENTFLOW_CONFIG", &missing));
    server.stop();
    std::fs::remove_dir_all(&dir).ok();
}
