//! # agentflow-vm
//!
//! An X11 desktop you can see and drive, in-process: a [`Desktop`] starts its own Xvfb (or
//! attaches to a running display), takes screenshots over MIT-SHM, encodes them as PNG, and moves
//! the mouse and types through XTEST, with no helper process per action. A private Xvfb admits
//! only clients holding its cookie ([`Desktop::xauthority`]). Started with [`DesktopOptions`],
//! it also runs programs (a window manager, start-up commands, [`Desktop::launch`]) and a D-Bus
//! session bus and AT-SPI bus of its own, whose [`Accessibility`] tree is read in bulk and written
//! as OSWorld's XML. It knows nothing of sessions or JSON; the [`Desktop`] blocks (callers keep it
//! off async worker threads), the tree is read on tokio. The engine's `vm` adapter
//! (`src/backends/vm.rs` in the root crate) maps tools onto it.
//!
//! | module | owns |
//! |---|---|
//! | `desktop` | the connection, capture, input, and the desktop's lifetime |
//! | `xvfb` | the private Xvfb process: a race-free display number, its cookie, stop and reap |
//! | `display` | display strings: which display a name reaches, whether it is a private one |
//! | `keys` | pyautogui key names and characters to X keysyms |
//! | `keymap` | keycodes for keysyms, spare keycodes for what the keymap lacks |
//! | `screenshot` | pixel formats to RGB, PNG encoding |
//! | `programs` | what runs on a desktop: its environment, its mark, the sweep that ends it |
//! | `apps` | [`DesktopOptions`], launching, the window manager, finding a program's window |
//! | `a11y` | the desktop's session bus and accessibility bus |
//! | `tree` | [`Accessibility`]: the accessibility tree, read and written as XML |
//!
//! ```no_run
//! use agentflow_vm::{Button, Desktop, Key};
//!
//! let mut desktop = Desktop::start(1280, 800, 24)?; // a private Xvfb on a free display
//! desktop.click(Some((640, 400)), Button::Left, 1)?;
//! desktop.type_text("héllo wörld — 你好 ✓")?; // characters the keymap lacks too
//! desktop.hotkey(&[Key::parse("ctrl")?, Key::parse("s")?])?;
//! let shot = desktop.screenshot()?;
//! std::fs::write("screen.png", &shot.png).unwrap();
//! drop(desktop); // stops that Xvfb
//! # Ok::<(), agentflow_vm::Error>(())
//! ```

mod a11y;
mod apps;
mod desktop;
mod display;
mod error;
mod keymap;
mod keys;
mod programs;
mod screenshot;
mod tree;
mod xvfb;

#[cfg(test)]
mod tests;

pub use a11y::A11Y_INSTALL_HINT;
pub use apps::{DesktopOptions, WindowInfo, WindowManager};
pub use desktop::{Button, Desktop};
pub use display::DisplayName;
pub use error::{Error, Result};
pub use keys::Key;
pub use screenshot::{choose, encode_png, encode_png_with, Compression, Frame, Screenshot, SCREENSHOT_COMPRESSION};
pub use tree::{Accessibility, Tree, TreeOptions, MAX_CHILDREN, MAX_DEPTH, NAMESPACES};
pub use xvfb::StartGuard;
