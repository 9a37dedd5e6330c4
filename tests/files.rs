//! Integration tests of the file tools of the bash resource (`bash:read_file`, `bash:write_file`,
//! `bash:list_dir`, `bash:edit`), through the [`Engine`] as a coding agent calls them, on real
//! shells, plain and jailed. What was written is checked on the host's file system with
//! `std::fs`, independently of the tools; what a jail may not touch is set up on the host.
//! The jailed tests need `bwrap` (bubblewrap).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use agentflow_sandbox::backends::bash::BashBackend;
use agentflow_sandbox::{Engine, Envelope};
use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use serde_json::{json, Map, Value};

use crate::common::{command_ok, create_session, host_dir, jail_engine, jailed, need, run_command, temp_dir};

fn engine() -> Engine {
    Engine::builder().backend(Arc::new(BashBackend::new(Map::new()).unwrap())).build().unwrap()
}

async fn call(engine: &Engine, worker: &str, tool: &str, params: Value) -> Envelope {
    engine.execute(worker, &format!("bash:{tool}"), params).await
}

async fn ok(engine: &Engine, worker: &str, tool: &str, params: Value) -> Value {
    let e = call(engine, worker, tool, params.clone()).await;
    assert_eq!(e.code, 0, "bash:{tool} {params}: {} {}", e.message, e.data);
    e.data
}

/// The parameter a 1002 names, and its message.
async fn refused(engine: &Engine, worker: &str, tool: &str, params: Value) -> (String, String) {
    let e = call(engine, worker, tool, params.clone()).await;
    assert_eq!(e.code, 1002, "bash:{tool} {params} was not refused: {} {}", e.message, e.data);
    (e.data["field"].as_str().unwrap_or_default().to_owned(), e.message)
}

fn all_bytes() -> Vec<u8> {
    (0..=255u8).chain((0..=255u8).rev()).collect()
}

#[tokio::test]
async fn binary_files_round_trip_byte_for_byte() {
    let engine = engine();
    let dir = temp_dir("files-binary");
    assert_eq!(create_session(&engine, "bin", "bash", json!({"cwd": dir.display().to_string()})).await.code, 0);
    let bytes = all_bytes();
    let wrote = ok(
        &engine,
        "bin",
        "write_file",
        json!({"path": "all.bin", "content": BASE64.encode(&bytes), "encoding": "base64", "mode": "0640"}),
    )
    .await;
    assert_eq!((wrote["bytes_written"].as_u64(), wrote["size"].as_u64()), (Some(512), Some(512)), "{wrote}");
    // The host sees exactly those bytes, with the mode asked for.
    let on_disk = dir.join("all.bin");
    assert_eq!(std::fs::read(&on_disk).unwrap(), bytes);
    assert_eq!(std::fs::metadata(&on_disk).unwrap().permissions().mode() & 0o7777, 0o640);
    let read = ok(&engine, "bin", "read_file", json!({"path": "all.bin", "encoding": "base64"})).await;
    assert_eq!(BASE64.decode(read["content"].as_str().unwrap()).unwrap(), bytes);
    assert_eq!(
        (read["size"].as_u64(), read["mode"].as_str(), read["eof"].as_bool()),
        (Some(512), Some("0640"), Some(true))
    );
    // A part of it.
    let part =
        ok(&engine, "bin", "read_file", json!({"path": "all.bin", "offset": 250, "length": 10, "encoding": "base64"}))
            .await;
    assert_eq!(BASE64.decode(part["content"].as_str().unwrap()).unwrap(), &bytes[250..260]);
    assert_eq!(part["eof"], json!(false));
    // Read as text, it is refused with the way to read it.
    let (field, message) = refused(&engine, "bin", "read_file", json!({"path": "all.bin"})).await;
    assert_eq!(field, "encoding");
    assert!(message.contains("base64"), "{message}");
    // Text keeps its bytes too: no newline added, CR and tabs kept; append adds at the end.
    ok(&engine, "bin", "write_file", json!({"path": "sub/dir/t.txt", "content": "a\tb\r\nc", "make_dirs": true})).await;
    ok(&engine, "bin", "write_file", json!({"path": "sub/dir/t.txt", "content": "é", "append": true})).await;
    assert_eq!(std::fs::read(dir.join("sub/dir/t.txt")).unwrap(), "a\tb\r\ncé".as_bytes());
    let text = ok(&engine, "bin", "read_file", json!({"path": "sub/dir/t.txt"})).await;
    assert_eq!(text["content"], json!("a\tb\r\ncé"));
    // Mistakes name their parameter.
    assert_eq!(refused(&engine, "bin", "read_file", json!({"path": "missing.txt"})).await.0, "path");
    assert_eq!(refused(&engine, "bin", "read_file", json!({"path": "sub"})).await.0, "path");
    assert_eq!(refused(&engine, "bin", "write_file", json!({"path": "x/y/z", "content": ""})).await.0, "path");
    assert_eq!(
        refused(&engine, "bin", "write_file", json!({"path": "m", "content": "", "mode": "rwx"})).await.0,
        "mode"
    );
    assert_eq!(
        refused(&engine, "bin", "write_file", json!({"path": "m", "content": "%%", "encoding": "base64"})).await.0,
        "content"
    );
    let (_, message) = refused(&engine, "bin", "read_file", json!({"path": "all.bin", "encoding": "latin-1"})).await;
    assert!(message.contains("encoding"), "{message}");
    engine.shutdown(false, true).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn paths_follow_the_shell_and_listings_go_down_as_asked() {
    let engine = engine();
    let dir = temp_dir("files-cwd");
    std::fs::create_dir_all(dir.join("a/b/c")).unwrap();
    std::fs::write(dir.join("a/one.txt"), "1").unwrap();
    std::fs::write(dir.join("a/b/two.txt"), "22").unwrap();
    std::fs::write(dir.join("a/.hidden"), "").unwrap();
    assert_eq!(create_session(&engine, "cwd", "bash", json!({})).await.code, 0);
    command_ok(&engine, "cwd", &format!("cd {}/a", dir.display())).await;
    // Relative to where the shell is now, `..` included.
    ok(&engine, "cwd", "write_file", json!({"path": "b/../new.txt", "content": "here"})).await;
    assert_eq!(std::fs::read_to_string(dir.join("a/new.txt")).unwrap(), "here");
    let listing = ok(&engine, "cwd", "list_dir", json!({})).await;
    assert_eq!(listing["path"], json!(format!("{}/a", dir.display())));
    let names: Vec<(&str, &str)> = listing["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["path"].as_str().unwrap(), e["type"].as_str().unwrap()))
        .collect();
    assert_eq!(names, [(".hidden", "file"), ("b", "dir"), ("new.txt", "file"), ("one.txt", "file")]);
    let deep = ok(&engine, "cwd", "list_dir", json!({"path": "..", "depth": 3})).await;
    let paths: Vec<&str> = deep["entries"].as_array().unwrap().iter().map(|e| e["path"].as_str().unwrap()).collect();
    assert!(
        paths.contains(&"a/b/two.txt") && paths.contains(&"a/b/c") && !paths.iter().any(|p| p.starts_with("a/b/c/")),
        "{paths:?}"
    );
    let two = deep["entries"].as_array().unwrap().iter().find(|e| e["path"] == "a/b/two.txt").unwrap();
    assert_eq!(two["size"], json!(2));
    assert_eq!(refused(&engine, "cwd", "list_dir", json!({"path": "one.txt"})).await.0, "path");
    assert_eq!(refused(&engine, "cwd", "list_dir", json!({"depth": 0})).await.0, "depth");
    engine.shutdown(false, true).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn str_replace_changes_only_its_span_and_undo_goes_back_twice() {
    let engine = engine();
    let dir = temp_dir("files-edit");
    assert_eq!(create_session(&engine, "ed", "bash", json!({"cwd": dir.display().to_string()})).await.code, 0);
    // CRLF line ends, tabs, and no final line break.
    let original = b"first\tline\r\n\tindented = 1\r\nmiddle\r\n\tindented = 1\r\nlast line".to_vec();
    let file = dir.join("crlf.txt");
    std::fs::write(&file, &original).unwrap();
    let shown = file.display().to_string();
    let out = ok(
        &engine,
        "ed",
        "edit",
        json!({"command": "str_replace", "path": "crlf.txt", "old_str": "middle", "new_str": "centre"}),
    )
    .await;
    let after_one = b"first\tline\r\n\tindented = 1\r\ncentre\r\n\tindented = 1\r\nlast line".to_vec();
    assert_eq!(std::fs::read(&file).unwrap(), after_one);
    let output = out["output"].as_str().unwrap();
    assert!(output.starts_with(&format!("The file {shown} has been edited.")), "{output}");
    assert!(output.contains("     3\tcentre\n"), "{output}");
    // Zero and two occurrences: nothing written, and the lines of both are named.
    let (field, message) =
        refused(&engine, "ed", "edit", json!({"command": "str_replace", "path": "crlf.txt", "old_str": "absent"}))
            .await;
    assert_eq!(field, "old_str");
    assert!(message.contains("did not appear verbatim"), "{message}");
    let (field, message) = refused(
        &engine,
        "ed",
        "edit",
        json!({"command": "str_replace", "path": "crlf.txt", "old_str": "\tindented = 1"}),
    )
    .await;
    assert_eq!(field, "old_str");
    assert!(message.contains("[2, 4]"), "{message}");
    assert_eq!(std::fs::read(&file).unwrap(), after_one);
    // A second edit, an insert, keeps the file's CRLF.
    ok(
        &engine,
        "ed",
        "edit",
        json!({"command": "insert", "path": "crlf.txt", "insert_line": 1, "new_str": "inserted"}),
    )
    .await;
    let after_two = b"first\tline\r\ninserted\r\n\tindented = 1\r\ncentre\r\n\tindented = 1\r\nlast line".to_vec();
    assert_eq!(std::fs::read(&file).unwrap(), after_two);
    // Undo twice, back to the original bytes; a third has nothing left.
    let undone = ok(&engine, "ed", "edit", json!({"command": "undo_edit", "path": "crlf.txt"})).await;
    assert!(undone["output"].as_str().unwrap().contains("undone successfully"), "{undone}");
    assert_eq!(std::fs::read(&file).unwrap(), after_one);
    ok(&engine, "ed", "edit", json!({"command": "undo_edit", "path": "crlf.txt"})).await;
    assert_eq!(std::fs::read(&file).unwrap(), original);
    assert_eq!(refused(&engine, "ed", "edit", json!({"command": "undo_edit", "path": "crlf.txt"})).await.0, "path");
    // create: a new file (its directories made), never over an existing one.
    let created =
        ok(&engine, "ed", "edit", json!({"command": "create", "path": "pkg/mod.py", "file_text": "x = 1\n"})).await;
    assert!(created["output"].as_str().unwrap().contains("created successfully"), "{created}");
    assert_eq!(std::fs::read_to_string(dir.join("pkg/mod.py")).unwrap(), "x = 1\n");
    assert_eq!(
        refused(&engine, "ed", "edit", json!({"command": "create", "path": "pkg/mod.py", "file_text": ""})).await.0,
        "path"
    );
    assert_eq!(refused(&engine, "ed", "edit", json!({"command": "create", "path": "other.py"})).await.0, "file_text");
    assert_eq!(
        refused(&engine, "ed", "edit", json!({"command": "insert", "path": "crlf.txt", "new_str": "x"})).await.0,
        "insert_line"
    );
    let (_, message) = refused(&engine, "ed", "edit", json!({"command": "fly", "path": "crlf.txt"})).await;
    assert!(message.contains("command"), "{message}");
    engine.shutdown(false, true).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn view_shows_numbered_lines_of_a_range_and_directories_two_deep() {
    let engine = engine();
    let dir = temp_dir("files-view");
    let text: String = (1..=10_000).map(|i| format!("line {i}\n")).collect();
    std::fs::write(dir.join("long.txt"), text).unwrap();
    std::fs::create_dir_all(dir.join("src/deep/deeper")).unwrap();
    std::fs::write(dir.join("src/deep/deeper/far.rs"), "").unwrap();
    std::fs::write(dir.join(".secret"), "").unwrap();
    assert_eq!(create_session(&engine, "view", "bash", json!({"cwd": dir.display().to_string()})).await.code, 0);
    let started = Instant::now();
    let out =
        ok(&engine, "view", "edit", json!({"command": "view", "path": "long.txt", "view_range": [5000, 5002]})).await;
    let output = out["output"].as_str().unwrap();
    assert!(output.ends_with("  5000\tline 5000\n  5001\tline 5001\n  5002\tline 5002\n"), "{output}");
    assert_eq!(output.lines().count(), 4, "{output}");
    eprintln!("view of 3 lines of a 10,000-line file took {:?}", started.elapsed());
    let (field, _) =
        refused(&engine, "view", "edit", json!({"command": "view", "path": "long.txt", "view_range": [0, 5]})).await;
    assert_eq!(field, "view_range");
    // A whole view is cut to the session's max_output_bytes, saying so.
    let whole = ok(&engine, "view", "edit", json!({"command": "view", "path": "long.txt"})).await;
    let whole = whole["output"].as_str().unwrap();
    assert!(whole.len() <= 128 * 1024 && whole.ends_with("</NOTE>"), "{} bytes", whole.len());
    let listing = ok(&engine, "view", "edit", json!({"command": "view", "path": "."})).await;
    let listing = listing["output"].as_str().unwrap();
    assert!(listing.contains("src/deep") && !listing.contains("deeper") && !listing.contains(".secret"), "{listing}");
    assert!(listing.contains("hidden"), "{listing}");
    engine.shutdown(false, true).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn file_sizes_are_capped_and_a_session_cannot_raise_the_cap_past_the_operators() {
    let engine = engine();
    let dir = temp_dir("files-cap");
    std::fs::write(dir.join("big.bin"), vec![7u8; 5000]).unwrap();
    let config = json!({"cwd": dir.display().to_string(), "max_file_bytes": 4096});
    assert_eq!(create_session(&engine, "cap", "bash", config).await.code, 0);
    let (field, message) = refused(&engine, "cap", "read_file", json!({"path": "big.bin", "encoding": "base64"})).await;
    assert_eq!(field, "length");
    assert!(message.contains("5000") && message.contains("4096"), "{message}");
    // In parts, it can be read.
    let part = ok(&engine, "cap", "read_file", json!({"path": "big.bin", "offset": 4000, "encoding": "base64"})).await;
    assert_eq!(part["length"], json!(1000));
    let (field, message) =
        refused(&engine, "cap", "write_file", json!({"path": "w.bin", "content": "x".repeat(5000)})).await;
    assert_eq!(field, "content");
    assert!(message.contains("5000") && message.contains("4096"), "{message}");
    assert!(!dir.join("w.bin").exists());
    // 64 MiB is the ceiling unless the operator's policy says otherwise.
    let e = create_session(&engine, "greedy", "bash", json!({"max_file_bytes": 1u64 << 30})).await;
    assert_eq!((e.code, &e.data["field"]), (1006, &json!("max_file_bytes")), "{}", e.message);
    engine.shutdown(false, true).await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_file_call_waits_for_the_command_before_it_and_a_kept_command_keeps_running() {
    let engine = engine();
    let dir = temp_dir("files-order");
    assert_eq!(create_session(&engine, "ord", "bash", json!({"cwd": dir.display().to_string()})).await.code, 0);
    // A command that writes the file late, and a write sent while it runs: the write comes after.
    let slow = {
        let engine = engine.clone();
        tokio::spawn(async move { run_command(&engine, "ord", "sleep 0.5; echo command > f.txt", 10.0).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    ok(&engine, "ord", "write_file", json!({"path": "f.txt", "content": "tool"})).await;
    assert_eq!(slow.await.unwrap().code, 0);
    assert_eq!(std::fs::read_to_string(dir.join("f.txt")).unwrap(), "tool");
    // A kept command (a REPL) goes on running while a plain session's files are read and written.
    let e = call(&engine, "ord", "run", json!({"command": "cat", "timeout": 0.3, "on_timeout": "keep"})).await;
    assert_eq!(e.data["running"], json!(true), "{}", e.data);
    ok(&engine, "ord", "write_file", json!({"path": "g.txt", "content": "while kept"})).await;
    assert_eq!(ok(&engine, "ord", "read_file", json!({"path": "g.txt"})).await["content"], json!("while kept"));
    let echoed = ok(&engine, "ord", "write", json!({"text": "still here\n", "timeout": 2})).await;
    assert!(echoed["stdout"].as_str().unwrap().contains("still here"), "{echoed}");
    engine.shutdown(false, true).await;
    let _ = std::fs::remove_dir_all(dir);
}

/// In a jail, the tools see the jail: its work directory, its read-only host, its uid's rights.
#[tokio::test]
async fn a_jailed_session_reads_and_writes_only_what_its_jail_may() {
    need("bwrap");
    let root = temp_dir("files-jail-root");
    let engine = jail_engine(&root);
    // On the host: a root-only file and a directory the jail does not own.
    let outside = host_dir("files-jail-outside");
    let secret = outside.join("secret");
    std::fs::write(&secret, "root only").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(create_session(&engine, "jf", "bash", jailed(json!({}))).await.code, 0);
    let work = std::path::PathBuf::from(command_ok(&engine, "jf", "pwd").await.trim());
    // Binary bytes, and a file larger than a pipe's buffer, both ways.
    let bytes = all_bytes();
    ok(&engine, "jf", "write_file", json!({"path": "all.bin", "content": BASE64.encode(&bytes), "encoding": "base64"}))
        .await;
    assert_eq!(std::fs::read(work.join("all.bin")).unwrap(), bytes);
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    ok(&engine, "jf", "write_file", json!({"path": "big.bin", "content": BASE64.encode(&big), "encoding": "base64"}))
        .await;
    let read = ok(&engine, "jf", "read_file", json!({"path": "big.bin", "encoding": "base64"})).await;
    assert_eq!(BASE64.decode(read["content"].as_str().unwrap()).unwrap(), big);
    let part =
        ok(&engine, "jf", "read_file", json!({"path": "all.bin", "offset": 100, "length": 3, "encoding": "base64"}))
            .await;
    assert_eq!(BASE64.decode(part["content"].as_str().unwrap()).unwrap(), &bytes[100..103]);
    // A few bytes from the start of a large file: the reader stops early, which must not fail.
    let head = json!({"path": "big.bin", "offset": 10, "length": 5, "encoding": "base64"});
    let head = ok(&engine, "jf", "read_file", head).await;
    assert_eq!(BASE64.decode(head["content"].as_str().unwrap()).unwrap(), &big[10..15]);
    // An edit in the jail.
    ok(&engine, "jf", "write_file", json!({"path": "code.py", "content": "x = 1\ny = 2\n"})).await;
    ok(
        &engine,
        "jf",
        "edit",
        json!({"command": "str_replace", "path": "code.py", "old_str": "y = 2", "new_str": "y = 3"}),
    )
    .await;
    assert_eq!(std::fs::read_to_string(work.join("code.py")).unwrap(), "x = 1\ny = 3\n");
    // The root-only file, directly, by `..` from the work directory, and through a symlink.
    let up =
        format!("{}{}", "../".repeat(work.components().count()), secret.display().to_string().trim_start_matches('/'));
    command_ok(&engine, "jf", &format!("ln -s {} link", secret.display())).await;
    for path in [secret.display().to_string(), up, "link".to_owned()] {
        let (field, message) = refused(&engine, "jf", "read_file", json!({"path": path})).await;
        assert_eq!(field, "path");
        assert!(message.contains("Permission denied"), "{path}: {message}");
    }
    // Root's own home, which the jail's uid may not list.
    let (field, message) = refused(&engine, "jf", "list_dir", json!({"path": "/root"})).await;
    assert_eq!(field, "path");
    assert!(message.contains("Permission denied"), "{message}");
    // Writing outside the work directory: the host's file system is read-only in the jail,
    // through a symlink too, and nothing changes on the host.
    command_ok(&engine, "jf", &format!("ln -s {} out", outside.display())).await;
    for path in [outside.join("new").display().to_string(), "out/new".to_owned(), "/etc/agentflow-escape".to_owned()] {
        let (field, message) = refused(&engine, "jf", "write_file", json!({"path": path, "content": "x"})).await;
        assert_eq!(field, "path");
        assert!(message.contains("Read-only file system"), "{path}: {message}");
    }
    assert!(!outside.join("new").exists() && !Path::new("/etc/agentflow-escape").exists());
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "root only");
    // A listing of the work directory, as the jail sees it.
    let listing = ok(&engine, "jf", "list_dir", json!({})).await;
    let names: Vec<&str> = listing["entries"].as_array().unwrap().iter().map(|e| e["path"].as_str().unwrap()).collect();
    assert_eq!(names, ["all.bin", "big.bin", "code.py", "link", "out"]);
    // Destroy removes the jail's directories, the tools' FIFOs and inputs with them.
    assert_eq!(engine.destroy_session("jf", "bash").await.code, 0);
    engine.shutdown(false, true).await;
    assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0, "something is left in {}", root.display());
    let _ = std::fs::remove_dir_all(root);
    let _ = std::fs::remove_dir_all(outside);
}
