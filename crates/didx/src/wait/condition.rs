//! What a wait waits for ([`WaitFor`]): its kinds, how each reads in an error, the values
//! a wait cannot start with; and [`LogStream`].

use std::time::Duration;

use crate::error::{Error, Result};

/// What to wait for, in a container ([`wait_for`](super::wait_for)). Made by its
/// constructors, or as a variant (`WaitFor::Log { text: "up".into(), stream: None, times: 2 }`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WaitFor {
    /// `text` (a substring, not a pattern) appears in the container's output `times` times
    /// (occurrences that do not overlap, however the output is cut into chunks and lines), on
    /// `stream`, or on stdout and stderr both when `None`.
    Log {
        /// The text looked for.
        text: String,
        /// The stream it is looked for on (`None`: both).
        stream: Option<LogStream>,
        /// How many times it must appear (at least 1).
        times: usize,
    },
    /// Something listens on TCP `port` in the container's network namespace, on any address
    /// (probed by an exec of `cat` in the container: see the [module](super) doc).
    Port {
        /// The port, as the container sees it (not a published one).
        port: u16,
    },
    /// An HTTP `GET` of `path` on `port` in the container answers `status` (probed by an exec
    /// of `wget` or `curl` in the container: see the [module](super) doc).
    Http {
        /// The port, as the container sees it.
        port: u16,
        /// The path, starting with `/` (a query may follow).
        path: String,
        /// The status wanted.
        status: u16,
    },
    /// The container's health check reports `healthy`; `unhealthy` fails at once, and so does
    /// a container without a health check.
    Healthy,
    /// The container exits with `code`; another code fails at once.
    Exit {
        /// The exit code wanted.
        code: i64,
    },
    /// `length` passes (while the container does not exit). Prefer a condition.
    Duration {
        /// How long.
        length: Duration,
    },
}

impl WaitFor {
    /// `text` once on stdout or stderr.
    pub fn log(text: impl Into<String>) -> WaitFor {
        WaitFor::Log { text: text.into(), stream: None, times: 1 }
    }
    /// `text` `times` times on stdout and stderr together.
    pub fn log_times(text: impl Into<String>, times: usize) -> WaitFor {
        WaitFor::Log { text: text.into(), stream: None, times }
    }
    /// `text` once on stdout.
    pub fn message_on_stdout(text: impl Into<String>) -> WaitFor {
        WaitFor::Log { text: text.into(), stream: Some(LogStream::Stdout), times: 1 }
    }
    /// `text` once on stderr.
    pub fn message_on_stderr(text: impl Into<String>) -> WaitFor {
        WaitFor::Log { text: text.into(), stream: Some(LogStream::Stderr), times: 1 }
    }
    /// TCP `port` listening in the container.
    pub fn port(port: u16) -> WaitFor {
        WaitFor::Port { port }
    }
    /// `GET path` on `port` answering 200.
    pub fn http(port: u16, path: impl Into<String>) -> WaitFor {
        WaitFor::Http { port, path: path.into(), status: 200 }
    }
    /// `GET path` on `port` answering `status`.
    pub fn http_status(port: u16, path: impl Into<String>, status: u16) -> WaitFor {
        WaitFor::Http { port, path: path.into(), status }
    }
    /// The health check reporting `healthy`.
    pub fn healthy() -> WaitFor {
        WaitFor::Healthy
    }
    /// The container's exit with `code`.
    pub fn exit(code: i64) -> WaitFor {
        WaitFor::Exit { code }
    }
    /// `length` passing.
    pub fn duration(length: Duration) -> WaitFor {
        WaitFor::Duration { length }
    }
    /// `secs` seconds passing.
    pub fn seconds(secs: u64) -> WaitFor {
        WaitFor::Duration { length: Duration::from_secs(secs) }
    }

    /// The values a wait cannot start with, as [`Error::Invalid`].
    pub(super) fn check(&self) -> Result<()> {
        match self {
            WaitFor::Log { text, .. } if text.is_empty() => Err(Error::invalid("log text to wait for", "", "a non-empty substring")),
            WaitFor::Log { times: 0, .. } => Err(Error::invalid("times to wait for a log text", "0", "at least 1")),
            WaitFor::Port { port: 0 } | WaitFor::Http { port: 0, .. } => {
                Err(Error::invalid("port to wait for", "0", "a port from 1 to 65535"))
            }
            WaitFor::Http { path, .. } if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) => {
                Err(Error::invalid("HTTP path to wait for", path.clone(), "a path starting with /, without spaces"))
            }
            WaitFor::Http { status, .. } if !(100..=599).contains(status) => {
                Err(Error::invalid("HTTP status to wait for", status.to_string(), "a status from 100 to 599"))
            }
            _ => Ok(()),
        }
    }
}

impl std::fmt::Display for WaitFor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WaitFor::Log { text, stream, times } => {
                write!(f, "log text {text:?}")?;
                if *times != 1 {
                    write!(f, " {times} times")?;
                }
                match stream {
                    Some(s) => write!(f, " on {s}"),
                    None => Ok(()),
                }
            }
            WaitFor::Port { port } => write!(f, "TCP port {port} listening"),
            WaitFor::Http { port, path, status } => write!(f, "HTTP {status} from GET {path} on port {port}"),
            WaitFor::Healthy => f.write_str("its health check to report healthy"),
            WaitFor::Exit { code } => write!(f, "its exit with code {code}"),
            WaitFor::Duration { length } => write!(f, "{} s to pass", length.as_secs_f32()),
        }
    }
}

/// Which of a container's output streams a line came from (a TTY's output is stdout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

impl std::fmt::Display for LogStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_waits_are_usage_errors_and_conditions_read_well() {
        for bad in [
            WaitFor::log(""),
            WaitFor::log_times("x", 0),
            WaitFor::port(0),
            WaitFor::http(80, "health"),
            WaitFor::http(80, "/a b"),
            WaitFor::http_status(80, "/", 42),
        ] {
            assert!(bad.check().unwrap_err().is_usage(), "{bad:?}");
        }
        WaitFor::http(80, "/health?full=1").check().unwrap();
        assert_eq!(WaitFor::log_times("up", 2).to_string(), "log text \"up\" 2 times");
        assert_eq!(WaitFor::message_on_stderr("up").to_string(), "log text \"up\" on stderr");
        assert_eq!(WaitFor::http(8080, "/health").to_string(), "HTTP 200 from GET /health on port 8080");
        assert_eq!(WaitFor::duration(Duration::from_millis(1500)).to_string(), "1.5 s to pass");
    }
}
