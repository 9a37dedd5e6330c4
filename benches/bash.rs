//! The bash backend's latency and footprint on real shells, in-process:
//! - `bash/engine_run_echo`: `engine.execute("w", "bash:run", {"command": "echo hi"})` on an
//!   existing session, exit code included (target p50 under 250 µs);
//! - `bash/shell_run_echo`: the same through [`agentflow_bash::Shell`] directly;
//! - `bash/session_create`: a session from spawn to ready for its first command (target p50
//!   under 5 ms); destroying it is outside the measurement.
//! - `bash/session_create_bwrap`: the same in a jail (`isolation: "bwrap"`): the jail's
//!   directory and cgroups made, then the shell started through `sh`, `prlimit` and `bwrap`;
//!   the jail's start-up cost is the difference with `bash/session_create`.
//! - `bash/session_create_pooled`: `engine.create_session` of a bash session (config `{}`)
//!   taken from a warm pool (`EngineBuilder::pool`; target p50 ≤ 0.5 ms); `..._pooled_cwd_env`
//!   the same with `cwd` and `env`, applied in the pooled shell. Each sample waits, outside the
//!   measurement, until the pool has a shell, and destroys the session after.
//!
//! Besides criterion's estimates, it prints per-call percentiles of each (p50, p90, p99) and the
//! memory of an idle session (PSS of its bash plus this process's growth per session; target
//! under 5 MB). Run: `cargo bench --no-default-features --features bash --bench bash`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentflow_bash::{find_bwrap, Jail, JailConfig, OnTimeout, Shell, ShellConfig};
use agentflow_sandbox::backends::bash::BashBackend;
use agentflow_sandbox::protocol::CreateSessionRequest;
use agentflow_sandbox::Engine;
use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::{json, Map};

const T: Duration = Duration::from_secs(10);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

fn bash_engine() -> Engine {
    Engine::builder().backend(Arc::new(BashBackend::new(Map::new()).unwrap())).build().unwrap()
}

async fn create(engine: &Engine, worker: &str) {
    create_with(engine, worker, json!({})).await;
}

async fn create_with(engine: &Engine, worker: &str, config: serde_json::Value) {
    let req: CreateSessionRequest =
        serde_json::from_value(json!({"worker_id": worker, "resource_type": "bash", "config": config})).unwrap();
    let e = engine.create_session(req).await;
    assert_eq!(e.code, 0, "{}", e.message);
}

/// A jail and its shell, as a jailed session starts them; the time to ready.
async fn jailed_shell(config: &JailConfig) -> (Duration, Jail, Shell) {
    let start = Instant::now();
    let config = config.clone();
    let jail = tokio::task::spawn_blocking(move || Jail::create(config)).await.unwrap().unwrap();
    let shell = Shell::spawn(jail.wrap(&ShellConfig::default())).await.unwrap();
    (start.elapsed(), jail, shell)
}

async fn release(jail: Jail, shell: Shell) {
    shell.close().await;
    tokio::task::spawn_blocking(move || drop(jail)).await.unwrap();
}

/// Times `n` calls one by one and prints p50/p90/p99.
fn percentiles(label: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    println!(
        "{label}: n={} p50={:?} p90={:?} p99={:?} min={:?} max={:?}",
        samples.len(),
        at(0.5),
        at(0.9),
        at(0.99),
        samples[0],
        samples[samples.len() - 1]
    );
}

fn run_echo(c: &mut Criterion) {
    let rt = runtime();
    let engine = rt.block_on(async {
        let engine = bash_engine();
        create(&engine, "w").await;
        engine
    });
    let mut shell = rt.block_on(Shell::spawn(ShellConfig::default())).unwrap();
    let mut group = c.benchmark_group("bash");
    group.measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1)).sample_size(30);
    group.bench_function("engine_run_echo", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let e = engine.execute("w", "bash:run", json!({"command": "echo hi"})).await;
                    assert_eq!((e.code, &e.data["exit_code"]), (0, &json!(0)));
                    black_box(e);
                }
                start.elapsed()
            })
        })
    });
    group.bench_function("shell_run_echo", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    let out = shell.run("echo hi", T, OnTimeout::Interrupt).await.unwrap();
                    assert_eq!(out.exit_code, Some(0));
                    black_box(out);
                }
                start.elapsed()
            })
        })
    });
    group.finish();

    let samples = rt.block_on(async {
        let mut v = Vec::new();
        for _ in 0..2000 {
            let start = Instant::now();
            let e = engine.execute("w", "bash:run", json!({"command": "echo hi"})).await;
            v.push(start.elapsed());
            assert_eq!(e.data["stdout"], "hi\n");
        }
        v
    });
    percentiles("bash:run echo hi via Engine (per call)", samples);
    let samples = rt.block_on(async {
        let mut v = Vec::new();
        for _ in 0..2000 {
            let start = Instant::now();
            let out = shell.run("echo hi", T, OnTimeout::Interrupt).await.unwrap();
            v.push(start.elapsed());
            assert_eq!(out.output, "hi\n");
        }
        v
    });
    percentiles("Shell::run echo hi (per call)", samples);
    rt.block_on(async {
        shell.close().await;
        engine.shutdown(false, true).await;
    });
}

fn session_create(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("bash");
    group.measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1)).sample_size(20);
    group.bench_function("session_create", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let start = Instant::now();
                    let shell = Shell::spawn(ShellConfig::default()).await.unwrap();
                    total += start.elapsed();
                    shell.close().await;
                }
                total
            })
        })
    });
    group.finish();

    let (create_samples, engine_samples) = rt.block_on(async {
        let mut direct = Vec::new();
        for _ in 0..200 {
            let start = Instant::now();
            let shell = Shell::spawn(ShellConfig::default()).await.unwrap();
            direct.push(start.elapsed());
            shell.close().await;
        }
        let engine = bash_engine();
        let mut through_engine = Vec::new();
        for i in 0..200 {
            let worker = format!("c{i}");
            let start = Instant::now();
            create(&engine, &worker).await;
            through_engine.push(start.elapsed());
            assert_eq!(engine.destroy_session(&worker, "bash").await.code, 0);
        }
        engine.shutdown(false, true).await;
        (direct, through_engine)
    });
    // The floor on this machine at this moment: a bare bash started and ended, no terminal.
    let floor: Vec<Duration> = (0..200)
        .map(|_| {
            let start = Instant::now();
            let status = std::process::Command::new("/bin/bash").args(["--noprofile", "--norc", "-c", "exit"]).status();
            assert!(status.unwrap().success());
            start.elapsed()
        })
        .collect();
    percentiles("reference: bash -c exit (std::process, no PTY)", floor);
    percentiles("Shell::spawn to ready", create_samples);
    percentiles("engine create_session (bash)", engine_samples);
}

/// Session creation from a warm pool, with the default config and with `cwd` and `env`.
fn session_create_pooled(c: &mut Criterion) {
    let rt = runtime();
    let engine = rt.block_on(async {
        Engine::builder().backend(Arc::new(BashBackend::new(Map::new()).unwrap())).pool("bash", 8).build().unwrap()
    });
    let mut group = c.benchmark_group("bash");
    group.measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1)).sample_size(20);
    let configs = [
        ("session_create_pooled", json!({})),
        ("session_create_pooled_cwd_env", json!({"cwd": "/tmp", "env": {"A": "1", "B": "two words"}})),
    ];
    for (name, config) in configs {
        let mut n = 0u64;
        let mut samples = Vec::new();
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                rt.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        while engine.overview()["pooled_sessions"] == 0 {
                            tokio::time::sleep(Duration::from_millis(1)).await;
                        }
                        n += 1;
                        let worker = format!("p{n}");
                        let start = Instant::now();
                        create_with(&engine, &worker, config.clone()).await;
                        let took = start.elapsed();
                        total += took;
                        samples.push(took);
                        assert_eq!(engine.destroy_session(&worker, "bash").await.code, 0);
                    }
                    total
                })
            })
        });
        percentiles(&format!("engine create_session from the pool, config {config}"), samples);
    }
    group.finish();
    rt.block_on(engine.shutdown(false, true));
}

/// Session creation in a jail, beside the same without one, for the jail's start-up cost.
fn session_create_bwrap(c: &mut Criterion) {
    let rt = runtime();
    let bwrap = find_bwrap().expect("bwrap is installed (apt-get install bubblewrap)");
    let config = JailConfig::new(bwrap);
    let mut group = c.benchmark_group("bash");
    group.measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1)).sample_size(10);
    group.bench_function("session_create_bwrap", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let (took, jail, shell) = jailed_shell(&config).await;
                    total += took;
                    release(jail, shell).await;
                }
                total
            })
        })
    });
    group.finish();

    let (plain, jailed, engine_jailed) = rt.block_on(async {
        let (mut plain, mut jailed) = (Vec::new(), Vec::new());
        // Interleaved, so that both see the same machine load.
        for _ in 0..100 {
            let start = Instant::now();
            let shell = Shell::spawn(ShellConfig::default()).await.unwrap();
            plain.push(start.elapsed());
            shell.close().await;
            let (took, jail, shell) = jailed_shell(&config).await;
            jailed.push(took);
            release(jail, shell).await;
        }
        let engine = bash_engine();
        let mut through_engine = Vec::new();
        for i in 0..100 {
            let worker = format!("j{i}");
            let start = Instant::now();
            create_with(&engine, &worker, json!({"isolation": "bwrap"})).await;
            through_engine.push(start.elapsed());
            assert_eq!(engine.destroy_session(&worker, "bash").await.code, 0);
        }
        engine.shutdown(false, true).await;
        (plain, jailed, through_engine)
    });
    percentiles("Shell::spawn to ready, no jail", plain);
    percentiles("Jail::create + Shell::spawn to ready (bwrap)", jailed);
    percentiles("engine create_session (bash, isolation bwrap)", engine_jailed);
}

/// Memory of idle sessions: PSS of their bash processes, and this process's RSS growth.
fn idle_memory(_: &mut Criterion) {
    let rt = runtime();
    let n = 50;
    let before = rss_kib(std::process::id());
    let (engine, pids) = rt.block_on(async {
        let engine = bash_engine();
        let mut pids = Vec::new();
        for i in 0..n {
            let worker = format!("m{i}");
            create(&engine, &worker).await;
            let e = engine.execute(&worker, "bash:run", json!({"command": "echo $$"})).await;
            pids.push(e.data["stdout"].as_str().unwrap().trim().parse::<u32>().unwrap());
        }
        (engine, pids)
    });
    let grown = rss_kib(std::process::id()).saturating_sub(before);
    let pss: u64 = pids.iter().map(|&p| pss_kib(p)).sum();
    let rss: u64 = pids.iter().map(|&p| rss_kib(p)).sum();
    println!(
        "idle session memory over {n} sessions: bash PSS {:.0} KiB/session (RSS {:.0} KiB), engine process \
         +{:.0} KiB/session; total (PSS + engine) {:.2} MiB/session",
        pss as f64 / n as f64,
        rss as f64 / n as f64,
        grown as f64 / n as f64,
        (pss + grown) as f64 / n as f64 / 1024.0
    );
    rt.block_on(engine.shutdown(false, true));
}

fn rss_kib(pid: u32) -> u64 {
    field_kib(&format!("/proc/{pid}/status"), "VmRSS:")
}

fn pss_kib(pid: u32) -> u64 {
    field_kib(&format!("/proc/{pid}/smaps_rollup"), "Pss:")
}

fn field_kib(path: &str, name: &str) -> u64 {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().find(|l| l.starts_with(name)).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()).unwrap_or(0)
}

criterion_group!(benches, run_echo, session_create, session_create_pooled, session_create_bwrap, idle_memory);
criterion_main!(benches);
