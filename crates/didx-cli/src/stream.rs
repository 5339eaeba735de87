//! Where a run's command output goes: straight through (a single run), or line by line with
//! the version's `[VER] ` prefix (a matrix's runs; stdout to stderr with `--json`, so stdout
//! holds only the summary). Whole lines only, so versions running at once never interleave
//! within a line.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;

use crate::output;

/// Where a run's command output goes: as is (a single run), or line by line with the
/// version's prefix (a matrix; stdout to stderr with `--json`).
pub enum Stream {
    /// Straight through.
    Plain(Box<dyn AsyncWrite + Unpin + Send>),
    /// Whole lines, each prefixed; the partial last line is held until its newline.
    Prefixed { prefix: String, to_stderr: bool, pending: Vec<u8> },
}

/// A run's stdout and stderr.
pub fn streams(matrix: Option<&(String, bool)>) -> (Stream, Stream) {
    match matrix {
        None => (Stream::Plain(Box::new(tokio::io::stdout())), Stream::Plain(Box::new(tokio::io::stderr()))),
        Some((prefix, json)) => (
            Stream::Prefixed { prefix: prefix.clone(), to_stderr: *json, pending: Vec::new() },
            Stream::Prefixed { prefix: prefix.clone(), to_stderr: true, pending: Vec::new() },
        ),
    }
}

impl Stream {
    /// Write out a partial last line (with a newline), once the run is over.
    pub fn finish(&mut self) {
        if let Stream::Prefixed { pending, .. } = self
            && !pending.is_empty()
        {
            pending.push(b'\n');
            self.emit();
        }
    }

    /// Write every whole line held, each with the prefix, in one write (so lines of
    /// versions running at once never interleave within a line).
    fn emit(&mut self) {
        if let Stream::Prefixed { prefix, to_stderr, pending } = self
            && let Some(end) = pending.iter().rposition(|b| *b == b'\n')
        {
            let lines: Vec<u8> = pending.drain(..=end).collect();
            let mut text = String::new();
            for line in String::from_utf8_lossy(&lines).split_inclusive('\n') {
                text.push_str(prefix);
                text.push_str(line);
            }
            if *to_stderr { output::err(&text) } else { output::out(&text) }
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        match this {
            Stream::Plain(w) => Pin::new(w).poll_write(cx, buf),
            Stream::Prefixed { pending, .. } => {
                pending.extend_from_slice(buf);
                this.emit();
                Poll::Ready(Ok(buf.len()))
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(w) => Pin::new(w).poll_flush(cx),
            Stream::Prefixed { .. } => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(w) => Pin::new(w).poll_shutdown(cx),
            Stream::Prefixed { .. } => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixed_lines_hold_a_partial_line() {
        let mut s = Stream::Prefixed { prefix: "[v] ".into(), to_stderr: true, pending: Vec::new() };
        if let Stream::Prefixed { pending, .. } = &mut s {
            pending.extend_from_slice(b"a\nb");
        }
        s.emit();
        let Stream::Prefixed { pending, .. } = &s else { unreachable!() };
        assert_eq!(pending, b"b");
    }
}
