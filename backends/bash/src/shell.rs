//! The [`Shell`]: one `bash` on a pseudo-terminal, driven one command at a time.
//!
//! It owns the processes and threads of one shell: portable-pty spawns `bash` (no rc files, no
//! line editing, no echo, pagers and editors disabled, no prompt but the end-of-command marker);
//! a dedicated reader thread feeds the PTY's output into a [`Transcript`] and wakes the async
//! side; a waiter thread reaps the shell. Each command is sent with a fresh random nonce, and
//! ends when the shell reports that nonce (from `PROMPT_COMMAND`, so it also comes after an
//! interrupt). Timeouts interrupt the foreground process group, then kill it, and wait for the
//! report again, so the shell is in step before a call returns. It knows nothing of sessions,
//! JSON or tool names: `src/backends/bash.rs` adapts it to the engine.
//!
//! The report cannot be forged by the command: the shell writes it to a pipe (a FIFO it opens
//! at start, whose name is then removed) that commands do not inherit, as each command runs
//! with that descriptor closed; a marker on the terminal then says where the output ends, and
//! counts only with a token the shell drew after the command ended (see the transcript). What
//! a command cannot do is read its own shell's memory or descriptors: a builtin of the same
//! shell, or a process of the same uid writing through `/proc/<shell>/fd`, could still write
//! a record. Agents do not do that by accident; a hostile one only fools its own session.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use portable_pty::{native_pty_system, CommandBuilder, MasterPty, PtySize};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::Notify;

use crate::process;
use crate::transcript::{Finished, Transcript, MARKER_OSC};
use crate::{Error, Result};

/// How long a foreground program has to die of SIGINT before it gets SIGKILL.
pub const INTERRUPT_GRACE: Duration = Duration::from_millis(300);
/// How long the shell has to print its marker after its foreground program got SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(1);
/// How long a new shell has to become ready.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How quiet a running program must be, after answering input, for `write` to return.
pub const SETTLE: Duration = Duration::from_millis(100);
/// Longest command (escaped) typed on the terminal; longer ones are read from a file, since a
/// terminal line holds at most 4095 bytes.
const INLINE_MAX: usize = 3800;
/// How long to wait for the rest of a dead shell's output.
const DRAIN: Duration = Duration::from_millis(200);

/// How to start a shell.
#[derive(Debug, Clone)]
pub struct ShellConfig {
    /// The shell program (default `/bin/bash`).
    pub program: PathBuf,
    /// A command the shell runs under, prefixed to its argv (a [`Jail`](crate::Jail)); empty
    /// for none.
    pub wrapper: Vec<OsString>,
    /// Where commands too long to type are written for the shell to read: a directory the
    /// shell can see (a jail's `/tmp` is its own) that its owner removes. `None`: a private
    /// directory under the system's temporary directory, removed with the shell.
    pub scratch_dir: Option<PathBuf>,
    /// Its working directory (default: this process's).
    pub cwd: Option<PathBuf>,
    /// Extra environment, set after the defaults (so it may override them). The shell starts
    /// from a clean environment ([`environment`]), never the whole of this process's.
    pub env: Vec<(String, String)>,
    /// With a `wrapper`: the environment of the wrapper process itself, which is then
    /// responsible for giving the shell [`environment`] (a jail sets it inside).
    pub wrapper_env: Vec<(String, String)>,
    /// Terminal size.
    pub rows: u16,
    /// Terminal size.
    pub cols: u16,
    /// Output kept per answer: the head and the tail, with a line saying what was left out.
    pub max_output_bytes: usize,
}

impl Default for ShellConfig {
    fn default() -> Self {
        ShellConfig {
            program: PathBuf::from("/bin/bash"),
            wrapper: Vec::new(),
            scratch_dir: None,
            cwd: None,
            env: Vec::new(),
            wrapper_env: Vec::new(),
            rows: 50,
            cols: 200,
            max_output_bytes: 128 * 1024,
        }
    }
}

/// What to do with a command still running at its timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnTimeout {
    /// Interrupt it (SIGINT, then SIGKILL) and resynchronise the shell.
    Interrupt,
    /// Leave it running, for [`Shell::write`] and [`Shell::interrupt`].
    Keep,
}

/// What a call saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// What the terminal showed (stdout and stderr), cleaned and bounded.
    pub output: String,
    /// Whether the middle of the output was left out.
    pub truncated: bool,
    /// The command's `$?`, once it has finished.
    pub exit_code: Option<i32>,
    /// The shell's working directory.
    pub cwd: String,
    /// Whether the call reached its timeout.
    pub timed_out: bool,
    /// Whether the command is still running (kept at its timeout, or awaiting more input).
    pub running: bool,
    /// How long the call took.
    pub duration: Duration,
}

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
struct Shared {
    tty: Mutex<Tty>,
    notify: Notify,
}

struct Tty {
    transcript: Transcript,
    eof: bool,
    exit: Option<Exit>,
}

/// The command whose marker is awaited.
#[derive(Debug)]
struct Pending {
    /// The marker it ends with (also held by the transcript).
    #[allow(dead_code)]
    nonce: String,
    /// Left running on purpose (`OnTimeout::Keep`, or fed by `write`); otherwise abandoned by a
    /// call that was cancelled, and interrupted before the next command.
    kept: bool,
}

enum Wake {
    Finished,
    Exited,
    Deadline,
    Settled,
}

/// A persistent `bash` on a pseudo-terminal. See the module documentation.
pub struct Shell {
    /// The process portable-pty started: bash, or the wrapper (a jail) bash runs under.
    pid: i32,
    /// bash's own process group (its pid), as this side of the terminal sees it: the
    /// terminal's foreground group whenever bash is at its prompt. Equal to `pid` without a
    /// wrapper; inside a jail, bash is a grandchild in its own PID namespace.
    leader: i32,
    /// Where the shell's record pipe was made, until the shell has opened it.
    records_path: Option<PathBuf>,
    /// Holds the terminal open; only its descriptor is used.
    _master: Mutex<Box<dyn MasterPty + Send>>,
    master_fd: RawFd,
    writer: AsyncFd<OwnedFd>,
    shared: Arc<Shared>,
    /// Closing it wakes the reader thread to stop.
    stop: Option<OwnedFd>,
    threads: Vec<std::thread::JoinHandle<()>>,
    pending: Option<Pending>,
    cwd: String,
    alive: bool,
    /// A private directory for commands too long to type, made on first use.
    scratch: Option<PathBuf>,
    config: ShellConfig,
}

impl std::fmt::Debug for Shell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shell")
            .field("pid", &self.pid)
            .field("alive", &self.alive)
            .field("cwd", &self.cwd)
            .field("pending", &self.pending)
            .finish()
    }
}

impl Shell {
    /// Starts a shell and waits until it is ready for its first command.
    pub async fn spawn(config: ShellConfig) -> Result<Shell> {
        let nonce = nonce();
        let mut shell = tokio::task::spawn_blocking(move || start(config, &nonce))
            .await
            .map_err(|e| Error::Spawn(format!("spawn task failed: {e}")))??;
        let deadline = Instant::now() + START_TIMEOUT;
        shell.pending = Some(Pending { nonce: String::new(), kept: false });
        let wake = shell.wait(deadline, None).await;
        // The shell holds the pipe open (or never will): its name is not to be found again.
        if let Some(path) = shell.records_path.take() {
            let _ = std::fs::remove_file(path);
        }
        match wake {
            Wake::Finished => {
                let f = shell.take_finished();
                shell.cwd = f.cwd;
                shell.pending = None;
                // bash at its prompt holds the terminal's foreground.
                let group = shell.foreground_group();
                if group > 0 {
                    shell.leader = group;
                }
                Ok(shell)
            }
            Wake::Exited => {
                let exit = shell.drain_exit().await;
                let (text, _) = shell.shared.tty.lock().transcript.take_output();
                Err(Error::Spawn(format!("the shell exited while starting ({exit}): {}", text.trim())))
            }
            Wake::Deadline | Wake::Settled => {
                Err(Error::Spawn(format!("the shell was not ready within {}s", START_TIMEOUT.as_secs())))
            }
        }
    }

    /// The process started for the shell (also its session id): bash itself, or the wrapper
    /// (a jail) bash runs under.
    pub fn pid(&self) -> u32 {
        self.pid as u32
    }

    /// bash's own process id as this process sees it (not as `$$` inside a PID namespace).
    pub fn bash_pid(&self) -> u32 {
        self.leader as u32
    }

    /// The shell's working directory after the last command.
    pub fn cwd(&self) -> &str {
        &self.cwd
    }

    /// Whether the shell is still there. A dead shell answers every call with an error.
    pub fn is_alive(&self) -> bool {
        self.alive
    }

    /// Whether a command kept at its timeout is still running.
    pub fn is_running(&self) -> bool {
        self.pending.as_ref().is_some_and(|p| p.kept) && !self.shared.tty.lock().transcript.is_finished()
    }

    /// How the shell was started.
    pub fn config(&self) -> &ShellConfig {
        &self.config
    }

    /// Runs `command` (any bash text, several lines, heredocs) and waits for it, at most
    /// `timeout`; then interrupts it or keeps it running, as `on_timeout` says.
    pub async fn run(&mut self, command: &str, timeout: Duration, on_timeout: OnTimeout) -> Result<Outcome> {
        let start = Instant::now();
        let deadline = start + timeout;
        self.ready().await?;
        let nonce = nonce();
        let line = match inline_line(&nonce, command) {
            Some(line) => line,
            None => {
                let path = self.write_script(command.to_owned()).await?;
                source_line(&nonce, &path)
            }
        };
        // A program may have left echo on (`stty sane`): the command line must not show.
        let _ = quiet_terminal(self.master_fd);
        self.shared.tty.lock().transcript.begin(&nonce);
        self.pending = Some(Pending { nonce, kept: false });
        let wake =
            if self.send(line.as_bytes(), deadline).await? { self.wait(deadline, None).await } else { Wake::Deadline };
        match wake {
            Wake::Finished => Ok(self.finished(start, false)),
            Wake::Exited => Err(self.exited(start).await),
            Wake::Deadline | Wake::Settled => match on_timeout {
                OnTimeout::Keep => {
                    self.pending.as_mut().expect("a command is pending").kept = true;
                    Ok(self.partial(start, true))
                }
                OnTimeout::Interrupt => self.stop_foreground(start, true).await,
            },
        }
    }

    /// Types `text` into the running command (`\n` is Enter) and waits at most `wait` for it to
    /// finish or to answer (output, then [`SETTLE`] of quiet).
    pub async fn write(&mut self, text: &str, wait: Duration) -> Result<Outcome> {
        let start = Instant::now();
        let deadline = start + wait;
        self.check_alive()?;
        let Some(pending) = self.pending.as_mut() else { return Err(Error::Idle) };
        pending.kept = true;
        if self.shared.tty.lock().transcript.is_finished() {
            // It ended since the last call: typing now would reach the shell instead.
            return Ok(self.finished(start, false));
        }
        let wake = if self.send(text.as_bytes(), deadline).await? {
            self.wait(deadline, Some(SETTLE)).await
        } else {
            Wake::Deadline
        };
        match wake {
            Wake::Finished => Ok(self.finished(start, false)),
            Wake::Exited => Err(self.exited(start).await),
            Wake::Deadline | Wake::Settled => Ok(self.partial(start, false)),
        }
    }

    /// Interrupts the running command (Ctrl-C, then SIGKILL after [`INTERRUPT_GRACE`]) and returns
    /// its last output and exit code. With nothing running, answers at once with no exit code.
    pub async fn interrupt(&mut self) -> Result<Outcome> {
        let start = Instant::now();
        self.check_alive()?;
        if self.pending.is_none() {
            return Ok(self.partial(start, false));
        }
        self.stop_foreground(start, false).await
    }

    /// Kills the shell and everything it started, and reaps them.
    pub async fn close(mut self) {
        let pid = self.pid;
        let reaped = !self.alive || self.shared.tty.lock().exit.is_some();
        let threads = std::mem::take(&mut self.threads);
        let scratch = self.scratch.take();
        self.stop = None;
        self.alive = false;
        let done = tokio::task::spawn_blocking(move || {
            process::kill_tree(pid, reaped, Duration::from_millis(500));
            for t in threads {
                let _ = t.join();
            }
            if let Some(dir) = scratch {
                let _ = std::fs::remove_dir_all(dir);
            }
        });
        let _ = done.await;
        // Drop has nothing left to do: `alive` is false.
    }

    // ---- the steps -----------------------------------------------------------------------

    fn check_alive(&self) -> Result<()> {
        if self.alive {
            Ok(())
        } else {
            Err(Error::Closed)
        }
    }

    /// Makes the shell ready for a new command: refuses when one is kept running, and stops one
    /// that a cancelled call left behind.
    async fn ready(&mut self) -> Result<()> {
        self.check_alive()?;
        if self.shared.tty.lock().exit.is_some() {
            // Killed from outside, or ended by a job, since the last call.
            return Err(match self.exited(Instant::now()).await {
                Error::Exited { reason, partial } => {
                    Error::Exited { reason: format!("{reason} since the last call"), partial }
                }
                other => other,
            });
        }
        if self.pending.is_some() && self.shared.tty.lock().transcript.is_finished() {
            // A kept command that has ended since: its last output is dropped with it.
            self.pending = None;
            let _ = self.shared.tty.lock().transcript.take_finished();
        }
        match &self.pending {
            None => Ok(()),
            Some(p) if p.kept => Err(Error::Busy),
            Some(_) => {
                let outcome = self.stop_foreground(Instant::now(), false).await?;
                if self.alive {
                    Ok(())
                } else {
                    Err(Error::Exited {
                        reason: "the shell did not recover from a cancelled command and was killed".into(),
                        partial: Box::new(outcome),
                    })
                }
            }
        }
    }

    /// Interrupts the foreground program, kills it if it ignores that, and waits for the
    /// shell's marker; as a last resort kills the shell (then `alive` is false).
    async fn stop_foreground(&mut self, start: Instant, timed_out: bool) -> Result<Outcome> {
        if self.shared.tty.lock().transcript.is_finished() {
            return Ok(self.finished(start, timed_out));
        }
        self.signal_foreground();
        match self.wait(Instant::now() + INTERRUPT_GRACE, None).await {
            Wake::Finished => {
                let mut outcome = self.finished(start, timed_out);
                // bash ends a line after a job killed by SIGINT, as the terminal showed `^C`.
                if outcome.exit_code == Some(130) && (outcome.output.ends_with("\n\n") || outcome.output == "\n") {
                    outcome.output.pop();
                }
                return Ok(outcome);
            }
            Wake::Exited => return Err(self.exited(start).await),
            Wake::Deadline | Wake::Settled => {}
        }
        let group = self.foreground_group();
        if group > 0 && group != self.leader {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe { libc::kill(-group, libc::SIGKILL) };
            match self.wait(Instant::now() + KILL_GRACE, None).await {
                Wake::Finished => return Ok(self.finished(start, timed_out)),
                Wake::Exited => return Err(self.exited(start).await),
                Wake::Deadline | Wake::Settled => {}
            }
        }
        if group == self.leader {
            // The shell is in the foreground: either at its prompt, having never read the whole
            // command line (a call cancelled while typing it), or running a builtin that ignores
            // SIGINT. A fresh nonce tells which: the line only sets it, and the shell reports.
            let nonce = nonce();
            self.shared.tty.lock().transcript.expect(&nonce);
            let line = format!("__af_n={nonce}\n");
            if self.send(line.as_bytes(), Instant::now() + INTERRUPT_GRACE).await? {
                match self.wait(Instant::now() + INTERRUPT_GRACE, None).await {
                    Wake::Finished => {
                        let mut outcome = self.finished(start, timed_out);
                        outcome.exit_code = None;
                        return Ok(outcome);
                    }
                    Wake::Exited => return Err(self.exited(start).await),
                    Wake::Deadline | Wake::Settled => {}
                }
            }
        }
        // The shell itself ignores SIGINT (a builtin loop under `trap '' INT`) or is wedged.
        let mut outcome = self.partial(start, timed_out);
        outcome.running = false;
        self.kill().await;
        Ok(outcome)
    }

    /// Ctrl-C as the terminal would send it (which also drops typed-ahead input), or SIGINT to
    /// the foreground group when the program turned the terminal's signals off.
    fn signal_foreground(&self) {
        let fd = self.master_fd;
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

    fn foreground_group(&self) -> i32 {
        // SAFETY: tcgetpgrp on the open PTY master.
        unsafe { libc::tcgetpgrp(self.master_fd) }
    }

    /// Waits for the pending marker, the shell's death, the deadline, or (with `settle`) output
    /// followed by that much quiet.
    async fn wait(&self, deadline: Instant, settle: Option<Duration>) -> Wake {
        let mut fed = self.shared.tty.lock().transcript.fed();
        let baseline = fed;
        let mut last_change = Instant::now();
        loop {
            let notified = self.shared.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let tty = self.shared.tty.lock();
                if tty.transcript.is_finished() {
                    return Wake::Finished;
                }
                if tty.exit.is_some() || tty.eof {
                    return Wake::Exited;
                }
                let now_fed = tty.transcript.fed();
                if now_fed != fed {
                    fed = now_fed;
                    last_change = Instant::now();
                }
            }
            let mut until = deadline;
            if let Some(settle) = settle.filter(|_| fed > baseline) {
                let quiet_at = last_change + settle;
                if quiet_at <= Instant::now() {
                    return Wake::Settled;
                }
                until = until.min(quiet_at);
            }
            if Instant::now() >= deadline {
                return Wake::Deadline;
            }
            let _ = tokio::time::timeout_at(until.into(), notified).await;
        }
    }

    /// Writes bytes to the terminal; false if the deadline came first.
    async fn send(&self, mut bytes: &[u8], deadline: Instant) -> Result<bool> {
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

    fn take_finished(&self) -> Finished {
        self.shared.tty.lock().transcript.take_finished().expect("the marker arrived")
    }

    fn finished(&mut self, start: Instant, timed_out: bool) -> Outcome {
        let f = self.take_finished();
        self.pending = None;
        self.cwd = f.cwd;
        Outcome {
            output: f.text,
            truncated: f.truncated,
            exit_code: Some(f.status),
            cwd: self.cwd.clone(),
            timed_out,
            running: false,
            duration: start.elapsed(),
        }
    }

    fn partial(&self, start: Instant, timed_out: bool) -> Outcome {
        let (output, truncated) = self.shared.tty.lock().transcript.take_output();
        Outcome {
            output,
            truncated,
            exit_code: None,
            cwd: self.cwd.clone(),
            timed_out,
            running: self.pending.is_some(),
            duration: start.elapsed(),
        }
    }

    /// Waits for the reader to drain a dead shell's last output; the exit status.
    async fn drain_exit(&self) -> Exit {
        let deadline = Instant::now() + DRAIN;
        loop {
            let notified = self.shared.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let tty = self.shared.tty.lock();
                if let (true, Some(exit)) = (tty.eof, tty.exit) {
                    return exit;
                }
                if Instant::now() >= deadline {
                    return tty.exit.unwrap_or(Exit { code: -1, signal: None });
                }
            }
            let _ = tokio::time::timeout_at(deadline.into(), notified).await;
        }
    }

    /// The shell died during a call: its last output, and everything it left is ended.
    async fn exited(&mut self, start: Instant) -> Error {
        let exit = self.drain_exit().await;
        let mut partial = self.partial(start, false);
        partial.running = false;
        partial.exit_code = Some(exit.code);
        self.pending = None;
        self.kill().await;
        // A wrapper (a jail's bwrap) passes on a signal's death as the status 128 + signal.
        let how = match (exit.signal, self.config.wrapper.is_empty()) {
            (None, false) if (129..=128 + 64).contains(&exit.code) => format!("killed by signal {}", exit.code - 128),
            _ => exit.to_string(),
        };
        Error::Exited { reason: format!("the shell exited ({how})"), partial: Box::new(partial) }
    }

    async fn kill(&mut self) {
        self.alive = false;
        let pid = self.pid;
        let reaped = self.shared.tty.lock().exit.is_some();
        let _ = tokio::task::spawn_blocking(move || process::kill_tree(pid, reaped, Duration::from_millis(500))).await;
    }

    async fn write_script(&mut self, command: String) -> Result<PathBuf> {
        let dir = scratch_dir(&self.config, self.scratch.as_deref());
        let path = dir.join("command.sh");
        let written = path.clone();
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            make_dir(&dir)?;
            std::fs::write(&written, command)
        })
        .await
        .map_err(|e| Error::Io(std::io::Error::other(e.to_string())))??;
        Ok(path)
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        // Once not alive, the shell was already ended (and its pid may be reused): leave it.
        // Otherwise end it here, children first so that it reaps them: this blocks for a few
        // milliseconds (bounded), on a path taken only when nobody called `close`.
        if self.alive {
            let reaped = self.shared.tty.lock().exit.is_some();
            process::kill_tree(self.pid, reaped, Duration::from_millis(100));
        }
        // Closing the stop pipe ends the reader; the waiter ends once the shell is reaped.
        self.stop = None;
        if let Some(path) = self.records_path.take() {
            let _ = std::fs::remove_file(path);
        }
        if let Some(dir) = self.scratch.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Spawns the shell and its threads (blocking: runs on the blocking pool).
fn start(config: ShellConfig, init_nonce: &str) -> Result<Shell> {
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
    let own_scratch = config.scratch_dir.is_none().then(|| scratch_dir(&config, None));
    let dir = scratch_dir(&config, own_scratch.as_deref());
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
    let env = if config.wrapper.is_empty() { environment(&config) } else { config.wrapper_env.clone() };
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
    Ok(Shell {
        pid,
        leader: pid,
        _master: Mutex::new(pair.master),
        master_fd,
        writer,
        shared,
        stop: Some(stop_write),
        threads: shell_threads,
        pending: None,
        cwd: cwd.display().to_string(),
        alive: true,
        records_path: made.records.take(),
        scratch: made.scratch.take(),
        config,
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
fn scratch_dir(config: &ShellConfig, own: Option<&Path>) -> PathBuf {
    match (&config.scratch_dir, own) {
        (Some(dir), _) => dir.clone(),
        (None, Some(dir)) => dir.to_owned(),
        (None, None) => std::env::temp_dir().join(format!("agentflow-bash-{}-{}", std::process::id(), nonce())),
    }
}

/// Makes `dir` (mode 0700) unless it is there.
fn make_dir(dir: &Path) -> std::io::Result<()> {
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

/// Variables of this process a shell inherits; nothing else of the server's environment (its
/// API key, its own settings) reaches a shell.
const INHERITED: &[&str] = &["PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ"];

/// The shell's whole environment: the few variables of this process that a shell needs
/// (`PATH`, `HOME`, the locale: [`INHERITED`] and `LC_*`), the defaults that keep programs from
/// waiting on a terminal (`TERM=dumb`, pagers, editors), then the config's own `env`.
pub fn environment(config: &ShellConfig) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> =
        std::env::vars().filter(|(k, _)| INHERITED.contains(&k.as_str()) || k.starts_with("LC_")).collect();
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()));
    }
    for (key, value) in [
        ("TERM", "dumb"),
        ("PAGER", "cat"),
        ("GIT_PAGER", "cat"),
        ("MANPAGER", "cat"),
        ("SYSTEMD_PAGER", "cat"),
        ("EDITOR", "false"),
        ("VISUAL", "false"),
        ("NO_COLOR", "1"),
        ("GIT_TERMINAL_PROMPT", "0"),
        ("DEBIAN_FRONTEND", "noninteractive"),
        ("PIP_NO_INPUT", "1"),
    ] {
        env.push((key.into(), value.into()));
    }
    for (key, value) in &config.env {
        // Variables that would take over the marker or the prompt are not the session's to set.
        if !["PROMPT_COMMAND", "PS0", "PS1", "PS2", "PS4", "BASH_ENV", "ENV"].contains(&key.as_str()) {
            env.retain(|(k, _)| k != key);
            env.push((key.clone(), value.clone()));
        }
    }
    env
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

/// A random nonce: 128 bits, hex.
pub(crate) fn nonce() -> String {
    let mut bytes = [0u8; 16];
    let mut filled = 0;
    while filled < bytes.len() {
        // SAFETY: writes into the live remainder of `bytes`.
        let n = unsafe { libc::getrandom(bytes[filled..].as_mut_ptr().cast(), bytes.len() - filled, 0) };
        if n > 0 {
            filled += n as usize;
        } else if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            // No kernel randomness: fall back on std's randomly keyed hasher.
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(Instant::now().elapsed().as_nanos() ^ u128::from(std::process::id()));
            bytes[..8].copy_from_slice(&h.finish().to_le_bytes());
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")));
            bytes[8..].copy_from_slice(&h.finish().to_le_bytes());
            break;
        }
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The shell's set-up, typed once: its record pipe, the report function, no prompt, no
/// history, no pagers.
fn init_line(nonce: &str, records: &Path) -> String {
    let records = records.display().to_string().replace('\'', "'\\''");
    [
        // The record pipe, on a descriptor of the shell's own (commands run without it).
        &format!("exec {{__af_fd}}>'{records}'; readonly __af_fd SRANDOM") as &str,
        // The report, after each command: the record (the command's nonce, a token drawn now,
        // `$?` and `$PWD`) to the pipe, then the marker with the token on the terminal.
        &format!(
            "__af_p() {{ __af_rc=$?; PS1=''; PS0=''; local t=$SRANDOM$SRANDOM; \
             builtin printf '%s;%s;%s;%s\\0' \"$__af_n\" \"$t\" \"$__af_rc\" \"$PWD\" >&\"$__af_fd\"; \
             builtin printf '\\033]{MARKER_OSC};%s\\007' \"$t\"; }}"
        ),
        // Restores `$?` for the next command.
        "__af_r() { return \"$1\"; }",
        "readonly -f __af_p __af_r",
        // Pagers run by hand print instead.
        "less() { local a f=(); for a; do [[ $a == [-+]?* ]] || f+=(\"$a\"); done; command cat -- \"${f[@]}\"; }",
        "more() { less \"$@\"; }",
        "PS1=''; PS2=''; PS0=''; set +o history +H; unset HISTFILE MAILCHECK",
        &format!("__af_n={nonce}; __af_rc=0; readonly PROMPT_COMMAND=__af_p\n"),
    ]
    .join("; ")
}

/// The line that runs `command` typed on the terminal, if it fits on one line: the command as a
/// bash `$'…'` word given to `eval`, so that no byte of it is taken by the terminal's line editing.
fn inline_line(nonce: &str, command: &str) -> Option<String> {
    if command.len() > INLINE_MAX {
        return None;
    }
    let mut quoted = String::with_capacity(command.len() + 16);
    for c in command.chars() {
        match c {
            '\\' => quoted.push_str("\\\\"),
            '\'' => quoted.push_str("\\'"),
            '\n' => quoted.push_str("\\n"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => quoted.push_str(&format!("\\x{:02x}", c as u32)),
            c => quoted.push(c),
        }
    }
    if quoted.len() > INLINE_MAX {
        return None;
    }
    Some(format!("{} eval $'{quoted}' {{__af_fd}}>&-\n", prologue(nonce)))
}

/// The line that runs a command saved in `path`.
fn source_line(nonce: &str, path: &Path) -> String {
    let path = path.display().to_string().replace('\'', "'\\''");
    format!("{} . '{path}' {{__af_fd}}>&-\n", prologue(nonce))
}

/// Sets the nonce and restores `$?` before the command.
fn prologue(nonce: &str) -> String {
    format!("__af_n={nonce}; __af_r \"$__af_rc\";")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_differ() {
        let a = nonce();
        assert_eq!(a.len(), 32);
        assert_ne!(a, nonce());
    }

    #[test]
    fn quoting_round_trips_through_bash() {
        let command = "printf '%s|' \"a\\\\b\" 'it'\"'\"'s' $'tab\\there' é€😀\necho done\t\x01";
        let line = inline_line("n", command).unwrap();
        let eval = line.split_once(" eval ").unwrap().1.trim_end().trim_end_matches(" {__af_fd}>&-");
        // bash decodes the $'…' word back into the command.
        let out = std::process::Command::new("bash")
            .args(["-c", &format!("printf %s {eval}")])
            .output()
            .expect("bash is installed");
        assert_eq!(String::from_utf8(out.stdout).unwrap(), command);
        assert!(inline_line("n", &"x".repeat(INLINE_MAX + 1)).is_none());
    }
}

#[cfg(test)]
mod shell_tests {
    use super::*;

    const T: Duration = Duration::from_secs(10);

    async fn shell() -> Shell {
        Shell::spawn(ShellConfig::default()).await.expect("bash starts")
    }

    #[tokio::test]
    async fn runs_commands_with_state_and_exit_codes() {
        let mut sh = shell().await;
        let out = sh.run("echo hi", T, OnTimeout::Interrupt).await.unwrap();
        assert_eq!((out.output.as_str(), out.exit_code), ("hi\n", Some(0)));
        sh.run("cd /tmp; X=5; f() { echo f$1; }", T, OnTimeout::Interrupt).await.unwrap();
        let out = sh.run("f $X; pwd; false", T, OnTimeout::Interrupt).await.unwrap();
        assert_eq!((out.output.as_str(), out.exit_code, out.cwd.as_str()), ("f5\n/tmp\n", Some(1), "/tmp"));
        let out = sh.run("echo $?", T, OnTimeout::Interrupt).await.unwrap();
        assert_eq!(out.output, "1\n");
        let out = sh.run("nosuchcommand_xyz", T, OnTimeout::Interrupt).await.unwrap();
        assert_eq!(out.exit_code, Some(127));
        sh.close().await;
    }

    #[tokio::test]
    async fn a_timeout_interrupts_and_the_shell_goes_on() {
        let mut sh = shell().await;
        let start = Instant::now();
        let out = sh.run("echo before; sleep 100", Duration::from_secs(1), OnTimeout::Interrupt).await.unwrap();
        assert!(start.elapsed() < Duration::from_secs(2), "took {:?}", start.elapsed());
        assert_eq!((out.timed_out, out.running, out.exit_code), (true, false, Some(130)));
        assert_eq!(out.output, "before\n");
        let out = sh.run("echo ok", T, OnTimeout::Interrupt).await.unwrap();
        assert_eq!(out.output, "ok\n");
        sh.close().await;
    }

    #[tokio::test]
    async fn a_command_line_cut_short_is_recovered() {
        let mut sh = shell().await;
        // As if a call had been cancelled while typing its command line.
        let n = nonce();
        sh.shared.tty.lock().transcript.begin(&n);
        sh.pending = Some(Pending { nonce: n.clone(), kept: false });
        let half = inline_line(&n, "echo never").unwrap();
        assert!(sh.send(&half.as_bytes()[..half.len() / 2], Instant::now() + T).await.unwrap());
        let start = Instant::now();
        let out = sh.run("echo recovered", T, OnTimeout::Interrupt).await.unwrap();
        assert_eq!((out.output.as_str(), out.exit_code), ("recovered\n", Some(0)));
        assert!(start.elapsed() < Duration::from_secs(2), "took {:?}", start.elapsed());
        assert!(sh.is_alive());
        sh.close().await;
    }
}
