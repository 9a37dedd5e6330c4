//! The `agentflow-sandbox` binary: `agentflow-sandbox serve [--config FILE] [--host H] [--port P]
//! [--log-format text|json]`, and `agentflow-sandbox mcp [--config FILE]` (the engine as an MCP
//! server on stdio).
//!
//! Reads the config (or the defaults: bash, vm and rag on 127.0.0.1:18890), builds the engine,
//! serves it over HTTP until `/shutdown`, SIGINT or SIGTERM, then destroys every session, stops
//! the backends and exits 0. Logs go to stderr through `tracing`, filtered by `RUST_LOG`
//! (default `info`), as text or one JSON object per line. Everything else is the library's.

use std::path::PathBuf;
use std::process::ExitCode;

use agentflow_sandbox::http::{serve, Options};
use agentflow_sandbox::Config;
use clap::{Parser, Subcommand, ValueEnum};
use tracing::{error, info, warn};

#[derive(Parser)]
#[command(name = "agentflow-sandbox", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the engine over HTTP until /shutdown, SIGINT or SIGTERM.
    ///
    /// Logs go to stderr; `RUST_LOG` filters them (default `info`; e.g.
    /// `RUST_LOG=agentflow_sandbox=debug` adds a line per tool call).
    #[command(display_name = "agentflow-sandbox")]
    Serve(Args),
    /// Serve the engine as an MCP server on stdin and stdout (one client, one worker) until the
    /// client closes stdin; its sessions are then destroyed. Logs go to stderr.
    Mcp(McpArgs),
}

#[derive(clap::Args)]
struct McpArgs {
    /// The JSON config file (default: built-in defaults: bash, vm and rag).
    #[arg(short, long, value_name = "FILE", env = "AGENTFLOW_CONFIG")]
    config: Option<PathBuf>,
    /// How log lines look.
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(clap::Args)]
struct Args {
    /// The JSON config file (default: built-in defaults: bash, vm and rag on 127.0.0.1:18890).
    #[arg(short, long, value_name = "FILE", env = "AGENTFLOW_CONFIG")]
    config: Option<PathBuf>,
    /// The address to listen on, instead of the config's server.host.
    #[arg(long, value_name = "HOST")]
    host: Option<String>,
    /// The port to listen on, instead of the config's server.port (0: any free port).
    #[arg(short, long, value_name = "PORT")]
    port: Option<u16>,
    /// How log lines look: text for people, json for one JSON object per line.
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Installs the stderr subscriber: `RUST_LOG` (invalid directives ignored) or `info`.
fn init_logging(format: LogFormat) {
    use tracing_subscriber::filter::{EnvFilter, LevelFilter};
    let filter = EnvFilter::builder().with_default_directive(LevelFilter::INFO.into()).from_env_lossy();
    let fmt = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => fmt.init(),
        LogFormat::Json => fmt.json().flatten_event(true).with_span_list(false).init(),
    }
}

async fn terminated() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

async fn run(args: Args) -> Result<(), String> {
    let mut config = match &args.config {
        Some(path) => Config::load(path).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    if let Some(host) = args.host {
        config.server.host = host;
    }
    if let Some(port) = args.port {
        config.server.port = port;
    }
    let options = Options::from(&config);
    let addr = format!("{}:{}", config.server.host, config.server.port);
    let listener = tokio::net::TcpListener::bind(&addr).await.map_err(|e| format!("cannot bind {addr}: {e}"))?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    if options.api_key.is_none() && !local.ip().is_loopback() {
        warn!(
            "listening on {local} WITHOUT an API key: anyone who reaches this port can run shell commands. \
             Set security.auth in the config or AGENTFLOW_API_KEY."
        );
    }
    if let Some(warning) = unjailed_warning(&config.server.host, &config) {
        warn!("{warning}");
    }
    let engine = config.engine().map_err(|e| e.to_string())?;
    info!(
        "agentflow-sandbox {} listening on http://{local} (backends: {})",
        env!("CARGO_PKG_VERSION"),
        engine.backend_names().join(", ")
    );
    serve(listener, engine, options, terminated()).await.map_err(|e| e.to_string())?;
    info!("stopped");
    Ok(())
}

/// Whether `host` lets other machines connect: anything but `localhost`, 127.0.0.0/8 and `::1`
/// (a name other than `localhost` may resolve anywhere, so it counts as beyond).
fn beyond_loopback(host: &str) -> bool {
    let host = host.trim().trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") {
        return false;
    }
    host.parse::<std::net::IpAddr>().map_or(true, |ip| !ip.is_loopback())
}

/// The warning to print when the server listens beyond loopback while the bash backend is enabled
/// and its default `isolation` (`resources.bash.config.isolation`) is not `"bwrap"`.
fn unjailed_warning(host: &str, config: &Config) -> Option<String> {
    let bash = config.resources.get("bash").filter(|r| r.enabled)?;
    let isolation = bash.config.get("isolation").and_then(|v| v.as_str()).unwrap_or("none");
    if isolation == "bwrap" || !beyond_loopback(host) {
        return None;
    }
    Some(format!(
        "listening on {host} with bash isolation '{isolation}': commands run unjailed, as this server's own \
         user, and can reach everything it can (files, network, other sessions' processes). Set \
         resources.bash.config.isolation to \"bwrap\" or listen on 127.0.0.1"
    ))
}

/// `agentflow-sandbox mcp`: the engine over MCP on stdio, then every session destroyed.
async fn run_mcp(args: McpArgs) -> Result<(), String> {
    let config = match &args.config {
        Some(path) => Config::load(path).map_err(|e| e.to_string())?,
        None => Config::default(),
    };
    let engine = config.engine().map_err(|e| e.to_string())?;
    info!(
        "agentflow-sandbox {} serving MCP on stdio (backends: {})",
        env!("CARGO_PKG_VERSION"),
        engine.backend_names().join(", ")
    );
    // A client that stops the server with SIGTERM (as some do after closing stdin) still gets
    // every session destroyed.
    let served = tokio::select! {
        served = agentflow_sandbox::mcp_server::serve_stdio(engine.clone()) => served,
        _ = terminated() => Ok(()),
    };
    engine.shutdown(false, true).await;
    served
}

fn main() -> ExitCode {
    let command = Cli::parse().command;
    init_logging(match &command {
        Command::Serve(args) => args.log_format,
        Command::Mcp(args) => args.log_format,
    });
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            error!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let done = match command {
        Command::Serve(args) => runtime.block_on(run(args)),
        Command::Mcp(args) => runtime.block_on(run_mcp(args)),
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            error!("{msg}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn loopback_hosts_are_told_apart() {
        for host in ["127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost", "LocalHost"] {
            assert!(!beyond_loopback(host), "{host}");
        }
        for host in ["0.0.0.0", "::", "10.0.0.5", "192.168.1.2", "example.com", ""] {
            assert!(beyond_loopback(host), "{host}");
        }
    }

    #[test]
    fn warns_only_for_an_unjailed_shell_beyond_loopback() {
        let with = |isolation: Option<&str>, enabled: bool| {
            let mut config = Config::default();
            let bash = config.resources.get_mut("bash").unwrap();
            bash.enabled = enabled;
            if let Some(i) = isolation {
                bash.config.insert("isolation".into(), i.into());
            }
            config
        };
        let warning = unjailed_warning("0.0.0.0", &with(None, true)).expect("a warning");
        assert!(warning.contains("unjailed") && warning.contains("own user"), "{warning}");
        assert!(unjailed_warning("0.0.0.0", &with(Some("none"), true)).is_some());
        assert!(unjailed_warning("0.0.0.0", &with(Some("bwrap"), true)).is_none());
        assert!(unjailed_warning("127.0.0.1", &with(None, true)).is_none());
        assert!(unjailed_warning("0.0.0.0", &with(None, false)).is_none());
        let mut no_bash = Config::default();
        no_bash.resources.remove("bash");
        assert!(unjailed_warning("::", &no_bash).is_none());
    }
}
