//! A server process that a [`Sandbox`](super::Sandbox) started (`auto_start_server`): finding the
//! `agentflow-sandbox` binary, spawning `serve` on the URL's host and port, and stopping it.
//!
//! It owns the child process only: waiting for `/health` is the sandbox's, serving is the
//! binary's. The child is stopped by SIGTERM (the server then destroys its sessions and exits 0),
//! SIGKILL after a grace; on `Drop` too, so no server outlives the sandbox that started it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::error::{Error, Result};

/// The binary's file name.
pub const BINARY: &str = "agentflow-sandbox";

/// How long a stopped server may take to exit before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Finds the server binary: `explicit` if given, else next to the current executable (or one
/// directory up, where cargo puts binaries beside `deps/` and `examples/`), else on `PATH`.
pub fn locate(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(path) = explicit {
        return if path.is_file() {
            Ok(path.to_owned())
        } else {
            Err(Error::Config(format!("server binary {} does not exist", path.display())))
        };
    }
    let mut candidates = Vec::new();
    if let Ok(exe) = std::env::current_exe() {
        if let Some(dir) = exe.parent() {
            candidates.push(dir.join(BINARY));
            if let Some(up) = dir.parent() {
                candidates.push(up.join(BINARY));
            }
        }
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path).map(|d| d.join(BINARY)));
    }
    candidates.into_iter().find(|p| p.is_file()).ok_or_else(|| {
        Error::Config(format!(
            "cannot find the '{BINARY}' binary next to this program or on PATH; set SandboxConfig::server_binary"
        ))
    })
}

/// A running `agentflow-sandbox serve` that this process started.
#[derive(Debug)]
pub struct ServerProcess {
    child: Option<Child>,
    binary: PathBuf,
}

impl ServerProcess {
    /// Starts `binary serve --host HOST --port PORT [--config FILE]`. Blocks for the fork only.
    pub fn spawn(binary: &Path, host: &str, port: u16, config: Option<&Path>) -> Result<Self> {
        let mut command = Command::new(binary);
        command.arg("serve").arg("--host").arg(host).arg("--port").arg(port.to_string());
        if let Some(config) = config {
            command.arg("--config").arg(config);
        }
        command.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::inherit());
        let child = command.spawn().map_err(|e| Error::Server(format!("cannot start {}: {e}", binary.display())))?;
        Ok(ServerProcess { child: Some(child), binary: binary.to_owned() })
    }

    /// The child's pid, while it is owned.
    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The exit status if the process has already exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Waits up to `grace` for the process to exit by itself (after `/shutdown`), then stops it
    /// as [`ServerProcess::stop`] does. Blocking: call it off the async workers.
    pub fn wait_or_stop(mut self, grace: Duration) -> Result<ExitStatus> {
        let Some(child) = self.child.as_mut() else {
            return Err(Error::Server("server process already reaped".into()));
        };
        if let Some(status) = wait_until(child, Instant::now() + grace) {
            self.child = None;
            return Ok(status);
        }
        self.stop()
    }

    /// SIGTERM, then SIGKILL after a grace; answers the exit status. Blocking.
    pub fn stop(mut self) -> Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            return Err(Error::Server("server process already reaped".into()));
        };
        terminate(&mut child).map_err(|e| Error::Server(format!("cannot stop {}: {e}", self.binary.display())))
    }
}

/// Polls `child` until it exits or `deadline` passes.
fn wait_until(child: &mut Child, deadline: Instant) -> Option<ExitStatus> {
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => return None,
        }
    }
}

fn terminate(child: &mut Child) -> std::io::Result<ExitStatus> {
    if let Some(status) = child.try_wait()? {
        return Ok(status);
    }
    let pid = libc::pid_t::try_from(child.id()).map_err(|_| std::io::Error::other("pid out of range"))?;
    // SAFETY: kill(2) on a pid this process spawned and has not reaped, so it cannot be reused.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    if let Some(status) = wait_until(child, Instant::now() + STOP_GRACE) {
        return Ok(status);
    }
    child.kill()?;
    child.wait()
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Err(e) = terminate(&mut child) {
                tracing::warn!("cannot stop the server it started: {e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_explicit_missing_binary_is_a_config_error() {
        assert!(matches!(locate(Some(Path::new("/no/such/agentflow-sandbox"))), Err(Error::Config(_))));
    }

    #[test]
    fn stop_terminates_a_real_process() {
        use std::os::unix::process::ExitStatusExt;
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let status = terminate(&mut child).unwrap();
        assert_eq!(status.signal(), Some(libc::SIGTERM));
    }
}
