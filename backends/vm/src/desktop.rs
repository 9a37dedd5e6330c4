//! The [`Desktop`]: one X display, seen through screenshots and driven through XTEST.
//!
//! A desktop either owns a private Xvfb (`xvfb.rs`, stopped with the desktop) or is attached to
//! a display someone else runs (left running, with the keymap as it was found). A private server
//! is opened with its cookie over its local socket, never through `$DISPLAY`'s lookup; an
//! attached display authenticates as Xlib would (`$XAUTHORITY`), and attaching to another
//! desktop's private server is refused before any connection is made. It talks X11
//! over one connection, in-process: MIT-SHM for capture when the server shares memory with us,
//! XTEST for input, with a round trip after each action so that when a call returns the server
//! has delivered its events. It knows nothing of sessions, JSON or async: every method blocks,
//! and the caller keeps it off async worker threads.

use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;

use x11rb::connection::{Connection, RequestConnection};
use x11rb::errors::{ConnectionError, ReplyError, ReplyOrIdError};
use x11rb::protocol::xproto::{
    self, ChangeWindowAttributesAux, ConnectionExt as _, CreateGCAux, ImageFormat, ImageOrder, Mapping, VisualClass,
    Window,
};
use x11rb::protocol::{shm, xtest, Event};
use x11rb::reexports::x11rb_protocol::parse_display::ConnectAddress;
use x11rb::rust_connection::{DefaultStream, RustConnection};
use x11rb::CURRENT_TIME;

use crate::a11y::Buses;
use crate::display::DisplayName;
use crate::error::{Error, Result};
use crate::keymap::{Keymap, Plan, Stroke};
use crate::keys::Key;
use crate::programs::Programs;
use crate::screenshot::{encode_png, Frame, PixelFormat, Screenshot};
use crate::xvfb::{Xvfb, COOKIE_PROTOCOL};

/// Intermediate pointer positions between the ends of a drag, so that toolkits see a motion.
const DRAG_STEPS: i64 = 10;

/// A mouse button.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Button {
    /// Button 1.
    Left,
    /// Button 2.
    Middle,
    /// Button 3.
    Right,
}

impl Button {
    /// `left`, `middle` or `right`.
    pub fn parse(name: &str) -> Option<Button> {
        match name {
            "left" => Some(Button::Left),
            "middle" => Some(Button::Middle),
            "right" => Some(Button::Right),
            _ => None,
        }
    }

    /// Its name, as [`Button::parse`] reads it.
    pub fn name(self) -> &'static str {
        match self {
            Button::Left => "left",
            Button::Middle => "middle",
            Button::Right => "right",
        }
    }

    fn number(self) -> u8 {
        match self {
            Button::Left => 1,
            Button::Middle => 2,
            Button::Right => 3,
        }
    }
}

/// Maps an x11rb error to this crate's, naming the display.
pub(crate) trait OnDisplay<T> {
    fn on(self, display: &str) -> Result<T>;
}

impl<T> OnDisplay<T> for std::result::Result<T, ConnectionError> {
    fn on(self, display: &str) -> Result<T> {
        self.map_err(|e| Error::DisplayGone { display: display.to_owned(), reason: e.to_string() })
    }
}

impl<T> OnDisplay<T> for std::result::Result<T, ReplyOrIdError> {
    fn on(self, display: &str) -> Result<T> {
        self.map_err(|e| match e {
            ReplyOrIdError::X11Error(e) => Error::Request { display: display.to_owned(), reason: format!("{e:?}") },
            other => Error::DisplayGone { display: display.to_owned(), reason: other.to_string() },
        })
    }
}

impl<T> OnDisplay<T> for std::result::Result<T, ReplyError> {
    fn on(self, display: &str) -> Result<T> {
        self.map_err(|e| match e {
            ReplyError::ConnectionError(e) => Error::DisplayGone { display: display.to_owned(), reason: e.to_string() },
            ReplyError::X11Error(e) => Error::Request { display: display.to_owned(), reason: format!("{e:?}") },
        })
    }
}

/// A System V shared memory segment attached to us and to the X server.
struct ShmSegment {
    seg: shm::Seg,
    addr: *mut u8,
    len: usize,
}

// SAFETY: the segment is plain memory owned by this value; it is only read through `&mut Desktop`
// after a GetImage reply, so moving it to another thread is sound.
unsafe impl Send for ShmSegment {}

impl ShmSegment {
    /// Makes a segment of `len` bytes and attaches the server to it; `None` if the server cannot
    /// share memory with us (another host, another IPC namespace).
    fn attach(conn: &RustConnection, len: usize) -> Option<ShmSegment> {
        conn.extension_information(shm::X11_EXTENSION_NAME).ok()??;
        // SAFETY: plain syscalls; every failure is checked and undone below.
        unsafe {
            let id = libc::shmget(libc::IPC_PRIVATE, len, libc::IPC_CREAT | 0o600);
            if id < 0 {
                return None;
            }
            let addr = libc::shmat(id, std::ptr::null(), 0);
            let attached = addr as isize != -1;
            let seg = conn.generate_id().ok();
            let server_attached = attached
                && seg.is_some_and(|seg| {
                    shm::attach(conn, seg, id as u32, false).ok().and_then(|c| c.check().ok()).is_some()
                });
            // Marked for removal now: it goes away when both sides have detached, even on a crash.
            libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut());
            match (server_attached, seg) {
                (true, Some(seg)) => Some(ShmSegment { seg, addr: addr.cast(), len }),
                _ => {
                    if attached {
                        libc::shmdt(addr);
                    }
                    None
                }
            }
        }
    }

    fn bytes(&self, len: usize) -> &[u8] {
        // SAFETY: `addr` is a live mapping of `self.len` bytes while `self` exists; the server
        // writes to it only while we wait for a GetImage reply, never while this borrow lives.
        unsafe { std::slice::from_raw_parts(self.addr, len.min(self.len)) }
    }
}

impl Drop for ShmSegment {
    fn drop(&mut self) {
        // SAFETY: `addr` came from shmat and is detached exactly once.
        unsafe { libc::shmdt(self.addr.cast()) };
    }
}

/// How the screen's pixels reach us.
enum Capture {
    /// MIT-SHM: the server writes into memory we share.
    Shared(ShmSegment),
    /// Core GetImage: the pixels come over the socket.
    Socket(Vec<u8>),
}

/// An X11 desktop you can see and drive. See the module documentation.
pub struct Desktop {
    pub(crate) conn: RustConnection,
    pub(crate) display: String,
    pub(crate) root: Window,
    width: u16,
    height: u16,
    depth: u8,
    format: PixelFormat,
    capture: Capture,
    keymap: Keymap,
    /// Keys held down by [`Desktop::key_down`], by keysym, to release the same keycode.
    held_keys: HashMap<u32, Stroke>,
    /// Buttons held down by [`Desktop::mouse_down`].
    held_buttons: Vec<Button>,
    /// Reused RGB buffer of [`Desktop::screenshot`].
    rgb: Vec<u8>,
    /// What runs on the desktop: killed before the buses and the server stop.
    pub(crate) programs: Option<Programs>,
    /// The desktop's D-Bus session and accessibility buses, when started with them.
    pub(crate) buses: Option<Buses>,
    /// Dropped after the connection is closed.
    server: Option<Xvfb>,
}

impl std::fmt::Debug for Desktop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Desktop")
            .field("display", &self.display)
            .field("size", &(self.width, self.height))
            .field("shared_memory", &matches!(self.capture, Capture::Shared(_)))
            .field("server_pid", &self.server_pid())
            .finish()
    }
}

impl Desktop {
    /// Starts a private Xvfb of `width`×`height` at `depth` bits (16 or 24) and opens it.
    pub fn start(width: u32, height: u32, depth: u8) -> Result<Desktop> {
        if !(1..=8192).contains(&width) || !(1..=8192).contains(&height) {
            return Err(Error::Start(format!("screen size {width}x{height} is outside 1..=8192")));
        }
        if !matches!(depth, 16 | 24) {
            return Err(Error::Start(format!("depth {depth} is not 16 or 24")));
        }
        let server = Xvfb::start(width, height, depth)?;
        let display = server.display().to_owned();
        Desktop::open(display, Some(server))
    }

    /// Opens an existing display (`":99"`), which is left running when the desktop closes. The
    /// private display of another desktop of this process is refused before anything connects.
    pub fn attach(display: &str) -> Result<Desktop> {
        let refused = |reason: &str| Error::Connect { display: display.to_owned(), reason: reason.to_owned() };
        let name = DisplayName::parse(display).ok_or_else(|| refused("not an X display name"))?;
        if name.is_private() {
            return Err(refused("it is the private desktop of another session"));
        }
        Desktop::open(display.to_owned(), None)
    }

    fn open(display: String, server: Option<Xvfb>) -> Result<Desktop> {
        let refused = |reason: String| Error::Connect { display: display.clone(), reason };
        let (conn, screen_num) = match &server {
            // Our own server: its socket, its cookie.
            Some(xvfb) => {
                let socket = ConnectAddress::Socket(format!("/tmp/.X11-unix/X{}", xvfb.number()));
                let (stream, _) = DefaultStream::connect(&socket).map_err(|e| refused(e.to_string()))?;
                let conn = RustConnection::connect_to_stream_with_auth_info(
                    stream,
                    0,
                    COOKIE_PROTOCOL.to_vec(),
                    xvfb.cookie().to_vec(),
                )
                .map_err(|e| refused(e.to_string()))?;
                (conn, 0)
            }
            None => RustConnection::connect(Some(&display)).map_err(|e| refused(e.to_string()))?,
        };
        if conn.extension_information(xtest::X11_EXTENSION_NAME).on(&display)?.is_none() {
            return Err(refused("the server has no XTEST extension".into()));
        }
        let setup = conn.setup();
        let screen = setup.roots.get(screen_num).ok_or_else(|| refused(format!("no screen {screen_num}")))?;
        let visual = screen
            .allowed_depths
            .iter()
            .flat_map(|d| &d.visuals)
            .find(|v| v.visual_id == screen.root_visual)
            .ok_or_else(|| refused("the root visual is not listed".into()))?;
        if !matches!(visual.class, VisualClass::TRUE_COLOR | VisualClass::DIRECT_COLOR) {
            return Err(Error::Unsupported(format!("root visual class {:?}", visual.class)));
        }
        let pixmap = setup
            .pixmap_formats
            .iter()
            .find(|f| f.depth == screen.root_depth)
            .ok_or_else(|| refused(format!("no pixmap format for depth {}", screen.root_depth)))?;
        if !matches!(pixmap.bits_per_pixel, 16 | 32) {
            return Err(Error::Unsupported(format!("{} bits per pixel", pixmap.bits_per_pixel)));
        }
        let (width, height) = (screen.width_in_pixels, screen.height_in_pixels);
        let mut format = PixelFormat {
            bits_per_pixel: pixmap.bits_per_pixel,
            stride: 0,
            scanline_pad: usize::from(pixmap.scanline_pad),
            big_endian: setup.image_byte_order == ImageOrder::MSB_FIRST,
            red_mask: visual.red_mask,
            green_mask: visual.green_mask,
            blue_mask: visual.blue_mask,
        };
        format.stride = format.stride_for(usize::from(width));
        let (root, depth) = (screen.root, screen.root_depth);
        let len = format.stride * usize::from(height);
        let capture = match ShmSegment::attach(&conn, len) {
            Some(segment) => Capture::Shared(segment),
            None => Capture::Socket(Vec::new()),
        };
        let mut desktop = Desktop {
            conn,
            display,
            root,
            width,
            height,
            depth,
            format,
            capture,
            keymap: Keymap::default(),
            held_keys: HashMap::new(),
            held_buttons: Vec::new(),
            rgb: Vec::new(),
            programs: None,
            buses: None,
            server,
        };
        desktop.read_keymap()?;
        Ok(desktop)
    }

    /// The display, e.g. `:3`; with [`Desktop::xauthority`], other X clients can open it.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// The Xauthority file holding the private server's cookie (`XAUTHORITY=<file>
    /// DISPLAY=<display>` lets another X client on it), or `None` when attached. It is removed
    /// when the desktop closes.
    pub fn xauthority(&self) -> Option<&Path> {
        self.server.as_ref().and_then(Xvfb::xauthority)
    }

    /// The screen's size in pixels.
    pub fn size(&self) -> (u32, u32) {
        (u32::from(self.width), u32::from(self.height))
    }

    /// The root window's depth.
    pub fn depth(&self) -> u8 {
        self.depth
    }

    /// The process id of the private Xvfb, or `None` when attached to someone else's display.
    pub fn server_pid(&self) -> Option<u32> {
        self.server.as_ref().map(Xvfb::pid)
    }

    /// Whether capture goes through MIT-SHM (else through the socket).
    pub fn shared_memory(&self) -> bool {
        matches!(self.capture, Capture::Shared(_))
    }

    /// Captures over the socket from now on, as with a server that cannot share memory.
    #[cfg(test)]
    pub(crate) fn use_socket_capture(&mut self) {
        if let Capture::Shared(segment) = &self.capture {
            let _ = shm::detach(&self.conn, segment.seg);
        }
        self.capture = Capture::Socket(Vec::new());
    }

    /// Checks that `(x, y)` is on the screen.
    pub fn check_point(&self, x: i64, y: i64) -> Result<(i16, i16)> {
        let (w, h) = self.size();
        if x < 0 || y < 0 || x >= i64::from(w) || y >= i64::from(h) {
            return Err(Error::OutOfScreen { x, y, width: w, height: h });
        }
        Ok((x as i16, y as i16))
    }

    // ---- seeing ------------------------------------------------------------------------------

    /// Grabs the whole screen in the server's pixel layout.
    pub fn capture(&mut self) -> Result<Frame<'_>> {
        self.guard(Desktop::grab)?;
        let len = self.format.stride * usize::from(self.height);
        let data: &[u8] = match &self.capture {
            Capture::Shared(segment) => segment.bytes(len),
            Capture::Socket(buffer) => buffer,
        };
        if data.len() < len {
            return Err(Error::Request { display: self.display.clone(), reason: "the image is short".into() });
        }
        Ok(Frame { width: u32::from(self.width), height: u32::from(self.height), format: self.format, data })
    }

    /// Grabs the screen and encodes it as PNG.
    pub fn screenshot(&mut self) -> Result<Screenshot> {
        let mut rgb = std::mem::take(&mut self.rgb);
        let (width, height) = {
            let frame = self.capture()?;
            frame.to_rgb(&mut rgb);
            (frame.width, frame.height)
        };
        let png = encode_png(&rgb, width, height);
        self.rgb = rgb;
        Ok(Screenshot { width, height, png: png? })
    }

    /// Paints `rgb` (packed, `width`×`height`, at most the screen's size) as the root window's
    /// background from the top-left corner, as `xsetroot` does with a bitmap: screenshots and X
    /// clients see it, windows stay above it. For tests and benches that need known pixels.
    pub fn set_wallpaper(&mut self, rgb: &[u8], width: u32, height: u32) -> Result<()> {
        let (sw, sh) = self.size();
        if width == 0 || height == 0 || width > sw || height > sh {
            return Err(Error::Image(format!("{width}x{height} does not fit on the {sw}x{sh} screen")));
        }
        if rgb.len() != width as usize * height as usize * 3 {
            return Err(Error::Image(format!("{} bytes are not {width}x{height} RGB", rgb.len())));
        }
        let pixels = self.format.encode_rgb(rgb, width as usize);
        let stride = self.format.stride_for(width as usize);
        self.guard(|d| {
            d.drain_events()?;
            let (w, h) = (width as u16, height as u16);
            let pixmap = d.conn.generate_id().on(&d.display)?;
            d.conn.create_pixmap(d.depth, pixmap, d.root, w, h).on(&d.display)?;
            let gc = d.conn.generate_id().on(&d.display)?;
            d.conn.create_gc(gc, pixmap, &CreateGCAux::new()).on(&d.display)?;
            // Bands well under the core protocol's 256 KB request limit.
            let rows = (200_000 / stride).max(1);
            for (i, band) in pixels.chunks(rows * stride).enumerate() {
                let y = (i * rows) as i16;
                let z = ImageFormat::Z_PIXMAP;
                d.conn
                    .put_image(z, pixmap, gc, w, (band.len() / stride) as u16, 0, y, 0, d.depth, band)
                    .on(&d.display)?;
            }
            let background = ChangeWindowAttributesAux::new().background_pixmap(pixmap);
            d.conn.change_window_attributes(d.root, &background).on(&d.display)?;
            d.conn.clear_area(false, d.root, 0, 0, 0, 0).on(&d.display)?;
            d.conn.free_gc(gc).on(&d.display)?;
            d.conn.free_pixmap(pixmap).on(&d.display)?;
            d.sync()
        })
    }

    /// Where the pointer is.
    pub fn pointer(&mut self) -> Result<(i32, i32)> {
        self.guard(|d| {
            let reply = d.conn.query_pointer(d.root).on(&d.display)?.reply().on(&d.display)?;
            Ok((i32::from(reply.root_x), i32::from(reply.root_y)))
        })
    }

    // ---- the mouse ---------------------------------------------------------------------------

    /// Moves the pointer to `(x, y)`.
    pub fn move_to(&mut self, x: i64, y: i64) -> Result<()> {
        let (x, y) = self.check_point(x, y)?;
        self.guard(|d| {
            d.drain_events()?;
            d.motion(x, y)?;
            d.sync()
        })
    }

    /// Clicks `button` `clicks` times at `(x, y)`, or where the pointer is when `at` is `None`.
    pub fn click(&mut self, at: Option<(i64, i64)>, button: Button, clicks: u32) -> Result<()> {
        let at = at.map(|(x, y)| self.check_point(x, y)).transpose()?;
        self.guard(|d| {
            d.drain_events()?;
            if let Some((x, y)) = at {
                d.motion(x, y)?;
            }
            for _ in 0..clicks {
                d.button(true, button.number())?;
                d.button(false, button.number())?;
            }
            d.sync()
        })
    }

    /// Presses `button` where the pointer is, and keeps it down.
    pub fn mouse_down(&mut self, button: Button) -> Result<()> {
        self.guard(|d| {
            d.drain_events()?;
            d.button(true, button.number())?;
            if !d.held_buttons.contains(&button) {
                d.held_buttons.push(button);
            }
            d.sync()
        })
    }

    /// Releases `button` where the pointer is.
    pub fn mouse_up(&mut self, button: Button) -> Result<()> {
        self.guard(|d| {
            d.drain_events()?;
            d.button(false, button.number())?;
            d.held_buttons.retain(|&b| b != button);
            d.sync()
        })
    }

    /// Drags with the left button from `from` to `to`, through intermediate positions.
    pub fn drag(&mut self, from: (i64, i64), to: (i64, i64)) -> Result<()> {
        let (x0, y0) = self.check_point(from.0, from.1)?;
        let (x1, y1) = self.check_point(to.0, to.1)?;
        self.guard(|d| {
            d.drain_events()?;
            d.motion(x0, y0)?;
            d.button(true, 1)?;
            for i in 1..=DRAG_STEPS {
                let lerp = |a: i16, b: i16| (i64::from(a) + (i64::from(b) - i64::from(a)) * i / DRAG_STEPS) as i16;
                d.motion(lerp(x0, x1), lerp(y0, y1))?;
            }
            d.button(false, 1)?;
            d.sync()
        })
    }

    /// Scrolls where the pointer is: `vertical` clicks up (positive, button 4) or down (button 5),
    /// `horizontal` clicks right (positive, button 7) or left (button 6).
    pub fn scroll(&mut self, vertical: i32, horizontal: i32) -> Result<()> {
        self.guard(|d| {
            d.drain_events()?;
            for (clicks, positive, negative) in [(vertical, 4, 5), (horizontal, 7, 6)] {
                let button = if clicks > 0 { positive } else { negative };
                for _ in 0..clicks.unsigned_abs() {
                    d.button(true, button)?;
                    d.button(false, button)?;
                }
            }
            d.sync()
        })
    }

    // ---- the keyboard ------------------------------------------------------------------------

    /// Presses and releases `key` (with Shift if its keysym is on the shifted level).
    pub fn key(&mut self, key: Key) -> Result<()> {
        self.hotkey(&[key])
    }

    /// Presses `key` and keeps it down.
    pub fn key_down(&mut self, key: Key) -> Result<()> {
        self.guard(|d| {
            d.drain_events()?;
            let stroke = d.stroke(key.keysym())?;
            d.press(stroke, true)?;
            d.held_keys.insert(key.keysym(), stroke);
            d.keymap.hold(stroke.keycode, true);
            d.sync()
        })
    }

    /// Releases `key`.
    pub fn key_up(&mut self, key: Key) -> Result<()> {
        self.guard(|d| {
            d.drain_events()?;
            let stroke = match d.held_keys.remove(&key.keysym()) {
                Some(stroke) => stroke,
                None => d.stroke(key.keysym())?,
            };
            d.press(stroke, false)?;
            d.keymap.hold(stroke.keycode, false);
            d.sync()
        })
    }

    /// Presses `keys` in order, then releases them in reverse order (`ctrl`, `shift`, `t`).
    pub fn hotkey(&mut self, keys: &[Key]) -> Result<()> {
        self.guard(|d| {
            d.drain_events()?;
            let mut strokes = Vec::with_capacity(keys.len());
            for key in keys {
                let stroke = d.stroke(key.keysym())?;
                d.press(stroke, true)?;
                strokes.push(stroke);
            }
            for stroke in strokes.into_iter().rev() {
                d.press(stroke, false)?;
            }
            d.sync()
        })
    }

    /// Types `text`, any Unicode: each character is pressed on its key, or on a spare keycode
    /// bound to it when the keymap lacks it (see `keymap.rs`). `\n`, and `\r\n` as one, press
    /// Enter; `\t` Tab.
    pub fn type_text(&mut self, text: &str) -> Result<()> {
        self.type_text_until(text, None).map(|_| ())
    }

    /// Like [`Desktop::type_text`], but stops before the next character once `deadline` has
    /// passed, and returns how many characters were typed.
    pub fn type_text_until(&mut self, text: &str, deadline: Option<Instant>) -> Result<usize> {
        self.guard(|d| {
            d.drain_events()?;
            let mut typed = 0;
            let mut chars = text.chars().peekable();
            while let Some(c) = chars.next() {
                if deadline.is_some_and(|t| Instant::now() >= t) {
                    break;
                }
                typed += 1;
                if c == '\r' && chars.peek() == Some(&'\n') {
                    continue;
                }
                let stroke = d.stroke(Key::from_char(c).keysym())?;
                d.press(stroke, true)?;
                d.press(stroke, false)?;
            }
            d.sync()?;
            Ok(typed)
        })
    }

    // ---- internals ---------------------------------------------------------------------------

    /// Has the server copy the screen into the capture buffer.
    fn grab(&mut self) -> Result<()> {
        self.drain_events()?;
        let (w, h, root, display) = (self.width, self.height, self.root, &self.display);
        match &mut self.capture {
            Capture::Shared(segment) => {
                let z = ImageFormat::Z_PIXMAP.into();
                shm::get_image(&self.conn, root, 0, 0, w, h, !0, z, segment.seg, 0).on(display)?.reply().on(display)?;
            }
            Capture::Socket(buffer) => {
                *buffer = self
                    .conn
                    .get_image(ImageFormat::Z_PIXMAP, root, 0, 0, w, h, !0)
                    .on(display)?
                    .reply()
                    .on(display)?
                    .data;
            }
        }
        Ok(())
    }

    /// Runs `op`, and explains a broken connection by the private server's exit when it has one.
    fn guard<T>(&mut self, op: impl FnOnce(&mut Desktop) -> Result<T>) -> Result<T> {
        op(self).map_err(|e| self.explain(e))
    }

    fn explain(&mut self, e: Error) -> Error {
        if let Error::DisplayGone { display, reason } = e {
            // The socket closes a moment before the dying server can be reaped: wait for it.
            let deadline = Instant::now() + std::time::Duration::from_millis(500);
            let mut exited = None;
            while let Some(server) = self.server.as_mut() {
                exited = server.exit_status();
                if exited.is_some() || Instant::now() >= deadline {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            let reason = match (exited, &self.server) {
                (Some(status), Some(server)) => {
                    let said = server.stderr_tail();
                    if said.is_empty() {
                        format!("Xvfb {status}")
                    } else {
                        format!("Xvfb {status}: {said}")
                    }
                }
                _ => reason,
            };
            return Error::DisplayGone { display, reason };
        }
        e
    }

    /// Waits until the server has handled every request sent so far (and so delivered the
    /// events XTEST made).
    fn sync(&self) -> Result<()> {
        self.conn.get_input_focus().on(&self.display)?.reply().on(&self.display)?;
        Ok(())
    }

    fn motion(&self, x: i16, y: i16) -> Result<()> {
        xtest::fake_input(&self.conn, xproto::MOTION_NOTIFY_EVENT, 0, CURRENT_TIME, self.root, x, y, 0)
            .on(&self.display)?;
        Ok(())
    }

    fn button(&self, press: bool, button: u8) -> Result<()> {
        let kind = if press { xproto::BUTTON_PRESS_EVENT } else { xproto::BUTTON_RELEASE_EVENT };
        xtest::fake_input(&self.conn, kind, button, CURRENT_TIME, x11rb::NONE, 0, 0, 0).on(&self.display)?;
        Ok(())
    }

    fn keycode(&self, press: bool, keycode: u8) -> Result<()> {
        let kind = if press { xproto::KEY_PRESS_EVENT } else { xproto::KEY_RELEASE_EVENT };
        xtest::fake_input(&self.conn, kind, keycode, CURRENT_TIME, x11rb::NONE, 0, 0, 0).on(&self.display)?;
        Ok(())
    }

    /// Presses (or releases) a stroke, with Shift around it when it needs it.
    fn press(&self, stroke: Stroke, down: bool) -> Result<()> {
        let shift = if stroke.shift { self.keymap.shift() } else { None };
        match (shift, down) {
            (Some(shift), true) => {
                self.keycode(true, shift)?;
                self.keycode(true, stroke.keycode)
            }
            (Some(shift), false) => {
                self.keycode(false, stroke.keycode)?;
                self.keycode(false, shift)
            }
            (None, down) => self.keycode(down, stroke.keycode),
        }
    }

    /// The keycode that types `keysym`, binding a spare one if the map lacks it.
    fn stroke(&mut self, keysym: u32) -> Result<Stroke> {
        match self.keymap.plan(keysym, Instant::now()) {
            Plan::Ready(stroke) => Ok(stroke),
            Plan::Bind(binding) => {
                if !binding.wait.is_zero() {
                    self.conn.flush().on(&self.display)?;
                    std::thread::sleep(binding.wait);
                }
                self.conn.change_keyboard_mapping(1, binding.keycode, 2, &[keysym, keysym]).on(&self.display)?;
                self.keymap.bound(binding, Instant::now());
                Ok(Stroke { keycode: binding.keycode, shift: false })
            }
            Plan::NoSpare => Err(Error::NoSpareKeycode { display: self.display.clone(), keysym }),
        }
    }

    /// Reads the server's keyboard mapping.
    fn read_keymap(&mut self) -> Result<()> {
        let (min, max) = (self.conn.setup().min_keycode, self.conn.setup().max_keycode);
        let reply = self.conn.get_keyboard_mapping(min, max - min + 1).on(&self.display)?.reply().on(&self.display)?;
        self.keymap.update(min, reply.keysyms_per_keycode, &reply.keysyms);
        Ok(())
    }

    /// Handles what the server sent unasked: a keymap changed by another client is read again;
    /// errors of requests with no reply are dropped (the next round trip reports a dead server).
    fn drain_events(&mut self) -> Result<()> {
        let mut stale = false;
        while let Some(event) = self.conn.poll_for_event().on(&self.display)? {
            if let Event::MappingNotify(n) = event {
                if n.request == Mapping::KEYBOARD && !self.keymap.is_own_change(n.first_keycode, n.count) {
                    stale = true;
                }
            }
        }
        if stale {
            self.read_keymap()?;
        }
        Ok(())
    }

    /// Leaves an attached display as it was found: releases what is held, undoes bindings.
    fn restore(&mut self) -> Result<()> {
        for stroke in std::mem::take(&mut self.held_keys).into_values() {
            self.press(stroke, false)?;
        }
        for button in std::mem::take(&mut self.held_buttons) {
            self.button(false, button.number())?;
        }
        for keycode in self.keymap.take_bindings() {
            self.conn.change_keyboard_mapping(1, keycode, 2, &[0, 0]).on(&self.display)?;
        }
        if let Capture::Shared(segment) = &self.capture {
            shm::detach(&self.conn, segment.seg).on(&self.display)?;
        }
        self.sync()
    }
}

impl Drop for Desktop {
    fn drop(&mut self) {
        // Programs first (they hold the buses and the display), then the buses.
        drop(self.programs.take());
        drop(self.buses.take());
        // A private server is about to be stopped; only an attached display needs tidying.
        if self.server.is_none() {
            let _ = self.restore();
        }
    }
}
