//! The `vm:` tools through the engine, on real Xvfb servers, checked by independent X clients:
//! `xsetroot` paints, `xdotool` reports the pointer and finds windows, `xev` sees clicks and wheel
//! buttons, `xterm` running `cat > file` receives typed text, `python3` decodes the PNG, `ps`
//! checks the process table. Each test finds its own Xvfb and its cookie (`XAUTHORITY`) through
//! the hidden `vm:info` tool, so tests run in parallel. The security tests perform the attacks a
//! session config could make (another session's display, a display over TCP, an operator-only
//! key, a huge screen) and check each is refused with a 1006 naming the key, before anything
//! connects. Tests of the `Desktop` itself are in `backends/vm/src/tests.rs`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentflow_sandbox::backends::vm::VmBackend;
use agentflow_sandbox::protocol::{CreateSessionRequest, ExecuteRequest};
use agentflow_sandbox::{Engine, Envelope};
use base64::Engine as _;
use serde_json::{json, Value};

use crate::common::eventually;

const PATIENCE: Duration = Duration::from_secs(10);

fn engine() -> Engine {
    engine_with(json!({"screen_size": [640, 480]}), json!({}))
}

/// An engine whose `vm` backend has these operator defaults and policy.
fn engine_with(defaults: Value, policy: Value) -> Engine {
    let (defaults, policy) = (defaults.as_object().unwrap().clone(), policy.as_object().unwrap().clone());
    Engine::builder().backend(Arc::new(VmBackend::with_policy(defaults, policy).unwrap())).build().unwrap()
}

/// Asks for `worker`'s session with `config`; the answer, whatever it is.
async fn try_session(engine: &Engine, worker: &str, config: Value) -> Envelope {
    let req: CreateSessionRequest =
        serde_json::from_value(json!({"worker_id": worker, "resource_type": "vm", "config": config})).unwrap();
    engine.create_session(req).await
}

/// Checks that `answer` is a policy refusal (1006) of the config key `field`, and returns its
/// message.
fn refused(answer: &Envelope, field: &str) -> String {
    assert_eq!((answer.code, answer.data["field"].as_str()), (1006, Some(field)), "{answer:?}");
    assert_eq!(answer.data["policy"], true, "{answer:?}");
    answer.message.clone()
}

async fn session(engine: &Engine, worker: &str, config: Value) -> Display {
    let created = try_session(engine, worker, config).await;
    assert_eq!(created.code, 0, "{created:?}");
    let info = ok(engine.execute(worker, "vm:info", json!({})).await);
    Display {
        name: info["display"].as_str().unwrap().to_owned(),
        pid: info["server_pid"].as_u64().map(|p| p as u32),
        xauthority: info["xauthority"].as_str().map(PathBuf::from),
    }
}

/// The answer's data, after checking it succeeded.
fn ok(envelope: Envelope) -> Value {
    assert_eq!(envelope.code, 0, "{envelope:?}");
    envelope.data
}

/// A session's display, its Xvfb and the Xauthority file holding its cookie.
struct Display {
    name: String,
    pid: Option<u32>,
    xauthority: Option<PathBuf>,
}

impl Display {
    /// An X client on this display, with the session's cookie (none for an attached display).
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("DISPLAY", &self.name).stdin(Stdio::null());
        if let Some(file) = &self.xauthority {
            cmd.env("XAUTHORITY", file);
        }
        cmd
    }

    /// Runs an X client on this display and returns its stdout; fails loudly if it is missing.
    fn run(&self, program: &str, args: &[&str]) -> String {
        let out = self.command(program).args(args).output().unwrap_or_else(|e| {
            panic!("cannot run {program} (Debian: x11-utils x11-xserver-utils xdotool xterm): {e}")
        });
        assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Starts an X client on this display, killed when the returned guard drops.
    fn spawn(&self, program: &str, args: &[&str], stdout: Option<&Path>) -> Client {
        let mut cmd = self.command(program);
        cmd.args(args).env("LC_ALL", "C.UTF-8").stderr(Stdio::null());
        cmd.stdout(match stdout {
            Some(path) => Stdio::from(std::fs::File::create(path).unwrap()),
            None => Stdio::null(),
        });
        Client(cmd.spawn().unwrap_or_else(|e| panic!("cannot run {program}: {e}")))
    }

    /// Waits for a window named `name` and returns its id and geometry `(x, y, w, h)`.
    async fn window(&self, name: &str) -> (String, (i64, i64, i64, i64)) {
        let mut id = String::new();
        let found = eventually(PATIENCE, || {
            let out = self
                .command("xdotool")
                .args(["search", "--onlyvisible", "--name", name])
                .output()
                .expect("xdotool (Debian: xdotool)");
            id = String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or("").to_owned();
            !id.is_empty()
        })
        .await;
        assert!(found, "no window named {name} on {}", self.name);
        let geometry = self.run("xdotool", &["getwindowgeometry", "--shell", &id]);
        let field = |k: &str| -> i64 {
            geometry.lines().find_map(|l| l.strip_prefix(&format!("{k}="))).unwrap().parse().unwrap()
        };
        (id.clone(), (field("X"), field("Y"), field("WIDTH"), field("HEIGHT")))
    }
}

/// An X client process, killed and reaped on drop.
struct Client(Child);

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A directory of the test's own, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("agentflow-vm-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn join(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Whether `pid` is in the process table, as `ps` sees it.
fn in_process_table(pid: u32) -> bool {
    Command::new("ps").args(["-p", &pid.to_string()]).output().expect("ps (Debian: procps)").status.success()
}

/// Decodes a PNG with Python's zlib (independent of the `image` crate the backend encodes with)
/// and prints `width height` and the distinct RGB colours.
const PNG_COLOURS: &str = r#"
import sys, zlib, struct
data = sys.stdin.buffer.read()
assert data[:8] == b'\x89PNG\r\n\x1a\n'
pos, idat = 8, b''
while pos < len(data):
    n, kind = struct.unpack('>I4s', data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + n]
    if kind == b'IHDR':
        w, h, bits, colour = struct.unpack('>IIBB', body[:10])
        assert (bits, colour) == (8, 2), (bits, colour)
    elif kind == b'IDAT':
        idat += body
    pos += 12 + n
raw, stride, prev, colours = zlib.decompress(idat), w * 3, bytearray(w * 3), set()
for y in range(h):
    f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
    for i in range(stride):
        a = line[i - 3] if i >= 3 else 0
        b = prev[i]
        c = prev[i - 3] if i >= 3 else 0
        if f == 1: line[i] = (line[i] + a) & 255
        elif f == 2: line[i] = (line[i] + b) & 255
        elif f == 3: line[i] = (line[i] + (a + b) // 2) & 255
        elif f == 4:
            p = a + b - c; pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    colours.update(bytes(line[i:i + 3]).hex() for i in range(0, stride, 3))
    prev = line
print(w, h, *sorted(colours))
"#;

#[tokio::test]
async fn screenshot_is_the_root_colour_at_the_screen_size() {
    let engine = engine();
    let d = session(&engine, "shot", json!({"screen_size": [320, 240]})).await;
    d.run("xsetroot", &["-solid", "#ff0000"]);
    let data = ok(engine.execute("shot", "vm:screenshot", json!({})).await);
    assert_eq!(data["size"], json!([320, 240]));
    assert_eq!(data["format"], "png");
    let png = base64::engine::general_purpose::STANDARD.decode(data["image"].as_str().unwrap()).unwrap();
    let mut python = Command::new("python3")
        .args(["-c", PNG_COLOURS])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 (Debian: python3)");
    std::io::Write::write_all(&mut python.stdin.take().unwrap(), &png).unwrap();
    let out = python.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "320 240 ff0000");
    engine.shutdown(false, true).await;
}

#[tokio::test]
async fn the_pointer_is_where_move_put_it_and_clicks_and_wheel_reach_the_window_there() {
    let engine = engine();
    let d = session(&engine, "mouse", json!({})).await;
    let moved = ok(engine.execute("mouse", "vm:move", json!({"x": 321, "y": 123})).await);
    assert_eq!(moved["position"], json!([321, 123]));
    let seen = d.run("xdotool", &["getmouselocation", "--shell"]);
    assert!(seen.contains("X=321\n") && seen.contains("Y=123\n"), "{seen}");

    let dir = TempDir::new("xev");
    let log = dir.join("xev.log");
    let _xev = d.spawn("xev", &["-geometry", "200x200+100+100", "-event", "button"], Some(&log));
    let (_, (wx, wy, ww, wh)) = d.window("Event Tester").await;
    let (cx, cy) = (wx + ww / 2, wy + wh / 2);
    let clicked = ok(engine.execute("mouse", "vm:click", json!({"x": cx, "y": cy})).await);
    assert_eq!((clicked["clicked"].clone(), clicked["button"].clone()), (json!([cx, cy]), json!("left")));
    ok(engine.execute("mouse", "vm:right_click", json!({})).await);
    ok(engine.execute("mouse", "vm:double_click", json!({"x": cx, "y": cy})).await);
    ok(engine.execute("mouse", "vm:scroll", json!({"clicks": 2, "dx": -1})).await);
    let scrolled = ok(engine.execute("mouse", "vm:scroll", json!({"clicks": -1, "dx": 1, "x": cx, "y": cy})).await);
    assert_eq!(scrolled["position"], json!([cx, cy]));
    ok(engine.execute("mouse", "vm:mouse_down", json!({"button": "middle"})).await);
    ok(engine.execute("mouse", "vm:mouse_up", json!({"button": "middle"})).await);

    // Button presses in order: left; right; left twice; wheel up twice, left; down, right; middle.
    let expected = ["1", "3", "1", "1", "4", "4", "6", "5", "7", "2"];
    let mut presses = Vec::new();
    let arrived = eventually(PATIENCE, || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        presses = buttons_pressed(&text);
        presses.len() >= expected.len()
    })
    .await;
    assert!(arrived, "xev saw {presses:?}");
    assert_eq!(presses, expected);
    engine.shutdown(false, true).await;
}

/// The buttons of the ButtonPress events in an xev log.
fn buttons_pressed(log: &str) -> Vec<String> {
    log.split("\n\n")
        .filter(|e| e.trim_start().starts_with("ButtonPress"))
        .filter_map(|e| e.split("button ").nth(1).and_then(|s| s.split(',').next()).map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn typed_unicode_reaches_cat_in_xterm_byte_for_byte_and_ctrl_c_stops_it() {
    let engine = engine();
    let d = session(&engine, "typist", json!({})).await;
    let dir = TempDir::new("xterm");
    let file = dir.join("typed.txt");
    let script = format!("cat > '{}'", file.display());
    let mut xterm =
        d.spawn("xterm", &["-u8", "-T", "typist", "-geometry", "60x5+0+0", "-e", "sh", "-c", &script], None);
    let (_, (wx, wy, ww, wh)) = d.window("typist").await;
    // Without a window manager the keyboard follows the pointer: put it on the terminal.
    ok(engine.execute("typist", "vm:click", json!({"x": wx + ww / 2, "y": wy + wh / 2})).await);
    // `cat` has opened the file once the shell has run it.
    assert!(eventually(PATIENCE, || file.exists()).await, "cat did not start");

    let text = "héllo wörld — 你好 ✓";
    let typed = ok(engine.execute("typist", "vm:type", json!({"text": text})).await);
    assert_eq!((typed["typed"].as_str(), typed["length"].as_u64()), (Some(text), Some(18)));
    ok(engine.execute("typist", "vm:key", json!({"key": "enter"})).await);
    let expected = format!("{text}\n").into_bytes();
    let mut written = Vec::new();
    let arrived = eventually(PATIENCE, || {
        written = std::fs::read(&file).unwrap_or_default();
        written.len() >= expected.len()
    })
    .await;
    assert!(arrived, "cat wrote {:?}", String::from_utf8_lossy(&written));
    assert_eq!(String::from_utf8_lossy(&written), String::from_utf8_lossy(&expected));
    assert_eq!(written, expected);
    // A Windows line end is one Enter, not two.
    ok(engine.execute("typist", "vm:type", json!({"text": "x\r\ny\n"})).await);
    let expected = format!("{text}\nx\ny\n").into_bytes();
    let arrived = eventually(PATIENCE, || {
        written = std::fs::read(&file).unwrap_or_default();
        written.len() >= expected.len()
    })
    .await;
    assert!(arrived && written == expected, "cat wrote {:?}", String::from_utf8_lossy(&written));

    // Ctrl-C ends cat, its shell, and so the xterm.
    ok(engine.execute("typist", "vm:hotkey", json!({"keys": ["ctrl", "c"]})).await);
    let ended = eventually(PATIENCE, || xterm.0.try_wait().unwrap().is_some()).await;
    assert!(ended, "cat is still running after ctrl+c");
    engine.shutdown(false, true).await;
}

#[tokio::test]
async fn two_sessions_have_their_own_displays_and_input() {
    let engine = engine();
    let (a, b) = tokio::join!(session(&engine, "a", json!({})), session(&engine, "b", json!({})));
    assert_ne!(a.name, b.name);
    let dir = TempDir::new("two");
    let log = dir.join("xev-b.log");
    let _xev = b.spawn("xev", &["-geometry", "100x100+50+50", "-event", "button"], Some(&log));
    let (_, (bx, by, _, _)) = b.window("Event Tester").await;
    // The same point on both desktops: only b's click may reach b's window.
    ok(engine.execute("a", "vm:click", json!({"x": bx + 10, "y": by + 10, "button": "right"})).await);
    ok(engine.execute("a", "vm:move", json!({"x": 5, "y": 6})).await);
    ok(engine.execute("b", "vm:click", json!({"x": bx + 10, "y": by + 10})).await);
    let mut presses = Vec::new();
    assert!(
        eventually(PATIENCE, || {
            presses = buttons_pressed(&std::fs::read_to_string(&log).unwrap_or_default());
            !presses.is_empty()
        })
        .await
    );
    assert_eq!(presses, ["1"], "b saw only its own left click");
    assert!(a.run("xdotool", &["getmouselocation", "--shell"]).contains("X=5\nY=6\n"));
    assert!(b.run("xdotool", &["getmouselocation", "--shell"]).contains(&format!("X={}\nY={}\n", bx + 10, by + 10)));
    engine.shutdown(false, true).await;
}

#[tokio::test]
async fn destroying_a_session_stops_its_xvfb_and_a_killed_xvfb_is_a_backend_error() {
    let engine = engine();
    let d = session(&engine, "gone", json!({})).await;
    let pid = d.pid.expect("a private Xvfb");
    assert!(in_process_table(pid));
    let cookie = d.xauthority.clone().expect("a private Xvfb has a cookie");
    assert!(cookie.exists());
    let destroyed = engine.destroy_session("gone", "vm").await;
    assert_eq!(destroyed.code, 0, "{destroyed:?}");
    assert!(!in_process_table(pid), "Xvfb {pid} outlived its session");
    assert!(!Path::new(&format!("/tmp/.X{}-lock", &d.name[1..])).exists());
    assert!(!cookie.parent().unwrap().exists(), "{} outlived its session", cookie.display());

    let d = session(&engine, "gone", json!({})).await;
    let pid = d.pid.unwrap();
    assert!(Command::new("kill").args(["-9", &pid.to_string()]).status().unwrap().success());
    let answer = engine.execute("gone", "vm:screenshot", json!({})).await;
    assert_eq!(answer.code, 2001, "{answer:?}");
    assert!(answer.message.contains(&d.name), "{}", answer.message);
    assert_eq!(answer.data["display"], d.name.as_str());
    let again = engine.execute("gone", "vm:click", json!({"x": 1, "y": 1})).await;
    assert_eq!(again.code, 2001);
    engine.shutdown(false, true).await;
}

#[tokio::test]
async fn a_session_attached_to_a_display_leaves_it_running() {
    // Someone else's display: a bare Xvfb, numbered by itself (one start at a time, as desktops do).
    let serial = agentflow_vm::StartGuard::acquire();
    let mut xvfb = Command::new("Xvfb")
        // -noreset: a server reset when the last client leaves would refuse connections meanwhile.
        .args(["-displayfd", "1", "-screen", "0", "800x600x24", "-nolisten", "tcp", "-noreset"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("Xvfb (Debian: xvfb)");
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(xvfb.stdout.take().unwrap()), &mut line).unwrap();
    drop(serial);
    let foreign = Client(xvfb);
    let name = format!(":{}", line.trim());

    // The operator lets sessions attach to it.
    let engine = engine_with(json!({"screen_size": [640, 480], "allowed_displays": [name]}), json!({}));
    let d = session(&engine, "guest", json!({"display": name})).await;
    assert_eq!((d.name.as_str(), d.pid, &d.xauthority), (name.as_str(), None, &None));
    ok(engine.execute("guest", "vm:move", json!({"x": 700, "y": 500})).await);
    let info = ok(engine.execute("guest", "vm:info", json!({})).await);
    assert_eq!(info["size"], json!([800, 600]), "the display's own size");
    assert_eq!(ok(engine.execute("guest", "vm:screenshot", json!({})).await)["size"], json!([800, 600]));
    assert!(d.run("xdotool", &["getmouselocation", "--shell"]).contains("X=700\nY=500\n"));
    assert_eq!(engine.destroy_session("guest", "vm").await.code, 0);
    assert!(in_process_table(foreign.0.id()));
    assert!(d.run("xdpyinfo", &[]).contains("dimensions:    800x600"), "the display still answers");
    engine.shutdown(false, true).await;
}

#[tokio::test]
async fn mistakes_are_parameter_errors_naming_the_field() {
    let engine = engine();
    session(&engine, "oops", json!({})).await;
    let field = |e: &Envelope| (e.code, e.data["field"].as_str().unwrap_or("").to_owned());
    let cases = [
        ("vm:click", json!({"x": 640, "y": 1}), "x"),
        ("vm:click", json!({"x": 1, "y": 480}), "y"),
        ("vm:click", json!({"x": -1, "y": 1}), "x"),
        ("vm:drag", json!({"start_x": 1, "start_y": 1, "end_x": 1, "end_y": 9999}), "end_y"),
        ("vm:right_click", json!({"x": 1}), "y"),
        ("vm:scroll", json!({"clicks": 1, "y": 3}), "x"),
        ("vm:key", json!({"key": "enterr"}), "key"),
        ("vm:key_down", json!({"key": "hyperdrive"}), "key"),
        ("vm:hotkey", json!({"keys": ["ctrl", "nope"]}), "keys[1]"),
        ("vm:hotkey", json!({"keys": []}), "keys"),
        ("vm:click", json!({"x": 1, "y": 1, "button": "side"}), "button"),
        ("vm:wait", json!({"seconds": -1}), "seconds"),
        ("vm:type", json!({}), "text"),
    ];
    for (tool, params, expected) in cases {
        let answer = engine.execute("oops", tool, params.clone()).await;
        assert_eq!(field(&answer), (1002, expected.to_owned()), "{tool} {params}: {answer:?}");
    }
    let unknown = engine.execute("oops", "vm:key", json!({"key": "enterr"})).await;
    assert!(unknown.message.contains("enterr"), "{}", unknown.message);
    let outside = engine.execute("oops", "vm:move", json!({"x": 9000, "y": 1})).await;
    assert!(outside.message.contains("9000") && outside.message.contains("640x480"), "{}", outside.message);

    let req: CreateSessionRequest =
        serde_json::from_value(json!({"worker_id": "bad", "resource_type": "vm", "config": {"screen_size": "big"}}))
            .unwrap();
    let bad = engine.create_session(req).await;
    assert_eq!(field(&bad), (1002, "screen_size".to_owned()), "{bad:?}");
    engine.shutdown(false, true).await;
}

#[tokio::test]
async fn wait_done_and_fail_and_a_wait_longer_than_its_timeout() {
    let engine = engine();
    session(&engine, "agent", json!({})).await;
    let waited = ok(engine.execute("agent", "vm:wait", json!({"seconds": 0.05})).await);
    assert_eq!(waited["waited"], 0.05);
    let mut req = ExecuteRequest::new("agent", "vm:wait", json!({"seconds": 30}));
    req.timeout = Some(0.2);
    let start = Instant::now();
    let cut = engine.execute_request(req).await;
    assert_eq!(cut.code, 2002, "{cut:?}");
    assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());
    assert!(cut.data["waited"].as_f64().unwrap() >= 0.2);
    assert_eq!(ok(engine.execute("agent", "vm:done", json!({})).await), json!({"done": true}));
    let failed = ok(engine.execute("agent", "vm:fail", json!({"reason": "no such file"})).await);
    assert_eq!(failed, json!({"fail": true, "reason": "no such file"}));
    engine.shutdown(false, true).await;
}

#[tokio::test]
async fn typing_stops_at_the_callers_timeout_and_says_how_far_it_got() {
    let engine = engine();
    session(&engine, "slow", json!({})).await;
    // More distinct characters than there are spare keycodes: rebinding paces the typing.
    let text: String = (0x4e00u32..0x4e00 + 200).filter_map(char::from_u32).collect();
    let mut req = ExecuteRequest::new("slow", "vm:type", json!({"text": text}));
    req.timeout = Some(0.3);
    let start = Instant::now();
    let cut = engine.execute_request(req).await;
    assert_eq!(cut.code, 2002, "{}", cut.message);
    assert!(start.elapsed() < Duration::from_secs(2), "{:?}", start.elapsed());
    let typed = cut.data["typed"].as_str().unwrap();
    assert!(text.starts_with(typed) && !typed.is_empty() && typed.len() < text.len(), "{typed}");
    assert_eq!(cut.data["length"].as_u64(), Some(typed.chars().count() as u64));
    // The session is usable afterwards.
    ok(engine.execute("slow", "vm:move", json!({"x": 1, "y": 1})).await);
    engine.shutdown(false, true).await;
}

#[tokio::test]
async fn episode_tools_need_no_display() {
    let engine = engine();
    let done = engine.execute("nobody", "vm:done", json!({})).await;
    assert_eq!((done.code, &done.data["done"]), (0, &json!(true)));
    // No temporary session, hence no Xvfb started just to answer.
    assert_eq!((done.meta.session_id.as_deref(), done.meta.temporary_session), (None, false));
    let fail = engine.execute("nobody", "vm:fail", json!({"reason": "stuck"})).await;
    assert_eq!(fail.data, json!({"fail": true, "reason": "stuck"}));
    let waited = engine.execute("nobody", "vm:wait", json!({"seconds": 0})).await;
    assert_eq!((waited.code, waited.meta.session_id.as_deref()), (0, None));
    // With a session, they run in its turn and say so.
    let _display = session(&engine, "w", json!({"screen_size": [320, 240]})).await;
    let done = engine.execute("w", "vm:done", json!({})).await;
    assert!(done.meta.session_id.is_some());
    engine.shutdown(false, true).await;
}

#[tokio::test]
async fn a_session_cannot_open_another_sessions_desktop() {
    let engine = engine();
    let victim = session(&engine, "victim", json!({})).await;
    // The attack: a session config naming the other worker's display, in any spelling.
    let n = &victim.name[1..];
    let socket = format!("/tmp/.X11-unix/X{n}");
    for display in [victim.name.clone(), format!(":{n}.0"), format!("unix/:{n}"), socket] {
        let answer = try_session(&engine, "intruder", json!({"display": display})).await;
        let message = refused(&answer, "display");
        assert!(message.contains("resources.vm.config.allowed_displays"), "{message}");
    }
    // Even an operator who lists it cannot hand one session's desktop to another.
    let careless = engine_with(json!({"allowed_displays": [victim.name]}), json!({}));
    let answer = try_session(&careless, "intruder", json!({"display": victim.name})).await;
    assert!(refused(&answer, "display").contains("another session"), "{}", answer.message);
    careless.shutdown(false, true).await;

    // Nor can an independent X client without the session's cookie (`~/.Xauthority` unread).
    let out = Command::new("xdpyinfo")
        .env("DISPLAY", &victim.name)
        .env("XAUTHORITY", "/nonexistent/Xauthority")
        .output()
        .expect("xdpyinfo (Debian: x11-utils)");
    assert!(!out.status.success(), "a client without the cookie opened {}", victim.name);
    assert!(victim.run("xdpyinfo", &[]).contains("dimensions:    640x480"), "with the cookie it can");
    engine.shutdown(false, true).await;
}

#[tokio::test]
async fn a_display_off_the_operators_list_is_refused_before_anything_connects() {
    // A listener standing for an X server over TCP: display n is port 6000 + n.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    assert!(port > 6000, "an ephemeral port above X's base: {port}");
    let display = format!("127.0.0.1:{}", port - 6000);
    let engine = engine();
    // Without the bound, the old code would wait forever for the listener's setup reply.
    let bounded = |config: Value| {
        let engine = engine.clone();
        async move { tokio::time::timeout(PATIENCE, try_session(&engine, "tcp", config)).await.expect("answered") }
    };
    let answer = bounded(json!({"display": display})).await;
    let message = refused(&answer, "display");
    assert!(message.contains("resources.vm.config.allowed_displays") && message.contains(&display), "{message}");
    // The operator-only key cannot be set by the session itself.
    let answer = bounded(json!({"display": display, "allowed_displays": [display]})).await;
    refused(&answer, "allowed_displays");
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the engine connected to {display}: {other:?}"),
    }
    assert_eq!(engine.list_sessions("tcp").await.data["total"], 0);
    engine.shutdown(false, true).await;
}

#[tokio::test]
async fn a_screen_above_the_policy_is_refused_and_an_operator_can_raise_the_ceiling() {
    let engine = engine();
    for size in [[8192, 8192], [3841, 100], [100, 2161]] {
        let answer = try_session(&engine, "big", json!({"screen_size": size})).await;
        let message = refused(&answer, "screen_size");
        assert!(message.contains("3840x2160") && message.contains("resources.vm.policy.screen_size"), "{message}");
    }
    engine.shutdown(false, true).await;

    // An operator default above the ceiling is a configuration error; a policy can allow it.
    let config = |v: Value| v.as_object().unwrap().clone();
    assert!(VmBackend::new(config(json!({"screen_size": [4096, 2304]}))).is_err());
    for bad in [json!([0, 100]), json!([9000, 9000]), json!("4k")] {
        assert!(VmBackend::with_policy(config(json!({})), config(json!({"screen_size": bad}))).is_err(), "{bad}");
    }
    // A policy key the backend does not know is refused, naming the known ones.
    let Err(e) = VmBackend::with_policy(config(json!({})), config(json!({"screen_sizes": [4096, 2304]}))) else {
        panic!("an unknown policy key was accepted")
    };
    assert!(e.to_string().contains("screen_sizes") && e.to_string().contains("known: programs, screen_size"), "{e}");
    for bad in [json!({"allowed_displays": ":5"}), json!({"allowed_displays": ["five"]}), json!({"display": ":5"})] {
        assert!(VmBackend::new(config(bad.clone())).is_err(), "{bad}");
    }

    let engine = engine_with(json!({"screen_size": [320, 240]}), json!({"screen_size": [4096, 2304]}));
    refused(&try_session(&engine, "big", json!({"screen_size": [4097, 2304]})).await, "screen_size");
    let d = session(&engine, "big", json!({"screen_size": [4096, 2304]})).await;
    assert!(d.run("xdpyinfo", &[]).contains("dimensions:    4096x2304"));
    engine.shutdown(false, true).await;
}
