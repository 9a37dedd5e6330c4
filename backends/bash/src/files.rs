//! Files in a shell's view of the file system: [`Shell::read_file`], [`Shell::write_file`] and
//! [`Shell::list_dir`], with paths relative to the shell's current directory.
//!
//! A plain shell runs as this process's user and sees the host, so its files are read and
//! written here, directly, on the blocking pool: no byte goes through the terminal and no
//! process is started. A shell under a wrapper (a [`Jail`](crate::Jail)) sees only its jail,
//! as the jail's uid: there the operation runs inside the jail, as commands of the shell
//! (`stat`, `tail | head`, `cat`, `find`), so that the jail's mounts, its uid and its
//! permissions decide what may be read or written, as for any command of the session. The
//! bytes still do not cross the terminal: a read comes back through a FIFO made in the jail's
//! scratch directory (which the jail sees read-only; a FIFO can still be written there), and a
//! write's content is put in a file there for `cat` to copy. Such an operation starts a few
//! processes in the jail (about a millisecond or two) and, like a command, waits for the shell:
//! while a kept command runs, it is refused as `bash:run` would be ([`Error::Busy`]).
//!
//! It knows nothing of the editor ([`crate::edit`]) or of JSON: the adapter composes them.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use crate::command::nonce;
use crate::pty::{read_into, records_pipe, register};
use crate::shell::{OnTimeout, Outcome, Shell};
use crate::Error;

/// What a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link (as listed; reads and writes follow it).
    Symlink,
    /// Anything else (FIFO, socket, device).
    Other,
}

impl Kind {
    /// Its name in answers: `file`, `dir`, `symlink`, `other`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Dir => "dir",
            Kind::Symlink => "symlink",
            Kind::Other => "other",
        }
    }

    fn of(t: std::fs::FileType) -> Kind {
        if t.is_symlink() {
            Kind::Symlink
        } else if t.is_dir() {
            Kind::Dir
        } else if t.is_file() {
            Kind::File
        } else {
            Kind::Other
        }
    }
}

/// A file read, or the part of it asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRead {
    /// The bytes read, from the offset asked.
    pub bytes: Vec<u8>,
    /// The whole file's size.
    pub size: u64,
    /// Its permission bits (`0o644`).
    pub mode: u32,
    /// The absolute path read, in the shell's view.
    pub path: String,
}

/// What a write left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileWritten {
    /// The file's size after the write.
    pub size: u64,
    /// Its permission bits.
    pub mode: u32,
    /// The absolute path written, in the shell's view.
    pub path: String,
}

/// How to write.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteOptions {
    /// Permission bits to set (default: those of the file, or 0644 less the umask for a new one).
    pub mode: Option<u32>,
    /// Add to the end instead of replacing the content.
    pub append: bool,
    /// Make missing parent directories.
    pub make_dirs: bool,
}

/// One entry of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// Its path relative to the directory listed.
    pub path: String,
    /// What it is (a symbolic link is listed as one, not followed).
    pub kind: Kind,
    /// Its size in bytes.
    pub size: u64,
    /// Its permission bits.
    pub mode: u32,
}

/// A directory's listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listing {
    /// The absolute path listed, in the shell's view.
    pub path: String,
    /// Its entries, sorted by path.
    pub entries: Vec<DirEntry>,
    /// Whether entries were left out past the most asked for.
    pub truncated: bool,
}

/// Why a file operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// The path cannot be used: it does not exist, is not what the operation needs, or may not
    /// be read or written; the reason says which, as the system said it.
    #[error("{path}: {reason}")]
    Path {
        /// The path, as resolved.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The file (or the part asked for) is larger than the cap.
    #[error("{path} is {size} bytes, more than the cap of {cap} bytes: read it in parts (offset, length)")]
    TooLarge {
        /// The path, as resolved.
        path: String,
        /// The bytes that would be read.
        size: u64,
        /// The cap.
        cap: u64,
    },
    /// The shell could not run the operation (busy, dead, timed out).
    #[error(transparent)]
    Shell(#[from] Error),
}

impl FileError {
    fn path(path: &Path, reason: impl std::fmt::Display) -> FileError {
        FileError::Path { path: path.display().to_string(), reason: reason.to_string() }
    }

    fn io(path: &Path, e: &std::io::Error) -> FileError {
        // "No such file or directory (os error 2)" without the number.
        let text = e.to_string();
        let reason = text.split(" (os error").next().unwrap_or(&text).to_owned();
        FileError::path(path, reason)
    }
}

impl Shell {
    /// `path` as the shell sees it: relative to its current directory, with `.` and `..`
    /// resolved by name (as `cd -L` would; symbolic links are followed when used).
    pub fn resolve(&self, path: &str) -> PathBuf {
        let joined = Path::new(self.cwd()).join(path);
        let mut out = PathBuf::from("/");
        for part in joined.components() {
            match part {
                Component::ParentDir => {
                    out.pop();
                }
                Component::Normal(name) => out.push(name),
                Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            }
        }
        out
    }

    fn jailed(&self) -> bool {
        !self.config().wrapper.is_empty()
    }

    /// Reads `length` bytes of the file at `path` from `offset` (to its end when `None`), at
    /// most `cap` bytes: a larger read is [`FileError::TooLarge`].
    pub async fn read_file(
        &mut self,
        path: &str,
        offset: u64,
        length: Option<u64>,
        cap: u64,
        timeout: Duration,
    ) -> Result<FileRead, FileError> {
        let path = self.resolve(path);
        if !self.jailed() {
            return crate::blocking(move || read_here(&path, offset, length, cap)).await?;
        }
        // The whole file's size, mode and kind, then the bytes asked for (at most cap + 1, to
        // tell a file that grew past the cap), through the FIFO. `tail` failing fails the read;
        // `tail` cut off by SIGPIPE (141) once `head` has what it needs does not.
        let want = length.unwrap_or(u64::MAX).min(cap.saturating_add(1));
        let p = quote(path.as_os_str());
        let script = |fifo: &str| {
            format!(
                "(set -o pipefail; command stat -L -c '%s %a %F' -- {p} && \
                 {{ [ ! -d {p} ] || exit 0; }} && \
                 {{ command tail -c +{} -- {p} || [ $? -eq 141 ]; }} | command head -c {want} > {fifo})",
                offset.saturating_add(1)
            )
        };
        let (outcome, bytes) = self.through_fifo(script, cap.saturating_add(1), timeout).await?;
        let stat = jail_stat(&path, &outcome)?;
        if stat.kind != Kind::File {
            return Err(FileError::path(&path, "not a regular file"));
        }
        check_read(&path, stat.size, offset, length, cap)?;
        if bytes.len() as u64 > cap {
            return Err(FileError::TooLarge { path: path.display().to_string(), size: bytes.len() as u64, cap });
        }
        Ok(FileRead { bytes, size: stat.size, mode: stat.mode, path: path.display().to_string() })
    }

    /// Writes `bytes` to the file at `path` (made if missing), replacing its content or, with
    /// `append`, after it; exactly those bytes.
    pub async fn write_file(
        &mut self,
        path: &str,
        bytes: Vec<u8>,
        options: WriteOptions,
        timeout: Duration,
    ) -> Result<FileWritten, FileError> {
        let path = self.resolve(path);
        if !self.jailed() {
            return crate::blocking(move || write_here(&path, &bytes, options)).await?;
        }
        let scratch =
            self.config().scratch_dir.clone().ok_or_else(|| Error::Spawn("a jail has no scratch directory".into()))?;
        let input = scratch.join(format!("in-{}", &nonce()[..12]));
        let owner = input.clone();
        crate::blocking(move || -> std::io::Result<()> {
            let uid = std::fs::metadata(owner.parent().expect("in the scratch directory"))?.uid();
            let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&owner)?;
            std::io::Write::write_all(&mut file, &bytes)?;
            std::os::unix::fs::fchown(&file, Some(uid), Some(uid))
        })
        .await?
        .map_err(|e| FileError::io(&input, &e))?;
        let p = quote(path.as_os_str());
        let mut steps = Vec::new();
        if options.make_dirs {
            steps.push(format!("command mkdir -p -- \"$(command dirname -- {p})\""));
        }
        steps.push(format!(
            "command cat -- {} {} {p}",
            quote(input.as_os_str()),
            if options.append { ">>" } else { ">" }
        ));
        if let Some(mode) = options.mode {
            steps.push(format!("command chmod {mode:o} -- {p}"));
        }
        steps.push(format!("command stat -L -c '%s %a %F' -- {p}"));
        let outcome = self.run(&format!("({})", steps.join(" && ")), timeout, OnTimeout::Interrupt).await;
        let _ = std::fs::remove_file(&input);
        let outcome = finished(outcome?)?;
        let stat = jail_stat(&path, &outcome)?;
        Ok(FileWritten { size: stat.size, mode: stat.mode, path: path.display().to_string() })
    }

    /// Lists the directory at `path`, `depth` levels down (1: its own entries), at most `max`
    /// entries.
    pub async fn list_dir(
        &mut self,
        path: &str,
        depth: u32,
        max: usize,
        timeout: Duration,
    ) -> Result<Listing, FileError> {
        let path = self.resolve(path);
        let depth = depth.max(1);
        if !self.jailed() {
            return crate::blocking(move || list_here(&path, depth, max)).await?;
        }
        let p = quote(path.as_os_str());
        let script = |fifo: &str| {
            format!(
                "(command stat -L -c '%s %a %F' -- {p} && {{ [ -d {p} ] || exit 0; }} && \
                 command find {p}/ -mindepth 1 -maxdepth {depth} -printf '%y %s %m %P\\0' > {fifo})"
            )
        };
        // Enough for `max` entries of ordinary names; past it the listing is cut.
        let budget = (max as u64).saturating_mul(256).max(64 << 10);
        let (outcome, bytes) = self.through_fifo(script, budget, timeout).await?;
        let stat = jail_stat(&path, &outcome)?;
        if stat.kind != Kind::Dir {
            return Err(FileError::path(&path, "not a directory"));
        }
        let mut entries = Vec::new();
        let complete = bytes.len() as u64 <= budget;
        let mut records: Vec<&[u8]> = bytes.split(|&b| b == 0).collect();
        // The last piece follows the last NUL: empty, or cut short.
        records.pop();
        for record in records {
            let text = String::from_utf8_lossy(record);
            let mut parts = text.splitn(4, ' ');
            let (Some(kind), Some(size), Some(mode), Some(name)) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let kind = match kind {
                "f" => Kind::File,
                "d" => Kind::Dir,
                "l" => Kind::Symlink,
                _ => Kind::Other,
            };
            entries.push(DirEntry {
                path: name.to_owned(),
                kind,
                size: size.parse().unwrap_or(0),
                mode: u32::from_str_radix(mode, 8).unwrap_or(0),
            });
        }
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        let truncated = !complete || entries.len() > max;
        entries.truncate(max);
        Ok(Listing { path: path.display().to_string(), entries, truncated })
    }

    /// Runs the command `script` makes of a FIFO's path (in the jail's scratch directory) and
    /// reads what is written to the FIFO meanwhile, keeping at most `cap` + 1 bytes (the rest is
    /// read and dropped, so that the writer never waits).
    async fn through_fifo(
        &mut self,
        script: impl FnOnce(&str) -> String,
        cap: u64,
        timeout: Duration,
    ) -> Result<(Outcome, Vec<u8>), FileError> {
        let scratch =
            self.config().scratch_dir.clone().ok_or_else(|| Error::Spawn("a jail has no scratch directory".into()))?;
        let fifo = scratch.join(format!("out-{}", &nonce()[..12]));
        let made = (scratch.clone(), fifo.clone());
        let (read, write) =
            crate::blocking(move || records_pipe(&made.0, &made.1)).await?.map_err(|e| FileError::io(&fifo, &e))?;
        // Our writing end stays open while the command runs: reading never sees an end of file
        // before the command's writer has opened the FIFO (nor a hang-up after an early close
        // of ours); the command's end is the run's, after which the rest is drained.
        let read = register(read, tokio::io::Interest::READABLE).map_err(|e| FileError::io(&fifo, &e))?;
        let command = script(&quote(fifo.as_os_str()));
        let mut bytes = Vec::new();
        let mut chunk = vec![0u8; 64 << 10];
        let mut eof = false;
        let outcome = {
            let run = self.run(&command, timeout, OnTimeout::Interrupt);
            tokio::pin!(run);
            loop {
                tokio::select! {
                    outcome = &mut run => break outcome,
                    ready = read.readable(), if !eof => {
                        let Ok(mut ready) = ready else { eof = true; continue };
                        match ready.try_io(|fd| read_into(fd.get_ref(), &mut chunk)) {
                            Ok(Ok(0)) => eof = true,
                            Ok(Ok(n)) => keep(&mut bytes, &chunk[..n], cap),
                            Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
                            Ok(Err(_)) => eof = true,
                            Err(_would_block) => {}
                        }
                    }
                }
            }
        };
        // What the command wrote before it ended is in the pipe.
        drop(write);
        while !eof {
            match read_into(read.get_ref(), &mut chunk) {
                Ok(n) if n > 0 => keep(&mut bytes, &chunk[..n], cap),
                _ => eof = true,
            }
        }
        let _ = std::fs::remove_file(&fifo);
        Ok((finished(outcome?)?, bytes))
    }
}

/// A command's outcome, if it finished within its timeout.
fn finished(outcome: Outcome) -> Result<Outcome, FileError> {
    if outcome.timed_out {
        return Err(FileError::Shell(Error::Io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("the file operation did not finish within its timeout ({:.3}s)", outcome.duration.as_secs_f64()),
        ))));
    }
    Ok(outcome)
}

fn keep(bytes: &mut Vec<u8>, chunk: &[u8], cap: u64) {
    let room = (cap.saturating_add(1) as usize).saturating_sub(bytes.len());
    bytes.extend_from_slice(&chunk[..chunk.len().min(room)]);
}

/// `stat -L -c '%s %a %F'` as the jailed command printed it (its last line), or the error it
/// printed instead.
struct Stat {
    size: u64,
    mode: u32,
    kind: Kind,
}

fn jail_stat(path: &Path, outcome: &Outcome) -> Result<Stat, FileError> {
    let text = outcome.output.trim();
    let parsed = (outcome.exit_code == Some(0)).then(|| text.lines().last()).flatten().and_then(|line| {
        let mut parts = line.splitn(3, ' ');
        let size = parts.next()?.parse().ok()?;
        let mode = u32::from_str_radix(parts.next()?, 8).ok()?;
        let kind = match parts.next()? {
            "regular file" | "regular empty file" => Kind::File,
            "directory" => Kind::Dir,
            _ => Kind::Other,
        };
        Some(Stat { size, mode, kind })
    });
    parsed.ok_or_else(|| {
        // "stat: cannot statx '/x': No such file or directory" → the reason after the last ": ".
        let reason = text.lines().last().and_then(|l| l.rsplit(": ").next()).filter(|r| !r.is_empty());
        FileError::path(path, reason.unwrap_or("the operation failed"))
    })
}

/// `text` as one word for the shell.
fn quote(text: &OsStr) -> String {
    format!("'{}'", String::from_utf8_lossy(text.as_bytes()).replace('\'', "'\\''"))
}

fn check_read(path: &Path, size: u64, offset: u64, length: Option<u64>, cap: u64) -> Result<(), FileError> {
    let wanted = length.unwrap_or(u64::MAX).min(size.saturating_sub(offset));
    if wanted > cap {
        return Err(FileError::TooLarge { path: path.display().to_string(), size: wanted, cap });
    }
    Ok(())
}

fn read_here(path: &Path, offset: u64, length: Option<u64>, cap: u64) -> Result<FileRead, FileError> {
    use std::io::{Read, Seek, SeekFrom};
    // Non-blocking: a FIFO's open must not wait for a writer (it is refused below).
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| FileError::io(path, &e))?;
    let meta = file.metadata().map_err(|e| FileError::io(path, &e))?;
    if !meta.is_file() {
        return Err(FileError::path(path, "not a regular file"));
    }
    check_read(path, meta.len(), offset, length, cap)?;
    if offset > 0 {
        file.seek(SeekFrom::Start(offset)).map_err(|e| FileError::io(path, &e))?;
    }
    let want = length.unwrap_or(u64::MAX).min(cap.saturating_add(1));
    let mut bytes = Vec::with_capacity(meta.len().saturating_sub(offset).min(want) as usize);
    file.take(want).read_to_end(&mut bytes).map_err(|e| FileError::io(path, &e))?;
    if bytes.len() as u64 > cap {
        // It grew since it was looked at.
        return Err(FileError::TooLarge { path: path.display().to_string(), size: bytes.len() as u64, cap });
    }
    Ok(FileRead { bytes, size: meta.len(), mode: meta.permissions().mode() & 0o7777, path: path.display().to_string() })
}

fn write_here(path: &Path, bytes: &[u8], options: WriteOptions) -> Result<FileWritten, FileError> {
    use std::io::Write;
    if options.make_dirs {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| FileError::io(parent, &e))?;
        }
    }
    if std::fs::metadata(path).is_ok_and(|m| !m.is_file()) {
        return Err(FileError::path(path, "not a regular file"));
    }
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create(true);
    if options.append {
        open.append(true);
    } else {
        open.truncate(true);
    }
    let mut file = open.open(path).map_err(|e| FileError::io(path, &e))?;
    file.write_all(bytes).map_err(|e| FileError::io(path, &e))?;
    if let Some(mode) = options.mode {
        file.set_permissions(std::fs::Permissions::from_mode(mode)).map_err(|e| FileError::io(path, &e))?;
    }
    let meta = file.metadata().map_err(|e| FileError::io(path, &e))?;
    Ok(FileWritten { size: meta.len(), mode: meta.permissions().mode() & 0o7777, path: path.display().to_string() })
}

fn list_here(path: &Path, depth: u32, max: usize) -> Result<Listing, FileError> {
    let meta = std::fs::metadata(path).map_err(|e| FileError::io(path, &e))?;
    if !meta.is_dir() {
        return Err(FileError::path(path, "not a directory"));
    }
    let mut entries = Vec::new();
    let mut truncated = false;
    // Breadth first, so that a cut keeps the upper levels.
    let mut queue = std::collections::VecDeque::from([(path.to_path_buf(), String::new(), 1u32)]);
    while let Some((dir, prefix, level)) = queue.pop_front() {
        let Ok(read) = std::fs::read_dir(&dir) else { continue };
        for entry in read.flatten() {
            if entries.len() >= max {
                truncated = true;
                break;
            }
            let Ok(meta) = entry.metadata() else { continue };
            let name = format!("{prefix}{}", entry.file_name().to_string_lossy());
            let kind = Kind::of(meta.file_type());
            if kind == Kind::Dir && level < depth {
                queue.push_back((entry.path(), format!("{name}/"), level + 1));
            }
            entries.push(DirEntry { path: name, kind, size: meta.len(), mode: meta.permissions().mode() & 0o7777 });
        }
        if truncated {
            break;
        }
    }
    entries.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Listing { path: path.display().to_string(), entries, truncated })
}
