//! A session's [`Cgroup`]: every process a session starts, counted and killable as one, whether
//! the shell is jailed or not.
//!
//! A shell's process tree is not enough to find everything it started: `setsid -f`, a double
//! fork or a daemon leave the tree and the session id. A cgroup keeps them all: a process joins
//! at birth and cannot leave (it would need to write another cgroup's `cgroup.procs`, which the
//! engine's own jails cannot and which a plain shell could only do as root on purpose). Made as a
//! child of this process's own cgroup: cgroup v1 (a pids and, when limits are asked, a memory
//! hierarchy) or v2 (one unified tree with the controllers delegated). Dropping it kills what is
//! left in it and removes it. The jail (`jail.rs`) asks for limits; a plain shell only tracks.
//! Linux only.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

const ROOT: &str = "/sys/fs/cgroup";
/// Every cgroup this crate makes is named with this prefix, then the engine's pid.
pub(crate) const PREFIX: &str = "agentflow-";

static NEXT: AtomicU64 = AtomicU64::new(1);

/// A fresh name for a session's cgroup or directory: `<engine pid>-<n>-<random>`, so that a
/// sweep can tell a dead engine's from a live one's.
pub(crate) fn session_name() -> String {
    format!("{}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed), &crate::command::nonce()[..8])
}

/// Limits written into a cgroup.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CgroupLimits {
    /// Bytes of memory (memory controller), swap included where accounted.
    pub memory: u64,
    /// Processes and threads at once (pids controller).
    pub pids: u64,
}

/// One session's cgroup directories (one per v1 hierarchy used, or one in v2).
#[derive(Debug, Default)]
pub struct Cgroup {
    dirs: Vec<PathBuf>,
    /// How the cgroup is made and what it limits, for whoever reports on the session.
    how: String,
}

impl Cgroup {
    /// A cgroup that only tracks (pids controller, no limit), named for a new session; an
    /// error saying why where the machine has none this process may use.
    pub fn track() -> Result<Cgroup, String> {
        create(&format!("{PREFIX}{}", session_name()), None)
    }

    /// A cgroup with limits.
    pub(crate) fn limited(name: &str, limits: CgroupLimits) -> Result<Cgroup, String> {
        create(&format!("{PREFIX}{name}"), Some(limits))
    }

    /// Moves a process (and, in v2, nothing else: call it before the process forks) into it.
    pub fn add(&self, pid: u32) -> std::io::Result<()> {
        for dir in &self.dirs {
            std::fs::write(dir.join("cgroup.procs"), pid.to_string())?;
        }
        Ok(())
    }

    /// The `cgroup.procs` files a process writes its own pid to, to join at its start.
    pub(crate) fn procs_files(&self) -> impl Iterator<Item = PathBuf> + '_ {
        self.dirs.iter().map(|d| d.join("cgroup.procs"))
    }

    /// The `cgroup.procs` file listing its processes, if it was made.
    pub fn members_file(&self) -> Option<PathBuf> {
        self.dirs.first().map(|d| d.join("cgroup.procs"))
    }

    /// Whether any directory was made.
    pub(crate) fn is_empty(&self) -> bool {
        self.dirs.is_empty()
    }

    /// What the cgroup enforces (`cgroup v1: pids, memory`).
    pub fn how(&self) -> &str {
        &self.how
    }

    /// The processes in it, as this process sees them.
    pub fn processes(&self) -> Vec<i32> {
        self.dirs.first().map(|dir| procs(dir)).unwrap_or_default()
    }

    /// How many times its memory limit killed a process, if the memory controller says.
    pub fn oom_kills(&self) -> Option<u64> {
        self.dirs.iter().find_map(|dir| oom_kills(dir))
    }

    /// Kills every process in it until none is left (bounded by `within`); whether it is empty.
    pub fn kill_all(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let Some(dir) = self.dirs.first() else { return true };
        loop {
            let pids = procs(dir);
            if pids.is_empty() {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            for pid in pids {
                // SAFETY: kill(2) has no memory-safety preconditions.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        self.kill_all(Duration::from_secs(2));
        let deadline = Instant::now() + Duration::from_secs(2);
        for dir in self.dirs.iter().rev() {
            // A cgroup whose last process is still exiting cannot be removed yet: retry briefly.
            while std::fs::remove_dir(dir).is_err() && dir.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    }
}

/// Kills and removes the cgroups named `agentflow-<pid>-…` whose engine pid `dead` says is gone.
pub(crate) fn sweep(dead: &dyn Fn(&str) -> bool) {
    for parent in parents() {
        let Ok(entries) = std::fs::read_dir(&parent) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(session) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else { continue };
            if dead(session) {
                for pid in procs(&entry.path()) {
                    // SAFETY: kill(2) has no memory-safety preconditions.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                let _ = std::fs::remove_dir(entry.path());
            }
        }
    }
}

/// This process's cgroup path in the hierarchy that has `controller` (`""` for v2), as it was
/// when first asked: read once, not for every session.
fn own_path(controller: &str) -> Option<String> {
    static OWN: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let text = OWN.get_or_init(|| std::fs::read_to_string("/proc/self/cgroup").ok()).as_deref()?;
    text.lines().find_map(|line| {
        let mut parts = line.splitn(3, ':');
        let (_, list, path) = (parts.next()?, parts.next()?, parts.next()?);
        let matches = if controller.is_empty() { list.is_empty() } else { list.split(',').any(|c| c == controller) };
        matches.then(|| path.to_owned())
    })
}

/// Makes the cgroup, with `limits` if given.
fn create(name: &str, limits: Option<CgroupLimits>) -> Result<Cgroup, String> {
    let pids = limits.map_or_else(|| "max".to_owned(), |l| l.pids.to_string());
    // cgroup v1: one hierarchy per controller; the pids one tracks (and caps a fork bomb).
    let v1_pids = Path::new(ROOT).join("pids");
    if v1_pids.join("tasks").exists() {
        let own = own_path("pids").ok_or("no pids line in /proc/self/cgroup")?;
        let dir = v1_pids.join(own.trim_start_matches('/')).join(name);
        std::fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let mut cgroup = Cgroup { dirs: vec![dir.clone()], how: "cgroup v1: pids".to_owned() };
        // A new cgroup has no limit: a tracking one is done.
        let Some(limits) = limits else { return Ok(cgroup) };
        // From here on, a failure drops `cgroup`, which removes what was made.
        std::fs::write(dir.join("pids.max"), &pids).map_err(|e| format!("cannot set pids.max: {e}"))?;
        let memory = limits.memory.to_string();
        let v1_memory = Path::new(ROOT).join("memory");
        if let (true, Some(own)) = (v1_memory.join("tasks").exists(), own_path("memory")) {
            let dir = v1_memory.join(own.trim_start_matches('/')).join(name);
            if std::fs::create_dir(&dir).is_ok() {
                if std::fs::write(dir.join("memory.limit_in_bytes"), &memory).is_ok() {
                    // Swap counts too where swap accounting is on (absent otherwise).
                    let _ = std::fs::write(dir.join("memory.memsw.limit_in_bytes"), &memory);
                    cgroup.dirs.push(dir);
                    cgroup.how.push_str(", memory");
                } else {
                    let _ = std::fs::remove_dir(&dir);
                }
            }
        }
        if cgroup.dirs.len() == 1 {
            cgroup.how.push_str(" (no memory cgroup: memory per process by rlimit only)");
        }
        return Ok(cgroup);
    }
    // cgroup v2: the controllers must be delegated to our cgroup's children.
    if Path::new(ROOT).join("cgroup.controllers").exists() {
        let own = own_path("").ok_or("no cgroup v2 line in /proc/self/cgroup")?;
        let dir = Path::new(ROOT).join(own.trim_start_matches('/')).join(name);
        std::fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let mut cgroup = Cgroup { dirs: vec![dir.clone()], how: "cgroup v2".to_owned() };
        let Some(limits) = limits else { return Ok(cgroup) };
        if !dir.join("pids.max").exists() {
            return Err("cgroup v2 without the pids controller delegated here".into());
        }
        std::fs::write(dir.join("pids.max"), &pids).map_err(|e| format!("cannot set pids.max: {e}"))?;
        cgroup.how = if std::fs::write(dir.join("memory.max"), limits.memory.to_string()).is_ok() {
            "cgroup v2: pids, memory".to_owned()
        } else {
            "cgroup v2: pids (no memory controller: memory per process by rlimit only)".to_owned()
        };
        return Ok(cgroup);
    }
    Err("no cgroup hierarchy with a pids controller".into())
}

/// The directories session cgroups are made in.
fn parents() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    for controller in ["pids", "memory"] {
        let base = Path::new(ROOT).join(controller);
        if let (true, Some(own)) = (base.join("tasks").exists(), own_path(controller)) {
            dirs.push(base.join(own.trim_start_matches('/')));
        }
    }
    if dirs.is_empty() && Path::new(ROOT).join("cgroup.controllers").exists() {
        dirs.extend(own_path("").map(|own| Path::new(ROOT).join(own.trim_start_matches('/'))));
    }
    dirs
}

/// The pids in a cgroup.
fn procs(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// The OOM kill count of a memory cgroup (v1 `memory.oom_control`, v2 `memory.events`).
fn oom_kills(dir: &Path) -> Option<u64> {
    ["memory.oom_control", "memory.events"].iter().find_map(|file| {
        let text = std::fs::read_to_string(dir.join(file)).ok()?;
        text.lines().find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tracking_cgroup_keeps_what_left_the_tree_and_kills_it() {
        let cgroup = Cgroup::track().unwrap();
        // A shell that starts a daemon in its own session, then exits.
        let mut shell = std::process::Command::new("bash")
            .args(["-c", "read _; setsid -f sleep 300; exit 0"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        cgroup.add(shell.id()).unwrap();
        drop(shell.stdin.take());
        assert!(shell.wait().unwrap().success());
        let left = cgroup.processes();
        assert_eq!(left.len(), 1, "the daemon is in the cgroup: {left:?}");
        let dirs = cgroup.dirs.clone();
        drop(cgroup);
        let daemon_gone =
            std::fs::read_to_string(format!("/proc/{}/stat", left[0])).map_or(true, |s| s.contains(") Z"));
        assert!(daemon_gone, "the daemon outlived its cgroup");
        assert!(dirs.iter().all(|d| !d.exists()));
    }
}
