//! The crate's own small pool of threads for blocking work (a spawn, ending a process tree,
//! making or removing a jail): at most [`MAX_BLOCKING`] threads, whatever the number of shells
//! starting or ending at once, each leaving after a few idle seconds.
//!
//! The runtime's blocking pool is not bounded that way: a job handed to it when no thread is
//! idle *at that instant* starts a new thread, and a semaphore in front of it does not help, as
//! the next job is handed over before the last one's thread has gone back to idle. With 64
//! shells starting at once, that pool grew to dozens of threads, each kept for ten seconds.

use std::collections::VecDeque;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use crate::{Error, Result};

/// The most threads the pool runs. More would not start shells faster on a machine with few
/// cores: a job is mostly the kernel's work (fork, exec, kill, mkdir).
pub const MAX_BLOCKING: usize = 16;

/// How long an idle thread waits for work before it leaves.
const IDLE: Duration = Duration::from_secs(5);

type Job = Box<dyn FnOnce() + Send>;

struct State {
    queue: VecDeque<Job>,
    threads: usize,
    idle: usize,
}

static STATE: Mutex<State> = Mutex::new(State { queue: VecDeque::new(), threads: 0, idle: 0 });
static WORK: Condvar = Condvar::new();

/// Runs `f` on the pool, in the caller's runtime context (so that it may register descriptors
/// with the reactor and spawn tasks), and waits for it without holding a runtime thread. A
/// panic in `f` is an error.
pub async fn blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> Result<R> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let runtime = tokio::runtime::Handle::current();
    submit(Box::new(move || {
        let _context = runtime.enter();
        let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
    }));
    match rx.await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(_panic)) => Err(Error::Io(std::io::Error::other("a blocking job panicked"))),
        Err(_) => Err(Error::Io(std::io::Error::other("a blocking job was lost"))),
    }
}

fn submit(job: Job) {
    let mut state = STATE.lock();
    state.queue.push_back(job);
    if state.idle > 0 {
        WORK.notify_one();
        return;
    }
    if state.threads < MAX_BLOCKING {
        let spawned = std::thread::Builder::new().name("agentflow-bash".into()).stack_size(256 * 1024).spawn(work);
        if spawned.is_ok() {
            state.threads += 1;
        }
    }
    // Otherwise a busy thread takes it when done.
}

fn work() {
    let mut state = STATE.lock();
    loop {
        if let Some(job) = state.queue.pop_front() {
            drop(state);
            job();
            state = STATE.lock();
            continue;
        }
        state.idle += 1;
        let timed_out = WORK.wait_for(&mut state, IDLE).timed_out();
        state.idle -= 1;
        if timed_out && state.queue.is_empty() {
            state.threads -= 1;
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_many_jobs_on_few_threads() {
        let jobs: Vec<_> = (0..200u64)
            .map(|i| {
                tokio::spawn(blocking(move || {
                    std::thread::sleep(Duration::from_millis(1));
                    i * 2
                }))
            })
            .collect();
        let mut sum = 0;
        for job in jobs {
            sum += job.await.unwrap().unwrap();
        }
        assert_eq!(sum, (0..200u64).map(|i| i * 2).sum::<u64>());
        assert!(STATE.lock().threads <= MAX_BLOCKING);
        assert!(blocking(|| panic!("boom")).await.is_err());
    }
}
