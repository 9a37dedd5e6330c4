//! Tests of [`Desktop`] on real Xvfb servers, checked with independent X clients (`xsetroot`,
//! `xdotool`, `xmodmap`, `xdpyinfo`). Tests of the engine's tools are in the root crate's
//! `tests/vm.rs`.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Button, Desktop, DisplayName, Error, Key};

/// An X client on `display`, presenting the cookie in `xauthority` (none: an Xauthority file
/// that does not exist, so `~/.Xauthority` is not read either).
fn x_command(display: &str, xauthority: Option<&Path>, program: &str) -> Command {
    let mut command = Command::new(program);
    command
        .env("DISPLAY", display)
        .env("XAUTHORITY", xauthority.unwrap_or(Path::new("/nonexistent/Xauthority")))
        .stdin(Stdio::null());
    command
}

/// Runs an X client and returns its stdout; panics (loudly naming the package) if it is missing
/// or fails.
fn run(mut command: Command, args: &[&str]) -> String {
    let program = command.get_program().to_string_lossy().into_owned();
    let out = command
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} (install x11-utils, x11-xserver-utils, xdotool): {e}"));
    assert!(out.status.success(), "{program} {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs an X client on a display started by hand (no authorization).
fn x_client(display: &str, program: &str, args: &[&str]) -> String {
    run(x_command(display, None, program), args)
}

/// Runs an X client on a desktop's private display, with its cookie.
fn on(desktop: &Desktop, program: &str, args: &[&str]) -> String {
    run(x_command(desktop.display(), desktop.xauthority(), program), args)
}

fn process_exists(pid: u32) -> bool {
    // Signal 0 checks for the process; a reaped child is gone (ESRCH).
    unsafe { libc::kill(pid as libc::pid_t, 0) == 0 }
}

/// A display someone else runs: a bare Xvfb started by the test.
struct Foreign {
    child: std::process::Child,
    display: String,
}

impl Foreign {
    fn start() -> Foreign {
        // The bare Xvfb: its number comes from -displayfd on stdout.
        let _serial = crate::StartGuard::acquire();
        let mut child = Command::new("Xvfb")
            // -noreset: without it Xvfb resets when its last client leaves, and connections made
            // during the reset fail ("unable to open display").
            .args(["-displayfd", "1", "-screen", "0", "640x480x24", "-nolisten", "tcp", "-noreset"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("Xvfb (package xvfb)");
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(child.stdout.take().unwrap()), &mut line).unwrap();
        let display = format!(":{}", line.trim());
        // Ready by -displayfd; still, under load, allow the first connection a few tries.
        let deadline = Instant::now() + Duration::from_secs(5);
        while !Command::new("xdpyinfo").env("DISPLAY", &display).output().is_ok_and(|o| o.status.success()) {
            assert!(Instant::now() < deadline, "Xvfb {display} never accepted a connection");
            std::thread::sleep(Duration::from_millis(20));
        }
        Foreign { child, display }
    }
}

impl Drop for Foreign {
    fn drop(&mut self) {
        // SIGTERM: Xvfb removes its socket and lock file (SIGKILL would leave them stale).
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

#[test]
fn screenshot_shows_the_root_colour_at_the_screen_size_and_dropping_stops_xvfb() {
    let mut desktop = Desktop::start(320, 200, 24).unwrap();
    assert!(desktop.shared_memory(), "a local Xvfb shares memory");
    on(&desktop, "xsetroot", &["-solid", "#ff0000"]);
    let frame = desktop.capture().unwrap();
    assert_eq!((frame.width(), frame.height()), (320, 200));
    let mut rgb = Vec::new();
    frame.to_rgb(&mut rgb);
    assert!(rgb.chunks(3).all(|p| p == [255, 0, 0]), "every pixel is red");
    let shot = desktop.screenshot().unwrap();
    let decoded = image::load_from_memory(&shot.png).unwrap().to_rgb8();
    assert_eq!(decoded.dimensions(), (320, 200));
    assert_eq!(decoded.get_pixel(319, 199).0, [255, 0, 0]);

    let pid = desktop.server_pid().unwrap();
    let display = desktop.display().to_owned();
    assert!(process_exists(pid));
    drop(desktop);
    assert!(!process_exists(pid), "Xvfb {pid} is stopped and reaped");
    let lock = format!("/tmp/.X{}-lock", &display[1..]);
    assert!(!std::path::Path::new(&lock).exists(), "{lock} is removed");
}

#[test]
fn a_16_bit_screen_reads_as_rgb() {
    let mut desktop = Desktop::start(64, 48, 16).unwrap();
    assert_eq!(desktop.depth(), 16);
    on(&desktop, "xsetroot", &["-solid", "#00ff00"]);
    let frame = desktop.capture().unwrap();
    assert_eq!(frame.pixel(63, 47), [0, 255, 0]);
}

#[test]
fn the_pointer_goes_where_it_is_sent() {
    let mut desktop = Desktop::start(640, 480, 24).unwrap();
    desktop.move_to(123, 321).unwrap();
    let seen = on(&desktop, "xdotool", &["getmouselocation", "--shell"]);
    assert!(seen.contains("X=123\n") && seen.contains("Y=321\n"), "{seen}");
    assert_eq!(desktop.pointer().unwrap(), (123, 321));
    desktop.drag((10, 10), (600, 400)).unwrap();
    assert_eq!(desktop.pointer().unwrap(), (600, 400));
    match desktop.move_to(640, 0) {
        Err(Error::OutOfScreen { x: 640, y: 0, width: 640, height: 480 }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn an_attached_display_is_left_running_with_its_keymap_restored() {
    let foreign = Foreign::start();
    let keymap_before = x_client(&foreign.display, "xmodmap", &["-pke"]);
    let mut desktop = Desktop::attach(&foreign.display).unwrap();
    assert_eq!(desktop.server_pid(), None);
    assert_eq!(desktop.size(), (640, 480));
    desktop.type_text("é✓").unwrap();
    let keymap_during = x_client(&foreign.display, "xmodmap", &["-pke"]);
    assert!(keymap_during.contains("eacute"), "é is bound while the desktop lives");
    desktop.mouse_down(Button::Left).unwrap();
    desktop.key_down(Key::parse("shift").unwrap()).unwrap();
    drop(desktop);
    x_client(&foreign.display, "xdpyinfo", &[]);
    assert_eq!(x_client(&foreign.display, "xmodmap", &["-pke"]), keymap_before, "bindings undone");
    let buttons = x_client(&foreign.display, "xdotool", &["getmouselocation", "--shell"]);
    assert!(buttons.contains("SCREEN=0"), "{buttons}");
}

#[test]
fn a_dead_server_is_reported_as_a_gone_display() {
    let mut desktop = Desktop::start(64, 48, 24).unwrap();
    let pid = desktop.server_pid().unwrap();
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    let deadline = Instant::now() + Duration::from_secs(5);
    let err = loop {
        match desktop.move_to(1, 1) {
            Err(e) => break e,
            Ok(()) if Instant::now() < deadline => continue,
            Ok(()) => panic!("the display still answers"),
        }
    };
    let display = desktop.display().to_owned();
    match err {
        Error::DisplayGone { display: d, reason } => {
            assert_eq!(d, display);
            assert!(reason.contains("Xvfb") && reason.contains("signal"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(desktop.screenshot(), Err(Error::DisplayGone { .. })));
}

#[test]
fn two_desktops_start_at_once_on_different_displays() {
    let a = std::thread::spawn(|| Desktop::start(64, 48, 24).unwrap());
    let b = std::thread::spawn(|| Desktop::start(64, 48, 24).unwrap());
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    assert_ne!(a.display(), b.display());
}

#[test]
fn a_painted_wallpaper_reads_back_pixel_for_pixel() {
    for depth in [24, 16] {
        let mut desktop = Desktop::start(97, 61, depth).unwrap();
        // A gradient with every channel moving, in 16-bit steps so that RGB565 keeps it exactly.
        let rgb: Vec<u8> = (0..61u32)
            .flat_map(|y| {
                (0..97u32).flat_map(move |x| [(x * 8 % 256) as u8, (y * 4 % 256) as u8, ((x + y) * 8 % 256) as u8])
            })
            .collect();
        desktop.set_wallpaper(&rgb, 97, 61).unwrap();
        let mut back = Vec::new();
        desktop.capture().unwrap().to_rgb(&mut back);
        if depth == 24 {
            assert_eq!(back, rgb);
        } else {
            // 5-6-5 bits: equal up to the dropped low bits.
            assert!(back.chunks(3).zip(rgb.chunks(3)).all(|(b, r)| (0..3).all(|i| b[i].abs_diff(r[i]) <= 7)));
        }
        assert!(matches!(desktop.set_wallpaper(&rgb, 98, 61), Err(Error::Image(_))));
    }
}

#[test]
fn capture_over_the_socket_matches_shared_memory() {
    let mut desktop = Desktop::start(200, 100, 24).unwrap();
    let rgb: Vec<u8> = (0..200u32 * 100 * 3).map(|i| (i * 7 % 253) as u8).collect();
    desktop.set_wallpaper(&rgb, 200, 100).unwrap();
    let (mut shared, mut socket) = (Vec::new(), Vec::new());
    desktop.capture().unwrap().to_rgb(&mut shared);
    desktop.use_socket_capture();
    assert!(!desktop.shared_memory());
    desktop.capture().unwrap().to_rgb(&mut socket);
    assert_eq!(shared, rgb);
    assert_eq!(socket, rgb);
}

#[test]
fn named_keys_shifted_characters_and_unmapped_keysyms_reach_a_window_as_their_keysyms() {
    let mut desktop = Desktop::start(400, 300, 24).unwrap();
    let log_path = std::env::temp_dir().join(format!("agentflow-vm-keys-{}.log", std::process::id()));
    let log = std::fs::File::create(&log_path).unwrap();
    let mut xev = x_command(desktop.display(), desktop.xauthority(), "xev")
        .args(["-geometry", "300x200+0+0", "-event", "keyboard"])
        .stdout(log)
        .stderr(Stdio::null())
        .spawn()
        .expect("xev (install x11-utils)");
    // Keyboard focus follows the pointer with no window manager: wait for the window to be mapped
    // under it, then press keys until xev has seen them.
    let deadline = Instant::now() + Duration::from_secs(10);
    desktop.move_to(150, 100).unwrap();
    // F13, é and KP_5 are not reachable on Xvfb's keymap (KP_5 needs NumLock): bound keycodes.
    let keys = ["enter", "f13", "A", "é", "pagedown", "num5", "decimal"];
    let expected = ["Return", "F13", "state 0x1, keycode 38 (keysym 0x41, A)", "eacute", "Next", "KP_5", "KP_Decimal"];
    let mut seen = String::new();
    while Instant::now() < deadline {
        // A harmless key first: its arrival says xev has its window under the pointer.
        desktop.key(Key::parse("shift").unwrap()).unwrap();
        seen = std::fs::read_to_string(&log_path).unwrap_or_default();
        if seen.contains("Shift_L") {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    for name in keys {
        desktop.key(Key::parse(name).unwrap()).unwrap();
    }
    while Instant::now() < deadline {
        seen = std::fs::read_to_string(&log_path).unwrap_or_default();
        if expected.iter().all(|e| seen.contains(e)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = xev.kill();
    let _ = xev.wait();
    let _ = std::fs::remove_file(&log_path);
    for e in expected {
        assert!(seen.contains(e), "xev did not see {e}:\n{seen}");
    }
}

#[test]
fn a_private_display_admits_only_clients_with_its_cookie_which_is_removed_with_it() {
    let desktop = Desktop::start(64, 48, 24).unwrap();
    let file = desktop.xauthority().expect("a private display has a cookie").to_owned();
    let dir = file.parent().unwrap().to_owned();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!((mode(&dir), mode(&file)), (0o700, 0o600));

    // Without the cookie, an X client is refused at connection setup.
    let refused = x_command(desktop.display(), None, "xdpyinfo").output().expect("xdpyinfo (install x11-utils)");
    assert!(!refused.status.success(), "a client without the cookie got in");
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("uthoriz") || said.contains("unable to open"), "{said}");
    // With it, the same client gets in.
    assert!(on(&desktop, "xdpyinfo", &[]).contains("dimensions:    64x48"));
    // And no TCP port serves the display.
    let n: u16 = desktop.display()[1..].parse().unwrap();
    assert!(std::net::TcpStream::connect(("127.0.0.1", 6000 + n)).is_err(), "Xvfb listens on TCP");

    drop(desktop);
    assert!(!file.exists() && !dir.exists(), "{} outlived its desktop", dir.display());
}

#[test]
fn attaching_to_a_private_display_of_this_process_is_refused_in_every_spelling() {
    let desktop = Desktop::start(64, 48, 24).unwrap();
    let n = desktop.display()[1..].to_owned();
    let socket = format!("/tmp/.X11-unix/X{n}");
    let link = std::env::temp_dir().join(format!("agentflow-vm-link-{}", std::process::id()));
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&socket, &link).unwrap();
    let spellings =
        [format!(":{n}"), format!(":{n}.0"), format!("unix/:{n}"), socket.clone(), link.display().to_string()];
    for name in &spellings {
        assert!(DisplayName::parse(name).unwrap().is_private(), "{name}");
        match Desktop::attach(name) {
            Err(Error::Connect { reason, .. }) => assert!(reason.contains("private"), "{name}: {reason}"),
            other => panic!("{name}: {other:?}"),
        }
    }
    drop(desktop);
    // Once stopped, the number is no longer this process's.
    assert!(!DisplayName::parse(&format!(":{n}")).unwrap().is_private());
    let _ = std::fs::remove_file(&link);
}
