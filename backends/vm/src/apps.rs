//! Programs on a [`Desktop`]: starting one with the desktop's environment, finding the windows it
//! maps, a window manager, and a desktop started with all of that ([`DesktopOptions`]).
//!
//! A window's owner is asked of the X server (the X-Resource extension's client pid), not of
//! the window's own `_NET_WM_PID`, which a program may not set: a window belongs to a launched
//! program when the client that made it is that process or one of its descendants.

use std::time::{Duration, Instant};

use x11rb::protocol::res::{ClientIdMask, ClientIdSpec, ConnectionExt as _};
use x11rb::protocol::xproto::{AtomEnum, ConnectionExt as _, MapState, Window};

use crate::a11y::Buses;
use crate::desktop::{Desktop, OnDisplay};
use crate::error::{Error, Result};
use crate::programs::Programs;

/// How often a wait for a window looks again.
const POLL: Duration = Duration::from_millis(15);
/// How long a window manager may take to take over the screen.
const WM_READY: Duration = Duration::from_secs(10);
/// How deep below the root a program's window is looked for (a window manager's frame holds it).
const WINDOW_DEPTH: usize = 3;

/// A window manager a desktop can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowManager {
    /// Openbox: light, standard EWMH focus and decorations.
    Openbox,
}

impl WindowManager {
    /// By name: `openbox`.
    pub fn parse(name: &str) -> Option<WindowManager> {
        match name {
            "openbox" => Some(WindowManager::Openbox),
            _ => None,
        }
    }

    /// The names [`WindowManager::parse`] knows.
    pub const NAMES: &'static [&'static str] = &["openbox"];

    fn argv(self) -> &'static [&'static str] {
        match self {
            // No session manager, and a config of its own (not the user's ~/.config).
            WindowManager::Openbox => &["openbox", "--sm-disable", "--config-file", "/etc/xdg/openbox/rc.xml"],
        }
    }
}

/// How to start a private desktop.
#[derive(Debug, Clone, PartialEq)]
pub struct DesktopOptions {
    /// Screen width in pixels.
    pub width: u32,
    /// Screen height in pixels.
    pub height: u32,
    /// Bits per pixel: 16 or 24.
    pub depth: u8,
    /// A D-Bus session bus and an AT-SPI bus of the desktop's own, so that its programs expose
    /// their accessibility trees ([`Desktop::accessibility_address`], [`crate::Accessibility`]).
    pub accessibility: bool,
    /// A window manager started before anything else.
    pub window_manager: Option<WindowManager>,
    /// Commands started (with `/bin/sh -c`) once the desktop is up, not waited for.
    pub startup: Vec<String>,
}

impl Default for DesktopOptions {
    fn default() -> Self {
        DesktopOptions {
            width: 1920,
            height: 1080,
            depth: 24,
            accessibility: false,
            window_manager: None,
            startup: Vec::new(),
        }
    }
}

/// A window on the desktop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowInfo {
    /// Its X id.
    pub id: u32,
    /// The process of the client that made it.
    pub pid: u32,
    /// Its title (`_NET_WM_NAME`, else `WM_NAME`); empty if none.
    pub title: String,
}

impl Desktop {
    /// Starts a private desktop as `options` say: the Xvfb, then the buses, then the window
    /// manager (waited for), then the start-up commands (not waited for). Anything started is
    /// stopped again if a later step fails.
    pub fn start_with(options: &DesktopOptions) -> Result<Desktop> {
        let mut desktop = Desktop::start(options.width, options.height, options.depth)?;
        let mut programs = Programs::new(desktop.display(), desktop.xauthority())?;
        if options.accessibility {
            let buses = Buses::start(&mut programs, desktop.display());
            let buses = match buses {
                Ok(buses) => buses,
                Err(e) => {
                    // What did start is stopped before the error is told.
                    drop(programs);
                    return Err(e);
                }
            };
            desktop.buses = Some(buses);
        }
        desktop.programs = Some(programs);
        if let Some(wm) = options.window_manager {
            desktop.start_window_manager(wm)?;
        }
        for command in &options.startup {
            desktop.launch(command)?;
        }
        Ok(desktop)
    }

    /// The environment programs of this desktop start with (`DISPLAY`, `XAUTHORITY`, the buses'
    /// addresses, the accessibility switches), for a shell that shares the desktop.
    pub fn program_env(&mut self) -> Result<Vec<(String, String)>> {
        let programs = self.programs()?;
        Ok(programs
            .env()
            .iter()
            .filter(|(k, _)| !crate::programs::is_own(&k.to_string_lossy()))
            .map(|(k, v)| (k.to_string_lossy().into_owned(), v.to_string_lossy().into_owned()))
            .collect())
    }

    /// The address of the desktop's accessibility bus, when it was started with one.
    pub fn accessibility_address(&self) -> Option<&str> {
        self.buses.as_ref().map(Buses::accessibility)
    }

    /// Starts `command` (with `/bin/sh -c`) on the desktop; its pid. It is killed with the
    /// desktop.
    pub fn launch(&mut self, command: &str) -> Result<u32> {
        self.programs()?.launch(command)
    }

    /// Waits until a viewable window made by `pid` (or a descendant of it) is on the screen,
    /// until `deadline`: `Ok(None)` if none came by then. An error if the program exited first.
    pub fn wait_for_window(&mut self, pid: u32, deadline: Instant) -> Result<Option<WindowInfo>> {
        loop {
            if let Some(window) = self.windows()?.into_iter().find(|w| descends_from(w.pid, pid)) {
                return Ok(Some(window));
            }
            if let Some((status, said)) = self.programs()?.ended(pid) {
                let said = if said.is_empty() { String::new() } else { format!(": {said}") };
                return Err(Error::Launch(format!("process {pid} ended ({status}) before it showed a window{said}")));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            std::thread::sleep(POLL.min(deadline - now));
        }
    }

    /// The viewable windows near the top of the tree (children of the root, and their children
    /// down to a window manager's frame), with the process that made each.
    pub fn windows(&mut self) -> Result<Vec<WindowInfo>> {
        let d = &self.display;
        let mut found = Vec::new();
        let mut level = vec![self.root];
        for _ in 0..WINDOW_DEPTH {
            let mut next = Vec::new();
            for parent in level {
                let Ok(cookie) = self.conn.query_tree(parent) else { continue };
                // A window may be destroyed between the replies: skip it.
                let Ok(tree) = cookie.reply() else { continue };
                next.extend(tree.children);
            }
            let attributes: Vec<_> =
                next.iter().map(|&w| self.conn.get_window_attributes(w)).collect::<Result<Vec<_>, _>>().on(d)?;
            let viewable: Vec<Window> = next
                .iter()
                .zip(attributes)
                .filter_map(|(&w, c)| c.reply().ok().filter(|a| a.map_state == MapState::VIEWABLE).map(|_| w))
                .collect();
            found.extend(viewable.iter().copied());
            level = viewable;
        }
        // One request per window, all sent before the first reply is read: one round trip.
        let asked: Vec<_> = found
            .iter()
            .map(|&w| {
                self.conn.res_query_client_ids(&[ClientIdSpec { client: w, mask: ClientIdMask::LOCAL_CLIENT_PID }])
            })
            .collect::<Result<Vec<_>, _>>()
            .on(d)?;
        // Asked once per look, not per window.
        let atom = |name: &[u8]| self.conn.intern_atom(false, name).ok()?.reply().ok().map(|r| r.atom);
        let net_name = atom(b"_NET_WM_NAME").zip(atom(b"UTF8_STRING"));
        let mut windows: Vec<WindowInfo> = Vec::new();
        for (&window, cookie) in found.iter().zip(asked) {
            let Ok(reply) = cookie.reply() else { continue };
            let Some(&pid) = reply.ids.iter().find_map(|id| id.value.first()) else { continue };
            let title = self.title(window, net_name);
            match windows.iter_mut().find(|w| w.pid == pid) {
                // A program's titled window (inside its frame) says more than an untitled one.
                Some(known) if known.title.is_empty() && !title.is_empty() => {
                    *known = WindowInfo { id: window, pid, title };
                }
                Some(_) => {}
                None => windows.push(WindowInfo { id: window, pid, title }),
            }
        }
        Ok(windows)
    }

    /// A window's title (`_NET_WM_NAME` when `net_name`, its atom and `UTF8_STRING`'s, is known;
    /// else `WM_NAME`), or empty.
    fn title(&self, window: Window, net_name: Option<(u32, u32)>) -> String {
        let read = |property: u32, kind: u32| -> Option<String> {
            let reply = self.conn.get_property(false, window, property, kind, 0, 1024).ok()?.reply().ok()?;
            (!reply.value.is_empty()).then(|| String::from_utf8_lossy(&reply.value).into_owned())
        };
        let net = net_name.and_then(|(name, utf8)| read(name, utf8));
        net.or_else(|| read(AtomEnum::WM_NAME.into(), AtomEnum::STRING.into())).unwrap_or_default()
    }

    /// Starts the window manager and waits until it has taken over the screen (it names itself
    /// on the root window: `_NET_SUPPORTING_WM_CHECK`).
    fn start_window_manager(&mut self, wm: WindowManager) -> Result<()> {
        let argv = wm.argv();
        let mut command = self.programs()?.command(argv[0]);
        command.args(&argv[1..]);
        let pid = self.programs()?.spawn(command)?;
        let deadline = Instant::now() + WM_READY;
        let check = self.conn.intern_atom(false, b"_NET_SUPPORTING_WM_CHECK").on(&self.display)?;
        let check = check.reply().on(&self.display)?.atom;
        loop {
            let reply = self
                .conn
                .get_property(false, self.root, check, AtomEnum::WINDOW, 0, 1)
                .on(&self.display)?
                .reply()
                .on(&self.display)?;
            if reply.value_len > 0 {
                return Ok(());
            }
            if let Some((status, said)) = self.programs()?.ended(pid) {
                return Err(Error::Launch(format!("{} exited ({status}): {said}", argv[0])));
            }
            if Instant::now() >= deadline {
                return Err(Error::Launch(format!("{} did not take over the screen in {WM_READY:?}", argv[0])));
            }
            std::thread::sleep(POLL);
        }
    }

    /// The desktop's programs; an attached display gets them on first use (with no buses).
    fn programs(&mut self) -> Result<&mut Programs> {
        if self.programs.is_none() {
            self.programs = Some(Programs::new(&self.display, self.xauthority())?);
        }
        Ok(self.programs.as_mut().expect("just made"))
    }
}

/// Whether process `pid` is `ancestor` or descends from it (its parents, read from `/proc`).
fn descends_from(pid: u32, ancestor: u32) -> bool {
    let mut current = pid;
    for _ in 0..64 {
        if current == ancestor {
            return true;
        }
        if current <= 1 {
            return false;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{current}/stat")) else { return false };
        let Some(ppid) = stat.rsplit_once(") ").and_then(|(_, rest)| rest.split(' ').nth(1)?.parse().ok()) else {
            return false;
        };
        current = ppid;
    }
    false
}
