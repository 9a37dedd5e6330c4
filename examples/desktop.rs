//! A desktop agent's loop in miniature, in-process: the engine starts a private Xvfb for the
//! session, an xterm is opened on it, the "agent" clicks into the terminal, types a command with
//! non-ASCII text, presses Enter, and saves a screenshot to a PNG file. The session's Xvfb admits
//! only clients with its cookie: the xterm is given the Xauthority file `vm:info` reports. The
//! Xvfb and its cookie are gone when the engine shuts down.
//!
//! Run: `cargo run --example desktop -- [out.png]` (needs Debian's `xvfb` and `xterm`).

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentflow_sandbox::backends::vm::VmBackend;
use agentflow_sandbox::Engine;
use base64::Engine as _;
use serde_json::{json, Value};

/// Calls a tool and returns its data, or stops with the error envelope.
async fn act(engine: &Engine, action: &str, params: Value) -> Value {
    let answer = engine.execute("agent", action, params).await;
    assert_eq!(answer.code, 0, "{action} failed: {} {}", answer.message, answer.data);
    answer.data
}

/// Screenshots until the screen differs from `before` and then holds still (or 10 s pass).
async fn changed_screen(engine: &Engine, before: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = before.to_owned();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = act(engine, "vm:screenshot", json!({})).await["image"].as_str().unwrap().to_owned();
        if (now != before && now == last) || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args().nth(1).unwrap_or_else(|| "desktop.png".into());
    let defaults = json!({"screen_size": [1024, 640]}).as_object().cloned().unwrap_or_default();
    let engine = Engine::builder().backend(Arc::new(VmBackend::new(defaults)?)).build()?;
    let created =
        engine.create_session(serde_json::from_value(json!({"worker_id": "agent", "resource_type": "vm"}))?).await;
    assert_eq!(created.code, 0, "{}", created.message);
    let info = act(&engine, "vm:info", json!({})).await;
    let display = info["display"].as_str().unwrap_or_default().to_owned();
    let xauthority = info["xauthority"].as_str().unwrap_or_default().to_owned();
    println!("session {} on display {display}", created.data["session_id"]);

    // An X client on the session's display: a UTF-8 xterm at a known place.
    let empty = act(&engine, "vm:screenshot", json!({})).await["image"].as_str().unwrap_or_default().to_owned();
    let mut xterm = Command::new("xterm")
        .args(["-u8", "-geometry", "90x20+40+40", "-T", "agent terminal"])
        .env("DISPLAY", &display)
        .env("XAUTHORITY", &xauthority)
        .env("LC_ALL", "C.UTF-8")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let shown = changed_screen(&engine, &empty).await;

    // Without a window manager the keyboard follows the pointer: click into the terminal, type.
    act(&engine, "vm:click", json!({"x": 300, "y": 150})).await;
    act(&engine, "vm:type", json!({"text": "echo 'héllo wörld — 你好 ✓' | od -c | head -3"})).await;
    act(&engine, "vm:key", json!({"key": "enter"})).await;
    let done = changed_screen(&engine, &shown).await;

    let png = base64::engine::general_purpose::STANDARD.decode(done)?;
    std::fs::write(&out, &png)?;
    println!("saved {out} ({} KB)", png.len() / 1024);

    xterm.kill()?;
    xterm.wait()?;
    engine.shutdown(false, true).await;
    Ok(())
}
