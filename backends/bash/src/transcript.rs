//! What a terminal showed, as text an agent can read: the [`Transcript`] of one shell.
//!
//! It owns the byte-level work on the PTY's output: terminal escape sequences are removed (and
//! the end-of-command marker is recognised among them), UTF-8 is decoded across chunk boundaries (invalid bytes become U+FFFD), carriage-return
//! and backspace rewrites of a line are applied, and output beyond the limit keeps its head and
//! its tail with a line saying how much was left out, in memory bounded by the limit whatever is
//! fed. It knows nothing of processes, threads or time: `shell.rs` feeds it and reads it.
//!
//! A command's end is told in two parts, so that the command cannot forge it. The shell writes a
//! *record*, `<nonce>;<token>;<status>;<cwd>` and a NUL, to a pipe that only the shell holds
//! (fed here by [`Transcript::record`]); then it prints the *marker* `ESC ] 697 ; <token> BEL` on
//! the terminal, which says where the command's output ends. The token is drawn by the shell
//! after the command has ended, so a marker is believed only when a record carrying its token
//! came first; the record's nonce says which command it ends.

/// OSC number of the end-of-command marker: `ESC ] 697 ; <token> BEL`.
pub(crate) const MARKER_OSC: &str = "697";

/// Records kept awaiting their marker; older ones are dropped.
const MAX_RECORDS: usize = 16;
/// Longest record kept (a path is at most 4096 bytes); a longer one is dropped.
const MAX_RECORD: usize = 8192;

/// Longest line kept editable; a longer one is committed as it is (no more CR rewrites of it).
const MAX_LINE_CHARS: usize = 4096;
/// Longest escape sequence payload kept; a longer one is dropped (it cannot be a marker).
const MAX_SEQUENCE: usize = 4096;

/// The end of a command, as the shell reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Finished {
    /// What the command printed, already bounded.
    pub text: String,
    /// Whether some of it was left out.
    pub truncated: bool,
    /// The command's `$?`.
    pub status: i32,
    /// The shell's `$PWD` after it.
    pub cwd: String,
}

/// The shell's account of a command's end, awaiting its marker on the terminal.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Record {
    nonce: String,
    token: String,
    status: i32,
    cwd: String,
}

impl Record {
    fn parse(bytes: &[u8]) -> Option<Record> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut parts = text.splitn(4, ';');
        let nonce = parts.next()?.to_owned();
        let token = parts.next()?.to_owned();
        let status = parts.next()?.trim().parse().ok()?;
        let cwd = parts.next()?.to_owned();
        (!token.is_empty()).then_some(Record { nonce, token, status, cwd })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Ground,
    /// After ESC.
    Escape,
    /// After ESC and an intermediate byte (`(`, `#`, …): one more byte ends it.
    EscapeIntermediate,
    /// Control sequence: ESC [ params final.
    Csi,
    /// Operating system command: ESC ] payload (BEL | ESC \).
    Osc,
    /// DCS, SOS, PM, APC: ESC P|X|^|_ payload ST; the payload is dropped.
    Opaque,
}

/// Text bounded to a limit: the first half is kept as it comes, then a sliding tail.
#[derive(Debug)]
struct Bounded {
    limit: usize,
    head: String,
    /// Raw UTF-8 bytes of the tail; may start inside a character once bytes were elided.
    tail: Vec<u8>,
    elided: u64,
}

impl Bounded {
    fn new(limit: usize) -> Self {
        Bounded { limit, head: String::new(), tail: Vec::new(), elided: 0 }
    }

    fn head_cap(&self) -> usize {
        self.limit - self.limit / 2
    }

    fn tail_cap(&self) -> usize {
        self.limit / 2
    }

    fn push(&mut self, s: &str) {
        let mut s = s;
        if self.tail.is_empty() && self.elided == 0 {
            let room = self.head_cap().saturating_sub(self.head.len());
            if s.len() <= room {
                self.head.push_str(s);
                return;
            }
            let mut cut = room;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            self.head.push_str(&s[..cut]);
            s = &s[cut..];
        }
        let cap = self.tail_cap();
        if s.len() >= cap {
            // Everything held so far and the front of `s` fall out of the tail.
            self.elided += (self.tail.len() + s.len() - cap) as u64;
            self.tail.clear();
            self.tail.extend_from_slice(&s.as_bytes()[s.len() - cap..]);
            return;
        }
        self.tail.extend_from_slice(s.as_bytes());
        // Amortised: slide only when the buffer holds twice what it keeps.
        if self.tail.len() > cap.max(1) * 2 {
            let excess = self.tail.len() - cap;
            self.tail.drain(..excess);
            self.elided += excess as u64;
        }
    }

    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.head.is_empty() && self.tail.is_empty()
    }

    /// The text, with the elision line if anything was left out; resets to empty.
    fn take(&mut self) -> (String, bool) {
        let cap = self.tail_cap();
        if self.tail.len() > cap {
            let excess = self.tail.len() - cap;
            self.tail.drain(..excess);
            self.elided += excess as u64;
        }
        // A tail that starts inside a character drops the partial character.
        let skip = self.tail.iter().take_while(|&&b| (b & 0xC0) == 0x80).count();
        self.elided += if self.elided > 0 { skip as u64 } else { 0 };
        let tail = if self.elided > 0 { &self.tail[skip..] } else { &self.tail[..] };
        let tail = String::from_utf8_lossy(tail);
        let mut out = std::mem::take(&mut self.head);
        let truncated = self.elided > 0;
        if truncated {
            if !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(&format!("[... {} bytes of output left out ...]\n", self.elided));
        }
        out.push_str(&tail);
        self.tail = Vec::new();
        self.elided = 0;
        (out, truncated)
    }
}

/// The text a terminal shows, built from its raw output. See the module documentation.
#[derive(Debug)]
pub(crate) struct Transcript {
    out: Bounded,
    /// The line being written, editable by CR, BS and erase-line.
    line: Vec<char>,
    col: usize,
    state: State,
    /// Bytes of the escape sequence being read (CSI parameters, OSC payload).
    seq: Vec<u8>,
    /// Whether the previous byte was ESC inside an OSC or opaque string (a possible ST).
    seq_escape: bool,
    utf8: [u8; 4],
    utf8_len: usize,
    utf8_need: usize,
    /// The nonce of the command being waited for.
    expected: Option<String>,
    /// Records whose marker has not come yet, oldest first.
    records: std::collections::VecDeque<Record>,
    /// The part of a record read so far.
    partial_record: Vec<u8>,
    finished: Option<Finished>,
    /// Bytes fed in all; lets a waiter see that output arrived.
    fed: u64,
    /// Reused to commit a line.
    scratch: String,
}

impl Transcript {
    /// An empty transcript that keeps at most about `limit` bytes of output (at least 64).
    pub(crate) fn new(limit: usize) -> Self {
        Transcript {
            out: Bounded::new(limit.max(64)),
            line: Vec::new(),
            col: 0,
            state: State::Ground,
            seq: Vec::new(),
            seq_escape: false,
            utf8: [0; 4],
            utf8_len: 0,
            utf8_need: 0,
            expected: None,
            records: std::collections::VecDeque::new(),
            partial_record: Vec::new(),
            finished: None,
            fed: 0,
            scratch: String::new(),
        }
    }

    /// Starts a command: forgets earlier output and waits for the marker carrying `nonce`.
    pub(crate) fn begin(&mut self, nonce: &str) {
        self.out.take();
        self.line.clear();
        self.col = 0;
        self.finished = None;
        self.expected = Some(nonce.to_owned());
    }

    /// Waits for the marker carrying `nonce` instead, keeping the output so far.
    pub(crate) fn expect(&mut self, nonce: &str) {
        self.finished = None;
        self.expected = Some(nonce.to_owned());
    }

    /// Feeds what the shell wrote to its record pipe: records, each ended by a NUL. Must be
    /// fed all that was written before the terminal output fed next.
    pub(crate) fn record(&mut self, bytes: &[u8]) {
        for piece in bytes.split_inclusive(|&b| b == 0) {
            let (body, ended) = match piece.split_last() {
                Some((0, body)) => (body, true),
                _ => (piece, false),
            };
            if self.partial_record.len() + body.len() <= MAX_RECORD {
                self.partial_record.extend_from_slice(body);
            } else {
                // Too long: dropped, up to its end.
                self.partial_record.clear();
                self.partial_record.push(0xff);
            }
            if ended {
                if let Some(record) = Record::parse(&self.partial_record) {
                    if self.records.len() == MAX_RECORDS {
                        self.records.pop_front();
                    }
                    self.records.push_back(record);
                }
                self.partial_record.clear();
            }
        }
    }

    /// Bytes fed so far.
    pub(crate) fn fed(&self) -> u64 {
        self.fed
    }

    /// Whether the awaited marker has arrived.
    pub(crate) fn is_finished(&self) -> bool {
        self.finished.is_some()
    }

    /// The finished command, once; the marker is then no longer awaited.
    pub(crate) fn take_finished(&mut self) -> Option<Finished> {
        let f = self.finished.take();
        if f.is_some() {
            self.expected = None;
        }
        f
    }

    /// The output since the last take, including the line being written.
    pub(crate) fn take_output(&mut self) -> (String, bool) {
        self.commit_line(false);
        self.out.take()
    }

    /// Feeds raw terminal output.
    pub(crate) fn feed(&mut self, bytes: &[u8]) {
        self.fed += bytes.len() as u64;
        let mut i = 0;
        while i < bytes.len() {
            // Fast path: whole lines of printable ASCII (ending in LF or CR LF) go straight out.
            if self.state == State::Ground && self.utf8_need == 0 && self.line.is_empty() {
                let rest = &bytes[i..];
                let (mut j, mut end) = (0, 0);
                while j < rest.len() {
                    match rest[j] {
                        0x20..=0x7e => j += 1,
                        b'\n' => {
                            j += 1;
                            end = j;
                        }
                        b'\r' if rest.get(j + 1) == Some(&b'\n') => {
                            j += 2;
                            end = j;
                        }
                        _ => break,
                    }
                }
                if end > 0 {
                    let mut s = std::mem::take(&mut self.scratch);
                    s.clear();
                    s.extend(rest[..end].iter().filter(|&&b| b != b'\r').map(|&b| char::from(b)));
                    self.out.push(&s);
                    self.scratch = s;
                    i += end;
                    continue;
                }
            }
            // Printable ASCII appended at the end of the line, CR LF ending it.
            if self.state == State::Ground && self.utf8_need == 0 && self.col == self.line.len() {
                let rest = &bytes[i..];
                let run = rest.iter().position(|b| !(0x20..=0x7e).contains(b)).unwrap_or(rest.len());
                if run > 0 && self.line.len() + run <= MAX_LINE_CHARS {
                    self.line.extend(rest[..run].iter().map(|&b| char::from(b)));
                    self.col += run;
                    i += run;
                    continue;
                }
                if rest.starts_with(b"\r\n") {
                    self.commit_line(true);
                    i += 2;
                    continue;
                }
            }
            self.byte(bytes[i]);
            i += 1;
        }
    }

    fn byte(&mut self, b: u8) {
        match self.state {
            State::Ground => self.ground(b),
            State::Escape => {
                self.state = match b {
                    b'[' => State::Csi,
                    b']' => State::Osc,
                    b'P' | b'X' | b'^' | b'_' => State::Opaque,
                    b' '..=b'/' => State::EscapeIntermediate,
                    0x1b => State::Escape,
                    _ => State::Ground,
                };
                self.seq.clear();
                self.seq_escape = false;
            }
            State::EscapeIntermediate => {
                self.state = if b == 0x1b { State::Escape } else { State::Ground };
            }
            State::Csi => match b {
                0x40..=0x7e => {
                    self.state = State::Ground;
                    self.csi(b);
                }
                0x1b => self.state = State::Escape,
                0x18 | 0x1a => self.state = State::Ground,
                _ => {
                    if self.seq.len() < MAX_SEQUENCE {
                        self.seq.push(b);
                    }
                }
            },
            State::Osc | State::Opaque => {
                if self.seq_escape {
                    self.seq_escape = false;
                    if b == b'\\' {
                        self.end_string();
                        return;
                    }
                    // ESC followed by anything else aborts the string and starts a new sequence.
                    self.state = State::Escape;
                    self.byte(b);
                    return;
                }
                match b {
                    0x07 => self.end_string(),
                    0x1b => self.seq_escape = true,
                    0x18 | 0x1a => self.state = State::Ground,
                    _ => {
                        if self.state == State::Osc {
                            if self.seq.len() < MAX_SEQUENCE {
                                self.seq.push(b);
                            } else {
                                // Too long to be a marker: drop it and what follows of it.
                                self.state = State::Opaque;
                            }
                        }
                    }
                }
            }
        }
    }

    fn ground(&mut self, b: u8) {
        if self.utf8_need > 0 {
            if (b & 0xC0) == 0x80 {
                self.utf8[self.utf8_len] = b;
                self.utf8_len += 1;
                if self.utf8_len == self.utf8_need {
                    self.utf8_need = 0;
                    let c = std::str::from_utf8(&self.utf8[..self.utf8_len])
                        .ok()
                        .and_then(|s| s.chars().next())
                        .unwrap_or('\u{FFFD}');
                    self.put(c);
                }
                return;
            }
            // A sequence cut short: one replacement character, then the byte on its own.
            self.utf8_need = 0;
            self.put('\u{FFFD}');
        }
        match b {
            0x20..=0x7e => self.put(b as char),
            b'\n' => self.commit_line(true),
            b'\r' => self.col = 0,
            0x08 => self.col = self.col.saturating_sub(1),
            b'\t' => self.put('\t'),
            0x1b => self.state = State::Escape,
            0x00..=0x1f | 0x7f => {}
            0xC2..=0xDF => self.start_utf8(b, 2),
            0xE0..=0xEF => self.start_utf8(b, 3),
            0xF0..=0xF4 => self.start_utf8(b, 4),
            _ => self.put('\u{FFFD}'),
        }
    }

    fn start_utf8(&mut self, b: u8, need: usize) {
        self.utf8[0] = b;
        self.utf8_len = 1;
        self.utf8_need = need;
    }

    fn put(&mut self, c: char) {
        if self.col < self.line.len() {
            self.line[self.col] = c;
        } else {
            if self.line.len() >= MAX_LINE_CHARS {
                self.commit_line(false);
            }
            self.line.push(c);
        }
        self.col += 1;
    }

    fn commit_line(&mut self, newline: bool) {
        if !self.line.is_empty() || newline {
            let mut s = std::mem::take(&mut self.scratch);
            s.clear();
            s.extend(self.line.iter());
            if newline {
                s.push('\n');
            }
            self.out.push(&s);
            self.scratch = s;
        }
        self.line.clear();
        self.col = 0;
    }

    fn csi(&mut self, last: u8) {
        let private = self.seq.first().is_some_and(|b| matches!(b, b'?' | b'>' | b'<' | b'='));
        if private {
            return;
        }
        let n = std::str::from_utf8(&self.seq).ok().and_then(|s| s.split(';').next()?.parse::<usize>().ok());
        match last {
            // Erase in line: 0 (default) to the end, 1 to the start, 2 all.
            b'K' => match n.unwrap_or(0) {
                0 => self.line.truncate(self.col),
                1 => {
                    let upto = self.col.min(self.line.len());
                    self.line[..upto].iter_mut().for_each(|c| *c = ' ');
                }
                _ => self.line.clear(),
            },
            // Cursor back, forward, to a column.
            b'D' => self.col = self.col.saturating_sub(n.unwrap_or(1).max(1)),
            b'C' => {
                let to = (self.col + n.unwrap_or(1).max(1)).min(MAX_LINE_CHARS);
                while self.line.len() < to {
                    self.line.push(' ');
                }
                self.col = to;
            }
            b'G' => self.col = n.unwrap_or(1).clamp(1, MAX_LINE_CHARS) - 1,
            _ => {}
        }
    }

    fn end_string(&mut self) {
        let was_osc = self.state == State::Osc;
        self.state = State::Ground;
        if !was_osc {
            return;
        }
        let Some(token) = self.seq.strip_prefix(MARKER_OSC.as_bytes()).and_then(|s| s.strip_prefix(b";")) else {
            return;
        };
        // A marker without its record was printed by someone else: it is output like any other
        // escape sequence, dropped.
        let Some(at) = self.records.iter().position(|r| r.token.as_bytes() == token) else { return };
        let record = self.records.remove(at).expect("found");
        // Records before it belong to markers that will never come.
        self.records.drain(..at);
        if self.finished.is_some() || self.expected.as_deref() != Some(record.nonce.as_str()) {
            return;
        }
        let (text, truncated) = self.take_output();
        self.finished = Some(Finished { text, truncated, status: record.status, cwd: record.cwd });
    }

    /// Whether no output is pending.
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        self.out.is_empty() && self.line.is_empty()
    }

    /// Bytes held for output, whatever was fed: the bound the module promises.
    #[cfg(test)]
    fn held_bytes(&self) -> usize {
        self.out.head.capacity() + self.out.tail.capacity() + self.line.capacity() * 4 + self.seq.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shell's end of a command: its record, then its marker (returned).
    fn end(t: &mut Transcript, nonce: &str, status: i32, cwd: &str) -> Vec<u8> {
        let token = format!("t{}", t.fed());
        t.record(format!("{nonce};{token};{status};{cwd}\0").as_bytes());
        format!("\x1b]{MARKER_OSC};{token}\x07").into_bytes()
    }

    fn run(limit: usize, chunks: &[&[u8]]) -> Finished {
        let mut t = Transcript::new(limit);
        t.begin("n1");
        for c in chunks {
            t.feed(c);
        }
        let m = end(&mut t, "n1", 0, "/");
        t.feed(&m);
        t.take_finished().expect("the marker ends the command")
    }

    #[test]
    fn strips_escapes_and_carriage_returns() {
        let f = run(1 << 20, &[b"\x1b[1;31mred\x1b[0m\r\n", b"10%\r20%\r30%\r\n", b"\x1b]0;title\x07ok\r\n"]);
        assert_eq!(f.text, "red\n30%\nok\n");
        let f = run(1 << 20, &[b"abcdef\rxy\r\n", b"progress 1\r\x1b[Kdone\r\n", b"ab\x08\x08cd\n"]);
        assert_eq!(f.text, "xycdef\ndone\ncd\n");
    }

    #[test]
    fn decodes_utf8_split_across_chunks() {
        let bytes = "é€😀".as_bytes();
        let chunks: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(run(1 << 20, &chunks).text, "é€😀");
        assert_eq!(run(1 << 20, &[b"a\xffb\xe2\x82c"]).text, "a\u{FFFD}b\u{FFFD}c");
    }

    #[test]
    fn marker_needs_the_nonce() {
        let mut t = Transcript::new(1 << 20);
        t.begin("right");
        let m = end(&mut t, "wrong", 0, "/");
        t.feed(&m);
        t.feed(b"still running\n");
        assert!(!t.is_finished());
        let m = end(&mut t, "right", 3, "/tmp/a;b");
        let (a, b) = m.split_at(7);
        t.feed(a);
        assert!(!t.is_finished());
        t.feed(b);
        let f = t.take_finished().unwrap();
        assert_eq!((f.text.as_str(), f.status, f.cwd.as_str()), ("still running\n", 3, "/tmp/a;b"));
        // Once taken, the same marker again is nothing.
        t.feed(&m);
        assert!(!t.is_finished());
    }

    #[test]
    fn a_marker_without_its_record_is_output() {
        let mut t = Transcript::new(1 << 20);
        t.begin("n");
        // What a command can print: any token, any text; no record carries it.
        t.feed(format!("\x1b]{MARKER_OSC};guess\x07\x1b]{MARKER_OSC};n;0;/fake\x07").as_bytes());
        t.feed(b"more\n");
        assert!(!t.is_finished());
        // Records split across reads, one too long, one garbled: only whole good ones count.
        t.record(b"n;tok;7;/re");
        t.record(&[b'x'; MAX_RECORD + 10]);
        t.record(b"al\0n;;1;/\0");
        t.record(&[b'y'; MAX_RECORD + 10]);
        t.record(b"\0");
        t.feed(format!("\x1b]{MARKER_OSC};tok\x07").as_bytes());
        assert!(!t.is_finished(), "the record was cut by the long one");
        t.record(b"n;tok2;7;/real\0");
        t.feed(format!("\x1b]{MARKER_OSC};tok2\x07").as_bytes());
        let f = t.take_finished().unwrap();
        assert_eq!((f.text.as_str(), f.status, f.cwd.as_str()), ("more\n", 7, "/real"));
    }

    #[test]
    fn garbage_cannot_swallow_the_marker() {
        let f = run(1 << 20, &[b"x\xe2", b"\x1b]unterminated", b"\x1b[12", b"\x1bP", b"dropped"]);
        assert_eq!(f.text, "x\u{FFFD}");
    }

    #[test]
    fn keeps_head_and_tail_in_bounded_memory() {
        let mut t = Transcript::new(1000);
        t.begin("n");
        // Chunks of the pump's read size.
        let chunk = "y\n".repeat(8 * 1024);
        let mut max_held = 0;
        for _ in 0..3200 {
            t.feed(chunk.as_bytes());
            max_held = max_held.max(t.held_bytes());
        }
        let m = end(&mut t, "n", 0, "/");
        t.feed(&m);
        let f = t.take_finished().unwrap();
        assert!(f.truncated);
        assert!(max_held < 48 * 1024, "held {max_held} bytes");
        assert!(f.text.starts_with("y\ny\n"));
        assert!(f.text.ends_with("y\ny\n"));
        let left_out: u64 = f.text.split("[... ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
        let kept = f.text.lines().filter(|l| *l == "y").count() as u64 * 2;
        assert_eq!(left_out + kept, 3200 * 16 * 1024);
        assert!(t.is_empty());
    }

    #[test]
    fn tail_never_starts_inside_a_character() {
        let mut t = Transcript::new(100);
        t.begin("n");
        t.feed("é".repeat(1000).as_bytes());
        let m = end(&mut t, "n", 0, "/");
        t.feed(&m);
        let f = t.take_finished().unwrap();
        assert!(f.truncated);
        assert!(!f.text.contains('\u{FFFD}'));
    }
}
