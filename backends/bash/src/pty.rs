//! The shell's pseudo-terminal, its pump and its descriptors.
//!
//! [`start`] opens the terminal (portable-pty; echo off, raw output), makes the record pipe (a
//! pipe the shell inherits, or for a wrapped shell a FIFO in its scratch directory, opened here
//! first), types the set-up ahead and spawns `bash`
//! on the terminal's other end with a clean environment. The spawn is a `posix_spawn` (the
//! kernel's vfork: no copy of this process's memory map, however many sessions it holds) that
//! makes bash a session leader owning the terminal and closes every other descriptor with one
//! `close_range`; portable-pty's own spawn forks and then lists and closes descriptors one by
//! one, which grows with the number of live sessions.
//!
//! No thread serves a shell: one task on the async runtime (the [`pump`]) waits on the
//! terminal, the record pipe and a pidfd of the shell, feeds output and records into the
//! [`Transcript`], reaps the shell when it ends (so that [`is_shell`] can tell an orphan reaper to
//! leave it alone) and records how it ended. The [`Terminal`] is the async side's end: writing
//! to it, the foreground process group, Ctrl-C.
//!
//! It knows nothing of commands and their outcomes: that is the [`Shell`](crate::Shell).

use std::ffi::OsString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use portable_pty::{native_pty_system, PtySize};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::{oneshot, Notify};

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

/// What the pump shares with the shell's calls.
pub(crate) struct Shared {
    pub tty: Mutex<Tty>,
    pub notify: Notify,
}

/// The shell's output so far, and whether it has ended.
pub(crate) struct Tty {
    pub transcript: Transcript,
    /// The pump saw the terminal's end.
    pub eof: bool,
    /// The pump reaped the shell.
    pub exit: Option<Exit>,
}

/// The async side's end of the terminal.
pub(crate) struct Terminal {
    /// Holds the terminal open; only its descriptor is used.
    /// The terminal's master: the one descriptor of it this process keeps (non-blocking), read
    /// by the pump and written here.
    master: Arc<AsyncFd<OwnedFd>>,
}

impl Terminal {
    /// Ctrl-C as the terminal would send it (which also drops typed-ahead input), or SIGINT to
    /// the foreground group when the program turned the terminal's signals off.
    pub(crate) fn signal_foreground(&self) {
        let fd = self.master.as_raw_fd();
        // SAFETY: termios is plain data; tcgetattr only writes into it.
        let mut t: libc::termios = unsafe { std::mem::zeroed() };
        // SAFETY: fd is the open PTY master, owned by self.master.
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
        unsafe { libc::tcgetpgrp(self.master.as_raw_fd()) }
    }

    /// Writes bytes to the terminal; false if the deadline came first.
    pub(crate) async fn send(&self, mut bytes: &[u8], deadline: Instant) -> Result<bool> {
        while !bytes.is_empty() {
            let mut guard = match tokio::time::timeout_at(deadline.into(), self.master.writable()).await {
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
                // EIO: nobody holds the terminal any more; the pump will say why.
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => return Ok(true),
                Ok(Err(e)) => return Err(e.into()),
                Err(_would_block) => {}
            }
        }
        Ok(true)
    }

    /// Echo off and raw output again (a program may have left echo on: `stty sane`).
    pub(crate) fn quiet(&self) -> Result<()> {
        quiet_terminal(self.master.as_raw_fd())
    }
}

/// A shell just started, with its terminal and pump.
pub(crate) struct Started {
    pub pid: i32,
    pub term: Terminal,
    pub shared: Arc<Shared>,
    /// Dropping it stops the pump reading (it still reaps the shell).
    pub stop: oneshot::Sender<()>,
    /// The pump: done once the shell is reaped and reading has stopped.
    pub pump: tokio::task::JoinHandle<()>,
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
    // The shell's record pipe. A plain shell inherits its writing end as descriptor 3: nothing
    // is made on disk, so a start costs no file-system work. A shell under a wrapper (a jail)
    // opens a FIFO made in its scratch directory, which it can see (a wrapper need not pass
    // descriptors on); it is opened here first, so that the shell's open does not wait.
    let mut made = Made { records: None, scratch: None };
    let (records, inherited) = if config.wrapper.is_empty() {
        let (read, write) = pipe().map_err(|e| spawn_err("cannot make the shell's record pipe", &e))?;
        ((read, None), Some(write))
    } else {
        let own_scratch = config.scratch_dir.is_none().then(|| scratch_dir(config, None));
        let dir = scratch_dir(config, own_scratch.as_deref());
        let path = dir.join(format!("records-{}", &init_nonce[..8]));
        // Until the shell is handed over, a failure removes what was made.
        made = Made { records: Some(path.clone()), scratch: own_scratch };
        let (read, keep_open) = make_dir(&dir)
            .and_then(|_| records_pipe(&dir, &path))
            .map_err(|e| spawn_err("cannot make the shell's record pipe", &e))?;
        ((read, Some(keep_open)), None)
    };
    let pair = native_pty_system().openpty(size).map_err(|e| spawn_err("cannot open a terminal", &e))?;
    let master_fd = pair.master.as_raw_fd().ok_or_else(|| Error::Spawn("the terminal has no descriptor".into()))?;
    quiet_terminal(master_fd)?;
    // The set-up is typed ahead, before the shell starts: it reads it as soon as it is up.
    let init = init_line(init_nonce, made.records.as_deref());
    // SAFETY: writes from a live string to the open (still blocking) PTY master; the terminal's
    // input queue is empty and larger than the line, so this does not wait.
    let typed = unsafe { libc::write(master_fd, init.as_ptr().cast(), init.len()) };
    if typed != init.len() as isize {
        return Err(Error::Spawn(format!("cannot type the set-up: {}", std::io::Error::last_os_error())));
    }

    let tty = pair.master.tty_name().ok_or_else(|| Error::Spawn("the terminal has no name".into()))?;
    let mut argv: Vec<OsString> = config.wrapper.clone();
    argv.push(config.program.clone().into_os_string());
    argv.extend(["--noprofile", "--norc", "--noediting", "-i"].map(OsString::from));
    let mut env = if config.wrapper.is_empty() { environment(config) } else { config.wrapper_env.clone() };
    if !env.iter().any(|(k, _)| k == "SHELL") {
        env.push(("SHELL".into(), config.program.display().to_string()));
    }
    let records_fd = inherited.as_ref().map(AsRawFd::as_raw_fd);
    let pid = spawn_on(&tty, &argv, &env, &cwd, records_fd)
        .map_err(|e| Error::Spawn(format!("{}: {e}", argv[0].display())))?;
    // Only the shell holds the terminal's other end and the record pipe's writing end: its
    // death is then seen as their end of file.
    drop(pair.slave);
    drop(inherited);
    SHELLS.lock().insert(pid);
    // From here on, a failure kills the shell; the pump, once running, reaps it.
    let fail = |e: std::io::Error| {
        process::kill_tree_now(pid, &process::Members::Scan);
        reap(pid);
        SHELLS.lock().remove(&pid);
        Error::Spawn(format!("cannot set up the terminal: {e}"))
    };
    let io = (|| -> std::io::Result<_> {
        // One descriptor of the terminal, non-blocking, for the pump and the writer; portable-pty's
        // own is closed below. (Every descriptor this process holds is copied into each child
        // it spawns: three per shell rather than six keeps spawning cheap with many live.)
        let master = dup(master_fd)?;
        set_nonblocking(&master)?;
        let master = Arc::new(register(master, Interest::READABLE | Interest::WRITABLE)?);
        let (records, keep_open) = records;
        let records = register(records, Interest::READABLE)?;
        let exited = pidfd(pid).and_then(|fd| register(fd, Interest::READABLE)).ok();
        Ok((master, records, keep_open, exited))
    })();
    let (master, records, keep_open, exited) = io.map_err(fail)?;
    drop(pair.master);

    let shared = Arc::new(Shared {
        tty: Mutex::new(Tty { transcript: Transcript::new(config.max_output_bytes), eof: false, exit: None }),
        notify: Notify::new(),
    });
    shared.tty.lock().transcript.begin(init_nonce);
    let (stop, stopped) = oneshot::channel();
    let pipes = Pipes { terminal: master.clone(), records: Some(records), keep_open, exited };
    let pump = tokio::runtime::Handle::current().spawn(pump(pid, pipes, stopped, shared.clone()));
    Ok(Started {
        pid,
        term: Terminal { master },
        shared,
        stop,
        pump,
        cwd: cwd.display().to_string(),
        records_path: made.records.take(),
        scratch: made.scratch.take(),
    })
}

/// Starts `argv` (searched in `PATH` when it has no `/`) as the leader of a new session whose
/// controlling terminal is `tty` (its stdin, stdout and stderr), in `cwd`, with exactly `env`,
/// signals at their defaults and unblocked, and no other descriptor of this process but
/// `records` (given as its descriptor 3).
fn spawn_on(
    tty: &Path,
    argv: &[OsString],
    env: &[(String, String)],
    cwd: &Path,
    records: Option<RawFd>,
) -> std::io::Result<i32> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c = |bytes: &[u8]| CString::new(bytes).map_err(std::io::Error::other);
    let argv: Vec<CString> = argv.iter().map(|a| c(a.as_bytes())).collect::<std::io::Result<_>>()?;
    let envp: Vec<CString> =
        env.iter().map(|(k, v)| c(format!("{k}={v}").as_bytes())).collect::<std::io::Result<_>>()?;
    let (tty, cwd) = (c(tty.as_os_str().as_bytes())?, c(cwd.as_os_str().as_bytes())?);
    let mut argv_ptrs: Vec<*mut libc::c_char> = argv.iter().map(|a| a.as_ptr().cast_mut()).collect();
    argv_ptrs.push(std::ptr::null_mut());
    let mut env_ptrs: Vec<*mut libc::c_char> = envp.iter().map(|e| e.as_ptr().cast_mut()).collect();
    env_ptrs.push(std::ptr::null_mut());
    let check = |r: libc::c_int| if r == 0 { Ok(()) } else { Err(std::io::Error::from_raw_os_error(r)) };
    // SAFETY: the attribute and file-action objects are initialised before use and destroyed
    // after; every pointer handed to libc (paths, argv, envp) points into CStrings and vectors
    // that outlive the call; posix_spawnp writes the child's pid into a live int.
    unsafe {
        let mut attr: libc::posix_spawnattr_t = std::mem::zeroed();
        let mut actions: libc::posix_spawn_file_actions_t = std::mem::zeroed();
        check(libc::posix_spawnattr_init(&mut attr))?;
        if let Err(e) = check(libc::posix_spawn_file_actions_init(&mut actions)) {
            libc::posix_spawnattr_destroy(&mut attr);
            return Err(e);
        }
        let result = (|| {
            let mut defaults: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut defaults);
            for sig in
                [libc::SIGCHLD, libc::SIGHUP, libc::SIGINT, libc::SIGQUIT, libc::SIGTERM, libc::SIGALRM, libc::SIGPIPE]
            {
                libc::sigaddset(&mut defaults, sig);
            }
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            check(libc::posix_spawnattr_setsigdefault(&mut attr, &defaults))?;
            check(libc::posix_spawnattr_setsigmask(&mut attr, &none))?;
            let flags = libc::POSIX_SPAWN_SETSID
                | libc::POSIX_SPAWN_SETSIGDEF as libc::c_short
                | libc::POSIX_SPAWN_SETSIGMASK as libc::c_short;
            check(libc::posix_spawnattr_setflags(&mut attr, flags))?;
            // A session leader with no terminal that opens one (without O_NOCTTY) gets it as
            // its controlling terminal: what TIOCSCTTY would do.
            check(libc::posix_spawn_file_actions_addopen(&mut actions, 0, tty.as_ptr(), libc::O_RDWR, 0))?;
            check(libc::posix_spawn_file_actions_adddup2(&mut actions, 0, 1))?;
            check(libc::posix_spawn_file_actions_adddup2(&mut actions, 0, 2))?;
            // (A dup2 onto itself clears close-on-exec, as POSIX now says and glibc does.)
            let first_closed = match records {
                Some(fd) => {
                    check(libc::posix_spawn_file_actions_adddup2(&mut actions, fd, 3))?;
                    4
                }
                None => 3,
            };
            check(libc::posix_spawn_file_actions_addchdir_np(&mut actions, cwd.as_ptr()))?;
            check(libc::posix_spawn_file_actions_addclosefrom_np(&mut actions, first_closed))?;
            let mut pid: libc::pid_t = 0;
            check(libc::posix_spawnp(
                &mut pid,
                argv[0].as_ptr(),
                &actions,
                &attr,
                argv_ptrs.as_ptr(),
                env_ptrs.as_ptr(),
            ))?;
            Ok(pid)
        })();
        libc::posix_spawn_file_actions_destroy(&mut actions);
        libc::posix_spawnattr_destroy(&mut attr);
        result
    }
}

/// Registers a descriptor with the runtime's reactor.
pub(crate) fn register(fd: OwnedFd, interest: Interest) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the AsyncFd owns `fd`, which nothing else closes or replaces while registered.
    unsafe { AsyncFd::register_with_interest(fd, interest) }.map_err(|e| e.into_parts().1)
}

/// A pidfd of `pid`: readable once it has ended.
fn pidfd(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
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
pub(crate) fn records_pipe(dir: &Path, path: &Path) -> std::io::Result<(OwnedFd, OwnedFd)> {
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

/// A pipe, both ends close-on-exec, the reading end non-blocking: (reading, writing).
fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 writes two descriptors into a live array of two.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: two fresh descriptors owned by nobody else.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    set_nonblocking(&read)?;
    Ok((read, write))
}

/// The pids of the shells whose pump will reap them (until it has).
static SHELLS: Mutex<std::collections::BTreeSet<i32>> = Mutex::new(std::collections::BTreeSet::new());

/// Whether `pid` is a shell of this process that its own pump reaps: an orphan reaper must
/// leave it alone, or the shell's exit status is lost.
pub fn is_shell(pid: i32) -> bool {
    SHELLS.lock().contains(&pid)
}

/// Reaps the shell if it has ended (`WNOHANG`), else waits for it when `block`; `None` when it
/// has not ended yet.
fn try_reap(pid: i32, block: bool) -> Option<Exit> {
    loop {
        let mut status = 0;
        // SAFETY: waitpid writes the status into a live int.
        let r = unsafe { libc::waitpid(pid, &mut status, if block { 0 } else { libc::WNOHANG }) };
        if r == pid {
            if libc::WIFSIGNALED(status) {
                let sig = libc::WTERMSIG(status);
                return Some(Exit { code: 128 + sig, signal: Some(sig) });
            }
            if libc::WIFEXITED(status) {
                return Some(Exit { code: libc::WEXITSTATUS(status), signal: None });
            }
            continue;
        }
        if r == 0 {
            return None;
        }
        if r < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        // Not our child any more (or no such process): nothing to reap.
        return Some(Exit { code: -1, signal: None });
    }
}

/// Waits for the shell to end and reaps it.
fn reap(pid: i32) -> Exit {
    try_reap(pid, true).unwrap_or(Exit { code: -1, signal: None })
}

/// What the pump waits on.
struct Pipes {
    /// The terminal's master (non-blocking), shared with the [`Terminal`].
    terminal: Arc<AsyncFd<OwnedFd>>,
    /// The record pipe's reading end, until its end of file (the shell gone).
    records: Option<AsyncFd<OwnedFd>>,
    /// Its writing end, never written, until the shell has opened the pipe (its first record):
    /// until then, reading never sees an end of file.
    keep_open: Option<OwnedFd>,
    /// A pidfd of the shell; `None` where the kernel has none (then a blocking wait reaps it).
    exited: Option<AsyncFd<OwnedFd>>,
}

/// Reaps the shell when the pump is dropped before it could (its runtime shut down): the
/// shell is killed, since nothing can drive it any more, and waited for.
struct ReapOnDrop {
    pid: i32,
    done: bool,
}

impl Drop for ReapOnDrop {
    fn drop(&mut self) {
        if !self.done {
            process::kill_tree_now(self.pid, &process::Members::Scan);
            reap(self.pid);
            SHELLS.lock().remove(&self.pid);
        }
    }
}

/// Serves one shell until it is reaped: terminal output and records into the transcript (until
/// the terminal's end or `stop`), and the shell's exit. Records are read before the terminal
/// output that follows them.
async fn pump(pid: i32, mut pipes: Pipes, mut stop: oneshot::Receiver<()>, shared: Arc<Shared>) {
    let mut guard = ReapOnDrop { pid, done: false };
    let mut buf = vec![0u8; 16 * 1024];
    let mut record_buf = [0u8; 1024];
    let mut reading = true;
    let mut blocking_wait = match &pipes.exited {
        Some(_) => None,
        None => Some(tokio::task::spawn_blocking(move || reap(pid))),
    };
    let ended = |shared: &Shared, exit: Exit| {
        SHELLS.lock().remove(&pid);
        shared.tty.lock().exit = Some(exit);
        shared.notify.notify_waiters();
    };
    loop {
        tokio::select! {
            ready = pipes.terminal.readable(), if reading => {
                let Ok(mut ready) = ready else { reading = false; continue };
                match ready.try_io(|fd| read_into(fd.get_ref(), &mut buf)) {
                    Ok(Ok(n)) if n > 0 => {
                        // A marker in this output was printed after its record was written: the
                        // record goes in first.
                        pipes.drain_records(&mut record_buf, &shared);
                        shared.tty.lock().transcript.feed(&buf[..n]);
                        shared.notify.notify_waiters();
                    }
                    Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    // 0 or EIO: no process holds the terminal any more.
                    Ok(_) => {
                        reading = false;
                        shared.tty.lock().eof = true;
                        shared.notify.notify_waiters();
                    }
                    Err(_would_block) => {}
                }
            }
            ready = async { pipes.records.as_ref().expect("a record pipe").readable().await }, if reading && pipes.records.is_some() => {
                match ready {
                    Ok(mut ready) => {
                        ready.clear_ready();
                        drop(ready);
                        pipes.drain_records(&mut record_buf, &shared);
                    }
                    Err(_) => pipes.records = None,
                }
            }
            ready = async { pipes.exited.as_ref().expect("a pidfd").readable().await }, if pipes.exited.is_some() && !guard.done => {
                if let Ok(mut ready) = ready {
                    match try_reap(pid, false) {
                        Some(exit) => {
                            guard.done = true;
                            ended(&shared, exit);
                        }
                        None => ready.clear_ready(),
                    }
                }
            }
            exit = async { blocking_wait.as_mut().expect("a waiter").await }, if blocking_wait.is_some() && !guard.done => {
                blocking_wait = None;
                guard.done = true;
                ended(&shared, exit.unwrap_or(Exit { code: -1, signal: None }));
            }
            _ = &mut stop, if reading => reading = false,
        }
        if !reading && guard.done {
            break;
        }
    }
    if !shared.tty.lock().eof {
        shared.tty.lock().eof = true;
        shared.notify.notify_waiters();
    }
}

/// One `read` into `buf`.
pub(crate) fn read_into(fd: &OwnedFd, buf: &mut [u8]) -> std::io::Result<usize> {
    // SAFETY: reads into a live buffer of the given length from an open descriptor.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(n as usize)
}

impl Pipes {
    /// Reads all the records written so far. The first one shows the shell holds the pipe's
    /// writing end, so ours is closed; from then on an end of file means the shell is gone, and
    /// the pipe is closed too.
    fn drain_records(&mut self, buf: &mut [u8], shared: &Shared) {
        let Some(records) = &self.records else { return };
        loop {
            // SAFETY: reads into a live buffer of the given length from an open, non-blocking fd.
            let n = unsafe { libc::read(records.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if n > 0 {
                shared.tty.lock().transcript.record(&buf[..n as usize]);
                self.keep_open = None;
                continue;
            }
            let err = std::io::Error::last_os_error();
            if n < 0 && err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            if n == 0 && self.keep_open.is_none() {
                self.records = None;
            }
            return;
        }
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
