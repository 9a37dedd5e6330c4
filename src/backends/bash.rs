//! The `bash` adapter: `bash:run`, `bash:write` and `bash:interrupt` (BACKENDS.md, bash) over
//! [`agentflow_bash::Shell`].
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
//! | `isolation` | `"none"` | `"none"` | `"bwrap"` is not available yet |

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{json, Map, Value};

use agentflow_bash::{OnTimeout, Outcome, Shell, ShellConfig};

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
}

impl BashBackend {
    /// A backend whose sessions start from these config defaults (keys as in the module
    /// documentation); a wrong key or value is a configuration error.
    pub fn new(defaults: Map<String, Value>) -> Result<Self> {
        let config = SessionConfig::parse(&defaults).map_err(|e| Error::Config(format!("bash backend: {e}")))?;
        config.check_cwd().map_err(|e| Error::Config(format!("bash backend: {e}")))?;
        Ok(BashBackend { defaults })
    }
}

/// A session's settings, checked.
#[derive(Debug, Clone)]
struct SessionConfig {
    shell: ShellConfig,
    timeout: Duration,
}

impl SessionConfig {
    fn parse(config: &Map<String, Value>) -> Result<Self> {
        let mut shell = ShellConfig::default();
        let mut timeout = DEFAULT_TIMEOUT;
        for (key, value) in config {
            let bad = |reason: &str| Error::param(key.as_str(), reason.to_owned());
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
                    Some("none") => {}
                    Some("bwrap") => return Err(bad("isolation 'bwrap' is not available yet")),
                    _ => return Err(bad("expected \"none\"")),
                },
                _ => {
                    return Err(bad(
                        "unknown session config key (known: cwd, env, shell, timeout, max_output_bytes, rows, \
                         cols, isolation)",
                    ))
                }
            }
        }
        Ok(SessionConfig { shell, timeout })
    }

    /// The working directory must exist (a file-system look-up: not on a runtime thread).
    fn check_cwd(&self) -> Result<()> {
        match &self.shell.cwd {
            Some(dir) if !dir.is_dir() => Err(Error::param("cwd", format!("'{}' is not a directory", dir.display()))),
            _ => Ok(()),
        }
    }
}

/// What a bash session holds: its settings and its shell (replaced when it dies).
struct BashSession {
    config: SessionConfig,
    shell: Option<Shell>,
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
            self.shell = Some(Shell::spawn(self.config.shell.clone()).await.map_err(shell_error)?);
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
        ]
    }

    async fn create_session(&self, config: &Map<String, Value>) -> Result<SessionState> {
        let config = SessionConfig::parse(&merge_config(&self.defaults, config))?;
        let config = tokio::task::spawn_blocking(move || config.check_cwd().map(|_| config))
            .await
            .map_err(|e| Error::Internal(format!("cwd check failed: {e}")))??;
        let mut session = BashSession { config, shell: None };
        session.shell().await?;
        Ok(Box::new(session))
    }

    async fn destroy_session(&self, state: SessionState) {
        if let Ok(mut session) = state.downcast::<BashSession>() {
            if let Some(shell) = session.shell.take() {
                shell.close().await;
            }
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
                let shell = session.shell().await?;
                let outcome = shell.run(&command, timeout, on_timeout).await.map_err(shell_error)?;
                answer(outcome, shell.is_alive(), timeout)
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
            other => Err(Error::ToolNotFound(format!("bash:{other}"))),
        }
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
        assert_eq!(field(json!({"isolation": "bwrap"})), "isolation");
    }

    #[test]
    fn bad_defaults_are_a_configuration_error() {
        let defaults = json!({"timeout": -1}).as_object().unwrap().clone();
        assert!(matches!(BashBackend::new(defaults), Err(Error::Config(_))));
    }
}
