//! The `vm` adapter: the `vm:` tools of docs/backends.md over an [`agentflow_vm::Desktop`] per session.
//!
//! It reads the session config (`screen_size`, `depth`, `display`), checks what a schema cannot
//! (a point on the screen, a key name that exists, both-or-neither coordinates), runs each
//! desktop call on tokio's blocking pool (the X connection is blocking I/O), and turns results
//! into JSON `data`. What a desktop does is left to `agentflow-vm`; sessions, timeouts and the
//! envelope to the engine.
//!
//! With `display` set, the session attaches to that display and takes its size from it;
//! `screen_size` and `depth` apply only to a private Xvfb. `vm:info` reports the private Xvfb's
//! Xauthority file (`xauthority`), so an operator can run other X clients on the display.
//!
//! What a session config may ask is bounded by the operator (refusals are 1006 naming the key):
//! - `display`: only a display on `allowed_displays`, a list in the backend's defaults
//!   (`resources.vm.config.allowed_displays`, empty by default), compared as displays (`:5` and
//!   `:5.0` are one), and never a display a session of this process started. Checked before
//!   anything connects. An operator default `display` must be on the list too.
//! - `allowed_displays`: operator-only; a session config that sets it is refused.
//! - `screen_size`: at most the policy's ceiling, `resources.vm.policy.screen_size` ([w, h],
//!   default 3840×2160; each side at most 8192); an operator default above it is a
//!   configuration error.
//!
//! `vm:type` stops at the caller's timeout, answering 2002 with what it typed so far in `data`.
//! `vm:wait` sleeps on the runtime, not on a blocking thread. When the caller's timeout is
//! shorter than `seconds`, it waits until that timeout and answers 2002 with `data.waited`: the
//! agent asked for more time than the call had, and is told so rather than getting a short wait
//! that looks complete.

use std::sync::Arc;
use std::time::{Duration, Instant};

use agentflow_vm::{Button, Desktop, DisplayName, Key};
use async_trait::async_trait;
use base64::Engine as _;
use parking_lot::Mutex;
use serde_json::{json, Map, Value};

use crate::backend::{merge_config, param, state_mut, Backend, CallContext, SessionState};
use crate::error::{Error, Result};
use crate::tool::{Kind, Param, ToolSpec};

/// The largest screen a session may ask for when the operator's policy does not say.
const DEFAULT_MAX_SCREEN: (u32, u32) = (3840, 2160);
/// The largest screen Xvfb is asked for, whatever the policy.
const MAX_SIDE: u64 = 8192;

/// Reads `[width, height]`, each side in `1..=8192`.
fn read_size(v: &Value) -> Option<(u32, u32)> {
    let dims: Vec<u64> = v.as_array().filter(|a| a.len() == 2)?.iter().map(Value::as_u64).collect::<Option<_>>()?;
    let side = |n: u64| (1..=MAX_SIDE).contains(&n).then_some(n as u32);
    Some((side(dims[0])?, side(dims[1])?))
}

/// Where a session's desktop comes from.
#[derive(Debug, Clone, PartialEq)]
struct DesktopConfig {
    screen_size: (u32, u32),
    depth: u8,
    /// Attach to this display instead of starting a private Xvfb.
    display: Option<String>,
}

impl DesktopConfig {
    /// Reads a (merged) config; an error names the offending key and why.
    fn read(config: &Map<String, Value>) -> std::result::Result<DesktopConfig, (&'static str, String)> {
        let mut out = DesktopConfig { screen_size: (1920, 1080), depth: 24, display: None };
        match config.get("screen_size") {
            None | Some(Value::Null) => {}
            Some(v) => match read_size(v) {
                Some(size) => out.screen_size = size,
                None => return Err(("screen_size", format!("expected [width, height] in 1..={MAX_SIDE}, got {v}"))),
            },
        }
        match config.get("depth") {
            None | Some(Value::Null) => {}
            Some(v) => match v.as_u64() {
                Some(d @ (16 | 24)) => out.depth = d as u8,
                _ => return Err(("depth", format!("expected 16 or 24, got {v}"))),
            },
        }
        match config.get("display") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if DisplayName::parse(s).is_some() => out.display = Some(s.clone()),
            Some(v) => return Err(("display", format!("expected an X display such as \":99\", got {v}"))),
        }
        Ok(out)
    }
}

/// A session: its desktop, shared with the blocking task that runs the current call.
struct VmSession {
    desktop: Arc<Mutex<Desktop>>,
    display: String,
    size: (u32, u32),
}

impl VmSession {
    /// Checks that `(x, y)` (named `fx`, `fy` in the params) is on the screen.
    fn check_point(&self, params: &Value, fx: &str, fy: &str) -> Result<(i64, i64)> {
        let x: i64 = param(params, fx)?.ok_or_else(|| Error::param(fx, "missing required parameter"))?;
        let y: i64 = param(params, fy)?.ok_or_else(|| Error::param(fy, "missing required parameter"))?;
        let (w, h) = self.size;
        for (field, v, max) in [(fx, x, w), (fy, y, h)] {
            if v < 0 || v >= i64::from(max) {
                return Err(Error::param(
                    field,
                    format!("{v} is outside the {w}x{h} screen ({field} must be between 0 and {})", max - 1),
                ));
            }
        }
        Ok((x, y))
    }

    /// The optional point named `fx`, `fy`: both or neither.
    fn optional_point(&self, params: &Value, fx: &str, fy: &str) -> Result<Option<(i64, i64)>> {
        let given = |f: &str| !matches!(params.get(f), None | Some(Value::Null));
        match (given(fx), given(fy)) {
            (false, false) => Ok(None),
            (true, true) => self.check_point(params, fx, fy).map(Some),
            (true, false) => Err(Error::param(fy, format!("give both {fx} and {fy}, or neither"))),
            (false, true) => Err(Error::param(fx, format!("give both {fx} and {fy}, or neither"))),
        }
    }

    /// Runs `op` on the desktop on a blocking thread.
    async fn run<T: Send + 'static>(
        &self,
        op: impl FnOnce(&mut Desktop) -> agentflow_vm::Result<T> + Send + 'static,
    ) -> Result<T> {
        let desktop = self.desktop.clone();
        tokio::task::spawn_blocking(move || op(&mut desktop.lock()))
            .await
            .map_err(|e| Error::Internal(format!("desktop call failed: {e}")))?
            .map_err(|e| desktop_error(e, &self.display))
    }
}

/// Maps a desktop failure to the engine's: the caller's mistakes are 1002, the display's 2001.
fn desktop_error(e: agentflow_vm::Error, display: &str) -> Error {
    use agentflow_vm::Error as E;
    match e {
        E::UnknownKey(name) => Error::param("key", format!("unknown key name '{name}'")),
        E::OutOfScreen { .. } => Error::param("x", e.to_string()),
        other => Error::Backend { message: other.to_string(), data: json!({ "display": display }) },
    }
}

/// Parses a key name; an unknown one is a 1002 naming `field` and the name.
fn key(field: &str, name: &str) -> Result<Key> {
    Key::parse(name).map_err(|_| {
        Error::param(
            field,
            format!("unknown key name '{name}' (use pyautogui names: enter, ctrl, f5, pagedown… or one character)"),
        )
    })
}

fn button(params: &Value) -> Result<Button> {
    let name: String = param(params, "button")?.unwrap_or_else(|| "left".into());
    Button::parse(&name).ok_or_else(|| Error::param("button", format!("expected left, right or middle, got '{name}'")))
}

fn started_error(e: agentflow_vm::Error) -> Error {
    Error::backend(e.to_string())
}

/// The `vm` backend: a desktop per session.
#[derive(Debug)]
pub struct VmBackend {
    defaults: Map<String, Value>,
    /// The displays sessions may attach to (`allowed_displays` in the defaults), as written and
    /// as parsed.
    allowed_displays: Vec<(String, DisplayName)>,
    /// The largest screen a session may ask for (`resources.vm.policy.screen_size`).
    max_screen: (u32, u32),
}

impl VmBackend {
    /// A backend whose sessions start from these config defaults (`screen_size`, `depth`,
    /// `display`, and the operator-only `allowed_displays`); a mistyped default is a
    /// configuration error.
    pub fn new(defaults: Map<String, Value>) -> Result<Self> {
        Self::with_policy(defaults, Map::new())
    }

    /// A backend with the operator's policy too (`resources.vm.policy`: `screen_size`, the
    /// largest screen a session may ask for). Defaults the policy would refuse to a session are
    /// configuration errors.
    pub fn with_policy(defaults: Map<String, Value>, policy: Map<String, Value>) -> Result<Self> {
        let config = |key: &str, reason: String| Error::Config(format!("vm.{key}: {reason}"));
        let cfg = DesktopConfig::read(&defaults).map_err(|(key, reason)| config(key, reason))?;
        let max_screen = match policy.get("screen_size") {
            None | Some(Value::Null) => DEFAULT_MAX_SCREEN,
            Some(v) => read_size(v).ok_or_else(|| {
                config("policy.screen_size", format!("expected [width, height] in 1..={MAX_SIDE}, got {v}"))
            })?,
        };
        let allowed_displays = match defaults.get("allowed_displays") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(list)) => list
                .iter()
                .map(|v| match v.as_str().and_then(|s| Some((s.to_owned(), DisplayName::parse(s)?))) {
                    Some(entry) => Ok(entry),
                    None => {
                        Err(config("allowed_displays", format!("expected X display names such as \":99\", got {v}")))
                    }
                })
                .collect::<Result<_>>()?,
            Some(v) => return Err(config("allowed_displays", format!("expected a list of X display names, got {v}"))),
        };
        let backend = VmBackend { defaults, allowed_displays, max_screen };
        backend.check_policy(&cfg).map_err(|e| match e {
            Error::Policy { field, reason } => config(&field, reason),
            other => other,
        })?;
        Ok(backend)
    }

    /// Checks a (merged) config against the operator's policy: the screen's size, and which
    /// display it may attach to. Nothing is connected to.
    fn check_policy(&self, cfg: &DesktopConfig) -> Result<()> {
        let ((w, h), (max_w, max_h)) = (cfg.screen_size, self.max_screen);
        if cfg.display.is_none() && (w > max_w || h > max_h) {
            return Err(Error::policy(
                "screen_size",
                format!(
                    "{w}x{h} is larger than the {max_w}x{max_h} this server allows; \
                     the operator raises the ceiling with resources.vm.policy.screen_size"
                ),
            ));
        }
        let Some(display) = &cfg.display else { return Ok(()) };
        let name = DisplayName::parse(display)
            .ok_or_else(|| Error::param("display", format!("'{display}' is not an X display name")))?;
        if name.is_private() {
            return Err(Error::policy(
                "display",
                format!(
                    "'{display}' is the private desktop of another session; sessions may attach only to \
                     displays the operator lists in resources.vm.config.allowed_displays, never to \
                     another session's"
                ),
            ));
        }
        if !self.allowed_displays.iter().any(|(_, allowed)| *allowed == name) {
            let listed: Vec<&str> = self.allowed_displays.iter().map(|(s, _)| s.as_str()).collect();
            let listed = if listed.is_empty() { "none are listed".to_owned() } else { listed.join(", ") };
            return Err(Error::policy(
                "display",
                format!(
                    "'{display}' is not a display sessions may attach to ({listed}); the operator opens a \
                     display with resources.vm.config.allowed_displays"
                ),
            ));
        }
        Ok(())
    }
}

const BUTTONS: &[&str] = &["left", "right", "middle"];

fn x(description: &'static str) -> Param {
    Param::required("x", Kind::Integer, description).range(Some(0.0), None)
}

fn y(description: &'static str) -> Param {
    Param::required("y", Kind::Integer, description).range(Some(0.0), None)
}

fn optional(p: Param) -> Param {
    Param { required: false, ..p }
}

fn key_param() -> Param {
    Param::required("key", Kind::String, "a pyautogui key name (enter, tab, esc, ctrl, f5, pagedown…) or one character")
        .range(Some(1.0), None)
}

fn xy(data: (i64, i64)) -> Value {
    json!([data.0, data.1])
}

#[async_trait]
impl Backend for VmBackend {
    fn name(&self) -> &str {
        "vm"
    }

    fn tools(&self) -> Vec<ToolSpec> {
        vec![
            ToolSpec::new("screenshot", "Takes a screenshot of the desktop (base64 PNG).", vec![]),
            ToolSpec::new(
                "click",
                "Clicks at a point of the screen.",
                vec![
                    x("column, in screenshot pixels from the left"),
                    y("row, in screenshot pixels from the top"),
                    Param::optional("button", Kind::Enum(BUTTONS), "the mouse button").default(json!("left")),
                    Param::optional("num_clicks", Kind::Integer, "how many clicks")
                        .range(Some(1.0), Some(10.0))
                        .default(json!(1)),
                ],
            ),
            ToolSpec::new(
                "double_click",
                "Double-clicks at a point with the left button.",
                vec![x("column"), y("row")],
            ),
            ToolSpec::new(
                "right_click",
                "Right-clicks at a point, or where the pointer is when x and y are left out.",
                vec![optional(x("column (with y)")), optional(y("row (with x)"))],
            ),
            ToolSpec::new("move", "Moves the mouse pointer to a point.", vec![x("column"), y("row")]),
            ToolSpec::new(
                "drag",
                "Drags with the left button held from one point to another.",
                vec![
                    Param::required("start_x", Kind::Integer, "start column").range(Some(0.0), None),
                    Param::required("start_y", Kind::Integer, "start row").range(Some(0.0), None),
                    Param::required("end_x", Kind::Integer, "end column").range(Some(0.0), None),
                    Param::required("end_y", Kind::Integer, "end row").range(Some(0.0), None),
                ],
            ),
            ToolSpec::new(
                "mouse_down",
                "Presses a mouse button where the pointer is and keeps it down.",
                vec![Param::optional("button", Kind::Enum(BUTTONS), "the mouse button").default(json!("left"))],
            ),
            ToolSpec::new(
                "mouse_up",
                "Releases a mouse button where the pointer is.",
                vec![Param::optional("button", Kind::Enum(BUTTONS), "the mouse button").default(json!("left"))],
            ),
            ToolSpec::new(
                "scroll",
                "Scrolls the wheel: clicks up (positive) or down (negative), dx right (positive) or left.",
                vec![
                    Param::required("clicks", Kind::Integer, "wheel clicks: positive up, negative down")
                        .range(Some(-1000.0), Some(1000.0)),
                    optional(x("move here first (with y)")),
                    optional(y("move here first (with x)")),
                    Param::optional("dx", Kind::Integer, "horizontal wheel clicks: positive right, negative left")
                        .range(Some(-1000.0), Some(1000.0)),
                ],
            ),
            ToolSpec::new(
                "type",
                "Types text: any Unicode, including characters the keyboard layout lacks; \\n presses Enter.",
                vec![Param::required("text", Kind::String, "the text to type").range(None, Some(100_000.0))],
            ),
            ToolSpec::new("key", "Presses and releases one key.", vec![key_param()]),
            ToolSpec::new("key_down", "Presses a key and keeps it down.", vec![key_param()]),
            ToolSpec::new("key_up", "Releases a key.", vec![key_param()]),
            ToolSpec::new(
                "hotkey",
                "Presses keys in order and releases them in reverse, e.g. [\"ctrl\", \"c\"].",
                vec![Param::required("keys", Kind::Array(Box::new(Kind::String)), "key names, modifiers first")
                    .range(Some(1.0), Some(16.0))],
            ),
            ToolSpec::new(
                "wait",
                "Waits, letting the screen settle.",
                vec![Param::optional("seconds", Kind::Number, "how long")
                    .range(Some(0.0), Some(3600.0))
                    .default(json!(1))],
            )
            .sessionless(),
            ToolSpec::new("done", "Says the task is done (ends the episode).", vec![]).sessionless(),
            ToolSpec::new(
                "fail",
                "Says the task cannot be done (gives up).",
                vec![Param::optional("reason", Kind::String, "why")],
            )
            .sessionless(),
            ToolSpec::new("info", "The session's display: name, size, depth, Xvfb pid, Xauthority file.", vec![])
                .hidden(),
        ]
    }

    async fn create_session(&self, config: &Map<String, Value>) -> Result<SessionState> {
        if config.contains_key("allowed_displays") {
            return Err(Error::policy(
                "allowed_displays",
                "only the operator says which displays sessions may attach to \
                 (resources.vm.config.allowed_displays)",
            ));
        }
        let merged = merge_config(&self.defaults, config);
        let cfg = DesktopConfig::read(&merged).map_err(|(key, reason)| Error::param(key, reason))?;
        // Before anything starts or connects.
        self.check_policy(&cfg)?;
        let desktop = tokio::task::spawn_blocking(move || match &cfg.display {
            Some(display) => Desktop::attach(display),
            None => Desktop::start(cfg.screen_size.0, cfg.screen_size.1, cfg.depth),
        })
        .await
        .map_err(|e| Error::Internal(format!("desktop start failed: {e}")))?
        .map_err(started_error)?;
        let session = VmSession {
            display: desktop.display().to_owned(),
            size: desktop.size(),
            desktop: Arc::new(Mutex::new(desktop)),
        };
        Ok(Box::new(session))
    }

    async fn destroy_session(&self, state: SessionState) {
        if let Ok(session) = state.downcast::<VmSession>() {
            // Stopping Xvfb waits for it to exit: blocking work.
            let _ = tokio::task::spawn_blocking(move || drop(session)).await;
        }
    }

    async fn call(
        &self,
        tool: &str,
        params: Value,
        session: Option<&mut SessionState>,
        ctx: &CallContext<'_>,
    ) -> Result<Value> {
        // The episode-control tools need no display: they answer without a session.
        let early = match tool {
            "wait" => Some({
                let seconds: f64 = param(&params, "seconds")?.unwrap_or(1.0);
                let asked = Duration::from_secs_f64(seconds);
                let start = Instant::now();
                match ctx.timeout.filter(|&t| t < asked) {
                    Some(limit) => {
                        tokio::time::sleep(limit).await;
                        let waited = start.elapsed().as_secs_f64();
                        Err(Error::Timeout {
                            message: format!("vm:wait of {seconds}s was cut at the call's timeout after {waited:.3}s"),
                            data: json!({"waited": waited}),
                        })
                    }
                    None => {
                        tokio::time::sleep(asked).await;
                        Ok(json!({"waited": seconds}))
                    }
                }
            }),
            "done" => Some(Ok(json!({"done": true}))),
            "fail" => {
                let reason: Option<String> = param(&params, "reason")?;
                Some(Ok(json!({"fail": true, "reason": reason})))
            }
            _ => None,
        };
        if let Some(answer) = early {
            return answer;
        }
        let s: &mut VmSession = state_mut(session)?;
        match tool {
            "screenshot" => {
                let (size, image) = s
                    .run(|d| {
                        let shot = d.screenshot()?;
                        Ok(((shot.width, shot.height), base64::engine::general_purpose::STANDARD.encode(&shot.png)))
                    })
                    .await?;
                Ok(json!({"image": image, "size": [size.0, size.1], "format": "png"}))
            }
            "click" => {
                let at = s.check_point(&params, "x", "y")?;
                let b = button(&params)?;
                let n: u32 = param(&params, "num_clicks")?.unwrap_or(1);
                s.run(move |d| d.click(Some(at), b, n)).await?;
                Ok(json!({"clicked": xy(at), "button": b.name()}))
            }
            "double_click" => {
                let at = s.check_point(&params, "x", "y")?;
                s.run(move |d| d.click(Some(at), Button::Left, 2)).await?;
                Ok(json!({"clicked": xy(at)}))
            }
            "right_click" => {
                let at = s.optional_point(&params, "x", "y")?;
                let clicked = s
                    .run(move |d| {
                        d.click(at, Button::Right, 1)?;
                        let (x, y) = d.pointer()?;
                        Ok((i64::from(x), i64::from(y)))
                    })
                    .await?;
                Ok(json!({"clicked": xy(at.unwrap_or(clicked))}))
            }
            "move" => {
                let (x, y) = s.check_point(&params, "x", "y")?;
                s.run(move |d| d.move_to(x, y)).await?;
                Ok(json!({"position": [x, y]}))
            }
            "drag" => {
                let from = s.check_point(&params, "start_x", "start_y")?;
                let to = s.check_point(&params, "end_x", "end_y")?;
                s.run(move |d| d.drag(from, to)).await?;
                Ok(json!({"from": xy(from), "to": xy(to)}))
            }
            "mouse_down" | "mouse_up" => {
                let b = button(&params)?;
                let down = tool == "mouse_down";
                s.run(move |d| if down { d.mouse_down(b) } else { d.mouse_up(b) }).await?;
                Ok(json!({"button": b.name()}))
            }
            "scroll" => {
                let at = s.optional_point(&params, "x", "y")?;
                let clicks: i32 = param(&params, "clicks")?.unwrap_or(0);
                let dx: Option<i32> = param(&params, "dx")?;
                let position = s
                    .run(move |d| {
                        if let Some((x, y)) = at {
                            d.move_to(x, y)?;
                        }
                        d.scroll(clicks, dx.unwrap_or(0))?;
                        d.pointer()
                    })
                    .await?;
                let mut data = json!({"position": [position.0, position.1], "clicks": clicks});
                if let Some(dx) = dx {
                    data["dx"] = json!(dx);
                }
                Ok(data)
            }
            "type" => {
                let text: String = param(&params, "text")?.unwrap_or_default();
                let length = text.chars().count();
                // Typing stops at the caller's timeout and says how far it got.
                let deadline = ctx.timeout.map(|t| Instant::now() + t);
                let (text, count) = s.run(move |d| d.type_text_until(&text, deadline).map(|n| (text, n))).await?;
                if count < length {
                    let typed: String = text.chars().take(count).collect();
                    return Err(Error::Timeout {
                        message: format!("vm:type typed {count} of {length} characters before the call's timeout"),
                        data: json!({"typed": typed, "length": count}),
                    });
                }
                Ok(json!({"typed": text, "length": length}))
            }
            "key" | "key_down" | "key_up" => {
                let name: String = param(&params, "key")?.unwrap_or_default();
                let k = key("key", &name)?;
                let which = tool.to_owned();
                s.run(move |d| match which.as_str() {
                    "key_down" => d.key_down(k),
                    "key_up" => d.key_up(k),
                    _ => d.key(k),
                })
                .await?;
                Ok(json!({"key": name}))
            }
            "hotkey" => {
                let names: Vec<String> = param(&params, "keys")?.unwrap_or_default();
                let keys =
                    names.iter().enumerate().map(|(i, n)| key(&format!("keys[{i}]"), n)).collect::<Result<Vec<_>>>()?;
                s.run(move |d| d.hotkey(&keys)).await?;
                Ok(json!({"keys": names}))
            }
            "info" => {
                let (display, size) = (s.display.clone(), s.size);
                let (depth, pid, shm, xauthority) = s
                    .run(|d| {
                        let xauthority = d.xauthority().map(|p| p.to_string_lossy().into_owned());
                        Ok((d.depth(), d.server_pid(), d.shared_memory(), xauthority))
                    })
                    .await?;
                Ok(json!({
                    "display": display,
                    "size": [size.0, size.1],
                    "depth": depth,
                    "server_pid": pid,
                    "shared_memory": shm,
                    "xauthority": xauthority,
                }))
            }
            other => Err(Error::ToolNotFound(format!("vm:{other}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(v: Value) -> std::result::Result<DesktopConfig, &'static str> {
        DesktopConfig::read(v.as_object().unwrap()).map_err(|(k, _)| k)
    }

    #[test]
    fn config_defaults_and_mistakes_name_the_key() {
        let d = read(json!({})).unwrap();
        assert_eq!((d.screen_size, d.depth, d.display), ((1920, 1080), 24, None));
        let d = read(json!({"screen_size": [800, 600], "depth": 16, "display": ":5"})).unwrap();
        assert_eq!((d.screen_size, d.depth, d.display.as_deref()), ((800, 600), 16, Some(":5")));
        assert_eq!(read(json!({"screen_size": "800x600"})), Err("screen_size"));
        assert_eq!(read(json!({"screen_size": [800]})), Err("screen_size"));
        assert_eq!(read(json!({"screen_size": [0, 600]})), Err("screen_size"));
        assert_eq!(read(json!({"depth": 8})), Err("depth"));
        assert_eq!(read(json!({"display": 99})), Err("display"));
        assert!(VmBackend::new(json!({"depth": "24"}).as_object().unwrap().clone()).is_err());
    }

    fn object(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    /// The key a session config is refused for, before anything starts.
    async fn refused(backend: &VmBackend, config: Value) -> String {
        match backend.create_session(&object(config)).await {
            Err(Error::Policy { field, .. }) => field,
            Err(other) => panic!("not a policy refusal: {other}"),
            Ok(_) => panic!("accepted"),
        }
    }

    #[tokio::test]
    async fn the_policy_bounds_the_screen_and_the_displays_a_session_may_attach_to() {
        let backend = VmBackend::new(object(json!({"allowed_displays": ["remote:3", ":77"]}))).unwrap();
        assert_eq!(refused(&backend, json!({"screen_size": [3841, 2160]})).await, "screen_size");
        assert_eq!(refused(&backend, json!({"screen_size": [3840, 2161]})).await, "screen_size");
        assert_eq!(refused(&backend, json!({"display": ":78"})).await, "display");
        assert_eq!(refused(&backend, json!({"display": "remote:4"})).await, "display");
        assert_eq!(refused(&backend, json!({"allowed_displays": []})).await, "allowed_displays");
        // Listed displays pass the policy, in any spelling of the same display.
        for display in [":77", ":77.1", "remote:3.0"] {
            let cfg = DesktopConfig::read(&object(json!({"display": display}))).unwrap();
            assert!(backend.check_policy(&cfg).is_ok(), "{display}");
        }
        // Construction: defaults the policy would refuse are configuration errors.
        let policy = object(json!({"screen_size": [5000, 3000]}));
        let big = object(json!({"screen_size": [5000, 3000]}));
        assert!(matches!(VmBackend::new(big.clone()), Err(Error::Config(_))));
        assert!(VmBackend::with_policy(big, policy).is_ok());
        assert!(matches!(VmBackend::new(object(json!({"display": ":77"}))), Err(Error::Config(_))));
        let listed = object(json!({"display": ":77", "allowed_displays": [":77.0"]}));
        assert!(VmBackend::new(listed).is_ok());
    }
}
