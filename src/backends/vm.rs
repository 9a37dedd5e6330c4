//! The `vm` adapter: the `vm:` tools of docs/backends.md over an [`agentflow_vm::Desktop`] per session.
//!
//! It reads the session config (`screen_size`, `depth`, `display`, `startup`, `window_manager`,
//! `accessibility`, `observe`, `observe_delay`), checks what a schema cannot (a point on the
//! screen, a key name that exists, both-or-neither coordinates), runs each desktop call on
//! tokio's blocking pool (the X connection is blocking I/O), reads the accessibility tree over an
//! [`agentflow_vm::Accessibility`] connection made on first use, adds what the session
//! `observe`s to action tools' answers, offers a private desktop to the worker's other sessions
//! ([`Backend::offers`]), and turns results into JSON `data`. What a desktop does is left to
//! `agentflow-vm`; sessions, timeouts and the envelope to the engine.
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

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentflow_vm::{Accessibility, Button, Desktop, DesktopOptions, DisplayName, Key, TreeOptions, WindowManager};
use async_trait::async_trait;
use base64::Engine as _;
use parking_lot::Mutex;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::backend::{merge_config, state_mut, Backend, CallContext, SessionState, SharedDesktop};
use crate::error::{Error, Result};
use crate::tool::{parse_call, parse_config, tool_specs, ToolSpec};

/// The vm backend's tools. Points are in screenshot pixels from the top-left corner.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(tag = "tool", content = "params", rename_all = "snake_case")]
enum Tool {
    /// Takes a screenshot of the desktop (base64 PNG).
    Screenshot {},
    /// Clicks at a point of the screen.
    Click {
        /// column, in screenshot pixels from the left
        #[schemars(range(min = 0))]
        x: i64,
        /// row, in screenshot pixels from the top
        #[schemars(range(min = 0))]
        y: i64,
        /// the mouse button
        #[serde(default)]
        button: MouseButton,
        /// how many clicks
        #[serde(default = "one")]
        #[schemars(range(min = 1, max = 10))]
        num_clicks: u32,
    },
    /// Double-clicks at a point with the left button.
    DoubleClick {
        /// column
        #[schemars(range(min = 0))]
        x: i64,
        /// row
        #[schemars(range(min = 0))]
        y: i64,
    },
    /// Right-clicks at a point, or where the pointer is when x and y are left out.
    RightClick {
        /// column (with y)
        #[schemars(range(min = 0))]
        x: Option<i64>,
        /// row (with x)
        #[schemars(range(min = 0))]
        y: Option<i64>,
    },
    /// Moves the mouse pointer to a point.
    Move {
        /// column
        #[schemars(range(min = 0))]
        x: i64,
        /// row
        #[schemars(range(min = 0))]
        y: i64,
    },
    /// Drags with the left button held from one point to another.
    Drag {
        /// start column
        #[schemars(range(min = 0))]
        start_x: i64,
        /// start row
        #[schemars(range(min = 0))]
        start_y: i64,
        /// end column
        #[schemars(range(min = 0))]
        end_x: i64,
        /// end row
        #[schemars(range(min = 0))]
        end_y: i64,
    },
    /// Presses a mouse button where the pointer is and keeps it down.
    MouseDown {
        /// the mouse button
        #[serde(default)]
        button: MouseButton,
    },
    /// Releases a mouse button where the pointer is.
    MouseUp {
        /// the mouse button
        #[serde(default)]
        button: MouseButton,
    },
    /// Scrolls the wheel: clicks up (positive) or down (negative), dx right (positive) or left.
    Scroll {
        /// wheel clicks: positive up, negative down
        #[schemars(range(min = -1000, max = 1000))]
        clicks: i32,
        /// move here first (with y)
        #[schemars(range(min = 0))]
        x: Option<i64>,
        /// move here first (with x)
        #[schemars(range(min = 0))]
        y: Option<i64>,
        /// horizontal wheel clicks: positive right, negative left
        #[schemars(range(min = -1000, max = 1000))]
        dx: Option<i32>,
    },
    /// Types text: any Unicode, including characters the keyboard layout lacks; \n presses Enter.
    Type {
        /// the text to type
        #[schemars(length(max = 100_000))]
        text: String,
    },
    /// Presses and releases one key.
    Key {
        /// a pyautogui key name (enter, tab, esc, ctrl, f5, pagedown…) or one character
        #[schemars(length(min = 1))]
        key: String,
    },
    /// Presses a key and keeps it down.
    KeyDown {
        /// a pyautogui key name (enter, tab, esc, ctrl, f5, pagedown…) or one character
        #[schemars(length(min = 1))]
        key: String,
    },
    /// Releases a key.
    KeyUp {
        /// a pyautogui key name (enter, tab, esc, ctrl, f5, pagedown…) or one character
        #[schemars(length(min = 1))]
        key: String,
    },
    /// Presses keys in order and releases them in reverse, e.g. ["ctrl", "c"].
    Hotkey {
        /// key names, modifiers first
        #[schemars(length(min = 1, max = 16))]
        keys: Vec<String>,
    },
    /// Waits, letting the screen settle.
    #[schemars(extend("x-sessionless" = true))]
    Wait {
        /// how long
        #[serde(default = "one_second")]
        #[schemars(range(min = 0, max = 3600))]
        seconds: f64,
    },
    /// Says the task is done (ends the episode).
    #[schemars(extend("x-sessionless" = true))]
    Done {},
    /// Says the task cannot be done (gives up).
    #[schemars(extend("x-sessionless" = true))]
    Fail {
        /// why
        reason: Option<String>,
    },
    /// Starts a program on the desktop (with /bin/sh -c); it dies with the session.
    Launch {
        /// the command line, e.g. "gtk3-widget-factory" or "xterm -e top"
        #[schemars(length(min = 1, max = 100_000))]
        command: String,
        /// wait until the program shows a window (bounded by the call's timeout)
        #[serde(default)]
        wait_for_window: bool,
    },
    /// The desktop's accessibility tree (AT-SPI) as XML, in the format OSWorld agents read.
    AccessibilityTree {
        /// write at most this many elements (the rest is cut)
        #[serde(default = "default_max_nodes")]
        #[schemars(range(min = 1, max = 100_000))]
        max_nodes: usize,
        /// leave out elements that are not showing on screen
        #[serde(default)]
        showing_only: bool,
        /// only the application of this name
        app: Option<String>,
    },
    /// The session's display: name, size, depth, Xvfb pid, Xauthority file.
    #[schemars(extend("x-hidden" = true))]
    Info {},
}

fn default_max_nodes() -> usize {
    agentflow_vm::TreeOptions::default().max_nodes
}

/// A mouse button, as tools name it.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
enum MouseButton {
    #[default]
    Left,
    Right,
    Middle,
}

impl From<MouseButton> for Button {
    fn from(b: MouseButton) -> Button {
        match b {
            MouseButton::Left => Button::Left,
            MouseButton::Right => Button::Right,
            MouseButton::Middle => Button::Middle,
        }
    }
}

fn one() -> u32 {
    1
}

fn one_second() -> f64 {
    1.0
}

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

/// The operator's policy (`resources.vm.policy`), read as session configs are.
#[derive(Debug, Deserialize, JsonSchema)]
struct Policy {
    /// [width, height]: the largest screen a session may ask for
    #[schemars(length(min = 2, max = 2))]
    screen_size: Option<Vec<u64>>,
    /// whether sessions may run programs on their desktops (`startup`, `vm:launch`); default true
    programs: Option<bool>,
}

/// The session config keys, as the config arrives; checked against this type's schema, so an
/// unknown key or a mistyped value is a 1002 naming it.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Keys {
    /// [width, height] of a private desktop
    #[schemars(length(min = 2, max = 2))]
    screen_size: Option<Vec<u64>>,
    /// bits per pixel of a private desktop: 16 or 24
    depth: Option<u64>,
    /// attach to this X display (on allowed_displays) instead of starting a private one
    display: Option<String>,
    /// operator only: the displays sessions may attach to (read by `VmBackend::with_policy`)
    #[serde(rename = "allowed_displays")]
    _allowed_displays: Option<Vec<String>>,
    /// commands started (with /bin/sh -c) when the desktop comes up
    #[schemars(length(max = 64))]
    startup: Option<Vec<String>>,
    /// a window manager for a private desktop: "openbox", or null for none
    window_manager: Option<String>,
    /// a D-Bus session bus and an AT-SPI bus of the desktop's own (private desktops; default true)
    accessibility: Option<bool>,
    /// what every action tool returns besides its own data: "accessibility_tree", "screenshot"
    observe: Option<Vec<Observation>>,
    /// seconds to let the screen settle after an action before observing it
    #[schemars(range(min = 0, max = 10))]
    observe_delay: Option<f64>,
}

/// What an action tool returns besides its own data (`observe`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
enum Observation {
    AccessibilityTree,
    Screenshot,
}

/// The default `observe_delay`.
const OBSERVE_DELAY: f64 = 0.1;

/// Where a session's desktop comes from, and what runs on it.
#[derive(Debug, Clone, PartialEq)]
struct DesktopConfig {
    screen_size: (u32, u32),
    depth: u8,
    /// Attach to this display instead of starting a private Xvfb.
    display: Option<String>,
    startup: Vec<String>,
    window_manager: Option<WindowManager>,
    accessibility: bool,
    observe_tree: bool,
    observe_screenshot: bool,
    observe_delay: Duration,
}

impl DesktopConfig {
    /// Reads a (merged) config; an error (1002) names the offending key and why.
    fn read(config: &Map<String, Value>) -> Result<DesktopConfig> {
        let keys: Keys = parse_config(config)?;
        let observe = keys.observe.unwrap_or_default();
        let mut out = DesktopConfig {
            screen_size: (1920, 1080),
            depth: 24,
            display: None,
            startup: keys.startup.unwrap_or_default(),
            window_manager: None,
            accessibility: keys.accessibility.unwrap_or(true),
            observe_tree: observe.contains(&Observation::AccessibilityTree),
            observe_screenshot: observe.contains(&Observation::Screenshot),
            observe_delay: Duration::from_secs_f64(keys.observe_delay.unwrap_or(OBSERVE_DELAY)),
        };
        if let Some(name) = keys.window_manager {
            out.window_manager = Some(WindowManager::parse(&name).ok_or_else(|| {
                Error::param(
                    "window_manager",
                    format!("unknown window manager {name:?} (known: {})", WindowManager::NAMES.join(", ")),
                )
            })?);
        }
        if let Some(i) = out.startup.iter().position(|c| c.trim().is_empty()) {
            return Err(Error::param(format!("startup[{i}]"), "an empty command"));
        }
        if let Some(v) = keys.screen_size.map(|size| json!(size)) {
            out.screen_size = read_size(&v).ok_or_else(|| {
                Error::param("screen_size", format!("expected [width, height] in 1..={MAX_SIDE}, got {v}"))
            })?;
        }
        match keys.depth {
            None => {}
            Some(d @ (16 | 24)) => out.depth = d as u8,
            Some(d) => return Err(Error::param("depth", format!("expected 16 or 24, got {d}"))),
        }
        match keys.display {
            None => {}
            Some(s) if DisplayName::parse(&s).is_some() => out.display = Some(s),
            Some(s) => {
                return Err(Error::param("display", format!("expected an X display such as \":99\", got {s:?}")))
            }
        }
        Ok(out)
    }
}

/// A session: its desktop, shared with the blocking task that runs the current call.
struct VmSession {
    desktop: Arc<Mutex<Desktop>>,
    display: String,
    size: (u32, u32),
    /// The desktop's accessibility bus, when it has one; connected to on first use.
    a11y_address: Option<String>,
    a11y: tokio::sync::OnceCell<Accessibility>,
    /// What the desktop offers its worker's other sessions (a private desktop only).
    shared: Option<SharedDesktop>,
    observe_tree: bool,
    observe_screenshot: bool,
    observe_delay: Duration,
}

impl VmSession {
    /// Checks that `(x, y)` (named `fx`, `fy` in the params) is on the screen.
    fn check_point(&self, (x, y): (i64, i64), (fx, fy): (&str, &str)) -> Result<(i64, i64)> {
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

    /// An optional point `x`, `y`: both or neither.
    fn optional_point(&self, x: Option<i64>, y: Option<i64>) -> Result<Option<(i64, i64)>> {
        match (x, y) {
            (None, None) => Ok(None),
            (Some(x), Some(y)) => self.check_point((x, y), ("x", "y")).map(Some),
            (Some(_), None) => Err(Error::param("y", "give both x and y, or neither")),
            (None, Some(_)) => Err(Error::param("x", "give both x and y, or neither")),
        }
    }

    /// The accessibility tree.
    async fn tree(&self, options: &TreeOptions) -> Result<agentflow_vm::Tree> {
        let Some(address) = &self.a11y_address else {
            return Err(Error::backend(
                "this desktop has no accessibility bus (an attached display, or \"accessibility\": false)",
            ));
        };
        let a11y = self
            .a11y
            .get_or_try_init(|| Accessibility::connect(address))
            .await
            .map_err(|e| desktop_error(e, &self.display))?;
        a11y.tree(options).await.map_err(|e| desktop_error(e, &self.display))
    }

    /// Adds what the session observes after an action (`observe`) to the action's data.
    async fn observe(&self, mut data: Value) -> Result<Value> {
        if !(self.observe_tree || self.observe_screenshot) {
            return Ok(data);
        }
        tokio::time::sleep(self.observe_delay).await;
        if self.observe_screenshot {
            let (size, image) = self.screenshot().await?;
            data["image"] = json!(image);
            data["size"] = json!([size.0, size.1]);
        }
        if self.observe_tree {
            let tree = self.tree(&TreeOptions::default()).await?;
            data["accessibility_tree"] = json!(tree.xml);
        }
        Ok(data)
    }

    /// A screenshot: its size and the PNG in base64.
    async fn screenshot(&self) -> Result<((u32, u32), String)> {
        self.run(|d| {
            let shot = d.screenshot()?;
            Ok(((shot.width, shot.height), base64::engine::general_purpose::STANDARD.encode(&shot.png)))
        })
        .await
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
    /// Whether sessions may run programs (`resources.vm.policy.programs`).
    programs: bool,
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
        let cfg = DesktopConfig::read(&defaults).map_err(|e| match e {
            Error::Param { field, reason } => config(&field, reason),
            other => other,
        })?;
        let policy: Policy = parse_config(&policy).map_err(|e| match e {
            Error::Param { field, reason } => config(&format!("policy.{field}"), reason),
            other => other,
        })?;
        let max_screen = match policy.screen_size.map(|size| json!(size)) {
            None => DEFAULT_MAX_SCREEN,
            Some(v) => read_size(&v).ok_or_else(|| {
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
        let programs = policy.programs.unwrap_or(true);
        let backend = VmBackend { defaults, allowed_displays, max_screen, programs };
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
        if !self.programs && !cfg.startup.is_empty() {
            return Err(programs_refused("startup"));
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

/// A program refused by the operator's policy (1006 naming `field`).
fn programs_refused(field: &str) -> Error {
    Error::policy(
        field,
        "this server runs no programs on sessions' desktops (they would run unjailed, as the server's \
         user); the operator allows them with resources.vm.policy.programs",
    )
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
        tool_specs::<Tool>()
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
        let cfg = DesktopConfig::read(&merged)?;
        // Before anything starts or connects.
        self.check_policy(&cfg)?;
        let options = DesktopOptions {
            width: cfg.screen_size.0,
            height: cfg.screen_size.1,
            depth: cfg.depth,
            accessibility: cfg.accessibility,
            window_manager: cfg.window_manager,
            startup: cfg.startup.clone(),
        };
        let display = cfg.display.clone();
        // Blocking work (processes started, a directory made): off the runtime's threads.
        let (desktop, shared) = tokio::task::spawn_blocking(move || {
            let mut desktop = match &display {
                Some(display) => {
                    // An attached display gets the start-up commands too (no window manager: it
                    // has its own, or its operator's choice).
                    let mut desktop = Desktop::attach(display)?;
                    for command in &options.startup {
                        desktop.launch(command)?;
                    }
                    desktop
                }
                None => Desktop::start_with(&options)?,
            };
            let shared = match (desktop.server_pid(), desktop.display().strip_prefix(':')) {
                (Some(_), Some(number)) => Some(SharedDesktop {
                    display: desktop.display().to_owned(),
                    socket: format!("/tmp/.X11-unix/X{number}").into(),
                    xauthority: desktop.xauthority().map(Path::to_path_buf),
                    env: desktop.program_env()?,
                }),
                _ => None,
            };
            Ok((desktop, shared))
        })
        .await
        .map_err(|e| Error::Internal(format!("desktop start failed: {e}")))?
        .map_err(started_error)?;
        let session = VmSession {
            display: desktop.display().to_owned(),
            size: desktop.size(),
            a11y_address: desktop.accessibility_address().map(str::to_owned),
            a11y: tokio::sync::OnceCell::new(),
            shared,
            observe_tree: cfg.observe_tree,
            observe_screenshot: cfg.observe_screenshot,
            observe_delay: cfg.observe_delay,
            desktop: Arc::new(Mutex::new(desktop)),
        };
        Ok(Box::new(session))
    }

    /// A pooled desktop (started with the defaults) serves a session asking only for
    /// `startup`, `observe` and `observe_delay`, when that config would be accepted: [`adopt`]
    /// then launches the start-up commands and takes the settings. Anything else (a screen
    /// size, a window manager, no buses, a display) starts a fresh desktop.
    ///
    /// [`adopt`]: Backend::adopt
    fn pool_serves(&self, config: &Map<String, Value>) -> bool {
        config.keys().all(|k| matches!(k.as_str(), "startup" | "observe" | "observe_delay"))
            && DesktopConfig::read(&merge_config(&self.defaults, config)).is_ok_and(|c| self.check_policy(&c).is_ok())
    }

    async fn adopt(&self, state: &mut SessionState, config: &Map<String, Value>) -> Result<()> {
        let cfg = DesktopConfig::read(&merge_config(&self.defaults, config))?;
        self.check_policy(&cfg)?;
        let session = state_mut::<VmSession>(Some(state))?;
        if config.contains_key("startup") {
            let startup = cfg.startup.clone();
            session
                .run(move |d| {
                    for command in &startup {
                        d.launch(command)?;
                    }
                    Ok(())
                })
                .await?;
        }
        session.observe_tree = cfg.observe_tree;
        session.observe_screenshot = cfg.observe_screenshot;
        session.observe_delay = cfg.observe_delay;
        Ok(())
    }

    fn offers(&self, state: &SessionState) -> Option<SharedDesktop> {
        state.downcast_ref::<VmSession>()?.shared.clone()
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
        let mut session = session;
        let tool = parse_call::<Tool>(tool, params)?;
        let observed = tool.is_action();
        let data = self.act(tool, session.as_deref_mut(), ctx).await?;
        if !observed {
            return Ok(data);
        }
        state_mut::<VmSession>(session)?.observe(data).await
    }
}

impl Tool {
    /// Whether the tool acts on the desktop (then `observe` applies).
    fn is_action(&self) -> bool {
        !matches!(
            self,
            Tool::Screenshot {}
                | Tool::Wait { .. }
                | Tool::Done {}
                | Tool::Fail { .. }
                | Tool::AccessibilityTree { .. }
                | Tool::Info {}
        )
    }
}

impl VmBackend {
    /// Runs one tool, without what `observe` adds.
    async fn act(&self, tool: Tool, session: Option<&mut SessionState>, ctx: &CallContext<'_>) -> Result<Value> {
        // The episode-control tools need no display: they answer without a session.
        let session = move || state_mut::<VmSession>(session);
        match tool {
            Tool::Wait { seconds } => wait(seconds, ctx.timeout).await,
            Tool::Done {} => Ok(json!({"done": true})),
            Tool::Fail { reason } => Ok(json!({"fail": true, "reason": reason})),
            Tool::Screenshot {} => {
                let (size, image) = session()?.screenshot().await?;
                Ok(json!({"image": image, "size": [size.0, size.1], "format": "png"}))
            }
            Tool::Click { x, y, button, num_clicks } => {
                let s = session()?;
                let at = s.check_point((x, y), ("x", "y"))?;
                s.run(move |d| d.click(Some(at), button.into(), num_clicks)).await?;
                Ok(json!({"clicked": xy(at), "button": button}))
            }
            Tool::DoubleClick { x, y } => {
                let s = session()?;
                let at = s.check_point((x, y), ("x", "y"))?;
                s.run(move |d| d.click(Some(at), Button::Left, 2)).await?;
                Ok(json!({"clicked": xy(at)}))
            }
            Tool::RightClick { x, y } => {
                let s = session()?;
                let at = s.optional_point(x, y)?;
                let clicked = s
                    .run(move |d| {
                        d.click(at, Button::Right, 1)?;
                        let (x, y) = d.pointer()?;
                        Ok((i64::from(x), i64::from(y)))
                    })
                    .await?;
                Ok(json!({"clicked": xy(at.unwrap_or(clicked))}))
            }
            Tool::Move { x, y } => {
                let s = session()?;
                let (x, y) = s.check_point((x, y), ("x", "y"))?;
                s.run(move |d| d.move_to(x, y)).await?;
                Ok(json!({"position": [x, y]}))
            }
            Tool::Drag { start_x, start_y, end_x, end_y } => {
                let s = session()?;
                let from = s.check_point((start_x, start_y), ("start_x", "start_y"))?;
                let to = s.check_point((end_x, end_y), ("end_x", "end_y"))?;
                s.run(move |d| d.drag(from, to)).await?;
                Ok(json!({"from": xy(from), "to": xy(to)}))
            }
            Tool::MouseDown { button } => {
                session()?.run(move |d| d.mouse_down(button.into())).await?;
                Ok(json!({ "button": button }))
            }
            Tool::MouseUp { button } => {
                session()?.run(move |d| d.mouse_up(button.into())).await?;
                Ok(json!({ "button": button }))
            }
            Tool::Scroll { clicks, x, y, dx } => {
                let s = session()?;
                let at = s.optional_point(x, y)?;
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
            Tool::Type { text } => {
                let length = text.chars().count();
                // Typing stops at the caller's timeout and says how far it got.
                let deadline = ctx.timeout.map(|t| Instant::now() + t);
                let (text, count) =
                    session()?.run(move |d| d.type_text_until(&text, deadline).map(|n| (text, n))).await?;
                if count < length {
                    let typed: String = text.chars().take(count).collect();
                    return Err(Error::Timeout {
                        message: format!("vm:type typed {count} of {length} characters before the call's timeout"),
                        data: json!({"typed": typed, "length": count}),
                    });
                }
                Ok(json!({"typed": text, "length": length}))
            }
            Tool::Key { key: name } => {
                let k = key("key", &name)?;
                session()?.run(move |d| d.key(k)).await?;
                Ok(json!({ "key": name }))
            }
            Tool::KeyDown { key: name } => {
                let k = key("key", &name)?;
                session()?.run(move |d| d.key_down(k)).await?;
                Ok(json!({ "key": name }))
            }
            Tool::KeyUp { key: name } => {
                let k = key("key", &name)?;
                session()?.run(move |d| d.key_up(k)).await?;
                Ok(json!({ "key": name }))
            }
            Tool::Hotkey { keys: names } => {
                let keys =
                    names.iter().enumerate().map(|(i, n)| key(&format!("keys[{i}]"), n)).collect::<Result<Vec<_>>>()?;
                session()?.run(move |d| d.hotkey(&keys)).await?;
                Ok(json!({ "keys": names }))
            }
            Tool::Launch { command, wait_for_window } => {
                if !self.programs {
                    return Err(programs_refused("command"));
                }
                let s = session()?;
                let deadline = Instant::now() + ctx.timeout.unwrap_or(DEFAULT_WINDOW_WAIT);
                let (pid, window) = s
                    .run(move |d| {
                        let pid = d.launch(&command)?;
                        let window = if wait_for_window { d.wait_for_window(pid, deadline)? } else { None };
                        Ok((pid, window))
                    })
                    .await?;
                match (wait_for_window, window) {
                    (true, None) => Err(Error::Timeout {
                        message: format!("process {pid} showed no window before the call's timeout"),
                        data: json!({ "pid": pid }),
                    }),
                    (_, Some(w)) => Ok(json!({"pid": pid, "window": {"id": w.id, "pid": w.pid, "title": w.title}})),
                    (false, None) => Ok(json!({ "pid": pid })),
                }
            }
            Tool::AccessibilityTree { max_nodes, showing_only, app } => {
                let tree = session()?.tree(&TreeOptions { max_nodes, showing_only, app }).await?;
                Ok(json!({
                    "accessibility_tree": tree.xml,
                    "nodes": tree.nodes,
                    "apps": tree.apps,
                    "truncated": tree.truncated,
                }))
            }
            Tool::Info {} => {
                let s = session()?;
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
                    "accessibility_bus": s.a11y_address,
                    "session_bus": s.shared.as_ref().and_then(|d| {
                        d.env.iter().find(|(k, _)| k == "DBUS_SESSION_BUS_ADDRESS").map(|(_, v)| v.clone())
                    }),
                }))
            }
        }
    }
}

/// How long `vm:launch` waits for a window when the call has no timeout.
const DEFAULT_WINDOW_WAIT: Duration = Duration::from_secs(30);

/// `vm:wait`: sleeps `seconds`, or until the call's timeout if that comes first (then 2002).
async fn wait(seconds: f64, timeout: Option<Duration>) -> Result<Value> {
    let asked = Duration::from_secs_f64(seconds);
    let start = Instant::now();
    match timeout.filter(|&t| t < asked) {
        Some(limit) => {
            tokio::time::sleep(limit).await;
            let waited = start.elapsed().as_secs_f64();
            Err(Error::Timeout {
                message: format!("vm:wait of {seconds}s was cut at the call's timeout after {waited:.3}s"),
                data: json!({ "waited": waited }),
            })
        }
        None => {
            tokio::time::sleep(asked).await;
            Ok(json!({ "waited": seconds }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(v: Value) -> std::result::Result<DesktopConfig, &'static str> {
        DesktopConfig::read(v.as_object().unwrap()).map_err(|e| match e {
            Error::Param { field, .. } => &*field.leak(),
            other => panic!("not a parameter error: {other}"),
        })
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
