//! The [`Shell`]: one `bash` on a pseudo-terminal, driven one command at a time.
//!
//! It owns a shell's life and its calls: starting it and waiting until it is ready, running a
//! command, typing into one kept running, interrupting, closing; and what each call returns
//! (an [`Outcome`]). The terminal, its pump and the spawn are in `pty`; the lines typed
//! into the shell (its set-up, each command with its nonce) and its environment in `command`.
//!
//! `bash` runs with no rc files, no line editing, no echo, pagers and editors disabled, no
//! prompt but the end-of-command marker. Each command is sent with a fresh random nonce, and
//! ends when the shell reports that nonce (from `PROMPT_COMMAND`, so it also comes after an
//! interrupt). Timeouts interrupt the foreground process group, then kill it, and wait for the
//! report again, so the shell is in step before a call returns. It knows nothing of sessions,
//! JSON or tool names: `src/backends/bash.rs` adapts it to the engine.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::command::{inline_line, nonce, nonce_line, source_line};
use crate::process;
use crate::pty::{make_dir, scratch_dir, start, Exit, Shared, Started, Terminal};
use crate::transcript::Finished;
use crate::{Error, Result};

/// How long a foreground program has to die of SIGINT before it gets SIGKILL.
pub const INTERRUPT_GRACE: Duration = Duration::from_millis(300);
/// How long the shell has to print its marker after its foreground program got SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(1);
/// How long a new shell has to become ready.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// How quiet a running program must be, after answering input, for `write` to return.
pub const SETTLE: Duration = Duration::from_millis(100);
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
    /// from a clean environment ([`environment`](crate::environment)), never the whole of this process's.
    pub env: Vec<(String, String)>,
    /// With a `wrapper`: the environment of the wrapper process itself, which is then
    /// responsible for giving the shell [`environment`](crate::environment) (a jail sets it inside).
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
    /// The terminal, as this side holds it.
    term: Terminal,
    shared: Arc<Shared>,
    /// Dropping it stops the pump reading (it still reaps the shell).
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// The task that serves the terminal and reaps the shell.
    pump: Option<tokio::task::JoinHandle<()>>,
    /// Where its processes are found when it is ended.
    members: process::Members,
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
    fn new(s: Started, config: ShellConfig) -> Shell {
        Shell {
            pid: s.pid,
            leader: s.pid,
            records_path: s.records_path,
            term: s.term,
            shared: s.shared,
            stop: Some(s.stop),
            pump: Some(s.pump),
            members: process::Members::Scan,
            pending: None,
            cwd: s.cwd,
            alive: true,
            scratch: s.scratch,
            config,
        }
    }

    /// Starts a shell and waits until it is ready for its first command.
    pub async fn spawn(config: ShellConfig) -> Result<Shell> {
        let nonce = nonce();
        let mut shell = crate::blocking(move || start(&config, &nonce).map(|s| Shell::new(s, config))).await??;
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
                let group = shell.term.foreground_group();
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
        let _ = self.term.quiet();
        self.shared.tty.lock().transcript.begin(&nonce);
        self.pending = Some(Pending { nonce, kept: false });
        let wake = if self.term.send(line.as_bytes(), deadline).await? {
            self.wait(deadline, None).await
        } else {
            Wake::Deadline
        };
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
        let wake = if self.term.send(text.as_bytes(), deadline).await? {
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

    /// Says that the shell's session has a cgroup, whose `cgroup.procs` is `procs_file` and
    /// which ends whatever is left in it after the shell: ending the shell then reads that list
    /// instead of every process of the machine.
    pub fn track(&mut self, procs_file: PathBuf) {
        self.members = process::Members::Cgroup(procs_file);
    }

    /// Kills the shell and everything it started, and reaps them.
    pub async fn close(mut self) {
        let pid = self.pid;
        let reaped = !self.alive || self.shared.tty.lock().exit.is_some();
        let pump = self.pump.take();
        let scratch = self.scratch.take();
        let members = std::mem::take(&mut self.members);
        self.stop = None;
        self.alive = false;
        let done = crate::blocking(move || {
            process::kill_tree(pid, reaped, Duration::from_millis(500), &members);
            if let Some(dir) = scratch {
                let _ = std::fs::remove_dir_all(dir);
            }
        });
        let _ = done.await;
        // The pump ends once the shell is reaped, which its death makes prompt.
        if let Some(pump) = pump {
            let _ = tokio::time::timeout(Duration::from_secs(2), pump).await;
        }
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
        self.term.signal_foreground();
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
        let group = self.term.foreground_group();
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
            let line = nonce_line(&nonce);
            if self.term.send(line.as_bytes(), Instant::now() + INTERRUPT_GRACE).await? {
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
        let members = self.members.clone();
        let _ = crate::blocking(move || process::kill_tree(pid, reaped, Duration::from_millis(500), &members)).await;
    }

    async fn write_script(&mut self, command: String) -> Result<PathBuf> {
        let dir = scratch_dir(&self.config, self.scratch.as_deref());
        if self.config.scratch_dir.is_none() {
            // A private directory, made on first use and removed with the shell.
            self.scratch = Some(dir.clone());
        }
        let path = dir.join("command.sh");
        let written = path.clone();
        crate::blocking(move || -> std::io::Result<()> {
            make_dir(&dir)?;
            std::fs::write(&written, command)
        })
        .await??;
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
            process::kill_tree(self.pid, reaped, Duration::from_millis(100), &self.members);
        }
        // The pump stops reading, and ends once the shell is reaped.
        self.stop = None;
        if let Some(path) = self.records_path.take() {
            let _ = std::fs::remove_file(path);
        }
        if let Some(dir) = self.scratch.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
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
        assert!(sh.term.send(&half.as_bytes()[..half.len() / 2], Instant::now() + T).await.unwrap());
        let start = Instant::now();
        let out = sh.run("echo recovered", T, OnTimeout::Interrupt).await.unwrap();
        assert_eq!((out.output.as_str(), out.exit_code), ("recovered\n", Some(0)));
        assert!(start.elapsed() < Duration::from_secs(2), "took {:?}", start.elapsed());
        assert!(sh.is_alive());
        sh.close().await;
    }
}
