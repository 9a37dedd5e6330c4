//! The crate's one error type. Mapping it to wire codes is left to the engine's adapter
//! (`src/backends/vm.rs`): a bad key or coordinate is the caller's mistake, the rest are the
//! display's.

/// What went wrong with a desktop.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Xvfb could not be started, or did not become ready.
    #[error("cannot start Xvfb: {0}")]
    Start(String),
    /// The display could not be opened, or lacks what a desktop needs (XTEST).
    #[error("cannot use display {display}: {reason}")]
    Connect {
        /// The display, e.g. `:99`.
        display: String,
        /// Why.
        reason: String,
    },
    /// The connection to the display broke: the X server exited or was killed.
    #[error("display {display} is gone: {reason}")]
    DisplayGone {
        /// The display, e.g. `:99`.
        display: String,
        /// What the connection or the server process said.
        reason: String,
    },
    /// The X server refused a request.
    #[error("display {display} refused a request: {reason}")]
    Request {
        /// The display.
        display: String,
        /// The X error.
        reason: String,
    },
    /// A key name that is neither a pyautogui key name nor a single character.
    #[error("unknown key name '{0}'")]
    UnknownKey(String),
    /// A point outside the screen.
    #[error("({x}, {y}) is outside the {width}x{height} screen")]
    OutOfScreen {
        /// Column asked for.
        x: i64,
        /// Row asked for.
        y: i64,
        /// Screen width.
        width: u32,
        /// Screen height.
        height: u32,
    },
    /// Every keycode is in use, so a keysym missing from the keymap cannot be typed.
    #[error("no spare keycode on display {display} to type {keysym:#x}")]
    NoSpareKeycode {
        /// The display.
        display: String,
        /// The keysym that could not be bound.
        keysym: u32,
    },
    /// The screen's pixel format is not one this crate reads.
    #[error("unsupported screen format: {0}")]
    Unsupported(String),
    /// An image given to draw does not match its stated size, or does not fit on the screen.
    #[error("invalid image: {0}")]
    Image(String),
    /// A program could not be started on the desktop, or ended before it did what was waited
    /// for.
    #[error("cannot launch: {0}")]
    Launch(String),
    /// The desktop's accessibility buses could not be started or read.
    #[error("accessibility: {0}")]
    Accessibility(String),
    /// PNG encoding failed.
    #[error("cannot encode the screenshot: {0}")]
    Encode(String),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
