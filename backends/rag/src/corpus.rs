//! The JSONL corpus format, read as a stream: one document a line (`id`, `title`, and `contents`
//! or `text`), and the stamp that tells whether an index on disk is current for a corpus file.
//!
//! It owns parsing and fingerprinting; putting documents into the index is [`crate::Index`]'s.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// A document to index. A missing `id` is assigned when it is indexed (a corpus line's number,
/// or the next free number for [`Index::add`](crate::Index::add)).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Document {
    /// Its identifier; documents added with the same id replace each other.
    pub id: Option<String>,
    /// Its title, if any.
    pub title: Option<String>,
    /// Its text.
    pub content: String,
}

/// One corpus line as written.
#[derive(Deserialize)]
struct Line<'a> {
    #[serde(default)]
    id: Option<Id>,
    #[serde(default, borrow)]
    title: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    contents: Option<std::borrow::Cow<'a, str>>,
    #[serde(default, borrow)]
    text: Option<std::borrow::Cow<'a, str>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Id {
    Text(String),
    Number(serde_json::Number),
}

/// Parses one line of a corpus; `Ok(None)` for a blank line. The error says what is wrong,
/// without the line number (the caller knows it).
pub fn parse_line(line: &str) -> std::result::Result<Option<Document>, String> {
    let line = line.trim();
    if line.is_empty() {
        return Ok(None);
    }
    if !line.starts_with('{') {
        // serde would read a JSON list as the struct's fields in order: reject it first.
        return Err(match serde_json::from_str::<serde::de::IgnoredAny>(line) {
            Ok(_) => "not a document (expected a JSON object)".into(),
            Err(e) => format!("invalid JSON ({})", strip_position(&e)),
        });
    }
    let parsed: Line<'_> = serde_json::from_str(line).map_err(|e| {
        let what = strip_position(&e);
        if e.is_data() {
            format!("not a document ({what}, column {})", e.column())
        } else {
            format!("invalid JSON ({what}, column {})", e.column())
        }
    })?;
    let content = match (parsed.contents, parsed.text) {
        (Some(c), _) | (None, Some(c)) => c.into_owned(),
        (None, None) => return Err("no 'contents' or 'text' field".into()),
    };
    let id = match parsed.id {
        None => None,
        Some(Id::Text(s)) if s.is_empty() => return Err("'id' is empty".into()),
        Some(Id::Text(s)) => Some(s),
        Some(Id::Number(n)) => Some(n.to_string()),
    };
    Ok(Some(Document { id, title: parsed.title.map(|t| t.into_owned()).filter(|t| !t.is_empty()), content }))
}

/// serde_json's message without its " at line 1 column N" (the line is the caller's to give).
fn strip_position(e: &serde_json::Error) -> String {
    let text = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    text.strip_suffix(&suffix).unwrap_or(&text).to_owned()
}

/// Reads a corpus file line by line, yielding each document with its 1-based line number and
/// stopping at the first bad line.
#[derive(Debug)]
pub struct CorpusReader {
    path: PathBuf,
    reader: BufReader<File>,
    line: u64,
    buffer: Vec<u8>,
    failed: bool,
}

impl CorpusReader {
    /// Opens `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        Ok(CorpusReader {
            path: path.to_owned(),
            reader: BufReader::with_capacity(1 << 20, file),
            line: 0,
            buffer: Vec::new(),
            failed: false,
        })
    }

    fn bad(&mut self, reason: String) -> Error {
        self.failed = true;
        Error::Corpus { path: self.path.clone(), line: self.line, reason }
    }
}

impl Iterator for CorpusReader {
    type Item = Result<(u64, Document)>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.failed {
            self.buffer.clear();
            match self.reader.read_until(b'\n', &mut self.buffer) {
                Ok(0) => return None,
                Ok(_) => self.line += 1,
                Err(e) => {
                    self.failed = true;
                    return Some(Err(Error::io(&self.path, e)));
                }
            }
            let mut bytes = self.buffer.as_slice();
            if self.line == 1 {
                bytes = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(bytes);
            }
            let text = match std::str::from_utf8(bytes) {
                Ok(t) => t,
                Err(e) => return Some(Err(self.bad(format!("not valid UTF-8 (byte {})", e.valid_up_to() + 1)))),
            };
            match parse_line(text) {
                Ok(Some(doc)) => return Some(Ok((self.line, doc))),
                Ok(None) => continue,
                Err(reason) => return Some(Err(self.bad(reason))),
            }
        }
        None
    }
}

/// What identifies the corpus an index was built from: its canonical path, size and
/// modification time. An index whose stamp matches the corpus is current.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorpusStamp {
    /// Version of the index layout this crate writes.
    pub format: u32,
    /// The corpus file, canonical.
    pub corpus: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// Its modification time, nanoseconds since the Unix epoch.
    pub modified_ns: u128,
    /// How its text was analysed (language, stop words): another analysis is another index.
    #[serde(default)]
    pub analysis: String,
}

/// The index layout version: bump it when the schema or the analysis changes (2: stop words,
/// and the analysis in the stamp).
pub(crate) const FORMAT: u32 = 2;

impl CorpusStamp {
    /// The stamp of the corpus file as it is now.
    pub fn of(path: &Path) -> Result<Self> {
        let corpus = path.canonicalize().map_err(|e| Error::io(path, e))?;
        let meta = std::fs::metadata(&corpus).map_err(|e| Error::io(path, e))?;
        let modified_ns = meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        Ok(CorpusStamp { format: FORMAT, corpus, bytes: meta.len(), modified_ns, analysis: String::new() })
    }

    /// The stamp saved in an index directory, if any.
    pub(crate) fn saved(dir: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(dir.join(STAMP_FILE)).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Saves the stamp in an index directory (after the index is committed).
    pub(crate) fn save(&self, dir: &Path) -> Result<()> {
        let path = dir.join(STAMP_FILE);
        let temp = dir.join(format!("{STAMP_FILE}.tmp"));
        let text = serde_json::to_string_pretty(self).expect("a stamp serialises");
        std::fs::write(&temp, text).map_err(|e| Error::io(&temp, e))?;
        std::fs::rename(&temp, &path).map_err(|e| Error::io(&path, e))
    }

    /// Forgets the stamp, before an index directory is rebuilt.
    pub(crate) fn remove(dir: &Path) -> Result<()> {
        match std::fs::remove_file(dir.join(STAMP_FILE)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(dir.join(STAMP_FILE), e)),
            _ => Ok(()),
        }
    }
}

/// The stamp's file name inside an index directory.
pub(crate) const STAMP_FILE: &str = "agentflow-corpus.json";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_contents_or_text_and_optional_fields() {
        let d = parse_line(r#"{"id": "a", "title": "T", "contents": "c"}"#).unwrap().unwrap();
        assert_eq!(d, Document { id: Some("a".into()), title: Some("T".into()), content: "c".into() });
        let d = parse_line(r#"{"id": 12, "text": "t", "other": [1]}"#).unwrap().unwrap();
        assert_eq!(d, Document { id: Some("12".into()), title: None, content: "t".into() });
        let d = parse_line(r#"{"contents": "c", "title": null}"#).unwrap().unwrap();
        assert_eq!((d.id, d.title), (None, None));
        assert_eq!(parse_line("   \r\n").unwrap(), None);
    }

    #[test]
    fn says_what_is_wrong() {
        assert!(parse_line(r#"{"id": "a"}"#).unwrap_err().contains("'contents' or 'text'"));
        assert!(parse_line(r#"{"id": "a", "contents": "#).unwrap_err().starts_with("invalid JSON"));
        assert!(parse_line(r#"{"id": [1], "contents": "x"}"#).unwrap_err().starts_with("not a document"));
        assert!(parse_line(r#"{"contents": 5}"#).unwrap_err().starts_with("not a document"));
        let e = parse_line(r#"["x"]"#).unwrap_err();
        assert!(e.starts_with("not a document"), "{e}");
    }

    #[test]
    fn reader_names_the_bad_line_and_stops() {
        let path = std::env::temp_dir().join(format!("agentflow-rag-corpus-{}.jsonl", std::process::id()));
        let mut text = String::from("\u{feff}");
        for i in 1..=6 {
            text.push_str(&format!("{{\"contents\": \"doc {i}\"}}\n"));
            if i == 3 {
                text.push('\n');
            }
        }
        text.push_str("{\"title\": \"no text\"}\n{\"contents\": \"after\"}\n");
        std::fs::write(&path, text).unwrap();
        let items: Vec<_> = CorpusReader::open(&path).unwrap().collect();
        let _ = std::fs::remove_file(&path);
        assert_eq!(items.len(), 7);
        let lines: Vec<u64> = items[..6].iter().map(|r| r.as_ref().unwrap().0).collect();
        assert_eq!(lines, [1, 2, 3, 5, 6, 7]);
        match &items[6] {
            Err(Error::Corpus { line: 8, reason, .. }) => assert!(reason.contains("'contents' or 'text'")),
            other => panic!("expected a corpus error on line 8, got {other:?}"),
        }
    }
}
