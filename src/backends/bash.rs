//! The `bash` adapter: `bash:run`, `bash:write`, `bash:interrupt` (BACKENDS.md, bash) and the
//! hidden `bash:info` (the shell's pid, isolation and limits), over [`agentflow_bash::Shell`].
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
//! | `work_root` | string | `$TMPDIR/agentflow-jails` | where session work directories are made |
//!
//! Where the machine has no pids/memory cgroup to use, the limits fall back to rlimits and
//! [`Jail::enforcement`] says so. A missing `bwrap` is 2003 with how to install it: at warm-up
//! when the backend's default isolation is `bwrap`, else when a session asks for it.

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Map, Value};

use agentflow_bash::{find_bwrap, Jail, JailConfig, OnTimeout, Outcome, Shell, ShellConfig, INSTALL_HINT};

use crate::backend::{merge_config, param, state_mut, Backend, CallContext, SessionState};
use crate::error::{Error, Result};
use crate::tool::{Kind, Param, ToolSpec};

/// A command's timeout when neither the call nor the session config gives one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `bash:write` waits for an answer when the call does not say.
pub const DEFAULT_WRITE_WAIT: Duration = Duration::from_secs(5);

/// The `bash` backend: one persistent shell per session.
#[derive(Debug)]
pub struct BashBackend {
    defaults: Map<String, Value>,
    /// The operator's policy (`resources.bash.policy`): what sessions may loosen.
    policy: Map<String, Value>,
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
        Ok(BashBackend { defaults, policy })
    }
}

/// A session's settings, checked.
#[derive(Debug, Clone)]
struct SessionConfig {
    shell: ShellConfig,
    timeout: Duration,
    /// The jail's settings when `isolation` is `bwrap` (its `bwrap` is found at creation).
    jail: Option<JailConfig>,
}

impl SessionConfig {
    fn parse(config: &Map<String, Value>) -> Result<Self> {
        let mut shell = ShellConfig::default();
        let mut timeout = DEFAULT_TIMEOUT;
        let mut jail = JailConfig::new(PathBuf::new());
        let mut jailed = false;
        for (key, value) in config {
            let bad = |reason: &str| Error::param(key.as_str(), reason.to_owned());
            let integer = |min: u64, max: u64| {
                value
                    .as_u64()
                    .filter(|n| (min..=max).contains(n))
                    .ok_or_else(|| bad(&format!("expected an integer from {min} to {max}")))
            };
            match key.as_str() {
                "cwd" => {
                    let dir = value.as_str().ok_or_else(|| bad("expected a directory path (a string)"))?;
                    shell.cwd = Some(PathBuf::from(dir));
                }
                "env" => {
                    let vars = value.as_object().ok_or_else(|| bad("expected an object of strings"))?;
                    for (name, v) in vars {
                        let v = match v {
                            Value::String(s) => s.clone(),
                            Value::Number(n) => n.to_string(),
                            Value::Bool(b) => b.to_string(),
                            _ => return Err(Error::param(format!("env.{name}"), "expected a string")),
                        };
                        if name.is_empty() || name.contains(['=', '\0']) {
                            return Err(Error::param(format!("env.{name}"), "not a valid variable name"));
                        }
                        shell.env.push((name.clone(), v));
                    }
                }
                "shell" => {
                    shell.program = PathBuf::from(value.as_str().ok_or_else(|| bad("expected a program path"))?);
                }
                "timeout" => {
                    let secs = value.as_f64().filter(|s| s.is_finite() && *s > 0.0 && *s <= 86_400.0);
                    timeout = Duration::from_secs_f64(secs.ok_or_else(|| bad("expected seconds in (0, 86400]"))?);
                }
                "max_output_bytes" => {
                    let n = value.as_u64().filter(|n| (1024..=1 << 30).contains(n));
                    shell.max_output_bytes = n.ok_or_else(|| bad("expected an integer from 1024 to 2^30"))? as usize;
                }
                "rows" | "cols" => {
                    let n = value.as_u64().filter(|n| (2..=10_000).contains(n));
                    let n = n.ok_or_else(|| bad("expected an integer from 2 to 10000"))? as u16;
                    if key == "rows" {
                        shell.rows = n;
                    } else {
                        shell.cols = n;
                    }
                }
                "isolation" => match value.as_str() {
                    Some("none") => jailed = false,
                    Some("bwrap") => jailed = true,
                    _ => return Err(bad("expected \"none\" or \"bwrap\"")),
                },
                "network" => jail.network = value.as_bool().ok_or_else(|| bad("expected true or false"))?,
                "writable" => {
                    let paths = value.as_array().ok_or_else(|| bad("expected a list of absolute paths"))?;
                    jail.writable = paths
                        .iter()
                        .map(|p| p.as_str().filter(|p| p.starts_with('/')).map(PathBuf::from))
                        .collect::<Option<_>>()
                        .ok_or_else(|| bad("expected a list of absolute paths"))?;
                }
                "memory_mb" => jail.limits.memory_mb = integer(16, 1 << 30)?,
                "max_processes" => jail.limits.max_processes = integer(8, 1 << 22)?,
                "cpu_seconds" => jail.limits.cpu_seconds = integer(1, 1 << 32)?,
                "file_size_mb" => jail.limits.file_size_mb = integer(1, 1 << 30)?,
                "work_root" => {
                    let dir = value.as_str().filter(|d| d.starts_with('/'));
                    jail.root = PathBuf::from(dir.ok_or_else(|| bad("expected an absolute directory path"))?);
                }
                _ => {
                    return Err(bad(
                        "unknown session config key (known: cwd, env, shell, timeout, max_output_bytes, rows, \
                         cols, isolation, network, writable, memory_mb, max_processes, cpu_seconds, file_size_mb, \
                         work_root)",
                    ))
                }
            }
        }
        Ok(SessionConfig { shell, timeout, jail: jailed.then_some(jail) })
    }

    /// The working directory must exist (a file-system look-up: not on a runtime thread).
    fn check_cwd(&self) -> Result<()> {
        match &self.shell.cwd {
            Some(dir) if !dir.is_dir() => Err(Error::param("cwd", format!("'{}' is not a directory", dir.display()))),
            _ => Ok(()),
        }
    }
}

/// What a bash session holds: its settings, its shell (replaced when it dies) and its jail,
/// which outlives the shells of the session (work directory, cgroups). The shell is dropped
/// before the jail.
struct BashSession {
    config: SessionConfig,
    shell: Option<Shell>,
    jail: Option<Jail>,
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
            self.shell = Some(Shell::spawn(config).await.map_err(shell_error)?);
        }
        Ok(self.shell.as_mut().expect("a shell was just made"))
    }
}

#[async_trait]
impl Backend for BashBackend {
    fn name(&self) -> &str {
        "bash"
    }

    fn tools(&self) -> Vec<ToolSpec> {
        let timeout = || Param::optional("timeout", Kind::Number, "").range(Some(0.001), Some(86_400.0));
        vec![
            ToolSpec::new(
                "run",
                "Runs a command in the session's persistent bash (cd, variables, functions and venvs persist) \
                 and returns its output (stdout and stderr), exit code and working directory.",
                vec![
                    Param::required("command", Kind::String, "The bash command(s) to run; several lines allowed."),
                    Param {
                        description: "Seconds to wait for the command (default: the session's timeout, 30).",
                        ..timeout()
                    },
                    Param::optional(
                        "on_timeout",
                        Kind::Enum(&["interrupt", "keep"]),
                        "At the timeout, interrupt the command (default), or keep it running for bash:write \
                         and bash:interrupt (for REPLs, prompts, servers).",
                    )
                    .default(json!("interrupt")),
                ],
            ),
            ToolSpec::new(
                "write",
                "Types text into the command still running in the shell (kept with on_timeout: keep) and \
                 returns what it printed since the last call, and its exit code if it finished.",
                vec![
                    Param::required("text", Kind::String, "The text to type; \\n presses Enter."),
                    Param { description: "Seconds to wait for an answer (default 5).", ..timeout() }.default(json!(5)),
                ],
            ),
            ToolSpec::new(
                "interrupt",
                "Sends Ctrl-C to the command running in the shell (then kills it if it ignores that) and \
                 returns its last output and exit code.",
                vec![],
            ),
            ToolSpec::new(
                "info",
                "The session's shell: bash's pid as the engine sees it, its directory, its isolation and, in a \
                 jail, the work directory, limits and how they are enforced (cgroups or rlimits only).",
                vec![],
            )
            .hidden(),
        ]
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
        let config = SessionConfig::parse(&merge_config(&self.defaults, config))?;
        let prepared = tokio::task::spawn_blocking(move || -> Result<(SessionConfig, Option<Jail>)> {
            config.check_cwd()?;
            let Some(mut jail) = config.jail.clone() else { return Ok((config, None)) };
            jail.bwrap = find_bwrap()
                .ok_or_else(|| Error::NotWarmedUp { backend: "bash".into(), reason: INSTALL_HINT.into() })?;
            let jail = Jail::create(jail).map_err(|e| Error::backend(e.to_string()))?;
            Ok((config, Some(jail)))
        });
        let (config, jail) = prepared.await.map_err(|e| Error::Internal(format!("session set-up failed: {e}")))??;
        let mut session = BashSession { config, shell: None, jail };
        if let Err(e) = session.shell().await {
            release(session).await;
            return Err(e);
        }
        Ok(Box::new(session))
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
        match tool {
            "run" => {
                let command: String = param(&params, "command")?.unwrap_or_default();
                let timeout = param::<f64>(&params, "timeout")?.map(Duration::from_secs_f64);
                let timeout = cap(timeout.unwrap_or(session.config.timeout));
                let on_timeout = match param::<String>(&params, "on_timeout")?.as_deref() {
                    Some("keep") => OnTimeout::Keep,
                    _ => OnTimeout::Interrupt,
                };
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
            "write" => {
                let text: String = param(&params, "text")?.unwrap_or_default();
                let wait = param::<f64>(&params, "timeout")?.map(Duration::from_secs_f64);
                let wait = cap(wait.unwrap_or(DEFAULT_WRITE_WAIT));
                let shell = session.shell().await?;
                let outcome = shell.write(&text, wait).await.map_err(shell_error)?;
                Ok(data(&outcome))
            }
            "interrupt" => {
                let shell = session.shell().await?;
                let outcome = shell.interrupt().await.map_err(shell_error)?;
                Ok(data(&outcome))
            }
            "info" => {
                let shell = session.shell().await?;
                let mut info = json!({"pid": shell.bash_pid(), "cwd": shell.cwd(), "isolation": "none"});
                if let Some(jail) = &session.jail {
                    let (config, limits) = (jail.config(), jail.config().limits);
                    info["isolation"] = json!("bwrap");
                    info["jail"] = json!({
                        "work_dir": jail.work_dir(),
                        "network": config.network,
                        "writable": config.writable,
                        "memory_mb": limits.memory_mb,
                        "max_processes": limits.max_processes,
                        "cpu_seconds": limits.cpu_seconds,
                        "file_size_mb": limits.file_size_mb,
                        "enforcement": jail.enforcement(),
                    });
                }
                Ok(info)
            }
            other => Err(Error::ToolNotFound(format!("bash:{other}"))),
        }
    }
}

/// Ends a session: its shell and everything in it, then its jail (cgroups and work directory),
/// on the blocking pool since that waits for the kernel.
async fn release(mut session: BashSession) {
    if let Some(shell) = session.shell.take() {
        shell.close().await;
    }
    if let Some(jail) = session.jail.take() {
        let _ = tokio::task::spawn_blocking(move || drop(jail)).await;
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

/// The tool `data` of BACKENDS.md.
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
        assert_eq!(field(json!({"writable": ["relative"]})), "writable");
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
