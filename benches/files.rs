//! The file tools of the bash resource through the in-process engine, on a real shell's session,
//! beside `bash:run "cat file"` of the same file (the way an agent reads a file without them):
//! - `files/read_file_1k`, `files/write_file_1k`: 1 KB of text (target p50 under 0.3 ms);
//! - `files/read_file_1m`, `files/write_file_1m`: 1 MB of text (target p50 under 5 ms);
//! - `files/run_cat_1k`, `files/run_cat_1m`: `bash:run` of `cat` of the same files;
//! - `files/edit_str_replace_1k`: `bash:edit` `str_replace` in the 1 KB file (read, edit,
//!   write, history);
//! - `files/read_file_1k_jailed`, `files/write_file_1k_jailed`: the same in a jailed session
//!   (`isolation: "bwrap"`), where the operation runs as commands inside the jail.
//!
//! Run: `cargo bench --no-default-features --features bash --bench files`.

use std::sync::Arc;

use agentflow_sandbox::backends::bash::BashBackend;
use agentflow_sandbox::protocol::CreateSessionRequest;
use agentflow_sandbox::Engine;
use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::{json, Map, Value};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

async fn create(engine: &Engine, worker: &str, config: Value) {
    let req: CreateSessionRequest =
        serde_json::from_value(json!({"worker_id": worker, "resource_type": "bash", "config": config})).unwrap();
    let e = engine.create_session(req).await;
    assert_eq!(e.code, 0, "{}", e.message);
}

async fn call(engine: &Engine, worker: &str, tool: &str, params: Value) -> Value {
    let e = engine.execute(worker, tool, params).await;
    assert_eq!(e.code, 0, "{tool}: {} {}", e.message, e.data);
    e.data
}

/// `size` bytes of text in lines of 64.
fn text(size: usize) -> String {
    let line = format!("{}\n", "x".repeat(63));
    line.repeat(size / 64)
}

fn bench(c: &mut Criterion) {
    let rt = runtime();
    let engine = {
        let _inside = rt.enter();
        Engine::builder().backend(Arc::new(BashBackend::new(Map::new()).unwrap())).build().unwrap()
    };
    let dir = std::env::temp_dir().join(format!("agentflow-bench-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    rt.block_on(create(&engine, "files", json!({"cwd": dir.display().to_string()})));
    let mut group = c.benchmark_group("files");
    for (name, size) in [("1k", 1024), ("1m", 1 << 20)] {
        let content = text(size);
        let file = format!("{name}.txt");
        std::fs::write(dir.join(&file), &content).unwrap();
        group.bench_function(format!("read_file_{name}"), |b| {
            b.iter(|| rt.block_on(call(&engine, "files", "bash:read_file", json!({"path": file}))))
        });
        let params = json!({"path": format!("w-{file}"), "content": content});
        group.bench_function(format!("write_file_{name}"), |b| {
            b.iter(|| rt.block_on(call(&engine, "files", "bash:write_file", params.clone())))
        });
        let cat = json!({"command": format!("cat {file}")});
        group.bench_function(format!("run_cat_{name}"), |b| {
            b.iter(|| rt.block_on(call(&engine, "files", "bash:run", cat.clone())))
        });
    }
    // Each sample replaces one word with the other and back, so the file stays 1 KB.
    std::fs::write(dir.join("edit.txt"), format!("{}alpha\n", text(1024))).unwrap();
    let swap =
        |old: &str, new: &str| json!({"command": "str_replace", "path": "edit.txt", "old_str": old, "new_str": new});
    let (forth, back) = (swap("alpha", "omega"), swap("omega", "alpha"));
    let mut turn = false;
    group.bench_function("edit_str_replace_1k", |b| {
        b.iter(|| {
            turn = !turn;
            let params = if turn { forth.clone() } else { back.clone() };
            rt.block_on(call(&engine, "files", "bash:edit", params))
        })
    });
    if agentflow_bash::find_bwrap().is_some() {
        rt.block_on(create(&engine, "jailed", json!({"isolation": "bwrap"})));
        let content = text(1024);
        let write = json!({"path": "1k.txt", "content": content});
        rt.block_on(call(&engine, "jailed", "bash:write_file", write.clone()));
        group.bench_function("read_file_1k_jailed", |b| {
            b.iter(|| rt.block_on(call(&engine, "jailed", "bash:read_file", json!({"path": "1k.txt"}))))
        });
        group.bench_function("write_file_1k_jailed", |b| {
            b.iter(|| rt.block_on(call(&engine, "jailed", "bash:write_file", write.clone())))
        });
    } else {
        eprintln!("files: no bwrap here, so no jailed figures (apt-get install bubblewrap)");
    }
    group.finish();
    rt.block_on(engine.shutdown(false, true));
    let _ = std::fs::remove_dir_all(dir);
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);
