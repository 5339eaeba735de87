//! [`SandboxBuilder`]: the options of a sandbox, checked into [`SandboxOptions`] before anything
//! is created, and the start that makes a [`Sandbox`] of them.

use std::path::PathBuf;
use std::time::Duration;

use super::handle::Sandbox;
use crate::cancel::Cancel;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::images::Wanted;
use crate::ops::copy::{CpSource, CpSpec};
use crate::ops::launcher::Launch;
use crate::ops::start::SandboxOptions;
use crate::spec::{AddressRange, EngineMode, IsolationMode, PublishSpec, Version, VolumeSource, VolumeSpec};
use crate::spec::{SSH_AGENT_SOCK, UserSpec, WORKDIR};

/// The variable that keeps every [`Sandbox`] a program drops (for looking at it afterwards):
/// `DIDX_KEEP=1`. Read once, when a sandbox starts: a sandbox started with it takes no lease
/// and is kept when dropped; one started without it is removed when dropped, whatever the
/// variable says by then. [`Sandbox::rm`] still removes.
pub const KEEP_VAR: &str = "DIDX_KEEP";

/// The policy label of a sandbox started with [`KEEP_VAR`] set.
pub(super) const KEEP_POLICY: &str = "keep";

/// Builds a [`Sandbox`]. Every option of the `didx` command that shapes an environment has a
/// method here, taking the same grammar; values are checked by [`SandboxBuilder::options`]
/// (and so by every `start`), before anything is created.
///
/// ```no_run
/// # async fn demo() -> didx::Result<()> {
/// use didx::{Engine, Sandbox};
/// let engine = Engine::connect_default().await?;
/// let sb = Sandbox::builder()
///     .server_version("latest")
///     .copy("./fixtures:/work/")
///     .volume("/data")
///     .start(&engine)
///     .await?;
/// let out = sb.exec(["docker", "info"]).await?;
/// assert_eq!(out.code, 0);
/// sb.rm().await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
#[must_use = "a builder does nothing until started"]
pub struct SandboxBuilder {
    sv: Option<String>,
    cv: Option<String>,
    pull: bool,
    storage_driver: Option<String>,
    dockerd_opts: Vec<String>,
    isolation: IsolationMode,
    ready_timeout: Option<Duration>,
    server_image: Option<String>,
    client_image: Option<String>,
    volumes: Vec<String>,
    copies: Vec<String>,
    loads: Vec<String>,
    publish: Vec<String>,
    cwd: Option<PathBuf>,
    address_range: Option<String>,
    network: Option<String>,
    workdir_here: bool,
    user: Option<UserSpec>,
    ssh_agent: bool,
    engine_mode: EngineMode,
    store: bool,
    memory: Option<String>,
    cpus: Option<String>,
    pids_limit: Option<String>,
    registry_mirrors: Vec<String>,
    insecure_registries: Vec<String>,
    registry_auth: Option<crate::spec::RegistryAuth>,
}

/// How long [`SandboxBuilder`] waits for the inner engine unless told otherwise.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(60);

impl Sandbox {
    /// A builder with every option at its default.
    pub fn builder() -> SandboxBuilder {
        SandboxBuilder::default()
    }
}

/// Where [`SandboxBuilder::start_with`] gets its environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StartFrom {
    /// A fresh one, started now ([`SandboxBuilder::start`]).
    #[default]
    Fresh,
    /// A ready one of the warm pool when one matches, else a fresh one
    /// ([`SandboxBuilder::start_pooled`]).
    PoolOrFresh,
}

impl SandboxBuilder {
    /// Server version (`--sv`): `latest` → `docker:dind`, `X` → `docker:X-dind`. Default `latest`.
    pub fn server_version(mut self, v: impl Into<String>) -> Self {
        self.sv = Some(v.into());
        self
    }
    /// Client version (`--cv`) → `docker:VER`. Default: the server version.
    pub fn client_version(mut self, v: impl Into<String>) -> Self {
        self.cv = Some(v.into());
        self
    }
    /// Pull the server and client images even when present (`--pull`).
    pub fn pull(mut self, pull: bool) -> Self {
        self.pull = pull;
        self
    }
    /// The inner dockerd's storage driver (`--storage-driver`). Default: the host engine's.
    pub fn storage_driver(mut self, driver: impl Into<String>) -> Self {
        self.storage_driver = Some(driver.into()).filter(|d| !d.is_empty());
        self
    }
    /// More dockerd options, split into words as a POSIX shell would (`--dkropts`); repeatable.
    pub fn dockerd_opts(mut self, opts: impl Into<String>) -> Self {
        self.dockerd_opts.push(opts.into());
        self
    }
    /// A registry mirror for the inner engine's pulls of Docker Hub images
    /// (`--registry-mirror`: `http://` or `https://`, a host and port); repeatable.
    pub fn registry_mirror(mut self, url: impl Into<String>) -> Self {
        self.registry_mirrors.push(url.into());
        self
    }
    /// A registry the inner engine reaches over plain HTTP or with an unverified certificate
    /// (`--insecure-registry`: `HOST[:PORT]` or a CIDR block); repeatable.
    pub fn insecure_registry(mut self, host: impl Into<String>) -> Self {
        self.insecure_registries.push(host.into());
        self
    }
    /// Registry credentials for the client's docker (`--registry-auth`; see
    /// [`RegistryAuth`](crate::spec::RegistryAuth)): a private copy in the client's tmpfs,
    /// `DOCKER_AUTH_CONFIG`'s or the host's, used by the COMMANDs and [`Sandbox::exec`]'s
    /// docker for its pushes and the inner engine's pulls.
    pub fn registry_auth(mut self, auth: crate::spec::RegistryAuth) -> Self {
        self.registry_auth = Some(auth);
        self
    }
    /// How the server gets dockerd's privileges (`--isolation`). Default [`IsolationMode::Auto`].
    pub fn isolation(mut self, mode: IsolationMode) -> Self {
        self.isolation = mode;
        self
    }
    /// How long to wait for the inner engine to answer (`--ready-timeout`). Default 60 s.
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = Some(timeout);
        self
    }
    /// The server image, instead of the one `server_version` maps to (`--server-image`).
    pub fn server_image(mut self, image: impl Into<String>) -> Self {
        self.server_image = Some(image.into()).filter(|i| !i.is_empty());
        self
    }
    /// The client image, instead of the one `client_version` maps to (`--client-image`).
    pub fn client_image(mut self, image: impl Into<String>) -> Self {
        self.client_image = Some(image.into()).filter(|i| !i.is_empty());
        self
    }
    /// A mount into the client (`-v`): `[SOURCE:]ABS_CLIENT_PATH[:MODE]`; no SOURCE makes an
    /// anonymous volume, removed with the sandbox. Repeatable.
    pub fn volume(mut self, spec: impl Into<String>) -> Self {
        self.volumes.push(spec.into());
        self
    }
    /// Copy into the client after start (`--cp`): `SOURCE:ABS_CLIENT_PATH`, SOURCE a host path,
    /// `-` (a tar stream on stdin), `CONTAINER:/path` or `IMAGE::/path`. Repeatable, in order.
    pub fn copy(mut self, spec: impl Into<String>) -> Self {
        self.copies.push(spec.into());
        self
    }
    /// Seed the inner engine with an image of the host engine (`--load`). Repeatable.
    pub fn load(mut self, image: impl Into<String>) -> Self {
        self.loads.push(image.into());
        self
    }
    /// The range the inner engine's addresses come from (`--address-range`): an IPv4 network
    /// of /20 or larger, of which the sandbox's dockerd gets its own /20 (default bridge and
    /// network pool; see the book, docs/src/concepts/networking.md); `none` leaves them to dockerd. Default
    /// `10.200.0.0/13`. Ignored when `dockerd_opts` set `--bip`, `--default-address-pool` or
    /// `--fixed-cidr`.
    pub fn address_range(mut self, range: impl Into<String>) -> Self {
        self.address_range = Some(range.into());
        self
    }
    /// The host engine's network the server joins instead of the default bridge
    /// (`--network`); the inner engine takes its MTU.
    pub fn network(mut self, network: impl Into<String>) -> Self {
        self.network = Some(network.into()).filter(|n| !n.is_empty());
        self
    }
    /// Publish a port of the sandbox on the host (`--publish`): `[IP:]HOSTPORT:ENVPORT[/PROTO]`
    /// (see [`PublishSpec::parse`](crate::spec::PublishSpec::parse)); an inner
    /// `docker run -p ENVPORT:…` is then reachable at `IP:HOSTPORT`. Default address
    /// 127.0.0.1; HOSTPORT 0 or omitted takes a free port. Repeatable.
    pub fn publish(mut self, spec: impl Into<String>) -> Self {
        self.publish.push(spec.into());
        self
    }
    /// Mount the current directory (see [`cwd`](Self::cwd)) at `/work` in the client and run
    /// every command there (`--workdir-here`), as a build's launcher script does. A `volume`
    /// targeting `/work` is then refused.
    pub fn workdir_here(mut self, on: bool) -> Self {
        self.workdir_here = on;
        self
    }
    /// Run commands in the client as this user (`--user`): [`UserSpec::Host`] is the user
    /// running this process, with every supplementary group; files they create in a bind
    /// mount are that user's. The client gets a passwd entry (so `whoami` and `~` work; home
    /// `/work` with [`workdir_here`](Self::workdir_here), else `/home/NAME`), group entries
    /// for every gid, and its client certificate owned by the user.
    pub fn user(mut self, user: UserSpec) -> Self {
        self.user = Some(user);
        self
    }
    /// Forward the host's ssh agent (`--ssh-agent`): the socket `$SSH_AUTH_SOCK` names is
    /// mounted in the client and `SSH_AUTH_SOCK` points at it for the commands. Without
    /// `SSH_AUTH_SOCK`, a usage error.
    pub fn ssh_agent(mut self, on: bool) -> Self {
        self.ssh_agent = on;
        self
    }
    /// The directory relative host paths of `volume` and `copy` start from (itself made
    /// absolute against the process's current directory: the engine would take a relative
    /// bind source for a volume name). Default: the process's current directory.
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Which engine the client talks to (`--engine`): its own inner engine (the default,
    /// [`EngineMode::Dind`]) or, with [`EngineMode::Host`], the engine the sandbox is started
    /// on, through didx's engine-API proxy (Docker-outside-of-Docker: no server; bind sources
    /// the client names are translated to the engine's paths; what the client creates is
    /// labelled and removed with the sandbox). The client then has root on the engine's host.
    pub fn engine(mut self, mode: EngineMode) -> Self {
        self.engine_mode = mode;
        self
    }

    /// Use the image store (`--store`, see [`crate::store`]): the server mounts the store of
    /// its inner engine's version read-only and its engine starts with the store's images;
    /// each [`load`](Self::load) image the store lacks is put into it first (once, for every
    /// later sandbox), then found there. Where no store can serve (another inner storage
    /// driver than overlay2, `dockerd_opts` setting the driver or data root) the images are
    /// loaded as without, and a [`StoreEvent::NotUsed`](crate::store::StoreEvent) says why.
    pub fn store(mut self, on: bool) -> Self {
        self.store = on;
        self
    }

    /// Bound the memory of each of the server and the client (`--memory`: `512m`, `2g`; the
    /// server's bounds its dockerd and every inner container). Checked by
    /// [`options`](Self::options).
    pub fn memory(mut self, size: impl Into<String>) -> Self {
        self.memory = Some(size.into());
        self
    }

    /// Bound the CPU time of each of the server and the client (`--cpus`: `1.5`).
    pub fn cpus(mut self, cpus: impl Into<String>) -> Self {
        self.cpus = Some(cpus.into());
        self
    }

    /// Bound the number of processes of each of the server and the client (`--pids-limit`,
    /// at least 16).
    pub fn pids_limit(mut self, pids: impl Into<String>) -> Self {
        self.pids_limit = Some(pids.into());
        self
    }

    /// Check every value and return the validated options; touches no engine.
    pub fn options(&self) -> Result<SandboxOptions> {
        let sv = Version::parse("--sv value", self.sv.as_deref().unwrap_or("latest"))?;
        let cv = match &self.cv {
            Some(cv) => Version::parse("--cv value", cv)?,
            None => sv.clone(),
        };
        let mut dockerd_opts = Vec::new();
        for url in &self.registry_mirrors {
            dockerd_opts.push(crate::spec::mirror_arg(url)?);
        }
        for host in &self.insecure_registries {
            dockerd_opts.push(crate::spec::insecure_arg(host)?);
        }
        if self.engine_mode == EngineMode::Host && !dockerd_opts.is_empty() {
            let fix = "--engine host has no inner engine: the engine itself pulls, as its own daemon.json says";
            return Err(Error::invalid("--registry-mirror or --insecure-registry", dockerd_opts.join(" "), fix));
        }
        for o in &self.dockerd_opts {
            dockerd_opts.extend(
                shell_words::split(o).map_err(|e| Error::invalid("--dkropts value", o.clone(), format!("{e}: balance its quotes")))?,
            );
        }
        let wanted = |explicit: &Option<String>, mapped: String, v: &Version| match explicit {
            Some(i) => Wanted { image: i.clone(), explicit: true, versioned: None },
            None => Wanted { image: mapped, explicit: false, versioned: v.offline_image() },
        };
        // Absolute, so `./x` sources reach the engine as paths (a relative bind source is a
        // volume name to the engine).
        let cwd = match &self.cwd {
            Some(d) => std::path::absolute(d).map_err(|e| Error::io(format!("resolving {}", d.display()), e))?,
            None => std::env::current_dir().map_err(|e| Error::io("reading the current directory", e))?,
        };
        let mut volumes: Vec<VolumeSpec> = self.volumes.iter().map(|v| VolumeSpec::parse(v, &cwd)).collect::<Result<_>>()?;
        if self.workdir_here {
            if let Some(v) = volumes.iter().find(|v| v.target == WORKDIR) {
                return Err(Error::invalid(
                    "-v target",
                    v.target.clone(),
                    "--workdir-here mounts the current directory there; mount elsewhere or drop --workdir-here",
                ));
            }
            let here =
                std::fs::canonicalize(&cwd).map_err(|e| Error::io(format!("resolving the current directory {}", cwd.display()), e))?;
            volumes.push(VolumeSpec { source: VolumeSource::Host(here), target: WORKDIR.to_string(), mode: None });
        }
        if self.ssh_agent {
            volumes.push(VolumeSpec { source: VolumeSource::Host(agent_socket()?), target: SSH_AGENT_SOCK.to_string(), mode: None });
        }
        let user = self.user.as_ref().map(UserSpec::resolve).transpose()?;
        for (i, v) in volumes.iter().enumerate() {
            if volumes[..i].iter().any(|w| w.target.trim_end_matches('/') == v.target.trim_end_matches('/')) {
                return Err(Error::invalid(
                    "-v target",
                    v.target.clone(),
                    "it is mounted twice; keep one -v per client path (a bind already gives --cp a place to copy into)",
                ));
            }
        }
        let copies: Vec<CpSpec> = self.copies.iter().map(|c| CpSpec::parse(c, &cwd)).collect::<Result<_>>()?;
        if copies.iter().filter(|c| c.source == CpSource::Stdin).count() > 1 {
            return Err(Error::invalid("--cp spec", "-", "stdin can feed one --cp only; put the files in one tar stream"));
        }
        let address_range = match self.address_range.as_deref() {
            Some("none") => None,
            Some(r) => Some(AddressRange::parse(r)?),
            None => Some(AddressRange::default_range()),
        }
        .filter(|_| !crate::net::chooses_addresses(&dockerd_opts));
        if let Some(n) = &self.network {
            crate::spec::network_name(n)?;
        }
        let publish: Vec<PublishSpec> = self.publish.iter().map(|p| PublishSpec::parse(p)).collect::<Result<_>>()?;
        crate::publish::check_all(&publish)?;
        if self.engine_mode == EngineMode::Host && !self.loads.is_empty() {
            return Err(Error::invalid(
                "--load",
                self.loads.join(" "),
                "--engine host has no inner engine to seed: the client already sees the engine's images",
            ));
        }
        if self.engine_mode == EngineMode::Host && self.store {
            return Err(Error::invalid(
                "--store",
                "--engine host",
                "--engine host has no inner engine to seed from a store: drop --store (or unset DIDX_STORE)",
            ));
        }
        if self.store {
            crate::store::prefix()?;
        }
        // The cache directory holds the client keys and the engine proxy's sockets: one that is
        // not this user's alone is refused here, before anything is created.
        if let Err(e @ Error::Invalid { .. }) = crate::cache::checked() {
            return Err(e);
        }
        if self.engine_mode == EngineMode::Host && !publish.is_empty() {
            return Err(Error::invalid(
                "--publish",
                self.publish.join(" "),
                "--engine host has no inner engine to publish from: the client's own `docker run -p` publishes on the host",
            ));
        }
        let limits = crate::spec::Limits {
            memory: self.memory.as_deref().map(crate::spec::Limits::parse_memory).transpose()?,
            nano_cpus: self.cpus.as_deref().map(crate::spec::Limits::parse_cpus).transpose()?,
            pids: self.pids_limit.as_deref().map(crate::spec::Limits::parse_pids).transpose()?,
        };
        Ok(SandboxOptions {
            limits,
            registry_auth: self.registry_auth.clone(),
            engine_mode: self.engine_mode,
            store: self.store,
            policy: if keep_from_env() { KEEP_POLICY } else { "drop" },
            address_range,
            network: self.network.clone(),
            server_image: wanted(&self.server_image, sv.server_image(), &sv),
            client_image: wanted(&self.client_image, cv.client_image(), &cv),
            sv,
            cv,
            pull: self.pull,
            storage_driver: self.storage_driver.clone(),
            dockerd_opts,
            isolation: self.isolation,
            ready_timeout: self.ready_timeout.unwrap_or(DEFAULT_READY_TIMEOUT),
            volumes,
            copies,
            loads: self.loads.clone(),
            publish,
            launch: Launch { workdir: self.workdir_here, user, ssh_agent: self.ssh_agent, docker_check: self.client_image.is_some() },
        })
    }

    /// Start a fresh sandbox on `engine`: server and client, then the copies and loads. A start
    /// that fails removes everything it created.
    pub async fn start(self, engine: &Engine) -> Result<Sandbox> {
        self.start_with(engine, StartFrom::Fresh, &Cancel::new(), &|_| {}).await
    }

    /// Like [`start`](Self::start), but claim a ready environment of the warm pool when one
    /// matches these server options (see [`pool::up`](crate::pool::up)), else start a fresh
    /// one. The pool is not refilled by this; [`Sandbox::take_refill`] says what would.
    pub async fn start_pooled(self, engine: &Engine) -> Result<Sandbox> {
        self.start_with(engine, StartFrom::PoolOrFresh, &Cancel::new(), &|_| {}).await
    }

    /// [`start`](Self::start) or [`start_pooled`](Self::start_pooled), as `from` says,
    /// reporting progress to `on` and answering `cancel` (what was created is removed and
    /// [`Error::Cancelled`] returned).
    pub async fn start_with(
        self,
        engine: &Engine,
        from: StartFrom,
        cancel: &Cancel,
        on: &(dyn Fn(&Event<'_>) + Send + Sync),
    ) -> Result<Sandbox> {
        let opts = self.options()?;
        let seeds = opts.check(engine).await?;
        // Held by this process unless DIDX_KEEP asked (when the options were read, once) to keep
        // what is dropped: then a killed test leaves its sandbox to look at, too.
        let keep = opts.policy == KEEP_POLICY;
        let launched = opts.launch(engine, from == StartFrom::PoolOrFresh, !keep, &seeds, cancel, on).await?;
        let mut env = launched.env;
        let filled = tokio::select! {
            r = opts.fill(engine, &mut env, &seeds, on) => r,
            () = cancel.cancelled() => Err(Error::Cancelled),
        };
        if let Err(e) = filled {
            if let Err(rm) = env.rm().await {
                tracing::warn!(error = %rm, "removing a sandbox whose copy or load failed failed");
            }
            return Err(e);
        }
        Ok(Sandbox { env: Some(env), kept: keep, refill: launched.refill, access: tokio::sync::OnceCell::new(), refilling: None })
    }
}

/// The host's ssh agent socket, from `SSH_AUTH_SOCK`: it must be an absolute path (the engine
/// takes a relative bind source for a volume name, so a relative one would mount an empty
/// volume, not the agent) naming a socket.
fn agent_socket() -> Result<PathBuf> {
    use std::os::unix::fs::FileTypeExt;
    let sock = std::env::var_os("SSH_AUTH_SOCK").filter(|s| !s.is_empty()).ok_or_else(|| {
        Error::invalid("--ssh-agent", "", "SSH_AUTH_SOCK is not set: start an agent (eval \"$(ssh-agent)\"; ssh-add) or drop --ssh-agent")
    })?;
    let path = PathBuf::from(sock);
    if !path.is_absolute() {
        return Err(Error::invalid(
            "--ssh-agent",
            path.display().to_string(),
            "SSH_AUTH_SOCK is a relative path, which the engine would take for a volume name: set it to the socket's absolute path (e.g. SSH_AUTH_SOCK=\"$PWD/$SSH_AUTH_SOCK\")",
        ));
    }
    match std::fs::metadata(&path) {
        Ok(m) if m.file_type().is_socket() => Ok(path),
        _ => Err(Error::invalid(
            "--ssh-agent",
            path.display().to_string(),
            "SSH_AUTH_SOCK does not name a socket: is its agent still running?",
        )),
    }
}

fn keep_from_env() -> bool {
    std::env::var(KEEP_VAR).is_ok_and(|v| !v.is_empty() && v != "0")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every host path handed to the engine as a bind source is absolute, however it was
    /// spelled; a relative agent socket is refused (it would be a volume name to the engine).
    #[test]
    fn bind_sources_are_absolute_and_a_relative_agent_socket_is_refused() {
        crate::cache::tests::with_cache(|_| {
            let o = Sandbox::builder().cwd(".").volume("./:/t").volume(".:/u").options().unwrap();
            for v in &o.volumes {
                match &v.source {
                    VolumeSource::Host(p) => assert!(p.is_absolute(), "{p:?}"),
                    other => panic!("{other:?}"),
                }
            }
            let here = std::env::current_dir().unwrap();
            let sock = format!("didx-unit-agent-{}.sock", std::process::id());
            let _l = std::os::unix::net::UnixListener::bind(here.join(&sock)).unwrap();
            crate::cache::tests::set_env("SSH_AUTH_SOCK", Some(sock.as_ref()));
            let refused = Sandbox::builder().ssh_agent(true).options();
            crate::cache::tests::set_env("SSH_AUTH_SOCK", Some(here.join(&sock).as_os_str()));
            let accepted = Sandbox::builder().ssh_agent(true).options();
            crate::cache::tests::set_env("SSH_AUTH_SOCK", None);
            std::fs::remove_file(here.join(&sock)).unwrap();
            let e = refused.unwrap_err();
            assert!(e.is_usage() && e.to_string().contains("SSH_AUTH_SOCK is a relative path"), "{e}");
            let bound = accepted.unwrap().volumes.into_iter().find(|v| v.target == SSH_AGENT_SOCK).unwrap();
            assert_eq!(bound.source, VolumeSource::Host(here.join(&sock)));
        });
    }
}
