//! The file editor that coding agents call (SWE-agent's and OpenHands' `str_replace_editor`,
//! Anthropic's text-editor tool), as pure functions over a file's bytes: [`view`], [`view_dir`],
//! [`created`], [`str_replace`], [`insert`], and the undo [`History`] with [`undone`].
//!
//! It owns the editing and every text the agent reads back, worded as in OpenHands'
//! `openhands_aci/editor/editor.py` (`OHEditor`), which agents are trained on: `cat -n` style
//! numbered lines (`{n:6}\t{line}`), a snippet of [`SNIPPET_LINES`] lines either side of an edit,
//! and the original error sentences ([`EditError`]). It does no file I/O and knows nothing of
//! JSON, sessions or HTTP: the caller reads the file, calls in here, writes back
//! [`Edited::content`], records the old bytes in a [`History`] and shows the message. Checks on
//! the file system (the path exists, is a directory, is absolute) are the caller's, but their
//! sentences are here too ([`EditError::Missing`] and the like).
//!
//! Where this editor differs from the originals, on purpose:
//! - **Bytes are kept.** An edit replaces one byte span and leaves every other byte as it was:
//!   line endings (CRLF stays CRLF), tabs (never expanded, unlike OpenHands and SWE-agent, which
//!   expand tabs or rewrite CRLF as LF), and a missing final line break.
//! - **Line breaks follow the file.** The line breaks of inserted text, and of `new_str`, are
//!   written as the file writes its own (CRLF where the edited line ends in CRLF, for
//!   `str_replace`; CRLF where the file's first line does, for `insert`). As views show lines
//!   without their `\r`, an `old_str` of several lines with plain `\n` that is not found as it is
//!   in a CRLF file is looked for again with CRLF line breaks.
//! - **Lines are counted as `cat -n` does.** A file is split on `\n`; a final line break ends the
//!   last line and starts no other, so no empty numbered line is shown after it (the originals
//!   show one when they print a whole file or a snippet ending in a line break). The `\r` of a
//!   CRLF line is not shown.
//! - **Overlapping occurrences count.** `old_str` must occur at exactly one position: `aa` in
//!   `aaa` is two occurrences, not one as Python's `str.count` says.
//! - **Only UTF-8 text is edited or viewed** ([`EditError::NotText`]); OpenHands guesses other
//!   encodings.
//!
//! Output is not truncated here: bounding what the agent reads is the caller's.

use std::borrow::Cow;
use std::collections::{HashMap, VecDeque};
use std::fmt::{self, Write as _};

/// Lines of context shown before and after an edit, as in both originals.
pub const SNIPPET_LINES: usize = 4;

/// Undo levels kept per file by [`History::default`], as in OpenHands.
pub const DEFAULT_UNDO_LEVELS: usize = 10;

/// Bytes of old file contents kept across all files by [`History::default`]: 64 MiB.
pub const DEFAULT_UNDO_BYTES: usize = 64 << 20;

/// Why an editor command did nothing. [`EditError::parameter`] names the tool parameter it is
/// about; the message (`Display`) is the sentence to show the agent as it is, in the originals'
/// wording and punctuation (hence capitalised, and ending in a period where theirs do).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EditError {
    /// `old_str` is not in the file.
    #[error("No replacement was performed, old_str `{old}` did not appear verbatim in {path}.")]
    NoMatch {
        /// The `old_str` given.
        old: String,
        /// The file, as shown to the agent.
        path: String,
    },
    /// `old_str` is in the file more than once.
    #[error(
        "No replacement was performed. Multiple occurrences of old_str `{old}` in lines {lines:?}. \
         Please ensure it is unique."
    )]
    MultipleMatches {
        /// The `old_str` given.
        old: String,
        /// The 1-based lines where occurrences start, ascending, each once.
        lines: Vec<usize>,
    },
    /// `old_str` is empty: it would match everywhere.
    #[error(
        "No replacement was performed, old_str is empty. It should be the exact text to replace, \
         appearing once in {path}; use the `insert` command to add text."
    )]
    EmptyOld {
        /// The file, as shown to the agent.
        path: String,
    },
    /// `new_str` is `old_str`: the edit would change nothing.
    #[error(
        "Invalid `new_str` parameter: {new}. No replacement was performed. `new_str` and `old_str` \
         must be different."
    )]
    SameString {
        /// The `new_str` given.
        new: String,
    },
    /// `view_range` is outside the file or backwards.
    #[error("Invalid `view_range` parameter: [{start}, {end}]. {}", range_hint(*.start, *.end, *.lines))]
    InvalidRange {
        /// The first line asked for.
        start: i64,
        /// The last line asked for (`-1`: the end of the file).
        end: i64,
        /// Lines in the file.
        lines: usize,
    },
    /// `view_range` was given for a directory.
    #[error(
        "Invalid `view_range` parameter: [{start}, {end}]. The `view_range` parameter is not \
         allowed when `path` points to a directory."
    )]
    RangeOnDirectory {
        /// The first line asked for.
        start: i64,
        /// The last line asked for.
        end: i64,
    },
    /// `insert_line` is not between 0 and the number of lines.
    #[error("Invalid `insert_line` parameter: {line}. It should be within the range of allowed values: [0, {lines}]")]
    InvalidLine {
        /// The `insert_line` given.
        line: i64,
        /// Lines in the file.
        lines: usize,
    },
    /// No edit of this file is left to undo.
    #[error("No edit history found for {path}.")]
    NothingToUndo {
        /// The file, as shown to the agent.
        path: String,
    },
    /// The file is not UTF-8 text.
    #[error(
        "The editor only supports UTF-8 encoding files, please use bash commands for files with \
         other encoding: {path}"
    )]
    NotText {
        /// The file, as shown to the agent.
        path: String,
    },
    /// `create` was given a path that exists.
    #[error(
        "Invalid `path` parameter: {path}. File already exists at: {path}. Cannot overwrite files \
         using command `create`."
    )]
    Exists {
        /// The path, as shown to the agent.
        path: String,
    },
    /// A command other than `create` was given a path that does not exist.
    #[error("Invalid `path` parameter: {path}. The path {path} does not exist. Please provide a valid path.")]
    Missing {
        /// The path, as shown to the agent.
        path: String,
    },
    /// A command other than `view` was given a directory.
    #[error(
        "Invalid `path` parameter: {path}. The path {path} is a directory and only the `view` \
         command can be used on directories."
    )]
    Directory {
        /// The path, as shown to the agent.
        path: String,
    },
    /// The path is relative.
    #[error(
        "Invalid `path` parameter: {path}. The path should be an absolute path, starting with `/`.{}",
        Suggestion(.suggestion.as_deref())
    )]
    NotAbsolute {
        /// The path given.
        path: String,
        /// An absolute path that exists and that the agent may have meant.
        suggestion: Option<String>,
    },
}

impl EditError {
    /// The tool parameter the error is about: `old_str`, `new_str`, `view_range`, `insert_line`
    /// or `path`.
    pub fn parameter(&self) -> &'static str {
        match self {
            Self::NoMatch { .. } | Self::MultipleMatches { .. } | Self::EmptyOld { .. } => "old_str",
            Self::SameString { .. } => "new_str",
            Self::InvalidRange { .. } | Self::RangeOnDirectory { .. } => "view_range",
            Self::InvalidLine { .. } => "insert_line",
            Self::NothingToUndo { .. }
            | Self::NotText { .. }
            | Self::Exists { .. }
            | Self::Missing { .. }
            | Self::Directory { .. }
            | Self::NotAbsolute { .. } => "path",
        }
    }
}

/// What is wrong with a `view_range`, given that [`view`] refused it.
fn range_hint(start: i64, end: i64, lines: usize) -> String {
    if start < 1 || usize::try_from(start).map_or(true, |s| s > lines) {
        format!("Its first element `{start}` should be within the range of lines of the file: [1, {lines}].")
    } else {
        format!("Its second element `{end}` should be greater than or equal to the first element `{start}`.")
    }
}

/// The " Maybe you meant …?" of [`EditError::NotAbsolute`], if there is a suggestion.
struct Suggestion<'a>(Option<&'a str>);

impl fmt::Display for Suggestion<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(path) => write!(f, " Maybe you meant {path}?"),
            None => Ok(()),
        }
    }
}

/// A file after an edit: the bytes to write back, and what to tell the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edited {
    /// The whole new content of the file.
    pub content: Vec<u8>,
    /// The message for the agent: what changed, with a numbered snippet around it.
    pub message: String,
}

/// One entry of a directory listing, as the caller found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// The path as shown to the agent, e.g. `/repo/src/main.rs`.
    pub path: String,
    /// Whether it is a directory (shown with a trailing `/`).
    pub is_dir: bool,
}

/// The file's text, or [`EditError::NotText`].
fn text<'a>(path: &str, content: &'a [u8]) -> Result<&'a str, EditError> {
    std::str::from_utf8(content).map_err(|_| EditError::NotText { path: path.to_owned() })
}

/// Lines in `text`: a final line break ends the last line and starts no other.
fn line_count(text: &str) -> usize {
    if text.is_empty() {
        return 0;
    }
    text.bytes().filter(|&b| b == b'\n').count() + usize::from(!text.ends_with('\n'))
}

/// The lines of `text` without their `\n` (a CRLF line keeps its `\r`), [`line_count`] of them.
fn lines(text: &str) -> impl Iterator<Item = &str> {
    let body = text.strip_suffix('\n').unwrap_or(text);
    (!text.is_empty()).then(|| body.split('\n')).into_iter().flatten()
}

/// The line break the file uses: CRLF if its first line ends in one, else LF.
fn file_line_break(text: &str) -> &'static str {
    match text.find('\n') {
        Some(i) if text[..i].ends_with('\r') => "\r\n",
        _ => "\n",
    }
}

/// The line break of the line that holds byte `at`; the file's if that line has none.
fn line_break_at(text: &str, at: usize) -> &'static str {
    match text[at..].find('\n') {
        Some(i) if text[..at + i].ends_with('\r') => "\r\n",
        Some(_) => "\n",
        None => file_line_break(text),
    }
}

/// `text` with each bare `\n` written as `eol`; a `\r\n` stays. `after_cr`: a leading `\n`
/// follows a `\r` already (the text goes right after one), so it is not bare.
fn with_line_breaks<'a>(text: &'a str, eol: &str, after_cr: bool) -> Cow<'a, str> {
    if eol == "\n" || !text.contains('\n') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + text.len() / 16 + 2);
    let mut prev_cr = after_cr;
    for c in text.chars() {
        if c == '\n' && !prev_cr {
            out.push('\r');
        }
        out.push(c);
        prev_cr = c == '\r';
    }
    Cow::Owned(out)
}

/// Appends `Here's the result of running `cat -n` on {description}:` and lines `first..=last`
/// (1-based) of `text`, numbered, without their `\r`; none if `last < first`.
fn push_cat_n(out: &mut String, description: &str, text: &str, first: usize, last: usize) {
    let _ = writeln!(out, "Here's the result of running `cat -n` on {description}:");
    let count = (last + 1).saturating_sub(first);
    for (i, line) in lines(text).skip(first.saturating_sub(1)).take(count).enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        let _ = writeln!(out, "{:6}\t{line}", first + i);
    }
}

/// The `view` command on a file: its lines numbered as by `cat -n`.
///
/// `range` is `[start, end]`, 1-based and inclusive, `end` -1 meaning the last line, checked as
/// OpenHands does: `start` must be a line of the file, `end` -1 or at least `start`. An `end` past
/// the last line is not an error: the view stops at the last line and says so in a `NOTE:` line.
/// Tabs are shown as they are. The work is linear in the file's size.
pub fn view(path: &str, content: &[u8], range: Option<(i64, i64)>) -> Result<String, EditError> {
    let text = text(path, content)?;
    let count = line_count(text);
    let Some((start, end)) = range else {
        let mut out = String::with_capacity(text.len() + 8 * count + 64 + path.len());
        push_cat_n(&mut out, path, text, 1, count);
        return Ok(out);
    };
    let invalid = || EditError::InvalidRange { start, end, lines: count };
    let first = usize::try_from(start).ok().filter(|&s| (1..=count).contains(&s)).ok_or_else(invalid)?;
    let (last, clamped) = match end {
        -1 => (count, false),
        e if e < start => return Err(invalid()),
        e => match usize::try_from(e) {
            Ok(e) if e <= count => (e, false),
            _ => (count, true),
        },
    };
    let mut out = String::new();
    push_cat_n(&mut out, path, text, first, last);
    if clamped {
        let _ = writeln!(out, "\nNOTE: We only show up to {count} since there's only {count} lines in this file");
    }
    Ok(out)
}

/// The `view` command on a directory, from the caller's listing: `entries` are the files and
/// directories up to 2 levels deep, hidden ones left out (OpenHands lists the directory itself
/// too); `hidden` counts the hidden entries right in the directory, mentioned if any. Entries are
/// shown sorted by path, directories with a trailing `/`.
pub fn view_dir(path: &str, entries: &[DirEntry], hidden: usize) -> String {
    let mut shown: Vec<Cow<'_, str>> = entries
        .iter()
        .map(|e| match e.is_dir && !e.path.ends_with('/') {
            true => Cow::Owned(format!("{}/", e.path)),
            false => Cow::Borrowed(e.path.as_str()),
        })
        .collect();
    shown.sort_unstable();
    let mut out = format!("Here's the files and directories up to 2 levels deep in {path}, excluding hidden items:\n");
    out.push_str(&shown.join("\n"));
    if hidden > 0 {
        let _ = write!(
            out,
            "\n\n{hidden} hidden files/directories in this directory are excluded. You can use 'ls -la {path}' to see them."
        );
    }
    out
}

/// The message for a `create` that wrote the file at `path`.
pub fn created(path: &str) -> String {
    format!("File created successfully at: {path}")
}

/// Where `needle` occurs in a text, overlapping occurrences included.
struct Occurrences {
    /// Byte offset of the first.
    first: usize,
    /// How many there are.
    count: usize,
    /// 1-based lines where they start, ascending, each once.
    lines: Vec<usize>,
}

/// Finds every occurrence of a non-empty `needle`, in time linear in `text` and the number found.
fn occurrences(text: &str, needle: &str) -> Occurrences {
    let step = needle.chars().next().map_or(1, char::len_utf8);
    let mut found = Occurrences { first: 0, count: 0, lines: Vec::new() };
    let (mut from, mut line, mut counted) = (0, 1, 0);
    while let Some(i) = text[from..].find(needle) {
        let at = from + i;
        line += text.as_bytes()[counted..at].iter().filter(|&&b| b == b'\n').count();
        counted = at;
        if found.lines.last() != Some(&line) {
            found.lines.push(line);
        }
        if found.count == 0 {
            found.first = at;
        }
        found.count += 1;
        from = at + step;
    }
    found
}

/// The `str_replace` command: replaces the one occurrence of `old` in the file with `new`.
///
/// Errors, checked in this order: the file is not text; `old` is empty; `new` is `old` (as in
/// OpenHands); `old` is not in the file, or is in it more than once (overlapping occurrences
/// count). The bytes outside the replaced span are kept as they are. If `old` has bare `\n` line
/// breaks and is not found as it is in a file with CRLF line breaks, it is looked for with CRLF
/// ones. `new`'s bare `\n` are written as the line break of the line where the replacement
/// starts. The message shows the new file from [`SNIPPET_LINES`] lines before the first line of
/// the replacement to as many after its last.
pub fn str_replace(path: &str, content: &[u8], old: &str, new: &str) -> Result<Edited, EditError> {
    let text = text(path, content)?;
    if old.is_empty() {
        return Err(EditError::EmptyOld { path: path.to_owned() });
    }
    if old == new {
        return Err(EditError::SameString { new: new.to_owned() });
    }
    let mut target = Cow::Borrowed(old);
    let mut found = occurrences(text, old);
    if found.count == 0 && text.contains("\r\n") {
        let crlf = with_line_breaks(old, "\r\n", false);
        if crlf != old {
            found = occurrences(text, &crlf);
            target = crlf;
        }
    }
    match found.count {
        0 => return Err(EditError::NoMatch { old: old.to_owned(), path: path.to_owned() }),
        1 => {}
        _ => return Err(EditError::MultipleMatches { old: old.to_owned(), lines: found.lines }),
    }
    let at = found.first;
    let new = with_line_breaks(new, line_break_at(text, at), text[..at].ends_with('\r'));
    let mut edited = String::with_capacity(text.len() - target.len() + new.len());
    edited.push_str(&text[..at]);
    edited.push_str(&new);
    edited.push_str(&text[at + target.len()..]);

    let line = found.lines[0];
    let first = line.saturating_sub(SNIPPET_LINES).max(1);
    let last = (line + SNIPPET_LINES + new.matches('\n').count()).min(line_count(&edited));
    let mut message = format!("The file {path} has been edited. ");
    push_cat_n(&mut message, &format!("a snippet of {path}"), &edited, first, last);
    message.push_str("Review the changes and make sure they are as expected. Edit the file again if necessary.");
    Ok(Edited { content: edited.into_bytes(), message })
}

/// The `insert` command: puts `new` as whole lines after line `after_line` (0: at the start).
///
/// `after_line` must be between 0 and the number of lines ([`EditError::InvalidLine`] says the
/// range). `new` is split on `\n` into lines, as in the originals (so a final `\n` in it makes an
/// empty line), each written with the file's line break (CRLF if its first line ends in CRLF).
/// The rest of the file is kept byte for byte; after a last line without a line break, one is
/// added before the new lines and none after them. The message shows the new file from
/// [`SNIPPET_LINES`] lines before the inserted ones to as many after them.
pub fn insert(path: &str, content: &[u8], after_line: i64, new: &str) -> Result<Edited, EditError> {
    let text = text(path, content)?;
    let count = line_count(text);
    let line = usize::try_from(after_line)
        .ok()
        .filter(|&l| l <= count)
        .ok_or(EditError::InvalidLine { line: after_line, lines: count })?;
    let eol = file_line_break(text);
    let new = with_line_breaks(new, eol, false);
    let at = match line {
        0 => 0,
        l => text.match_indices('\n').nth(l - 1).map_or(text.len(), |(i, _)| i + 1),
    };
    let mut edited = String::with_capacity(text.len() + new.len() + 2);
    edited.push_str(&text[..at]);
    if at == text.len() && !text.is_empty() && !text.ends_with('\n') {
        edited.push_str(eol);
        edited.push_str(&new);
    } else {
        edited.push_str(&new);
        edited.push_str(eol);
    }
    edited.push_str(&text[at..]);

    let added = new.matches('\n').count() + 1;
    let first = (line + 1).saturating_sub(SNIPPET_LINES).max(1);
    let last = (line + SNIPPET_LINES + added).min(count + added);
    let mut message = format!("The file {path} has been edited. ");
    push_cat_n(&mut message, "a snippet of the edited file", &edited, first, last);
    message.push_str(
        "Review the changes and make sure they are as expected (correct indentation, no duplicate lines, etc). \
         Edit the file again if necessary.",
    );
    Ok(Edited { content: edited.into_bytes(), message })
}

/// The message for an `undo_edit` that put `content` (from [`History::undo`]) back at `path`:
/// the whole file, numbered (bytes that are not UTF-8 shown as U+FFFD).
pub fn undone(path: &str, content: &[u8]) -> String {
    let text = String::from_utf8_lossy(content);
    let mut out = format!("Last edit to {path} undone successfully. ");
    push_cat_n(&mut out, path, &text, 1, line_count(&text));
    out
}

/// The undo history of edited files: for each path, the contents before its last edits.
///
/// At most `levels_per_file` contents are kept per path, and `byte_budget` bytes in all; past
/// either bound the oldest are dropped first (a content larger than the whole budget is not
/// kept). Paths are keys as given: the caller canonicalises them.
pub struct History {
    /// Contents kept per path.
    levels: usize,
    /// Bytes kept in all.
    budget: usize,
    /// Bytes held now.
    bytes: usize,
    /// Sequence number of the next content recorded: orders contents across paths.
    next: u64,
    /// Per path, its contents from oldest to newest, with their sequence numbers.
    files: HashMap<String, VecDeque<(u64, Vec<u8>)>>,
}

impl History {
    /// A history keeping at most `levels_per_file` contents per path and `byte_budget` bytes in
    /// all.
    pub fn new(levels_per_file: usize, byte_budget: usize) -> Self {
        History { levels: levels_per_file, budget: byte_budget, bytes: 0, next: 0, files: HashMap::new() }
    }

    /// Records `before`, the content of `path` before an edit, as its newest undo level.
    pub fn record(&mut self, path: &str, before: Vec<u8>) {
        if self.levels == 0 {
            return;
        }
        self.bytes += before.len();
        let stack = self.files.entry(path.to_owned()).or_default();
        stack.push_back((self.next, before));
        self.next += 1;
        if stack.len() > self.levels {
            if let Some((_, old)) = stack.pop_front() {
                self.bytes -= old.len();
            }
        }
        while self.bytes > self.budget && self.drop_oldest() {}
    }

    /// Takes back the newest content recorded for `path`, to be written back.
    pub fn undo(&mut self, path: &str) -> Result<Vec<u8>, EditError> {
        let nothing = || EditError::NothingToUndo { path: path.to_owned() };
        let stack = self.files.get_mut(path).ok_or_else(nothing)?;
        let (_, content) = stack.pop_back().ok_or_else(nothing)?;
        if stack.is_empty() {
            self.files.remove(path);
        }
        self.bytes -= content.len();
        Ok(content)
    }

    /// How many undo levels `path` has.
    pub fn levels(&self, path: &str) -> usize {
        self.files.get(path).map_or(0, VecDeque::len)
    }

    /// Bytes of content held, across all paths.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Drops the oldest content of all paths; false if there was none.
    fn drop_oldest(&mut self) -> bool {
        let oldest = self.files.iter().filter_map(|(path, stack)| Some((stack.front()?.0, path))).min();
        let Some(path) = oldest.map(|(_, path)| path.clone()) else {
            return false;
        };
        let stack = self.files.get_mut(&path).expect("the path was just found");
        if let Some((_, old)) = stack.pop_front() {
            self.bytes -= old.len();
        }
        if stack.is_empty() {
            self.files.remove(&path);
        }
        true
    }
}

impl Default for History {
    /// [`DEFAULT_UNDO_LEVELS`] per file, [`DEFAULT_UNDO_BYTES`] in all.
    fn default() -> Self {
        History::new(DEFAULT_UNDO_LEVELS, DEFAULT_UNDO_BYTES)
    }
}

impl fmt::Debug for History {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("History")
            .field("levels", &self.levels)
            .field("budget", &self.budget)
            .field("bytes", &self.bytes)
            .field("files", &self.files.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "/repo/f.py";

    fn numbered(first: usize, lines: &[&str]) -> String {
        lines.iter().enumerate().map(|(i, l)| format!("{:6}\t{l}\n", first + i)).collect()
    }

    #[test]
    fn str_replace_without_a_match_names_old_str() {
        let err = str_replace(P, b"a = 1\n", "b = 2", "b = 3").unwrap_err();
        assert_eq!(err.parameter(), "old_str");
        assert_eq!(
            err.to_string(),
            "No replacement was performed, old_str `b = 2` did not appear verbatim in /repo/f.py."
        );
    }

    #[test]
    fn str_replace_with_two_matches_reports_their_lines() {
        let err = str_replace(P, b"x = 1\ny\nz\nw\nx = 1\n", "x = 1", "x = 2").unwrap_err();
        assert_eq!(err, EditError::MultipleMatches { old: "x = 1".into(), lines: vec![1, 5] });
        assert_eq!(
            err.to_string(),
            "No replacement was performed. Multiple occurrences of old_str `x = 1` in lines [1, 5]. \
             Please ensure it is unique."
        );
        // Two on one line are one line; overlapping ones count.
        let err = str_replace(P, b"aaa\n", "aa", "b").unwrap_err();
        assert_eq!(err, EditError::MultipleMatches { old: "aa".into(), lines: vec![1] });
    }

    #[test]
    fn str_replace_shows_a_snippet_with_the_right_line_numbers() {
        let file: String = (1..=20).map(|i| format!("line {i}\n")).collect();
        let edited = str_replace(P, file.as_bytes(), "line 10\n", "ten\nTEN\n").unwrap();
        let want = file.replace("line 10\n", "ten\nTEN\n");
        assert_eq!(edited.content, want.as_bytes());
        let snippet = numbered(
            6,
            &[
                "line 6", "line 7", "line 8", "line 9", "ten", "TEN", "line 11", "line 12", "line 13", "line 14",
                "line 15",
            ],
        );
        assert_eq!(
            edited.message,
            format!(
                "The file {P} has been edited. Here's the result of running `cat -n` on a snippet of {P}:\n{snippet}\
                 Review the changes and make sure they are as expected. Edit the file again if necessary."
            )
        );
        // Near the start and end the snippet stops at the file's edges.
        let edited = str_replace(P, b"a\nb\nc", "b", "B").unwrap();
        assert_eq!(edited.content, b"a\nB\nc");
        assert!(edited.message.contains(&format!(":\n{}Review", numbered(1, &["a", "B", "c"]))));
    }

    #[test]
    fn str_replace_keeps_every_other_byte_of_a_crlf_file_with_tabs() {
        let file: &[u8] = b"def f():\r\n\tif x:\r\n\t\treturn  1\r\n\r\n\tpass\t# end\r\nlast\tline";
        let edited = str_replace(P, file, "return  1", "return\t2").unwrap();
        let at = file.windows(9).position(|w| w == b"return  1").unwrap();
        assert_eq!(&edited.content[..at], &file[..at]);
        assert_eq!(&edited.content[at..at + 8], b"return\t2");
        assert_eq!(&edited.content[at + 8..], &file[at + 9..]);
        // Shown without `\r`, tabs as they are.
        assert!(edited.message.contains("     3\t\t\treturn\t2\n"));
        assert!(edited.message.contains("     6\tlast\tline\n"));
        // A multi-line old_str written with `\n`, as views show it, is found; new lines get CRLF.
        let edited = str_replace(P, file, "\tif x:\n\t\treturn  1", "\tif y:\n\t\treturn 3").unwrap();
        let want: &[u8] = b"def f():\r\n\tif y:\r\n\t\treturn 3\r\n\r\n\tpass\t# end\r\nlast\tline";
        assert_eq!(edited.content, want);
        // On the last line, which has no line break, the file's own is used.
        let edited = str_replace(P, file, "last\tline", "last\nline").unwrap();
        assert!(edited.content.ends_with(b"# end\r\nlast\r\nline"));
    }

    #[test]
    fn str_replace_does_not_split_a_crlf() {
        let edited = str_replace(P, b"a\r\nb\r\n", "\nb", "\nc").unwrap();
        assert_eq!(edited.content, b"a\r\nc\r\n");
    }

    #[test]
    fn str_replace_of_several_lines() {
        let file = b"fn main() {\n    let x = 1;\n    let y = 2;\n    println!(\"{x}\");\n}\n";
        let edited = str_replace(P, file, "    let x = 1;\n    let y = 2;\n", "    let x = 3;\n").unwrap();
        assert_eq!(edited.content, b"fn main() {\n    let x = 3;\n    println!(\"{x}\");\n}\n");
        assert!(edited
            .message
            .contains(&numbered(1, &["fn main() {", "    let x = 3;", "    println!(\"{x}\");", "}"])));
        // To nothing.
        let edited = str_replace(P, file, "    let y = 2;\n", "").unwrap();
        assert_eq!(edited.content, b"fn main() {\n    let x = 1;\n    println!(\"{x}\");\n}\n");
    }

    #[test]
    fn str_replace_refuses_an_empty_or_unchanged_old_str() {
        let err = str_replace(P, b"abc\n", "", "x").unwrap_err();
        assert_eq!(err, EditError::EmptyOld { path: P.into() });
        assert_eq!(err.parameter(), "old_str");
        let err = str_replace(P, b"abc\n", "abc", "abc").unwrap_err();
        assert_eq!(err.parameter(), "new_str");
        assert_eq!(
            err.to_string(),
            "Invalid `new_str` parameter: abc. No replacement was performed. `new_str` and `old_str` must be different."
        );
    }

    #[test]
    fn non_utf8_content_is_not_text() {
        let file: &[u8] = b"caf\xe9\n";
        let not_text = EditError::NotText { path: P.into() };
        assert_eq!(view(P, file, None).unwrap_err(), not_text);
        assert_eq!(str_replace(P, file, "caf", "tea").unwrap_err(), not_text);
        assert_eq!(insert(P, file, 0, "x").unwrap_err(), not_text);
        assert_eq!(not_text.parameter(), "path");
    }

    #[test]
    fn insert_at_the_start() {
        let edited = insert(P, b"a\nb\n", 0, "new").unwrap();
        assert_eq!(edited.content, b"new\na\nb\n");
        assert_eq!(
            edited.message,
            format!(
                "The file {P} has been edited. Here's the result of running `cat -n` on a snippet of the edited file:\n{}\
                 Review the changes and make sure they are as expected (correct indentation, no duplicate lines, etc). \
                 Edit the file again if necessary.",
                numbered(1, &["new", "a", "b"])
            )
        );
    }

    #[test]
    fn insert_in_the_middle_of_a_crlf_file() {
        let file: String = (1..=12).map(|i| format!("l{i}\r\n")).collect();
        let edited = insert(P, file.as_bytes(), 6, "x\ny").unwrap();
        let want = file.replace("l6\r\n", "l6\r\nx\r\ny\r\n");
        assert_eq!(edited.content, want.as_bytes());
        let snippet = numbered(3, &["l3", "l4", "l5", "l6", "x", "y", "l7", "l8", "l9", "l10"]);
        assert!(edited.message.contains(&format!("edited file:\n{snippet}Review")), "{}", edited.message);
    }

    #[test]
    fn insert_after_a_last_line_without_a_line_break() {
        let edited = insert(P, b"a\r\nb", 2, "c\nd").unwrap();
        assert_eq!(edited.content, b"a\r\nb\r\nc\r\nd");
        assert!(edited.message.contains(&numbered(1, &["a", "b", "c", "d"])));
        // With a final line break, the new lines keep one.
        assert_eq!(insert(P, b"a\nb\n", 2, "c").unwrap().content, b"a\nb\nc\n");
        // An empty file.
        assert_eq!(insert(P, b"", 0, "c").unwrap().content, b"c\n");
    }

    #[test]
    fn insert_past_the_end_names_insert_line() {
        let err = insert(P, b"a\nb\n", 3, "c").unwrap_err();
        assert_eq!(err, EditError::InvalidLine { line: 3, lines: 2 });
        assert_eq!(err.parameter(), "insert_line");
        assert_eq!(
            err.to_string(),
            "Invalid `insert_line` parameter: 3. It should be within the range of allowed values: [0, 2]"
        );
        assert_eq!(insert(P, b"a\n", -1, "c").unwrap_err(), EditError::InvalidLine { line: -1, lines: 1 });
    }

    #[test]
    fn view_whole_files_and_ranges() {
        let file = b"one\n\ttwo\r\nthree\nfour";
        assert_eq!(
            view(P, file, None).unwrap(),
            format!(
                "Here's the result of running `cat -n` on {P}:\n{}",
                numbered(1, &["one", "\ttwo", "three", "four"])
            )
        );
        let head = format!("Here's the result of running `cat -n` on {P}:\n");
        assert_eq!(view(P, file, Some((2, 3))).unwrap(), format!("{head}{}", numbered(2, &["\ttwo", "three"])));
        assert_eq!(view(P, file, Some((3, -1))).unwrap(), format!("{head}{}", numbered(3, &["three", "four"])));
        assert_eq!(view(P, file, Some((4, 4))).unwrap(), format!("{head}{}", numbered(4, &["four"])));
        // Past the end: clamped, with a note.
        assert_eq!(
            view(P, file, Some((3, 9))).unwrap(),
            format!(
                "{head}{}\nNOTE: We only show up to 4 since there's only 4 lines in this file\n",
                numbered(3, &["three", "four"])
            )
        );
        assert_eq!(view(P, b"", None).unwrap(), head);
    }

    #[test]
    fn view_refuses_bad_ranges() {
        let file = b"a\nb\nc\n";
        for (start, end) in [(0, 2), (4, 4), (-1, -1)] {
            let err = view(P, file, Some((start, end))).unwrap_err();
            assert_eq!(err.parameter(), "view_range");
            assert_eq!(
                err.to_string(),
                format!(
                    "Invalid `view_range` parameter: [{start}, {end}]. Its first element `{start}` should be within \
                     the range of lines of the file: [1, 3]."
                )
            );
        }
        for end in [1, 0, -2] {
            let err = view(P, file, Some((2, end))).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "Invalid `view_range` parameter: [2, {end}]. Its second element `{end}` should be greater than \
                     or equal to the first element `2`."
                )
            );
        }
        assert!(view(P, b"", Some((1, -1))).is_err());
    }

    #[test]
    fn view_of_a_range_in_a_big_file_is_fast() {
        let file: String = (1..=10_000).map(|i| format!("line {i}\n")).collect();
        let started = std::time::Instant::now();
        let out = view(P, file.as_bytes(), Some((5000, 5010))).unwrap();
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        let want: Vec<String> = (5000..=5010).map(|i| format!("line {i}")).collect();
        let want: Vec<&str> = want.iter().map(String::as_str).collect();
        assert_eq!(out, format!("Here's the result of running `cat -n` on {P}:\n{}", numbered(5000, &want)));
    }

    #[test]
    fn view_dir_lists_sorted_entries() {
        let entries = [
            DirEntry { path: "/repo/src/main.rs".into(), is_dir: false },
            DirEntry { path: "/repo/src".into(), is_dir: true },
            DirEntry { path: "/repo".into(), is_dir: true },
            DirEntry { path: "/repo/Cargo.toml".into(), is_dir: false },
        ];
        let head = "Here's the files and directories up to 2 levels deep in /repo, excluding hidden items:\n";
        let list = "/repo/\n/repo/Cargo.toml\n/repo/src/\n/repo/src/main.rs";
        assert_eq!(view_dir("/repo", &entries, 0), format!("{head}{list}"));
        assert_eq!(
            view_dir("/repo", &entries, 2),
            format!(
                "{head}{list}\n\n2 hidden files/directories in this directory are excluded. \
                 You can use 'ls -la /repo' to see them."
            )
        );
    }

    #[test]
    fn undo_twice_then_nothing_to_undo() {
        let mut history = History::default();
        let v0 = b"a\n".to_vec();
        let v1 = str_replace(P, &v0, "a", "b").unwrap();
        history.record(P, v0.clone());
        let v2 = str_replace(P, &v1.content, "b", "c").unwrap();
        history.record(P, v1.content.clone());
        assert_eq!(v2.content, b"c\n");
        assert_eq!(history.levels(P), 2);
        assert_eq!(history.undo(P).unwrap(), v1.content);
        assert_eq!(history.undo(P).unwrap(), v0);
        let err = history.undo(P).unwrap_err();
        assert_eq!(err.to_string(), "No edit history found for /repo/f.py.");
        assert_eq!(err.parameter(), "path");
        assert_eq!(history.bytes(), 0);
        assert_eq!(
            undone(P, &v0),
            format!(
                "Last edit to {P} undone successfully. Here's the result of running `cat -n` on {P}:\n{}",
                numbered(1, &["a"])
            )
        );
    }

    #[test]
    fn history_drops_the_oldest_past_its_bounds() {
        let mut history = History::new(2, 10);
        for c in [b"1", b"2", b"3"] {
            history.record("/a", c.to_vec());
        }
        assert_eq!(history.levels("/a"), 2);
        history.record("/b", b"xxxx".to_vec());
        history.record("/b", b"yyyy".to_vec());
        // 2 + 8 bytes fit; one more byte drops the oldest of all, "/a"'s "2".
        assert_eq!(history.bytes(), 10);
        history.record("/c", b"z".to_vec());
        assert_eq!((history.levels("/a"), history.bytes()), (1, 10));
        assert_eq!(history.undo("/a").unwrap(), b"3");
        assert!(history.undo("/a").is_err());
        // Larger than the whole budget: not kept, and the rest is dropped to make room.
        history.record("/d", vec![0; 11]);
        assert_eq!((history.levels("/d"), history.bytes()), (0, 0));
    }

    #[test]
    fn path_errors_keep_the_original_wording() {
        let err = EditError::NotAbsolute { path: "f.py".into(), suggestion: Some("/repo/f.py".into()) };
        assert_eq!(
            err.to_string(),
            "Invalid `path` parameter: f.py. The path should be an absolute path, starting with `/`. Maybe you meant /repo/f.py?"
        );
        assert_eq!(created(P), "File created successfully at: /repo/f.py");
        assert_eq!(EditError::RangeOnDirectory { start: 1, end: 2 }.parameter(), "view_range");
    }
}
