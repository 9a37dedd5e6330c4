//! Display names: what an X display string (`":99"`, `":99.0"`, `"host:1"`, `"/tmp/.X11-unix/X5"`)
//! addresses, read without connecting to anything.
//!
//! Two names are the same display when they reach the same server the same way (host, protocol,
//! display number); the screen does not matter. A name is *private* when it reaches an Xvfb this
//! process started ([`Desktop::start`](crate::Desktop::start)) over the local socket: through an
//! empty, loopback or `unix` host, or a socket path that resolves to that server's socket. The
//! engine refuses to attach a session to a private display, whatever its operator allows.

use std::path::Path;

use x11rb::reexports::x11rb_protocol::parse_display::{parse_display_with_file_exists_callback, ParsedDisplay};

use crate::xvfb::started_here;

/// Where X servers' local sockets live.
const SOCKET_DIR: &str = "/tmp/.X11-unix";

/// A parsed X display string. See the module documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName {
    host: String,
    protocol: Option<String>,
    number: u16,
}

impl DisplayName {
    /// Reads `name`; `None` if it is not an X display string. Only a socket path form looks at
    /// the file system (whether the path exists), as Xlib does; nothing is connected to.
    pub fn parse(name: &str) -> Option<DisplayName> {
        let ParsedDisplay { host, protocol, display, .. } =
            parse_display_with_file_exists_callback(name, |p| Path::new(p).exists()).ok()?;
        Some(DisplayName { host, protocol, number: display })
    }

    /// Whether this names a display served by an Xvfb this process started and still runs.
    pub fn is_private(&self) -> bool {
        if self.protocol.as_deref() == Some("unix") && self.host.starts_with('/') {
            // A socket path (or a link to one): resolve it and read the number off the socket.
            let Ok(real) = std::fs::canonicalize(&self.host) else { return false };
            return real.parent() == Some(Path::new(SOCKET_DIR))
                && real
                    .file_name()
                    .and_then(|f| f.to_str()?.strip_prefix('X')?.parse().ok())
                    .is_some_and(started_here);
        }
        let local = matches!(self.host.as_str(), "" | "unix" | "localhost" | "127.0.0.1" | "::1" | "[::1]")
            || self.protocol.as_deref() == Some("unix");
        local && started_here(self.number)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_one_display_compare_equal_whatever_the_screen() {
        let p = |s: &str| DisplayName::parse(s).unwrap_or_else(|| panic!("{s}"));
        assert_eq!(p(":5"), p(":5.1"));
        assert_ne!(p(":5"), p(":6"));
        assert_ne!(p(":5"), p("localhost:5"));
        assert_eq!(p("127.0.0.1:22741"), p("127.0.0.1:22741.0"));
        for bad in ["", "5", ":x", "host:", ":1.x", "unix:5"] {
            assert_eq!(DisplayName::parse(bad), None, "{bad}");
        }
    }
}
