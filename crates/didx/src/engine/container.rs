//! Containers: create, start, pause and unpause, rename, inspect, wait, logs (a tail, or
//! followed), list, stop and remove.

use std::collections::HashMap;


use bollard::errors::Error as BollardError;
use bollard::models::{ContainerCreateBody, ContainerInspectResponse, ContainerSummary};
use bollard::query_parameters as qp;
use futures_util::{StreamExt, TryStreamExt};

use super::call::{QUICK_TIMEOUT, REMOVE_TIMEOUT, call, idle_bounded, is_not_found, quick, within};
use super::connect::Engine;
use crate::error::{Error, Result};

impl Engine {
    raw! {
        /// Create a container named `name`; returns its id.
        async fn create_container(&self, name: &str, body: ContainerCreateBody) -> Result<String> {
            let opts = qp::CreateContainerOptions { name: Some(name.to_string()), ..Default::default() };
            let r = quick("create container", name, self.docker.create_container(Some(opts), body)).await?;
            Ok(r.id)
        }
    }

    raw! {
        /// Start a container.
        async fn start(&self, container: &str) -> Result<()> {
            quick("start container", container, self.docker.start_container(container, None::<qp::StartContainerOptions>)).await
        }
    }

    raw! {
        /// Freeze a running container's processes.
        #[cfg(feature = "internals")]
        async fn pause(&self, container: &str) -> Result<()> {
            quick("pause container", container, self.docker.pause_container(container)).await
        }
    }

    raw! {
        /// Thaw a paused container. The engine checks "paused" under the container's lock, so of
        /// concurrent callers exactly one succeeds; the others get "is not paused".
        #[cfg(feature = "internals")]
        async fn unpause(&self, container: &str) -> Result<()> {
            quick("unpause container", container, self.docker.unpause_container(container)).await
        }
    }

    raw! {
        /// Rename a container.
        async fn rename(&self, container: &str, name: &str) -> Result<()> {
            let opts = qp::RenameContainerOptions { name: name.to_string() };
            quick("rename container", container, self.docker.rename_container(container, opts)).await
        }
    }

    raw! {
        /// Inspect a container.
        async fn inspect(&self, container: &str) -> Result<ContainerInspectResponse> {
            quick("inspect container", container, self.docker.inspect_container(container, None::<qp::InspectContainerOptions>)).await
        }
    }

    raw! {
        /// Inspect a container; `None` when there is no such container (any more).
        async fn inspect_if_exists(&self, container: &str) -> Result<Option<ContainerInspectResponse>> {
            let inspect = self.docker.inspect_container(container, None::<qp::InspectContainerOptions>);
            match within("inspect container", container, QUICK_TIMEOUT, inspect).await? {
                Ok(i) => Ok(Some(i)),
                Err(e) if is_not_found(&e) => Ok(None),
                Err(e) => Err(call("inspect container", container)(e)),
            }
        }
    }

    raw! {
        /// Remove a container at once (kill, no graceful stop) with its anonymous volumes.
        /// Already gone is fine.
        async fn remove_container(&self, container: &str) -> Result<()> {
            let opts = qp::RemoveContainerOptions { force: true, v: true, ..Default::default() };
            match within("remove container", container, REMOVE_TIMEOUT, self.docker.remove_container(container, Some(opts))).await? {
                Ok(()) => Ok(()),
                Err(e) if is_not_found(&e) => Ok(()),
                // "removal already in progress": another remover got there first.
                Err(BollardError::DockerResponseServerError { status_code: 409, message }) if message.contains("already in progress") => Ok(()),
                Err(e) => Err(call("remove container", container)(e)),
            }
        }
    }

    raw! {
        /// Wait for a container to stop; returns its exit code. Not bounded: that is the
        /// container's program's length.
        async fn wait(&self, container: &str) -> Result<i64> {
            let mut stream = self.docker.wait_container(container, None::<qp::WaitContainerOptions>);
            match stream.next().await {
                Some(Ok(r)) => Ok(r.status_code),
                // bollard reports a non-zero exit as an error carrying the code.
                Some(Err(BollardError::DockerContainerWaitError { code, .. })) => Ok(code),
                Some(Err(e)) => Err(call("wait container", container)(e)),
                None => Err(call("wait container", container)(BollardError::RequestTimeoutError)),
            }
        }
    }

    raw! {
        /// The last `lines` lines of a container's output.
        async fn logs_tail(&self, container: &str, lines: usize) -> Result<String> {
            let opts = qp::LogsOptions { stdout: true, stderr: true, tail: lines.to_string(), ..Default::default() };
            let chunks: Vec<_> = quick("container logs", container, self.docker.logs(container, Some(opts)).try_collect()).await?;
            Ok(chunks.iter().map(|c| String::from_utf8_lossy(&c.clone().into_bytes()).into_owned()).collect())
        }
    }

    raw! {
        /// A container's output from its start on, followed as it comes until the container
        /// stops (then the stream ends; the engine may end it before the last of the output is
        /// written: [`Engine::logs_all`] has all); stdout and stderr apart, a TTY's as `Console`.
        /// Not bounded: its length is the container's program's.
        fn logs_followed(&self, container: &str) -> impl futures_util::Stream<Item = Result<bollard::container::LogOutput>> + Send + 'static {
            let opts = qp::LogsOptions { follow: true, stdout: true, stderr: true, ..Default::default() };
            let target = container.to_string();
            self.docker.logs(container, Some(opts)).map(move |r| r.map_err(call("follow container logs", &target)))
        }
    }

    raw! {
        /// A container's output from its start to now, not followed; stdout and stderr apart.
        /// Its first chunk comes within [`QUICK_TIMEOUT`], each next within `IDLE_TIMEOUT`.
        fn logs_all(&self, container: &str) -> impl futures_util::Stream<Item = Result<bollard::container::LogOutput>> + Send + 'static {
            let opts = qp::LogsOptions { stdout: true, stderr: true, ..Default::default() };
            let target = container.to_string();
            let stream = self.docker.logs(container, Some(opts)).map(move |r| r.map_err(call("container logs", &target)));
            idle_bounded("container logs", container.to_string(), QUICK_TIMEOUT, stream)
        }
    }

    raw! {
        /// Containers (running or not) matching `filters`. On Podman, a list that names a
        /// container in a state outside Docker's API is read again loosely
        /// ([`Engine::containers_read_loosely`]).
        async fn containers(&self, filters: HashMap<String, Vec<String>>) -> Result<Vec<ContainerSummary>> {
            let opts = qp::ListContainersOptions { all: true, filters: Some(filters.clone()), ..Default::default() };
            match quick("list containers", "engine", self.docker.list_containers(Some(opts))).await {
                Err(e) if self.is_podman() && lists_podman_state(&e) => self.containers_read_loosely(&filters).await,
                r => r,
            }
        }
    }

    raw! {
        /// Stop a container (SIGTERM, then SIGKILL after `grace`), keeping it; paused ones too.
        #[cfg(feature = "internals")]
        async fn stop(&self, container: &str, grace: std::time::Duration) -> Result<()> {
            let opts = qp::StopContainerOptions { t: Some(grace.as_secs() as i32), ..Default::default() };
            self.docker.stop_container(container, Some(opts)).await.map_err(call("stop container", container))
        }
    }
}

/// Whether a list failed on one of Podman's own states (`stopped`, `stopping`), which Docker's
/// API does not have.
fn lists_podman_state(e: &Error) -> bool {
    matches!(e, Error::Engine { source: BollardError::JsonDataError { message, .. }, .. }
        if message.contains("unknown variant `stopped`") || message.contains("unknown variant `stopping`"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn podman_s_stopped_state_is_told_from_other_failures() {
        let json = |message: &str| Error::Engine {
            op: "list containers",
            target: "engine".into(),
            source: BollardError::JsonDataError { message: message.into(), column: 7 },
        };
        assert!(lists_podman_state(&json("unknown variant `stopped`, expected one of ``, `created`, `running`")));
        assert!(lists_podman_state(&json("unknown variant `stopping`, expected one of ``, `created`, `running`")));
        assert!(!lists_podman_state(&json("unknown variant `frozen`, expected one of ``")));
        assert!(!lists_podman_state(&Error::Engine {
            op: "list containers",
            target: "engine".into(),
            source: BollardError::RequestTimeoutError
        }));
    }
}
