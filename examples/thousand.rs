//! A load driver for "1,000 bash sessions on one machine": it starts an `agentflow-sandbox serve`
//! (or uses one at `--url`), drives it over HTTP with the crate's own client, and measures what
//! a thousand live shells cost the server and how fast sessions come and go. Phases:
//!
//! 1. baseline: the server's threads, open fds and descendant processes;
//! 2. serial, nothing live: 50 × (create + destroy) of a fresh worker's session;
//! 3. concurrent create of N sessions (`load-0`..), C in flight: sessions/s, p50/p99;
//! 4. at N live: threads, fds, descendants, PSS per session;
//! 5. `bash:run` `echo $RANDOM` in every session, C in flight: p50/p99, calls/s;
//! 6. 100 destroyed, then 50 × serial create + destroy with N-100 live, and its ratio to phase 2
//!    (each serial phase starts after 2 s of quiet);
//! 7. concurrent destroy of the rest, C in flight: destroys/s, p50/p99;
//! 8. after: threads, fds, descendants, waiting up to 15 s for them to return to baseline.
//!
//! It prints a table, then one JSON line with every figure. Targets and how to read them:
//! `docs/load.md`. Run:
//!
//!     cargo build --release --features http --bin agentflow-sandbox
//!     cargo run --release --example thousand --features http,client,bash -- --sessions 1000 --in-flight 64
//!
//! Options: `--sessions N` (1000), `--in-flight C` (64), `--port P` (18899), `--pool K` (adds
//! `"pool": {"size": K}` to `resources.bash`), `--server PATH` (default: `agentflow-sandbox` in
//! the directory above this example's, i.e. `target/release/`), `--url URL` (drive a running
//! server instead; the process figures are then `null`). The started server logs to a file in a
//! temporary directory (`RUST_LOG` as set, else `info`), whose last lines are shown on failure.

use std::collections::HashMap;
use std::fs;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentflow_sandbox::client::{HttpClientConfig, HttpServiceClient};
use clap::Parser;
use serde_json::{json, Map, Value};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

type Failure = Box<dyn std::error::Error + Send + Sync>;

/// Serial create + destroy pairs in phases 2 and 6.
const SERIAL: usize = 50;
/// The pause before each serial phase.
const QUIET: Duration = Duration::from_secs(2);
/// Sessions destroyed before phase 6.
const THINNED: usize = 100;
/// How long phase 8 waits for the server to return to its baseline.
const SETTLE: Duration = Duration::from_secs(15);

#[derive(Parser)]
#[command(about = "Load driver: N bash sessions on one agentflow-sandbox server")]
struct Args {
    /// Sessions created concurrently in phase 3.
    #[arg(long, default_value_t = 1000)]
    sessions: usize,
    /// Requests in flight in the concurrent phases.
    #[arg(long, default_value_t = 64)]
    in_flight: usize,
    /// Drive the server at this URL instead of starting one (no process figures).
    #[arg(long, value_name = "URL")]
    url: Option<String>,
    /// The server binary to start (default: agentflow-sandbox beside this example's directory).
    #[arg(long, value_name = "PATH", conflicts_with = "url")]
    server: Option<PathBuf>,
    /// Adds "pool": {"size": K} to resources.bash in the generated config.
    #[arg(long, value_name = "K", conflicts_with = "url")]
    pool: Option<usize>,
    /// The port of the started server.
    #[arg(long, default_value_t = 18899, conflicts_with = "url")]
    port: u16,
}

// ---------------------------------------------------------------------------------------------
// The server this driver starts, and what /proc says about it.

/// A started `agentflow-sandbox serve`, stopped (SIGTERM, SIGKILL after 15 s) and its temporary
/// directory removed on drop, so an error or a panic leaves nothing behind.
struct Server {
    child: Option<Child>,
    dir: PathBuf,
}

impl Server {
    fn start(binary: &Path, args: &Args) -> Result<Self, Failure> {
        if std::net::TcpListener::bind(("127.0.0.1", args.port)).is_err() {
            return Err(format!("port {} is taken; pass --port, or --url to drive that server", args.port).into());
        }
        let dir = std::env::temp_dir().join(format!("agentflow-thousand-{}", std::process::id()));
        fs::create_dir_all(&dir)?;
        let mut bash = json!({"enabled": true, "config": {}});
        if let Some(k) = args.pool {
            bash["pool"] = json!({"size": k});
        }
        let config = json!({
            "server": {"host": "127.0.0.1", "port": args.port, "session_ttl": 3600,
                       "max_sessions": args.sessions + 100},
            "resources": {"bash": bash},
            "warmup": {"enabled": false},
        });
        let config_path = dir.join("config.json");
        fs::write(&config_path, serde_json::to_vec_pretty(&config)?)?;
        let log = fs::File::create(dir.join("server.log"))?;
        let mut command = Command::new(binary);
        command.arg("serve").arg("--config").arg(&config_path);
        command.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log);
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "info");
        }
        let child = command.spawn().map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        Ok(Server { child: Some(child), dir })
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    /// The last `n` lines of the server's log.
    fn log_tail(&self, n: usize) -> String {
        let log = self.log();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// SIGTERM, then SIGKILL after 15 s; answers how it ended and how long that took.
    fn stop(&mut self) -> Option<(String, Duration)> {
        let mut child = self.child.take()?;
        let started = Instant::now();
        if let Ok(Some(status)) = child.try_wait() {
            return Some((format!("had already exited ({status})"), started.elapsed()));
        }
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: kill(2) on a child this process spawned and has not reaped yet.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        while started.elapsed() < Duration::from_secs(15) {
            if let Ok(Some(status)) = child.try_wait() {
                return Some((format!("exited on SIGTERM ({status})"), started.elapsed()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        Some(("killed (no exit 15 s after SIGTERM)".into(), started.elapsed()))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// The server's threads, open fds, descendant processes and memory at one moment.
#[derive(Clone, Debug, Default)]
struct Footprint {
    threads: u64,
    fds: u64,
    descendants: Vec<u32>,
    /// Proportional set size of the server and its descendants, KiB (when measured).
    pss_kib: Option<u64>,
}

impl Footprint {
    fn read(pid: u32, with_pss: bool) -> Footprint {
        let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let threads =
            status.lines().find_map(|l| l.strip_prefix("Threads:")).and_then(|v| v.trim().parse().ok()).unwrap_or(0);
        let fds = fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count() as u64).unwrap_or(0);
        let descendants = descendants_of(pid);
        let pss_kib = with_pss.then(|| std::iter::once(pid).chain(descendants.iter().copied()).map(pss_of).sum());
        Footprint { threads, fds, descendants, pss_kib }
    }

    /// Whether nothing is above `base`.
    fn within(&self, base: &Footprint) -> bool {
        self.threads <= base.threads && self.fds <= base.fds && self.descendants.len() <= base.descendants.len()
    }
}

/// Every process whose chain of parents reaches `root`, from `/proc/*/stat`.
fn descendants_of(root: u32) -> Vec<u32> {
    let mut parent = HashMap::new();
    for entry in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else { continue };
        // `pid (comm) state ppid …`: comm may hold spaces and parentheses, so read after the last ')'.
        let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
        if let Some(ppid) = ppid {
            parent.insert(pid, ppid);
        }
    }
    let mut found: Vec<u32> = parent
        .keys()
        .copied()
        .filter(|&pid| {
            let mut p = pid;
            for _ in 0..64 {
                match parent.get(&p) {
                    Some(&pp) if pp == root => return true,
                    Some(&pp) if pp > 1 => p = pp,
                    _ => return false,
                }
            }
            false
        })
        .collect();
    found.sort_unstable();
    found
}

fn pss_of(pid: u32) -> u64 {
    let rollup = fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    rollup
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Reads the footprint off the async workers; `None` without a server pid.
async fn footprint(pid: Option<u32>, with_pss: bool) -> Option<Footprint> {
    let pid = pid?;
    tokio::task::spawn_blocking(move || Footprint::read(pid, with_pss)).await.ok()
}

// ---------------------------------------------------------------------------------------------
// Requests, latencies and the report.

/// One request's latency and, if it failed, why.
struct Outcome {
    worker: String,
    ms: f64,
    error: Option<String>,
}

/// Sends one POST and checks `code == 0`; `check` may refuse the data too.
async fn post(
    client: &HttpServiceClient,
    path: &str,
    worker: String,
    body: Value,
    check: fn(&Value) -> Option<String>,
) -> Outcome {
    let started = Instant::now();
    let answer = client.request_json("POST", path, Some(&body)).await;
    let ms = started.elapsed().as_secs_f64() * 1e3;
    let error = match answer {
        Err(e) => Some(format!("{worker}: {e}")),
        Ok((status, v)) if v["code"] != 0 => {
            Some(format!("{worker}: HTTP {status}, code {}: {}", v["code"], v["message"].as_str().unwrap_or("?")))
        }
        Ok((_, v)) => check(&v["data"]).map(|why| format!("{worker}: {why}")),
    };
    Outcome { worker, ms, error }
}

fn no_check(_: &Value) -> Option<String> {
    None
}

/// `echo $RANDOM` must print a number.
fn number_printed(data: &Value) -> Option<String> {
    let out = data["stdout"].as_str().unwrap_or_default();
    match out.trim().parse::<u32>() {
        Ok(_) => None,
        Err(_) => Some(format!("stdout {out:?} is not a number")),
    }
}

async fn create(client: HttpServiceClient, worker: String) -> Outcome {
    let body = json!({"worker_id": worker, "resource_type": "bash"});
    post(&client, "/api/v1/session/create", worker, body, no_check).await
}

async fn destroy(client: HttpServiceClient, worker: String) -> Outcome {
    let body = json!({"worker_id": worker, "resource_type": "bash"});
    post(&client, "/api/v1/session/destroy", worker, body, no_check).await
}

async fn echo(client: HttpServiceClient, worker: String) -> Outcome {
    let body = json!({"worker_id": worker, "action": "bash:run", "params": {"command": "echo $RANDOM"}});
    post(&client, "/api/v1/execute", worker, body, number_printed).await
}

/// Runs `op` on every worker with at most `in_flight` at once; answers the wall time and the
/// outcomes. A request's latency starts when it is sent, not when it is queued here.
async fn concurrently<F, Fut>(
    client: &HttpServiceClient,
    workers: Vec<String>,
    in_flight: usize,
    op: F,
) -> (Duration, Vec<Outcome>)
where
    F: Fn(HttpServiceClient, String) -> Fut,
    Fut: Future<Output = Outcome> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(in_flight.max(1)));
    let started = Instant::now();
    let mut tasks = JoinSet::new();
    for worker in workers {
        let permit = permits.clone().acquire_owned().await.expect("the semaphore is never closed");
        let request = op(client.clone(), worker);
        tasks.spawn(async move {
            let outcome = request.await;
            drop(permit);
            outcome
        });
    }
    let mut outcomes = Vec::new();
    while let Some(done) = tasks.join_next().await {
        outcomes.push(done.expect("a request task panicked"));
    }
    (started.elapsed(), outcomes)
}

/// Latencies of the outcomes, sorted, and the failures' messages.
fn split(outcomes: &[Outcome]) -> (Vec<f64>, Vec<&str>) {
    let mut ms: Vec<f64> = outcomes.iter().map(|o| o.ms).collect();
    ms.sort_by(f64::total_cmp);
    let failures = outcomes.iter().filter_map(|o| o.error.as_deref()).collect();
    (ms, failures)
}

/// The `q` quantile of sorted values (nearest rank); NaN when empty.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn round(x: f64, digits: i32) -> Value {
    let scale = 10f64.powi(digits);
    if x.is_finite() {
        json!((x * scale).round() / scale)
    } else {
        Value::Null
    }
}

/// The figures: rows of the table and keys of the JSON line.
#[derive(Default)]
struct Report {
    rows: Vec<[String; 4]>,
    figures: Map<String, Value>,
}

impl Report {
    /// Records `key = value`, shown as `label` in `phase`, with its target if it has one.
    fn add(&mut self, phase: &str, label: &str, key: &str, value: Value, target: &str) {
        let shown = match &value {
            Value::Null => "n/a".to_owned(),
            Value::String(s) => s.clone(),
            v => v.to_string(),
        };
        self.rows.push([phase.to_owned(), label.to_owned(), shown, target.to_owned()]);
        self.figures.insert(key.to_owned(), value);
    }

    fn add_failures(&mut self, phase: &str, key: &str, failures: &[&str]) {
        self.add(phase, "failures", key, json!(failures.len()), "0");
        for (i, message) in failures.iter().take(5).enumerate() {
            self.rows.push([String::new(), format!("  failure {}", i + 1), message.to_string(), String::new()]);
        }
        self.figures.insert(format!("{key}_first"), json!(failures.iter().take(5).collect::<Vec<_>>()));
    }

    fn add_footprint(&mut self, phase: &str, prefix: &str, f: Option<&Footprint>) {
        let (threads, fds, descendants) = match f {
            Some(f) => (json!(f.threads), json!(f.fds), json!(f.descendants.len())),
            None => (Value::Null, Value::Null, Value::Null),
        };
        let thread_target = if prefix == "live" { "< 64" } else { "" };
        self.add(phase, "server threads", &format!("{prefix}_threads"), threads, thread_target);
        self.add(phase, "server open fds", &format!("{prefix}_fds"), fds, "");
        self.add(phase, "descendant processes", &format!("{prefix}_descendants"), descendants, "");
    }

    fn print(&self) {
        // Long values (failure messages, how the server stopped) overflow their column.
        let width = |i: usize, cap: usize| {
            self.rows.iter().map(|r| r[i].chars().count()).filter(|&w| w <= cap).max().unwrap_or(0)
        };
        let (w0, w1, w2) = (width(0, 80).max(5), width(1, 80).max(6), width(2, 16).max(5));
        println!("{:<w0$}  {:<w1$}  {:>w2$}  target", "phase", "figure", "value");
        println!("{}", "─".repeat(w0 + w1 + w2 + 14));
        for [phase, label, value, target] in &self.rows {
            println!("{phase:<w0$}  {label:<w1$}  {value:>w2$}  {target}");
        }
    }
}

/// Progress on stderr, so stdout holds only the table and the JSON line.
fn note(what: &str) {
    eprintln!("[thousand] {what}");
}

// ---------------------------------------------------------------------------------------------
// The phases.

async fn serial_pairs(client: &HttpServiceClient, prefix: &str) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<String>) {
    // What the previous phase left the kernel to finish (exits, cgroup removals) is not this
    // phase's cost: start from a quiet machine, as phase 2 does.
    tokio::time::sleep(QUIET).await;
    let (mut creates, mut destroys, mut pairs, mut failures) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..SERIAL {
        let worker = format!("{prefix}-{i}");
        let c = create(client.clone(), worker.clone()).await;
        let d = destroy(client.clone(), worker).await;
        failures.extend(c.error.into_iter().chain(d.error));
        creates.push(c.ms);
        destroys.push(d.ms);
        pairs.push(c.ms + d.ms);
    }
    for v in [&mut creates, &mut destroys, &mut pairs] {
        v.sort_by(f64::total_cmp);
    }
    (creates, destroys, pairs, failures)
}

async fn run(args: &Args, url: &str, server: Option<&mut Server>, report: &mut Report) -> Result<(), Failure> {
    let n = args.sessions;
    let c = args.in_flight;
    let pid = server.as_ref().and_then(|s| s.pid());

    // Wait for /health with a client of its own, dropped before the baseline so that its
    // connection is not counted among the server's fds.
    {
        let probe = HttpServiceClient::new(
            HttpClientConfig::new(url).timeout(Duration::from_secs(2)).max_retries(0).worker_id("thousand-probe"),
        )?;
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut server = server;
        loop {
            if let Some(s) = server.as_deref_mut() {
                if let Some(status) = s.exited() {
                    return Err(
                        format!("the server exited ({status}) before answering; its log:\n{}", s.log_tail(20)).into()
                    );
                }
            }
            match probe.health().await {
                Ok(health) => {
                    note(&format!("server at {url} is up: {health}"));
                    break;
                }
                Err(_) if Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(e) => return Err(format!("{url}/health did not answer within 30 s: {e}").into()),
            }
        }
    }
    // Let the probe's connection close on the server side.
    tokio::time::sleep(Duration::from_millis(200)).await;

    // 1. Baseline.
    let base = footprint(pid, true).await;
    report.add_footprint("1 baseline", "base", base.as_ref());
    report.figures.insert("base_pss_kib".into(), json!(base.as_ref().and_then(|f| f.pss_kib)));

    let client = HttpServiceClient::new(
        HttpClientConfig::new(url).timeout(Duration::from_secs(300)).max_retries(0).worker_id("thousand"),
    )?;

    // 2. Serial, nothing live.
    note("phase 2: serial create + destroy, nothing live");
    let (creates0, destroys0, pairs0, failures) = serial_pairs(&client, "solo").await;
    let (create0, destroy0, pair0) = (quantile(&creates0, 0.5), quantile(&destroys0, 0.5), quantile(&pairs0, 0.5));
    report.add("2 serial, 0 live", "create p50 ms", "idle_create_p50_ms", round(create0, 2), "");
    report.add("2 serial, 0 live", "destroy p50 ms", "idle_destroy_p50_ms", round(destroy0, 2), "");
    report.add("2 serial, 0 live", "create+destroy p50 ms", "idle_pair_p50_ms", round(pair0, 2), "");
    let failures: Vec<&str> = failures.iter().map(String::as_str).collect();
    report.add_failures("2 serial, 0 live", "idle_failures", &failures);

    // 3. Concurrent create.
    note(&format!("phase 3: creating {n} sessions, {c} in flight"));
    let workers: Vec<String> = (0..n).map(|i| format!("load-{i}")).collect();
    let (took, outcomes) = concurrently(&client, workers, c, create).await;
    let (ms, failures) = split(&outcomes);
    let mut live: Vec<String> = outcomes.iter().filter(|o| o.error.is_none()).map(|o| o.worker.clone()).collect();
    live.sort_by_key(|w| w.trim_start_matches("load-").parse::<usize>().unwrap_or(usize::MAX));
    let rate = n as f64 / took.as_secs_f64();
    let pooled = args.pool.is_some();
    report.add("3 create", "sessions", "create_sessions", json!(n), "");
    report.add("3 create", "total s", "create_total_s", round(took.as_secs_f64(), 3), "");
    report.add("3 create", "sessions/s", "create_per_s", round(rate, 1), if pooled { "" } else { "≥ 250 (no pool)" });
    report.add("3 create", "create p50 ms", "create_p50_ms", round(quantile(&ms, 0.5), 2), "");
    report.add(
        "3 create",
        "create p99 ms",
        "create_p99_ms",
        round(quantile(&ms, 0.99), 2),
        if pooled { "< 50 (pool 64)" } else { "" },
    );
    report.add("3 create", "create max ms", "create_max_ms", round(ms.last().copied().unwrap_or(f64::NAN), 2), "");
    report.add_failures("3 create", "create_failures", &failures);

    // The fillers restart the pool after the burst; the figures below are of the steady state.
    if let Some(size) = args.pool {
        note(&format!("waiting for the pool to hold {size} again"));
        let started = Instant::now();
        let mut idle = None;
        while started.elapsed() < Duration::from_secs(30) {
            idle =
                client.request_json("GET", "/ready", None).await.ok().and_then(|(_, v)| v["pooled_sessions"].as_u64());
            if idle.is_some_and(|i| i as usize >= size) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let refill = idle.filter(|&i| i as usize >= size).map(|_| round(started.elapsed().as_secs_f64() * 1000.0, 0));
        report.add("3 create", "pool refilled after ms", "pool_refill_ms", refill.unwrap_or(Value::Null), "");
    }

    // 4. At N live.
    note("phase 4: reading the server's footprint");
    let at_n = footprint(pid, true).await;
    report.add_footprint(&format!("4 at {} live", live.len()), "live", at_n.as_ref());
    let per_session = match (&base, &at_n) {
        (Some(b), Some(a)) if !live.is_empty() => {
            let (b, a) = (b.pss_kib.unwrap_or(0) as f64, a.pss_kib.unwrap_or(0) as f64);
            round((a - b) / live.len() as f64, 1)
        }
        _ => Value::Null,
    };
    report.add(&format!("4 at {} live", live.len()), "PSS per session KiB", "pss_per_session_kib", per_session, "");
    report.add(
        &format!("4 at {} live", live.len()),
        "PSS total MiB",
        "live_pss_mib",
        at_n.as_ref().and_then(|f| f.pss_kib).map_or(Value::Null, |k| round(k as f64 / 1024.0, 1)),
        "",
    );

    // 5. Echo in every session.
    note(&format!("phase 5: echo $RANDOM in {} sessions, {c} in flight", live.len()));
    let (took, outcomes) = concurrently(&client, live.clone(), c, echo).await;
    let (ms, failures) = split(&outcomes);
    report.add("5 echo", "calls", "echo_calls", json!(outcomes.len()), "");
    report.add("5 echo", "calls/s", "echo_per_s", round(outcomes.len() as f64 / took.as_secs_f64(), 1), "");
    report.add("5 echo", "echo p50 ms", "echo_p50_ms", round(quantile(&ms, 0.5), 2), "");
    report.add("5 echo", "echo p99 ms", "echo_p99_ms", round(quantile(&ms, 0.99), 2), "< 20 (64 in flight)");
    report.add_failures("5 echo", "echo_failures", &failures);

    // 6. Serial with N-100 live.
    let thinned: Vec<String> = live.split_off(live.len().saturating_sub(THINNED));
    note(&format!("phase 6: destroying {} sessions, then serial create + destroy", thinned.len()));
    let (_, outcomes) = concurrently(&client, thinned, c, destroy).await;
    let (_, failures) = split(&outcomes);
    let phase6 = format!("6 serial, {} live", live.len());
    report.add_failures(&phase6, "thin_failures", &failures);
    let (creates1, destroys1, pairs1, failures) = serial_pairs(&client, "busy").await;
    let (create1, destroy1, pair1) = (quantile(&creates1, 0.5), quantile(&destroys1, 0.5), quantile(&pairs1, 0.5));
    report.add(&phase6, "live sessions", "busy_live", json!(live.len()), "");
    report.add(&phase6, "create p50 ms", "busy_create_p50_ms", round(create1, 2), "");
    report.add(&phase6, "destroy p50 ms", "busy_destroy_p50_ms", round(destroy1, 2), "");
    report.add(&phase6, "create+destroy p50 ms", "busy_pair_p50_ms", round(pair1, 2), "");
    report.add(&phase6, "create ratio to phase 2", "busy_create_ratio", round(create1 / create0, 2), "");
    report.add(&phase6, "destroy ratio to phase 2", "busy_destroy_ratio", round(destroy1 / destroy0, 2), "");
    report.add(&phase6, "create+destroy ratio", "busy_pair_ratio", round(pair1 / pair0, 2), "≤ 1.5");
    let failures: Vec<&str> = failures.iter().map(String::as_str).collect();
    report.add_failures(&phase6, "busy_failures", &failures);

    // 7. Concurrent destroy of the rest.
    note(&format!("phase 7: destroying {} sessions, {c} in flight", live.len()));
    let count = live.len();
    let (took, outcomes) = concurrently(&client, live, c, destroy).await;
    let (ms, failures) = split(&outcomes);
    report.add("7 destroy", "sessions", "destroy_sessions", json!(count), "");
    report.add("7 destroy", "total s", "destroy_total_s", round(took.as_secs_f64(), 3), "");
    report.add("7 destroy", "destroys/s", "destroy_per_s", round(count as f64 / took.as_secs_f64(), 1), "≥ 250");
    report.add("7 destroy", "destroy p50 ms", "destroy_p50_ms", round(quantile(&ms, 0.5), 2), "");
    report.add("7 destroy", "destroy p99 ms", "destroy_p99_ms", round(quantile(&ms, 0.99), 2), "");
    report.add_failures("7 destroy", "destroy_failures", &failures);

    // 8. After: the driver's pooled connections closed, wait for the baseline.
    drop(client);
    if let (Some(base), Some(_)) = (&base, pid) {
        note("phase 8: waiting for the server to return to its baseline");
        let started = Instant::now();
        let mut after = footprint(pid, false).await.unwrap_or_default();
        while !after.within(base) && started.elapsed() < SETTLE {
            tokio::time::sleep(Duration::from_millis(250)).await;
            after = footprint(pid, false).await.unwrap_or_default();
        }
        let back = after.within(base);
        report.add_footprint("8 after", "after", Some(&after));
        let each = [
            ("threads", after.threads <= base.threads),
            ("fds", after.fds <= base.fds),
            ("descendants", after.descendants.len() <= base.descendants.len()),
        ];
        for (what, ok) in each {
            report.add("8 after", &format!("  {what} back"), &format!("back_{what}"), json!(ok), "");
        }
        report.add("8 after", "back to baseline", "back_to_baseline", json!(back), "true");
        report.add(
            "8 after",
            if back { "s until baseline" } else { "s waited" },
            "settle_s",
            round(started.elapsed().as_secs_f64(), 2),
            "",
        );
        report.figures.insert("after_descendant_pids".into(), json!(after.descendants));
    }
    Ok(())
}

/// The server binary: `--server`, else `agentflow-sandbox` in the directory above this example's.
fn server_binary(explicit: Option<&Path>) -> Result<PathBuf, Failure> {
    let path = match explicit {
        Some(p) => p.to_owned(),
        None => {
            let exe = std::env::current_exe()?;
            let dir = exe.parent().and_then(Path::parent).ok_or("cannot place this example's executable")?;
            dir.join("agentflow-sandbox")
        }
    };
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "no server binary at {}: run `cargo build --release --features http` first (or pass --server PATH)",
            path.display()
        )
        .into())
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let mut report = Report::default();
    let mut server = None;
    let url = match &args.url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => {
            let started = server_binary(args.server.as_deref()).and_then(|binary| {
                note(&format!("starting {} on port {}", binary.display(), args.port));
                Server::start(&binary, &args)
            });
            match started {
                Ok(s) => server = Some(s),
                Err(e) => {
                    eprintln!("error: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            }
            format!("http://127.0.0.1:{}", args.port)
        }
    };
    report.figures.insert("sessions".into(), json!(args.sessions));
    report.figures.insert("in_flight".into(), json!(args.in_flight));
    report.figures.insert("pool".into(), json!(args.pool));
    report.figures.insert("url".into(), json!(url));

    let outcome = tokio::select! {
        outcome = run(&args, &url, server.as_mut(), &mut report) => outcome,
        _ = tokio::signal::ctrl_c() => Err("interrupted".into()),
    };

    let mut failed = outcome.is_err();
    if let Some(mut s) = server {
        let last = Footprint::read(s.pid().unwrap_or(0), false).descendants;
        let crashed = s.exited();
        let warnings = s.log().lines().filter(|l| l.contains("WARN") || l.contains("ERROR")).count();
        if let Some(status) = crashed {
            failed = true;
            eprintln!("the server exited during the run ({status}); its log ends:\n{}", s.log_tail(20));
        }
        let (how, took) = s.stop().unwrap_or_else(|| ("not running".into(), Duration::ZERO));
        // What the server had started and still runs once it is gone.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let left: Vec<u32> = last.into_iter().filter(|p| Path::new(&format!("/proc/{p}")).exists()).collect();
        report.add("end", "server log WARN/ERROR lines", "server_log_warnings", json!(warnings), "");
        report.add("end", "server stop", "server_stop", json!(how), "");
        report.add("end", "server stop s", "server_stop_s", round(took.as_secs_f64(), 3), "");
        report.add("end", "processes left behind", "left_behind", json!(left.len()), "0");
        drop(s);
    }
    report.print();
    println!("{}", Value::Object(report.figures));
    match outcome {
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
        Ok(()) if failed => std::process::ExitCode::FAILURE,
        Ok(()) => std::process::ExitCode::SUCCESS,
    }
}
