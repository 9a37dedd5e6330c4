//! A desktop an agent can work on: programs on a session's display (`startup`, `vm:launch`, a
//! window manager), the accessibility tree of what runs there (`vm:accessibility_tree`, and
//! `observe`), and a worker's bash sharing its desktop, on real Xvfb servers with
//! `gtk3-widget-factory` and its own D-Bus and AT-SPI buses.
//!
//! The tree is parsed by Python's `xml.etree` (not by this crate), so a tree that is not
//! well-formed XML with the format's namespaces fails; windows are found by `xdotool` and
//! `xprop`, processes in `/proc`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentflow_sandbox::backends::bash::BashBackend;
use agentflow_sandbox::backends::vm::VmBackend;
use agentflow_sandbox::protocol::ExecuteRequest;
use agentflow_sandbox::{Engine, Envelope};
use serde_json::{json, Map, Value};

use crate::common::{all_pids, command_ok, create_session, in_process_table, jailed, need, stat};

const PATIENCE: Duration = Duration::from_secs(30);

fn engine() -> Engine {
    let vm = VmBackend::new(object(json!({"screen_size": [1920, 1080]}))).unwrap();
    let bash = BashBackend::new(Map::new()).unwrap();
    Engine::builder().backend(Arc::new(vm)).backend(Arc::new(bash)).build().unwrap()
}

fn object(v: Value) -> Map<String, Value> {
    v.as_object().unwrap().clone()
}

fn ok(envelope: Envelope) -> Value {
    assert_eq!(envelope.code, 0, "{envelope:?}");
    envelope.data
}

/// One element of a tree, as Python's XML parser read it.
#[derive(Debug, Clone)]
struct Element {
    tag: String,
    name: String,
    text: String,
    states: Vec<String>,
    /// `cp:screencoord` and `cp:size`, when given.
    rect: Option<(i64, i64, i64, i64)>,
}

impl Element {
    fn centre(&self) -> (i64, i64) {
        let (x, y, w, h) = self.rect.unwrap_or_else(|| panic!("{self:?} has no position"));
        (x + w / 2, y + h / 2)
    }

    fn has(&self, state: &str) -> bool {
        self.states.iter().any(|s| s == state)
    }
}

/// Parses a tree with Python's `xml.etree`: every element under the root, in document order.
/// Fails unless the root is `desktop-frame` and the namespaces are the format's.
fn parse(xml: &str) -> Vec<Element> {
    const SCRIPT: &str = r#"
import json, re, sys, xml.etree.ElementTree as ET
root = ET.fromstring(sys.stdin.read())
assert root.tag == "desktop-frame", root.tag
ST = "{https://accessibility.ubuntu.example.org/ns/state}"
CP = "{https://accessibility.ubuntu.example.org/ns/component}"
out = []
for e in root.iter():
    if e is root:
        continue
    rect = None
    if CP + "screencoord" in e.attrib:
        x, y = map(int, re.findall(r"-?\d+", e.attrib[CP + "screencoord"]))
        w, h = map(int, re.findall(r"-?\d+", e.attrib[CP + "size"]))
        rect = [x, y, w, h]
    states = [k[len(ST):] for k, v in e.attrib.items() if k.startswith(ST) and v == "true"]
    out.append({"tag": e.tag, "name": e.attrib.get("name", ""), "text": e.text or "", "states": states, "rect": rect})
print(json.dumps(out))
"#;
    let mut child = std::process::Command::new("python3")
        .args(["-c", SCRIPT])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(xml.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the tree is not the format's XML:\n{}", &xml[..xml.len().min(2000)]);
    let parsed: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    parsed
        .into_iter()
        .map(|e| Element {
            tag: e["tag"].as_str().unwrap().to_owned(),
            name: e["name"].as_str().unwrap().to_owned(),
            text: e["text"].as_str().unwrap().to_owned(),
            states: e["states"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_owned()).collect(),
            rect: e["rect"].as_array().map(|r| {
                let n: Vec<i64> = r.iter().map(|v| v.as_i64().unwrap()).collect();
                (n[0], n[1], n[2], n[3])
            }),
        })
        .collect()
}

/// The worker's tree, parsed.
async fn tree(engine: &Engine, worker: &str) -> Vec<Element> {
    let data = ok(engine.execute(worker, "vm:accessibility_tree", json!({})).await);
    parse(data["accessibility_tree"].as_str().unwrap())
}

/// Reads the tree until `found` finds something in it, for up to [`PATIENCE`].
async fn tree_until<T>(engine: &Engine, worker: &str, mut found: impl FnMut(&[Element]) -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        let elements = tree(engine, worker).await;
        if let Some(t) = found(&elements) {
            return t;
        }
        assert!(start.elapsed() < PATIENCE, "not found in the tree: {elements:#?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The processes whose command name is `comm`.
fn processes_named(comm: &str) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|pid| std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == comm))
        .collect()
}

/// The processes with `NAME=value` in their environment.
fn processes_with_env(entry: &str) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|e| e == entry.as_bytes()))
        })
        .collect()
}

/// Whether `pid` is running (not gone, not a zombie).
/// A process's start time (field 22 of `/proc/<pid>/stat`), which tells it from a later
/// process given the same pid.
fn stat_start(pid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    text[text.rfind(')')? + 1..].split_ascii_whitespace().nth(19)?.parse().ok()
}

fn running(pid: i32) -> bool {
    stat(pid).is_some_and(|(state, _)| state != 'Z')
}

/// `vm:launch` of `command`, waiting for its window (30 s at most).
async fn launch(engine: &Engine, worker: &str, command: &str) -> Envelope {
    let params = json!({"command": command, "wait_for_window": true});
    engine.execute_request(ExecuteRequest::new(worker, "vm:launch", params).timeout(30.0)).await
}

#[tokio::test]
async fn gtk3_widget_factory_is_read_clicked_and_typed_into_through_its_tree() {
    let engine = engine();
    let worker = "desktop-tree";
    let created = create_session(&engine, worker, "vm", json!({"window_manager": "openbox"})).await;
    assert_eq!(created.code, 0, "{created:?}");
    let launched = ok(launch(&engine, worker, "gtk3-widget-factory").await);
    let pid = launched["pid"].as_u64().unwrap();
    assert!(!launched["window"]["title"].as_str().unwrap().is_empty(), "{launched}");
    // The window is the program's as another X client sees it: xdotool finds it by the pid
    // the program itself set on it (_NET_WM_PID).
    let info = ok(engine.execute(worker, "vm:info", json!({})).await);
    let found = std::process::Command::new("xdotool")
        .args(["search", "--pid", &launched["window"]["pid"].to_string()])
        .env("DISPLAY", info["display"].as_str().unwrap())
        .env("XAUTHORITY", info["xauthority"].as_str().unwrap())
        .output()
        .expect("xdotool runs");
    let windows: Vec<u64> =
        String::from_utf8_lossy(&found.stdout).lines().filter_map(|l| l.trim().parse().ok()).collect();
    assert!(windows.contains(&launched["window"]["id"].as_u64().unwrap()), "{launched} not in {windows:?}");

    // The tree: named push buttons and check boxes, text entries and menus.
    let elements = tree_until(&engine, worker, |t| t.iter().any(|e| e.tag == "check-box").then(|| t.to_vec())).await;
    let app = &elements[0];
    assert_eq!(app.tag, "application", "{app:?}");
    for role in ["push-button", "check-box", "text", "menu"] {
        let named = matches!(role, "push-button" | "check-box");
        assert!(elements.iter().any(|e| e.tag == role && (!named || !e.name.is_empty())), "no {role}");
    }

    // A named check box on screen: clicked at its centre, it is checked in the next tree.
    let (w, h) = (1920, 1080);
    let on_screen = |e: &Element| {
        e.rect.is_some_and(|(x, y, bw, bh)| x >= 0 && y >= 0 && x + bw <= w && y + bh <= h && bw > 0 && bh > 0)
    };
    let check = elements
        .iter()
        .find(|e| e.tag == "check-box" && !e.name.is_empty() && e.has("showing") && e.has("sensitive") && on_screen(e))
        .expect("a check box on screen")
        .clone();
    let was_checked = check.has("checked");
    let (x, y) = check.centre();
    ok(engine.execute(worker, "vm:click", json!({"x": x, "y": y})).await);
    let now = tree_until(&engine, worker, |t| {
        t.iter().find(|e| e.tag == "check-box" && e.name == check.name && e.has("checked") != was_checked).cloned()
    })
    .await;
    assert_ne!(now.has("checked"), was_checked);

    // Typed into a text entry, the text is in the tree.
    let entry = elements
        .iter()
        .find(|e| e.tag == "text" && e.has("editable") && e.has("showing") && on_screen(e))
        .expect("an editable text on screen")
        .clone();
    let (x, y) = entry.centre();
    ok(engine.execute(worker, "vm:click", json!({"x": x, "y": y})).await);
    ok(engine.execute(worker, "vm:hotkey", json!({"keys": ["ctrl", "a"]})).await);
    ok(engine.execute(worker, "vm:type", json!({"text": "agentflow typed this"})).await);
    tree_until(&engine, worker, |t| {
        t.iter().any(|e| e.tag == "text" && e.text.contains("agentflow typed this")).then_some(())
    })
    .await;

    ok(engine.destroy_session(worker, "vm").await);
    assert!(!in_process_table(pid as i32), "the app outlived its session (or was not reaped)");
}

/// `DISPLAY` and a server query (`xdpyinfo`, an X client of its own) from the worker's shell.
/// (Lines are found by their labels: bash may first report a background job that ended, such
/// as a GTK app that exits with its desktop's session bus.)
async fn shell_sees(engine: &Engine, worker: &str) -> (String, String) {
    let command = "echo \"display=${DISPLAY-none}\"; xdpyinfo 2>&1 | grep dimensions || true";
    let out = command_ok(engine, worker, command).await;
    let display = out.lines().find_map(|l| l.strip_prefix("display=")).unwrap_or_default();
    let dimensions = out.lines().find(|l| l.contains("dimensions")).unwrap_or_default();
    (display.trim().to_owned(), dimensions.trim().to_owned())
}

#[tokio::test]
async fn a_workers_shell_shares_its_desktop_whichever_came_first_and_can_opt_out() {
    let engine = engine();
    // bash first, then the desktop: the running shell gets it at its next command.
    let worker = "desktop-share";
    assert_eq!(create_session(&engine, worker, "bash", json!({})).await.code, 0);
    assert_eq!(shell_sees(&engine, worker).await.0, "none");
    assert_eq!(create_session(&engine, worker, "vm", json!({"screen_size": [1024, 768]})).await.code, 0);
    let display = ok(engine.execute(worker, "vm:info", json!({})).await)["display"].as_str().unwrap().to_owned();
    let (seen, dimensions) = shell_sees(&engine, worker).await;
    assert_eq!(seen, display);
    assert!(dimensions.contains("1024x768 pixels"), "{dimensions}");
    // A program started from the shell and one launched by vm:launch: both in the tree.
    command_ok(&engine, worker, "gtk3-demo >/dev/null 2>&1 &").await;
    ok(launch(&engine, worker, "gtk3-widget-factory").await);
    tree_until(&engine, worker, |t| {
        let apps: Vec<&str> = t.iter().filter(|e| e.tag == "application").map(|e| e.name.as_str()).collect();
        (apps.contains(&"gtk3-demo") && apps.contains(&"gtk3-widget-factory")).then_some(())
    })
    .await;
    // The desktop gone, the shell forgets it.
    ok(engine.destroy_session(worker, "vm").await);
    assert_eq!(shell_sees(&engine, worker).await.0, "none");
    ok(engine.destroy_worker(worker).await);

    // The desktop first, then bash; and a shell that opts out.
    let worker = "desktop-share-2";
    assert_eq!(create_session(&engine, worker, "vm", json!({"accessibility": false})).await.code, 0);
    assert_eq!(create_session(&engine, worker, "bash", json!({})).await.code, 0);
    assert!(shell_sees(&engine, worker).await.0.starts_with(':'));
    let other = "desktop-share-3";
    assert_eq!(create_session(&engine, other, "vm", json!({"accessibility": false})).await.code, 0);
    assert_eq!(create_session(&engine, other, "bash", json!({"share_desktop": false})).await.code, 0);
    assert_eq!(shell_sees(&engine, other).await.0, "none");
    ok(engine.destroy_worker(worker).await);
    ok(engine.destroy_worker(other).await);
}

#[tokio::test]
async fn a_jailed_shell_reaches_its_workers_display_and_no_other() {
    need("bwrap");
    let engine = engine();
    let worker = "desktop-jail";
    assert_eq!(create_session(&engine, worker, "bash", jailed(json!({}))).await.code, 0);
    assert_eq!(create_session(&engine, "desktop-jail-other", "vm", json!({"accessibility": false})).await.code, 0);
    assert_eq!(
        create_session(&engine, worker, "vm", json!({"accessibility": false, "screen_size": [800, 600]})).await.code,
        0
    );
    let (_, dimensions) = shell_sees(&engine, worker).await;
    assert!(dimensions.contains("800x600 pixels"), "{dimensions}");
    // Only its own worker's display is in the jail's /tmp/.X11-unix, and the other display is
    // out of reach by name.
    let other =
        ok(engine.execute("desktop-jail-other", "vm:info", json!({})).await)["display"].as_str().unwrap().to_owned();
    let listed = command_ok(&engine, worker, "ls /tmp/.X11-unix").await;
    assert_eq!(listed.lines().count(), 1, "{listed}");
    let tried = command_ok(&engine, worker, &format!("DISPLAY={other} xdpyinfo >/dev/null 2>&1; echo $?")).await;
    assert_ne!(tried.trim(), "0");
    ok(engine.destroy_worker(worker).await);
    ok(engine.destroy_worker("desktop-jail-other").await);
}

#[tokio::test]
async fn destroy_leaves_no_xvfb_bus_or_program_behind() {
    let engine = engine();
    let worker = "desktop-destroy";
    let config = json!({"window_manager": "openbox", "startup": ["gtk3-widget-factory", "sleep 1000 & sleep 1001"]});
    assert_eq!(create_session(&engine, worker, "vm", config).await.code, 0);
    tree_until(&engine, worker, |t| {
        t.iter().any(|e| e.tag == "application" && e.name == "gtk3-widget-factory").then_some(())
    })
    .await;
    // Every process of the desktop but its Xvfb (stopped by itself) carries its mark: the buses,
    // the registry, the window manager, the programs and what they started.
    let info = ok(engine.execute(worker, "vm:info", json!({})).await);
    let xvfb = info["server_pid"].as_u64().unwrap() as i32;
    let display = format!("DISPLAY={}", info["display"].as_str().unwrap());
    let environ = |pid: i32| std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
    let openbox = processes_named("openbox")
        .into_iter()
        .find(|&p| environ(p).split(|&b| b == 0).any(|e| e == display.as_bytes()))
        .expect("its openbox");
    let mark = environ(openbox)
        .split(|&b| b == 0)
        .find(|e| e.starts_with(b"AGENTFLOW_DESKTOP="))
        .map(|e| String::from_utf8_lossy(e).into_owned())
        .unwrap();
    let marked = processes_with_env(&mark);
    let names: Vec<String> = marked
        .iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/comm")).ok())
        .map(|c| c.trim().to_owned())
        .collect();
    for expected in ["dbus-daemon", "at-spi-bus-laun", "at-spi2-registr", "openbox", "gtk3-widget-fac", "sleep"] {
        assert!(names.iter().any(|n| n == expected), "no {expected} among {names:?}");
    }
    let xvfb_start = stat_start(xvfb);
    ok(engine.destroy_session(worker, "vm").await);
    // A pid still running is the same process only if it still carries the mark (or, for the
    // Xvfb, started at the same time): a busy machine may have given a dead one's pid to another.
    let marked_left = processes_with_env(&mark);
    let left: Vec<i32> = marked
        .iter()
        .copied()
        .filter(|p| marked_left.contains(p))
        .chain([xvfb].into_iter().filter(|&p| stat_start(p).is_some() && stat_start(p) == xvfb_start))
        .filter(|&p| running(p))
        .collect();
    assert!(left.is_empty(), "left running: {left:?}");
    assert!(marked_left.iter().all(|&p| !running(p)), "{marked_left:?}");
}

#[tokio::test]
async fn observe_returns_the_tree_and_the_screen_after_every_action() {
    let engine = engine();
    let worker = "desktop-observe";
    let config = json!({"observe": ["accessibility_tree", "screenshot"], "observe_delay": 0.05, "startup": ["gtk3-widget-factory"]});
    assert_eq!(create_session(&engine, worker, "vm", config).await.code, 0);
    let elements = tree_until(&engine, worker, |t| t.iter().any(|e| e.tag == "check-box").then(|| t.to_vec())).await;
    assert!(!elements.is_empty());
    for (tool, params) in [
        ("vm:move", json!({"x": 5, "y": 5})),
        ("vm:key", json!({"key": "shift"})),
        ("vm:launch", json!({"command": "true"})),
    ] {
        let data = ok(engine.execute(worker, tool, params).await);
        let xml = data["accessibility_tree"].as_str().unwrap_or_else(|| panic!("{tool}: no tree in {data}"));
        assert!(parse(xml).iter().any(|e| e.tag == "check-box"), "{tool}");
        assert!(data["image"].as_str().is_some_and(|i| i.len() > 1000), "{tool}: no screenshot");
    }
    // Looking is not acting: a screenshot answers with its own data only.
    let shot = ok(engine.execute(worker, "vm:screenshot", json!({})).await);
    assert!(shot.get("accessibility_tree").is_none());
    ok(engine.destroy_session(worker, "vm").await);
}

#[tokio::test]
async fn launch_and_config_mistakes_are_clear_errors() {
    let engine = engine();
    let worker = "desktop-mistakes";
    for (config, field) in [
        (json!({"window_manager": "kde"}), "window_manager"),
        (json!({"observe": ["smell"]}), "observe[0]"),
        (json!({"startup": "xterm"}), "startup"),
        (json!({"startup": [""]}), "startup[0]"),
        (json!({"observe_delay": 60}), "observe_delay"),
        (json!({"accessibility": "yes"}), "accessibility"),
    ] {
        let answer = create_session(&engine, worker, "vm", config.clone()).await;
        assert_eq!((answer.code, answer.data["field"].as_str()), (1002, Some(field)), "{config}: {answer:?}");
    }
    assert_eq!(create_session(&engine, worker, "vm", json!({"accessibility": false})).await.code, 0);
    let empty = engine.execute(worker, "vm:launch", json!({"command": ""})).await;
    assert_eq!((empty.code, empty.data["field"].as_str()), (1002, Some("command")), "{empty:?}");
    // A program that exits before it shows a window says so, with what it printed.
    let failed = launch(&engine, worker, "echo no such program >&2; exit 3").await;
    assert_ne!(failed.code, 0);
    assert!(failed.message.contains("no such program"), "{failed:?}");
    // One that never shows a window is cut at the call's timeout, and its pid is given.
    let params = json!({"command": "sleep 30", "wait_for_window": true});
    let start = Instant::now();
    let slow = engine.execute_request(ExecuteRequest::new(worker, "vm:launch", params).timeout(1.0)).await;
    assert_eq!(slow.code, 2002, "{slow:?}");
    assert!(slow.data["pid"].as_u64().is_some() && start.elapsed() < Duration::from_secs(5));
    // Without buses, the tree is an error that says why.
    let tree = engine.execute(worker, "vm:accessibility_tree", json!({})).await;
    assert!(tree.code != 0 && tree.message.contains("accessibility"), "{tree:?}");
    ok(engine.destroy_session(worker, "vm").await);
}

/// The application `app` of the desktop whose accessibility bus is `bus`, walked by pyatspi
/// (Debian's `python3-pyatspi`, an AT-SPI client independent of this crate): each object's
/// role name and name, depth first.
fn pyatspi_walk(bus: &str, display: &str, app: &str) -> Vec<(String, String)> {
    const SCRIPT: &str = r#"
import json, sys, pyatspi
desktop = pyatspi.Registry.getDesktop(0)
app = next(a for a in desktop if a is not None and a.name == sys.argv[1])
out = []
def walk(node, depth):
    out.append([node.getRoleName().replace(" ", "-"), node.name or ""])
    if depth < 50:
        for child in node:
            if child is not None:
                walk(child, depth + 1)
walk(app, 1)
print(json.dumps(out))
"#;
    // Debian's python, where python3-pyatspi lives (a python3 earlier on PATH may lack it).
    let out = std::process::Command::new("/usr/bin/python3")
        .args(["-c", SCRIPT, app])
        .env("AT_SPI_BUS_ADDRESS", bus)
        .env("DISPLAY", display)
        .output()
        .expect("/usr/bin/python3 runs");
    assert!(out.status.success(), "pyatspi (Debian: python3-pyatspi) failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn the_tree_holds_what_pyatspi_walks() {
    let engine = engine();
    let worker = "desktop-oracle";
    assert_eq!(create_session(&engine, worker, "vm", json!({"startup": ["gtk3-widget-factory"]})).await.code, 0);
    let ours = tree_until(&engine, worker, |t| (t.len() > 250).then(|| t.to_vec())).await;
    let info = ok(engine.execute(worker, "vm:info", json!({})).await);
    let walked = pyatspi_walk(
        info["accessibility_bus"].as_str().unwrap(),
        info["display"].as_str().unwrap(),
        "gtk3-widget-factory",
    );
    let ours: Vec<(String, String)> = ours.into_iter().map(|e| (e.tag, e.name)).collect();
    // The same objects in the same order: the cache read in bulk (and the table's cells, which
    // the cache leaves out) against one call per object.
    assert_eq!(ours.len(), walked.len(), "ours {ours:?}\npyatspi {walked:?}");
    assert_eq!(ours, walked);
    ok(engine.destroy_session(worker, "vm").await);
}

#[tokio::test]
async fn an_operator_can_keep_sessions_from_running_programs() {
    let policy = object(json!({"programs": false}));
    let vm = VmBackend::with_policy(object(json!({"screen_size": [640, 480]})), policy).unwrap();
    let engine = Engine::builder().backend(Arc::new(vm)).build().unwrap();
    let worker = "desktop-no-programs";
    let witness = std::env::temp_dir().join(format!("agentflow-witness-{}", std::process::id()));
    let touch = format!("touch {}", witness.display());
    let refused = create_session(&engine, worker, "vm", json!({"startup": [touch]})).await;
    assert_eq!((refused.code, refused.data["field"].as_str()), (1006, Some("startup")), "{refused:?}");
    assert_eq!(create_session(&engine, worker, "vm", json!({"accessibility": false})).await.code, 0);
    let launched = engine.execute(worker, "vm:launch", json!({"command": touch})).await;
    assert_eq!((launched.code, launched.data["field"].as_str()), (1006, Some("command")), "{launched:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!witness.exists(), "a refused program ran");
    // An operator default the policy refuses is a configuration error.
    let bad = VmBackend::with_policy(object(json!({"startup": ["xterm"]})), object(json!({"programs": false})));
    assert!(bad.is_err());
    ok(engine.destroy_session(worker, "vm").await);
}

#[tokio::test]
async fn a_warm_pool_of_desktops_serves_sessions_with_their_own_startup() {
    let vm = VmBackend::new(object(json!({"screen_size": [800, 600]}))).unwrap();
    let engine = Engine::builder().backend(Arc::new(vm)).pool("vm", 2).build().unwrap();
    let filled = crate::common::eventually(PATIENCE, || engine.overview()["pooled_sessions"] == 2).await;
    assert!(filled, "{}", engine.overview());
    // This test's own Xvfbs (the pool's): other tests run theirs at the same time.
    let me = std::process::id() as i32;
    let ready: Vec<i32> =
        processes_named("Xvfb").into_iter().filter(|&p| stat(p).is_some_and(|(_, ppid)| ppid == me)).collect();
    assert_eq!(ready.len(), 2, "the pool's desktops: {ready:?}");
    // Taken from the pool: an Xvfb that was running before the session was asked for, with the
    // session's own start-up program and observation.
    let config = json!({"startup": ["gtk3-widget-factory"], "observe": ["screenshot"]});
    assert_eq!(create_session(&engine, "pool-a", "vm", config).await.code, 0);
    let info = ok(engine.execute("pool-a", "vm:info", json!({})).await);
    let xvfb = info["server_pid"].as_u64().unwrap() as i32;
    assert!(ready.contains(&xvfb), "the desktop {xvfb} was not one of the pool's {ready:?}");
    tree_until(&engine, "pool-a", |t| t.iter().any(|e| e.name == "gtk3-widget-factory").then_some(())).await;
    assert!(ok(engine.execute("pool-a", "vm:move", json!({"x": 1, "y": 1})).await)["image"].is_string());
    // A config a pooled desktop cannot serve starts a fresh one.
    assert_eq!(create_session(&engine, "pool-b", "vm", json!({"screen_size": [640, 480]})).await.code, 0);
    let fresh = ok(engine.execute("pool-b", "vm:info", json!({})).await);
    assert!(!ready.contains(&(fresh["server_pid"].as_u64().unwrap() as i32)));
    assert_eq!(fresh["size"], json!([640, 480]));
    // Shutdown ends the sessions and the pool alike.
    engine.shutdown(false, true).await;
    for &pid in &ready {
        let gone = crate::common::eventually(Duration::from_secs(5), || !running(pid)).await;
        assert!(gone, "Xvfb {pid} outlived the engine");
    }
}

#[tokio::test]
async fn a_jail_that_cannot_hold_the_display_goes_on_without_it() {
    need("bwrap");
    // Jails under /dev/shm (tmpfs): another file system than the display's socket in /tmp, so
    // no link to it can be made there.
    let root = std::path::Path::new("/dev/shm").join(format!("agentflow-test-{}-jails", std::process::id()));
    let bash = BashBackend::new(object(json!({"work_root": root.display().to_string()}))).unwrap();
    let vm = VmBackend::new(object(json!({"screen_size": [640, 480]}))).unwrap();
    let engine = Engine::builder().backend(Arc::new(vm)).backend(Arc::new(bash)).build().unwrap();
    let worker = "desktop-jail-elsewhere";
    assert_eq!(create_session(&engine, worker, "vm", json!({"accessibility": false})).await.code, 0);
    assert_eq!(create_session(&engine, worker, "bash", jailed(json!({}))).await.code, 0);
    // The shell is usable, without the desktop.
    assert_eq!(shell_sees(&engine, worker).await.0, "none");
    assert_eq!(command_ok(&engine, worker, "echo still here").await, "still here\n");
    ok(engine.destroy_worker(worker).await);
    let _ = std::fs::remove_dir_all(root);
}
