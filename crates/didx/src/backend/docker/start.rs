//! Starting an environment: isolation, an address block, the server, the client, readiness;
//! a start that fails or is cancelled removes everything it created.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::reaper;
use super::recipe::{self, ClientFiles, TLS_PORT};
use crate::archive::tar_of;
use crate::backend::{OnEvent, Placed};
use crate::cancel::Cancel;
use crate::engine::{Engine, Lease, message_of};
use crate::env::event::Event;
use crate::env::id::Container;
use crate::env::spec::EnvSpec;
use crate::error::{Error, Result};
use crate::isolation::{self, Isolation};
use crate::labels;
use crate::net;
use crate::ready::{ProbeError, Prober};
use crate::spec::IsolationMode;
use crate::tls::TlsMaterial;

/// Between readiness probes. A refused connection costs microseconds, and dockerd answers a
/// few milliseconds after it listens: probing often costs nothing and saves up to an interval.
const PROBE_INTERVAL: Duration = Duration::from_millis(10);
const LIVENESS_INTERVAL: Duration = Duration::from_millis(500);
/// Start server and client and wait until the inner engine answers over TLS (see
/// [`crate::backend::Backend::place`]). A start that fails or is cancelled removes everything
/// it created, by label.
pub(super) async fn place(engine: &Engine, spec: &EnvSpec, cancel: &Cancel, on: OnEvent<'_>) -> Result<Placed> {
    use tracing::Instrument;
    let span = tracing::info_span!("start", env = %spec.id);
    let started = async {
        match spec.engine_mode {
            crate::spec::EngineMode::Dind => start_inner(engine, spec, cancel, on).await,
            crate::spec::EngineMode::Host => start_host(engine, spec, on).await,
        }
    };
    match started.instrument(span).await {
        Ok(placed) => {
            on(Event::Placed { held: !placed.leases.is_empty() });
            Ok(placed)
        }
        Err(e) => {
            if let Err(rm) = engine.remove_labelled_with(Some(spec.id.as_str())).await {
                tracing::warn!(env = %spec.id, error = %rm, "rollback of a failed start failed");
            }
            Err(e)
        }
    }
}

async fn start_inner(engine: &Engine, spec: &EnvSpec, cancel: &Cancel, on: OnEvent<'_>) -> Result<Placed> {
    let t0 = Instant::now();
    let created = crate::util::now_secs();
    let server_name = spec.server_name();
    let client_name = spec.client_name();
    let tls = TlsMaterial::generate(&[server_name.as_str()])?;
    cancel.check()?;

    // Every container is held from its start (see `recipe::held`), a kept one (no
    // `spec.lease`) until it is ready, then released: a start cut short leaves nothing, and the
    // files go over the lease. The client is made once the server runs (it joins the server's
    // network namespace, so it could not start earlier), leaving no created-but-never-started
    // container behind a killed run for more than the few milliseconds between a create and
    // its attach.
    let server = recipe::Server { spec, name: &server_name, tls: &tls, created, pool: None, net: None };
    let (server_id, server_lease) = start_server(engine, &server, cancel, on).await?;
    // Dropped on a failure below, the lease ends the server (the caller's rollback removes it).
    let mut env = Placed {
        server: Some(Container { name: server_name.clone(), id: server_id.clone() }),
        client: Container { name: client_name, id: String::new() },
        leases: vec![server_lease],
        guard: None,
    };
    cancel.check()?;
    let server = Container { name: server_name, id: server_id };
    let client = recipe::Client {
        spec,
        server_name: &server.name,
        created,
        files: ClientFiles::Upload(&tls),
        pool_key: None,
        pool_name: None,
        engine_socket: None,
    };
    // dockerd boots while the client is made and starts; the probe goes straight to the server.
    let client_start = async {
        match start_client(engine, &env.client.name, &client).await {
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
    // On failure the caller's rollback removes the containers by label.
    match (started, ready) {
        (Ok((client_id, client_lease)), Ok(())) => {
            env.client.id = client_id;
            env.leases.push(client_lease);
            check_inner_runs(engine, &server, &spec.server_image).await?;
            if !spec.lease {
                release_all(std::mem::take(&mut env.leases)).await?;
            }
            on(Event::Ready { elapsed: t0.elapsed() });
            Ok(env)
        }
        (Err(e), _) | (_, Err(e)) => Err(e),
    }
}

/// On a rootless engine, that the ready inner engine can start a container
/// ([`recipe::INNER_CHECK`]): there an inner runtime may fail in the nested user namespace
/// (Debian bookworm's runc 1.1.5 does on trixie's kernel, for every container), and an
/// environment whose engine answers but runs nothing would fail every command later, far from
/// the cause. Elsewhere nothing is checked (an inner engine that answers runs containers).
pub(crate) async fn check_inner_runs(engine: &Engine, server: &Container, image: &str) -> Result<()> {
    if !engine.is_rootless().await? {
        return Ok(());
    }
    let argv = ["sh".to_string(), "-c".to_string(), recipe::INNER_CHECK.to_string()];
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = engine.exec(&server.id, &argv, &[], &mut out, &mut err).await?;
    if code == 0 {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&err);
    let why = said.lines().map(str::trim).rfind(|l| !l.is_empty()).unwrap_or("no reason given").to_string();
    Err(Error::InnerCannotRun { server: server.name.clone(), image: image.to_string(), why: format!("{why} (exit {code})") })
}

/// `--engine host`: no server; the client gets the engine-API proxy's socket (see
/// [`crate::dood`]). Said loudly first: the client has root on the engine's host.
async fn start_host(engine: &Engine, spec: &EnvSpec, on: OnEvent<'_>) -> Result<Placed> {
    let t0 = Instant::now();
    on(Event::EngineHost { host: engine.host() });
    // The socket is this process's path: the engine's machine may name it otherwise.
    let own = crate::dood::own_mounts(engine).await?;
    let dir = crate::cache::ensure_dir()?.join("dood").join(spec.id.as_str());
    let client_name = spec.client_name();
    let proxy = crate::dood::Proxy::start(engine, spec.id.as_str(), &client_name, dir).await?;
    let socket = crate::dood::translate_own(own.as_ref(), "the engine proxy's socket", &proxy.socket())?;
    let socket = socket.to_string_lossy();
    let created = crate::util::now_secs();
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
        pool_name: None,
        engine_socket: Some(&socket),
    };
    let (reaper, (client_id, lease)) = tokio::try_join!(reaper_start, start_client(engine, &client_name, &client))?;
    let lease = if spec.lease {
        Some(lease)
    } else {
        lease.release().await?;
        None
    };
    on(Event::ClientStarted { name: &client_name, image: &spec.client_image });
    tracing::debug!(elapsed = ?t0.elapsed(), "client of the host engine started");
    Ok(Placed {
        server: None,
        client: Container { name: client_name, id: client_id },
        leases: reaper.into_iter().chain(lease).collect(),
        guard: Some(Box::new(proxy)),
    })
}

/// Create, start and fill the server, switching `auto` isolation to the caps profile when the
/// engine refuses `--privileged`. It is held from its start: the lease comes back with its
/// id (a caller keeping it releases it once it is ready).
pub(crate) async fn start_server(
    engine: &Engine,
    server: &recipe::Server<'_>,
    cancel: &Cancel,
    on: OnEvent<'_>,
) -> Result<(String, Lease)> {
    let (spec, name) = (server.spec, server.name);
    let caps = || Isolation::caps_profile_on(engine, &spec.engine_id, &spec.server_image, spec.id.as_str());
    let mut iso = first_isolation(engine, spec.isolation, &spec.engine_id, &spec.server_image, spec.id.as_str()).await?;
    // The files go to the bootstrap over the lease (no archive upload: see recipe::BOOTSTRAP).
    let files = recipe::handover(&server.files())?;
    loop {
        let (id, unknown) = create_server(engine, server, &mut iso).await?;
        if !unknown.is_empty() {
            on(Event::CapabilitiesUnknown { names: &unknown });
        }
        cancel.check()?;
        // Held: started at once (its bootstrap waits for "go"), then attached, then filled. A
        // created container is never removed by the engine; a started one ends itself.
        match engine.start(&id).await {
            Ok(()) => {
                let held = engine.attach_lease(&id, &files).await?;
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
                        Some(port) => crate::engine::port_holder(engine, port).await.map(|h| format!(" (held by {h})")),
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
        IsolationMode::Auto if isolation::remembered_refusal(engine_id) => {
            Isolation::caps_profile_on(engine, engine_id, image, env).await?
        }
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
/// machine on the same engine) the claim is checked once the server exists: a server that
/// finds another claiming its block removes itself and claims another ([`holds_block`]).
async fn create_server(engine: &Engine, server: &recipe::Server<'_>, iso: &mut Isolation) -> Result<(String, Vec<String>)> {
    let Some(range) = server.spec.address_range else {
        return create_server_as(engine, server, iso).await;
    };
    let mut lost: Vec<net::Cidr> = Vec::new();
    for _ in 0..CLAIM_TRIES {
        let lock = net_lock().await?;
        let block = choose_block(engine, range, &lost, server.spec.id.as_str()).await?;
        let claimed = recipe::Server { net: Some(block), ..*server };
        let (id, unknown) = create_server_as(engine, &claimed, iso).await?;
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
    let held: Vec<net::Cidr> =
        servers?.iter().filter_map(|c| c.labels.as_ref()?.get(labels::NET)).filter_map(|b| net::Cidr::parse(b)).collect();
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

/// Whether server `id` holds `block`: no other server claims it at this check (made and listed
/// after `id` was made, so any claimant this one could miss made its own check later, and sees
/// this one). A claimant that sees another gives the block up, even when both see each other:
/// the time a server was made cannot decide, as the engine stamps it before the container
/// appears in its list, so an earlier-stamped claimant may appear after a later one checked.
async fn holds_block(engine: &Engine, id: &str, block: net::Block) -> Result<bool> {
    let filter = std::collections::HashMap::from([("label".to_string(), vec![format!("{}={block}", labels::NET)])]);
    let claims = engine.containers(filter).await?;
    Ok(claims.iter().all(|c| c.id.as_deref() == Some(id)))
}

/// Create the server as `server` says (its block, if any, chosen), to be held from its start.
async fn create_server_as(engine: &Engine, server: &recipe::Server<'_>, iso: &mut Isolation) -> Result<(String, Vec<String>)> {
    let mut unknown = Vec::new();
    loop {
        let body = recipe::held(server.body(iso), engine.beats());
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

/// Create and start a client (its server running), held from its start, its files handed
/// over the lease. Its id and lease.
async fn start_client(engine: &Engine, name: &str, client: &recipe::Client<'_>) -> Result<(String, Lease)> {
    let files = recipe::handover(&client.files())?;
    let id = engine.create_container(name, recipe::held(client.body(), engine.beats())).await?;
    engine.start(&id).await?;
    let held = engine.attach_lease(&id, &files).await?;
    Ok((id, held))
}

/// Hand over every container `leases` hold: they stay when this process ends.
async fn release_all(leases: Vec<Lease>) -> Result<()> {
    futures_util::future::try_join_all(leases.into_iter().map(Lease::release)).await?;
    Ok(())
}

/// Create a client without starting it, its files uploaded (a pool's, started by the caller).
pub(crate) async fn create_client(engine: &Engine, name: &str, client: &recipe::Client<'_>) -> Result<String> {
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
        Some(s) if s.running != Some(true) => {
            Ok(Some(Error::ServerExited { name: name.to_string(), code: s.exit_code.unwrap_or(-1), logs }))
        }
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
pub(crate) async fn wait_ready(
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
    let mut probe = match (engine.reaches_containers().await, ip, Prober::new(tls)) {
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
                    match e {
                        ProbeError::Unreachable(_) => {
                            let since = *unreachable_since.get_or_insert_with(Instant::now);
                            if since.elapsed() > Duration::from_secs(2) && client.is_some() {
                                tracing::info!(server = %server.name, "server address unreachable from here; probing from the client");
                                probe = Probe::InClient;
                            }
                        }
                        // Another engine's container holds that address here: only the client
                        // reaches this server.
                        ProbeError::Stranger(_) if client.is_some() => {
                            tracing::info!(server = %server.name, "another server answers at the server's address here; probing from the client");
                            probe = Probe::InClient;
                        }
                        _ => unreachable_since = None,
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
}
