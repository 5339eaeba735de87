//! The lease protocol: a [`Lease`] holds a container for this process (an attached exec of the
//! entrypoint's `lease` mode, or the container's own stdin from before its start); when the
//! connection closes without a `release` line, the container ends itself.

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
            let mut output = attached.output;
            let drain = tokio::spawn(async move { while let Some(Ok(_)) = output.next().await {} });
            let mut lease = Lease {
                container: container.to_string(),
                input: Arc::new(tokio::sync::Mutex::new(attached.input)),
                _output: None,
                drain: Some(drain),
                beat: None,
            };
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
            let mut lease =
                Lease { container: container.to_string(), input: Arc::new(tokio::sync::Mutex::new(input)), _output: Some(output), drain: None, beat: None };
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
    _output: Option<OutputStream>,
    /// Reads and drops an attached container's output.
    drain: Option<tokio::task::JoinHandle<()>>,
    /// Says `beat` on the input (an engine over SSH).
    beat: Option<tokio::task::JoinHandle<()>>,
}

/// How often a lease over SSH says `beat` (the container gives up after the recipe's
/// `BEAT_LIMIT_SECS` without a word).
pub const BEAT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

impl Drop for Lease {
    fn drop(&mut self) {
        // The beat first: it holds the input too, which must close with this value.
        for task in [self.beat.take(), self.drain.take()].into_iter().flatten() {
            task.abort();
        }
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("container", &self.container).finish()
    }
}

impl Lease {
    /// The id (or name) of the container held.
    pub fn container(&self) -> &str {
        &self.container
    }

    /// Hand the container over: it stays when this process ends.
    pub async fn release(mut self) -> Result<()> {
        self.tell(b"release\n", true, "release lease", "releasing the lease on").await
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
