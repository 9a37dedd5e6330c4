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
    if let Some(warning) = unjailed_warning(&config.server.host, &config) {
        eprintln!("agentflow-sandbox: WARNING: {warning}");
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

#[cfg(test)]
mod tests {
    use super::*;

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
