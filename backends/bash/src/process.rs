//! The processes a shell started, found in `/proc`, and how they are ended.
//!
//! The shell is a session leader (it is spawned with `setsid`), so everything it starts shares
//! its session id, even after being orphaned; what called `setsid` itself is still found through
//! the parent links while they last. Finding them that way reads every process of the machine;
//! a shell whose session has a cgroup ([`Members::Cgroup`]) reads only its cgroup's list, so
//! that ending one costs the same however many sessions are live (the cgroup, dropped after
//! the shell, ends whatever left the tree). Ending a tree kills the shell's descendants while the shell
//! is still alive, so that it reaps them (no zombie is left to an init that may not reap), then
//! the shell itself, whose reaping is left to its pump in `pty.rs`. Linux only.

use std::collections::HashSet;
use std::time::{Duration, Instant};

/// One line of `/proc/<pid>/stat`, the fields used here.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stat {
    pub pid: i32,
    pub ppid: i32,
    pub session: i32,
    pub zombie: bool,
}

/// Reads `/proc/<pid>/stat`; `None` when the process is gone.
pub(crate) fn stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may contain anything: parse after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?;
    let ppid = fields.next()?.parse().ok()?;
    let _pgrp = fields.next()?;
    let session = fields.next()?.parse().ok()?;
    Some(Stat { pid, ppid, session, zombie: state == "Z" || state == "X" })
}

/// Where a shell's processes are found.
#[derive(Debug, Clone, Default)]
pub(crate) enum Members {
    /// Every process of the machine, by session id and parent links.
    #[default]
    Scan,
    /// The pids in this `cgroup.procs` file (the session's cgroup), and their parent links.
    Cgroup(std::path::PathBuf),
}

/// Every process of the system, as far as `/proc` shows them.
fn all() -> Vec<Stat> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok()).filter_map(stat).collect()
}

/// The processes started under `root` (not `root` itself), found where `members` says: members
/// of its session and descendants through parent links.
pub(crate) fn tree(root: i32, members: &Members) -> Vec<Stat> {
    let procs = match members {
        Members::Scan => all(),
        Members::Cgroup(file) => std::fs::read_to_string(file)
            .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).filter_map(stat).collect())
            .unwrap_or_default(),
    };
    let mut inside: HashSet<i32> = procs.iter().filter(|p| p.session == root).map(|p| p.pid).collect();
    inside.insert(root);
    // Parent links: repeat until no process joins (a tree is at most as deep as it is large).
    loop {
        let before = inside.len();
        for p in &procs {
            if inside.contains(&p.ppid) {
                inside.insert(p.pid);
            }
        }
        if inside.len() == before {
            break;
        }
    }
    procs.into_iter().filter(|p| p.pid != root && inside.contains(&p.pid)).collect()
}

/// Whether `pid` is the first process (pid 1) of a PID namespace below ours, as a jail's
/// `bwrap` is: killing it makes the kernel kill everything in that namespace at once, which no
/// fork can outrun.
pub(crate) fn namespace_init(pid: i32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else { return false };
    let Some(line) = status.lines().find(|l| l.starts_with("NSpid:")) else { return false };
    let ids: Vec<&str> = line.split_ascii_whitespace().skip(1).collect();
    ids.len() > 1 && ids.last() == Some(&"1")
}

/// SIGKILLs the PID-namespace inits among `procs` (see [`namespace_init`]).
fn kill_namespaces(procs: &[Stat]) {
    for p in procs.iter().filter(|p| !p.zombie && namespace_init(p.pid)) {
        signal(p.pid, libc::SIGKILL);
    }
}

fn signal(pid: i32, sig: libc::c_int) {
    if pid > 1 {
        // SAFETY: kill(2) has no memory-safety preconditions.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Ends the shell `root` and everything it started; blocks for at most about `patience`.
///
/// Descendants are killed first while the shell can still reap them; then the shell, unless it
/// was already reaped (`root_reaped`: its pid may belong to another process by now). Returns
/// when no descendant is left alive (zombies of another parent are not waited for).
pub(crate) fn kill_tree(root: i32, root_reaped: bool, patience: Duration, members: &Members) {
    let descendants = |root| tree(root, members);
    let deadline = Instant::now() + patience;
    let mut had_any = false;
    // A jail's namespace first: its whole content goes with its init.
    kill_namespaces(&descendants(root));
    // Stop first so that nothing forks between the scan and the kill, then kill.
    for _ in 0..3 {
        let procs = descendants(root);
        if procs.is_empty() {
            break;
        }
        had_any = true;
        for p in &procs {
            signal(p.pid, libc::SIGSTOP);
        }
        for p in &procs {
            signal(p.pid, libc::SIGKILL);
        }
    }
    // Let the shell reap its children before it goes (an init may not reap orphans).
    while had_any && Instant::now() < deadline {
        let left = descendants(root);
        if left.iter().all(|p| p.zombie && p.ppid != root) {
            break;
        }
        for p in left.iter().filter(|p| !p.zombie) {
            signal(p.pid, libc::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    if !root_reaped {
        signal(root, libc::SIGKILL);
    }
    // Whatever forked in the meantime.
    if had_any {
        for p in descendants(root) {
            signal(p.pid, libc::SIGKILL);
        }
    }
}

/// Kills the shell and everything it started at once, without waiting: for `Drop`.
pub(crate) fn kill_tree_now(root: i32, members: &Members) {
    let procs = tree(root, members);
    kill_namespaces(&procs);
    for p in &procs {
        signal(p.pid, libc::SIGKILL);
    }
    signal(root, libc::SIGKILL);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_stat() {
        let me = stat(std::process::id() as i32).expect("this process is in /proc");
        assert_eq!(me.pid, std::process::id() as i32);
        assert!(!me.zombie);
        assert!(stat(i32::MAX).is_none());
    }

    #[test]
    fn finds_and_kills_a_tree() {
        // A session leader with a child and a grandchild, as a shell would have.
        let mut child = std::process::Command::new("setsid")
            .args(["bash", "-c", "sleep 300 & (sleep 301 &); wait"])
            .spawn()
            .expect("setsid and bash are installed");
        let root = child.id() as i32;
        let deadline = Instant::now() + Duration::from_secs(5);
        // `setsid` execs bash in place when it is not a group leader (it is not, under cargo).
        while tree(root, &Members::Scan).iter().filter(|p| !p.zombie).count() < 2 {
            assert!(Instant::now() < deadline, "the tree did not start: {:?}", tree(root, &Members::Scan));
            std::thread::sleep(Duration::from_millis(5));
        }
        kill_tree(root, false, Duration::from_secs(2), &Members::Scan);
        child.wait().expect("the shell is reaped");
        let left: Vec<_> = tree(root, &Members::Scan).into_iter().filter(|p| !p.zombie).collect();
        assert!(left.is_empty(), "left alive: {left:?}");
    }
}
