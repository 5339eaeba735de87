//! The [`Engine`] handle: connecting to an engine (an address, `DOCKER_HOST` or the docker
//! context), the address as a docker CLI wants it, and the engine's `/info`.

use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as BollardError;
use bollard::models::SystemInfo;

use super::call::quick;
use crate::error::{Error, Result};

pub use crate::context::DEFAULT_HOST;

/// bollard's client-wide timeout, which would cut an upload at that length whatever its
/// progress: none (tokio treats an unrepresentable deadline as none); each call is bounded here.
const BOLLARD_TIMEOUT: Duration = Duration::from_secs(u64::MAX);

/// How long the first contact may take before the engine counts as unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connection to one Docker engine.
#[derive(Clone)]
pub struct Engine {
    pub(super) docker: Docker,
    host: String,
    /// An engine over SSH: the master connection its connections and forwards go over.
    ssh: Option<std::sync::Arc<super::ssh::Master>>,
    /// Podman's Docker-compatible service (its `/version` names a "Podman Engine" component).
    podman: bool,
    /// For a unix socket: whether the process serving it is in another network namespace than
    /// this process (`Some(true)`), so the addresses of its containers are that namespace's,
    /// not this one's; `None` when that cannot be told (see [`peer_netns_differs`]). Asked
    /// once, when first needed (a readiness probe, a pool's fill), and shared by clones.
    other_netns: std::sync::Arc<tokio::sync::OnceCell<Option<bool>>>,
    /// Whether the engine runs rootless (its `/info` names the `rootless` security option).
    /// Asked once, when first needed (a start), and shared by clones.
    rootless: std::sync::Arc<tokio::sync::OnceCell<bool>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("host", &self.host).finish()
    }
}

impl Engine {
    /// Connect to `host` (`unix://`, `tcp://`, `https://`, `ssh://[user@]host[:port]`), else
    /// `DOCKER_HOST`, else the local socket. `tcp://` uses TLS when `DOCKER_TLS_VERIFY` is set,
    /// with the certificates in `DOCKER_CERT_PATH` (default `~/.docker`). `ssh://` runs the
    /// system `ssh` (or `DIDX_SSH`) with the user's own ssh configuration, keys and known
    /// hosts, and `docker system dial-stdio` on the remote machine, as the docker CLI does.
    /// Fails with [`Error::Unreachable`] when the engine does not answer.
    pub async fn connect(host: Option<&str>) -> Result<Engine> {
        let host = match host {
            Some(h) => h.to_string(),
            None => std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| DEFAULT_HOST.to_string()),
        };
        if host.starts_with("ssh://") {
            return Engine::connect_ssh(host).await;
        }
        let known = ["unix://", "tcp://", "http://", "https://"];
        if !known.iter().any(|p| host.starts_with(p)) {
            return Err(Error::invalid(
                "engine address",
                host,
                "expected unix:///path/docker.sock, tcp://HOST:PORT or ssh://[USER@]HOST[:PORT] (set by -H or DOCKER_HOST)",
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

    /// An engine over SSH: one master connection for this handle (and its clones), each
    /// engine connection a session over it.
    async fn connect_ssh(host: String) -> Result<Engine> {
        let addr = super::ssh::SshAddr::parse(&host).map_err(|why| Error::invalid("engine address", host.clone(), why))?;
        let unreachable = |e: std::io::Error| Error::Unreachable { host: host.clone(), source: BollardError::IOError { err: e } };
        let master = super::ssh::Master::open(&addr, CONNECT_TIMEOUT).await.map_err(unreachable)?;
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build::<_, super::ssh::Body>(super::ssh::Connector(std::sync::Arc::clone(&master)));
        let transport = move |req: bollard::BollardRequest| {
            let client = client.clone();
            async move { client.request(req).await.map_err(BollardError::from) }
        };
        let docker = Docker::connect_with_custom_transport(transport, Some("http://docker"), u64::MAX, bollard::API_DEFAULT_VERSION)
            .map_err(|source| Error::Unreachable { host: host.clone(), source })?;
        match Engine::negotiated(docker, host.clone()).await {
            Ok(engine) => Ok(Engine { ssh: Some(master), ..engine }),
            // The session's own words say more than a closed connection (no docker there, a
            // docker that cannot reach its engine).
            Err(Error::Unreachable { source, .. }) if !master.said().is_empty() => Err(unreachable(std::io::Error::other(format!(
                "{source}; the remote `docker system dial-stdio` said: {}",
                master.said()
            )))),
            Err(e) => Err(e),
        }
    }

    /// The API version agreed, then which engine answers: `/version` twice (bollard's
    /// negotiation keeps the answer to itself).
    async fn negotiated(docker: Docker, host: String) -> Result<Engine> {
        let docker = docker.with_timeout(BOLLARD_TIMEOUT);
        let agreed = async {
            let docker = docker.negotiate_version().await?;
            let version = docker.version().await?;
            Ok::<_, BollardError>((docker, is_podman(&version)))
        };
        match tokio::time::timeout(CONNECT_TIMEOUT, agreed).await {
            Ok(Ok((docker, podman))) => Ok(Engine { docker, host, ssh: None, podman, other_netns: Default::default(), rootless: Default::default() }),
            Ok(Err(source)) => Err(Error::Unreachable { host, source }),
            Err(_) => Err(Error::Unreachable { host, source: BollardError::RequestTimeoutError }),
        }
    }

    /// The wrapper around a client made elsewhere (a sandbox's inner engine, from
    /// `Sandbox::docker`), so that what `didx::wait` asks of it goes through these same bounded,
    /// named calls. `host` names it in errors. Neither negotiated nor asked what it is again: its
    /// maker did the one, and an inner engine is Docker.
    pub(crate) fn over_client(docker: Docker, host: &str) -> Engine {
        Engine { docker, host: host.to_string(), ssh: None, podman: false, other_netns: Default::default(), rootless: Default::default() }
    }

    /// The address connected to.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// Whether the engine is reached over SSH (`ssh://`): ports it publishes on its machine's
    /// loopback are reached from here through [`Engine::forward`].
    pub(crate) fn is_ssh(&self) -> bool {
        self.ssh.is_some()
    }

    /// An engine over SSH: its master connection.
    pub(super) fn ssh_master(&self) -> Option<&std::sync::Arc<super::ssh::Master>> {
        self.ssh.as_ref()
    }

    raw! {
        /// Whether the engine is Podman's Docker-compatible service.
        fn is_podman(&self) -> bool {
            self.podman
        }
    }

    /// Whether a held container may not learn that its holder is gone from its connection
    /// closing, so that leases here say `beat` and the container ends itself when they stop
    /// (see [`Engine::attach_lease`]): over SSH a link that drops silently closes nothing at
    /// the other end; Podman keeps a container's stdin open when the attach feeding it ends
    /// (it has no `StdinOnce`).
    pub(crate) fn beats(&self) -> bool {
        self.is_ssh() || self.is_podman()
    }

    /// For an engine over SSH: a listener on this machine's loopback carrying each connection
    /// over the SSH connection to `port` on the engine machine's loopback (where didx
    /// publishes the inner engine's port, and `--publish` by default), held until dropped.
    /// `None` for an engine reached otherwise.
    pub(crate) async fn forward(&self, port: u16) -> Result<Option<super::ssh::Forward>> {
        let Some(master) = &self.ssh else { return Ok(None) };
        let fwd = super::ssh::Forward::open(std::sync::Arc::clone(master), port)
            .await
            .map_err(|e| Error::io(format!("forwarding a local port to port {port} on {}", self.host), e))?;
        Ok(Some(fwd))
    }

    /// The environment a docker CLI needs to talk to this same engine: `DOCKER_HOST` (an
    /// `http://`/`https://` address in the CLI's `tcp://` form) and, for `https://`,
    /// `DOCKER_TLS_VERIFY=1`. `DOCKER_TLS_VERIFY`/`DOCKER_CERT_PATH`, when they applied to a
    /// `tcp://` address, came from this process's environment and are inherited as they are.
    pub fn cli_env(&self) -> Vec<(String, String)> {
        cli_env_for(&self.host)
    }

    raw! {
        /// True when the engine runs on this machine (a unix socket), so container addresses on its
        /// default bridge are normally routable from here.
        fn is_local(&self) -> bool {
            self.host.starts_with("unix://")
        }
    }

    raw! {
        /// Whether the addresses of the engine's containers are this process's to reach: a local
        /// engine whose socket is not served from another network namespace (a dockerd started in
        /// one, rootless Docker's): there the same addresses are another network's, and may even
        /// be the containers of an engine in this namespace.
        async fn reaches_containers(&self) -> bool {
            let Some(path) = self.host.strip_prefix("unix://") else { return false };
            let other = self.other_netns.get_or_init(|| peer_netns_differs(std::path::Path::new(path))).await;
            *other != Some(true)
        }
    }

    raw! {
        /// Whether the engine runs rootless (rootless Docker, rootless Podman): its containers
        /// live in a user namespace of an unprivileged user, and so does an inner engine.
        async fn is_rootless(&self) -> Result<bool> {
            self.rootless.get_or_try_init(|| async { Ok(is_rootless(&self.info().await?)) }).await.copied()
        }
    }

    /// The engine's `/info`.
    pub async fn info(&self) -> Result<SystemInfo> {
        quick("info", "engine", self.docker.info()).await
    }
}

/// Whether the process serving the unix socket at `path` is in another network namespace than
/// this process: its peer credentials name it, `/proc` says its namespace. `None` when either
/// cannot be read (no `/proc`, another user's process, a socket forwarded from elsewhere).
async fn peer_netns_differs(path: &std::path::Path) -> Option<bool> {
    let stream = tokio::net::UnixStream::connect(path).await.ok()?;
    let pid = stream.peer_cred().ok()?.pid()?;
    if pid <= 0 {
        return None;
    }
    let theirs = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()?;
    let ours = std::fs::read_link("/proc/self/ns/net").ok()?;
    Some(theirs != ours)
}

/// Whether `/version`'s answer is Podman's (a component named "Podman Engine"; Docker's is
/// "Engine").
fn is_podman(v: &bollard::models::SystemVersion) -> bool {
    v.components.as_ref().is_some_and(|cs| cs.iter().any(|c| c.name == "Podman Engine"))
}

/// Whether `/info` is a rootless engine's: a security option `name=rootless`.
fn is_rootless(info: &SystemInfo) -> bool {
    info.security_options.iter().flatten().any(|o| o.split(',').any(|kv| kv == "name=rootless"))
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

/// Whether the engine at `host` runs on this machine: a unix socket, or tcp on a loopback
/// address (where the server's 127.0.0.1 is this machine's).
pub fn is_on_this_machine(host: &str) -> bool {
    if host.starts_with("unix://") || host.starts_with("npipe://") {
        return true;
    }
    let Some(rest) = host.strip_prefix("tcp://").or_else(|| host.strip_prefix("http://")).or_else(|| host.strip_prefix("https://"))
    else {
        return false;
    };
    let authority = rest.split('/').next().unwrap_or_default();
    let name = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    name == "localhost" || name.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_gets_the_engine_address_in_its_own_form() {
        let env = |h: &str| cli_env_for(h).into_iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>();
        assert_eq!(env("unix:///var/run/docker.sock"), ["DOCKER_HOST=unix:///var/run/docker.sock"]);
        assert_eq!(env("tcp://h:2376"), ["DOCKER_HOST=tcp://h:2376"]);
        assert_eq!(env("http://h:2375"), ["DOCKER_HOST=tcp://h:2375"]);
        assert_eq!(env("https://h:2376"), ["DOCKER_HOST=tcp://h:2376", "DOCKER_TLS_VERIFY=1"]);
    }

    #[test]
    fn a_rootless_engine_is_told_by_its_security_options() {
        let info = |opts: &[&str]| SystemInfo { security_options: Some(opts.iter().map(|o| o.to_string()).collect()), ..Default::default() };
        // As rootless Docker 26 said it in the VM lane.
        assert!(is_rootless(&info(&["name=seccomp,profile=builtin", "name=rootless", "name=cgroupns"])));
        assert!(!is_rootless(&info(&["name=apparmor", "name=seccomp,profile=builtin", "name=cgroupns"])));
        assert!(!is_rootless(&info(&["name=seccomp,profile=rootless"])));
        assert!(!is_rootless(&SystemInfo::default()));
    }

    #[test]
    fn engines_on_this_machine() {
        for local in ["unix:///var/run/docker.sock", "tcp://127.0.0.1:2375", "tcp://localhost:2376", "tcp://[::1]:2376", "tcp://127.0.0.2:1"] {
            assert!(is_on_this_machine(local), "{local}");
        }
        for remote in ["tcp://10.0.0.5:2376", "tcp://docker.example:2376", "ssh://me@host", "tcp://[2001:db8::1]:2376"] {
            assert!(!is_on_this_machine(remote), "{remote}");
        }
    }
}
