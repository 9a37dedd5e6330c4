//! A desktop's own buses: a D-Bus session bus and an AT-SPI accessibility bus, started with its
//! Xvfb and stopped with it, so that the programs on one desktop are seen by its accessibility
//! tree ([`crate::Accessibility`]) and by nobody else's.
//!
//! Both live in the desktop's private directory (mode 0700, removed with the desktop), which is
//! the programs' `XDG_RUNTIME_DIR`: the session bus listens on `<dir>/bus`, and AT-SPI's bus
//! launcher (`at-spi-bus-launcher`, Debian `at-spi2-core`), started on that session bus, puts
//! the accessibility bus at `<dir>/at-spi/bus_<display>` and registers `org.a11y.Bus` on the
//! session bus. The registry daemon is started by D-Bus activation when the first application
//! registers. Every process involved is started through [`Programs`], so it carries the
//! desktop's mark and dies with the desktop's programs.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::programs::Programs;

/// How long a bus may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Where Debian and others install the bus launcher.
const LAUNCHERS: &[&str] =
    &["/usr/libexec/at-spi-bus-launcher", "/usr/lib/at-spi2-core/at-spi-bus-launcher", "/usr/lib/at-spi-bus-launcher"];
/// What to tell whoever asks for accessibility on a machine without the buses.
pub const A11Y_INSTALL_HINT: &str =
    "the accessibility buses need dbus and at-spi2-core: apt-get install dbus-daemon at-spi2-core";

/// A desktop's buses: see the module documentation.
#[derive(Debug)]
pub(crate) struct Buses {
    accessibility: String,
}

impl Buses {
    /// Starts the session bus and the accessibility bus for the desktop `display` (`:3`), as
    /// programs of `programs`, waits until both accept connections, and gives every program
    /// started from then on their addresses.
    pub(crate) fn start(programs: &mut Programs, display: &str) -> Result<Buses> {
        let launcher = LAUNCHERS
            .iter()
            .map(Path::new)
            .find(|p| p.is_file())
            .ok_or_else(|| Error::Accessibility(A11Y_INSTALL_HINT.into()))?;
        let dir = programs.dir().to_owned();
        let number = display.trim_start_matches(':').split('.').next().unwrap_or_default();
        let a11y_socket = dir.join("at-spi").join(format!("bus_{number}"));
        let session = format!("unix:path={}", dir.join("bus").display());
        let accessibility = format!("unix:path={}", a11y_socket.display());

        let mut daemon = programs.command("dbus-daemon");
        daemon.args(["--session", "--nofork", "--nopidfile", "--nosyslog"]).arg(format!("--address={session}"));
        let pid = programs.spawn(daemon).map_err(|_| Error::Accessibility(A11Y_INSTALL_HINT.into()))?;
        wait_for_socket(&dir.join("bus"), programs, pid, "dbus-daemon")?;

        // From here on, every program (the launcher first) is on the desktop's session bus.
        programs.set("DBUS_SESSION_BUS_ADDRESS", &session);
        let mut bus_launcher = programs.command(&launcher.to_string_lossy());
        bus_launcher.arg("--launch-immediately");
        let pid = programs.spawn(bus_launcher)?;
        wait_for_socket(&a11y_socket, programs, pid, "at-spi-bus-launcher")?;

        // Programs find the accessibility bus directly, and the toolkits that need to be told
        // turn accessibility on (Qt; GTK loads its bridge by itself).
        programs.set("AT_SPI_BUS_ADDRESS", &accessibility);
        programs.set("GTK_MODULES", "gail:atk-bridge");
        programs.set("QT_LINUX_ACCESSIBILITY_ALWAYS_ON", "1");
        programs.set("QT_ACCESSIBILITY", "1");
        programs.set("ACCESSIBILITY_ENABLED", "1");
        // No dconf daemon runs here: settings live in memory, without warnings.
        programs.set("GSETTINGS_BACKEND", "memory");
        Ok(Buses { accessibility })
    }

    /// The accessibility bus's address.
    pub(crate) fn accessibility(&self) -> &str {
        &self.accessibility
    }
}

/// Waits until something listens on `socket`, or the program `pid` that should have made it
/// exits, or [`READY_TIMEOUT`] passes.
fn wait_for_socket(socket: &Path, programs: &mut Programs, pid: u32, name: &str) -> Result<()> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let mut pause = Duration::from_micros(500);
    loop {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            return Ok(());
        }
        if let Some((status, said)) = programs.ended(pid) {
            return Err(Error::Accessibility(format!("{name} exited ({status}): {said}")));
        }
        if Instant::now() >= deadline {
            return Err(Error::Accessibility(format!(
                "{name} did not listen on {} in {READY_TIMEOUT:?}",
                socket.display()
            )));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(10));
    }
}
