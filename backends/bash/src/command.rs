//! The text typed into the shell, and the environment it starts with.
//!
//! The shell is driven by typing lines on its terminal: the set-up typed once at start
//! ([`init_line`]: the record pipe on a descriptor of the shell's own, the readonly report
//! function run by `PROMPT_COMMAND`, no prompt, no history, pagers that print), then one line
//! per command ([`inline_line`], or [`source_line`] for a command too long to type, saved in a
//! file), each with a fresh random [`nonce`] that the report carries back, and the line that
//! only sets a new nonce ([`nonce_line`]) to learn whether the shell is at its prompt.
//!
//! The report cannot be forged by the command: the shell writes it to a pipe (a FIFO it opens
//! at start, whose name is then removed) that commands do not inherit, as each command runs
//! with that descriptor closed; a marker on the terminal then says where the output ends, and
//! counts only with a token the shell drew after the command ended (see the transcript). What
//! a command cannot do is read its own shell's memory or descriptors: a builtin of the same
//! shell, or a process of the same uid writing through `/proc/<shell>/fd`, could still write
//! a record. Agents do not do that by accident; a hostile one only fools its own session.
//!
//! It also owns the shell's [`environment`]: a clean one, never the whole of this process's.

use std::path::Path;
use std::time::Instant;

use crate::shell::ShellConfig;
use crate::transcript::MARKER_OSC;

/// Longest command (escaped) typed on the terminal; longer ones are read from a file, since a
/// terminal line holds at most 4095 bytes.
const INLINE_MAX: usize = 3800;

/// A random nonce: 128 bits, hex.
pub(crate) fn nonce() -> String {
    let mut bytes = [0u8; 16];
    let mut filled = 0;
    while filled < bytes.len() {
        // SAFETY: writes into the live remainder of `bytes`.
        let n = unsafe { libc::getrandom(bytes[filled..].as_mut_ptr().cast(), bytes.len() - filled, 0) };
        if n > 0 {
            filled += n as usize;
        } else if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            // No kernel randomness: fall back on std's randomly keyed hasher.
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(Instant::now().elapsed().as_nanos() ^ u128::from(std::process::id()));
            bytes[..8].copy_from_slice(&h.finish().to_le_bytes());
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")));
            bytes[8..].copy_from_slice(&h.finish().to_le_bytes());
            break;
        }
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The shell's set-up, typed once: its record pipe (the descriptor 3 it inherited, or the
/// FIFO at `records`), the report function, no prompt, no history, no pagers.
pub(crate) fn init_line(nonce: &str, records: Option<&Path>) -> String {
    // The record pipe, on a descriptor of the shell's own (commands run without it): inherited
    // as descriptor 3, or opened by name.
    let open = match records {
        None => "exec {__af_fd}>&3 3>&-".to_owned(),
        Some(path) => format!("exec {{__af_fd}}>'{}'", path.display().to_string().replace('\'', "'\\''")),
    };
    [
        &format!("{open}; readonly __af_fd SRANDOM") as &str,
        // The report, after each command: the record (the command's nonce, a token drawn now,
        // `$?` and `$PWD`) to the pipe, then the marker with the token on the terminal.
        &format!(
            "__af_p() {{ __af_rc=$?; PS1=''; PS0=''; local t=$SRANDOM$SRANDOM; \
             builtin printf '%s;%s;%s;%s\\0' \"$__af_n\" \"$t\" \"$__af_rc\" \"$PWD\" >&\"$__af_fd\"; \
             builtin printf '\\033]{MARKER_OSC};%s\\007' \"$t\"; }}"
        ),
        // Restores `$?` for the next command.
        "__af_r() { return \"$1\"; }",
        "readonly -f __af_p __af_r",
        // Pagers run by hand print instead.
        "less() { local a f=(); for a; do [[ $a == [-+]?* ]] || f+=(\"$a\"); done; command cat -- \"${f[@]}\"; }",
        "more() { less \"$@\"; }",
        "PS1=''; PS2=''; PS0=''; set +o history +H; unset HISTFILE MAILCHECK",
        &format!("__af_n={nonce}; __af_rc=0; readonly PROMPT_COMMAND=__af_p\n"),
    ]
    .join("; ")
}

/// The line that runs `command` typed on the terminal, if it fits on one line: the command as a
/// bash `$'…'` word given to `eval`, so that no byte of it is taken by the terminal's line editing.
pub(crate) fn inline_line(nonce: &str, command: &str) -> Option<String> {
    if command.len() > INLINE_MAX {
        return None;
    }
    let mut quoted = String::with_capacity(command.len() + 16);
    for c in command.chars() {
        match c {
            '\\' => quoted.push_str("\\\\"),
            '\'' => quoted.push_str("\\'"),
            '\n' => quoted.push_str("\\n"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => quoted.push_str(&format!("\\x{:02x}", c as u32)),
            c => quoted.push(c),
        }
    }
    if quoted.len() > INLINE_MAX {
        return None;
    }
    Some(format!("{} eval $'{quoted}' {{__af_fd}}>&-\n", prologue(nonce)))
}

/// The line that runs a command saved in `path`.
pub(crate) fn source_line(nonce: &str, path: &Path) -> String {
    let path = path.display().to_string().replace('\'', "'\\''");
    format!("{} . '{path}' {{__af_fd}}>&-\n", prologue(nonce))
}

/// Sets the nonce and restores `$?` before the command.
fn prologue(nonce: &str) -> String {
    format!("__af_n={nonce}; __af_r \"$__af_rc\";")
}

/// The line that only sets a new nonce: the shell, if it is at its prompt, reads it and reports.
pub(crate) fn nonce_line(nonce: &str) -> String {
    format!("__af_n={nonce}\n")
}

/// Variables of this process a shell inherits; nothing else of the server's environment (its
/// API key, its own settings) reaches a shell.
const INHERITED: &[&str] = &["PATH", "HOME", "USER", "LOGNAME", "LANG", "LANGUAGE", "TZ"];

/// Variables a shell's configured environment cannot set: they would take over the
/// end-of-command marker or the prompt. [`environment`] leaves them out.
pub const RESERVED_VARIABLES: [&str; 7] = ["PROMPT_COMMAND", "PS0", "PS1", "PS2", "PS4", "BASH_ENV", "ENV"];

/// The shell's whole environment: the few variables of this process that a shell needs
/// (`PATH`, `HOME`, the locale: `INHERITED` and `LC_*`), the defaults that keep programs from
/// waiting on a terminal (`TERM=dumb`, pagers, editors), then the config's own `env`.
pub fn environment(config: &ShellConfig) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> =
        std::env::vars().filter(|(k, _)| INHERITED.contains(&k.as_str()) || k.starts_with("LC_")).collect();
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()));
    }
    for (key, value) in [
        ("TERM", "dumb"),
        ("PAGER", "cat"),
        ("GIT_PAGER", "cat"),
        ("MANPAGER", "cat"),
        ("SYSTEMD_PAGER", "cat"),
        ("EDITOR", "false"),
        ("VISUAL", "false"),
        ("NO_COLOR", "1"),
        ("GIT_TERMINAL_PROMPT", "0"),
        ("DEBIAN_FRONTEND", "noninteractive"),
        ("PIP_NO_INPUT", "1"),
    ] {
        env.push((key.into(), value.into()));
    }
    for (key, value) in &config.env {
        // Variables that would take over the marker or the prompt are not the session's to set.
        if !RESERVED_VARIABLES.contains(&key.as_str()) {
            env.retain(|(k, _)| k != key);
            env.push((key.clone(), value.clone()));
        }
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nonces_differ() {
        let a = nonce();
        assert_eq!(a.len(), 32);
        assert_ne!(a, nonce());
    }

    #[test]
    fn quoting_round_trips_through_bash() {
        let command = "printf '%s|' \"a\\\\b\" 'it'\"'\"'s' $'tab\\there' é€😀\necho done\t\x01";
        let line = inline_line("n", command).unwrap();
        let eval = line.split_once(" eval ").unwrap().1.trim_end().trim_end_matches(" {__af_fd}>&-");
        // bash decodes the $'…' word back into the command.
        let out = std::process::Command::new("bash")
            .args(["-c", &format!("printf %s {eval}")])
            .output()
            .expect("bash is installed");
        assert_eq!(String::from_utf8(out.stdout).unwrap(), command);
        assert!(inline_line("n", &"x".repeat(INLINE_MAX + 1)).is_none());
    }
}
