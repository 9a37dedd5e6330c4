//! A private Xvfb server: started on a display number it picks itself, reachable only with its
//! own cookie, stopped with its owner.
//!
//! The display number comes from Xvfb's `-displayfd`: the server binds the first free display
//! and writes its number to a pipe once it accepts connections, so two servers started at once
//! never race for a number and nobody polls for a socket. Stopping is SIGTERM (Xvfb removes its
//! socket and lock file), then SIGKILL after a grace, then a wait, so no zombie and no stale
//! `/tmp/.X*-lock` is left. What runs on the display is left to [`Desktop`](crate::Desktop).
//!
//! Nobody else may use the display: each server gets its own MIT-MAGIC-COOKIE-1 (16 bytes from
//! the kernel's `getrandom`), written to an Xauthority file (mode 0600) in a private directory
//! (mode 0700) given to the server with `-auth`, and listens on no TCP port (`-nolisten tcp`).
//! A client without the cookie is refused at connection setup, whatever its display string. The
//! file and its directory are removed once the server has exited. The displays this process has
//! started and not yet stopped are kept in a process-wide registry, so that attaching to one of
//! them can be refused ([`DisplayName::is_private`](crate::DisplayName::is_private)).

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::error::{Error, Result};

/// How long Xvfb may take to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(15);
/// How long Xvfb may take to exit on SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(2);
/// How much of Xvfb's stderr is kept to explain a failure.
const STDERR_TAIL: usize = 2048;
/// The authorization protocol of the cookie.
pub(crate) const COOKIE_PROTOCOL: &[u8] = b"MIT-MAGIC-COOKIE-1";
/// Xauthority's wildcard address family: the entry matches any host (the number still matters).
const FAMILY_WILD: u16 = 0xffff;

/// The display numbers of the Xvfbs this process runs: added once a server is ready, removed
/// once it has exited.
static STARTED: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// Whether display number `n` is served by an Xvfb this process started and has not stopped.
pub(crate) fn started_here(n: u16) -> bool {
    STARTED.lock().contains(&n)
}

/// A server's cookie and the Xauthority file that holds it, in a directory of its own; both
/// removed on drop.
#[derive(Debug)]
struct Authority {
    dir: PathBuf,
    file: PathBuf,
    cookie: [u8; 16],
}

impl Authority {
    /// A fresh random cookie, in `<tmp>/agentflow-xauth-XXXXXX/Xauthority`. The entry has the
    /// wildcard family and no display number, so clients given the file find it for any display
    /// (the number is not known until the server has picked it).
    fn create() -> Result<Authority> {
        let failed = |what: &str, e: std::io::Error| Error::Start(format!("cannot {what}: {e}"));
        let mut cookie = [0u8; 16];
        // No weaker fallback: a guessable cookie is no protection.
        random_bytes(&mut cookie).map_err(|e| failed("draw a random X cookie", e))?;
        let dir = private_dir("agentflow-xauth").map_err(|e| failed("make a private directory for the X cookie", e))?;
        let auth = Authority { file: dir.join("Xauthority"), dir, cookie };
        let mut entry = Vec::with_capacity(64);
        entry.extend_from_slice(&FAMILY_WILD.to_be_bytes());
        for field in [&b""[..], b"", COOKIE_PROTOCOL, &cookie] {
            entry.extend_from_slice(&(field.len() as u16).to_be_bytes());
            entry.extend_from_slice(field);
        }
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&auth.file)
            .and_then(|mut f| f.write_all(&entry))
            .map_err(|e| failed("write the Xauthority file", e))?;
        Ok(auth)
    }
}

impl Drop for Authority {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Fills `buf` from the kernel's random source (`getrandom`).
pub(crate) fn random_bytes(buf: &mut [u8]) -> std::io::Result<()> {
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: writes into the live remainder of `buf`.
        let n = unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), buf.len() - filled, 0) };
        if n > 0 {
            filled += n as usize;
        } else {
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
    Ok(())
}

/// The last non-empty lines (at most three, from the last `max` bytes) of a log file.
pub(crate) fn file_tail(file: &std::fs::File, max: usize) -> String {
    use std::os::unix::fs::FileExt;
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let from = len.saturating_sub(max as u64);
    let mut tail = vec![0u8; (len - from) as usize];
    let read = file.read_at(&mut tail, from).unwrap_or(0);
    tail.truncate(read);
    let text = String::from_utf8_lossy(&tail);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(3)..].join(" | ")
}

/// A fresh directory `<tmp>/<prefix>-XXXXXX` only this user can enter (mode 0700).
pub(crate) fn private_dir(prefix: &str) -> std::io::Result<PathBuf> {
    let template = std::env::temp_dir().join(format!("{prefix}-XXXXXX"));
    let mut template = std::ffi::CString::new(template.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other("the temporary directory's path holds a NUL byte"))?
        .into_bytes_with_nul();
    // SAFETY: `template` is a NUL-terminated buffer mkdtemp rewrites in place; it makes the
    // directory with mode 0700.
    if unsafe { libc::mkdtemp(template.as_mut_ptr().cast()) }.is_null() {
        return Err(std::io::Error::last_os_error());
    }
    template.pop();
    Ok(PathBuf::from(std::ffi::OsString::from(std::ffi::OsStr::from_bytes(&template))))
}

/// A file with no name in the temporary directory (removed once open): gone with its last
/// descriptor.
pub(crate) fn anonymous_file() -> std::io::Result<std::fs::File> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let path = std::env::temp_dir().join(format!("agentflow-xvfb-{}-{n}.err", std::process::id()));
    let file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(&path)?;
    std::fs::remove_file(&path)?;
    Ok(file)
}

/// A running Xvfb, stopped on [`Xvfb::stop`] or on drop.
#[derive(Debug)]
pub(crate) struct Xvfb {
    child: Child,
    display: String,
    /// The display number, once the server has said it.
    number: Option<u16>,
    /// The cookie and its file; dropped after the server has exited.
    auth: Option<Authority>,
    /// Its stderr: a file of no name (so no thread drains a pipe per desktop), read back only
    /// to explain a failure.
    stderr: std::fs::File,
    stopped: bool,
}

impl Xvfb {
    /// Starts `Xvfb` with one screen of `width`×`height`×`depth` on a free display, accepting
    /// only clients that present its cookie.
    pub(crate) fn start(width: u32, height: u32, depth: u8) -> Result<Xvfb> {
        let auth = Authority::create()?;
        let _serial = StartGuard::acquire();
        let (read_end, write_end) = pipe()?;
        let write_fd = write_end.as_raw_fd();
        let stderr =
            anonymous_file().map_err(|e| Error::Start(format!("cannot make a file for Xvfb's stderr: {e}")))?;
        let mut command = Command::new("Xvfb");
        command
            .arg("-displayfd")
            .arg(write_fd.to_string())
            .arg("-auth")
            .arg(&auth.file)
            .arg("-screen")
            .arg("0")
            .arg(format!("{width}x{height}x{depth}"))
            .args(["-nolisten", "tcp", "-noreset", "+extension", "MIT-SHM", "+extension", "XTEST"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                stderr.try_clone().map_err(|e| Error::Start(format!("cannot keep Xvfb's stderr: {e}")))?,
            ));
        // SAFETY: the closure runs in the child between fork and exec and only calls fcntl, which
        // is async-signal-safe. The pipe is made close-on-exec so that no other child spawned
        // meanwhile inherits it; only this child clears the flag on its own copy.
        unsafe {
            command.pre_exec(move || {
                if libc::fcntl(write_fd, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().map_err(|e| Error::Start(format!("cannot run Xvfb: {e}")))?;
        drop(write_end);

        let mut xvfb = Xvfb { child, display: String::new(), number: None, auth: Some(auth), stderr, stopped: false };
        match read_display_number(read_end, Instant::now() + READY_TIMEOUT) {
            Ok(n) => {
                xvfb.display = format!(":{n}");
                xvfb.number = Some(n);
                STARTED.lock().insert(n);
                Ok(xvfb)
            }
            Err(reason) => {
                let status = xvfb.child.try_wait().ok().flatten();
                xvfb.stop();
                let said = xvfb.stderr_tail();
                let mut message = reason;
                if let Some(status) = status {
                    message.push_str(&format!(" (Xvfb {status})"));
                }
                if !said.is_empty() {
                    message.push_str(&format!(": {said}"));
                }
                Err(Error::Start(message))
            }
        }
    }

    /// The display it serves, e.g. `:3`.
    pub(crate) fn display(&self) -> &str {
        &self.display
    }

    /// The display number.
    pub(crate) fn number(&self) -> u16 {
        self.number.unwrap_or_default()
    }

    /// The cookie a client must present (MIT-MAGIC-COOKIE-1).
    pub(crate) fn cookie(&self) -> &[u8] {
        self.auth.as_ref().map_or(&[], |a| &a.cookie[..])
    }

    /// The Xauthority file holding the cookie, for other X clients (`XAUTHORITY=...`).
    pub(crate) fn xauthority(&self) -> Option<&Path> {
        self.auth.as_ref().map(|a| a.file.as_path())
    }

    /// The server's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How the server ended, if it has.
    pub(crate) fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last lines Xvfb printed, for error messages.
    pub(crate) fn stderr_tail(&self) -> String {
        file_tail(&self.stderr, STDERR_TAIL)
    }

    /// Stops the server and reaps it: SIGTERM, SIGKILL after a grace, wait; then forgets its
    /// display number and removes its cookie. Idempotent.
    pub(crate) fn stop(&mut self) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        if self.child.try_wait().ok().flatten().is_none() {
            let pid = self.child.id() as libc::pid_t;
            // SAFETY: plain syscall on our own child, which is not reaped yet, so the pid is ours.
            unsafe { libc::kill(pid, libc::SIGTERM) };
            let deadline = Instant::now() + STOP_GRACE;
            while self.child.try_wait().ok().flatten().is_none() {
                if Instant::now() >= deadline {
                    let _ = self.child.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        let _ = self.child.wait();
        if let Some(n) = self.number {
            STARTED.lock().remove(&n);
        }
        self.auth = None;
    }
}

impl Drop for Xvfb {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Held while an Xvfb picks its display number, machine-wide (an `flock` on a file in `/tmp`).
///
/// Xvfb's own choice of a free number is racy when a server died without cleaning up (SIGKILL
/// leaves `/tmp/.X<n>-lock` behind): two servers starting at once can both take the stale number,
/// and the second unlinks the first's socket. Starting one at a time closes that race. Anyone who
/// starts an Xvfb by hand beside desktops should hold this guard until the server is ready.
#[derive(Debug)]
pub struct StartGuard {
    _lock: Option<std::fs::File>,
}

impl StartGuard {
    /// Waits for the machine-wide start lock. If the lock file cannot be opened, the guard holds
    /// nothing and starting proceeds unserialised (as Xvfb alone would).
    pub fn acquire() -> StartGuard {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(std::env::temp_dir().join(".agentflow-xvfb-start.lock"));
        let Ok(file) = file else {
            return StartGuard { _lock: None };
        };
        // SAFETY: flock on a descriptor we own; blocks until the lock is ours.
        while unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } == -1 {
            if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                return StartGuard { _lock: None };
            }
        }
        StartGuard { _lock: Some(file) }
    }
}

/// A close-on-exec pipe: (read end, write end), both above the standard descriptors (a process
/// started with stdin closed would otherwise get fd 0, which the child's stdin then replaces).
fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    let failed = |what: &str| Error::Start(format!("cannot make a pipe ({what}): {}", std::io::Error::last_os_error()));
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } == -1 {
        return Err(failed("pipe2"));
    }
    // SAFETY: pipe2 succeeded, so both descriptors are open and owned by nobody else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let lift = |fd: OwnedFd| -> Result<OwnedFd> {
        if fd.as_raw_fd() > 2 {
            return Ok(fd);
        }
        // SAFETY: duplicating an open descriptor; the copy is owned by the new OwnedFd.
        let copy = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
        if copy == -1 {
            return Err(failed("dup"));
        }
        // SAFETY: fcntl returned a fresh descriptor.
        Ok(unsafe { OwnedFd::from_raw_fd(copy) })
    };
    Ok((lift(read)?, lift(write)?))
}

/// Reads the display number Xvfb writes to `-displayfd`, up to `deadline`.
fn read_display_number(fd: OwnedFd, deadline: Instant) -> std::result::Result<u16, String> {
    let mut file = std::fs::File::from(fd);
    let mut text = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("not ready after {}s", READY_TIMEOUT.as_secs()));
        }
        let mut poll = libc::pollfd { fd: file.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut poll, 1, ms) };
        if ready < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("cannot wait for Xvfb: {err}"));
        }
        if ready == 0 {
            continue;
        }
        let mut buf = [0u8; 16];
        match file.read(&mut buf) {
            Ok(0) => return Err("Xvfb exited before it was ready".into()),
            Ok(n) => {
                text.extend_from_slice(&buf[..n]);
                if text.contains(&b'\n') {
                    let s = String::from_utf8_lossy(&text);
                    return s.trim().parse().map_err(|_| format!("Xvfb wrote '{}' as its display", s.trim()));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("cannot read Xvfb's display number: {e}")),
        }
    }
}
