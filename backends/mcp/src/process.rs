//! A stdio server's process: started in a process group of its own with a clean environment
//! and a mark, its stderr's tail kept, and its whole tree killed when it is stopped.
//!
//! The environment is the host's `PATH`, `HOME`, user, locale and `TERM` (what the MCP SDKs give
//! a stdio server by default), the server's own variables over them, and `AGENTFLOW_MCP=<token>`,
//! which every descendant inherits: a process that leaves the group (`setsid`, a daemon's double
//! fork) still carries it. Stopping kills the group, then every process of the machine that
//! carries the token (a scan of `/proc/*/environ`) until none is left. A process that scrubs its
//! own environment and leaves the group escapes: that is what a jail (`Launch::wrapper`, whose
//! PID namespace dies with its first process) is for. The server also gets `SIGKILL` if the thread
//! that started it dies (`PR_SET_PDEATHSIG`), so an engine that is killed leaves no server behind.

use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::io::AsyncReadExt;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

use crate::server::Launch;

/// The variable that marks a server's processes.
pub(crate) const MARK: &str = "AGENTFLOW_MCP";
/// The host variables a server keeps.
const KEPT: &[&str] = &["PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ", "SHELL", "TERM"];
/// How much of its stderr is kept (the tail).
const STDERR_KEPT: usize = 8 * 1024;
/// How many of its last stderr lines an error quotes.
const STDERR_LINES: usize = 12;
/// How long a sweep keeps killing marked processes that keep appearing.
const SWEEP_DEADLINE: Duration = Duration::from_secs(2);

/// The last bytes a process wrote to stderr.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tail(Arc<Mutex<VecDeque<u8>>>);

impl Tail {
    fn push(&self, bytes: &[u8]) {
        let mut kept = self.0.lock();
        kept.extend(bytes);
        let excess = kept.len().saturating_sub(STDERR_KEPT);
        kept.drain(..excess);
    }

    /// Its last lines, as text.
    pub(crate) fn last_lines(&self) -> String {
        let kept = self.0.lock();
        let text = String::from_utf8_lossy(&kept.iter().copied().collect::<Vec<u8>>()).into_owned();
        let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
        lines[lines.len().saturating_sub(STDERR_LINES)..].join("\n")
    }
}

/// A started server process.
#[derive(Debug)]
pub(crate) struct Process {
    child: Child,
    pid: u32,
    /// Whether it has been reaped: its pid (and group id) may then name another process.
    reaped: bool,
    token: String,
    pub(crate) stderr: Tail,
}

impl Process {
    /// Starts `launch`, returning the process and its stdout and stdin.
    pub(crate) fn spawn(launch: &Launch) -> std::io::Result<(Process, ChildStdout, ChildStdin)> {
        let token = random_token()?;
        let mut argv: Vec<std::ffi::OsString> = launch.wrapper.clone();
        argv.push(launch.program.clone().into_os_string());
        argv.extend(launch.args.iter().cloned());
        let mut command = Command::new(&argv[0]);
        command.args(&argv[1..]);
        command.env_clear();
        if launch.wrapper.is_empty() {
            for name in KEPT {
                if let Some(value) = std::env::var_os(name) {
                    command.env(name, value);
                }
            }
            command.envs(launch.env.iter().map(|(k, v)| (k, v)));
        } else {
            // The wrapper (a jail) sets the server's environment inside itself.
            command.envs(launch.wrapper_env.iter().map(|(k, v)| (k, v)));
        }
        command.env(MARK, &token);
        if let Some(dir) = &launch.cwd {
            command.current_dir(dir);
        }
        command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        command.process_group(0).kill_on_drop(true);
        // SAFETY: prctl is async-signal-safe; the closure touches nothing of the parent.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command.spawn()?;
        let pid = child.id().unwrap_or_default();
        let (stdout, stdin, mut err) = match (child.stdout.take(), child.stdin.take(), child.stderr.take()) {
            (Some(o), Some(i), Some(e)) => (o, i, e),
            _ => return Err(std::io::Error::other("the server's pipes were not made")),
        };
        let stderr = Tail::default();
        let tail = stderr.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = err.read(&mut buf).await {
                tail.push(&buf[..n]);
            }
        });
        Ok((Process { child, pid, reaped: false, token, stderr }, stdout, stdin))
    }

    /// Its pid (the wrapper's, for a jailed server).
    pub(crate) fn pid(&self) -> u32 {
        self.pid
    }

    /// How it ended, if it has.
    pub(crate) fn ended(&mut self) -> Option<std::process::ExitStatus> {
        let status = self.child.try_wait().ok().flatten();
        self.reaped |= status.is_some();
        status
    }

    /// Kills its process group, unless it has been reaped (the group's processes carry the
    /// mark, which the sweep finds without the pid).
    fn kill_group(&self) {
        if !self.reaped {
            // SAFETY: plain syscall on the group this crate made, whose leader is not reaped.
            unsafe { libc::kill(-(self.pid as libc::pid_t), libc::SIGKILL) };
        }
    }

    /// Kills its group and every process carrying its mark, then reaps it (blocking: reads
    /// `/proc`; call off the async threads).
    pub(crate) fn kill_tree(&mut self) {
        self.kill_group();
        let mark = format!("{MARK}={}", self.token).into_bytes();
        let deadline = Instant::now() + SWEEP_DEADLINE;
        loop {
            let marked = marked_processes(&mark);
            if marked.is_empty() || Instant::now() >= deadline {
                break;
            }
            for pid in marked {
                // SAFETY: plain syscall; the pid was just read from /proc with this token.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let _ = self.child.start_kill();
        // The child is ours: reap it now that it is dead (a zombie otherwise, until drop).
        for _ in 0..500 {
            if self.ended().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        // The group at least; a stop (`Server::stop`) also sweeps what left it.
        self.kill_group();
    }
}

/// The live processes (not zombies) with `mark` in their environment.
fn marked_processes(mark: &[u8]) -> Vec<u32> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    let me = std::process::id();
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me && carries(pid, mark) && !is_zombie(pid))
        .collect()
}

/// Whether process `pid` has `mark` (`NAME=value`) in its environment.
fn carries(pid: u32, mark: &[u8]) -> bool {
    std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| env.split(|&b| b == 0).any(|entry| entry == mark))
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with('Z')))
        .unwrap_or(true)
}

/// 16 random bytes from the kernel, as hex.
fn random_token() -> std::io::Result<String> {
    let mut bytes = [0u8; 16];
    // SAFETY: getrandom writes at most `len` bytes into the live buffer.
    let n = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if n != bytes.len() as isize {
        return Err(std::io::Error::other("getrandom gave too few bytes"));
    }
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tail_keeps_the_last_lines_within_its_bound() {
        let tail = Tail::default();
        for i in 0..5000 {
            tail.push(format!("line {i}\n").as_bytes());
        }
        assert!(tail.0.lock().len() <= STDERR_KEPT);
        let last = tail.last_lines();
        assert_eq!(last.lines().count(), STDERR_LINES);
        assert!(last.ends_with("line 4999"), "{last}");
    }
}
