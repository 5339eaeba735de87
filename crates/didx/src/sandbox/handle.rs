//! [`Sandbox`], the handle of a running sandbox: its inner engine reached from Rust, commands
//! run in its client, kept or removed (by `rm`, or on drop on a thread of its own); and
//! [`ExecOutput`].

use std::time::Duration;

use crate::engine::Engine;
use crate::env::Environment;
use crate::env::pool::Refill;
use crate::error::{Error, Result};

/// What a command run by [`Sandbox::exec`] left: its exit code and everything it printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// The exit code (128 + N when killed by signal N).
    pub code: i64,
    /// Everything written to stdout.
    pub stdout: Vec<u8>,
    /// Everything written to stderr.
    pub stderr: Vec<u8>,
}

impl ExecOutput {
    /// True when the exit code is 0.
    pub fn success(&self) -> bool {
        self.code == 0
    }
    /// stdout as text (invalid UTF-8 replaced).
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    /// stderr as text (invalid UTF-8 replaced).
    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// A running sandbox: a Docker-in-Docker server with its own engine and storage, and a client
/// container wired to it. Made by [`Sandbox::builder`].
///
/// Removed by [`rm`](Sandbox::rm), or when dropped (the removal then runs on a thread of its
/// own, so dropping is safe in any runtime or none; a failure is logged, never a panic), unless
/// [`keep`](Sandbox::keep) was called or `DIDX_KEEP=1` was set when it started (set or unset
/// later, it changes nothing: what is logged on drop is what happens).
///
/// A sandbox is held by its process (a *lease*): if the process ends without removing it —
/// a panic that aborts, SIGKILL, an OOM kill — the sandbox ends itself within seconds and the
/// engine removes it. `keep()` releases the lease; with `DIDX_KEEP=1` at start none is taken.
#[derive(Debug)]
pub struct Sandbox {
    pub(super) env: Option<Environment>,
    pub(super) kept: bool,
    pub(super) refill: Option<Refill>,
    /// How host tools reach it: the client certificate files [`Sandbox::docker`] connects
    /// with, in a private directory removed with the sandbox.
    pub(super) access: tokio::sync::OnceCell<crate::inventory::HostAccess>,
    /// On a cluster, when the pool served it: the refill started at the claim, finished by
    /// [`Sandbox::rm`] (its pooled sandbox is held by this process until it is ready).
    pub(super) refilling: Option<tokio::task::JoinHandle<()>>,
}

impl Sandbox {
    fn env(&self) -> &Environment {
        // Only `rm` and `Drop` take it, and both consume the sandbox.
        self.env.as_ref().expect("a sandbox holds its environment until rm or drop")
    }

    /// The sandbox's id (the `<id>` of its container names and of its `io.didx.env` label).
    pub fn id(&self) -> &str {
        self.env().id().as_str()
    }
    /// The server container's name (`None` with `--engine host`, which has no server).
    pub fn server_name(&self) -> Option<&str> {
        self.env().server().map(|s| s.name.as_str())
    }
    /// The client container's name.
    pub fn client_name(&self) -> &str {
        &self.env().client().name
    }

    /// A client of the sandbox's *inner* engine, from this process: mutual TLS with the
    /// sandbox's own client certificate, verification on, to the server's TLS port published
    /// on 127.0.0.1 only (nothing listens on other addresses); for an engine over SSH, through
    /// a forward over its connection. For an engine on another machine reached otherwise
    /// (`tcp://` to another host), where that port is out of reach, every connection is a
    /// `docker system dial-stdio` run in the sandbox's client through the engine's exec API.
    ///
    /// ```no_run
    /// # async fn demo(sb: &didx::Sandbox) -> Result<(), Box<dyn std::error::Error>> {
    /// let docker = sb.docker().await?;
    /// let version = docker.version().await?;
    /// println!("inner engine {}", version.version.unwrap_or_default());
    /// # Ok(()) }
    /// ```
    pub async fn docker(&self) -> Result<bollard::Docker> {
        let client = &self.env().client().id;
        if let Some(inner) = self.env().backend().inner_docker(client) {
            return negotiated(inner?, self.env().location()).await;
        }
        let endpoint = match self.env().endpoint().await {
            Ok(endpoint) => endpoint,
            // An engine on another machine, not reached over SSH: the inner engine's port is on
            // that machine's loopback, out of reach; the client's own docker CLI reaches the
            // inner engine, through the engine's exec API.
            Err(Error::EndpointElsewhere { .. }) => return self.docker_through_client().await,
            Err(e) => return Err(e),
        };
        let dir = self.cert_dir().await?;
        let unreachable = |source| Error::Unreachable { host: endpoint.host.clone(), source };
        let docker = bollard::Docker::connect_with_ssl(
            &endpoint.host,
            &dir.join("key.pem"),
            &dir.join("cert.pem"),
            &dir.join("ca.pem"),
            120,
            bollard::API_DEFAULT_VERSION,
        )
        .map_err(unreachable)?;
        negotiated(docker, &endpoint.host).await
    }

    /// A client of the inner engine whose every connection is a `docker system dial-stdio` in
    /// the sandbox's client, run through the engine's exec API: no port is reached.
    async fn docker_through_client(&self) -> Result<bollard::Docker> {
        let engine = self.env().docker("reaching an inner engine through its client")?;
        let client = &self.env().client().id;
        negotiated(engine.inner_over_exec(client)?, &format!("exec:{client}")).await
    }

    /// Where the inner engine listens on this machine: `tcp://127.0.0.1:PORT` (mutual TLS; the
    /// certificate files are in [`docker_env`](Self::docker_env)'s `DOCKER_CERT_PATH`).
    pub async fn endpoint(&self) -> Result<crate::Endpoint> {
        self.env().endpoint().await
    }

    /// The variables that point a docker client of this machine at the sandbox's inner engine,
    /// as [`docker`](Self::docker) reaches it: `DOCKER_HOST` (`tcp://127.0.0.1:PORT`),
    /// `DOCKER_TLS_VERIFY=1` and `DOCKER_CERT_PATH` (a private 0700 directory in didx's cache
    /// directory, `env/<id>`, holding the client certificate; removed with the sandbox). The
    /// docker CLI, the Python SDK, docker-compose and testcontainers read them.
    pub async fn docker_env(&self) -> Result<Vec<(String, String)>> {
        Ok(self.host_access().await?.docker_env())
    }

    /// How a host tool reaches the sandbox's inner engine ([`docker_env`](Self::docker_env)),
    /// and the ports it publishes
    /// ([`SandboxBuilder::publish`](crate::SandboxBuilder::publish)), as bound. What
    /// `didx env ID` prints. The certificate files are written on first use.
    pub async fn host_access(&self) -> Result<crate::inventory::HostAccess> {
        self.access.get_or_try_init(|| self.env().host_access()).await.cloned()
    }

    /// The private directory holding the client certificate files, made on first use.
    async fn cert_dir(&self) -> Result<std::path::PathBuf> {
        Ok(self.host_access().await?.cert_path)
    }

    /// Run `argv` in the client (no shell: `["sh", "-c", "…"]` for one) and capture its output.
    /// A command that fails is not an error: look at [`ExecOutput::code`]. It runs as the
    /// builder said: in `/work` with
    /// [`SandboxBuilder::workdir_here`](crate::SandboxBuilder::workdir_here), as
    /// [`SandboxBuilder::user`](crate::SandboxBuilder::user), with the agent of
    /// [`SandboxBuilder::ssh_agent`](crate::SandboxBuilder::ssh_agent).
    pub async fn exec<I, S>(&self, argv: I) -> Result<ExecOutput>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let argv: Vec<String> = argv.into_iter().map(Into::into).collect();
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        let code = self.env().exec(&argv, &mut stdout, &mut stderr).await?;
        Ok(ExecOutput { code, stdout, stderr })
    }

    /// Copy `from` in the client (absolute; ending in `/.`: a directory's contents) to `to` on
    /// this machine, as `docker cp` does: into `to` when it is a directory (or ends in `/`),
    /// else as `to` (its parent must exist). The archive is validated before anything is
    /// written, and nothing is written outside `to` whatever it holds or what is already here
    /// (a symbolic link on the way is refused). Modes and times are kept; the files are yours.
    pub async fn copy_out(&self, from: &str, to: impl AsRef<std::path::Path>) -> Result<()> {
        if !from.starts_with('/') {
            return Err(Error::invalid("copy source", from, "the client path must be absolute"));
        }
        let env = self.env();
        crate::ops::copy::out::copy_out(&**env.backend(), &env.client().id, from, to.as_ref()).await.map(|_| ())
    }

    /// Copy `from` on this machine (a file or a tree; ending in `/.`: a directory's contents)
    /// into the client at the absolute `to`, as [`SandboxBuilder::copy`](crate::SandboxBuilder::copy)
    /// copies a host path at the start (validated the same way).
    pub async fn copy_in(&self, from: impl AsRef<std::path::Path>, to: &str) -> Result<()> {
        let env = self.env();
        crate::ops::copy::copy_in_host(&**env.backend(), &env.client().id, from.as_ref(), to).await.map(|_| ())
    }

    /// Put `images` of the inner engine into `to` (the host's engine, say): the reverse of
    /// [`SandboxBuilder::load`](crate::SandboxBuilder::load). `docker save` runs in the client
    /// and its output streams into `to`'s load, never held in memory; shared layers travel
    /// once. Returns what `to` says it loaded.
    pub async fn save_images(&self, images: &[impl AsRef<str>], to: &Engine) -> Result<Vec<String>> {
        let images: Vec<String> = images.iter().map(|i| i.as_ref().to_string()).collect();
        crate::ops::save::save(self.env(), to, &images).await
    }

    /// Run `argv` in the client, streaming its output to `out` and `err`; returns its exit code.
    pub async fn exec_streaming(
        &self,
        argv: &[String],
        out: &mut (dyn tokio::io::AsyncWrite + Unpin + Send),
        err: &mut (dyn tokio::io::AsyncWrite + Unpin + Send),
    ) -> Result<i64> {
        self.env().exec(argv, out, err).await
    }

    /// Run COMMANDs as `didx` runs them ([`crate::spec::Step::parse`]): in the client, or, with
    /// `host:`, on this machine (`sh -c`) with `DOCKER_HOST`, `DOCKER_TLS_VERIFY` and
    /// `DOCKER_CERT_PATH` pointing at the inner engine ([`docker_env`](Self::docker_env)) and
    /// `DIND_CLIENT_NAME` naming the client; output streamed to `out` and `err`, stopping at
    /// the first that fails. Returns that one (1-based) and its exit code, `None` when all
    /// succeeded.
    pub async fn run_steps(
        &self,
        steps: &[crate::spec::Step],
        out: &mut (dyn tokio::io::AsyncWrite + Unpin + Send),
        err: &mut (dyn tokio::io::AsyncWrite + Unpin + Send),
    ) -> Result<Option<(usize, i64)>> {
        let name = crate::spec::EnvVarName::parse("DIND_CLIENT_NAME")?;
        Ok(crate::ops::run::run_steps(self.env(), steps, &name, out, err, &|_| {}).await?.failed)
    }

    /// Keep the sandbox running after this handle is dropped and after this process ends (as
    /// `--clean none` does): its lease is released. Remove it later with `didx --clean all` or
    /// by its label.
    pub async fn keep(&mut self) -> Result<()> {
        self.kept = true;
        match self.env.as_mut() {
            Some(env) => env.release().await,
            None => Ok(()),
        }
    }

    /// Whether dropping this handle keeps the sandbox: [`keep`](Self::keep) was called, or
    /// `DIDX_KEEP=1` was set when it started (decided then; it holds no lease either way).
    pub fn is_kept(&self) -> bool {
        self.kept
    }

    /// True when the pool served this sandbox and its refill is still to come: on Docker until
    /// [`take_refill`](Self::take_refill), on a cluster (where it runs in this process) until
    /// [`rm`](Self::rm).
    pub fn is_pooled(&self) -> bool {
        self.refill.is_some() || self.refilling.is_some()
    }

    /// When the pool served this sandbox: what tops the pool up again (run it, or spawn it).
    pub fn take_refill(&mut self) -> Option<Refill> {
        self.refill.take()
    }

    /// Remove the sandbox now: server, client, the server's storage, anonymous volumes and
    /// anything else labelled with it. Removes even when kept.
    ///
    /// On a cluster, a sandbox the pool served also waits here for the refill its claim
    /// started, so that the pool is topped up again when this returns.
    pub async fn rm(mut self) -> Result<()> {
        let env = self.env.take().expect("a sandbox holds its environment until rm or drop");
        let removed = env.rm().await;
        if let Some(refill) = self.refilling.take()
            && let Err(e) = refill.await
        {
            tracing::warn!(error = %e, "the refill of the pool on the cluster ended early");
        }
        removed
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Some(refill) = self.refilling.take() {
            // Its pooled sandbox, not yet released, ends with the attach that holds it.
            refill.abort();
        }
        let Some(env) = self.env.take() else { return };
        if env.backend().as_engine().is_none() {
            if self.kept {
                tracing::info!(env = %env.id(), "sandbox kept: its pod runs until its deadline (or didx k8s rm)");
            } else {
                // On a cluster: its hold closes with it, so its pod ends now; the cluster
                // deletes the ended Job after its TTL (or the next start's sweep does).
                tracing::info!(env = %env.id(), "sandbox dropped: its pod ends; its Job goes after its TTL or at the next start's sweep");
            }
            env.forget();
            return;
        }
        if self.kept {
            // Kept: its lease was released by keep(), or never taken (DIDX_KEEP at start). Not
            // read again here: a lease taken at start would end it after all.
            tracing::info!(env = %env.id(), "sandbox kept");
            env.forget();
            return;
        }
        // The removal is async and Drop is not: run it on a thread with a runtime of its own,
        // reconnecting there (the handle's connections belong to the caller's runtime, which
        // may be single-threaded and blocked right here), and wait for it.
        let host = env.location().to_string();
        let id = env.id().to_string();
        // Its lease closes here too, so the sandbox would end itself anyway; removing it now
        // makes that immediate and certain.
        env.forget();
        let thread_id = id.clone();
        let removal = std::thread::Builder::new().name(format!("didx-drop-{id}")).spawn(move || {
            let id = thread_id;
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| Error::io("starting a runtime", e))?;
            rt.block_on(async {
                let engine = Engine::connect(Some(&host)).await?;
                crate::env::remove(&engine, &id).await.map(|_| ())
            })
        });
        match removal.map(|t| t.join()) {
            Ok(Ok(Ok(()))) => tracing::info!(env = %id, "sandbox removed"),
            Ok(Ok(Err(e))) => tracing::error!(error = %e, "removing a dropped sandbox failed; didx --clean all removes it"),
            Ok(Err(_)) => tracing::error!("the thread removing a dropped sandbox panicked; didx --clean all removes it"),
            Err(e) => tracing::error!(error = %e, "cannot start a thread to remove a dropped sandbox; didx --clean all removes it"),
        }
    }
}

/// `docker` with the API version agreed, within 30 s.
async fn negotiated(docker: bollard::Docker, host: &str) -> Result<bollard::Docker> {
    let unreachable = |source| Error::Unreachable { host: host.to_string(), source };
    match tokio::time::timeout(Duration::from_secs(30), docker.negotiate_version()).await {
        Ok(r) => r.map_err(unreachable),
        Err(_) => Err(unreachable(bollard::errors::Error::RequestTimeoutError)),
    }
}
