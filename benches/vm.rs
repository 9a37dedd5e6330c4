//! Benchmarks of the `vm` backend on a real 1920×1080 Xvfb, sized for a 2-core machine (about a
//! minute and a half in all).
//!
//! The bench drives the screen both through the engine and through a `Desktop` of its own, so
//! the Xvfb is started by the bench, as an operator's display the engine's session attaches to
//! (`allowed_displays`): a session's private Xvfb admits no second connection of this process.
//! Capture and input cost the same either way.
//!
//! - `vm:screenshot` through the engine (capture + RGB + PNG + base64 + the engine's own path) on
//!   a desktop of six xterms full of text, then on a photo-like wallpaper (smooth colour fields
//!   with sensor-like noise, which PNG compresses poorly);
//! - the same with the xterms over the photo, the usual look of an agent's desktop;
//! - its parts on the same screens: MIT-SHM capture alone, the pixel conversion, and PNG encoding
//!   at each compression setting, printing the PNG sizes;
//! - `vm:move` and `vm:click` through the engine, in-process;
//! - `vm:accessibility_tree` of `gtk3-widget-factory` (about 260 objects) on a private desktop
//!   with its own D-Bus and AT-SPI buses, and a session's start with and without those buses.
//!
//! Besides criterion's estimates, each bench prints its p10/p50/p90 over every iteration it ran.
//!
//! Run: `CARGO_TARGET_DIR=/work/target-vm cargo bench --no-default-features --features vm --bench vm`
//! (needs Debian's `xvfb`, `xterm`, `xdotool`, `x11-xserver-utils`, `dbus-daemon`,
//! `at-spi2-core`, `gtk-3-examples`).

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentflow_sandbox::backends::vm::VmBackend;
use agentflow_sandbox::protocol::CreateSessionRequest;
use agentflow_sandbox::Engine;
use agentflow_vm::{encode_png_with, Compression, Desktop};
use criterion::Criterion;
use serde_json::{json, Value};

const WIDTH: u32 = 1920;
const HEIGHT: u32 = 1080;

/// The bench's own Xvfb (no authorization, no TCP), stopped and reaped at the end.
struct Server(Child, String);

impl Server {
    fn start() -> Server {
        let serial = agentflow_vm::StartGuard::acquire();
        let mut child = Command::new("Xvfb")
            .args(["-displayfd", "1", "-screen", "0", &format!("{WIDTH}x{HEIGHT}x24"), "-nolisten", "tcp", "-noreset"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("Xvfb (Debian: xvfb)");
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
        drop(serial);
        Server(child, format!(":{}", line.trim()))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SIGTERM: Xvfb removes its socket and lock file.
        // SAFETY: plain syscall on our own child, not reaped yet.
        unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

/// X clients started for the bench, killed at the end.
struct Clients(Vec<Child>);

impl Drop for Clients {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `f` under criterion and prints the percentiles of every iteration's time.
fn bench(c: &mut Criterion, name: &str, mut f: impl FnMut()) {
    let mut samples: Vec<Duration> = Vec::new();
    c.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                f();
                let took = start.elapsed();
                samples.push(took);
                total += took;
            }
            total
        })
    });
    percentiles(name, &mut samples, "iterations");
}

/// Prints the p10/p50/p90 of `samples` (none when the bench was filtered out).
fn percentiles(name: &str, samples: &mut [Duration], what: &str) {
    if samples.is_empty() {
        return;
    }
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize];
    println!("{name}: p10 {:.3?}  p50 {:.3?}  p90 {:.3?}  ({} {what})", at(0.1), at(0.5), at(0.9), samples.len());
}

/// Waits until windows cover most of the `bare` screen and two captures 100 ms apart are
/// identical (every window has drawn).
fn settle(desktop: &mut Desktop, bare: &[u8]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = Vec::new();
    while Instant::now() < deadline {
        let mut now = Vec::new();
        desktop.capture().expect("capture").to_rgb(&mut now);
        let uncovered = now.chunks_exact(3).zip(bare.chunks_exact(3)).filter(|(a, b)| a == b).count();
        if now == last && uncovered < now.len() / 3 / 4 {
            return;
        }
        last = now;
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the windows did not settle");
}

/// Six xterms full of text, tiled over the screen, once they have drawn.
fn terminals(desktop: &mut Desktop) -> Clients {
    let mut bare = Vec::new();
    desktop.capture().expect("capture").to_rgb(&mut bare);
    let root = env!("CARGO_MANIFEST_DIR");
    let files = ["src/engine.rs", "src/tool.rs", "src/error.rs", "Cargo.lock", "src/protocol.rs", "src/backend.rs"];
    let mut clients = Clients(Vec::new());
    for (i, file) in files.iter().enumerate() {
        let geometry = format!("104x40+{}+{}", (i % 3) * 640, (i / 3) * 540);
        let child = Command::new("xterm")
            .args(["-hold", "-geometry", &geometry, "-T", file, "-e", "cat", &format!("{root}/{file}")])
            .env("DISPLAY", desktop.display())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("xterm (Debian: xterm)");
        clients.0.push(child);
    }
    settle(desktop, &bare);
    clients
}

/// A 1920×1080 photo-like picture: smooth colour fields plus per-pixel noise.
fn photo() -> Vec<u8> {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut noise = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        (seed % 25) as f32 - 12.0
    };
    let mut rgb = Vec::with_capacity((WIDTH * HEIGHT * 3) as usize);
    for y in 0..HEIGHT {
        for x in 0..WIDTH {
            let (fx, fy) = (x as f32, y as f32);
            let base = [
                128.0 + 90.0 * (fx / 210.0 + fy / 330.0).sin(),
                120.0 + 70.0 * (fx / 150.0 - fy / 260.0).cos(),
                110.0 + 60.0 * ((fx + fy) / 400.0).sin() * (fy / 90.0).cos(),
            ];
            for b in base {
                rgb.push((b + noise()).clamp(0.0, 255.0) as u8);
            }
        }
    }
    rgb
}

fn encodings(c: &mut Criterion, screen: &str, rgb: &[u8], settings: &[(&str, Compression)]) {
    for &(label, compression) in settings {
        let size = encode_png_with(rgb, WIDTH, HEIGHT, compression).unwrap().len();
        println!("png size, {screen}, {label}: {} KB", size / 1024);
        bench(c, &format!("vm/encode/{screen}/{label}"), || {
            std::hint::black_box(encode_png_with(rgb, WIDTH, HEIGHT, compression).unwrap());
        });
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let server = Server::start();
    let display = server.1.clone();
    let engine = rt.block_on(async {
        let defaults = json!({"allowed_displays": [display]}).as_object().cloned().unwrap();
        let engine = Engine::builder().backend(Arc::new(VmBackend::new(defaults).unwrap())).build().unwrap();
        let req: CreateSessionRequest = serde_json::from_value(json!({
            "worker_id": "bench", "resource_type": "vm", "config": {"display": display}
        }))
        .unwrap();
        assert_eq!(engine.create_session(req).await.code, 0);
        engine
    });
    let call = |tool: &str, params: Value| {
        let answer = rt.block_on(engine.execute("bench", tool, params));
        assert_eq!(answer.code, 0, "{tool}: {answer:?}");
        answer.data
    };
    assert_eq!(call("vm:info", json!({}))["size"], json!([WIDTH, HEIGHT]));
    let mut desktop = Desktop::attach(&display).expect("attach to the bench's display");

    // A desktop of windows and text: six xterms over a flat background.
    let status = Command::new("xsetroot").args(["-solid", "#3b6ea5"]).env("DISPLAY", &display).status();
    assert!(status.expect("xsetroot (Debian: x11-xserver-utils)").success());
    let clients = terminals(&mut desktop);

    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(4))
        .configure_from_args();

    let shot = call("vm:screenshot", json!({}));
    println!("vm:screenshot, windows: base64 {} KB", shot["image"].as_str().unwrap().len() / 1024);
    bench(&mut c, "vm/screenshot/windows", || {
        call("vm:screenshot", json!({}));
    });
    bench(&mut c, "vm/capture/windows", || {
        std::hint::black_box(desktop.capture().unwrap());
    });
    let mut rgb = Vec::new();
    bench(&mut c, "vm/to_rgb/windows", || {
        desktop.capture().unwrap().to_rgb(&mut rgb);
    });
    let settings = [
        ("auto", Compression::Auto),
        ("fastest", Compression::Fastest),
        ("zlib2", Compression::Zlib(2)),
        ("zlib1", Compression::Zlib(1)),
    ];
    encodings(&mut c, "windows", &rgb, &settings);

    // A photo-like desktop: the windows closed, a noisy picture as the wallpaper.
    drop(clients);
    desktop.set_wallpaper(&photo(), WIDTH, HEIGHT).unwrap();
    let shot = call("vm:screenshot", json!({}));
    println!("vm:screenshot, photo: base64 {} KB", shot["image"].as_str().unwrap().len() / 1024);
    bench(&mut c, "vm/screenshot/photo", || {
        call("vm:screenshot", json!({}));
    });
    desktop.capture().unwrap().to_rgb(&mut rgb);
    encodings(&mut c, "photo", &rgb, &settings[..3]);

    // The usual agent's screen: windows over a photo wallpaper.
    let clients = terminals(&mut desktop);
    let shot = call("vm:screenshot", json!({}));
    println!("vm:screenshot, photo with windows: base64 {} KB", shot["image"].as_str().unwrap().len() / 1024);
    bench(&mut c, "vm/screenshot/photo_with_windows", || {
        call("vm:screenshot", json!({}));
    });
    desktop.capture().unwrap().to_rgb(&mut rgb);
    println!("auto picks {:?} for photo with windows", agentflow_vm::choose(&rgb, WIDTH, HEIGHT));
    drop(clients);

    let mut i = 0i64;
    bench(&mut c, "vm/move", || {
        i += 1;
        call("vm:move", json!({"x": 100 + i % 500, "y": 200}));
    });
    bench(&mut c, "vm/click", || {
        i += 1;
        call("vm:click", json!({"x": 100 + i % 500, "y": 300}));
    });

    drop(desktop);
    rt.block_on(engine.shutdown(false, true));
    drop(server);
    accessibility(&rt, &mut c);
    c.final_summary();
}

/// The accessibility tree of `gtk3-widget-factory` (about 260 objects) on a private desktop with
/// its buses, through the engine; and what the buses add to a session's start.
fn accessibility(rt: &tokio::runtime::Runtime, c: &mut Criterion) {
    let _runtime = rt.enter();
    let engine = Engine::builder().backend(Arc::new(VmBackend::new(serde_json::Map::new()).unwrap())).build().unwrap();
    let create = |worker: &str, config: Value| {
        let req: CreateSessionRequest =
            serde_json::from_value(json!({"worker_id": worker, "resource_type": "vm", "config": config})).unwrap();
        let answer = rt.block_on(engine.create_session(req));
        assert_eq!(answer.code, 0, "{answer:?}");
    };
    create("tree", json!({"startup": ["gtk3-widget-factory"]}));
    let tree = || {
        let answer = rt.block_on(engine.execute("tree", "vm:accessibility_tree", json!({})));
        assert_eq!(answer.code, 0, "{answer:?}");
        answer.data
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut data = tree();
    while data["nodes"].as_u64().unwrap() < 250 {
        assert!(Instant::now() < deadline, "gtk3-widget-factory (Debian: gtk-3-examples) did not show: {data}");
        std::thread::sleep(Duration::from_millis(200));
        data = tree();
    }
    println!(
        "vm:accessibility_tree of gtk3-widget-factory: {} nodes, {} bytes of XML",
        data["nodes"],
        data["accessibility_tree"].as_str().unwrap().len()
    );
    bench(c, "vm/accessibility_tree/widget_factory", || {
        tree();
    });
    rt.block_on(engine.destroy_worker("tree"));

    // A session's start alone (its destroy is not timed): a bare Xvfb, then with the buses.
    let mut n = 0;
    for (name, config) in
        [("vm/session_start/bare", json!({"accessibility": false})), ("vm/session_start/buses", json!({}))]
    {
        let mut samples = Vec::new();
        c.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    n += 1;
                    let worker = format!("start-{n}");
                    let start = Instant::now();
                    create(&worker, config.clone());
                    let took = start.elapsed();
                    rt.block_on(engine.destroy_worker(&worker));
                    samples.push(took);
                    total += took;
                }
                total
            })
        });
        percentiles(name, &mut samples, "starts");
    }
    rt.block_on(engine.shutdown(false, true));
}
