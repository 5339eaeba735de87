//! One environment: a server container running dockerd on storage of its own, a client
//! container with the docker CLI wired to it over mutual TLS, and their removal.
//!
//! The client shares the server's network namespace (as containers of a Kubernetes pod do), so
//! it reaches the inner engine as `docker:2376` (`docker` → 127.0.0.1 in the server's hosts
//! file) without a network of its own. The server publishes that port on the host's
//! 127.0.0.1 only ([`Environment::endpoint`]), for host processes holding the client
//! certificate ([`Environment::client_certificates`]). What the containers are made of is the
//! pure recipe in `recipe.rs`; this module and [`pool`] only sequence engine calls over it.

mod certdir;
mod endpoint;
mod list;
pub mod pool;
mod reach;
mod reaper;
mod recipe;

#[cfg_attr(not(feature = "internals"), allow(unused_imports))]
pub use endpoint::{ClientCerts, Endpoint};
pub use list::{EnvSummary, Member, list, remove, remove_all, sweep, sweep_logged};
pub use reach::{HostAccess, host_access, is_on_this_machine};
use recipe::ClientFiles;
#[cfg_attr(not(feature = "internals"), allow(unused_imports))]
pub use recipe::{CLIENT_CERT_PATH, ENTRYPOINT, ENTRYPOINT_PATH, PUBLISHED_IP, STORE_PATH, TLS_PORT};
pub(crate) use recipe::{Filler, held};

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::archive::tar_of;
use crate::engine::{Engine, ExecAs, Lease, message_of};
use crate::error::{Error, Result};
use crate::isolation::{self, Isolation};
use crate::labels;
use crate::net::{self, AddressRange};
use crate::ready::{ProbeError, Prober};
use crate::spec::{IsolationMode, PublishSpec, Version, VolumeSpec};
use crate::tls::TlsMaterial;

/// Between readiness probes. A refused connection costs microseconds, and dockerd answers a
/// few milliseconds after it listens: probing often costs nothing and saves up to an interval.
const PROBE_INTERVAL: Duration = Duration::from_millis(10);
const LIVENESS_INTERVAL: Duration = Duration::from_millis(500);

/// An environment id: 10 random base-36 characters, unique across processes and hosts that
/// share an engine (unlike didx.sh's PID).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EnvId(String);

impl EnvId {
    /// A fresh random id.
    pub fn generate() -> EnvId {
        const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
        let mut bytes = [0u8; 10];
        if let Err(e) = std::fs::File::open("/dev/urandom").and_then(|mut f| {
            use std::io::Read;
            f.read_exact(&mut bytes)
        }) {
            // Not expected on Linux; fall back to time and pid, still unique enough per host.
            tracing::warn!(error = %e, "no /dev/urandom; id from time and pid");
            let seed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
                ^ ((std::process::id() as u128) << 64);
            for (i, b) in bytes.iter_mut().enumerate() {
                *b = (seed >> (i * 8)) as u8;
            }
        }
        EnvId(bytes.iter().map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for EnvId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A container didx created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Container {
    /// Its name.
    pub name: String,
    /// Its engine id.
    pub id: String,
}

pub use crate::cancel::Cancel;

/// Everything needed to start an environment, validated.
#[derive(Debug, Clone)]
pub struct EnvSpec {
    /// The environment's id (chosen up front so a caller can always clean up by it).
    pub id: EnvId,
    /// `--sv`, naming the server container.
    pub sv: Version,
    /// `--cv`, naming the client container.
    pub cv: Version,
    /// Server image (resolved).
    pub server_image: String,
    /// Client image (resolved).
    pub client_image: String,
    /// dockerd's `--storage-driver`.
    pub storage_driver: String,
    /// Further dockerd arguments (`--dkropts`, already split into words).
    pub dockerd_opts: Vec<String>,
    /// How to get dockerd its privileges.
    pub isolation: IsolationMode,
    /// The engine's ID, under which the `auto` isolation outcome is remembered.
    pub engine_id: String,
    /// How long to wait for the inner engine to answer.
    pub ready_timeout: Duration,
    /// `-v` mounts for the client.
    pub volumes: Vec<VolumeSpec>,
    /// `--publish` ports, bound on the server (part of the pool key).
    pub publish: Vec<PublishSpec>,
    /// Hold the environment for this process (see [`crate::engine::Engine::lease`]): when the
    /// process ends without releasing it — SIGKILL included — the environment ends itself and
    /// the engine removes it. For environments the run would remove anyway.
    pub lease: bool,
    /// Where the inner engine's addresses come from: a block of this range is claimed for the
    /// server (see [`crate::net`]); `None` leaves them to dockerd (`--dkropts` chose them, or
    /// `--address-range none`).
    pub address_range: Option<AddressRange>,
    /// The engine network the server joins (`--network`), instead of the default bridge.
    pub network: Option<String>,
    /// What removes it, as `didx ls` shows it (see [`labels::POLICY`]).
    pub policy: String,
    /// Who makes it, `USER@HOST pid PID` (see [`owner`]).
    pub owner: String,
    /// Which engine the client talks to: its own server's, or (`--engine host`) the engine
    /// itself through didx's proxy, with no server.
    pub engine_mode: crate::spec::EngineMode,
    /// The image store the server mounts read-only and seeds its engine from (`--store`, see
    /// [`crate::store`]); `None` without.
    pub store: Option<StoreMount>,
}

/// An image store as a server mounts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreMount {
    /// The store's volume.
    pub volume: String,
    /// The server's own engine, `dockerd --version`'s line (as [`crate::store::engine_line`]
    /// found it for the server image): the entrypoint seeds from a snapshot made by this engine
    /// only. Empty: the entrypoint asks `dockerd --version` itself (~45 ms).
    pub engine: String,
    /// The sealed snapshot the server seeds from (`snap-N`) and its seal's digest
    /// ([`crate::store::Seal`]): the entrypoint seeds only when everything matches it.
    pub seal: Option<crate::store::Seal>,
}

/// This process as an environment's owner: `USER@HOST pid PID` (`USER` from `$USER`, else
/// `uid N`).
pub fn owner() -> String {
    let user = std::env::var("USER").ok().filter(|u| !u.is_empty()).unwrap_or_else(|| format!("uid {}", rustix::process::getuid().as_raw()));
    format!("{user}@{} pid {}", pool::hostname(), std::process::id())
}

impl EnvSpec {
    /// The server container's name, `dind_<id>_server_<sv>`.
    pub fn server_name(&self) -> String {
        format!("dind_{}_server_{}", self.id, self.sv.as_str())
    }
    /// The client container's name, `dind_<id>_client_<cv>`.
    pub fn client_name(&self) -> String {
        format!("dind_{}_client_{}", self.id, self.cv.as_str())
    }
}

/// Progress of an environment's start, for the caller to report.
#[derive(Debug)]
#[non_exhaustive]
pub enum Event<'a> {
    /// `auto` isolation found `--privileged` refused and switched to the caps profile.
    IsolationFallback {
        /// The engine's refusal.
        reason: &'a str,
    },
    /// The caps profile goes without these capabilities (`CAP_` names), which the engine said
    /// it does not know (an engine older than the kernel).
    CapabilitiesUnknown {
        /// Their names, `CAP_` included.
        names: &'a [String],
    },
    /// The server container is running.
    ServerStarted {
        /// Its name.
        name: &'a str,
        /// Its image.
        image: &'a str,
        /// The isolation used.
        isolation: &'a str,
    },
    /// The client container is running.
    ClientStarted {
        /// Its name.
        name: &'a str,
        /// Its image.
        image: &'a str,
    },
    /// The inner engine answered over TLS.
    Ready {
        /// Time since start was called.
        elapsed: Duration,
    },
    /// `--engine host`: the client is about to get the engine didx uses, i.e. root on its
    /// host. Said once per environment, before anything is created.
    EngineHost {
        /// The engine's address.
        host: &'a str,
    },
    /// `pool up`/`pool down` waits for the pool lock another process holds.
    PoolLockWait {
        /// The lock file.
        path: &'a std::path::Path,
    },
}

/// A running environment. Remove it with [`Environment::rm`] or leave it running with
/// [`Environment::keep`]; dropping it does neither and only logs.
#[derive(Debug)]
pub struct Environment {
    engine: Engine,
    id: EnvId,
    /// `None` with `--engine host`, which has no server.
    server: Option<Container>,
    client: Container,
    /// Where the client's certificates are (a real directory, not the link a pooled client has).
    client_cert_dir: &'static str,
    settled: bool,
    /// The leases holding server and client for this process (empty when not leased).
    leases: Vec<Lease>,
    /// How COMMANDs run in the client (user, working directory, variables; see
    /// [`crate::launcher`]): the client's defaults until [`Environment::set_exec_as`].
    exec_as: ExecAs,
    /// The engine-API proxy the client talks to (`--engine host`); it ends when this does.
    #[expect(dead_code, reason = "held, not read: dropping it ends the proxy")]
    proxy: Option<crate::dood::Proxy>,
}

pub(crate) fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

impl Environment {
    /// Start server and client and wait until the inner engine answers over TLS. A start that
    /// fails or is cancelled removes everything it created.
    pub async fn start(engine: &Engine, spec: &EnvSpec, cancel: &Cancel, on: &(dyn Fn(Event<'_>) + Send + Sync)) -> Result<Environment> {
        use tracing::Instrument;
        let span = tracing::info_span!("start", env = %spec.id);
        let started = async {
            match spec.engine_mode {
                crate::spec::EngineMode::Dind => start_inner(engine, spec, cancel, on).await,
                crate::spec::EngineMode::Host => start_host(engine, spec, on).await,
            }
        };
        match started.instrument(span).await {
            Ok(env) => Ok(env),
            Err(e) => {
                if let Err(rm) = remove(engine, spec.id.as_str()).await {
                    tracing::warn!(env = %spec.id, error = %rm, "rollback of a failed start failed");
                }
                Err(e)
            }
        }
    }

    /// The environment's id.
    pub fn id(&self) -> &EnvId {
        &self.id
    }
    /// The server container (`None` with `--engine host`: the client talks to the engine
    /// itself).
    pub fn server(&self) -> Option<&Container> {
        self.server.as_ref()
    }
    /// The server, or [`Error::NoInnerEngine`] with `--engine host`.
    pub(crate) fn inner_server(&self) -> Result<&Container> {
        self.server.as_ref().ok_or_else(|| Error::NoInnerEngine { id: self.id.to_string(), host: self.engine.host().to_string() })
    }

    /// The client container.
    pub fn client(&self) -> &Container {
        &self.client
    }
    /// The engine it runs on.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Run `argv` in the client, streaming output; returns the exit code.
    pub async fn exec(
        &self,
        argv: &[String],
        out: &mut (dyn tokio::io::AsyncWrite + Unpin + Send),
        err: &mut (dyn tokio::io::AsyncWrite + Unpin + Send),
    ) -> Result<i64> {
        self.engine.exec_as(&self.client.id, argv, &self.exec_as, out, err).await
    }

    /// Run every later [`exec`](Self::exec) as `shape` says.
    pub fn set_exec_as(&mut self, shape: ExecAs) {
        self.exec_as = shape;
    }

    /// Remove server, client, their anonymous volumes and anything else labelled with this
    /// environment, at once (no graceful stop: the engine is throwaway).
    pub async fn rm(mut self) -> Result<()> {
        self.settled = true;
        // Both containers at once, by id (no list first); then whatever else carries the
        // environment's label (volumes shared between them, `--cp IMAGE::` readers, …).
        let server = async {
            match &self.server {
                Some(s) => self.engine.remove_container(&s.id).await,
                None => Ok(()),
            }
        };
        // Any other container held (a `--engine host` environment's reaper) at the same time.
        let others: Vec<String> = self
            .leases
            .iter()
            .map(|l| l.container().to_string())
            .filter(|c| *c != self.client.id && self.server.as_ref().is_none_or(|s| s.id != *c))
            .collect();
        let others = async { futures_util::future::join_all(others.iter().map(|c| self.engine.remove_container(c))).await.into_iter().collect::<Result<Vec<()>>>() };
        let (s, c, o) = tokio::join!(server, self.engine.remove_container(&self.client.id), others);
        s.and(c).and(o.map(|_| ()))?;
        remove(&self.engine, self.id.as_str()).await.map(|_| ())
    }

    /// When this environment's certificates expire (Unix seconds), from its server's
    /// `io.didx.expires` label; `None` for a server made before didx bounded them.
    pub async fn certificates_expire(&self) -> Result<Option<u64>> {
        let Some(server) = &self.server else { return Ok(None) };
        let labels = self.engine.inspect(&server.id).await?.config.and_then(|c| c.labels).unwrap_or_default();
        Ok(labels.get(labels::EXPIRES).and_then(|v| v.parse().ok()))
    }

    /// Take leases on server and client (none are held yet), so that the environment ends
    /// itself when this process ends without [`Environment::release`].
    pub async fn lease(&mut self) -> Result<()> {
        let argv = lease_argv();
        if let Some(server) = &self.server {
            self.leases.push(self.engine.lease(&server.id, &argv).await?);
        }
        self.leases.push(self.engine.lease(&self.client.id, &argv).await?);
        Ok(())
    }

    /// Release the leases: the environment stays when this process ends.
    pub async fn release(&mut self) -> Result<()> {
        let released = futures_util::future::join_all(self.leases.drain(..).map(Lease::release)).await;
        released.into_iter().collect()
    }

    /// Leave the environment running (`--clean none`): its leases released first.
    pub async fn keep(mut self) -> Result<()> {
        self.settled = true;
        self.release().await
    }

    /// Let go of the handle without removing or releasing: a leased environment ends itself
    /// (its leases close), an unleased one keeps running.
    pub fn forget(mut self) {
        self.settled = true;
    }
}

impl Drop for Environment {
    fn drop(&mut self) {
        if !self.settled {
            if self.leases.is_empty() {
                tracing::warn!(env = %self.id, client = %self.client.name, "environment dropped without rm() or keep(); it keeps running");
            } else {
                tracing::warn!(env = %self.id, client = %self.client.name, "environment dropped without rm() or keep(); its lease ends it");
            }
        }
    }
}

/// The lease's command: the entrypoint's `lease` mode.
pub(crate) fn lease_argv() -> Vec<String> {
    vec![ENTRYPOINT_PATH.to_string(), "lease".to_string()]
}

async fn start_inner(engine: &Engine, spec: &EnvSpec, cancel: &Cancel, on: &(dyn Fn(Event<'_>) + Send + Sync)) -> Result<Environment> {
    let t0 = Instant::now();
    let created = now_secs();
    let server_name = spec.server_name();
    let client_name = spec.client_name();
    let tls = TlsMaterial::generate(&[server_name.as_str()])?;
    cancel.check()?;

    // A leased environment is held from each container's start (see `recipe::held`): the
    // client is made once the server runs (it joins the server's network namespace, so it
    // could not start earlier), leaving no created-but-never-started container behind a
    // killed run for more than the few milliseconds between a create and its attach.
    let server = recipe::Server { spec, name: &server_name, tls: &tls, created, pool: None, net: None };
    let (server_id, server_lease) = start_server(engine, &server, spec.lease, cancel, on).await?;
    let mut env = Environment {
        engine: engine.clone(),
        id: spec.id.clone(),
        server: Some(Container { name: server_name.clone(), id: server_id.clone() }),
        client: Container { name: client_name, id: String::new() },
        client_cert_dir: recipe::CLIENT_CERT_PATH,
        settled: false,
        leases: server_lease.into_iter().collect(),
        exec_as: ExecAs::default(),
        proxy: None,
    };
    cancel.check().inspect_err(|_| env.settled = true)?;
    let server = Container { name: server_name, id: server_id };
    let client = recipe::Client { spec, server_name: &server.name, created, files: ClientFiles::Upload(&tls), pool_key: None, engine_socket: None };
    // dockerd boots while the client is made and starts; the probe goes straight to the server.
    let client_start = async {
        match start_client(engine, &env.client.name, &client, spec.lease).await {
            Ok(started) => {
                on(Event::ClientStarted { name: &env.client.name, image: &spec.client_image });
                Ok(started)
            }
            // The client joins the server's network namespace: if dockerd already died (e.g. a
            // bad --dkropts), the server's own log is the useful answer.
            Err(e) => Err(server_exit(engine, &server.id, &server.name).await?.unwrap_or(e)),
        }
    };
    let (started, ready) =
        tokio::join!(client_start, wait_ready(engine, &server, Some(&env.client.name), &tls, spec.ready_timeout, cancel));
    // From here on the handle owns the containers; on failure the caller's rollback removes
    // them by label, so let go of the handle quietly.
    match (started, ready) {
        (Ok((client_id, client_lease)), Ok(())) => {
            env.client.id = client_id;
            env.leases.extend(client_lease);
            on(Event::Ready { elapsed: t0.elapsed() });
            Ok(env)
        }
        (Err(e), _) | (_, Err(e)) => {
            env.forget();
            Err(e)
        }
    }
}

/// `--engine host`: no server; the client gets the engine-API proxy's socket (see
/// [`crate::dood`]). Said loudly first: the client has root on the engine's host.
async fn start_host(engine: &Engine, spec: &EnvSpec, on: &(dyn Fn(Event<'_>) + Send + Sync)) -> Result<Environment> {
    let t0 = Instant::now();
    on(Event::EngineHost { host: engine.host() });
    // The socket is this process's path: the engine's machine may name it otherwise.
    let own = crate::dood::own_mounts(engine).await?;
    let dir = crate::cache::ensure_dir()?.join("dood").join(spec.id.as_str());
    let client_name = spec.client_name();
    let proxy = crate::dood::Proxy::start(engine, spec.id.as_str(), &client_name, dir).await?;
    let socket = crate::dood::translate_own(own.as_ref(), "the engine proxy's socket", &proxy.socket())?;
    let socket = socket.to_string_lossy();
    let created = now_secs();
    // Held: a reaper beside the client (see `reaper`), both in place before any command can
    // have the client start something; made at once, so the start takes no longer.
    let reaper_socket = match (spec.lease, reaper::socket_of(engine.host())) {
        (false, _) => None,
        (true, Some(s)) => Some(crate::dood::translate_own(own.as_ref(), "the engine's socket", std::path::Path::new(s))?),
        (true, None) => {
            tracing::warn!(env = %spec.id, host = engine.host(), "no reaper: the engine is not reached by a unix socket; what the client starts stays if didx is killed");
            None
        }
    };
    let reaper_start = async {
        match &reaper_socket {
            Some(s) => Ok(Some(reaper::start(engine, spec, &s.to_string_lossy(), created).await?.1)),
            None => Ok(None),
        }
    };
    let client = recipe::Client {
        spec,
        server_name: "",
        created,
        files: ClientFiles::EntrypointOnly,
        pool_key: None,
        engine_socket: Some(&socket),
    };
    let (reaper, (client_id, lease)) = tokio::try_join!(reaper_start, start_client(engine, &client_name, &client, spec.lease))?;
    on(Event::ClientStarted { name: &client_name, image: &spec.client_image });
    tracing::debug!(elapsed = ?t0.elapsed(), "client of the host engine started");
    Ok(Environment {
        engine: engine.clone(),
        id: spec.id.clone(),
        server: None,
        client: Container { name: client_name, id: client_id },
        client_cert_dir: recipe::CLIENT_CERT_PATH,
        settled: false,
        leases: reaper.into_iter().chain(lease).collect(),
        exec_as: ExecAs::default(),
        proxy: Some(proxy),
    })
}

/// Create, fill and start the server, switching `auto` isolation to the caps profile when the
/// engine refuses `--privileged`. With `lease` (or for the pool, whose filler holds what it
/// starts) the server is held from its start: the lease comes back with its id.
async fn start_server(
    engine: &Engine,
    server: &recipe::Server<'_>,
    lease: bool,
    cancel: &Cancel,
    on: &(dyn Fn(Event<'_>) + Send + Sync),
) -> Result<(String, Option<Lease>)> {
    let (spec, name) = (server.spec, server.name);
    let caps = || Isolation::caps_profile_on(engine, &spec.engine_id, &spec.server_image, spec.id.as_str());
    let mut iso = first_isolation(engine, spec.isolation, &spec.engine_id, &spec.server_image, spec.id.as_str()).await?;
    let files = tar_of(&server.files())?;
    loop {
        let (id, unknown) = create_server(engine, server, lease, &mut iso).await?;
        if !unknown.is_empty() {
            on(Event::CapabilitiesUnknown { names: &unknown });
        }
        cancel.check()?;
        // Held: started at once (its bootstrap waits for "go"), then attached, then filled. A
        // created container is never removed by the engine; a started one ends itself.
        if !lease {
            engine.upload(&id, "/", files.clone()).await?;
        }
        match engine.start(&id).await {
            Ok(()) => {
                let held = if lease {
                    let mut l = engine.attach_lease(&id).await?;
                    engine.upload(&id, "/", files.clone()).await?;
                    l.go().await?;
                    Some(l)
                } else {
                    None
                };
                on(Event::ServerStarted { name, image: &spec.server_image, isolation: iso.name() });
                return Ok((id, held));
            }
            Err(e) => {
                let msg = message_of(&e).unwrap_or_default().to_string();
                if iso == Isolation::Privileged && isolation::is_caps_refusal(&msg) {
                    if spec.isolation == IsolationMode::Privileged {
                        return Err(Error::PrivilegedRefused { server: name.to_string(), reason: msg });
                    }
                    engine.remove_container(&id).await?;
                    isolation::remember_refusal(&spec.engine_id);
                    on(Event::IsolationFallback { reason: &msg });
                    iso = caps().await?;
                    continue;
                }
                if let Some(reason) = crate::publish::bind_refusal(&msg) {
                    let holder = match crate::publish::refused_port(&msg) {
                        Some(port) => crate::publish::port_holder(engine, port).await.map(|h| format!(" (held by {h})")),
                        None => None,
                    };
                    return Err(Error::PortTaken { server: name.to_string(), reason: format!("{reason}{}", holder.unwrap_or_default()) });
                }
                return Err(e);
            }
        }
    }
}

/// The isolation a server (or a store's filler) is first created with: `auto` tries
/// `--privileged` unless the engine was seen refusing it.
/// (The caps profile is the engine host's: see [`Isolation::caps_profile_on`], which may run a
/// short probe of `image` labelled with `env`.)
pub(crate) async fn first_isolation(engine: &Engine, mode: IsolationMode, engine_id: &str, image: &str, env: &str) -> Result<Isolation> {
    Ok(match mode {
        IsolationMode::Privileged => Isolation::Privileged,
        IsolationMode::Caps => Isolation::caps_profile_on(engine, engine_id, image, env).await?,
        IsolationMode::Auto if isolation::remembered_refusal(engine_id) => Isolation::caps_profile_on(engine, engine_id, image, env).await?,
        IsolationMode::Auto => Isolation::Privileged,
    })
}

/// Create the server, claiming a block of the spec's address range for its inner engine: its
/// id, and the capabilities (`CAP_` names) dropped from the caps profile because the engine
/// does not know them.
///
/// The claim is the server's [`labels::NET`] label, so the engine's own state says which
/// blocks are held (no state file; a removed server frees its block). Processes sharing
/// didx's cache directory choose and create under a lock file (the kernel releases it whatever
/// ends the process), so they never choose alike; for any others (another user, another
/// machine on the same engine) the claim is checked once the server exists: of two servers
/// holding one block, the later-created removes itself and claims another.
async fn create_server(engine: &Engine, server: &recipe::Server<'_>, lease: bool, iso: &mut Isolation) -> Result<(String, Vec<String>)> {
    let Some(range) = server.spec.address_range else {
        return create_server_as(engine, server, lease, iso).await;
    };
    let mut lost: Vec<net::Cidr> = Vec::new();
    for _ in 0..CLAIM_TRIES {
        let lock = net_lock().await?;
        let block = choose_block(engine, range, &lost, server.spec.id.as_str()).await?;
        let claimed = recipe::Server { net: Some(block), ..*server };
        let (id, unknown) = create_server_as(engine, &claimed, lease, iso).await?;
        drop(lock);
        if holds_block(engine, &id, block).await? {
            return Ok((id, unknown));
        }
        tracing::debug!(%block, server = server.name, "another server claimed the same block first; choosing again");
        engine.remove_container(&id).await?;
        lost.push(block.cidr());
    }
    Err(Error::io(format!("claiming a block of {range} for {}", server.name), std::io::Error::other("every try lost a race")))
}

/// How often a server claims a block before giving up (a loss needs a race with a process of
/// another cache directory choosing the same of the free blocks).
const CLAIM_TRIES: usize = 8;

/// The claim lock in didx's cache directory.
const NET_LOCK: &str = "net.lock";

/// Take the claim lock (polling: a claim holds it for a list and a create).
async fn net_lock() -> Result<std::fs::File> {
    crate::cache::lock(NET_LOCK, Duration::from_millis(10), &Cancel::new(), |_| {}).await
}

/// A free block of `range`: none held by a didx server on the engine (by its label), none
/// overlapping the engine's networks or `lost`. Chosen among the free ones by the environment's
/// (random) id, so that claimants not sharing the lock rarely collide.
async fn choose_block(engine: &Engine, range: net::AddressRange, lost: &[net::Cidr], env: &str) -> Result<net::Block> {
    let filter = std::collections::HashMap::from([("label".to_string(), vec![labels::NET.to_string()])]);
    let (servers, subnets) = tokio::join!(engine.containers(filter), engine.network_subnets());
    let held: Vec<net::Cidr> = servers?
        .iter()
        .filter_map(|c| c.labels.as_ref()?.get(labels::NET))
        .filter_map(|b| net::Cidr::parse(b))
        .collect();
    let networks: Vec<net::Cidr> = subnets?.iter().filter_map(|s| net::Cidr::parse(s)).collect();
    let taken: Vec<net::Cidr> = held.iter().chain(&networks).chain(lost).copied().collect();
    let free = net::free_blocks(range, &taken);
    if free.is_empty() {
        let blocks: Vec<net::Block> = range.blocks().collect();
        let count = |of: &[net::Cidr]| blocks.iter().filter(|b| of.iter().any(|c| c.overlaps(b.cidr()))).count();
        return Err(Error::AddressRangeExhausted { range: range.to_string(), held: count(&held), overlapped: count(&networks) });
    }
    Ok(free[net::pick(env, lost.len(), free.len())])
}

/// Whether server `id` stands as the holder of `block`: of the servers labelled with it, the
/// earliest created (ties: the smallest id). Every claimant computes the same answer.
async fn holds_block(engine: &Engine, id: &str, block: net::Block) -> Result<bool> {
    let filter = std::collections::HashMap::from([("label".to_string(), vec![format!("{}={block}", labels::NET)])]);
    let claims = engine.containers(filter).await?;
    if claims.iter().all(|c| c.id.as_deref() == Some(id)) {
        return Ok(true);
    }
    let mut created = Vec::new();
    for c in claims.iter().filter_map(|c| c.id.as_deref()) {
        // Gone meanwhile (a loser that removed itself, an environment that ended): no claim.
        if let Some(i) = engine.inspect_if_exists(c).await? {
            // As JSON, the RFC 3339 string the engine sent, whichever type bollard's features
            // give the field.
            let at = serde_json::to_value(i.created).ok().and_then(|v| v.as_str().map(net::sortable_time)).unwrap_or_default();
            created.push((c.to_string(), at));
        }
    }
    Ok(net::winner(&created) == Some(id))
}

/// Create the server as `server` says (its block, if any, chosen).
async fn create_server_as(engine: &Engine, server: &recipe::Server<'_>, lease: bool, iso: &mut Isolation) -> Result<(String, Vec<String>)> {
    let mut unknown = Vec::new();
    loop {
        let body = if lease { recipe::held(server.body(iso)) } else { server.body(iso) };
        match engine.create_container(server.name, body).await {
            Ok(id) => return Ok((id, unknown)),
            // Engines reject capabilities newer than themselves: drop each one named and retry.
            Err(e) => match message_of(&e).and_then(|m| iso.drop_unknown(m)) {
                Some(name) => unknown.push(format!("CAP_{name}")),
                None => return Err(e),
            },
        }
    }
}

/// Create and start a client (its server running): held from its start with `lease`, its
/// files uploaded before (plain) or right after (held) its start. Its id and lease.
async fn start_client(engine: &Engine, name: &str, client: &recipe::Client<'_>, lease: bool) -> Result<(String, Option<Lease>)> {
    let body = if lease { recipe::held(client.body()) } else { client.body() };
    let id = engine.create_container(name, body).await?;
    let files = client.files();
    let files = if files.is_empty() { None } else { Some(tar_of(&files)?) };
    if let (false, Some(f)) = (lease, &files) {
        engine.upload(&id, "/", f.clone()).await?;
    }
    engine.start(&id).await?;
    let held = if lease {
        let mut l = engine.attach_lease(&id).await?;
        if let Some(f) = files {
            engine.upload(&id, "/", f).await?;
        }
        l.go().await?;
        Some(l)
    } else {
        None
    };
    Ok((id, held))
}

/// Create a client without starting it, its files uploaded (a pool's, started by the caller).
async fn create_client(engine: &Engine, name: &str, client: &recipe::Client<'_>) -> Result<String> {
    let id = engine.create_container(name, client.body()).await?;
    let files = client.files();
    if !files.is_empty() {
        engine.upload(&id, "/", tar_of(&files)?).await?;
    }
    Ok(id)
}

fn remaining(deadline: Instant) -> Duration {
    deadline.saturating_duration_since(Instant::now())
}

/// [`Error::ServerExited`] with the server's last log lines if it is no longer running.
/// Its dockerd ended is also seen while the container still runs: the entrypoint (PID 1) says
/// so in the log and stays a while, so that the log can be read before auto-removal takes it.
async fn server_exit(engine: &Engine, id: &str, name: &str) -> Result<Option<Error>> {
    let state = engine.inspect(id).await?.state;
    let logs = engine.logs_tail(id, 20).await.unwrap_or_default();
    match state {
        Some(s) if s.running != Some(true) => Ok(Some(Error::ServerExited { name: name.to_string(), code: s.exit_code.unwrap_or(-1), logs })),
        _ => Ok(dockerd_exit_status(&logs).map(|code| Error::ServerExited { name: name.to_string(), code, logs })),
    }
}

/// The status in the entrypoint's "dockerd exited (status N)" line, if the log has one.
fn dockerd_exit_status(logs: &str) -> Option<i64> {
    logs.lines().rev().find_map(|l| l.split_once("didx-entrypoint: dockerd exited (status ")?.1.strip_suffix(')')?.parse().ok())
}

/// How readiness is probed: straight from here to the server's address when the engine is
/// local, else (or when that address turns out unreachable) by `docker version` in the client.
enum Probe {
    Direct(Prober, SocketAddr),
    InClient,
}

/// Wait until `server`'s dockerd answers over TLS. `client` (absent while a pooled server
/// starts) is where the fallback probe runs.
async fn wait_ready(
    engine: &Engine,
    server: &Container,
    client: Option<&str>,
    tls: &TlsMaterial,
    timeout: Duration,
    cancel: &Cancel,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let inspect = engine.inspect(&server.id).await?;
    let ip: Option<IpAddr> = inspect
        .network_settings
        .as_ref()
        .and_then(|n| n.networks.as_ref())
        .and_then(|nets| nets.values().find_map(|ep| ep.ip_address.as_deref().and_then(|s| s.parse().ok())));
    let mut probe = match (engine.is_local(), ip, Prober::new(tls)) {
        (true, Some(ip), Ok(p)) => Probe::Direct(p, SocketAddr::new(ip, TLS_PORT)),
        _ => Probe::InClient,
    };
    let mut last: String;
    let mut last_liveness = Instant::now();
    let mut unreachable_since: Option<Instant> = None;
    loop {
        cancel.check()?;
        match &probe {
            // dockerd accepts connections before it serves them, so one attempt may wait; never
            // past the deadline.
            Probe::Direct(prober, addr) => match prober.ping(*addr, remaining(deadline).min(Duration::from_millis(500))).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    if let ProbeError::Unreachable(_) = e {
                        let since = *unreachable_since.get_or_insert_with(Instant::now);
                        if since.elapsed() > Duration::from_secs(2) && client.is_some() {
                            tracing::info!(server = %server.name, "server address unreachable from here; probing from the client");
                            probe = Probe::InClient;
                        }
                    } else {
                        unreachable_since = None;
                    }
                    last = e.to_string();
                }
            },
            Probe::InClient => match client {
                None => last = "no client to probe from".to_string(),
                Some(client) => {
                    let argv: Vec<String> =
                        ["docker", "version", "--format", "{{.Server.Version}}"].iter().map(|s| s.to_string()).collect();
                    let mut sink = tokio::io::sink();
                    let mut sink2 = tokio::io::sink();
                    match engine.exec(client, &argv, &[], &mut sink, &mut sink2).await {
                        Ok(0) => return Ok(()),
                        Ok(code) => last = format!("docker version in the client exited {code}"),
                        Err(e) => last = e.to_string(),
                    }
                }
            },
        }
        if last_liveness.elapsed() >= LIVENESS_INTERVAL {
            last_liveness = Instant::now();
            if let Some(exited) = server_exit(engine, &server.id, &server.name).await? {
                return Err(exited);
            }
        }
        if remaining(deadline).is_zero() {
            let logs = engine.logs_tail(&server.id, 20).await.unwrap_or_default();
            return Err(Error::NotReady { name: server.name.clone(), timeout, last_probe: last, logs });
        }
        tokio::time::sleep(PROBE_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_entrypoint_s_dockerd_exit_line_is_read() {
        assert_eq!(dockerd_exit_status("x\ndidx-entrypoint: dockerd exited (status 1)\n"), Some(1));
        assert_eq!(dockerd_exit_status("failed to start daemon: bad flag\ndidx-entrypoint: dockerd exited (status 125)"), Some(125));
        assert_eq!(dockerd_exit_status("didx-entrypoint: lease lost"), None);
        assert_eq!(dockerd_exit_status(""), None);
    }

    #[test]
    fn ids_are_distinct_and_name_safe() {
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| EnvId::generate().0).collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids.iter().all(|i| i.len() == 10 && i.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())));
    }

    #[test]
    fn names_follow_didx_sh() {
        let spec = EnvSpec {
            id: EnvId("abc".into()),
            sv: Version::parse("--sv", "latest").unwrap(),
            cv: Version::parse("--cv", "24.0").unwrap(),
            server_image: String::new(),
            client_image: String::new(),
            storage_driver: "vfs".into(),
            dockerd_opts: vec!["--debug".into()],
            isolation: IsolationMode::Auto,
            engine_id: String::new(),
            ready_timeout: Duration::from_secs(1),
            volumes: vec![],
            publish: vec![],
            lease: false,
            address_range: None,
            network: None,
            policy: "anycase".into(),
            owner: String::new(),
            engine_mode: Default::default(),
            store: None,
        };
        assert_eq!(spec.server_name(), "dind_abc_server_latest");
        assert_eq!(spec.client_name(), "dind_abc_client_24.0");
    }
}
