//! The lease protocol: a [`Lease`] holds a container for this process (an attached exec of the
//! entrypoint's `lease` mode, or the container's own stdin from before its start); when the
//! connection closes without a `release` line, the container ends itself. The container answers
//! a `release` line with [`RELEASED`] on its output, so a release is known to have arrived
//! before this process lets its connection go (over SSH, what an ssh process still buffers
//! when this process ends is lost).

use std::sync::Arc;

use bollard::query_parameters as qp;
use futures_util::StreamExt;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::call::{QUICK_TIMEOUT, quick};
use super::connect::Engine;
use super::exec::OutputStream;
use crate::error::{Error, Result};

impl Engine {
    raw! {
        /// Hold a `container` whose PID 1 reads its stdin (the recipe's bootstrap, see the
        /// entrypoint), just started: attach to its stdin, stdout and stderr (its output is read
        /// and dropped, so the container never blocks on it), write `handover` (its files, as
        /// the bootstrap reads them), then "go": its PID 1 goes on to the entrypoint. When the
        /// attached connection closes without a `release` line — this process ended, however —
        /// the container ends itself.
        ///
        /// Where the engine may not pass the connection's end on ([`Engine::beats`]: over SSH,
        /// Podman) it also says `beat` every [`BEAT_EVERY`], and the container (made with
        /// `DIDX_LEASE_BEAT`, see the recipe's `held`) ends itself when its didx falls silent.
        async fn attach_lease(&self, container: &str, handover: &[u8]) -> Result<Lease> {
            let opts = qp::AttachContainerOptions { stdin: true, stdout: true, stderr: true, stream: true, ..Default::default() };
            let attached = quick("attach container", container, self.docker.attach_container(container, Some(opts))).await?;
            let mut lease = Lease::new(container, attached.input, attached.output);
            let said = [handover, b"go\n"].concat();
            lease.tell(&said, false, "start lease", "starting").await?;
            if self.beats() {
                lease.beat_on();
            }
            Ok(lease)
        }
    }

    raw! {
        /// Hold `container` for this process: an exec of `argv` (the entrypoint's `lease` mode)
        /// with its stdin attached to a connection of this process, and `env` (the recipe's
        /// `DIDX_LEASE_BEAT`, set or cleared). When the connection closes without
        /// `Lease::release` — this process ended, however — the container ends itself; where
        /// [`Engine::beats`], it beats as [`Engine::attach_lease`]'s does.
        async fn lease(&self, container: &str, argv: &[String], env: &[String]) -> Result<Lease> {
            // stdout and stderr attached too: engines (20.10 seen) that attach stdin alone never
            // read the connection, so never see it close.
            let (_, output, input) = self.attached_exec(container, argv, env).await?;
            let mut lease = Lease::new(container, input, output);
            if self.beats() {
                lease.beat_on();
            }
            Ok(lease)
        }
    }
}

/// A held [`Engine::lease`]: dropping it ends the container it holds (as the death of this
/// process would); [`Lease::release`] hands the container over instead.
pub struct Lease {
    container: String,
    input: Arc<tokio::sync::Mutex<std::pin::Pin<Box<dyn AsyncWrite + Send>>>>,
    /// Reads and drops the held container's output (so it never blocks on it), watching for
    /// [`RELEASED`].
    drain: tokio::task::JoinHandle<()>,
    /// Fires when the container said [`RELEASED`]; dropped unfired when its output ended first.
    released: Option<tokio::sync::oneshot::Receiver<()>>,
    /// Says `beat` on the input (an engine over SSH).
    beat: Option<tokio::task::JoinHandle<()>>,
    /// What the streams live by (a cluster's exec or attach: dropped, its streams close),
    /// dropped with the lease.
    #[cfg_attr(not(feature = "kubernetes"), allow(dead_code))] // used by the kubernetes backend
    keep: Option<std::sync::Mutex<Box<dyn std::any::Any + Send>>>,
}

/// How often a lease over SSH says `beat` (the container gives up after the recipe's
/// `BEAT_LIMIT_SECS` without a word).
pub const BEAT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// What the entrypoint's `hold` says on the container's output once a `release` line reached it.
pub const RELEASED: &[u8] = b"didx-lease: released\n";

/// Whether `RELEASED` is in what was read so far: `tail` keeps the end of the last chunk (a
/// chunk may end inside the marker), `chunk` is the next one.
fn saw_released(tail: &mut Vec<u8>, chunk: &[u8]) -> bool {
    tail.extend_from_slice(chunk);
    let found = tail.windows(RELEASED.len()).any(|w| w == RELEASED);
    let keep = RELEASED.len() - 1;
    if tail.len() > keep {
        tail.drain(..tail.len() - keep);
    }
    found
}

impl Drop for Lease {
    fn drop(&mut self) {
        // The beat first: it holds the input too, which must close with this value.
        if let Some(beat) = self.beat.take() {
            beat.abort();
        }
        self.drain.abort();
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("container", &self.container).finish()
    }
}

impl Lease {
    fn new(container: &str, input: std::pin::Pin<Box<dyn AsyncWrite + Send>>, mut output: OutputStream) -> Lease {
        let (said, released) = tokio::sync::oneshot::channel();
        let drain = tokio::spawn(async move {
            let mut said = Some(said);
            let mut tail = Vec::new();
            while let Some(Ok(chunk)) = output.next().await {
                if said.is_some() && saw_released(&mut tail, &chunk.into_bytes()) {
                    let _ = said.take().map(|s| s.send(()));
                }
            }
        });
        Lease {
            container: container.to_string(),
            input: Arc::new(tokio::sync::Mutex::new(input)),
            drain,
            released: Some(released),
            beat: None,
            keep: None,
        }
    }

    /// A lease over any pair of streams to `container`'s lease reader (a cluster's attach to
    /// its stdin, or its exec of the entrypoint's `lease` mode), beating: `keep` is what the
    /// streams live by, dropped (closing them) with the lease.
    #[cfg_attr(not(feature = "kubernetes"), allow(dead_code))] // used by the kubernetes backend
    pub(crate) fn over<R>(
        container: &str,
        input: std::pin::Pin<Box<dyn AsyncWrite + Send>>,
        output: R,
        keep: Box<dyn std::any::Any + Send>,
    ) -> Lease
    where
        R: tokio::io::AsyncRead + Send + 'static,
    {
        let output = tokio_util::io::ReaderStream::new(output).map(|chunk| {
            chunk.map(|message| bollard::container::LogOutput::StdOut { message }).map_err(|err| bollard::errors::Error::IOError { err })
        });
        let mut lease = Lease::new(container, input, Box::pin(output));
        lease.keep = Some(std::sync::Mutex::new(keep));
        lease.beat_on();
        lease
    }

    /// True while it says `beat` (a lease that beats: its input takes them).
    #[cfg_attr(not(feature = "kubernetes"), allow(dead_code))] // used by the kubernetes backend
    pub(crate) fn is_beating(&self) -> bool {
        self.beat.as_ref().is_some_and(|b| !b.is_finished())
    }

    /// The id (or name) of the container held.
    pub fn container(&self) -> &str {
        &self.container
    }

    /// Hand the container over: it stays when this process ends. Returns once the container
    /// said it took the release ([`RELEASED`]), within [`QUICK_TIMEOUT`]; the connection closes
    /// only then.
    pub async fn release(mut self) -> Result<()> {
        self.tell(b"release\n", false, "release lease", "releasing the lease on").await?;
        let released = self.released.take();
        let confirmed = async {
            match released {
                Some(r) => r.await.is_ok(),
                None => false,
            }
        };
        match tokio::time::timeout(QUICK_TIMEOUT, confirmed).await {
            Ok(true) => {}
            Ok(false) => {
                return Err(Error::io(
                    format!("releasing the lease on {}", self.container),
                    std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "its output ended before it confirmed the release"),
                ));
            }
            Err(_) => return Err(Error::TimedOut { op: "release lease", target: self.container.clone(), after: QUICK_TIMEOUT, idle: false }),
        }
        self.tell(b"", true, "release lease", "releasing the lease on").await
    }

    /// Let go of the container now: an `end` line and its stdin closed without a release, so
    /// it ends itself (as when this process dies), at once rather than when this value happens
    /// to drop. (The line is for engines that keep the stdin open: Podman.) Bounded by
    /// [`QUICK_TIMEOUT`]; the connection closes with it whatever the answer.
    pub async fn end(mut self) -> Result<()> {
        self.tell(b"end\n", true, "end lease", "ending the lease on").await
    }

    /// Say `beat` every [`BEAT_EVERY`] until closed.
    fn beat_on(&mut self) {
        let input = Arc::clone(&self.input);
        self.beat = Some(tokio::spawn(async move {
            loop {
                tokio::time::sleep(BEAT_EVERY).await;
                let mut w = input.lock().await;
                if w.write_all(b"beat\n").await.is_err() || w.flush().await.is_err() {
                    return;
                }
            }
        }));
    }

    /// Write `line` to the held container's stdin (then close it, with `close`: the beats stop
    /// first, once none is half written), bounded by [`QUICK_TIMEOUT`]; `op` and `doing` name
    /// the step in an error.
    async fn tell(&mut self, line: &[u8], close: bool, op: &'static str, doing: &str) -> Result<()> {
        let shared = Arc::clone(&self.input);
        let beat = if close { self.beat.take() } else { None };
        let stop = beat.as_ref().map(|b| b.abort_handle());
        let said = async {
            // The lock waits for a beat being written; aborted after that, the beat task
            // writes no more (it takes the lock for each one).
            let mut input = shared.lock().await;
            if let Some(b) = beat {
                b.abort();
            }
            input.write_all(line).await?;
            input.flush().await?;
            if close { input.shutdown().await } else { Ok(()) }
        };
        let said = tokio::time::timeout(QUICK_TIMEOUT, said).await;
        // Stopped whatever the answer (a timed-out close must not leave it beating).
        if let Some(stop) = stop {
            stop.abort();
        }
        match said {
            Ok(r) => r.map_err(|e| Error::io(format!("{doing} {}", self.container), e)),
            Err(_) => Err(Error::TimedOut { op, target: self.container.clone(), after: QUICK_TIMEOUT, idle: false }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_release_answer_is_seen_whole_split_or_among_other_output() {
        let seen = |chunks: &[&[u8]]| {
            let mut tail = Vec::new();
            chunks.iter().any(|c| saw_released(&mut tail, c))
        };
        assert!(seen(&[b"didx-lease: released\n"]));
        assert!(seen(&[b"level=info msg=x\ndidx-lease: rel", b"eased\nmore"]));
        assert!(seen(&[b"d", b"idx-lease", b": ", b"released", b"\n"]));
        assert!(!seen(&[b"didx-lease: released"]), "not a whole line");
        assert!(!seen(&[b"didx-lease: rel", b"x", b"eased\n"]));
        assert!(!seen(&[b"didx-entrypoint: lease lost\n"]));
    }
}
