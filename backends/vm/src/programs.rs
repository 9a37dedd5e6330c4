//! The programs a desktop runs: its window manager, its start-up commands and what is launched
//! on it, each found again by a mark in its environment and killed with the desktop.
//!
//! Every program starts with a clean environment (the host's `PATH`, `HOME`, user and locale,
//! nothing else of the engine's) plus the desktop's: `DISPLAY`, `XAUTHORITY`, the buses' addresses
//! and the variables that turn accessibility on ([`Programs::set`]), and one variable of its own,
//! `AGENTFLOW_DESKTOP=<token>`, which every descendant inherits: a program that double-forks or
//! leaves its process group still carries it. Stopping the desktop kills every process of the
//! user that carries the token (a scan of `/proc/*/environ`), until none is left, and reaps the
//! direct children. A program that scrubs its own environment escapes the sweep: this is a
//! desktop, not a jail.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::xvfb::{anonymous_file, file_tail, private_dir, random_bytes};

/// The variable that marks a desktop's processes.
pub(crate) const MARK: &str = "AGENTFLOW_DESKTOP";
/// How long a sweep keeps killing processes that keep appearing (a fork bomb in a launched app).
const SWEEP_DEADLINE: Duration = Duration::from_secs(2);
/// How much of a failed program's stderr is quoted.
const STDERR_TAIL: usize = 1024;

/// The host variables a program keeps.
const KEPT: &[&str] = &["PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ", "SHELL"];
/// Whether a variable is the desktop's own business, not given to a shell that shares it: the
/// host's, the mark, and the private directories.
pub(crate) fn is_own(name: &str) -> bool {
    KEPT.contains(&name)
        || matches!(name, MARK | "XDG_RUNTIME_DIR" | "XDG_CONFIG_HOME" | "XDG_CACHE_HOME" | "XDG_DATA_HOME")
}

/// A launched program.
#[derive(Debug)]
struct Launched {
    child: Child,
    /// Its stderr: a file of no name, read back only to explain an early exit.
    stderr: std::fs::File,
}

/// The programs of one desktop. See the module documentation.
#[derive(Debug)]
pub(crate) struct Programs {
    token: String,
    /// The desktop's private directory (mode 0700): its programs' `XDG_RUNTIME_DIR`, with their
    /// config, cache and data homes in it; removed once they are all gone.
    dir: PathBuf,
    env: Vec<(OsString, OsString)>,
    children: Vec<Launched>,
}

impl Programs {
    /// Programs of a desktop on `display`, reached with the cookie in `xauthority`.
    pub(crate) fn new(display: &str, xauthority: Option<&std::path::Path>) -> Result<Programs> {
        let token = random_token()?;
        let mut env: Vec<(OsString, OsString)> =
            KEPT.iter().filter_map(|k| Some((OsString::from(k), std::env::var_os(k)?))).collect();
        if !env.iter().any(|(k, _)| k == "PATH") {
            env.push(("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()));
        }
        let dir = private_dir("agentflow-desktop")
            .map_err(|e| Error::Launch(format!("cannot make the desktop's directory: {e}")))?;
        let mut programs = Programs { token, env, dir, children: Vec::new() };
        programs.set("DISPLAY", display);
        // The programs' settings and caches stay with the desktop (openbox writes its log there;
        // apps their recent files), not in the host user's home.
        programs.set("XDG_RUNTIME_DIR", programs.dir.clone());
        for (name, sub) in [("XDG_CONFIG_HOME", "config"), ("XDG_CACHE_HOME", "cache"), ("XDG_DATA_HOME", "data")] {
            let path = programs.dir.join(sub);
            // Without it, a program makes it or does without.
            let _ = std::fs::create_dir(&path);
            programs.set(name, path);
        }
        if let Some(file) = xauthority {
            programs.set("XAUTHORITY", file);
        }
        let token = programs.token.clone();
        programs.set(MARK, &token);
        Ok(programs)
    }

    /// Sets a variable for every program started from now on.
    pub(crate) fn set(&mut self, name: &str, value: impl Into<OsString>) {
        let value = value.into();
        match self.env.iter_mut().find(|(k, _)| k == name) {
            Some(entry) => entry.1 = value,
            None => self.env.push((name.into(), value)),
        }
    }

    /// The desktop's private directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The environment a program of this desktop starts with.
    pub(crate) fn env(&self) -> &[(OsString, OsString)] {
        &self.env
    }

    /// A command for `program` with the desktop's environment, in a process group of its own
    /// (a signal meant for the engine's group does not reach it), stdin from `/dev/null`.
    pub(crate) fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        command.env_clear().envs(self.env.iter().map(|(k, v)| (k, v))).stdin(Stdio::null()).process_group(0);
        command
    }

    /// Starts `command_line` with `/bin/sh -c`; its pid.
    pub(crate) fn launch(&mut self, command_line: &str) -> Result<u32> {
        let mut command = self.command("/bin/sh");
        command.arg("-c").arg(command_line);
        self.spawn(command)
    }

    /// Starts a prepared [`Programs::command`], keeping it to be reaped; its pid.
    pub(crate) fn spawn(&mut self, mut command: Command) -> Result<u32> {
        self.reap();
        let stderr = anonymous_file().map_err(|e| Error::Launch(format!("cannot make a file for stderr: {e}")))?;
        let err = stderr.try_clone().map_err(|e| Error::Launch(format!("cannot keep stderr: {e}")))?;
        command.stdout(Stdio::null()).stderr(Stdio::from(err));
        let child =
            command.spawn().map_err(|e| Error::Launch(format!("cannot start {:?}: {e}", command.get_program())))?;
        let pid = child.id();
        self.children.push(Launched { child, stderr });
        Ok(pid)
    }

    /// How the launched program `pid` ended, if it has: its exit status and the last lines it
    /// printed on stderr.
    pub(crate) fn ended(&mut self, pid: u32) -> Option<(std::process::ExitStatus, String)> {
        let launched = self.children.iter_mut().find(|l| l.child.id() == pid)?;
        let status = launched.child.try_wait().ok().flatten()?;
        Some((status, file_tail(&launched.stderr, STDERR_TAIL)))
    }

    /// Reaps the launched programs that have exited.
    pub(crate) fn reap(&mut self) {
        self.children.retain_mut(|l| !matches!(l.child.try_wait(), Ok(Some(_)) | Err(_)));
    }

    fn mark(&self) -> Vec<u8> {
        format!("{MARK}={}", self.token).into_bytes()
    }

    /// Kills every process of this desktop and reaps the direct children. Idempotent.
    pub(crate) fn stop(&mut self) {
        let mark = self.mark();
        let deadline = Instant::now() + SWEEP_DEADLINE;
        for launched in &mut self.children {
            let _ = launched.child.kill();
        }
        loop {
            let marked = marked_processes(&mark);
            if marked.is_empty() || Instant::now() >= deadline {
                break;
            }
            for pid in marked {
                // SAFETY: plain syscall; the pid was just read from /proc with our token.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
            self.reap();
            std::thread::sleep(Duration::from_millis(2));
        }
        for launched in &mut self.children {
            let _ = launched.child.wait();
        }
        self.children.clear();
    }
}

impl Drop for Programs {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether process `pid` has `mark` (`NAME=value`) in its environment.
fn carries(pid: u32, mark: &[u8]) -> bool {
    std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| env.split(|&b| b == 0).any(|entry| entry == mark))
}

/// The live processes (not zombies) with `mark` in their environment.
fn marked_processes(mark: &[u8]) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    let me = std::process::id();
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me && carries(pid, mark) && !is_zombie(pid))
        .collect()
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with('Z')))
        .unwrap_or(true)
}

/// 16 random bytes from the kernel, as hex.
fn random_token() -> Result<String> {
    let mut bytes = [0u8; 16];
    random_bytes(&mut bytes).map_err(|e| Error::Launch(format!("cannot draw a token: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
