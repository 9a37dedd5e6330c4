//! A GUI agent's loop in miniature, in-process: the engine starts a private desktop for the
//! session (an Xvfb with its own D-Bus and accessibility buses, and openbox), the agent launches
//! `gtk3-widget-factory` and waits for its window, reads the accessibility tree (the XML OSWorld's
//! agents read), finds a check box in it by name, clicks its centre, reads the tree again to see
//! it checked, and saves a screenshot. Everything the session started is gone when the engine
//! shuts down.
//!
//! Run: `cargo run --example desktop -- [out.png] [check box name]` (needs Debian's `xvfb`,
//! `dbus-daemon`, `at-spi2-core`, `openbox` and `gtk-3-examples`).

use std::sync::Arc;
use std::time::Duration;

use agentflow_sandbox::backends::vm::VmBackend;
use agentflow_sandbox::protocol::{CreateSessionRequest, ExecuteRequest};
use agentflow_sandbox::Engine;
use base64::Engine as _;
use serde_json::{json, Value};

/// Calls a tool (with a 30 s timeout) and returns its data, or stops with the error envelope.
async fn act(engine: &Engine, action: &str, params: Value) -> Value {
    let answer = engine.execute_request(ExecuteRequest::new("agent", action, params).timeout(30.0)).await;
    assert_eq!(answer.code, 0, "{action} failed: {} {}", answer.message, answer.data);
    answer.data
}

/// An element of the tree, as far as this example reads it.
#[derive(Debug)]
struct Element {
    name: String,
    checked: bool,
    /// Whether it takes input (not greyed out).
    sensitive: bool,
    /// Centre on the screen, when it is showing.
    centre: Option<(i64, i64)>,
}

/// The `<tag …>` elements of a tree. The format puts every attribute on one start tag and
/// escapes `<`, `>` and `"` in values, so a scan of start tags reads it; an agent would use an
/// XML parser.
fn elements(xml: &str, tag: &str) -> Vec<Element> {
    let attribute = |start: &str, key: &str| -> Option<String> {
        let from = start.find(&format!(" {key}=\""))? + key.len() + 3;
        Some(start[from..from + start[from..].find('"')?].to_owned())
    };
    let numbers = |text: Option<String>| -> Option<(i64, i64)> {
        let text = text?;
        let (a, b) = text.trim_matches(|c| c == '(' || c == ')').split_once(", ")?;
        Some((a.parse().ok()?, b.parse().ok()?))
    };
    xml.match_indices(&format!("<{tag} "))
        .filter_map(|(at, _)| {
            let start = &xml[at..at + xml[at..].find('>')?];
            let corner = numbers(attribute(start, "cp:screencoord"));
            let size = numbers(attribute(start, "cp:size"));
            Some(Element {
                name: attribute(start, "name")?,
                checked: start.contains(" st:checked=\"true\""),
                sensitive: start.contains(" st:sensitive=\"true\""),
                centre: corner.zip(size).map(|((x, y), (w, h))| (x + w / 2, y + h / 2)),
            })
        })
        .collect()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::env::args().nth(1).unwrap_or_else(|| "desktop.png".into());
    let wanted = std::env::args().nth(2);
    let engine = Engine::builder().backend(Arc::new(VmBackend::new(serde_json::Map::new())?)).build()?;
    let config = json!({"window_manager": "openbox"});
    let created = engine.create_session(CreateSessionRequest::new("agent", "vm").config(config)).await;
    assert_eq!(created.code, 0, "{}", created.message);

    let launched = act(&engine, "vm:launch", json!({"command": "gtk3-widget-factory", "wait_for_window": true})).await;
    println!("launched pid {}, window {}", launched["pid"], launched["window"]["title"]);

    // The app registers its objects a moment after its window maps: read until they are there.
    let mut xml = String::new();
    for _ in 0..50 {
        let tree = act(&engine, "vm:accessibility_tree", json!({})).await;
        xml = tree["accessibility_tree"].as_str().unwrap_or_default().to_owned();
        if !elements(&xml, "check-box").is_empty() {
            println!("tree: {} nodes, {} bytes of XML", tree["nodes"], xml.len());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let boxes = elements(&xml, "check-box");
    let target = boxes
        .iter()
        .filter(|e| e.centre.is_some() && e.sensitive && !e.name.is_empty())
        .find(|e| wanted.as_deref().is_none_or(|w| e.name == w))
        .ok_or("no such check box on screen")?;
    let (x, y) = target.centre.unwrap_or_default();
    println!("check box {:?} at ({x}, {y}), checked: {}", target.name, target.checked);

    act(&engine, "vm:click", json!({"x": x, "y": y})).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let tree = act(&engine, "vm:accessibility_tree", json!({})).await;
    let after = elements(tree["accessibility_tree"].as_str().unwrap_or_default(), "check-box");
    // Several check boxes may share a name: the same one is the one at the same place.
    let now = after.iter().find(|e| e.name == target.name && e.centre == target.centre).map(|e| e.checked);
    println!("after the click, checked: {now:?}");

    let shot = act(&engine, "vm:screenshot", json!({})).await;
    let png = base64::engine::general_purpose::STANDARD.decode(shot["image"].as_str().unwrap_or_default())?;
    std::fs::write(&out, &png)?;
    println!("saved {out} ({} KB)", png.len() / 1024);

    engine.shutdown(false, true).await;
    Ok(())
}
