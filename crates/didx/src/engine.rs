//! The one wrapper around the Docker Engine API (bollard): every engine call didx makes is a
//! method here, each failure mapped to [`Error::Engine`] naming the call and its target.
//! A 404 on removal means "already gone" and is not an error.
//!
//! Every call is bounded, by a bound suited to it, and a call that passes it fails with
//! [`Error::TimedOut`] naming the call:
//! - quick calls (inspect, create, start, pause, rename, list, stat, logs tail, exec
//!   create/start/inspect) answer within [`QUICK_TIMEOUT`]; removals within
//!   [`REMOVE_TIMEOUT`] (a force remove kills the container and deletes its anonymous volumes);
//! - data calls (pull, import, upload, download, export, the input of an exec) fail when no
//!   data moves for [`IDLE_TIMEOUT`], however long they take in all; a commit (no progress to
//!   watch) within [`COMMIT_TIMEOUT`]; an image export's first byte (the engine writes the
//!   whole export to disk first) within [`EXPORT_FIRST_BYTE_TIMEOUT`];
//! - the output of an exec (a user's COMMAND) and [`Engine::wait`] are not bounded: their
//!   length is the program's.
//!
//! bollard's own client-wide timeout only covers a request until the engine's response
//! headers arrive; for an upload that is the whole transfer, for a streamed response none of
//! the body. So didx bounds each call itself and gives bollard no bound.

use std::collections::HashMap;
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{ContainerCreateBody, ContainerInspectResponse, ContainerSummary, ImageInspect, ImageSummary, SystemInfo};
use bollard::query_parameters as qp;
use bytes::Bytes;
use futures_util::{Stream, StreamExt, TryStreamExt};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::error::{Error, Result};

/// Default engine address when neither `-H` nor `DOCKER_HOST` is given.
pub const DEFAULT_HOST: &str = "unix:///var/run/docker.sock";

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
pub const COMMIT_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// bollard's client-wide timeout, which would cut an upload at that length whatever its
/// progress: none (tokio treats an unrepresentable deadline as none); each call is bounded here.
const BOLLARD_TIMEOUT: Duration = Duration::from_secs(u64::MAX);
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

fn call<'a>(op: &'static str, target: &'a str) -> impl FnOnce(BollardError) -> Error + 'a {
    move |source| Error::Engine { op, target: target.to_string(), source }
}

/// Run `fut` (one engine call) within `limit`; `Err` only when it timed out, the call's own
/// result inside.
async fn within<T>(
    op: &'static str,
    target: &str,
    limit: Duration,
    fut: impl std::future::Future<Output = std::result::Result<T, BollardError>>,
) -> Result<std::result::Result<T, BollardError>> {
    tokio::time::timeout(limit, fut).await.map_err(|_| Error::TimedOut { op, target: target.to_string(), after: limit, idle: false })
}

/// [`within`] [`QUICK_TIMEOUT`], failures mapped to [`Error::Engine`].
async fn quick<T>(
    op: &'static str,
    target: &str,
    fut: impl std::future::Future<Output = std::result::Result<T, BollardError>>,
) -> Result<T> {
    within(op, target, QUICK_TIMEOUT, fut).await?.map_err(call(op, target))
}

fn idle_error(op: &'static str, target: &str) -> Error {
    Error::TimedOut { op, target: target.to_string(), after: IDLE_TIMEOUT, idle: true }
}

/// `stream`, failing with [`Error::TimedOut`] when its first item takes longer than `first`,
/// or a later one longer than [`IDLE_TIMEOUT`], to come once asked for (a slow consumer does
/// not count); it ends after that.
fn idle_bounded<'a, T: Send + 'a>(
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
struct Progress(std::sync::Arc<std::sync::Mutex<Moved>>);

struct Moved {
    at: tokio::time::Instant,
    /// The engine asked for more and the source has none yet.
    waiting_on_source: bool,
}

impl Progress {
    fn new() -> Progress {
        Progress(std::sync::Arc::new(std::sync::Mutex::new(Moved { at: tokio::time::Instant::now(), waiting_on_source: false })))
    }
    fn set(&self, waiting_on_source: bool) {
        if let Ok(mut m) = self.0.lock() {
            *m = Moved { at: tokio::time::Instant::now(), waiting_on_source };
        }
    }
    fn moved(&self) {
        self.set(false)
    }
    /// Returns once nothing has moved for [`IDLE_TIMEOUT`] while the engine had data to take.
    async fn stalled(&self) {
        loop {
            let deadline = match self.0.lock() {
                Ok(m) if m.waiting_on_source => tokio::time::Instant::now() + IDLE_TIMEOUT,
                Ok(m) => m.at + IDLE_TIMEOUT,
                Err(_) => return std::future::pending().await,
            };
            if tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
    /// `body`, marking progress at each chunk taken and noting when its source is the one
    /// keeping the engine waiting.
    fn watch<S>(&self, body: S) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static
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
            None => std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| DEFAULT_HOST.to_string()),
        };
        let known = ["unix://", "tcp://", "http://", "https://"];
        if !known.iter().any(|p| host.starts_with(p)) {
            return Err(Error::invalid(
                "engine address",
                host,
                "expected unix:///path/docker.sock or tcp://HOST:PORT (set by -H or DOCKER_HOST)",
            ));
        }
        let docker = Docker::connect_with_host(&host).map_err(|source| Error::Unreachable { host: host.clone(), source })?;
        Engine::negotiated(docker, host).await
    }

    /// Connect to the engine the docker CLI would use: `DOCKER_HOST`, else the current docker
    /// context (`DOCKER_CONTEXT`, else `currentContext` in `$DOCKER_CONFIG/config.json`, with
    /// the context's TLS files when it has them), else the local socket. (The `didx` command's
    /// `-H` comes first: it calls [`Engine::connect`] with it.)
    ///
    /// ```no_run
    /// # async fn demo() -> didx::Result<()> {
    /// let engine = didx::Engine::connect_default().await?;
    /// println!("{}", engine.host());
    /// # Ok(()) }
    /// ```
    pub async fn connect_default() -> Result<Engine> {
        let target = crate::context::resolve(&|k| std::env::var(k).ok(), &|p| std::fs::read_to_string(p).ok())?;
        match &target.tls_dir {
            None => Engine::connect(Some(&target.host)).await,
            Some(dir) => {
                let https = target.host.replacen("tcp://", "https://", 1);
                let docker = Docker::connect_with_ssl(
                    &https,
                    &dir.join("key.pem"),
                    &dir.join("cert.pem"),
                    &dir.join("ca.pem"),
                    u64::MAX,
                    bollard::API_DEFAULT_VERSION,
                )
                .map_err(|source| Error::Unreachable { host: target.host.clone(), source })?;
                Engine::negotiated(docker, https).await
            }
        }
    }

    async fn negotiated(docker: Docker, host: String) -> Result<Engine> {
        let docker = docker.with_timeout(BOLLARD_TIMEOUT);
        match tokio::time::timeout(CONNECT_TIMEOUT, docker.negotiate_version()).await {
            Ok(Ok(docker)) => Ok(Engine { docker, host }),
            Ok(Err(source)) => Err(Error::Unreachable { host, source }),
            Err(_) => Err(Error::Unreachable { host, source: BollardError::RequestTimeoutError }),
        }
    }

    /// The address connected to.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The environment a docker CLI needs to talk to this same engine: `DOCKER_HOST` (an
    /// `http://`/`https://` address in the CLI's `tcp://` form) and, for `https://`,
    /// `DOCKER_TLS_VERIFY=1`. `DOCKER_TLS_VERIFY`/`DOCKER_CERT_PATH`, when they applied to a
    /// `tcp://` address, came from this process's environment and are inherited as they are.
    pub fn cli_env(&self) -> Vec<(String, String)> {
        cli_env_for(&self.host)
    }

    /// True when the engine runs on this machine (a unix socket), so container addresses on its
    /// default bridge are normally routable from here.
    pub fn is_local(&self) -> bool {
        self.host.starts_with("unix://")
    }

    /// The engine's `/info`.
    pub async fn info(&self) -> Result<SystemInfo> {
        quick("info", "engine", self.docker.info()).await
    }

    /// Inspect an image; `None` when absent.
    pub async fn image(&self, name: &str) -> Result<Option<ImageInspect>> {
        match within("inspect image", name, QUICK_TIMEOUT, self.docker.inspect_image(name)).await? {
            Ok(i) => Ok(Some(i)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(call("inspect image", name)(e)),
        }
    }

    /// Images (tagged or not) matching `filters`, e.g. `label=KEY=VALUE`.
    pub async fn images(&self, filters: HashMap<String, Vec<String>>) -> Result<Vec<ImageSummary>> {
        let opts = qp::ListImagesOptions { all: false, filters: Some(filters), ..Default::default() };
        quick("list images", "engine", self.docker.list_images(Some(opts))).await
    }

    /// Pull `image`, giving up when the registry sends nothing for `idle`.
    pub async fn pull(&self, image: &str, idle: Duration) -> Result<()> {
        let (repo, tag) = split_reference(image);
        let opts = qp::CreateImageOptions { from_image: Some(repo.to_string()), tag: Some(tag.to_string()), ..Default::default() };
        let mut stream = self.docker.create_image(Some(opts), None, None);
        loop {
            match tokio::time::timeout(idle, stream.next()).await {
                Ok(Some(Ok(_))) => {}
                Ok(Some(Err(e))) => return Err(call("pull image", image)(e)),
                Ok(None) => return Ok(()),
                Err(_) => return Err(Error::TimedOut { op: "pull image", target: image.to_string(), after: idle, idle: true }),
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
        // Progress: the engine taking the archive, then its answer's lines.
        let progress = Progress::new();
        let body = bollard::body_try_stream(progress.watch(rootfs));
        let mut stream = self.docker.create_image(Some(opts), Some(body), None);
        let consume = async {
            while let Some(item) = stream.next().await {
                progress.moved();
                item.map_err(call("import image", &target))?;
            }
            Ok(())
        };
        tokio::select! {
            r = consume => r,
            _ = progress.stalled() => Err(idle_error("import image", &target)),
        }
    }

    /// Tag `image` as `repo:tag`.
    pub async fn tag(&self, image: &str, repo: &str, tag: &str) -> Result<()> {
        let opts = qp::TagImageOptions { repo: Some(repo.to_string()), tag: Some(tag.to_string()) };
        quick("tag image", image, self.docker.tag_image(image, Some(opts))).await
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
        let commit = self.docker.commit_container(opts, bollard::models::ContainerConfig::default());
        let r = within("commit container", container, COMMIT_TIMEOUT, commit).await?.map_err(call("commit container", container))?;
        Ok(r.id)
    }

    /// Remove an image (not forced: an image in use stays); already gone is fine.
    pub async fn remove_image(&self, image: &str) -> Result<()> {
        let remove = self.docker.remove_image(image, None::<qp::RemoveImageOptions>, None);
        match within("remove image", image, REMOVE_TIMEOUT, remove).await? {
            Err(e) if !is_not_found(&e) => Err(call("remove image", image)(e)),
            _ => Ok(()),
        }
    }

    /// Create a container named `name`; returns its id.
    pub async fn create_container(&self, name: &str, body: ContainerCreateBody) -> Result<String> {
        let opts = qp::CreateContainerOptions { name: Some(name.to_string()), ..Default::default() };
        let r = quick("create container", name, self.docker.create_container(Some(opts), body)).await?;
        Ok(r.id)
    }

    /// Extract a (small: held in memory) tar archive at `path` in a container.
    pub async fn upload(&self, container: &str, path: &str, tar: Vec<u8>) -> Result<()> {
        // As docker cp: never replace a directory with a non-directory (a host directory
        // mounted in the client would be deleted).
        let opts =
            qp::UploadToContainerOptions { path: path.to_string(), no_overwrite_dir_non_dir: Some("true".into()), ..Default::default() };
        let upload = self.docker.upload_to_container(container, Some(opts), bollard::body_full(tar.into()));
        within("upload to container", container, IDLE_TIMEOUT, upload).await?.map_err(call("upload to container", container))
    }

    /// A tar stream of `path` in a container (a file or a directory, as `docker cp` reads it).
    pub fn download<'a>(&'a self, container: &'a str, path: &str) -> impl Stream<Item = Result<Bytes>> + Send + 'a {
        let opts = qp::DownloadFromContainerOptions { path: path.to_string() };
        let stream =
            self.docker.download_from_container(container, Some(opts)).map_err(move |e| call("download from container", container)(e));
        idle_bounded("download from container", container.to_string(), IDLE_TIMEOUT, stream)
    }

    /// Whether `path` exists in a container and is a directory (`None` when absent).
    pub async fn stat_is_dir(&self, container: &str, path: &str) -> Result<Option<bool>> {
        let opts = qp::ContainerArchiveInfoOptions { path: path.to_string() };
        match within("stat in container", container, QUICK_TIMEOUT, self.docker.get_container_archive_info(container, Some(opts))).await? {
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
        // As docker cp: never replace a directory with a non-directory (a host directory
        // mounted in the client would be deleted).
        let opts =
            qp::UploadToContainerOptions { path: path.to_string(), no_overwrite_dir_non_dir: Some("true".into()), ..Default::default() };
        let progress = Progress::new();
        let upload = self.docker.upload_to_container(container, Some(opts), bollard::body_try_stream(progress.watch(tar)));
        tokio::select! {
            r = upload => r.map_err(call("upload to container", container)),
            _ = progress.stalled() => Err(idle_error("upload to container", container)),
        }
    }

    /// One tar stream (`docker save` format) of the named images.
    pub fn export_images<'a>(&'a self, names: &'a [&'a str]) -> impl Stream<Item = Result<Bytes>> + Send + 'a {
        let target = names.first().copied().unwrap_or("");
        let stream = self.docker.export_images(names).map_err(move |e| call("export images", target)(e));
        idle_bounded("export images", target.to_string(), EXPORT_FIRST_BYTE_TIMEOUT, stream)
    }

    /// Start a container.
    pub async fn start(&self, container: &str) -> Result<()> {
        quick("start container", container, self.docker.start_container(container, None::<qp::StartContainerOptions>)).await
    }

    /// Freeze a running container's processes.
    pub async fn pause(&self, container: &str) -> Result<()> {
        quick("pause container", container, self.docker.pause_container(container)).await
    }

    /// Thaw a paused container. The engine checks "paused" under the container's lock, so of
    /// concurrent callers exactly one succeeds; the others get "is not paused".
    pub async fn unpause(&self, container: &str) -> Result<()> {
        quick("unpause container", container, self.docker.unpause_container(container)).await
    }

    /// Rename a container.
    pub async fn rename(&self, container: &str, name: &str) -> Result<()> {
        let opts = qp::RenameContainerOptions { name: name.to_string() };
        quick("rename container", container, self.docker.rename_container(container, opts)).await
    }

    /// Inspect a container.
    pub async fn inspect(&self, container: &str) -> Result<ContainerInspectResponse> {
        quick("inspect container", container, self.docker.inspect_container(container, None::<qp::InspectContainerOptions>)).await
    }

    /// Inspect a container; `None` when there is no such container (any more).
    pub async fn inspect_if_exists(&self, container: &str) -> Result<Option<ContainerInspectResponse>> {
        let inspect = self.docker.inspect_container(container, None::<qp::InspectContainerOptions>);
        match within("inspect container", container, QUICK_TIMEOUT, inspect).await? {
            Ok(i) => Ok(Some(i)),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(call("inspect container", container)(e)),
        }
    }

    /// Remove a container at once (kill, no graceful stop) with its anonymous volumes.
    /// Already gone is fine.
    pub async fn remove_container(&self, container: &str) -> Result<()> {
        let opts = qp::RemoveContainerOptions { force: true, v: true, ..Default::default() };
        match within("remove container", container, REMOVE_TIMEOUT, self.docker.remove_container(container, Some(opts))).await? {
            Ok(()) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            // "removal already in progress": another remover got there first.
            Err(BollardError::DockerResponseServerError { status_code: 409, message }) if message.contains("already in progress") => Ok(()),
            Err(e) => Err(call("remove container", container)(e)),
        }
    }

    /// Wait for a container to stop; returns its exit code. Not bounded: that is the
    /// container's program's length.
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
        let opts = qp::LogsOptions { stdout: true, stderr: true, tail: lines.to_string(), ..Default::default() };
        let chunks: Vec<_> = quick("container logs", container, self.docker.logs(container, Some(opts)).try_collect()).await?;
        Ok(chunks.iter().map(|c| String::from_utf8_lossy(&c.clone().into_bytes()).into_owned()).collect())
    }

    /// Run `argv` in a running container, streaming its stdout and stderr to `out` and `err`
    /// as they come; returns its exit code. Its run is not bounded (the program's length);
    /// creating, starting and inspecting it are. A sink that fails (a closed pipe) is no longer
    /// written to, and the rest of the output is read and dropped, so the program is not
    /// stopped by it.
    pub async fn exec(
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

    /// [`exec`](Self::exec) as `shape` says: its user, working directory and variables.
    pub async fn exec_as(
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
        let inspect = quick("inspect exec", container, self.docker.inspect_exec(&created.id)).await?;
        Ok(inspect.exit_code.unwrap_or(-1))
    }

    /// Hold a `container` whose PID 1 reads its stdin (the recipe's bootstrap, see the
    /// entrypoint), just started: attach to its stdin, stdout and stderr (its output is read
    /// and dropped, so the container never blocks on it); then `Lease::go`. When the attached connection closes without a `release` line — this
    /// process ended, however — the container ends itself.
    pub async fn attach_lease(&self, container: &str) -> Result<Lease> {
        let opts = qp::AttachContainerOptions { stdin: true, stdout: true, stderr: true, stream: true, ..Default::default() };
        let attached = quick("attach container", container, self.docker.attach_container(container, Some(opts))).await?;
        let mut output = attached.output;
        let drain = tokio::spawn(async move { while let Some(Ok(_)) = output.next().await {} });
        Ok(Lease { container: container.to_string(), input: attached.input, _output: None, drain: Some(drain) })
    }

    /// Hold `container` for this process: an exec of `argv` (the entrypoint's `lease` mode)
    /// with its stdin attached to a connection of this process. When the connection closes
    /// without `Lease::release` — this process ended, however — the container ends itself.
    pub async fn lease(&self, container: &str, argv: &[String]) -> Result<Lease> {
        // stdout and stderr attached too: engines (20.10 seen) that attach stdin alone never
        // read the connection, so never see it close.
        let (_, output, input) = self.attached_exec(container, argv).await?;
        Ok(Lease { container: container.to_string(), input, _output: Some(output), drain: None })
    }

    /// Create and start an exec of `argv` in `container` with stdin, stdout and stderr
    /// attached: its id, output and input.
    async fn attached_exec(&self, container: &str, argv: &[String]) -> Result<(String, OutputStream, std::pin::Pin<Box<dyn AsyncWrite + Send>>)> {
        let config = CreateExecOptions {
            cmd: Some(argv.to_vec()),
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

    /// Run `argv` in a running container with `input` streamed to its stdin (closed at the
    /// end), its output to `out`/`err`; returns its exit code. Fails when `input` stops moving
    /// for `IDLE_TIMEOUT` (120 s) while it is fed; once fed, the program's own length is not bounded.
    pub async fn exec_with_input(
        &self,
        container: &str,
        argv: &[String],
        input: impl Stream<Item = Result<Bytes>> + Send,
        out: &mut (dyn AsyncWrite + Unpin + Send),
        err: &mut (dyn AsyncWrite + Unpin + Send),
    ) -> Result<i64> {
        let (exec_id, output, mut stdin) = self.attached_exec(container, argv).await?;
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
        let inspect = quick("inspect exec", container, self.docker.inspect_exec(&exec_id)).await?;
        Ok(inspect.exit_code.unwrap_or(-1))
    }

    /// Containers (running or not) matching `filters`.
    pub async fn containers(&self, filters: HashMap<String, Vec<String>>) -> Result<Vec<ContainerSummary>> {
        let opts = qp::ListContainersOptions { all: true, filters: Some(filters), ..Default::default() };
        quick("list containers", "engine", self.docker.list_containers(Some(opts))).await
    }

    /// Names of volumes matching `filters`.
    pub async fn volumes(&self, filters: HashMap<String, Vec<String>>) -> Result<Vec<String>> {
        Ok(self.volumes_labelled(filters).await?.into_iter().map(|(name, _)| name).collect())
    }

    /// Volumes matching `filters`, each with its labels.
    pub async fn volumes_labelled(&self, filters: HashMap<String, Vec<String>>) -> Result<Vec<(String, HashMap<String, String>)>> {
        let opts = qp::ListVolumesOptions { filters: Some(filters) };
        let r = quick("list volumes", "engine", self.docker.list_volumes(Some(opts))).await?;
        Ok(r.volumes.unwrap_or_default().into_iter().map(|v| (v.name, v.labels)).collect())
    }

    /// Create a named volume with `labels` (the engine returns the existing one unchanged when
    /// the name is taken).
    pub async fn create_volume(&self, name: &str, labels: HashMap<String, String>) -> Result<()> {
        let req = bollard::models::VolumeCreateRequest { name: Some(name.to_string()), labels: Some(labels), ..Default::default() };
        quick("create volume", name, self.docker.create_volume(req)).await.map(|_| ())
    }

    /// Create a named volume with `driver` (the engine's default when `None`), its `options`
    /// and `labels`: what the engine would make implicitly for a container's volume source,
    /// labelled (the engine returns the existing one unchanged when the name is taken).
    pub async fn create_volume_with(
        &self,
        name: &str,
        driver: Option<&str>,
        options: HashMap<String, String>,
        labels: HashMap<String, String>,
    ) -> Result<()> {
        let req = bollard::models::VolumeCreateRequest {
            name: Some(name.to_string()),
            driver: driver.map(str::to_string),
            driver_opts: (!options.is_empty()).then_some(options),
            labels: Some(labels),
            ..Default::default()
        };
        quick("create volume", name, self.docker.create_volume(req)).await.map(|_| ())
    }

    /// A volume's labels and creation time (as the engine writes it); `None` when there is no
    /// such volume.
    pub async fn volume(&self, name: &str) -> Result<Option<(HashMap<String, String>, String)>> {
        match within("inspect volume", name, QUICK_TIMEOUT, self.docker.inspect_volume(name)).await? {
            Ok(v) => Ok(Some((v.labels, v.created_at.map(|t| serde_json::to_value(t).ok().map(|v| v.to_string()).unwrap_or_default()).unwrap_or_default()))),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(call("inspect volume", name)(e)),
        }
    }

    /// Remove a volume; already gone is fine.
    pub async fn remove_volume(&self, name: &str) -> Result<()> {
        // "in use" while the container holding it is being removed (by us, or by the engine's
        // auto-removal of a container that ended itself): that removal takes the volume too,
        // or frees it in a moment. Asked again for a few seconds before it counts.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let remove = self.docker.remove_volume(name, Some(qp::RemoveVolumeOptions { force: true }));
            match within("remove volume", name, REMOVE_TIMEOUT, remove).await? {
                Err(BollardError::DockerResponseServerError { status_code: 409, .. }) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) if !is_not_found(&e) => return Err(call("remove volume", name)(e)),
                _ => return Ok(()),
            }
        }
    }

    /// Names of networks matching `filters`.
    pub async fn networks(&self, filters: HashMap<String, Vec<String>>) -> Result<Vec<String>> {
        Ok(self.networks_labelled(filters).await?.into_iter().map(|(name, _)| name).collect())
    }

    /// Networks matching `filters`, each with its labels.
    pub async fn networks_labelled(&self, filters: HashMap<String, Vec<String>>) -> Result<Vec<(String, HashMap<String, String>)>> {
        let opts = qp::ListNetworksOptions { filters: Some(filters) };
        let r = quick("list networks", "engine", self.docker.list_networks(Some(opts))).await?;
        Ok(r.into_iter().filter_map(|n| Some((n.name?, n.labels.unwrap_or_default()))).collect())
    }

    /// The IPv4 and IPv6 subnets of every network of the engine (from each network's IPAM
    /// configuration).
    pub async fn network_subnets(&self) -> Result<Vec<String>> {
        let r = quick("list networks", "engine", self.docker.list_networks(None::<qp::ListNetworksOptions>)).await?;
        Ok(r.into_iter()
            .flat_map(|n| n.ipam.and_then(|i| i.config).unwrap_or_default())
            .filter_map(|c| c.subnet)
            .collect())
    }

    /// Remove a network; already gone is fine.
    pub async fn remove_network(&self, name: &str) -> Result<()> {
        match within("remove network", name, REMOVE_TIMEOUT, self.docker.remove_network(name)).await? {
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

/// [`Engine::cli_env`] for the engine at `host` (an address as [`Engine::host`] gives it).
pub fn cli_env_for(host: &str) -> Vec<(String, String)> {
    let var = |k: &str, v: String| (k.to_string(), v);
    if let Some(addr) = host.strip_prefix("https://") {
        vec![var("DOCKER_HOST", format!("tcp://{addr}")), var("DOCKER_TLS_VERIFY", "1".into())]
    } else if let Some(addr) = host.strip_prefix("http://") {
        vec![var("DOCKER_HOST", format!("tcp://{addr}"))]
    } else {
        vec![var("DOCKER_HOST", host.to_string())]
    }
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

/// Split `repo[:tag]` (a registry port's colon is not a tag) into repo and tag (`latest`).
pub fn split_reference(image: &str) -> (&str, &str) {
    match image.rfind(':') {
        Some(i) if !image[i + 1..].contains('/') => (&image[..i], &image[i + 1..]),
        _ => (image, "latest"),
    }
}

/// An attached exec's or container's output.
type OutputStream = std::pin::Pin<Box<dyn Stream<Item = std::result::Result<bollard::container::LogOutput, BollardError>> + Send>>;

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

    /// Tell a container held from before its start ([`Engine::attach_lease`]) that its files
    /// are in place: its PID 1 goes on to the entrypoint.
    pub async fn go(&mut self) -> Result<()> {
        self.tell(b"go\n", false, "start lease", "starting").await
    }

    /// Hand the container over: it stays when this process ends.
    pub async fn release(mut self) -> Result<()> {
        self.tell(b"release\n", true, "release lease", "releasing the lease on").await
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

    #[test]
    fn the_cli_gets_the_engine_address_in_its_own_form() {
        let env = |h: &str| cli_env_for(h).into_iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>();
        assert_eq!(env("unix:///var/run/docker.sock"), ["DOCKER_HOST=unix:///var/run/docker.sock"]);
        assert_eq!(env("tcp://h:2376"), ["DOCKER_HOST=tcp://h:2376"]);
        assert_eq!(env("http://h:2375"), ["DOCKER_HOST=tcp://h:2375"]);
        assert_eq!(env("https://h:2376"), ["DOCKER_HOST=tcp://h:2376", "DOCKER_TLS_VERIFY=1"]);
    }

    #[test]
    fn references_split_at_the_tag_colon_only() {
        assert_eq!(split_reference("docker:dind"), ("docker", "dind"));
        assert_eq!(split_reference("alpine"), ("alpine", "latest"));
        assert_eq!(split_reference("reg:5000/x/y"), ("reg:5000/x/y", "latest"));
        assert_eq!(split_reference("reg:5000/x/y:1.2"), ("reg:5000/x/y", "1.2"));
    }
}
