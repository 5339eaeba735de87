//! The pure parts of reading a container's output: lines cut out of chunks however they fall,
//! each stream apart ([`LogLine`]); a text counted across chunks; the last lines kept; what a
//! second reading adds to a first.

use std::collections::VecDeque;

use super::condition::LogStream;

/// One line of a container's output, from one stream, without its line end (`\n` or `\r\n`);
/// invalid UTF-8 replaced. A last line without a line end comes when the output ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// The stream it came from.
    pub stream: LogStream,
    /// The line.
    pub text: String,
}

/// The part of `chunk` (which starts `at` bytes into its stream) past the first `taken` bytes
/// of the stream, if any.
pub(super) fn unread(chunk: &[u8], at: usize, taken: usize) -> Option<&[u8]> {
    (at + chunk.len() > taken).then(|| &chunk[taken.saturating_sub(at)..])
}

/// Where a stream's state is kept in a pair.
pub(super) fn slot(which: LogStream) -> usize {
    match which {
        LogStream::Stdout => 0,
        LogStream::Stderr => 1,
    }
}

/// One stream's bytes cut into lines, however its chunks fall.
#[derive(Debug, Default)]
pub(super) struct Lines {
    /// The start of a line whose end has not come.
    partial: Vec<u8>,
}

impl Lines {
    /// Each line `chunk` completes, to `out`.
    pub(super) fn feed(&mut self, chunk: &[u8], out: &mut impl FnMut(String)) {
        let mut rest = chunk;
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            self.partial.extend_from_slice(&rest[..end]);
            out(text(&std::mem::take(&mut self.partial)));
            rest = &rest[end + 1..];
        }
        self.partial.extend_from_slice(rest);
    }

    /// The line begun and not ended, if any.
    pub(super) fn pending(&self) -> Option<String> {
        (!self.partial.is_empty()).then(|| text(&self.partial))
    }
}

fn text(line: &[u8]) -> String {
    String::from_utf8_lossy(line.strip_suffix(b"\r").unwrap_or(line)).into_owned()
}

/// Both streams' lines, kept apart.
#[derive(Debug, Default)]
pub(super) struct Splitter {
    streams: [Lines; 2],
}

impl Splitter {
    pub(super) fn feed(&mut self, which: LogStream, chunk: &[u8], out: &mut impl FnMut(LogLine)) {
        self.streams[slot(which)].feed(chunk, &mut |text| out(LogLine { stream: which, text }));
    }

    /// The lines begun and not ended, once the output ended.
    pub(super) fn finish(&mut self, out: &mut impl FnMut(LogLine)) {
        for which in [LogStream::Stdout, LogStream::Stderr] {
            if let Some(text) = self.streams[slot(which)].pending() {
                out(LogLine { stream: which, text });
            }
        }
        *self = Splitter::default();
    }
}

/// Counts the occurrences of a text in one stream that do not overlap, however its chunks fall:
/// the end of a chunk that may start an occurrence is carried to the next.
#[derive(Debug)]
pub(super) struct Needle {
    text: Vec<u8>,
    carry: Vec<u8>,
}

impl Needle {
    pub(super) fn new(text: &str) -> Needle {
        Needle { text: text.as_bytes().to_vec(), carry: Vec::new() }
    }

    /// The occurrences `chunk` completes.
    pub(super) fn feed(&mut self, chunk: &[u8]) -> usize {
        let n = self.text.len();
        if n == 0 {
            return 0;
        }
        let mut hay = std::mem::take(&mut self.carry);
        hay.extend_from_slice(chunk);
        let (mut found, mut at, mut after) = (0, 0, 0);
        while at + n <= hay.len() {
            if hay[at..at + n] == self.text[..] {
                found += 1;
                at += n;
                after = at;
            } else {
                at += 1;
            }
        }
        // An occurrence still to complete starts in the last n-1 bytes, after the last found.
        self.carry = hay.split_off(after.max(hay.len().saturating_sub(n - 1)));
        found
    }
}

/// The last lines of a container's output (both streams), for an error.
#[derive(Debug)]
pub(super) struct Recent {
    lines: VecDeque<String>,
    keep: usize,
    splitter: Splitter,
}

impl Recent {
    pub(super) fn new(keep: usize) -> Recent {
        Recent { lines: VecDeque::new(), keep, splitter: Splitter::default() }
    }

    pub(super) fn feed(&mut self, which: LogStream, chunk: &[u8]) {
        let (lines, keep) = (&mut self.lines, self.keep);
        self.splitter.feed(which, chunk, &mut |line| {
            if lines.len() == keep {
                lines.pop_front();
            }
            lines.push_back(line.text);
        });
    }

    /// The lines kept, and those begun and not ended, one a line; `(none)` when there are none.
    pub(super) fn text(&self) -> String {
        let pending = self.splitter.streams.iter().filter_map(Lines::pending);
        let all: Vec<String> = self.lines.iter().cloned().chain(pending).collect();
        if all.is_empty() { "(none)".to_string() } else { all.join("\n") }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every way of cutting `s` in three.
    fn cuts(s: &str) -> Vec<Vec<&[u8]>> {
        let b = s.as_bytes();
        let mut out = Vec::new();
        for i in 0..=b.len() {
            for j in i..=b.len() {
                out.push(vec![&b[..i], &b[i..j], &b[j..]]);
            }
        }
        out
    }

    #[test]
    fn a_text_is_counted_however_the_chunks_fall() {
        for (text, output, want) in [
            ("ready", "starting\nready\n", 1),
            ("ready", "ready ready\nnot ready", 3),
            ("aa", "aaaa", 2), // occurrences do not overlap
            ("aa", "aaa", 1),  // …so the third a starts none
            ("aba", "ababa", 1),
            ("line\nnext", "a line\nnext one", 1), // a text may span lines
            ("ready", "rea\ndy", 0),
            ("é!", "café! café!", 2), // bytes of UTF-8 cut anywhere
        ] {
            for chunks in cuts(output) {
                let mut needle = Needle::new(text);
                let found: usize = chunks.iter().map(|c| needle.feed(c)).sum();
                assert_eq!(found, want, "{text:?} in {chunks:?}");
            }
        }
    }

    #[test]
    fn lines_are_whole_however_the_chunks_fall_and_streams_stay_apart() {
        for chunks in cuts("one\r\ntwo\n\nthree") {
            let mut split = Splitter::default();
            let mut got = Vec::new();
            for c in &chunks {
                split.feed(LogStream::Stdout, c, &mut |l| got.push(l));
            }
            // An error line between two halves of an output line does not join them.
            split.feed(LogStream::Stderr, b"oops\nhalf", &mut |l| got.push(l));
            split.finish(&mut |l| got.push(l));
            let out = |t: &str| LogLine { stream: LogStream::Stdout, text: t.into() };
            let err = |t: &str| LogLine { stream: LogStream::Stderr, text: t.into() };
            assert_eq!(got, [out("one"), out("two"), out(""), err("oops"), out("three"), err("half")], "{chunks:?}");
        }
    }

    #[test]
    fn a_second_reading_hands_on_only_what_the_first_did_not() {
        // The first reading took "one\ntw" (6 bytes); the second reads it all, cut its own way.
        let mut rest = Vec::new();
        let mut at = 0;
        for chunk in [&b"on"[..], b"e\n", b"two\nthr", b"ee"] {
            if let Some(r) = unread(chunk, at, 6) {
                rest.extend_from_slice(r);
            }
            at += chunk.len();
        }
        assert_eq!(rest, b"o\nthree");
        assert_eq!(unread(b"abc", 0, 0), Some(&b"abc"[..]));
        assert_eq!(unread(b"abc", 0, 3), None);
    }

    #[test]
    fn the_last_lines_are_kept_with_the_one_not_ended() {
        let mut recent = Recent::new(2);
        assert_eq!(recent.text(), "(none)");
        recent.feed(LogStream::Stdout, b"1\n2\n3\n4");
        recent.feed(LogStream::Stderr, b"err\n");
        assert_eq!(recent.text(), "3\nerr\n4");
    }
}
