//! The [`Jail`]: a per-session sandbox a [`Shell`](crate::Shell) runs in, made with bubblewrap
//! inside a user namespace, as an unprivileged host uid of its own.
//!
//! It owns what outlives any one shell of a session: the session's directory (a writable work
//! directory, and a read-only one for commands too long to type), the session's host uid (leased
//! from a [`UidRange`] machine-wide), and the session's [`Cgroup`]. [`Jail::wrap`] turns a
//! [`ShellConfig`] into one whose shell starts inside the jail; dropping the jail kills what is
//! left in its cgroup, unmounts and removes its directory and returns its uid. Starting, driving
//! and ending the shell itself is left to `shell.rs`; sessions, config keys and the operator's
//! policy to the engine's adapter.
//!
//! Why a uid of its own: root inside the jail is that uid outside, so kernel settings
//! (`/proc/sys`), root-only host files (`/etc/shadow`, `/root`) and other sessions' directories
//! (each 0700 and owned by root or another uid) are out of reach by ownership, not by mount
//! tricks. The agent still sees itself as root, for its convenience.
//!
//! How a jailed shell starts, outermost first (all but bwrap run on the host, with no variable
//! of the session: its environment is set inside the jail by bwrap's `--clearenv`/`--setenv`):
//! 1. `sh -c 'echo $$ > …/cgroup.procs; exec "$@"'` joins the session's cgroups *before* anything
//!    else runs, so every process of the jail is counted from its first fork. Skipped when there
//!    is no cgroup.
//! 2. `prlimit` sets RLIMIT_AS (memory per process), RLIMIT_CPU, RLIMIT_FSIZE and RLIMIT_NPROC
//!    (which counts the processes of the session's own uid: exact, since no one else has it),
//!    inherited by everything below.
//! 3. `setpriv` becomes the session's uid and gid, with no supplementary groups and
//!    `no_new_privs` (a setuid program cannot raise it back).
//! 4. `bwrap` in a new user namespace mapping root to that uid (nested user namespaces
//!    disabled), with its own mount, PID, IPC and UTS namespaces (and network unless asked), `/`
//!    read-only, a private `/tmp`, an empty `/run` (the host's unix sockets: a read-only bind
//!    does not stop `connect`), the work root hidden, the session's work directory and the
//!    configured paths writable, no capabilities, `--die-with-parent`. Not `--new-session`:
//!    portable-pty made the shell a session leader with the PTY as its controlling terminal, which
//!    Ctrl-C and job control need; that terminal is the session's own, read only by this engine.
//! 5. bash, as pid 2 of its namespace under bwrap's pid 1, which reaps orphans in the jail and
//!    takes every process of the namespace with it when killed (`process.rs` kills it first).
//!
//! The work directory is a tmpfs of `disk_mb` owned by the session's uid: one cap on all its
//! files together (where the engine may mount; else `enforcement` says there is none).
//!
//! The jail dies with the engine: if the engine dies, the PTY hangs up, which kills the outer
//! bwrap (SIGHUP to the session leader), and `--die-with-parent` kills the namespace's init.
//! What such an engine leaves (directories marked as this crate's, cgroups, named after its
//! pid) is swept away by the next jail made under the same root; nothing unmarked is touched.

use std::ffi::{OsStr, OsString};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::cgroup::{Cgroup, CgroupLimits};
use crate::{Error, Result, ShellConfig};

/// What to tell whoever asks for a jail on a machine without bubblewrap.
pub const INSTALL_HINT: &str = "bubblewrap is not installed: apt-get install bubblewrap";

/// Limits of one jailed session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Memory: the session's total (memory cgroup) and each process's address space (RLIMIT_AS).
    pub memory_mb: u64,
    /// Processes and threads of the session at once (pids cgroup, and RLIMIT_NPROC of the
    /// session's own uid).
    pub max_processes: u64,
    /// CPU seconds per process (RLIMIT_CPU: SIGXCPU, then SIGKILL).
    pub cpu_seconds: u64,
    /// Largest file a process may write (RLIMIT_FSIZE: SIGXFSZ).
    pub file_size_mb: u64,
    /// All the files of the work directory together (a tmpfs of this size; its pages count as
    /// the session's memory too).
    pub disk_mb: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { memory_mb: 1024, max_processes: 256, cpu_seconds: 600, file_size_mb: 1024, disk_mb: 512 }
    }
}

/// The host uids jails run as: `count` uids from `first`, one per live jail, leased machine-wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UidRange {
    /// The first uid.
    pub first: u32,
    /// How many.
    pub count: u32,
}

impl Default for UidRange {
    /// 65,536 uids from 1,000,000: far above the accounts of an ordinary system, as rootless
    /// containers' subordinate ranges are.
    fn default() -> Self {
        UidRange { first: 1_000_000, count: 65_536 }
    }
}

/// How to make a jail.
#[derive(Debug, Clone)]
pub struct JailConfig {
    /// The bubblewrap program ([`find_bwrap`]).
    pub bwrap: PathBuf,
    /// Where session directories are made (each removed with its jail); see [`check_work_root`].
    pub root: PathBuf,
    /// Whether the jail shares the host's network (otherwise it has only its own loopback).
    pub network: bool,
    /// Existing host paths the jail may write to, besides its work directory (the session's uid
    /// must be allowed to write there: the jail has no other privilege).
    pub writable: Vec<PathBuf>,
    /// Its limits.
    pub limits: Limits,
    /// The host uids jails may run as.
    pub uids: UidRange,
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
            uids: UidRange::default(),
        }
    }
}

/// Directories a work root may not be: the sweep of stale jails and the hiding of the root
/// inside jails must never touch the system.
const SYSTEM_DIRS: &[&str] = &[
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32", "/media", "/mnt", "/opt",
    "/proc", "/root", "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/var", "/var/lib", "/var/tmp", "/var/log",
];

/// Whether `root` may hold session directories: absolute, not a system directory.
pub fn check_work_root(root: &Path) -> std::result::Result<(), String> {
    if !root.is_absolute() {
        return Err(format!("{} is not an absolute path", root.display()));
    }
    let clean: PathBuf = root.components().collect();
    if SYSTEM_DIRS.iter().any(|d| clean == Path::new(d)) {
        return Err(format!("{} is a system directory", clean.display()));
    }
    Ok(())
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
    find_program("bwrap", &host_path())
}

/// This process's `PATH`, or the usual one.
fn host_path() -> OsString {
    std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into())
}

/// The file in a session directory that says this crate made it (the sweep removes nothing
/// else).
const MARK: &str = ".agentflow-jail";

/// A jail: see the module documentation.
#[derive(Debug)]
pub struct Jail {
    config: JailConfig,
    /// The session's directory: `work/` and `cmd/` in it.
    dir: PathBuf,
    work: PathBuf,
    scratch: PathBuf,
    /// What the jail sees as `/tmp/.X11-unix`: links to the sockets of the displays shared
    /// with it ([`Displays`]).
    x11: PathBuf,
    prlimit: PathBuf,
    setpriv: PathBuf,
    /// The host uid (and gid) the jail runs as, leased until the jail is dropped.
    uid: UidLease,
    /// Whether `work` is a tmpfs this jail mounted (and unmounts).
    mounted: bool,
    cgroup: Cgroup,
    /// How the limits are enforced, for whoever reports on the session.
    enforcement: String,
}

impl Jail {
    /// Makes the session's directories and cgroups (blocking: file-system work).
    pub fn create(config: JailConfig) -> Result<Jail> {
        let fail = |what: &str, e: &dyn std::fmt::Display| Error::Jail(format!("{what}: {e}"));
        check_work_root(&config.root).map_err(|e| Error::Jail(format!("work root refused: {e}")))?;
        for path in &config.writable {
            if !path.exists() {
                return Err(Error::Jail(format!("writable path {} does not exist", path.display())));
            }
        }
        let path = host_path();
        let prlimit = find_program("prlimit", &path)
            .ok_or_else(|| Error::Jail("prlimit is not installed: apt-get install util-linux".into()))?;
        let setpriv = find_program("setpriv", &path)
            .ok_or_else(|| Error::Jail("setpriv is not installed: apt-get install util-linux".into()))?;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&config.root)
            .map_err(|e| fail(&format!("cannot create {}", config.root.display()), &e))?;
        // bwrap runs as the session's uid, which must pass through (not list) the root and the
        // session's directory to reach the work directory, itself 0700 and the session's own.
        traversable(&config.root).map_err(|e| fail(&format!("cannot open {} to jails", config.root.display()), &e))?;
        sweep(&config.root);
        let uid = UidLease::take(config.uids).map_err(|e| fail("no host uid free for the jail", &e))?;
        let name = crate::cgroup::session_name();
        let dir = config.root.join(&name);
        std::fs::DirBuilder::new()
            .mode(0o711)
            .create(&dir)
            .map_err(|e| fail("cannot create the session directory", &e))?;
        let work = dir.join("work");
        let scratch = dir.join("cmd");
        let x11 = dir.join("x11");
        let mut jail = Jail {
            dir,
            work,
            scratch,
            x11,
            prlimit,
            setpriv,
            uid,
            mounted: false,
            cgroup: Cgroup::default(),
            enforcement: String::new(),
            config,
        };
        // From here on, a failure drops `jail`, which removes what was made.
        std::fs::write(jail.dir.join(MARK), std::process::id().to_string())
            .map_err(|e| fail("cannot mark the session directory", &e))?;
        let id = jail.uid.uid;
        for d in [&jail.work, &jail.scratch] {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(d)
                .map_err(|e| fail("cannot create the work directory", &e))?;
            std::os::unix::fs::chown(d, Some(id), Some(id))
                .map_err(|e| fail("cannot give the jail its directory", &e))?;
        }
        // Root's, readable by all: the jail may connect to what is linked here, not add to it.
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(&jail.x11)
            .map_err(|e| fail("cannot create the display directory", &e))?;
        let l = jail.config.limits;
        let disk = match mount_tmpfs(&jail.work, l.disk_mb, id) {
            Ok(()) => {
                jail.mounted = true;
                format!("disk by a {} MiB tmpfs", l.disk_mb)
            }
            Err(e) => format!("no disk cap (cannot mount a tmpfs: {e})"),
        };
        let limits = CgroupLimits { memory: l.memory_mb << 20, pids: l.max_processes };
        let cgroup = match Cgroup::limited(&name, limits) {
            Ok(cgroup) => {
                jail.enforcement = format!("{}; cpu and file size by rlimits; {disk}", cgroup.how());
                cgroup
            }
            Err(why) => {
                jail.enforcement = format!(
                    "rlimits only ({why}): memory per process, cpu, file size, processes of the session's uid; {disk}"
                );
                Cgroup::default()
            }
        };
        jail.cgroup = cgroup;
        Ok(jail)
    }

    /// The session's writable work directory (the shell's default directory and `HOME`).
    pub fn work_dir(&self) -> &Path {
        &self.work
    }

    /// Where displays are shared with the jail (see [`Displays`]).
    pub fn displays(&self) -> Displays {
        Displays { dir: self.x11.clone(), scratch: self.scratch.clone(), uid: self.uid.uid }
    }

    /// The host uid (and gid) every process of the jail runs as; root inside the jail.
    pub fn host_uid(&self) -> u32 {
        self.uid.uid
    }

    /// How the limits are enforced here: the cgroups used, or why only rlimits are.
    pub fn enforcement(&self) -> &str {
        &self.enforcement
    }

    /// The config it was made with.
    pub fn config(&self) -> &JailConfig {
        &self.config
    }

    /// The `cgroup.procs` file of the jail's cgroup, if it has one (see [`Shell::track`]).
    ///
    /// [`Shell::track`]: crate::Shell::track
    pub fn members_file(&self) -> Option<std::path::PathBuf> {
        self.cgroup.members_file()
    }

    /// The processes in the jail's cgroup (empty without one), as this process sees them.
    pub fn processes(&self) -> Vec<i32> {
        self.cgroup.processes()
    }

    /// How many times the memory limit killed a process of the session (OOM), if the memory
    /// cgroup says.
    pub fn oom_kills(&self) -> Option<u64> {
        self.cgroup.oom_kills()
    }

    /// `shell` as it runs inside this jail: started through the wrapper (module documentation),
    /// in the work directory unless it names another, with `HOME` there, its whole environment
    /// set inside the jail only, and long commands read from the jail's own directory.
    pub fn wrap(&self, shell: &ShellConfig) -> ShellConfig {
        let mut shell = shell.clone();
        let cwd = shell.cwd.clone().unwrap_or_else(|| self.work.clone());
        shell.env.retain(|(k, _)| k != "HOME" && k != "TMPDIR");
        shell.env.insert(0, ("HOME".into(), self.work.display().to_string()));
        let mut argv: Vec<OsString> = Vec::new();
        if !self.cgroup.is_empty() {
            let joins: Vec<String> =
                self.cgroup.procs_files().map(|f| format!("echo $$ > {} || exit 125", sh_quote(&f))).collect();
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
        argv.push(format!("--nproc={}", l.max_processes).into());
        argv.push("--".into());
        let id = self.uid.uid.to_string();
        argv.push(self.setpriv.clone().into_os_string());
        argv.extend(["--reuid", &id, "--regid", &id, "--clear-groups", "--no-new-privs", "--"].map(OsString::from));
        argv.push(self.config.bwrap.clone().into_os_string());
        let mut args = vec![
            "--unshare-user",
            "--uid",
            "0",
            "--gid",
            "0",
            "--disable-userns",
            "--die-with-parent",
            "--unshare-pid",
            "--unshare-ipc",
            "--unshare-uts",
        ];
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
            // The host's unix sockets (a read-only bind does not stop `connect`).
            "--tmpfs",
            "/run",
        ]);
        argv.extend(args.into_iter().map(OsString::from));
        if Path::new("/var/run").is_dir() && !Path::new("/var/run").is_symlink() {
            argv.extend(["--tmpfs".into(), "/var/run".into()]);
        }
        // Other sessions' directories are hidden; then the binds, after the private /tmp and
        // that, so that paths under them show through.
        argv.extend(["--tmpfs".into(), self.config.root.as_os_str().to_owned()]);
        let mut bind = |flag: &str, path: &Path| {
            argv.extend([flag.into(), path.as_os_str().to_owned(), path.as_os_str().to_owned()]);
        };
        if self.config.network {
            // Name resolution may point into /run (systemd-resolved's stub file).
            if let Ok(resolv) = std::fs::canonicalize("/etc/resolv.conf") {
                if resolv.starts_with("/run") {
                    bind("--ro-bind", &resolv);
                }
            }
        }
        bind("--bind", &self.work);
        bind("--ro-bind", &self.scratch);
        for path in &self.config.writable {
            bind("--bind", path);
        }
        // The displays shared with the jail, now or later ([`Displays`]).
        argv.extend(["--ro-bind".into(), self.x11.as_os_str().to_owned(), "/tmp/.X11-unix".into()]);
        argv.extend(["--cap-drop".into(), "ALL".into(), "--clearenv".into()]);
        for (key, value) in crate::command::environment(&shell) {
            argv.extend(["--setenv".into(), key.into(), value.into()]);
        }
        argv.extend(["--chdir".into(), cwd.as_os_str().to_owned(), "--".into()]);
        shell.wrapper = argv;
        // The helpers outside the jail (sh, prlimit, setpriv, bwrap) see none of the session's
        // variables: a loader variable there would run as the host's root.
        shell.wrapper_env = vec![("PATH".into(), host_path().to_string_lossy().into_owned())];
        shell.cwd = Some(cwd);
        shell.scratch_dir = Some(self.scratch.clone());
        shell
    }
}

/// How a jail is given an X display after it started: the display's socket is hard-linked into
/// a directory the jail sees as `/tmp/.X11-unix` (bound in at start, empty until then), and
/// the display's cookie copied into the jail's read-only command directory, readable by the
/// jail's uid only. A hard link, not a bind: a jail's mounts are fixed once it runs. It needs
/// the socket and the work root on one file system (the default `/tmp/agentflow-jails` is).
#[derive(Debug, Clone)]
pub struct Displays {
    dir: PathBuf,
    scratch: PathBuf,
    uid: u32,
}

impl Displays {
    /// Shares the display whose socket is `socket` (`/tmp/.X11-unix/X3`), replacing any shared
    /// before, with its cookie file if it has one; the cookie's path as the jail sees it.
    /// Blocking: file-system work.
    pub fn share(&self, socket: &Path, xauthority: Option<&Path>) -> std::io::Result<Option<PathBuf>> {
        self.clear()?;
        let name = socket.file_name().ok_or_else(|| std::io::Error::other("a socket path with no file name"))?;
        std::fs::hard_link(socket, self.dir.join(name))?;
        let Some(cookie) = xauthority else { return Ok(None) };
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let copy = self.scratch.join(".Xauthority");
        let _ = std::fs::remove_file(&copy);
        let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o400).open(&copy)?;
        file.write_all(&std::fs::read(cookie)?)?;
        std::os::unix::fs::fchown(&file, Some(self.uid), Some(self.uid))?;
        Ok(Some(copy))
    }

    /// Takes back every display shared with the jail.
    pub fn clear(&self) -> std::io::Result<()> {
        for entry in std::fs::read_dir(&self.dir)? {
            std::fs::remove_file(entry?.path())?;
        }
        let _ = std::fs::remove_file(self.scratch.join(".Xauthority"));
        Ok(())
    }
}

impl Drop for Jail {
    fn drop(&mut self) {
        // The shell was ended by its owner; what may be left (a process that left the shell's
        // session and tree) is still in the cgroup: dropping it kills them and removes it.
        drop(std::mem::take(&mut self.cgroup));
        if self.mounted {
            unmount(&self.work);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Adds search (not read) permission for everyone to a directory, if it lacks it.
fn traversable(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir)?.permissions().mode();
    if mode & 0o011 != 0o011 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode | 0o011))?;
    }
    Ok(())
}

/// Mounts a tmpfs of `size_mb` at `dir`, owned by `uid`, mode 0700, no devices or setuid.
fn mount_tmpfs(dir: &Path, size_mb: u64, uid: u32) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let target = std::ffi::CString::new(dir.as_os_str().as_bytes())?;
    let options = std::ffi::CString::new(format!("size={size_mb}m,mode=0700,uid={uid},gid={uid}"))?;
    // SAFETY: every pointer is a live NUL-terminated string for the duration of the call.
    let r = unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            target.as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            options.as_ptr().cast(),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Detaches a mount at `dir` (lazily: a process still holding it cannot keep it from going).
fn unmount(dir: &Path) {
    use std::os::unix::ffi::OsStrExt;
    if let Ok(target) = std::ffi::CString::new(dir.as_os_str().as_bytes()) {
        // SAFETY: a live NUL-terminated path.
        unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
    }
}

/// A host uid leased to one jail: an exclusive `flock` on a file named after it, in a directory
/// shared by every engine of the machine, held until dropped (or the process dies).
#[derive(Debug)]
struct UidLease {
    uid: u32,
    _lock: std::fs::File,
}

/// Where the leases are: `/run` is per boot and root's; the temporary directory otherwise.
fn lease_dir() -> PathBuf {
    let run = Path::new("/run/agentflow-uids");
    if std::fs::DirBuilder::new().recursive(true).mode(0o700).create(run).is_ok() {
        return run.to_owned();
    }
    std::env::temp_dir().join("agentflow-uids")
}

static NEXT_UID: AtomicU64 = AtomicU64::new(0);

impl UidLease {
    fn take(range: UidRange) -> std::io::Result<UidLease> {
        use std::os::fd::AsRawFd;
        if range.count == 0 || range.first == 0 || range.first.checked_add(range.count).is_none() {
            return Err(std::io::Error::other(format!("empty or invalid uid range {range:?}")));
        }
        let dir = lease_dir();
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&dir)?;
        // Engines start at different offsets, so that they rarely try the same uids.
        let start = NEXT_UID.fetch_add(1, Ordering::Relaxed) + u64::from(std::process::id()) * 7919;
        for i in 0..u64::from(range.count) {
            let uid = range.first + ((start + i) % u64::from(range.count)) as u32;
            let file =
                std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(dir.join(uid.to_string()))?;
            // SAFETY: flock on a descriptor the File owns.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(UidLease { uid, _lock: file });
            }
        }
        Err(std::io::Error::other(format!("all {} uids from {} are in use", range.count, range.first)))
    }
}

/// Removes what jails of engines that died without cleaning up (SIGKILL, a crash) left: session
/// directories under `root` that carry this crate's mark, and cgroups, both named after the
/// engine's pid, when no process has that pid any more. A live engine's, and this one's, are
/// left alone; nothing else in `root` is touched.
fn sweep(root: &Path) {
    let dead = |name: &str| -> bool {
        let pid = name.split('-').next().and_then(|p| p.parse::<i32>().ok());
        pid.is_some_and(|pid| pid > 0 && !Path::new(&format!("/proc/{pid}")).exists())
    };
    if let Ok(entries) = std::fs::read_dir(root) {
        for entry in entries.flatten() {
            let path = entry.path();
            let ours = entry.file_type().is_ok_and(|t| t.is_dir() && !t.is_symlink()) && path.join(MARK).is_file();
            if ours && entry.file_name().to_str().is_some_and(dead) {
                unmount(&path.join("work"));
                let _ = std::fs::remove_dir_all(path);
            }
        }
    }
    crate::cgroup::sweep(&dead);
}

/// `path` as one single-quoted `sh` word.
fn sh_quote(path: &Path) -> String {
    format!("'{}'", path.display().to_string().replace('\'', "'\\''"))
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
        let (dir, cgroups): (_, Vec<_>) = (jail.dir.clone(), jail.cgroup.procs_files().collect());
        assert!(jail.work_dir().is_dir());
        assert!(!jail.enforcement().is_empty());
        for cg in &cgroups {
            assert!(cg.exists());
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
