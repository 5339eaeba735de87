//! The lease protocol: a [`Lease`] holds a container for this process (an attached exec of the
//! entrypoint's `lease` mode, or the container's own stdin from before its start); when the
//! connection closes without a `release` line, the container ends itself.

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
        async fn attach_lease(&self, container: &str, handover: &[u8]) -> Result<Lease> {
            let opts = qp::AttachContainerOptions { stdin: true, stdout: true, stderr: true, stream: true, ..Default::default() };
            let attached = quick("attach container", container, self.docker.attach_container(container, Some(opts))).await?;
            let mut output = attached.output;
            let drain = tokio::spawn(async move { while let Some(Ok(_)) = output.next().await {} });
            let mut lease = Lease { container: container.to_string(), input: attached.input, _output: None, drain: Some(drain) };
            let said = [handover, b"go\n"].concat();
            lease.tell(&said, false, "start lease", "starting").await?;
            Ok(lease)
        }
    }

    raw! {
        /// Hold `container` for this process: an exec of `argv` (the entrypoint's `lease` mode)
        /// with its stdin attached to a connection of this process. When the connection closes
        /// without `Lease::release` — this process ended, however — the container ends itself.
        async fn lease(&self, container: &str, argv: &[String]) -> Result<Lease> {
            // stdout and stderr attached too: engines (20.10 seen) that attach stdin alone never
            // read the connection, so never see it close.
            let (_, output, input) = self.attached_exec(container, argv).await?;
            Ok(Lease { container: container.to_string(), input, _output: Some(output), drain: None })
        }
    }
}

/// A held [`Engine::lease`]: dropping it ends the container it holds (as the death of this
/// process would); [`Lease::release`] hands the container over instead.
pub struct Lease {
    container: String,
    input: std::pin::Pin<Box<dyn AsyncWrite + Send>>,
    _output: Option<OutputStream>,
    /// Reads and drops an attached container's output.
    drain: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(d) = self.drain.take() {
            d.abort();
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

    /// Let go of the container now: its stdin closed without a release, so it ends itself (as
    /// when this process dies), at once rather than when this value happens to drop. Bounded
    /// by [`QUICK_TIMEOUT`]; the connection closes with it whatever the answer.
    pub async fn end(mut self) -> Result<()> {
        self.tell(b"", true, "end lease", "ending the lease on").await
    }

    /// Write `line` to the held container's stdin (then close it, with `close`), bounded by
    /// [`QUICK_TIMEOUT`]; `op` and `doing` name the step in an error.
    async fn tell(&mut self, line: &[u8], close: bool, op: &'static str, doing: &str) -> Result<()> {
        let said = async {
            self.input.write_all(line).await?;
            self.input.flush().await?;
            if close { self.input.shutdown().await } else { Ok(()) }
        };
        match tokio::time::timeout(QUICK_TIMEOUT, said).await {
            Ok(r) => r.map_err(|e| Error::io(format!("{doing} {}", self.container), e)),
            Err(_) => Err(Error::TimedOut { op, target: self.container.clone(), after: QUICK_TIMEOUT, idle: false }),
        }
    }
}
