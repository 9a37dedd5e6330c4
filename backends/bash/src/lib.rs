//! # agentflow-bash
//!
//! A persistent `bash` on a real pseudo-terminal that no command can wedge: the [`Shell`].
//! Each call comes back, at its timeout at the latest, with the command's real exit code, its
//! working directory and its output cleaned (no echo, prompts, escape sequences or carriage-return
//! rewrites; valid UTF-8) and bounded (head and tail kept); the shell is in step for the next one.
//!
//! A shell may run in a [`Jail`] (bubblewrap in a user namespace, as a host uid of its own: its
//! own namespaces, a read-only file system but for its work directory, limits on memory,
//! processes, CPU time, file size and disk). A plain shell can be tracked by a [`Cgroup`], so
//! that what it started is found and killed even after leaving its process tree.
//!
//! Files are read, written and listed in the shell's own view of the file system
//! (`Shell::read_file`, `write_file`, `list_dir`: directly for a plain shell, as commands inside
//! a jail for a jailed one), and the `edit` module is the editor coding agents call, as pure
//! functions over a file's bytes.
//!
//! This crate owns the shell process, its terminal and its process tree, but no thread per
//! shell: a shell is served by one task on the caller's tokio runtime, and the blocking work
//! (spawns, kills, file-system work) runs on a pool of at most [`MAX_BLOCKING`] threads
//! ([`blocking`]). It knows nothing of sessions, JSON, tool names or HTTP: the
//! `agentflow-sandbox` engine adapts it in `src/backends/bash.rs`. Linux only (it reads
//! `/proc`).
//!
//! ```
//! use std::time::Duration;
//! use agentflow_bash::{OnTimeout, Shell, ShellConfig};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let mut shell = Shell::spawn(ShellConfig::default()).await?;
//! let t = Duration::from_secs(5);
//! shell.run("cd /tmp && export GREETING=hi", t, OnTimeout::Interrupt).await?;
//! let out = shell.run("echo $GREETING from $PWD; false", t, OnTimeout::Interrupt).await?;
//! assert_eq!((out.output.as_str(), out.exit_code), ("hi from /tmp\n", Some(1)));
//! let slow = shell.run("sleep 100", Duration::from_secs(1), OnTimeout::Interrupt).await?;
//! assert_eq!((slow.timed_out, slow.exit_code), (true, Some(130)));
//! shell.close().await;
//! # Ok::<(), agentflow_bash::Error>(()) }).unwrap();
//! ```

mod blocking;
mod cgroup;
mod command;
pub mod edit;
mod files;
mod jail;
mod process;
mod pty;
mod shell;
mod transcript;

pub use blocking::{blocking, MAX_BLOCKING};
pub use cgroup::Cgroup;
pub use command::{environment, RESERVED_VARIABLES};
pub use files::{DirEntry, FileError, FileRead, FileWritten, Kind, Listing, WriteOptions};
pub use jail::{check_work_root, find_bwrap, find_program, Displays, Jail, JailConfig, Limits, UidRange, INSTALL_HINT};
pub use pty::{is_shell, Exit};
pub use shell::{OnTimeout, Outcome, Shell, ShellConfig, INTERRUPT_GRACE, SETTLE};

/// What can go wrong with a shell.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The shell could not be started or set up.
    #[error("cannot start the shell: {0}")]
    Spawn(String),
    /// A command kept running at its timeout still runs: write to it or interrupt it.
    #[error("a command is still running: write to it or interrupt it")]
    Busy,
    /// Input was given but no command is running.
    #[error("no command is running")]
    Idle,
    /// The shell died during the call; `partial` is what it showed before.
    #[error("{reason}")]
    Exited {
        /// What happened.
        reason: String,
        /// The output up to its death, and its exit status as `exit_code`.
        partial: Box<Outcome>,
    },
    /// The shell is dead (an earlier call said so): start a new one.
    #[error("the shell has exited: start a new one")]
    Closed,
    /// A jail could not be made (its directory, its cgroups, a program it needs).
    #[error("cannot set up the jail: {0}")]
    Jail(String),
    /// Reading or writing the terminal failed.
    #[error("terminal i/o failed: {0}")]
    Io(#[from] std::io::Error),
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
