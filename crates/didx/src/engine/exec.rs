//! Commands run in a container: [`ExecAs`], [`Engine::exec`] and its variants, the attached
//! exec a lease holds, and copying an exec's output as it comes.

use bollard::errors::Error as BollardError;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::call::{IDLE_TIMEOUT, call, idle_error, quick};
use super::connect::Engine;
use crate::error::{Error, Result};

/// An attached exec's or container's output.
pub(super) type OutputStream = std::pin::Pin<Box<dyn Stream<Item = std::result::Result<bollard::container::LogOutput, BollardError>> + Send>>;

/// How an exec runs ([`Engine::exec_as`]): as which user, where, with which variables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecAs {
    /// The engine's `User`: a name or `UID[:GID]` (the container's default when `None`). A
    /// name is resolved in the container's `/etc/passwd` and `/etc/group`, supplementary
    /// groups included.
    pub user: Option<String>,
    /// The working directory (the container's when `None`).
    pub working_dir: Option<String>,
    /// `NAME=VALUE` variables added to the container's.
    pub env: Vec<String>,
}

impl Engine {
    raw! {
        /// Run `argv` in a running container, streaming its stdout and stderr to `out` and `err`
        /// as they come; returns its exit code. Its run is not bounded (the program's length);
        /// creating, starting and inspecting it are. A sink that fails (a closed pipe) is no longer
        /// written to, and the rest of the output is read and dropped, so the program is not
        /// stopped by it.
        async fn exec(
            &self,
            container: &str,
            argv: &[String],
            env: &[String],
            out: &mut (dyn AsyncWrite + Unpin + Send),
            err: &mut (dyn AsyncWrite + Unpin + Send),
        ) -> Result<i64> {
            let shape = ExecAs { env: env.to_vec(), ..ExecAs::default() };
            self.exec_as(container, argv, &shape, out, err).await
        }
    }

    raw! {
        /// [`exec`](Self::exec) as `shape` says: its user, working directory and variables.
        async fn exec_as(
            &self,
            container: &str,
            argv: &[String],
            shape: &ExecAs,
            out: &mut (dyn AsyncWrite + Unpin + Send),
            err: &mut (dyn AsyncWrite + Unpin + Send),
        ) -> Result<i64> {
            let config = CreateExecOptions {
                cmd: Some(argv.to_vec()),
                env: (!shape.env.is_empty()).then(|| shape.env.clone()),
                user: shape.user.clone(),
                working_dir: shape.working_dir.clone(),
                attach_stdout: Some(true),
                attach_stderr: Some(true),
                ..Default::default()
            };
            let created = quick("create exec", container, self.docker.create_exec(container, config)).await?;
            match quick("start exec", container, self.docker.start_exec(&created.id, None)).await? {
                StartExecResults::Attached { output, .. } => drain(output, container, out, err).await?,
                StartExecResults::Detached => {}
            }
            self.exit_code(container, &created.id).await
        }
    }

    /// The exit code of exec `id` in `container`, once its output ended.
    async fn exit_code(&self, container: &str, id: &str) -> Result<i64> {
        let inspect = quick("inspect exec", container, self.docker.inspect_exec(id)).await?;
        Ok(inspect.exit_code.unwrap_or(-1))
    }

    /// Create and start an exec of `argv` in `container`, with `env` (`NAME=VALUE`) in its
    /// environment and stdin, stdout and stderr attached: its id, output and input.
    pub(super) async fn attached_exec(
        &self,
        container: &str,
        argv: &[String],
        env: &[String],
    ) -> Result<(String, OutputStream, std::pin::Pin<Box<dyn AsyncWrite + Send>>)> {
        let config = CreateExecOptions {
            cmd: Some(argv.to_vec()),
            env: (!env.is_empty()).then(|| env.to_vec()),
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..Default::default()
        };
        let created = quick("create exec", container, self.docker.create_exec(container, config)).await?;
        match quick("start exec", container, self.docker.start_exec(&created.id, None)).await? {
            StartExecResults::Attached { output, input } => Ok((created.id, output, input)),
            StartExecResults::Detached => Err(call("start exec", container)(BollardError::RequestTimeoutError)),
        }
    }

    raw! {
        /// Run `argv` in a running container with `input` streamed to its stdin (closed at the
        /// end), its output to `out`/`err`; returns its exit code. Fails when `input` stops moving
        /// for `IDLE_TIMEOUT` (120 s) while it is fed; once fed, the program's own length is not bounded.
        async fn exec_with_input(
            &self,
            container: &str,
            argv: &[String],
            input: impl Stream<Item = Result<Bytes>> + Send,
            out: &mut (dyn AsyncWrite + Unpin + Send),
            err: &mut (dyn AsyncWrite + Unpin + Send),
        ) -> Result<i64> {
            let (exec_id, output, mut stdin) = self.attached_exec(container, argv, &[]).await?;
            let feed = async {
                futures_util::pin_mut!(input);
                loop {
                    // The input's source bounds its own waits; this bounds the engine taking it.
                    let chunk = match input.next().await {
                        Some(chunk) => chunk?,
                        None => break,
                    };
                    match tokio::time::timeout(IDLE_TIMEOUT, stdin.write_all(&chunk)).await {
                        Ok(w) => w.map_err(|e| Error::io("streaming into the client", e))?,
                        Err(_) => return Err(idle_error("exec input", container)),
                    }
                }
                stdin.shutdown().await.map_err(|e| Error::io("closing the client's stdin", e))?;
                Ok::<(), Error>(())
            };
            let (fed, drained) = tokio::join!(feed, drain(output, container, out, err));
            drained?;
            fed?;
            self.exit_code(container, &exec_id).await
        }
    }
}

/// Copy an exec's output stream to `out`/`err` as it comes, until it ends. A sink whose
/// write fails (its reader went away) is written to no more; the stream is still read to its
/// end, so the program runs on and its exit code stands.
async fn drain(
    mut output: std::pin::Pin<Box<dyn Stream<Item = std::result::Result<bollard::container::LogOutput, BollardError>> + Send>>,
    container: &str,
    out: &mut (dyn AsyncWrite + Unpin + Send),
    err: &mut (dyn AsyncWrite + Unpin + Send),
) -> Result<()> {
    use bollard::container::LogOutput;
    async fn put(sink: &mut (dyn AsyncWrite + Unpin + Send), open: &mut bool, what: &str, message: &[u8]) {
        if !*open {
            return;
        }
        if let Err(e) = sink.write_all(message).await.and(sink.flush().await) {
            tracing::debug!(error = %e, "command {what} closed; its further output is dropped");
            *open = false;
        }
    }
    let (mut out_open, mut err_open) = (true, true);
    while let Some(chunk) = output.next().await {
        match chunk.map_err(call("exec output", container))? {
            LogOutput::StdErr { message } => put(err, &mut err_open, "stderr", &message).await,
            LogOutput::StdOut { message } | LogOutput::Console { message } => put(out, &mut out_open, "stdout", &message).await,
            LogOutput::StdIn { .. } => {}
        }
    }
    Ok(())
}
