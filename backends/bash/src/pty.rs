//! The shell's pseudo-terminal, its threads and its descriptors.
//!
//! [`start`] opens the terminal (echo off, raw output), makes the record pipe (a FIFO in the
//! scratch directory, opened here first), types the set-up ahead and spawns `bash` on the
//! terminal's other end (through portable-pty) with a clean environment. Two threads then serve
//! the shell: the reader polls the terminal and the record pipe and feeds both into the
//! [`Transcript`], waking the async side; the waiter reaps the shell (so that [`is_shell`] can
//! tell an orphan reaper to leave it alone) and records how it ended. The [`Terminal`] is the
//! async side's end: writing to it, the foreground process group, Ctrl-C.
//!
//! It knows nothing of commands and their outcomes: that is the [`Shell`](crate::Shell).

use std::ffi::OsString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use portable_pty::{native_pty_system, CommandBuilder, MasterPty, PtySize};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::Notify;

use crate::command::{environment, init_line, nonce};
use crate::process;
use crate::shell::ShellConfig;
use crate::transcript::Transcript;
use crate::{Error, Result};

/// How a shell process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    /// Its exit status, or 128 + the signal that killed it, as bash reports `$?`.
    pub code: i32,
    /// The signal that killed it, if one did.
    pub signal: Option<i32>,
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.signal {
            Some(s) => write!(f, "killed by signal {s}"),
            None => write!(f, "exit status {}", self.code),
        }
    }
}

/// What the reader and waiter threads share with the async side.
pub(crate) struct Shared {
    pub tty: Mutex<Tty>,
    pub notify: Notify,
}

/// The shell's output so far, and whether it has ended.
pub(crate) struct Tty {
    pub transcript: Transcript,
    /// The reader saw the terminal's end.
    pub eof: bool,
    /// The waiter reaped the shell.
    pub exit: Option<Exit>,
}

/// The async side's end of the terminal.
pub(crate) struct Terminal {
    /// Holds the terminal open; only its descriptor is used.
    _master: Mutex<Box<dyn MasterPty + Send>>,
    master_fd: RawFd,
    writer: AsyncFd<OwnedFd>,
}

impl Terminal {
    /// Ctrl-C as the terminal would send it (which also drops typed-ahead input), or SIGINT to
    /// the foreground group when the program turned the terminal's signals off.
    pub(crate) fn signal_foreground(&self) {
        let fd = self.master_fd;
        // SAFETY: termios is plain data; tcgetattr only writes into it.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: fd is the open PTY master, owned by self._master.
        let isig = unsafe { libc::tcgetattr(fd, &mut t) } == 0 && (t.c_lflag & libc::ISIG) != 0;
        let intr = if t.c_cc[libc::VINTR] == 0 { 0x03 } else { t.c_cc[libc::VINTR] };
        // SAFETY: writes one byte from a live stack variable to an open descriptor.
        if isig && unsafe { libc::write(fd, (&intr as *const u8).cast(), 1) } == 1 {
            return;
        }
        let group = self.foreground_group();
        if group > 0 {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe { libc::kill(-group, libc::SIGINT) };
        }
    }

    /// The terminal's foreground process group.
    pub(crate) fn foreground_group(&self) -> i32 {
        // SAFETY: tcgetpgrp on the open PTY master.
        unsafe { libc::tcgetpgrp(self.master_fd) }
    }

    /// Writes bytes to the terminal; false if the deadline came first.
    pub(crate) async fn send(&self, mut bytes: &[u8], deadline: Instant) -> Result<bool> {
        while !bytes.is_empty() {
            let mut guard = match tokio::time::timeout_at(deadline.into(), self.writer.writable()).await {
                Ok(guard) => guard?,
                Err(_) => return Ok(false),
            };
            let written = guard.try_io(|fd| {
                // SAFETY: writes from a live slice to an open descriptor.
                let n = unsafe { libc::write(fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len()) };
                if n < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(n as usize)
                }
            });
            match written {
                Ok(Ok(n)) => bytes = &bytes[n..],
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
                // EIO: nobody holds the terminal any more; the waiter will say why.
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(true),
                Ok(Err(e)) => return Err(e.into()),
                Err(_would_block) => {}
            }
        }
        Ok(true)
    }

    /// Echo off and raw output again (a program may have left echo on: `stty sane`).
    pub(crate) fn quiet(&self) -> Result<()> {
        quiet_terminal(self.master_fd)
    }
}

/// A shell just started, with its terminal and threads.
pub(crate) struct Started {
    pub pid: i32,
    pub term: Terminal,
    pub shared: Arc<Shared>,
    /// Closing it wakes the reader thread to stop.
    pub stop: OwnedFd,
    pub threads: Vec<std::thread::JoinHandle<()>>,
    pub cwd: String,
    /// Where the shell's record pipe was made, until the shell has opened it.
    pub records_path: Option<PathBuf>,
    /// The private scratch directory made for it, if any.
    pub scratch: Option<PathBuf>,
}

/// Spawns the shell and its threads (blocking: runs on the blocking pool).
pub(crate) fn start(config: &ShellConfig, init_nonce: &str) -> Result<Started> {
    let spawn_err = |what: &str, e: &dyn std::fmt::Display| Error::Spawn(format!("{what}: {e}"));
    let cwd = match &config.cwd {
        Some(dir) => dir.clone(),
        None => std::env::current_dir().map_err(|e| spawn_err("no current directory", &e))?,
    };
    if !cwd.is_dir() {
        return Err(Error::Spawn(format!("working directory {} is not a directory", cwd.display())));
    }
    let size = PtySize { rows: config.rows.max(2), cols: config.cols.max(10), pixel_width: 0, pixel_height: 0 };
    // The shell's record pipe: made in the scratch directory (the shell can see it there, a
    // jail's included), opened here first so that the shell's open does not wait.
    let own_scratch = config.scratch_dir.is_none().then(|| scratch_dir(config, None));
    let dir = scratch_dir(config, own_scratch.as_deref());
    let records_path = dir.join(format!("records-{}", &init_nonce[..8]));
    // Until the shell is handed over, a failure removes what was made.
    let mut made = Made { records: Some(records_path.clone()), scratch: own_scratch };
    let records = make_dir(&dir)
        .and_then(|_| records_pipe(&dir, &records_path))
        .map_err(|e| spawn_err("cannot make the shell's record pipe", &e))?;
    let pair = native_pty_system().openpty(size).map_err(|e| spawn_err("cannot open a terminal", &e))?;
    let master_fd = pair.master.as_raw_fd().ok_or_else(|| Error::Spawn("the terminal has no descriptor".into()))?;
    quiet_terminal(master_fd)?;
    // The set-up is typed ahead, before the shell starts: it reads it as soon as it is up.
    let init = init_line(init_nonce, &records_path);
    // SAFETY: writes from a live string to the open (still blocking) PTY master; the terminal's
    // input queue is empty and larger than the line, so this does not wait.
    let typed = unsafe { libc::write(master_fd, init.as_ptr().cast(), init.len()) };
    if typed != init.len() as isize {
        return Err(Error::Spawn(format!("cannot type the set-up: {}", std::io::Error::last_os_error())));
    }

    let mut argv: Vec<OsString> = config.wrapper.clone();
    argv.push(config.program.clone().into_os_string());
    argv.extend(["--noprofile", "--norc", "--noediting", "-i"].map(OsString::from));
    let mut cmd = CommandBuilder::from_argv(argv);
    cmd.env_clear();
    let env = if config.wrapper.is_empty() { environment(config) } else { config.wrapper_env.clone() };
    for (key, value) in env {
        cmd.env(key, value);
    }
    cmd.cwd(&cwd);
    let child = pair.slave.spawn_command(cmd).map_err(|e| spawn_err("cannot start the shell", &e))?;
    // Only the shell holds the terminal's other end: its death is then seen as EOF.
    drop(pair.slave);
    let pid = child.process_id().map(|p| p as i32).unwrap_or(-1);
    SHELLS.lock().insert(pid);

    let shared = Arc::new(Shared {
        tty: Mutex::new(Tty { transcript: Transcript::new(config.max_output_bytes), eof: false, exit: None }),
        notify: Notify::new(),
    });
    shared.tty.lock().transcript.begin(init_nonce);
    let mut shell_threads = Vec::new();
    // From here on, a failure drops `guard`, which kills the shell.
    let waiter_shared = shared.clone();
    // The waiter reaps the shell itself, to see the signal that killed it; the std handle that
    // portable-pty returned is dropped without waiting (that neither kills nor reaps).
    drop(child);
    let waiter = std::thread::Builder::new().name(format!("bash-wait-{pid}")).stack_size(64 * 1024).spawn(move || {
        let exit = reap(pid);
        SHELLS.lock().remove(&pid);
        waiter_shared.tty.lock().exit = Some(exit);
        waiter_shared.notify.notify_waiters();
    });
    let waiter = match waiter {
        Ok(t) => t,
        Err(e) => {
            process::kill_tree_now(pid);
            SHELLS.lock().remove(&pid);
            return Err(spawn_err("cannot start the waiter thread", &e));
        }
    };
    shell_threads.push(waiter);

    let fail = |e: std::io::Error, threads: Vec<std::thread::JoinHandle<()>>| {
        process::kill_tree_now(pid);
        drop(threads);
        Error::Spawn(format!("cannot set up the terminal: {e}"))
    };
    let reader_fd = match dup(master_fd) {
        Ok(fd) => fd,
        Err(e) => return Err(fail(e, shell_threads)),
    };
    let writer_fd = match dup(master_fd).and_then(|fd| set_nonblocking(&fd).map(|_| fd)) {
        Ok(fd) => fd,
        Err(e) => return Err(fail(e, shell_threads)),
    };
    let (stop_read, stop_write) = match pipe() {
        Ok(p) => p,
        Err(e) => return Err(fail(e, shell_threads)),
    };
    let reader_shared = shared.clone();
    let reader = std::thread::Builder::new()
        .name(format!("bash-read-{pid}"))
        .stack_size(128 * 1024)
        .spawn(move || read_loop(reader_fd, records, stop_read, reader_shared));
    match reader {
        Ok(t) => shell_threads.push(t),
        Err(e) => return Err(fail(e, shell_threads)),
    }
    // SAFETY: the AsyncFd owns `writer_fd`, which nothing else closes or replaces.
    let writer = match unsafe { AsyncFd::register_with_interest(writer_fd, Interest::WRITABLE) } {
        Ok(w) => w,
        Err(e) => return Err(fail(e.into(), shell_threads)),
    };
    Ok(Started {
        pid,
        term: Terminal { _master: Mutex::new(pair.master), master_fd, writer },
        shared,
        stop: stop_write,
        threads: shell_threads,
        cwd: cwd.display().to_string(),
        records_path: made.records.take(),
        scratch: made.scratch.take(),
    })
}

/// Files a shell being started has made, removed if it fails to start.
struct Made {
    records: Option<PathBuf>,
    scratch: Option<PathBuf>,
}

impl Drop for Made {
    fn drop(&mut self) {
        if let Some(path) = self.records.take() {
            let _ = std::fs::remove_file(path);
        }
        if let Some(dir) = self.scratch.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Where the shell's scratch files go: the configured directory, the private one already
/// made (`own`), or a new private name under the system's temporary directory.
pub(crate) fn scratch_dir(config: &ShellConfig, own: Option<&Path>) -> PathBuf {
    match (&config.scratch_dir, own) {
        (Some(dir), _) => dir.clone(),
        (None, Some(dir)) => dir.to_owned(),
        (None, None) => std::env::temp_dir().join(format!("agentflow-bash-{}-{}", std::process::id(), nonce())),
    }
}

/// Makes `dir` (mode 0700) unless it is there.
pub(crate) fn make_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new().mode(0o700).create(dir)
}

/// Makes the FIFO the shell writes its records to, owned as `dir` is (a jail's shell runs as
/// the directory's owner), and opens its reading end, which does not wait for a writer; and a
/// writing end, never written, so that reading never sees an end of file before the shell has
/// opened the pipe (nor after it died: the reader stops with the terminal).
fn records_pipe(dir: &Path, path: &Path) -> std::io::Result<(OwnedFd, OwnedFd)> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::MetadataExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: mkfifo reads a NUL-terminated path that lives through the call.
    if unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let owner = std::fs::metadata(dir)?;
    std::os::unix::fs::lchown(path, Some(owner.uid()), Some(owner.gid()))?;
    let open = |flags: libc::c_int| {
        // SAFETY: open reads the same live path; the descriptor returned is then owned.
        let fd = unsafe { libc::open(c_path.as_ptr(), flags | libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor owned by nobody else.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    };
    let read = open(libc::O_RDONLY)?;
    Ok((read, open(libc::O_WRONLY)?))
}

/// The pids of the shells whose waiter thread will reap them (until it has).
static SHELLS: Mutex<std::collections::BTreeSet<i32>> = Mutex::new(std::collections::BTreeSet::new());

/// Whether `pid` is a shell of this process that its own waiter reaps: an orphan reaper must
/// leave it alone, or the shell's exit status is lost.
pub fn is_shell(pid: i32) -> bool {
    SHELLS.lock().contains(&pid)
}

/// Waits for the shell to end and reaps it.
fn reap(pid: i32) -> Exit {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes the status into a live int.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            if libc::WIFSIGNALED(status) {
                let sig = libc::WTERMSIG(status);
                return Exit { code: 128 + sig, signal: Some(sig) };
            }
            if libc::WIFEXITED(status) {
                return Exit { code: libc::WEXITSTATUS(status), signal: None };
            }
            continue;
        }
        if r < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        // Not our child any more (or no such process): nothing to reap.
        return Exit { code: -1, signal: None };
    }
}

/// The reader thread: terminal output and the shell's records into the transcript, until EOF
/// or the stop pipe closes. Records are read before the terminal output that follows them.
fn read_loop(fd: OwnedFd, (records, _writer): (OwnedFd, OwnedFd), stop: OwnedFd, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut record_buf = [0u8; 1024];
    loop {
        let mut fds = [
            libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: stop.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: records.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        ];
        // SAFETY: fds is a live array of three pollfd.
        let r = unsafe { libc::poll(fds.as_mut_ptr(), 3, -1) };
        if r < 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            break;
        }
        if fds[1].revents != 0 {
            break;
        }
        if fds[2].revents != 0 {
            drain_records(&records, &mut record_buf, &shared);
        }
        if fds[0].revents == 0 {
            continue;
        }
        // SAFETY: reads into a live buffer of the given length from an open descriptor.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n > 0 {
            // A marker in this output was printed after its record was written: read it first.
            drain_records(&records, &mut record_buf, &shared);
            shared.tty.lock().transcript.feed(&buf[..n as usize]);
            shared.notify.notify_waiters();
            continue;
        }
        let err = std::io::Error::last_os_error();
        if n < 0 && matches!(err.kind(), std::io::ErrorKind::Interrupted | std::io::ErrorKind::WouldBlock) {
            continue;
        }
        // 0 or EIO: no process holds the terminal any more.
        break;
    }
    shared.tty.lock().eof = true;
    shared.notify.notify_waiters();
}

/// Reads all the records written so far.
fn drain_records(records: &OwnedFd, buf: &mut [u8], shared: &Shared) {
    let fd = records;
    loop {
        // SAFETY: reads into a live buffer of the given length from an open, non-blocking fd.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n > 0 {
            shared.tty.lock().transcript.record(&buf[..n as usize]);
            continue;
        }
        let err = std::io::Error::last_os_error();
        if n < 0 && err.kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        // Nothing more for now (the reader's own writing end keeps it from an end of file).
        return;
    }
}

/// Echo off, so that what is typed (commands, input) never shows in the output; Ctrl-C on;
/// output as programs write it.
fn quiet_terminal(fd: RawFd) -> Result<()> {
    // SAFETY: termios is plain data, filled by tcgetattr before use.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: fd is an open PTY master; on Linux its termios calls act on the terminal.
    if unsafe { libc::tcgetattr(fd, &mut t) } != 0 {
        return Err(Error::Spawn(format!("cannot read the terminal mode: {}", std::io::Error::last_os_error())));
    }
    let quiet = (t.c_lflag & !(libc::ECHO | libc::ECHOE | libc::ECHOK | libc::ECHONL | libc::ECHOCTL)) | libc::ISIG;
    // No output post-processing (LF to CR LF): the transcript ends lines on LF either way, and
    // the kernel's per-byte processing makes a PTY some 30 times slower.
    let raw_output = t.c_oflag & !libc::OPOST;
    if quiet == t.c_lflag && raw_output == t.c_oflag {
        return Ok(());
    }
    t.c_lflag = quiet;
    t.c_oflag = raw_output;
    // SAFETY: as above, with a termios read from the same terminal.
    if unsafe { libc::tcsetattr(fd, libc::TCSANOW, &t) } != 0 {
        return Err(Error::Spawn(format!("cannot set the terminal mode: {}", std::io::Error::last_os_error())));
    }
    Ok(())
}

fn dup(fd: RawFd) -> std::io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor that we then own.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
    if new < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `new` is a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(new) })
}

fn set_nonblocking(fd: &OwnedFd) -> std::io::Result<()> {
    // The flag is on the open file description, shared with the reader's duplicate, which
    // polls before reading and so does not mind.
    // SAFETY: fcntl on an open descriptor.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    // SAFETY: as above.
    if flags < 0 || unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds is a live array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both are fresh descriptors owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}
