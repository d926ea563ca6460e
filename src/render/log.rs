//! The log of one render: every line an engine printed, kept in memory with a hard cap.
//!
//! A renderer that loops printing the same warning can write gigabytes; the farm stores the log as
//! a blob and shows its tail on the page, so the buffer keeps the first and the last half of the
//! cap and counts what it dropped in between (the start says what was rendered and how, the end
//! says why it stopped). The last lines are kept separately, already decoded, for `log_tail`.

use std::collections::VecDeque;

/// Whole-log cap: 16 MiB, half for the head, half for the tail.
pub(crate) const LOG_CAP: usize = 16 * 1024 * 1024;
/// How many lines `tail_text` returns.
pub(crate) const TAIL_LINES: usize = 40;
/// Longest line kept (bytes); the rest of a longer line is dropped and counted.
pub(crate) const MAX_LINE: usize = 64 * 1024;
/// Longest line kept in the decoded tail (characters are cut at a char boundary).
const MAX_TAIL_LINE: usize = 1000;

/// A capped log that keeps its head and its tail.
pub(crate) struct LogBuffer {
    cap_half: usize,
    head: Vec<u8>,
    tail: VecDeque<u8>,
    omitted: u64,
    last_lines: VecDeque<String>,
}

impl LogBuffer {
    /// An empty log capped at [`LOG_CAP`].
    pub(crate) fn new() -> LogBuffer {
        LogBuffer::with_cap(LOG_CAP)
    }

    /// An empty log capped at `cap` bytes (tests use small caps).
    pub(crate) fn with_cap(cap: usize) -> LogBuffer {
        LogBuffer {
            cap_half: cap / 2,
            head: Vec::new(),
            tail: VecDeque::new(),
            omitted: 0,
            last_lines: VecDeque::new(),
        }
    }

    /// Appends one line of engine output (without its terminator).
    pub(crate) fn push_line(&mut self, line: &[u8]) {
        self.append(line);
        self.append(b"\n");
        let text = String::from_utf8_lossy(line);
        self.remember(cut(&text, MAX_TAIL_LINE));
    }

    /// Appends a line written by the farm itself (command line, how the process ended).
    pub(crate) fn note(&mut self, text: &str) {
        self.push_line(format!("[swarm] {text}").as_bytes());
    }

    fn remember(&mut self, line: &str) {
        if self.last_lines.len() == TAIL_LINES {
            self.last_lines.pop_front();
        }
        self.last_lines.push_back(line.to_owned());
    }

    fn append(&mut self, mut bytes: &[u8]) {
        let room = self.cap_half.saturating_sub(self.head.len());
        if room > 0 {
            let n = room.min(bytes.len());
            self.head.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
        }
        self.tail.extend(bytes);
        let over = self.tail.len().saturating_sub(self.cap_half);
        if over > 0 {
            self.tail.drain(..over);
            self.omitted += over as u64;
        }
    }

    /// The last [`TAIL_LINES`] lines, newline-separated.
    pub(crate) fn tail_text(&self) -> String {
        let lines: Vec<&str> = self.last_lines.iter().map(String::as_str).collect();
        lines.join("\n")
    }

    /// The whole log, with a marker where bytes were dropped.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.head.len() + self.tail.len() + 64);
        out.extend_from_slice(&self.head);
        if self.omitted > 0 {
            out.extend_from_slice(
                format!("\n[swarm] ... {} bytes of log omitted ...\n", self.omitted).as_bytes(),
            );
        }
        out.extend(self.tail.iter());
        out
    }
}

/// `text` cut to at most `max` bytes at a char boundary.
pub(crate) fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_everything_under_the_cap() {
        let mut log = LogBuffer::with_cap(100);
        log.push_line(b"one");
        log.note("two");
        assert_eq!(log.to_bytes(), b"one\n[swarm] two\n");
        assert_eq!(log.tail_text(), "one\n[swarm] two");
    }

    #[test]
    fn keeps_head_and_tail_and_counts_the_gap() {
        let mut log = LogBuffer::with_cap(24);
        for i in 0..10 {
            log.push_line(format!("line{i}").as_bytes());
        }
        let bytes = String::from_utf8(log.to_bytes()).unwrap();
        assert!(bytes.starts_with("line0\nline1\n"), "{bytes}");
        assert!(bytes.ends_with("line8\nline9\n"), "{bytes}");
        assert!(bytes.contains("bytes of log omitted"), "{bytes}");
        // 10 lines of 6 bytes = 60; 24 kept.
        assert!(bytes.contains("... 36 bytes"), "{bytes}");
    }

    #[test]
    fn tail_holds_the_last_lines_lossily_decoded() {
        let mut log = LogBuffer::new();
        for i in 0..100 {
            log.push_line(format!("l{i}").as_bytes());
        }
        log.push_line(b"bad \xff byte");
        let tail = log.tail_text();
        assert_eq!(tail.lines().count(), TAIL_LINES);
        assert!(tail.starts_with("l61\n"), "{tail}");
        assert!(tail.ends_with("bad \u{fffd} byte"), "{tail}");
    }

    #[test]
    fn cut_respects_char_boundaries() {
        assert_eq!(cut("héllo", 2), "h");
        assert_eq!(cut("héllo", 3), "hé");
        assert_eq!(cut("abc", 10), "abc");
    }
}
