//! The `bash` adapter: `bash:run`, `bash:write`, `bash:interrupt`, the file tools
//! `bash:read_file`, `bash:write_file`, `bash:list_dir` and `bash:edit` (docs/backends.md, bash)
//! and the hidden `bash:info` (the shell's pid, isolation and limits), over
//! [`agentflow_bash::Shell`] and its [`edit`] module.
//!
//! It owns the translation: session config (backend defaults merged with the session's) into a
//! [`ShellConfig`], JSON parameters into shell calls, each [`Outcome`] into the tool's `data`, and
//! the crate's errors into wire codes. It replaces a shell that died with a fresh one on the next
//! call. What a shell does (PTY, markers, interrupts, process trees) is left to `agentflow-bash`.
//!
//! Session config keys, each optional:
//!
//! | key | type | default | meaning |
//! |---|---|---|---|
//! | `cwd` | string | the server's directory | where the shell starts (must exist) |
//! | `env` | object of strings | — | set after the defaults (`TERM=dumb`, `PAGER=cat`, …) |
//! | `shell` | string | `/bin/bash` | the bash to run |
//! | `timeout` | seconds | 30 | a command's timeout when `bash:run` gives none |
//! | `max_output_bytes` | integer ≥ 1024 | 131072 | output kept per answer (head and tail) |
//! | `max_file_bytes` | integer ≥ 1 | 10485760 | the most a file tool reads or writes in one call |
//! | `rows`, `cols` | integer | 50, 200 | the terminal's size |
//! | `isolation` | `"none"` or `"bwrap"` | `"none"` | `"bwrap"`: the shell runs in a [`Jail`] |
//!
//! With `isolation: "bwrap"` (bubblewrap: own mount, PID, IPC, UTS and network namespaces; `/`
//! read-only; a private `/tmp`; a per-session work directory, the shell's `HOME` and default
//! `cwd`, removed with the session), these keys apply too:
//!
//! | key | type | default | meaning |
//! |---|---|---|---|
//! | `network` | bool | false | share the host's network |
//! | `writable` | list of paths | [] | existing host paths the jail may write to |
//! | `memory_mb` | integer ≥ 16 | 1024 | memory of the session (cgroup) and per process (RLIMIT_AS) |
//! | `max_processes` | integer ≥ 8 | 256 | processes at once (pids cgroup) |
//! | `cpu_seconds` | integer ≥ 1 | 600 | CPU seconds per process (RLIMIT_CPU) |
//! | `file_size_mb` | integer ≥ 1 | 1024 | largest file written (RLIMIT_FSIZE) |
//! | `disk_mb` | integer ≥ 1 | 512 | all files of the work directory together (a tmpfs) |
//! | `work_root` | string | `$TMPDIR/agentflow-jails` | operator only: where session work directories are made |
//! | `uid_first`, `uid_count` | integer | 1000000, 65536 | operator only: host uids jails run as |
//!
//! The operator's config is the floor: a session may tighten a jailed default, never loosen it,
//! unless `resources.bash.policy` opens a key (`isolation`, `network`, `writable`, `loader_env`,
//! or a ceiling for a limit); a refusal is 1006 naming the key. Jailed or not, a session's
//! `max_output_bytes` is at most `resources.bash.policy.max_output_bytes` (16 MiB unless the
//! operator says, or the operator's own default if higher): it is memory held per session.
//!
//! Where the machine has no pids/memory cgroup to use, the limits fall back to rlimits and
//! [`Jail::enforcement`] says so. A missing `bwrap` is 2003 with how to install it: at warm-up
//! when the backend's default isolation is `bwrap`, else when a session asks for it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use agentflow_bash::edit::{self, EditError};
use agentflow_bash::{
    check_work_root, find_bwrap, Cgroup, FileError, Jail, JailConfig, Limits, OnTimeout, Outcome, Shell, ShellConfig,
    WriteOptions, INSTALL_HINT, RESERVED_VARIABLES,
};

use crate::backend::{merge_config, state_mut, Backend, CallContext, SessionState, SharedDesktop};
use crate::error::{Error, Result};
use crate::tool::{parse_call, parse_config, tool_specs, ToolSpec};

/// The bash backend's tools.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(tag = "tool", content = "params", rename_all = "snake_case")]
enum Tool {
    /// Runs a command in the session's persistent bash (cd, variables, functions and venvs
    /// persist) and returns its output (stdout and stderr), exit code and working directory.
    Run {
        /// The bash command(s) to run; several lines allowed.
        command: String,
        /// Seconds to wait for the command (default: the session's timeout, 30).
        #[schemars(range(min = 0.001, max = 86_400))]
        timeout: Option<f64>,
        /// At the timeout, interrupt the command (default), or keep it running for bash:write
        /// and bash:interrupt (for REPLs, prompts, servers).
        #[serde(default)]
        on_timeout: WhenTimedOut,
    },
    /// Types text into the command still running in the shell (kept with on_timeout: keep) and
    /// returns what it printed since the last call, and its exit code if it finished.
    Write {
        /// The text to type; \n presses Enter.
        text: String,
        /// Seconds to wait for an answer (default 5).
        #[serde(default = "default_write_wait")]
        #[schemars(range(min = 0.001, max = 86_400))]
        timeout: f64,
    },
    /// Sends Ctrl-C to the command running in the shell (then kills it if it ignores that) and
    /// returns its last output and exit code.
    Interrupt {},
    /// The session's shell: bash's pid as the engine sees it, its directory, its isolation and,
    /// in a jail, the work directory, limits and how they are enforced (cgroups or rlimits
    /// only).
    #[schemars(extend("x-hidden" = true))]
    Info {},
    /// Reads a file in the session's view of the file system (a jailed session's jail), from
    /// `offset`, `length` bytes (default: to the end), as UTF-8 text or base64; with its size
    /// and mode. Paths are relative to the shell's current directory.
    ReadFile {
        /// The file to read.
        path: String,
        /// The first byte to read (default 0).
        #[serde(default)]
        offset: u64,
        /// How many bytes to read (default: to the end of the file).
        length: Option<u64>,
        /// "utf-8" (default; a file that is not UTF-8 text is refused) or "base64" (any bytes).
        #[serde(default)]
        encoding: Encoding,
    },
    /// Writes a file exactly as given (no newline or encoding changes), replacing it or, with
    /// append, adding to its end; made if missing.
    WriteFile {
        /// The file to write.
        path: String,
        /// What to write.
        content: String,
        /// How `content` is encoded: "utf-8" (default) or "base64".
        #[serde(default)]
        encoding: Encoding,
        /// Permission bits to set, in octal ("0755").
        mode: Option<String>,
        /// Add to the end instead of replacing (default false).
        #[serde(default)]
        append: bool,
        /// Make missing parent directories (default false).
        #[serde(default)]
        make_dirs: bool,
    },
    /// Lists a directory: each entry's path (relative to it), type, size and mode, `depth`
    /// levels down.
    ListDir {
        /// The directory (default: the shell's current directory).
        #[serde(default = "current_dir")]
        path: String,
        /// Levels to list (default 1: the directory's own entries).
        #[serde(default = "one")]
        #[schemars(range(min = 1, max = 16))]
        depth: u32,
    },
    /// The file editor coding agents use (str_replace_editor): view a file with line numbers
    /// (or a directory two levels deep), create a file, replace a unique string, insert after
    /// a line, undo the last edit of a file.
    Edit {
        /// One of view, create, str_replace, insert, undo_edit.
        command: EditCommand,
        /// The file or directory, relative to the shell's current directory or absolute.
        path: String,
        /// create: the new file's content.
        file_text: Option<String>,
        /// str_replace: the text to replace; it must occur exactly once in the file.
        old_str: Option<String>,
        /// str_replace: the replacement (default: empty); insert: the text to insert.
        new_str: Option<String>,
        /// insert: the line after which to insert (0: at the start).
        insert_line: Option<i64>,
        /// view: the lines to show, [first, last], 1-based; last -1 for the end of the file.
        view_range: Option<[i64; 2]>,
    },
}

/// How file content is carried in JSON.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
enum Encoding {
    #[default]
    #[serde(rename = "utf-8", alias = "utf8")]
    Utf8,
    #[serde(rename = "base64")]
    Base64,
}

/// `command` of `bash:edit`.
#[derive(Debug, Clone, Copy, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
enum EditCommand {
    View,
    Create,
    StrReplace,
    Insert,
    UndoEdit,
}

fn current_dir() -> String {
    ".".to_owned()
}

fn one() -> u32 {
    1
}

/// `on_timeout` of `bash:run`.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
enum WhenTimedOut {
    #[default]
    Interrupt,
    Keep,
}

fn default_write_wait() -> f64 {
    DEFAULT_WRITE_WAIT.as_secs_f64()
}

/// A command's timeout when neither the call nor the session config gives one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `bash:write` waits for an answer when the call does not say.
pub const DEFAULT_WRITE_WAIT: Duration = Duration::from_secs(5);

/// The `bash` backend: one persistent shell per session.
#[derive(Debug)]
pub struct BashBackend {
    defaults: Map<String, Value>,
    /// The operator's defaults, parsed: the floor of every session.
    floor: SessionConfig,
    /// What the operator lets sessions loosen (`resources.bash.policy`).
    policy: Policy,
}

/// Keys only the operator sets (`resources.bash.config`): a session naming one is refused.
const OPERATOR_ONLY: &[&str] = &["work_root", "uid_first", "uid_count"];

/// What the operator lets sessions loosen beyond the defaults (`resources.bash.policy`); with
/// none, a session of a jailed backend may only tighten the jail. Read as session configs are
/// (an unknown key is refused, naming the known ones).
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
struct Policy {
    /// isolation levels sessions may choose: "none" lets them leave the jail
    #[serde(default)]
    isolation: Vec<Isolation>,
    /// sessions may share the host's network
    #[serde(default)]
    network: bool,
    /// paths (and what is under them) sessions may name writable
    #[serde(default)]
    writable: Vec<PathBuf>,
    /// sessions may set LD_* variables
    #[serde(default)]
    loader_env: bool,
    /// the most output a session may ask to keep per answer (held in memory while the command runs)
    max_output_bytes: Option<u64>,
    /// the largest file a session may ask to read or write in one call (held in memory)
    max_file_bytes: Option<u64>,
    #[serde(flatten)]
    ceilings: Ceilings,
}

/// The limits as a policy's ceilings (each optional: above the operator's default only).
#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
struct Ceilings {
    /// ceiling for memory_mb
    memory_mb: Option<u64>,
    /// ceiling for max_processes
    max_processes: Option<u64>,
    /// ceiling for cpu_seconds
    cpu_seconds: Option<u64>,
    /// ceiling for file_size_mb
    file_size_mb: Option<u64>,
    /// ceiling for disk_mb
    disk_mb: Option<u64>,
}

/// The most output per answer a session may ask for when the policy does not say.
const MAX_OUTPUT_CEILING: u64 = 16 << 20;
/// The largest file a session may ask to read or write when the policy does not say.
const MAX_FILE_CEILING: u64 = 64 << 20;
/// A file tool's cap per read and write when the session config does not say.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 10 << 20;

/// A limit: its key, its value in a jail's limits, and its ceiling in a policy.
type Limit = (&'static str, fn(&Limits) -> u64, fn(&Ceilings) -> Option<u64>);

/// Each limit.
const LIMITS: [Limit; 5] = [
    ("memory_mb", |l| l.memory_mb, |c| c.memory_mb),
    ("max_processes", |l| l.max_processes, |c| c.max_processes),
    ("cpu_seconds", |l| l.cpu_seconds, |c| c.cpu_seconds),
    ("file_size_mb", |l| l.file_size_mb, |c| c.file_size_mb),
    ("disk_mb", |l| l.disk_mb, |c| c.disk_mb),
];

impl Policy {
    fn parse(map: &Map<String, Value>) -> Result<Policy> {
        let mut map = map.clone();
        // One level may be written alone.
        if let Some(level @ Value::String(_)) = map.get_mut("isolation") {
            *level = Value::Array(vec![level.take()]);
        }
        let policy: Policy = parse_config(&map)?;
        if let Some(path) = policy.writable.iter().find(|p| !p.is_absolute()) {
            return Err(Error::param("writable", format!("expected absolute paths, got {}", path.display())));
        }
        Ok(policy)
    }

    /// A session's jail (`asked`, `None` for none) against the operator's (`floor`).
    fn check(&self, floor: &JailConfig, asked: Option<&JailConfig>) -> Result<()> {
        let Some(asked) = asked else {
            return match self.isolation.contains(&Isolation::None) {
                true => Ok(()),
                false => Err(Error::policy(
                    "isolation",
                    "the operator jails every shell (\"bwrap\"); resources.bash.policy.isolation opens \"none\"",
                )),
            };
        };
        if asked.network && !floor.network && !self.network {
            return Err(Error::policy(
                "network",
                "the operator's jail has no network; resources.bash.policy.network opens it",
            ));
        }
        let open: Vec<&PathBuf> = floor.writable.iter().chain(&self.writable).collect();
        if let Some(path) = asked.writable.iter().find(|p| !open.iter().any(|o| p.starts_with(o))) {
            return Err(Error::policy(
                "writable",
                format!(
                    "{} is not under a path the operator made writable ({}); resources.bash.policy.writable opens more",
                    path.display(),
                    if open.is_empty() {
                        "none".to_owned()
                    } else {
                        open.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
                    }
                ),
            ));
        }
        for (key, limit, ceiling) in LIMITS {
            let ceiling = ceiling(&self.ceilings).unwrap_or(0).max(limit(&floor.limits));
            let value = limit(&asked.limits);
            if value > ceiling {
                return Err(Error::policy(
                    key,
                    format!("{value} is above the operator's ceiling {ceiling}; resources.bash.policy.{key} raises it"),
                ));
            }
        }
        Ok(())
    }
}

impl BashBackend {
    /// A backend whose sessions start from these config defaults (keys as in the module
    /// documentation); a wrong key or value is a configuration error.
    pub fn new(defaults: Map<String, Value>) -> Result<Self> {
        Self::with_policy(defaults, Map::new())
    }

    /// A backend with the operator's policy too (`resources.bash.policy`).
    pub fn with_policy(defaults: Map<String, Value>, policy: Map<String, Value>) -> Result<Self> {
        let config = SessionConfig::parse(&defaults).map_err(|e| Error::Config(format!("bash backend: {e}")))?;
        config.check_cwd().map_err(|e| Error::Config(format!("bash backend: {e}")))?;
        if let Some(jail) = &config.jail {
            check_work_root(&jail.root).map_err(|e| Error::Config(format!("bash backend: work_root: {e}")))?;
        }
        let policy = Policy::parse(&policy).map_err(|e| Error::Config(format!("bash backend: policy: {e}")))?;
        Ok(BashBackend { floor: config, defaults, policy })
    }

    /// The session's settings: the operator's defaults with the session's keys over them, each
    /// within the policy (a session may tighten the operator's jail, never loosen it).
    fn session_config(&self, asked: &Map<String, Value>) -> Result<SessionConfig> {
        for key in OPERATOR_ONLY {
            if asked.contains_key(*key) {
                return Err(Error::policy(*key, "set by the operator only, in resources.bash.config"));
            }
        }
        if let Some(Value::Object(env)) = asked.get("env") {
            if let Some(name) = env.keys().find(|k| k.starts_with("LD_")).filter(|_| !self.policy.loader_env) {
                return Err(Error::policy(
                    format!("env.{name}"),
                    "loader variables (LD_*) are refused; resources.bash.policy.loader_env allows them",
                ));
            }
        }
        let config = SessionConfig::parse(&merge_config(&self.defaults, asked))?;
        let ceiling =
            self.policy.max_output_bytes.unwrap_or(MAX_OUTPUT_CEILING).max(self.floor.shell.max_output_bytes as u64);
        if config.shell.max_output_bytes as u64 > ceiling {
            return Err(Error::policy(
                "max_output_bytes",
                format!(
                    "{} is above the operator's ceiling {ceiling}; resources.bash.policy.max_output_bytes raises it",
                    config.shell.max_output_bytes
                ),
            ));
        }
        let ceiling = self.policy.max_file_bytes.unwrap_or(MAX_FILE_CEILING).max(self.floor.max_file_bytes);
        if config.max_file_bytes > ceiling {
            return Err(Error::policy(
                "max_file_bytes",
                format!(
                    "{} is above the operator's ceiling {ceiling}; resources.bash.policy.max_file_bytes raises it",
                    config.max_file_bytes
                ),
            ));
        }
        if let Some(floor) = &self.floor.jail {
            self.policy.check(floor, config.jail.as_ref())?;
        }
        Ok(config)
    }
}

/// A session's settings, checked.
#[derive(Debug, Clone)]
struct SessionConfig {
    shell: ShellConfig,
    timeout: Duration,
    /// Whether the shell gets the worker's desktop (`share_desktop`).
    share_desktop: bool,
    /// The file tools' cap per read and write.
    max_file_bytes: u64,
    /// The jail's settings when `isolation` is `bwrap` (its `bwrap` is found at creation).
    jail: Option<JailConfig>,
}

/// The session config keys, as the config arrives (the module documentation says what each
/// means); checked against this type's schema, so a wrong key or value is a 1002 naming it.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct Keys {
    /// where the shell starts (must exist)
    cwd: Option<PathBuf>,
    /// variables set after the defaults (strings; numbers and booleans are written out)
    env: Option<Map<String, Value>>,
    /// the bash to run
    shell: Option<PathBuf>,
    /// a command's timeout when bash:run gives none, in seconds
    #[schemars(range(min = 0.001, max = 86_400))]
    timeout: Option<f64>,
    /// output kept per answer (head and tail)
    #[schemars(range(min = 1024, max = 1_073_741_824))]
    max_output_bytes: Option<u64>,
    /// the file tools' cap per read and write, bytes (default 10 MiB)
    #[schemars(range(min = 1, max = 1_073_741_824))]
    max_file_bytes: Option<u64>,
    /// the terminal's rows
    #[schemars(range(min = 2, max = 10_000))]
    rows: Option<u16>,
    /// the terminal's columns
    #[schemars(range(min = 2, max = 10_000))]
    cols: Option<u16>,
    /// "bwrap": the shell runs in a jail
    isolation: Option<Isolation>,
    /// share the host's network (jail)
    network: Option<bool>,
    /// existing host paths the jail may write to (absolute)
    writable: Option<Vec<PathBuf>>,
    /// memory of the session, MiB (jail)
    #[schemars(range(min = 16, max = 1_073_741_824))]
    memory_mb: Option<u64>,
    /// processes at once (jail)
    #[schemars(range(min = 8, max = 4_194_304))]
    max_processes: Option<u64>,
    /// CPU seconds per process (jail)
    #[schemars(range(min = 1, max = 4_294_967_296u64))]
    cpu_seconds: Option<u64>,
    /// largest file written, MiB (jail)
    #[schemars(range(min = 1, max = 1_073_741_824))]
    file_size_mb: Option<u64>,
    /// all files of the work directory together, MiB (jail)
    #[schemars(range(min = 1, max = 1_073_741_824))]
    disk_mb: Option<u64>,
    /// the shell gets the display of the worker's vm desktop (default true)
    share_desktop: Option<bool>,
    /// operator only: where session work directories are made (absolute)
    work_root: Option<PathBuf>,
    /// operator only: the first host uid jails run as
    #[schemars(range(min = 1, max = 2_147_483_647))]
    uid_first: Option<u32>,
    /// operator only: how many host uids jails may use
    #[schemars(range(min = 1, max = 16_777_216))]
    uid_count: Option<u32>,
}

/// `isolation` of a session config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
enum Isolation {
    None,
    Bwrap,
}

impl SessionConfig {
    fn parse(config: &Map<String, Value>) -> Result<Self> {
        let keys: Keys = parse_config(config)?;
        let mut shell = ShellConfig { cwd: keys.cwd, ..ShellConfig::default() };
        for (name, v) in keys.env.unwrap_or_default() {
            let v = match v {
                Value::String(s) => s,
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => return Err(Error::param(format!("env.{name}"), "expected a string")),
            };
            if name.is_empty() || name.contains(['=', '\0']) {
                return Err(Error::param(format!("env.{name}"), "not a valid variable name"));
            }
            shell.env.push((name, v));
        }
        if let Some(program) = keys.shell {
            shell.program = program;
        }
        shell.max_output_bytes = keys.max_output_bytes.map_or(shell.max_output_bytes, |n| n as usize);
        shell.rows = keys.rows.unwrap_or(shell.rows);
        shell.cols = keys.cols.unwrap_or(shell.cols);
        let timeout = keys.timeout.map_or(DEFAULT_TIMEOUT, Duration::from_secs_f64);
        let mut jail = JailConfig::new(PathBuf::new());
        jail.network = keys.network.unwrap_or(jail.network);
        if let Some(paths) = keys.writable {
            if let Some(i) = paths.iter().position(|p| !p.is_absolute()) {
                return Err(Error::param(format!("writable[{i}]"), "expected an absolute path"));
            }
            jail.writable = paths;
        }
        let limits = &mut jail.limits;
        limits.memory_mb = keys.memory_mb.unwrap_or(limits.memory_mb);
        limits.max_processes = keys.max_processes.unwrap_or(limits.max_processes);
        limits.cpu_seconds = keys.cpu_seconds.unwrap_or(limits.cpu_seconds);
        limits.file_size_mb = keys.file_size_mb.unwrap_or(limits.file_size_mb);
        limits.disk_mb = keys.disk_mb.unwrap_or(limits.disk_mb);
        jail.uids.first = keys.uid_first.unwrap_or(jail.uids.first);
        jail.uids.count = keys.uid_count.unwrap_or(jail.uids.count);
        if let Some(root) = keys.work_root {
            if !root.is_absolute() {
                return Err(Error::param("work_root", "expected an absolute directory path"));
            }
            jail.root = root;
        }
        let jailed = keys.isolation == Some(Isolation::Bwrap);
        let share_desktop = keys.share_desktop.unwrap_or(true);
        let max_file_bytes = keys.max_file_bytes.unwrap_or(DEFAULT_MAX_FILE_BYTES);
        Ok(SessionConfig { shell, timeout, share_desktop, max_file_bytes, jail: jailed.then_some(jail) })
    }

    /// The working directory must exist (a file-system look-up: not on a runtime thread).
    fn check_cwd(&self) -> Result<()> {
        match &self.shell.cwd {
            Some(dir) if !dir.is_dir() => Err(Error::param("cwd", format!("'{}' is not a directory", dir.display()))),
            _ => Ok(()),
        }
    }
}

/// The jail a config's isolation keys describe (`isolation`, `network`, `writable`, the limits,
/// `work_root`, `uid_*`, read and checked as a bash session's are), or none: for another backend
/// whose processes run in the same kind of jail (mcp).
#[cfg(feature = "mcp")]
pub(crate) fn jail_config(config: &Map<String, Value>) -> Result<Option<JailConfig>> {
    let config = SessionConfig::parse(config)?;
    if let Some(jail) = &config.jail {
        check_work_root(&jail.root).map_err(|e| Error::param("work_root", e))?;
    }
    Ok(config.jail)
}

/// The keys of a config that describe a jail (see [`jail_config`]).
#[cfg(feature = "mcp")]
pub(crate) const JAIL_KEYS: &[&str] = &[
    "isolation",
    "network",
    "writable",
    "memory_mb",
    "max_processes",
    "cpu_seconds",
    "file_size_mb",
    "disk_mb",
    "work_root",
    "uid_first",
    "uid_count",
];

/// What a bash session holds: its settings, its shell (replaced when it dies) and its jail,
/// which outlives the shells of the session (work directory, cgroups). The shell is dropped
/// before the jail.
struct BashSession {
    config: SessionConfig,
    shell: Option<Shell>,
    jail: Option<Jail>,
    /// An unjailed session's cgroup (a jail has its own): what its commands start, even what
    /// leaves the shell's tree (`setsid -f`), is killed with the session.
    tracker: Option<Cgroup>,
    /// The worker's desktop as the live shell has it, and the variables it was given for it.
    desktop: Option<Arc<SharedDesktop>>,
    desktop_env: Vec<String>,
    /// `bash:edit`'s undo history, per file.
    history: edit::History,
}

impl BashSession {
    /// The live shell, starting a fresh one if the last one died.
    async fn shell(&mut self) -> Result<&mut Shell> {
        if self.shell.as_ref().is_some_and(|s| !s.is_alive()) {
            if let Some(dead) = self.shell.take() {
                dead.close().await;
            }
        }
        if self.shell.is_none() {
            let config = match &self.jail {
                Some(jail) => jail.wrap(&self.config.shell),
                None => self.config.shell.clone(),
            };
            let mut attempt = 1;
            let shell = loop {
                match Shell::spawn(config.clone()).await {
                    // bwrap binds the host's mounts recursively; another session's work
                    // directory (a tmpfs) mounted or unmounted at that instant fails the
                    // remount with EINVAL. A rare race under load: start again.
                    Err(agentflow_bash::Error::Spawn(reason))
                        if self.jail.is_some() && reason.contains("Unable to apply mount flags") && attempt < 5 =>
                    {
                        attempt += 1;
                        tokio::time::sleep(Duration::from_millis(5 * attempt)).await;
                    }
                    other => break other.map_err(shell_error)?,
                }
            };
            let mut shell = shell;
            if let Some(tracker) = &self.tracker {
                // bash has forked nothing yet (its set-up runs builtins only): joining now
                // counts every process it will start. A small pseudo-file write.
                if let Err(e) = tracker.add(shell.pid()) {
                    shell.close().await;
                    return Err(Error::backend(format!("cannot track the shell in its cgroup: {e}")));
                }
            }
            // Ending the shell then reads its cgroup's list, not every process of the machine.
            let members = self.tracker.as_ref().and_then(Cgroup::members_file);
            if let Some(file) = members.or_else(|| self.jail.as_ref().and_then(Jail::members_file)) {
                shell.track(file);
            }
            self.shell = Some(shell);
            // A new shell has none of the desktop's variables yet.
            self.desktop = None;
            self.desktop_env.clear();
        }
        Ok(self.shell.as_mut().expect("a shell was just made"))
    }

    /// Runs a line of set-up in the shell (`cd`, `export`): an error saying it could not `what`
    /// unless it succeeds within [`ADOPT_TIMEOUT`].
    async fn set_up(&mut self, line: &str, what: &str) -> Result<()> {
        let shell = self.shell().await?;
        let outcome = shell.run(line, ADOPT_TIMEOUT, OnTimeout::Interrupt).await.map_err(shell_error)?;
        if outcome.exit_code != Some(0) {
            return Err(Error::backend(format!("cannot {what}: {}", outcome.output.trim())));
        }
        Ok(())
    }

    /// Gives the shell the worker's desktop (`DISPLAY` and the rest, or its removal when the
    /// desktop went), if it does not have it yet: one `export`/`unset` line before the
    /// command. A jailed shell gets the display's socket (linked into the directory the jail
    /// sees as `/tmp/.X11-unix`) and a copy of its cookie, not the buses, which it could not
    /// authenticate to. Left for the next command while a command still runs.
    async fn share(&mut self, desktop: Option<&Arc<SharedDesktop>>) -> Result<()> {
        let same = match (&self.desktop, desktop) {
            (None, None) => true,
            (Some(had), Some(now)) => Arc::ptr_eq(had, now),
            _ => false,
        };
        if same || !self.config.share_desktop || self.shell.as_ref().is_some_and(Shell::is_running) {
            return Ok(());
        }
        let mut env: Vec<(String, String)> = match (desktop, &self.jail) {
            (None, Some(jail)) => {
                let displays = jail.displays();
                let _ = agentflow_bash::blocking(move || displays.clear()).await;
                Vec::new()
            }
            (None, None) => Vec::new(),
            (Some(d), None) => d.env.clone(),
            (Some(d), Some(jail)) => {
                let linked = {
                    let (displays, d) = (jail.displays(), d.clone());
                    agentflow_bash::blocking(move || displays.share(&d.socket, d.xauthority.as_deref()))
                        .await
                        .map_err(|e| Error::Internal(format!("sharing the desktop failed: {e}")))?
                };
                match linked {
                    Ok(cookie) => {
                        let mut env = vec![("DISPLAY".to_owned(), d.display.clone())];
                        if let Some(file) = cookie {
                            env.push(("XAUTHORITY".to_owned(), file.to_string_lossy().into_owned()));
                        }
                        env
                    }
                    // The shell goes on without the desktop (a work root on another file system
                    // than the display's socket cannot hold a link to it); not retried.
                    Err(e) => {
                        tracing::warn!(display = %d.display, "cannot share the desktop with the jail: {e}");
                        Vec::new()
                    }
                }
            }
        };
        // What the session's own config sets stays as it is.
        env.retain(|(name, _)| !self.config.shell.env.iter().any(|(own, _)| own == name));
        let gone: Vec<&String> = self.desktop_env.iter().filter(|n| !env.iter().any(|(k, _)| k == *n)).collect();
        let mut script = Vec::new();
        if !gone.is_empty() {
            script.push(format!("unset {}", gone.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(" ")));
        }
        if !env.is_empty() {
            let pairs: Vec<String> = env.iter().map(|(k, v)| format!("{k}={}", sh_quote(v))).collect();
            script.push(format!("export {}", pairs.join(" ")));
        }
        if !script.is_empty() {
            self.set_up(&script.join("; "), "give the shell the desktop").await?;
        }
        self.desktop = desktop.cloned();
        self.desktop_env = env.into_iter().map(|(k, _)| k).collect();
        Ok(())
    }
}

#[async_trait]
impl Backend for BashBackend {
    fn name(&self) -> &str {
        "bash"
    }

    fn tools(&self) -> Vec<ToolSpec> {
        tool_specs::<Tool>()
    }

    async fn warmup(&self) -> Result<()> {
        // Only a backend whose default is a jail needs bubblewrap to serve at all.
        if self.defaults.get("isolation").and_then(Value::as_str) != Some("bwrap") {
            return Ok(());
        }
        match tokio::task::spawn_blocking(find_bwrap).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(Error::backend(INSTALL_HINT)),
            Err(e) => Err(Error::Internal(format!("bwrap look-up failed: {e}"))),
        }
    }

    async fn create_session(&self, config: &Map<String, Value>) -> Result<SessionState> {
        let config = self.session_config(config)?;
        let prepared = agentflow_bash::blocking(move || -> Result<BashSession> {
            config.check_cwd()?;
            let Some(mut jail) = config.jail.clone() else {
                // Where the machine has no cgroup to use, the process tree is all there is.
                let tracker = Cgroup::track().ok();
                return Ok(BashSession {
                    config,
                    shell: None,
                    jail: None,
                    tracker,
                    desktop: None,
                    desktop_env: Vec::new(),
                    history: new_history(),
                });
            };
            jail.bwrap = find_bwrap()
                .ok_or_else(|| Error::NotWarmedUp { backend: "bash".into(), reason: INSTALL_HINT.into() })?;
            let jail = Jail::create(jail).map_err(|e| Error::backend(e.to_string()))?;
            Ok(BashSession {
                config,
                shell: None,
                jail: Some(jail),
                tracker: None,
                desktop: None,
                desktop_env: Vec::new(),
                history: new_history(),
            })
        });
        let mut session = prepared.await.map_err(|e| Error::Internal(format!("session set-up failed: {e}")))??;
        if let Err(e) = session.shell().await {
            release(session).await;
            return Err(e);
        }
        Ok(Box::new(session))
    }

    /// A pooled shell (started with the defaults) serves a session asking only for `env`,
    /// `timeout` and, unjailed, `cwd`, when that config would be accepted: [`adopt`] then
    /// applies them in the shell (`cd`, `export`). Anything else starts a fresh shell.
    ///
    /// [`adopt`]: Backend::adopt
    fn pool_serves(&self, config: &Map<String, Value>) -> bool {
        let keys: &[&str] = if self.floor.jail.is_some() {
            &["env", "timeout", "share_desktop", "max_file_bytes"]
        } else {
            &["cwd", "env", "timeout", "share_desktop", "max_file_bytes"]
        };
        let exportable = |name: &str| {
            let mut chars = name.chars();
            chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
                && !RESERVED_VARIABLES.contains(&name)
        };
        config.keys().all(|k| keys.contains(&k.as_str()))
            && config.get("env").and_then(Value::as_object).is_none_or(|env| env.keys().all(|k| exportable(k)))
            // A config that would be refused is refused by a fresh create, with its reason.
            // (A stat of `cwd` on this thread: microseconds.)
            && self.session_config(config).is_ok_and(|c| c.check_cwd().is_ok())
    }

    async fn adopt(&self, state: &mut SessionState, config: &Map<String, Value>) -> Result<()> {
        let session = state_mut::<BashSession>(Some(state))?;
        let settings = self.session_config(config)?;
        let mut script = Vec::new();
        if let Some(dir) = config.get("cwd").and(settings.shell.cwd.as_ref()) {
            script.push(format!("cd -- {}", sh_quote(&dir.to_string_lossy())));
        }
        for (name, value) in settings.shell.env.iter().filter(|(name, _)| config_env_has(config, name)) {
            script.push(format!("export {name}={}", sh_quote(value)));
        }
        if !script.is_empty() {
            session.set_up(&script.join(" && "), "apply the session's config").await?;
        }
        session.config = settings;
        Ok(())
    }

    async fn destroy_session(&self, state: SessionState) {
        if let Ok(session) = state.downcast::<BashSession>() {
            release(*session).await;
        }
    }

    async fn call(
        &self,
        tool: &str,
        params: Value,
        session: Option<&mut SessionState>,
        ctx: &CallContext<'_>,
    ) -> Result<Value> {
        let session: &mut BashSession = state_mut(session)?;
        // The caller's overall timeout caps the tool's own.
        let cap = |t: Duration| ctx.timeout.map_or(t, |c| c.min(t));
        match parse_call::<Tool>(tool, params)? {
            Tool::Run { command, timeout, on_timeout } => {
                let timeout = cap(timeout.map_or(session.config.timeout, Duration::from_secs_f64));
                let on_timeout = match on_timeout {
                    WhenTimedOut::Keep => OnTimeout::Keep,
                    WhenTimedOut::Interrupt => OnTimeout::Interrupt,
                };
                session.share(ctx.desktop.as_ref()).await?;
                let ooms = session.jail.as_ref().and_then(Jail::oom_kills);
                let shell = session.shell().await?;
                let result = shell.run(&command, timeout, on_timeout).await.map_err(shell_error);
                let alive = shell.is_alive();
                let result = result.and_then(|outcome| answer(outcome, alive, timeout));
                match (&session.jail, ooms) {
                    (Some(jail), Some(before)) => note_memory_limit(result, jail, before),
                    _ => result,
                }
            }
            Tool::Write { text, timeout } => {
                let wait = cap(Duration::from_secs_f64(timeout));
                let shell = session.shell().await?;
                let outcome = shell.write(&text, wait).await.map_err(shell_error)?;
                Ok(data(&outcome))
            }
            Tool::Interrupt {} => {
                let shell = session.shell().await?;
                let outcome = shell.interrupt().await.map_err(shell_error)?;
                Ok(data(&outcome))
            }
            Tool::ReadFile { path, offset, length, encoding } => {
                let (max, timeout) = (session.config.max_file_bytes, cap(session.config.timeout));
                let shell = session.shell().await?;
                let read = shell.read_file(&path, offset, length, max, timeout).await.map_err(file_error)?;
                let n = read.bytes.len() as u64;
                let content = match encoding {
                    Encoding::Utf8 => String::from_utf8(read.bytes).map_err(|_| {
                        Error::param(
                            "encoding",
                            format!("{} is not UTF-8 text (binary?): read it with encoding \"base64\"", read.path),
                        )
                    })?,
                    Encoding::Base64 => BASE64.encode(&read.bytes),
                };
                Ok(json!({
                    "path": read.path,
                    "content": content,
                    "encoding": encoding.name(),
                    "size": read.size,
                    "mode": format!("{:04o}", read.mode),
                    "offset": offset,
                    "length": n,
                    "eof": offset.saturating_add(n) >= read.size,
                }))
            }
            Tool::WriteFile { path, content, encoding, mode, append, make_dirs } => {
                let (max, timeout) = (session.config.max_file_bytes, cap(session.config.timeout));
                let bytes = match encoding {
                    Encoding::Utf8 => content.into_bytes(),
                    Encoding::Base64 => BASE64
                        .decode(content.as_bytes())
                        .map_err(|e| Error::param("content", format!("not valid base64: {e}")))?,
                };
                check_file_size("content", bytes.len(), max)?;
                let mode = mode.as_deref().map(parse_mode).transpose()?;
                let n = bytes.len();
                let shell = session.shell().await?;
                let options = WriteOptions { mode, append, make_dirs };
                let written = shell.write_file(&path, bytes, options, timeout).await.map_err(file_error)?;
                Ok(json!({
                    "path": written.path,
                    "bytes_written": n,
                    "size": written.size,
                    "mode": format!("{:04o}", written.mode),
                }))
            }
            Tool::ListDir { path, depth } => {
                let timeout = cap(session.config.timeout);
                let shell = session.shell().await?;
                let listing = shell.list_dir(&path, depth, MAX_ENTRIES, timeout).await.map_err(file_error)?;
                let entries: Vec<Value> = listing
                    .entries
                    .iter()
                    .map(|e| {
                        json!({"path": e.path, "type": e.kind.as_str(), "size": e.size, "mode": format!("{:04o}", e.mode)})
                    })
                    .collect();
                Ok(json!({"path": listing.path, "entries": entries, "truncated": listing.truncated}))
            }
            Tool::Edit { command, path, file_text, old_str, new_str, insert_line, view_range } => {
                let timeout = cap(session.config.timeout);
                let call = EditCall { command, path, file_text, old_str, new_str, insert_line, view_range };
                edit_file(session, call, timeout).await
            }
            Tool::Info {} => {
                let shell = session.shell().await?;
                let mut info = json!({"pid": shell.bash_pid(), "cwd": shell.cwd(), "isolation": "none"});
                if let Some(tracker) = &session.tracker {
                    info["tracking"] = json!(tracker.how());
                }
                if let Some(jail) = &session.jail {
                    let (config, limits) = (jail.config(), jail.config().limits);
                    info["isolation"] = json!("bwrap");
                    info["jail"] = json!({
                        "work_dir": jail.work_dir(),
                        "host_uid": jail.host_uid(),
                        "host_gid": jail.host_uid(),
                        "network": config.network,
                        "writable": config.writable,
                        "memory_mb": limits.memory_mb,
                        "max_processes": limits.max_processes,
                        "cpu_seconds": limits.cpu_seconds,
                        "file_size_mb": limits.file_size_mb,
                        "disk_mb": limits.disk_mb,
                        "enforcement": jail.enforcement(),
                    });
                }
                Ok(info)
            }
        }
    }
}

/// The most entries `bash:list_dir` returns (then `truncated`).
const MAX_ENTRIES: usize = 10_000;

/// Old versions `bash:edit` keeps per file, and in all, for `undo_edit`.
fn new_history() -> edit::History {
    edit::History::new(edit::DEFAULT_UNDO_LEVELS, 16 << 20)
}

impl Encoding {
    fn name(self) -> &'static str {
        match self {
            Encoding::Utf8 => "utf-8",
            Encoding::Base64 => "base64",
        }
    }
}

/// Octal permission bits, as `chmod` takes them ("755", "0644").
fn parse_mode(text: &str) -> Result<u32> {
    match u32::from_str_radix(text, 8) {
        Ok(mode) if mode <= 0o7777 && !text.is_empty() => Ok(mode),
        _ => Err(Error::param("mode", format!("expected octal permission bits such as \"0644\", got {text:?}"))),
    }
}

fn check_file_size(field: &str, size: usize, max: u64) -> Result<()> {
    if size as u64 > max {
        return Err(Error::param(
            field,
            format!("{size} bytes is more than the session's cap of {max} bytes (max_file_bytes)"),
        ));
    }
    Ok(())
}

fn file_error(e: FileError) -> Error {
    match e {
        FileError::Path { path, reason } => Error::param("path", format!("{path}: {reason}")),
        e @ FileError::TooLarge { .. } => Error::param("length", e.to_string()),
        FileError::Shell(agentflow_bash::Error::Io(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
            Error::Timeout { message: e.to_string(), data: json!({"timed_out": true}) }
        }
        FileError::Shell(e) => shell_error(e),
        other => Error::backend(other.to_string()),
    }
}

fn edit_error(e: EditError) -> Error {
    Error::param(e.parameter(), e.to_string())
}

/// A `bash:edit` call's parameters.
struct EditCall {
    command: EditCommand,
    path: String,
    file_text: Option<String>,
    old_str: Option<String>,
    new_str: Option<String>,
    insert_line: Option<i64>,
    view_range: Option<[i64; 2]>,
}

/// Said after an editor answer cut to the session's `max_output_bytes`.
const CLIPPED: &str = "<response clipped><NOTE>Only part of this output is shown. Ask for fewer lines with \
view_range, or find the line numbers first with `grep -n` in bash:run.</NOTE>";

/// `bash:edit`: the file read and written through the session's shell (its view of the file
/// system, `max_file_bytes`), the editing and its words from [`edit`].
async fn edit_file(session: &mut BashSession, call: EditCall, timeout: Duration) -> Result<Value> {
    let max = session.config.max_file_bytes;
    let limit = session.config.shell.max_output_bytes;
    let shell = session.shell().await?;
    let shown = shell.resolve(&call.path).display().to_string();
    let required = |value: Option<String>, name: &str| {
        value.ok_or_else(|| Error::param(name, format!("required by the command {:?}", call.command)))
    };
    let message = match call.command {
        EditCommand::View => match shell.read_file(&call.path, 0, None, max, timeout).await {
            Ok(read) => edit::view(&shown, &read.bytes, call.view_range.map(|[a, b]| (a, b))).map_err(edit_error)?,
            Err(FileError::Path { reason, .. }) if reason == "not a regular file" => {
                if let Some([start, end]) = call.view_range {
                    return Err(edit_error(EditError::RangeOnDirectory { start, end }));
                }
                let listing = shell.list_dir(&call.path, 2, MAX_ENTRIES, timeout).await.map_err(file_error)?;
                let hidden = |p: &str| p.split('/').any(|part| part.starts_with('.'));
                let entries: Vec<edit::DirEntry> = listing
                    .entries
                    .iter()
                    .filter(|e| !hidden(&e.path))
                    .map(|e| edit::DirEntry {
                        path: format!("{}/{}", listing.path.trim_end_matches('/'), e.path),
                        is_dir: e.kind == agentflow_bash::Kind::Dir,
                    })
                    .collect();
                let hidden = listing.entries.iter().filter(|e| !e.path.contains('/') && hidden(&e.path)).count();
                edit::view_dir(&shown, &entries, hidden)
            }
            Err(e) => return Err(file_error(e)),
        },
        EditCommand::Create => {
            let text = required(call.file_text, "file_text")?;
            check_file_size("file_text", text.len(), max)?;
            match shell.read_file(&call.path, 0, Some(0), max, timeout).await {
                Ok(_) => return Err(edit_error(EditError::Exists { path: shown })),
                Err(FileError::Path { reason, .. }) if reason == "not a regular file" => {
                    return Err(edit_error(EditError::Exists { path: shown }))
                }
                Err(FileError::Path { .. }) => {}
                Err(e) => return Err(file_error(e)),
            }
            let options = WriteOptions { make_dirs: true, ..WriteOptions::default() };
            shell.write_file(&call.path, text.into_bytes(), options, timeout).await.map_err(file_error)?;
            edit::created(&shown)
        }
        EditCommand::StrReplace | EditCommand::Insert => {
            let read = shell.read_file(&call.path, 0, None, max, timeout).await.map_err(file_error)?;
            let edited = match call.command {
                EditCommand::StrReplace => {
                    let old = required(call.old_str, "old_str")?;
                    edit::str_replace(&shown, &read.bytes, &old, call.new_str.as_deref().unwrap_or(""))
                }
                _ => {
                    let line = call.insert_line.ok_or_else(|| Error::param("insert_line", "required by insert"))?;
                    edit::insert(&shown, &read.bytes, line, &required(call.new_str, "new_str")?)
                }
            }
            .map_err(edit_error)?;
            check_file_size("new_str", edited.content.len(), max)?;
            shell.write_file(&call.path, edited.content, WriteOptions::default(), timeout).await.map_err(file_error)?;
            session.history.record(&shown, read.bytes);
            edited.message
        }
        EditCommand::UndoEdit => {
            let before = session.history.undo(&shown).map_err(edit_error)?;
            let message = edit::undone(&shown, &before);
            let shell = session.shell().await?;
            shell.write_file(&call.path, before, WriteOptions::default(), timeout).await.map_err(file_error)?;
            message
        }
    };
    Ok(json!({"output": clip(message, limit), "path": shown}))
}

/// `text` cut to `limit` bytes (at a character boundary), saying so.
fn clip(mut text: String, limit: usize) -> String {
    if text.len() <= limit {
        return text;
    }
    let mut cut = limit.saturating_sub(CLIPPED.len());
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
    text.push_str(CLIPPED);
    text
}

/// How long applying a session's `cwd` and `env` to a pooled shell may take.
const ADOPT_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether the session's own config sets the variable `name` (not only the defaults).
fn config_env_has(config: &Map<String, Value>, name: &str) -> bool {
    config.get("env").and_then(Value::as_object).is_some_and(|env| env.contains_key(name))
}

/// `text` as one word for the shell, quoted.
fn sh_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "'\\''"))
}

/// Ends a session: its shell and everything in it, then its jail (cgroups and work directory),
/// on the blocking pool since that waits for the kernel.
async fn release(mut session: BashSession) {
    if let Some(shell) = session.shell.take() {
        shell.close().await;
    }
    let (jail, tracker) = (session.jail.take(), session.tracker.take());
    if jail.is_some() || tracker.is_some() {
        let _ = agentflow_bash::blocking(move || drop((jail, tracker))).await;
    }
}

/// Says so in the answer (`data.limit`) when the session's memory limit killed a process during
/// the call, since the shell only shows `Killed`.
fn note_memory_limit(result: Result<Value>, jail: &Jail, before: u64) -> Result<Value> {
    if jail.oom_kills().unwrap_or(before) <= before {
        return result;
    }
    let note = format!(
        "the session's memory limit ({} MiB) was reached: the kernel killed a process",
        jail.config().limits.memory_mb
    );
    match result {
        Ok(mut data) => {
            data["limit"] = json!(note);
            Ok(data)
        }
        Err(Error::Timeout { message, mut data }) => {
            data["limit"] = json!(note);
            Err(Error::Timeout { message, data })
        }
        Err(Error::Backend { message, data }) => Err(Error::Backend { message: format!("{message} ({note})"), data }),
        Err(other) => Err(other),
    }
}

/// A `bash:run` outcome: success, or 2002 with the same data when the command was interrupted.
fn answer(outcome: Outcome, alive: bool, timeout: Duration) -> Result<Value> {
    if !outcome.timed_out || outcome.running {
        return Ok(data(&outcome));
    }
    let mut message = format!("command timed out after {}s and was interrupted", timeout.as_secs_f64());
    if !alive {
        message.push_str("; it could not be stopped, so the shell was killed and the next call starts a fresh one");
    }
    Err(Error::Timeout { message, data: data(&outcome) })
}

/// The tool `data` of docs/backends.md.
fn data(o: &Outcome) -> Value {
    json!({
        "stdout": o.output,
        "exit_code": o.exit_code,
        "cwd": o.cwd,
        "timed_out": o.timed_out,
        "running": o.running,
        "truncated": o.truncated,
        "duration_ms": (o.duration.as_secs_f64() * 1000.0 * 1000.0).round() / 1000.0,
    })
}

fn shell_error(e: agentflow_bash::Error) -> Error {
    match e {
        agentflow_bash::Error::Busy => {
            Error::SessionBusy("a command is still running: use bash:write or bash:interrupt".into())
        }
        agentflow_bash::Error::Idle => Error::Session("no command is running: use bash:run".into()),
        agentflow_bash::Error::Exited { reason, partial } => {
            Error::Backend { message: format!("{reason}; the next call starts a fresh shell"), data: data(&partial) }
        }
        other => Error::backend(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(config: Value) -> String {
        match SessionConfig::parse(config.as_object().unwrap()) {
            Err(Error::Param { field, .. }) => field,
            other => panic!("expected a parameter error, got {other:?}"),
        }
    }

    #[test]
    fn session_config_names_the_offending_key() {
        assert!(SessionConfig::parse(
            json!({"cwd": "/tmp", "env": {"A": "1", "B": 2}, "timeout": 2.5,
            "max_output_bytes": 4096, "rows": 30, "cols": 100, "isolation": "none", "shell": "/bin/bash"})
            .as_object()
            .unwrap()
        )
        .is_ok());
        assert_eq!(field(json!({"colour": true})), "colour");
        assert_eq!(field(json!({"timeout": "30"})), "timeout");
        assert_eq!(field(json!({"timeout": 0})), "timeout");
        assert_eq!(field(json!({"env": {"A": [1]}})), "env.A");
        assert_eq!(field(json!({"rows": 1})), "rows");
        assert_eq!(field(json!({"max_output_bytes": 10})), "max_output_bytes");
        assert_eq!(field(json!({"isolation": "jail"})), "isolation");
        assert_eq!(field(json!({"network": "yes"})), "network");
        assert_eq!(field(json!({"writable": ["relative"]})), "writable[0]");
        assert_eq!(field(json!({"writable": "/srv"})), "writable");
        assert_eq!(field(json!({"work_root": "relative"})), "work_root");
        assert_eq!(field(json!({"uid_count": 0})), "uid_count");
        assert_eq!(field(json!({"memory_mb": "512"})), "memory_mb");
        assert_eq!(field(json!({"max_processes": 1})), "max_processes");
        assert_eq!(field(json!({"cpu_seconds": -1})), "cpu_seconds");
        assert_eq!(field(json!({"file_size_mb": 0})), "file_size_mb");
        assert_eq!(field(json!({"work_root": 3})), "work_root");
        let jailed = SessionConfig::parse(
            json!({"isolation": "bwrap", "network": true, "writable": ["/srv"], "memory_mb": 256}).as_object().unwrap(),
        )
        .unwrap();
        let jail = jailed.jail.expect("a jail is configured");
        assert_eq!((jail.network, jail.limits.memory_mb, jail.limits.max_processes), (true, 256, 256));
    }

    #[test]
    fn bad_defaults_are_a_configuration_error() {
        let defaults = json!({"timeout": -1}).as_object().unwrap().clone();
        assert!(matches!(BashBackend::new(defaults), Err(Error::Config(_))));
    }
}
