//! The [`Jail`]: a per-session sandbox a [`Shell`](crate::Shell) runs in, made with bubblewrap.
//!
//! It owns what outlives any one shell of a session: the session's directory (a writable work
//! directory, and a read-only one for commands too long to type), and the session's cgroups
//! (pids and memory controllers, where the machine has them). [`Jail::wrap`] turns a
//! [`ShellConfig`] into one whose shell starts inside the jail; dropping the jail kills what is
//! left in its cgroups and removes its cgroups and directory. Starting, driving and ending the
//! shell itself is left to `shell.rs`; sessions and config keys to the engine's adapter.
//!
//! How a jailed shell starts, outermost first:
//! 1. `sh -c 'echo $$ > …/cgroup.procs; exec "$@"'` joins the session's cgroups *before* anything
//!    else runs, so every process of the jail is counted from its first fork (writing the pid
//!    after spawn would race with bwrap's own forks, and in cgroup v1 moving a process does not
//!    move its children). Skipped when there is no cgroup.
//! 2. `prlimit` sets RLIMIT_AS (memory per process), RLIMIT_CPU and RLIMIT_FSIZE, inherited by
//!    everything below. RLIMIT_NPROC is not used: it counts every process of the user (and root
//!    is exempt), so the process cap is the pids cgroup's `pids.max`.
//! 3. `bwrap` with its own mount, PID, IPC and UTS namespaces (and network unless asked), `/`
//!    read-only, a private `/tmp`, the work directory and the configured paths writable, no
//!    capabilities, `--die-with-parent`. Not `--new-session`: portable-pty made the shell a
//!    session leader with the PTY as its controlling terminal, which Ctrl-C and job control need.
//!    `--new-session` guards against TIOCSTI (a process pushing keystrokes into its controlling
//!    terminal's input); here that terminal is the session's own PTY, read only by this engine
//!    and typed into only the same jailed bash, so a jailed process can inject nothing that runs
//!    outside the jail.
//! 4. bash, as pid 2 of its namespace under bwrap's pid 1, which reaps orphans in the jail and
//!    takes every process of the namespace with it when killed (`process.rs` kills it first).
//!
//! The jail dies with the engine: if the engine dies, the PTY hangs up, which kills the outer
//! bwrap (SIGHUP to the session leader), and `--die-with-parent` kills the namespace's init.
//! What such an engine leaves (directories, cgroups, named after its pid) is swept away by the
//! next jail made under the same root.

use std::ffi::{OsStr, OsString};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::{Error, Result, ShellConfig};

/// What to tell whoever asks for a jail on a machine without bubblewrap.
pub const INSTALL_HINT: &str = "bubblewrap is not installed: apt-get install bubblewrap";

/// Limits of one jailed session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Memory: the session's total (memory cgroup) and each process's address space (RLIMIT_AS).
    pub memory_mb: u64,
    /// Processes and threads of the session at once (pids cgroup).
    pub max_processes: u64,
    /// CPU seconds per process (RLIMIT_CPU: SIGXCPU, then SIGKILL).
    pub cpu_seconds: u64,
    /// Largest file a process may write (RLIMIT_FSIZE: SIGXFSZ).
    pub file_size_mb: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { memory_mb: 1024, max_processes: 256, cpu_seconds: 600, file_size_mb: 1024 }
    }
}

/// How to make a jail.
#[derive(Debug, Clone)]
pub struct JailConfig {
    /// The bubblewrap program ([`find_bwrap`]).
    pub bwrap: PathBuf,
    /// Where session directories are made (each removed with its jail).
    pub root: PathBuf,
    /// Whether the jail shares the host's network (otherwise it has only its own loopback).
    pub network: bool,
    /// Existing host paths the jail may write to, besides its work directory.
    pub writable: Vec<PathBuf>,
    /// Its limits.
    pub limits: Limits,
}

impl JailConfig {
    /// A jail with no network, no extra writable path, default limits, sessions under the
    /// system's temporary directory.
    pub fn new(bwrap: PathBuf) -> Self {
        JailConfig {
            bwrap,
            root: std::env::temp_dir().join("agentflow-jails"),
            network: false,
            writable: Vec::new(),
            limits: Limits::default(),
        }
    }
}

/// Looks `name` up in a `PATH`-style list of directories.
pub fn find_program(name: &str, path: &OsStr) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::env::split_paths(path)
        .map(|dir| dir.join(name))
        .find(|p| p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// The `bwrap` of this process's `PATH`, if any.
pub fn find_bwrap() -> Option<PathBuf> {
    find_program("bwrap", &std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()))
}

/// A jail: see the module documentation.
#[derive(Debug)]
pub struct Jail {
    config: JailConfig,
    /// The session's directory: `work/` and `cmd/` in it.
    dir: PathBuf,
    work: PathBuf,
    scratch: PathBuf,
    prlimit: PathBuf,
    /// The session's cgroup directories (one per v1 controller, or one in v2).
    cgroups: Vec<PathBuf>,
    /// How the limits are enforced, for whoever reports on the session.
    enforcement: String,
}

static NEXT: AtomicU64 = AtomicU64::new(1);

impl Jail {
    /// Makes the session's directories and cgroups (blocking: file-system work).
    pub fn create(config: JailConfig) -> Result<Jail> {
        let fail = |what: &str, e: &dyn std::fmt::Display| Error::Jail(format!("{what}: {e}"));
        for path in &config.writable {
            if !path.exists() {
                return Err(Error::Jail(format!("writable path {} does not exist", path.display())));
            }
        }
        let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
        let prlimit = find_program("prlimit", &path)
            .ok_or_else(|| Error::Jail("prlimit is not installed: apt-get install util-linux".into()))?;
        std::fs::create_dir_all(&config.root)
            .map_err(|e| fail(&format!("cannot create {}", config.root.display()), &e))?;
        sweep(&config.root);
        let name =
            format!("{}-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed), &crate::shell::nonce()[..8]);
        let dir = config.root.join(&name);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| fail("cannot create the session directory", &e))?;
        let work = dir.join("work");
        let scratch = dir.join("cmd");
        let mut jail = Jail { dir, work, scratch, prlimit, cgroups: Vec::new(), enforcement: String::new(), config };
        // From here on, a failure drops `jail`, which removes what was made.
        for d in [&jail.work, &jail.scratch] {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(d)
                .map_err(|e| fail("cannot create the work directory", &e))?;
        }
        let cgroup_name = format!("agentflow-{name}");
        match cgroups::create(&cgroup_name, &jail.config.limits) {
            Ok((dirs, how)) => {
                jail.cgroups = dirs;
                jail.enforcement = format!("{how}; cpu and file size by rlimits");
            }
            Err(why) => {
                jail.enforcement = format!(
                    "rlimits only ({why}): memory per process, cpu, file size; the process cap is not enforced"
                );
            }
        }
        Ok(jail)
    }

    /// The session's writable work directory (the shell's default directory and `HOME`).
    pub fn work_dir(&self) -> &Path {
        &self.work
    }

    /// How the limits are enforced here: the cgroups used, or why only rlimits are.
    pub fn enforcement(&self) -> &str {
        &self.enforcement
    }

    /// The config it was made with.
    pub fn config(&self) -> &JailConfig {
        &self.config
    }

    /// The processes in the jail's cgroup (empty without one), as this process sees them.
    pub fn processes(&self) -> Vec<i32> {
        self.cgroups.first().map(|dir| cgroups::procs(dir)).unwrap_or_default()
    }

    /// How many times the memory limit killed a process of the session (OOM), if the memory
    /// cgroup says.
    pub fn oom_kills(&self) -> Option<u64> {
        self.cgroups.iter().find_map(|dir| cgroups::oom_kills(dir))
    }

    /// `shell` as it runs inside this jail: started through the wrapper (module documentation),
    /// in the work directory unless it names another, with `HOME` there and long commands read
    /// from the jail's own directory.
    pub fn wrap(&self, shell: &ShellConfig) -> ShellConfig {
        let mut shell = shell.clone();
        let cwd = shell.cwd.clone().unwrap_or_else(|| self.work.clone());
        let mut argv: Vec<OsString> = Vec::new();
        if !self.cgroups.is_empty() {
            let joins: Vec<String> = self
                .cgroups
                .iter()
                .map(|d| format!("echo $$ > {} || exit 125", sh_quote(&d.join("cgroup.procs"))))
                .collect();
            argv.extend([
                "/bin/sh".into(),
                "-c".into(),
                format!("{}; exec \"$@\"", joins.join("; ")).into(),
                "sh".into(),
            ]);
        }
        let l = self.config.limits;
        argv.push(self.prlimit.clone().into_os_string());
        argv.push(format!("--as={}", l.memory_mb << 20).into());
        argv.push(format!("--cpu={}", l.cpu_seconds).into());
        argv.push(format!("--fsize={}", l.file_size_mb << 20).into());
        argv.push("--".into());
        argv.push(self.config.bwrap.clone().into_os_string());
        let mut args = vec!["--die-with-parent", "--unshare-pid", "--unshare-ipc", "--unshare-uts"];
        if !self.config.network {
            args.push("--unshare-net");
        }
        args.extend([
            "--hostname",
            "jail",
            "--ro-bind",
            "/",
            "/",
            "--dev",
            "/dev",
            "--proc",
            "/proc",
            "--tmpfs",
            "/tmp",
        ]);
        argv.extend(args.into_iter().map(OsString::from));
        // Other sessions' directories are hidden (a jail runs as root without capabilities, and
        // root owns them all); then the binds, after the private /tmp and that, so that paths
        // under them show through.
        argv.extend(["--tmpfs".into(), self.config.root.as_os_str().to_owned()]);
        let mut bind = |flag: &str, path: &Path| {
            argv.extend([flag.into(), path.as_os_str().to_owned(), path.as_os_str().to_owned()]);
        };
        bind("--bind", &self.work);
        bind("--ro-bind", &self.scratch);
        for path in &self.config.writable {
            bind("--bind", path);
        }
        argv.extend(["--cap-drop".into(), "ALL".into(), "--chdir".into(), cwd.as_os_str().to_owned(), "--".into()]);
        shell.wrapper = argv;
        shell.cwd = Some(cwd);
        shell.scratch_dir = Some(self.scratch.clone());
        shell.env.retain(|(k, _)| k != "HOME" && k != "TMPDIR");
        shell.env.insert(0, ("HOME".into(), self.work.display().to_string()));
        shell
    }
}

impl Drop for Jail {
    fn drop(&mut self) {
        // The shell was ended by its owner; what may be left (a process that left the shell's
        // session and tree) is still in the cgroup. Kill until none is left, then remove.
        let deadline = Instant::now() + Duration::from_secs(2);
        for dir in &self.cgroups {
            loop {
                let procs = cgroups::procs(dir);
                if procs.is_empty() || Instant::now() > deadline {
                    break;
                }
                for pid in procs {
                    // SAFETY: kill(2) has no memory-safety preconditions.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        for dir in self.cgroups.iter().rev() {
            // A cgroup whose last process is still exiting cannot be removed yet: retry briefly.
            while std::fs::remove_dir(dir).is_err() && dir.exists() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Removes what jails of engines that died without cleaning up (SIGKILL, a crash) left: session
/// directories under `root` and cgroups, both named after the engine's pid, when no process
/// has that pid any more. A live engine's, and this one's, are left alone.
fn sweep(root: &Path) {
    let dead = |name: &str| -> bool {
        let pid = name.split('-').next().and_then(|p| p.parse::<i32>().ok());
        pid.is_some_and(|pid| pid > 0 && !Path::new(&format!("/proc/{pid}")).exists())
    };
    if let Ok(entries) = std::fs::read_dir(root) {
        for entry in entries.flatten() {
            if entry.file_name().to_str().is_some_and(dead) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    for parent in cgroups::parents() {
        let Ok(entries) = std::fs::read_dir(&parent) else { continue };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(session) = name.to_str().and_then(|n| n.strip_prefix("agentflow-")) else { continue };
            if dead(session) {
                for pid in cgroups::procs(&entry.path()) {
                    // SAFETY: kill(2) has no memory-safety preconditions.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                let _ = std::fs::remove_dir(entry.path());
            }
        }
    }
}

/// `path` as one single-quoted `sh` word.
fn sh_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', "'\\''"))
}

/// The session's cgroups: cgroup v1 (a pids and a memory hierarchy) or v2 (one unified tree
/// with the controllers delegated), made as children of this process's own cgroups.
mod cgroups {
    use std::path::{Path, PathBuf};

    use super::Limits;

    const ROOT: &str = "/sys/fs/cgroup";

    /// This process's cgroup path in the hierarchy that has `controller` (`""` for v2).
    fn own_path(controller: &str) -> Option<String> {
        let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
        text.lines().find_map(|line| {
            let mut parts = line.splitn(3, ':');
            let (_, list, path) = (parts.next()?, parts.next()?, parts.next()?);
            let matches =
                if controller.is_empty() { list.is_empty() } else { list.split(',').any(|c| c == controller) };
            matches.then(|| path.to_owned())
        })
    }

    fn write(path: &Path, value: &str) -> std::io::Result<()> {
        std::fs::write(path, value)
    }

    /// Makes the session's cgroups with `limits`; the directories and a description, or why
    /// there are none.
    pub(super) fn create(name: &str, limits: &Limits) -> Result<(Vec<PathBuf>, String), String> {
        let memory = (limits.memory_mb << 20).to_string();
        let pids = limits.max_processes.to_string();
        // cgroup v1: one hierarchy per controller; the pids one is what caps a fork bomb.
        let v1_pids = Path::new(ROOT).join("pids");
        if v1_pids.join("tasks").exists() {
            let own = own_path("pids").ok_or("no pids line in /proc/self/cgroup")?;
            let dir = v1_pids.join(own.trim_start_matches('/')).join(name);
            std::fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            let mut dirs = vec![dir.clone()];
            let undo = |dirs: &[PathBuf]| dirs.iter().for_each(|d| drop(std::fs::remove_dir(d)));
            if let Err(e) = write(&dir.join("pids.max"), &pids) {
                undo(&dirs);
                return Err(format!("cannot set pids.max: {e}"));
            }
            let mut how = "cgroup v1: pids".to_owned();
            let v1_memory = Path::new(ROOT).join("memory");
            if let (true, Some(own)) = (v1_memory.join("tasks").exists(), own_path("memory")) {
                let dir = v1_memory.join(own.trim_start_matches('/')).join(name);
                if std::fs::create_dir(&dir).is_ok() {
                    if write(&dir.join("memory.limit_in_bytes"), &memory).is_ok() {
                        // Swap counts too where swap accounting is on (absent otherwise).
                        let _ = write(&dir.join("memory.memsw.limit_in_bytes"), &memory);
                        dirs.push(dir);
                        how.push_str(", memory");
                    } else {
                        let _ = std::fs::remove_dir(&dir);
                    }
                }
            }
            if dirs.len() == 1 {
                how.push_str(" (no memory cgroup: memory per process by rlimit only)");
            }
            return Ok((dirs, how));
        }
        // cgroup v2: the controllers must be delegated to our cgroup's children.
        if Path::new(ROOT).join("cgroup.controllers").exists() {
            let own = own_path("").ok_or("no cgroup v2 line in /proc/self/cgroup")?;
            let dir = Path::new(ROOT).join(own.trim_start_matches('/')).join(name);
            std::fs::create_dir(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            if !dir.join("pids.max").exists() {
                let _ = std::fs::remove_dir(&dir);
                return Err("cgroup v2 without the pids controller delegated here".into());
            }
            if let Err(e) = write(&dir.join("pids.max"), &pids) {
                let _ = std::fs::remove_dir(&dir);
                return Err(format!("cannot set pids.max: {e}"));
            }
            let how = if write(&dir.join("memory.max"), &memory).is_ok() {
                "cgroup v2: pids, memory"
            } else {
                "cgroup v2: pids (no memory controller: memory per process by rlimit only)"
            };
            return Ok((vec![dir], how.to_owned()));
        }
        Err("no cgroup hierarchy with a pids controller".into())
    }

    /// The directories session cgroups are made in.
    pub(super) fn parents() -> Vec<PathBuf> {
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
    pub(super) fn procs(dir: &Path) -> Vec<i32> {
        std::fs::read_to_string(dir.join("cgroup.procs"))
            .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// The OOM kill count of a memory cgroup (v1 `memory.oom_control`, v2 `memory.events`).
    pub(super) fn oom_kills(dir: &Path) -> Option<u64> {
        ["memory.oom_control", "memory.events"].iter().find_map(|file| {
            let text = std::fs::read_to_string(dir.join(file)).ok()?;
            text.lines().find_map(|l| l.strip_prefix("oom_kill ")?.trim().parse().ok())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_programs_on_a_path() {
        assert_eq!(find_program("sh", OsStr::new("/nonexistent:/bin")), Some(PathBuf::from("/bin/sh")));
        assert_eq!(find_program("no-such-program-af", OsStr::new("/bin:/usr/bin")), None);
        assert_eq!(find_program("bwrap", OsStr::new("")), None);
    }

    #[test]
    fn quotes_for_sh() {
        assert_eq!(sh_quote(Path::new("/a b/it's")), "'/a b/it'\\''s'");
    }

    #[test]
    fn a_jail_leaves_nothing_behind() {
        let bwrap = find_bwrap().expect("bwrap is installed (apt-get install bubblewrap)");
        let root = std::env::temp_dir().join(format!("agentflow-jail-unit-{}", std::process::id()));
        let jail = Jail::create(JailConfig { root: root.clone(), ..JailConfig::new(bwrap) }).unwrap();
        let (dir, cgroups) = (jail.dir.clone(), jail.cgroups.clone());
        assert!(jail.work_dir().is_dir());
        assert!(!jail.enforcement().is_empty());
        for cg in &cgroups {
            assert!(cg.join("cgroup.procs").exists());
        }
        let wrapped = jail.wrap(&ShellConfig::default());
        assert_eq!(wrapped.cwd.as_deref(), Some(jail.work_dir()));
        assert!(wrapped.wrapper.iter().any(|a| a == "--unshare-net"));
        drop(jail);
        assert!(!dir.exists());
        assert!(cgroups.iter().all(|c| !c.exists()));
        let _ = std::fs::remove_dir_all(root);
    }
}
