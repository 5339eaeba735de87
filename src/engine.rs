//! The one wrapper around the Docker Engine API (bollard): every engine call didx makes is a
//! method here, each failure mapped to [`Error::Engine`] naming the call and its target.
//! A 404 on removal means "already gone" and is not an error.

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, ContainerSummary, ImageInspect, SystemInfo,
};
use bollard::query_parameters as qp;
use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::error::{Error, Result};

/// Default engine address when neither `-H` nor `DOCKER_HOST` is given.
pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

/// Requests (uploads, image loads, long execs) may legitimately run long; didx bounds its own
/// waits where it must instead of relying on one client-wide timeout.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(24 * 3600);
/// How long the first contact may take before the engine counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to one Docker engine.
#[derive(Clone)]
pub struct Engine {
    docker: Docker,
    host: String,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("host", &self.host).finish()
    }
}

/// The HTTP status of an engine error, if it carries one.
pub fn status_of(err: &Error) -> Option<u16> {
    match err {
        Error::Engine { source: BollardError::DockerResponseServerError { status_code, .. }, .. } => {
            Some(*status_code)
        }
        _ => None,
    }
}

/// The engine's message of an engine error, if it carries one.
pub fn message_of(err: &Error) -> Option<&str> {
    match err {
        Error::Engine { source: BollardError::DockerResponseServerError { message, .. }, .. } => {
            Some(message)
        }
        _ => None,
    }
}

fn call<'a>(op: &'static str, target: &'a str) -> impl FnOnce(BollardError) -> Error + 'a {
    move |source| Error::Engine { op, target: target.to_string(), source }
}

fn is_not_found(e: &BollardError) -> bool {
    matches!(e, BollardError::DockerResponseServerError { status_code: 404, .. })
}

impl Engine {
    /// Connect to `host` (`unix://`, `tcp://`, `https://`), else `DOCKER_HOST`, else the local
    /// socket. `tcp://` uses TLS when `DOCKER_TLS_VERIFY` is set, with the certificates in
    /// `DOCKER_CERT_PATH` (default `~/.docker`). Fails with [`Error::Unreachable`] when the
    /// engine does not answer.
    pub async fn connect(host: Option<&str>) -> Result<Engine> {
        let host = match host {
            Some(h) => h.to_string(),
            None => std::env::var("DOCKER_HOST")
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| DEFAULT_HOST.to_string()),
        };
        let known = ["unix://", "tcp://", "http://", "https://"];
        if !known.iter().any(|p| host.starts_with(p)) {
            return Err(Error::invalid(
                "engine address",
                host,
                "expected unix:///path/docker.sock or tcp://HOST:PORT (set by -H or DOCKER_HOST)",
            ));
        }
        let docker = Docker::connect_with_host(&host)
            .map_err(|source| Error::Unreachable { host: host.clone(), source })?
            .with_timeout(REQUEST_TIMEOUT);
        let docker = match tokio::time::timeout(CONNECT_TIMEOUT, docker.negotiate_version()).await {
            Ok(Ok(d)) => d,
            Ok(Err(source)) => return Err(Error::Unreachable { host, source }),
            Err(_) => {
                return Err(Error::Unreachable {
                    host,
                    source: BollardError::RequestTimeoutError,
                });
            }
        };
        Ok(Engine { docker, host })
    }

    /// The address connected to.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// True when the engine runs on this machine (a unix socket), so container addresses on its
    /// default bridge are normally routable from here.
    pub fn is_local(&self) -> bool {
        self.host.starts_with("unix://")
    }

    /// The engine's `/info`.
    pub async fn info(&self) -> Result<SystemInfo> {
        self.docker.info().await.map_err(call("info", "engine"))
    }

    /// Inspect an image; `None` when absent.
    pub async fn image(&self, name: &str) -> Result<Option<ImageInspect>> {
        match self.docker.inspect_image(name).await {
            Ok(i) => Ok(Some(i)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(call("inspect image", name)(e)),
        }
    }

    /// Pull `image`, giving up when the registry sends nothing for `idle`.
    pub async fn pull(&self, image: &str, idle: Duration) -> Result<()> {
        let (repo, tag) = split_reference(image);
        let opts = qp::CreateImageOptions {
            from_image: Some(repo.to_string()),
            tag: Some(tag.to_string()),
            ..Default::default()
        };
        let mut stream = self.docker.create_image(Some(opts), None, None);
        loop {
            match tokio::time::timeout(idle, stream.next()).await {
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(e))) => return Err(call("pull image", image)(e)),
                Ok(None) => return Ok(()),
                Err(_) => return Err(call("pull image", image)(BollardError::RequestTimeoutError)),
            }
        }
    }

    /// Import a root filesystem tar stream as `repo:tag`, applying Dockerfile `changes`.
    pub async fn import(
        &self,
        rootfs: impl Stream<Item = std::io::Result<Bytes>> + Send + 'static,
        repo: &str,
        tag: &str,
        changes: Vec<String>,
    ) -> Result<()> {
        let opts = qp::CreateImageOptions {
            from_src: Some("-".to_string()),
            repo: Some(repo.to_string()),
            tag: Some(tag.to_string()),
            changes,
            ..Default::default()
        };
        let target = format!("{repo}:{tag}");
        let body = bollard::body_try_stream(rootfs);
        let mut stream = self.docker.create_image(Some(opts), Some(body), None);
        while let Some(item) = stream.next().await {
            item.map_err(call("import image", &target))?;
        }
        Ok(())
    }

    /// Tag `image` as `repo:tag`.
    pub async fn tag(&self, image: &str, repo: &str, tag: &str) -> Result<()> {
        let opts = qp::TagImageOptions { repo: Some(repo.to_string()), tag: Some(tag.to_string()) };
        self.docker.tag_image(image, Some(opts)).await.map_err(call("tag image", image))
    }

    /// Commit a container's changes as image `repo:tag`; returns the image id.
    pub async fn commit(&self, container: &str, repo: &str, tag: &str) -> Result<String> {
        let opts = qp::CommitContainerOptions {
            container: Some(container.to_string()),
            repo: Some(repo.to_string()),
            tag: Some(tag.to_string()),
            pause: true,
            ..Default::default()
        };
        let r = self
            .docker
            .commit_container(opts, bollard::models::ContainerConfig::default())
            .await
            .map_err(call("commit container", container))?;
        Ok(r.id)
    }

    /// Remove an image (not forced: an image in use stays); already gone is fine.
    pub async fn remove_image(&self, image: &str) -> Result<()> {
        match self.docker.remove_image(image, None::<qp::RemoveImageOptions>, None).await {
            Err(e) if !is_not_found(&e) => Err(call("remove image", image)(e)),
            _ => Ok(()),
        }
    }

    /// Create a container named `name`; returns its id.
    pub async fn create_container(&self, name: &str, body: ContainerCreateBody) -> Result<String> {
        let opts = qp::CreateContainerOptions { name: Some(name.to_string()), ..Default::default() };
        let r = self.docker.create_container(Some(opts), body).await.map_err(call("create container", name))?;
        Ok(r.id)
    }

    /// Extract a tar archive at `path` in a container.
    pub async fn upload(&self, container: &str, path: &str, tar: Vec<u8>) -> Result<()> {
        let opts = qp::UploadToContainerOptions { path: path.to_string(), ..Default::default() };
        self.docker
            .upload_to_container(container, Some(opts), bollard::body_full(tar.into()))
            .await
            .map_err(call("upload to container", container))
    }

    /// A tar stream of `path` in a container (a file or a directory, as `docker cp` reads it).
    pub fn download<'a>(
        &'a self,
        container: &'a str,
        path: &str,
    ) -> impl Stream<Item = Result<Bytes>> + Send + 'a {
        let opts = qp::DownloadFromContainerOptions { path: path.to_string() };
        self.docker
            .download_from_container(container, Some(opts))
            .map_err(move |e| call("download from container", container)(e))
    }

    /// Whether `path` exists in a container and is a directory (`None` when absent).
    pub async fn stat_is_dir(&self, container: &str, path: &str) -> Result<Option<bool>> {
        let opts = qp::ContainerArchiveInfoOptions { path: path.to_string() };
        match self.docker.get_container_archive_info(container, Some(opts)).await {
            // Go's os.ModeDir is the top bit.
            Ok(stat) => Ok(Some(stat.file_mode & (1 << 31) != 0)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(call("stat in container", container)(e)),
        }
    }

    /// Extract a tar stream at `path` in a container, without holding it in memory.
    pub async fn upload_stream(
        &self,
        container: &str,
        path: &str,
        tar: impl Stream<Item = std::io::Result<Bytes>> + Send + 'static,
    ) -> Result<()> {
        let opts = qp::UploadToContainerOptions { path: path.to_string(), ..Default::default() };
        self.docker
            .upload_to_container(container, Some(opts), bollard::body_try_stream(tar))
            .await
            .map_err(call("upload to container", container))
    }

    /// One tar stream (`docker save` format) of the named images.
    pub fn export_images<'a>(&'a self, names: &'a [&'a str]) -> impl Stream<Item = Result<Bytes>> + Send + 'a {
        self.docker.export_images(names).map_err(move |e| call("export images", names.first().copied().unwrap_or(""))(e))
    }

    /// Start a container.
    pub async fn start(&self, container: &str) -> Result<()> {
        self.docker
            .start_container(container, None::<qp::StartContainerOptions>)
            .await
            .map_err(call("start container", container))
    }

    /// Freeze a running container's processes.
    pub async fn pause(&self, container: &str) -> Result<()> {
        self.docker.pause_container(container).await.map_err(call("pause container", container))
    }

    /// Thaw a paused container. The engine checks "paused" under the container's lock, so of
    /// concurrent callers exactly one succeeds; the others get "is not paused".
    pub async fn unpause(&self, container: &str) -> Result<()> {
        self.docker.unpause_container(container).await.map_err(call("unpause container", container))
    }

    /// Rename a container.
    pub async fn rename(&self, container: &str, name: &str) -> Result<()> {
        let opts = qp::RenameContainerOptions { name: name.to_string() };
        self.docker.rename_container(container, opts).await.map_err(call("rename container", container))
    }

    /// Inspect a container.
    pub async fn inspect(&self, container: &str) -> Result<ContainerInspectResponse> {
        self.docker
            .inspect_container(container, None::<qp::InspectContainerOptions>)
            .await
            .map_err(call("inspect container", container))
    }

    /// Remove a container at once (kill, no graceful stop) with its anonymous volumes.
    /// Already gone is fine.
    pub async fn remove_container(&self, container: &str) -> Result<()> {
        let opts = qp::RemoveContainerOptions { force: true, v: true, ..Default::default() };
        match self.docker.remove_container(container, Some(opts)).await {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            // "removal already in progress": another remover got there first.
            Err(BollardError::DockerResponseServerError { status_code: 409, message })
                if message.contains("already in progress") =>
            {
                Ok(())
            }
            Err(e) => Err(call("remove container", container)(e)),
        }
    }

    /// Wait for a container to stop; returns its exit code.
    pub async fn wait(&self, container: &str) -> Result<i64> {
        let mut stream = self.docker.wait_container(container, None::<qp::WaitContainerOptions>);
        match stream.next().await {
            Some(Ok(r)) => Ok(r.status_code),
            // bollard reports a non-zero exit as an error carrying the code.
            Some(Err(BollardError::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) => Err(call("wait container", container)(e)),
            None => Err(call("wait container", container)(BollardError::RequestTimeoutError)),
        }
    }

    /// The last `lines` lines of a container's output.
    pub async fn logs_tail(&self, container: &str, lines: usize) -> Result<String> {
        let opts = qp::LogsOptions {
            stdout: true,
            stderr: true,
            tail: lines.to_string(),
            ..Default::default()
        };
        let chunks: Vec<_> = self
            .docker
            .logs(container, Some(opts))
            .try_collect()
            .await
            .map_err(call("container logs", container))?;
        Ok(chunks.iter().map(|c| String::from_utf8_lossy(&c.clone().into_bytes()).into_owned()).collect())
    }

    /// Run `argv` in a running container, streaming its stdout and stderr to `out` and `err`
    /// as they come; returns its exit code.
    pub async fn exec(
        &self,
        container: &str,
        argv: &[String],
        env: &[String],
        out: &mut (dyn AsyncWrite + Unpin + Send),
        err: &mut (dyn AsyncWrite + Unpin + Send),
    ) -> Result<i64> {
        let config = CreateExecOptions {
            cmd: Some(argv.to_vec()),
            env: (!env.is_empty()).then(|| env.to_vec()),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..Default::default()
        };
        let created = self.docker.create_exec(container, config).await.map_err(call("create exec", container))?;
        match self.docker.start_exec(&created.id, None).await.map_err(call("start exec", container))? {
            StartExecResults::Attached { output, .. } => drain(output, container, out, err).await?,
            StartExecResults::Detached => {}
        }
        let inspect = self.docker.inspect_exec(&created.id).await.map_err(call("inspect exec", container))?;
        Ok(inspect.exit_code.unwrap_or(-1))
    }

    /// Run `argv` in a running container with `input` streamed to its stdin (closed at the
    /// end), its output to `out`/`err`; returns its exit code.
    pub async fn exec_with_input(
        &self,
        container: &str,
        argv: &[String],
        input: impl Stream<Item = Result<Bytes>> + Send,
        out: &mut (dyn AsyncWrite + Unpin + Send),
        err: &mut (dyn AsyncWrite + Unpin + Send),
    ) -> Result<i64> {
        let config = CreateExecOptions {
            cmd: Some(argv.to_vec()),
            attach_stdin: Some(true),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..Default::default()
        };
        let created = self.docker.create_exec(container, config).await.map_err(call("create exec", container))?;
        let StartExecResults::Attached { output, input: mut stdin } =
            self.docker.start_exec(&created.id, None).await.map_err(call("start exec", container))?
        else {
            return Err(call("start exec", container)(BollardError::RequestTimeoutError));
        };
        let feed = async {
            futures_util::pin_mut!(input);
            while let Some(chunk) = input.next().await {
                stdin.write_all(&chunk?).await.map_err(|e| Error::io("streaming into the client", e))?;
            }
            stdin.shutdown().await.map_err(|e| Error::io("closing the client's stdin", e))?;
            Ok::<(), Error>(())
        };
        let (fed, drained) = tokio::join!(feed, drain(output, container, out, err));
        drained?;
        fed?;
        let inspect = self.docker.inspect_exec(&created.id).await.map_err(call("inspect exec", container))?;
        Ok(inspect.exit_code.unwrap_or(-1))
    }

    /// Containers (running or not) matching `filters`.
    pub async fn containers(&self, filters: HashMap<String, Vec<String>>) -> Result<Vec<ContainerSummary>> {
        let opts = qp::ListContainersOptions { all: true, filters: Some(filters), ..Default::default() };
        self.docker.list_containers(Some(opts)).await.map_err(call("list containers", "engine"))
    }

    /// Names of volumes matching `filters`.
    pub async fn volumes(&self, filters: HashMap<String, Vec<String>>) -> Result<Vec<String>> {
        let opts = qp::ListVolumesOptions { filters: Some(filters) };
        let r = self.docker.list_volumes(Some(opts)).await.map_err(call("list volumes", "engine"))?;
        Ok(r.volumes.unwrap_or_default().into_iter().map(|v| v.name).collect())
    }

    /// Remove a volume; already gone is fine.
    pub async fn remove_volume(&self, name: &str) -> Result<()> {
        match self.docker.remove_volume(name, Some(qp::RemoveVolumeOptions { force: true })).await {
            Err(e) if !is_not_found(&e) => Err(call("remove volume", name)(e)),
            _ => Ok(()),
        }
    }

    /// Names of networks matching `filters`.
    pub async fn networks(&self, filters: HashMap<String, Vec<String>>) -> Result<Vec<String>> {
        let opts = qp::ListNetworksOptions { filters: Some(filters) };
        let r = self.docker.list_networks(Some(opts)).await.map_err(call("list networks", "engine"))?;
        Ok(r.into_iter().filter_map(|n| n.name).collect())
    }

    /// Remove a network; already gone is fine.
    pub async fn remove_network(&self, name: &str) -> Result<()> {
        match self.docker.remove_network(name).await {
            Err(e) if !is_not_found(&e) => Err(call("remove network", name)(e)),
            _ => Ok(()),
        }
    }

    /// Stop a container (SIGTERM, then SIGKILL after `grace`), keeping it; paused ones too.
    pub async fn stop(&self, container: &str, grace: Duration) -> Result<()> {
        let opts = qp::StopContainerOptions { t: Some(grace.as_secs() as i32), ..Default::default() };
        self.docker.stop_container(container, Some(opts)).await.map_err(call("stop container", container))
    }
}

/// Copy an exec's output stream to `out`/`err` as it comes, until it ends.
async fn drain(
    mut output: std::pin::Pin<Box<dyn Stream<Item = std::result::Result<bollard::container::LogOutput, BollardError>> + Send>>,
    container: &str,
    out: &mut (dyn AsyncWrite + Unpin + Send),
    err: &mut (dyn AsyncWrite + Unpin + Send),
) -> Result<()> {
    use bollard::container::LogOutput;
    while let Some(chunk) = output.next().await {
        let write = match chunk.map_err(call("exec output", container))? {
            LogOutput::StdErr { message } => err.write_all(&message).await.and(err.flush().await),
            LogOutput::StdOut { message } | LogOutput::Console { message } => out.write_all(&message).await.and(out.flush().await),
            LogOutput::StdIn { .. } => Ok(()),
        };
        write.map_err(|e| Error::io("writing command output", e))?;
    }
    Ok(())
}

/// Split `repo[:tag]` (a registry port's colon is not a tag) into repo and tag (`latest`).
pub fn split_reference(image: &str) -> (&str, &str) {
    match image.rfind(':') {
        Some(i) if !image[i + 1..].contains('/') => (&image[..i], &image[i + 1..]),
        _ => (image, "latest"),
    }
}

#[cfg(test)]
mod tests {
    use super::split_reference;

    #[test]
    fn references_split_at_the_tag_colon_only() {
        assert_eq!(split_reference("docker:dind"), ("docker", "dind"));
        assert_eq!(split_reference("alpine"), ("alpine", "latest"));
        assert_eq!(split_reference("reg:5000/x/y"), ("reg:5000/x/y", "latest"));
        assert_eq!(split_reference("reg:5000/x/y:1.2"), ("reg:5000/x/y", "1.2"));
    }
}
