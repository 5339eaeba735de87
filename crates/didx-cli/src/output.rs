//! Everything the command prints to people: status lines on stderr (`say`), and writes that a
//! closed pipe (`didx … | head -1`) cannot turn into a panic — didx stops writing to that
//! stream and carries on (clean-up by policy, the commands' exit code). `println!` would panic.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);
static STDERR_CLOSED: AtomicBool = AtomicBool::new(false);

fn put(closed: &AtomicBool, mut w: impl Write, text: &str) {
    if !closed.load(Ordering::Relaxed) && w.write_all(text.as_bytes()).and_then(|()| w.flush()).is_err() {
        closed.store(true, Ordering::Relaxed);
    }
}

/// `text` to stdout, as is.
pub fn out(text: &str) {
    put(&STDOUT_CLOSED, std::io::stdout().lock(), text)
}

/// `text` to stderr, as is.
pub fn err(text: &str) {
    put(&STDERR_CLOSED, std::io::stderr().lock(), text)
}

tokio::task_local! {
    /// In a matrix, the `[VER] ` prefix of the version whose run is being polled: every status
    /// line said meanwhile carries it.
    pub static PREFIX: String;
}

/// The current task's matrix prefix, or nothing.
pub fn prefix() -> String {
    PREFIX.try_with(Clone::clone).unwrap_or_default()
}

/// A status line on stderr: `didx: MSG` (in a matrix, `[VER] didx: MSG`).
pub fn say(msg: impl std::fmt::Display) {
    err(&format!("{}didx: {msg}\n", prefix()));
}

/// When didx started, for --timings.
pub static STARTED: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

/// `--timings`: one line per phase, milliseconds since didx started.
#[derive(Clone, Copy)]
pub struct Timings(pub bool);

impl Timings {
    /// Say that `phase` was reached, when timings are on.
    pub fn mark(self, phase: &str) {
        if self.0 {
            let ms = STARTED.get().map(|t| t.elapsed().as_millis()).unwrap_or(0);
            say(format!("timing {phase} {ms}"));
        }
    }
}

/// `YYYY-MM-DD HH:MM` of a Unix time, in UTC.
pub fn utc_date(t: u64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(t as i64) {
        Ok(d) => format!("{}-{:02}-{:02} {:02}:{:02}", d.year(), d.month() as u8, d.day(), d.hour(), d.minute()),
        Err(_) => format!("@{t}"),
    }
}
