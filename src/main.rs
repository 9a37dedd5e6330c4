//! The `agentflow-sandbox` binary: `agentflow-sandbox serve [--config FILE] [--host H] [--port P]`.
//!
//! Reads the config (or the defaults: bash, vm and rag on 127.0.0.1:18890), builds the engine,
//! serves it over HTTP until `/shutdown`, SIGINT or SIGTERM, then destroys every session, stops
//! the backends and exits 0. Everything else is the library's.

use std::path::PathBuf;
use std::process::ExitCode;

use agentflow_sandbox::http::{serve, Options};
use agentflow_sandbox::Config;

const USAGE: &str = "usage: agentflow-sandbox serve [--config FILE] [--host HOST] [--port PORT]";

struct Args {
    config: Option<PathBuf>,
    host: Option<String>,
    port: Option<u16>,
}

fn parse_args() -> Result<Args, String> {
    let mut it = std::env::args().skip(1);
    match it.next().as_deref() {
        Some("serve") => {}
        Some("-h" | "--help") => return Err(USAGE.into()),
        Some("--version" | "-V") => return Err(format!("agentflow-sandbox {}", env!("CARGO_PKG_VERSION"))),
        _ => return Err(USAGE.into()),
    }
    let mut args = Args { config: None, host: None, port: None };
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        match flag.as_str() {
            "--config" | "-c" => args.config = Some(value.into()),
            "--host" => args.host = Some(value),
            "--port" | "-p" => args.port = Some(value.parse().map_err(|_| format!("--port: not a port: {value}"))?),
            other => return Err(format!("unknown option {other}\n{USAGE}")),
        }
    }
    Ok(args)
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
        eprintln!(
            "agentflow-sandbox: WARNING: listening on {local} WITHOUT an API key: anyone who reaches this \
             port can run shell commands. Set security.auth in the config or AGENTFLOW_API_KEY."
        );
    }
    let engine = config.engine().map_err(|e| e.to_string())?;
    eprintln!(
        "agentflow-sandbox {} listening on http://{local} (backends: {})",
        env!("CARGO_PKG_VERSION"),
        engine.backend_names().join(", ")
    );
    serve(listener, engine, options, terminated()).await.map_err(|e| e.to_string())?;
    eprintln!("agentflow-sandbox: stopped");
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(msg) => {
            eprintln!("{msg}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("agentflow-sandbox: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("agentflow-sandbox: {msg}");
            ExitCode::FAILURE
        }
    }
}
