//! How every engine call is made: within its bound ([`QUICK_TIMEOUT`] and the other bounds
//! here), its failure mapped to an error naming the call and its target, a 404 told apart; and
//! the request bodies fed to uploads and imports.

use std::time::Duration;

use bollard::errors::Error as BollardError;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use crate::error::{Error, Result};

/// The bound on a quick call, its answer included.
pub const QUICK_TIMEOUT: Duration = Duration::from_secs(60);

/// The bound on a removal (container or volume, forced).
pub const REMOVE_TIMEOUT: Duration = Duration::from_secs(120);

/// A data call fails when no data has moved for this long.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// The bound on an image export's first byte: the engine (moby's `docker save`) writes the
/// whole export to its disk before it sends anything, which for a large image takes minutes.
pub const EXPORT_FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// The bound on a commit, which reports no progress.
#[cfg_attr(not(feature = "internals"), allow(dead_code))]
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(15 * 60);

/// The HTTP status of an engine error, if it carries one.
pub fn status_of(err: &Error) -> Option<u16> {
    match err {
        Error::Engine { source: BollardError::DockerResponseServerError { status_code, .. }, .. } => Some(*status_code),
        _ => None,
    }
}

/// The engine's message of an engine error, if it carries one.
pub fn message_of(err: &Error) -> Option<&str> {
    match err {
        Error::Engine { source: BollardError::DockerResponseServerError { message, .. }, .. } => Some(message),
        _ => None,
    }
}

pub(super) fn call<'a>(op: &'static str, target: &'a str) -> impl FnOnce(BollardError) -> Error + 'a {
    move |source| Error::Engine { op, target: target.to_string(), source }
}

/// Run `fut` (one engine call) within `limit`; `Err` only when it timed out, the call's own
/// result inside.
pub(super) async fn within<T>(
    op: &'static str,
    target: &str,
    limit: Duration,
    fut: impl std::future::Future<Output = std::result::Result<T, BollardError>>,
) -> Result<std::result::Result<T, BollardError>> {
    tokio::time::timeout(limit, fut).await.map_err(|_| Error::TimedOut { op, target: target.to_string(), after: limit, idle: false })
}

/// [`within`] [`QUICK_TIMEOUT`], failures mapped to [`Error::Engine`].
pub(super) async fn quick<T>(
    op: &'static str,
    target: &str,
    fut: impl std::future::Future<Output = std::result::Result<T, BollardError>>,
) -> Result<T> {
    within(op, target, QUICK_TIMEOUT, fut).await?.map_err(call(op, target))
}

pub(super) fn idle_error(op: &'static str, target: &str) -> Error {
    Error::TimedOut { op, target: target.to_string(), after: IDLE_TIMEOUT, idle: true }
}

/// `stream`, failing with [`Error::TimedOut`] when its first item takes longer than `first`,
/// or a later one longer than [`IDLE_TIMEOUT`], to come once asked for (a slow consumer does
/// not count); it ends after that.
pub(super) fn idle_bounded<'a, T: Send + 'a>(
    op: &'static str,
    target: String,
    first: Duration,
    stream: impl Stream<Item = Result<T>> + Send + 'a,
) -> impl Stream<Item = Result<T>> + Send + 'a {
    futures_util::stream::unfold(Some((Box::pin(stream), target, first)), move |state| async move {
        let (mut stream, target, bound) = state?;
        match tokio::time::timeout(bound, stream.next()).await {
            Ok(Some(item)) => Some((item, Some((stream, target, IDLE_TIMEOUT)))),
            Ok(None) => None,
            Err(_) => Some((Err(Error::TimedOut { op, target, after: bound, idle: true }), None)),
        }
    })
}

/// When data last moved, for calls whose progress is the engine taking a request body. Time
/// spent waiting for the body's own source (a slow producer on stdin, a build still making
/// its archive) is not the engine's and does not count.
#[derive(Clone)]
pub(super) struct Progress(std::sync::Arc<std::sync::Mutex<Moved>>);

struct Moved {
    at: tokio::time::Instant,
    /// The engine asked for more and the source has none yet.
    waiting_on_source: bool,
}

impl Progress {
    pub(super) fn new() -> Progress {
        Progress(std::sync::Arc::new(std::sync::Mutex::new(Moved { at: tokio::time::Instant::now(), waiting_on_source: false })))
    }
    fn set(&self, waiting_on_source: bool) {
        if let Ok(mut m) = self.0.lock() {
            *m = Moved { at: tokio::time::Instant::now(), waiting_on_source };
        }
    }
    pub(super) fn moved(&self) {
        self.set(false)
    }
    /// Returns once nothing has moved for [`IDLE_TIMEOUT`] while the engine had data to take.
    pub(super) async fn stalled(&self) {
        loop {
            // The guard is dropped before any await (it is not Send).
            let deadline = match self.0.lock() {
                Ok(m) if m.waiting_on_source => Some(tokio::time::Instant::now() + IDLE_TIMEOUT),
                Ok(m) => Some(m.at + IDLE_TIMEOUT),
                Err(_) => None,
            };
            let Some(deadline) = deadline else { return std::future::pending().await };
            if tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
    /// `body`, marking progress at each chunk taken and noting when its source is the one
    /// keeping the engine waiting.
    pub(super) fn watch<S>(&self, body: S) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static
    where
        S: Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    {
        let me = self.clone();
        let mut body = Box::pin(body);
        futures_util::stream::poll_fn(move |cx| {
            let polled = body.as_mut().poll_next(cx);
            me.set(polled.is_pending());
            polled
        })
    }
}

pub(super) fn is_not_found(e: &BollardError) -> bool {
    matches!(e, BollardError::DockerResponseServerError { status_code: 404, .. })
}

/// A request body read from `r`, `chunk` bytes at most at a time (for uploads and imports fed
/// from a file or a child process).
pub(crate) fn body_from(
    r: impl tokio::io::AsyncRead + Unpin + Send + 'static,
    chunk: usize,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    futures_util::stream::try_unfold((r, vec![0u8; chunk]), |(mut r, mut buf)| async move {
        use tokio::io::AsyncReadExt;
        let n = r.read(&mut buf).await?;
        Ok((n > 0).then(|| (Bytes::copy_from_slice(&buf[..n]), (r, buf))))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Time is paused and advanced by tokio: these take no real time.

    #[tokio::test(start_paused = true)]
    async fn a_quick_call_that_does_not_answer_names_itself_and_times_out() {
        let never = std::future::pending::<std::result::Result<(), BollardError>>();
        let e = quick("inspect container", "c1", never).await.unwrap_err();
        assert!(matches!(e, Error::TimedOut { op: "inspect container", idle: false, .. }), "{e:?}");
        assert_eq!(e.to_string(), "engine call 'inspect container' on 'c1' timed out: no answer within 60 s");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_fails_when_idle_but_not_when_its_consumer_is_slow() {
        let items = futures_util::stream::iter([Ok(1), Ok(2)]).chain(futures_util::stream::pending());
        let s = idle_bounded("download from container", "c1".into(), IDLE_TIMEOUT, items);
        futures_util::pin_mut!(s);
        assert_eq!(s.next().await.unwrap().unwrap(), 1);
        // The consumer takes ten minutes before asking again: not the engine's idleness.
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert_eq!(s.next().await.unwrap().unwrap(), 2);
        let t0 = tokio::time::Instant::now();
        let e = s.next().await.unwrap().unwrap_err();
        assert_eq!(t0.elapsed(), IDLE_TIMEOUT);
        assert_eq!(e.to_string(), "engine call 'download from container' on 'c1' timed out: no progress for 120 s");
        assert!(s.next().await.is_none(), "a timed-out stream ends");
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_stalls_when_the_engine_stops_taking_it_not_when_its_source_is_slow() {
        let progress = Progress::new();
        // A source that takes ten minutes to produce its first chunk.
        let source = futures_util::stream::once(async {
            tokio::time::sleep(Duration::from_secs(600)).await;
            Ok(Bytes::from_static(b"x"))
        })
        .chain(futures_util::stream::iter([Ok(Bytes::from_static(b"y"))]));
        let body = progress.watch(source);
        futures_util::pin_mut!(body);
        // The "engine" takes the first chunk (waiting on the source meanwhile), then stops.
        let took = tokio::select! {
            c = body.next() => c,
            _ = progress.stalled() => panic!("a slow source counted as a stall"),
        };
        assert_eq!(took.unwrap().unwrap(), Bytes::from_static(b"x"));
        let t0 = tokio::time::Instant::now();
        progress.stalled().await;
        assert_eq!(t0.elapsed(), IDLE_TIMEOUT);
    }
}
