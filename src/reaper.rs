//! The orphan reaper: makes the engine's process a child subreaper and reaps the zombies that
//! are re-parented to it and that nobody else waits for.
//!
//! Commands run in shells leave orphans behind (a daemon whose parent exited, a pipeline whose
//! shell was killed). Once the engine is a subreaper (`PR_SET_CHILD_SUBREAPER`), they are
//! re-parented to it rather than to the machine's init (which, in a container, may not reap at
//! all), and each must be reaped or it stays a zombie. This module only decides which zombies
//! are orphans and reaps those; calling [`reap_orphans`] periodically (and once at shutdown) is
//! left to the engine.
//!
//! It never calls `waitpid(-1)`: that would steal the exit status of children other code waits
//! for by pid (each shell's pump in `agentflow-bash`, a vm session's Xvfb `Child`). A
//! zombie is reaped here only when it is ours (ppid is this process), is not one of the shells
//! (`agentflow_bash::is_shell`: their pumps reap them), and is not in this process's own
//! session (direct children spawned without `setsid`, such as Xvfb, stay in it). An orphan that
//! called `setsid` itself (`setsid -f`, a daemon) is reaped like any other. Linux only (`/proc`).

use std::io;

/// Makes this process a child subreaper: orphans of its descendants are re-parented to it.
pub fn become_subreaper() -> io::Result<()> {
    // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) takes plain integers and touches no memory of ours.
    let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong, 0, 0, 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Reaps the zombies re-parented to this process that nobody else waits for (see the module
/// documentation); how many were reaped. Usually one read of `/proc/<pid>/stat` per zombie
/// child; when a child someone else reaps is a zombie at that moment, one per process of the
/// machine. Blocking file-system reads: call it from a blocking thread.
pub fn reap_orphans() -> usize {
    let mut reaped = 0;
    // The usual case, without reading every process: the zombies waiting for this process,
    // peeked at one by one (`WNOWAIT` leaves them unreaped), each reaped by pid if it is an
    // orphan. A zombie that is someone else's to reap (a shell just ended, before its pump
    // reaps it) would be peeked at again: then the whole of `/proc` is read instead.
    loop {
        // SAFETY: siginfo_t is plain data that waitid fills in.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: waitid writes into a live siginfo_t; WNOWAIT reaps nothing.
        let r = unsafe { libc::waitid(libc::P_ALL, 0, &mut info, libc::WEXITED | libc::WNOHANG | libc::WNOWAIT) };
        // SAFETY: si_pid reads the field waitid set (0 when no child has changed state).
        let pid = if r == 0 { unsafe { info.si_pid() } } else { 0 };
        if pid <= 0 {
            return reaped;
        }
        if !is_orphan(pid) {
            return reaped + scan_for_orphans();
        }
        let mut status = 0;
        // SAFETY: waitpid on one pid, WNOHANG, writing into a live int.
        if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } != pid {
            return reaped + scan_for_orphans();
        }
        reaped += 1;
    }
}

/// Whether `pid`, a zombie child of this process, is an orphan nobody else waits for.
fn is_orphan(pid: i32) -> bool {
    // SAFETY: getsid(0) has no preconditions.
    let my_session = unsafe { libc::getsid(0) };
    Zombie::read(pid).is_some_and(|z| z.session != my_session && !is_shell(pid))
}

/// Every process of the machine read, for the orphans among them.
fn scan_for_orphans() -> usize {
    let me = std::process::id() as i32;
    // SAFETY: getsid(0) has no preconditions.
    let my_session = unsafe { libc::getsid(0) };
    let Ok(dir) = std::fs::read_dir("/proc") else { return 0 };
    let mut reaped = 0;
    for entry in dir.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else { continue };
        let Some(zombie) = Zombie::read(pid) else { continue };
        if zombie.ppid != me || zombie.session == my_session || is_shell(pid) {
            continue;
        }
        let mut status = 0;
        // SAFETY: waitpid on one pid, WNOHANG, writing into a live int.
        if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } == pid {
            reaped += 1;
        }
    }
    reaped
}

/// Whether a shell's own pump reaps `pid`.
fn is_shell(pid: i32) -> bool {
    #[cfg(feature = "bash")]
    return agentflow_bash::is_shell(pid);
    #[cfg(not(feature = "bash"))]
    {
        let _ = pid;
        false
    }
}

/// A zombie's parent and session, from `/proc/<pid>/stat`; `None` for a live or gone process.
struct Zombie {
    ppid: i32,
    session: i32,
}

impl Zombie {
    fn read(pid: i32) -> Option<Zombie> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The command name is in parentheses and may contain anything: parse after the last ')'.
        let mut fields = text[text.rfind(')')? + 1..].split_ascii_whitespace();
        if fields.next()? != "Z" {
            return None;
        }
        let ppid = fields.next()?.parse().ok()?;
        let _pgrp = fields.next()?;
        let session = fields.next()?.parse().ok()?;
        Some(Zombie { ppid, session })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::time::{Duration, Instant};

    fn state(pid: i32) -> Option<(char, i32)> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let mut fields = text[text.rfind(')')? + 1..].split_ascii_whitespace();
        Some((fields.next()?.chars().next()?, fields.next()?.parse().ok()?))
    }

    fn until(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn reaps_orphans_but_not_children_someone_waits_for() {
        let me = std::process::id() as i32;
        become_subreaper().expect("prctl(PR_SET_CHILD_SUBREAPER) works on Linux");
        // A shell in its own session (as the engine's shells are) leaves a background job behind.
        let mut shell = std::process::Command::new("setsid")
            .args(["bash", "-c", "sleep 0.1 & echo $!"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("setsid and bash are installed");
        let mut out = String::new();
        shell.stdout.take().unwrap().read_to_string(&mut out).unwrap();
        let orphan: i32 = out.trim().parse().expect("the job's pid");
        // A direct child in our own session, whose status its owner will want.
        let mut owned = std::process::Command::new("true").spawn().expect("true is installed");
        let owned_pid = owned.id() as i32;
        assert!(shell.wait().unwrap().success());
        // The job was re-parented to us, and dies a zombie; so does `true`.
        until("the orphan is our zombie", || state(orphan) == Some(('Z', me)));
        until("the direct child is a zombie", || state(owned_pid).is_some_and(|s| s.0 == 'Z'));
        assert!(reap_orphans() >= 1);
        assert!(state(orphan).is_none(), "the orphan was not reaped");
        // Not stolen: its owner still gets its exit status.
        assert!(state(owned_pid).is_some(), "a child someone waits for was reaped");
        assert!(owned.wait().expect("the status is still there").success());
    }
}
