//! A container's output followed: line by line to a consumer ([`follow_logs`]), or searched
//! for a log text ([`WaitFor::Log`]); with what a followed reading missed at the container's
//! stop read again.

use bollard::Docker;
use bollard::container::LogOutput;
use bytes::Bytes;
use futures_util::StreamExt;

use super::condition::{LogStream, WaitFor};
use super::state::{GONE, LAST_LINES, POLL_INTERVAL, Seen, exit_code, exited, failed, has_started, over};
use super::text::{LogLine, Needle, Recent, Splitter, slot, unread};
use crate::engine::Engine;
use crate::error::{Error, Result};

/// Following a container's logs ([`follow_logs`]): a task of the caller's runtime, which ends
/// when the container stops. Dropping it (or [`stop`](Self::stop)) stops following.
#[derive(Debug)]
#[must_use = "dropping a LogFollower stops following the logs"]
pub struct LogFollower {
    task: Option<tokio::task::JoinHandle<Result<()>>>,
}

impl LogFollower {
    /// Wait until the container has stopped and every line went to the consumer; the engine
    /// call that failed, if one did (a container that does not exist, say).
    pub async fn finished(mut self) -> Result<()> {
        let Some(task) = self.task.take() else { return Ok(()) };
        task.await.map_err(|source| Error::Task { what: "following a container's logs", source })?
    }

    /// Stop following now, as dropping does.
    pub fn stop(self) {}

    /// Whether following has ended (the container stopped, or a call failed).
    pub fn is_finished(&self) -> bool {
        self.task.as_ref().is_none_or(|t| t.is_finished())
    }
}

impl Drop for LogFollower {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Hand each line of `container`'s output to `consumer` as it comes, stdout and stderr apart
/// (each line whole however the engine cuts the output), from the container's start until it
/// stops; a container created but not yet started is waited for. Runs as a task of the
/// caller's tokio runtime (call it within one), until the container stops or the returned
/// [`LogFollower`] is dropped.
///
/// ```no_run
/// # async fn demo(docker: &didx::bollard::Docker) -> didx::Result<()> {
/// use didx::wait::{LogStream, follow_logs};
///
/// let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
/// let follower = follow_logs(docker, "web", move |line| {
///     if line.stream == LogStream::Stderr {
///         let _ = tx.send(line.text);
///     }
/// });
/// while let Some(line) = rx.recv().await {
///     println!("web said on stderr: {line}");
/// }
/// follower.finished().await?; // the container stopped
/// # Ok(()) }
/// ```
pub fn follow_logs<F>(docker: &Docker, container: &str, consumer: F) -> LogFollower
where
    F: FnMut(LogLine) + Send + 'static,
{
    let engine = over(docker);
    let task = tokio::spawn(follow(engine, container.to_string(), consumer));
    LogFollower { task: Some(task) }
}

async fn follow(engine: Engine, container: String, mut consumer: impl FnMut(LogLine) + Send) -> Result<()> {
    loop {
        // A reading begun once the container has started sees all its output, to its stop; one
        // begun before may end at once, empty (then read again).
        let started = engine.inspect_if_exists(&container).await?.is_none_or(|i| has_started(&i));
        let mut lines = Splitter::default();
        let mut taken = [0; 2];
        let stream = engine.logs_followed(&container);
        futures_util::pin_mut!(stream);
        while let Some(chunk) = stream.next().await {
            if let Some((which, bytes)) = split(chunk?) {
                taken[slot(which)] += bytes.len();
                lines.feed(which, &bytes, &mut consumer);
            }
        }
        if started || taken != [0; 2] {
            catch_up(&engine, &container, &mut taken, |which, bytes| lines.feed(which, bytes, &mut consumer)).await?;
            lines.finish(&mut consumer);
            return Ok(());
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Read `container`'s output as it is now (not followed) and hand `more` what comes after the
/// `taken` bytes of each stream, counting them in: what a followed reading missed, which the
/// engine may end at the container's stop before the last of the output is written (a last
/// line without its line end, as measured on Docker 20.10).
async fn catch_up(engine: &Engine, container: &str, taken: &mut [usize; 2], mut more: impl FnMut(LogStream, &[u8])) -> Result<()> {
    let output = engine.logs_all(container);
    futures_util::pin_mut!(output);
    let mut read = [0; 2];
    while let Some(chunk) = output.next().await {
        let Some((which, bytes)) = split(chunk?) else { continue };
        let i = slot(which);
        if let Some(rest) = unread(&bytes, read[i], taken[i]) {
            more(which, rest);
        }
        read[i] += bytes.len();
        taken[i] = taken[i].max(read[i]);
    }
    Ok(())
}

/// A log text looked for in one reading of a container's output, noting in a [`Seen`] how
/// often it was found and the last lines.
struct Search<'a> {
    needles: [Needle; 2],
    stream: Option<LogStream>,
    found: usize,
    times: usize,
    note: &'a mut String,
    recent: &'a mut Recent,
}

impl<'a> Search<'a> {
    fn new(text: &str, stream: Option<LogStream>, times: usize, seen: &'a mut Seen) -> Search<'a> {
        let Seen { note, lines } = seen;
        *note = format!("seen 0 times of {times}");
        let recent = lines.insert(Recent::new(LAST_LINES));
        Search { needles: [Needle::new(text), Needle::new(text)], stream, found: 0, times, note, recent }
    }

    /// Take a chunk of `which`; whether the text has now been found often enough.
    fn feed(&mut self, which: LogStream, bytes: &[u8]) -> bool {
        self.recent.feed(which, bytes);
        if self.stream.is_none_or(|s| s == which) {
            let more = self.needles[slot(which)].feed(bytes);
            if more > 0 {
                self.found += more;
                *self.note = format!("seen {} times of {}", self.found, self.times);
            }
        }
        self.found >= self.times
    }
}

/// Wait until `text` appeared `times` times on `stream` (both when `None`) of `container`'s
/// output, what was seen noted in `seen`. Its output is read from the start, followed; when it
/// ends, the container has stopped (fail: exited) or had not started yet (read it again).
pub(super) async fn wait_log(
    engine: &Engine,
    container: &str,
    what: &WaitFor,
    text: &str,
    stream: Option<LogStream>,
    times: usize,
    seen: &mut Seen,
) -> Result<()> {
    loop {
        // A reading begun once the container has started sees all its output, to its stop; one
        // begun before may end at once, empty. Each starts from the container's start: the
        // count starts afresh.
        let Some(before) = engine.inspect_if_exists(container).await? else { return Err(failed(container, what, GONE)) };
        let started = has_started(&before);
        let mut search = Search::new(text, stream, times, seen);
        let mut taken = [0; 2];
        let output = engine.logs_followed(container);
        futures_util::pin_mut!(output);
        while let Some(chunk) = output.next().await {
            let chunk = match chunk {
                Err(e) if crate::engine::status_of(&e) == Some(404) => return Err(failed(container, what, GONE)),
                chunk => chunk?,
            };
            let Some((which, bytes)) = split(chunk) else { continue };
            taken[slot(which)] += bytes.len();
            if search.feed(which, &bytes) {
                return Ok(());
            }
        }
        if started || taken != [0; 2] {
            let Some(after) = engine.inspect_if_exists(container).await? else { return Err(failed(container, what, GONE)) };
            if let Some(code) = exit_code(&after) {
                let mut met = false;
                catch_up(engine, container, &mut taken, |which, bytes| met |= search.feed(which, bytes)).await?;
                return if met { Ok(()) } else { Err(exited(engine, container, what, code).await) };
            }
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// A chunk of output and its stream (a TTY's is stdout; stdin is not output).
fn split(chunk: LogOutput) -> Option<(LogStream, Bytes)> {
    match chunk {
        LogOutput::StdOut { message } | LogOutput::Console { message } => Some((LogStream::Stdout, message)),
        LogOutput::StdErr { message } => Some((LogStream::Stderr, message)),
        LogOutput::StdIn { .. } => None,
    }
}
