//! The warm pool: servers started ahead of time, with dockerd up and TLS made, waiting for a
//! run to claim them.
//!
//! A pooled environment is a running server container and a paused client container, both
//! labelled with the pool key (a hash of every option that shapes the server and names the
//! client). Its filler starts the server as `dind_<id>_server_<sv>_starting`, waits until its
//! dockerd answers over TLS, starts the client (whose entrypoint and certificates wait in a
//! volume of the server's, so nothing is uploaded then), pauses it, and only then renames the
//! server to `dind_<id>_server_<sv>`: "ready" is read from names and states, with no extra
//! request.
//!
//! A run claims a ready environment by unpausing its client. The engine checks "paused" under
//! the container's lock, so of two processes (or hosts) claiming the same environment exactly
//! one succeeds and the other is told "not paused" and tries the next. A claimed environment
//! has a running client from then on and is never offered again; it is removed like any other
//! environment when the run ends. A run with client mounts (`-v`) replaces the claimed client
//! by one made with its mounts.
//!
//! Topping up ([`up`]) holds a lock file in didx's cache directory for its whole length, so
//! concurrent refills on one host never overshoot: the second one counts the first one's work.


use futures_util::future::join_all;
use sha2::{Digest, Sha256};

use super::list::container_name;
use super::{
    CLIENT_FILES_DIR, Cancel, ClientFiles, Container, EnvId, EnvSpec, Environment, Event, create_client, now_secs, remove,
    start_server, wait_ready,
};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::labels;
use crate::tls::TlsMaterial;

/// Suffix of a pooled server's name until its dockerd answered.
const STARTING: &str = "_starting";

/// Marks a server as a pool member.
#[derive(Debug, Clone)]
pub struct PoolTag {
    /// The pool key ([`key`]).
    pub key: String,
    /// How many environments the pool keeps ready (what a refill tops up to).
    pub size: usize,
}

/// The pool key of a spec: everything that must match for a pooled environment to serve it
/// (server and client image, by ID, so a rebuilt image is never served from an older pool;
/// `--sv`, `--cv`, storage driver, dockerd options, isolation). The client's mounts, copies
/// and environment are applied at claim time and are not part of it.
pub async fn key(engine: &Engine, spec: &EnvSpec) -> Result<String> {
    let (server, client) = tokio::join!(engine.image(&spec.server_image), engine.image(&spec.client_image));
    let id = |i: Option<bollard::models::ImageInspect>, name: &str| i.and_then(|i| i.id).unwrap_or_else(|| name.to_string());
    let (server, client) = (id(server?, &spec.server_image), id(client?, &spec.client_image));
    Ok(key_of(spec, &server, &client))
}

fn key_of(spec: &EnvSpec, server_image_id: &str, client_image_id: &str) -> String {
    let mut h = Sha256::new();
    for part in [
        server_image_id,
        client_image_id,
        spec.sv.as_str(),
        spec.cv.as_str(),
        spec.storage_driver.as_str(),
        spec.isolation.as_str(),
    ]
    .into_iter()
    .chain(spec.dockerd_opts.iter().map(String::as_str))
    {
        h.update(part.as_bytes());
        h.update([0]);
    }
    hex::encode(h.finalize())[..12].to_string()
}

/// State of a pooled environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolState {
    /// Its dockerd has not answered yet (or its filler stopped before marking it).
    Starting,
    /// Ready to be claimed.
    Ready,
    /// Claimed by a run: no longer in the pool.
    Claimed,
}

impl PoolState {
    /// As shown by `didx pool`.
    pub fn as_str(self) -> &'static str {
        match self {
            PoolState::Starting => "starting",
            PoolState::Ready => "ready",
            PoolState::Claimed => "claimed",
        }
    }
}

/// One pooled environment as found on the engine.
#[derive(Debug, Clone)]
pub struct PoolEntry {
    /// Environment id.
    pub id: String,
    /// Pool key.
    pub key: String,
    /// Pool size it was started for.
    pub size: usize,
    /// Unix time it was created.
    pub created: Option<u64>,
    /// Its server container.
    pub server: Container,
    /// Whether the server container is running.
    pub running: bool,
    /// Starting, ready or claimed.
    pub state: PoolState,
    /// Its client, once made.
    client: Option<Container>,
    /// The volume holding the client's files.
    files_volume: Option<String>,
}

fn state_of(c: &bollard::models::ContainerSummary) -> String {
    c.state.as_ref().map(|s| s.to_string()).unwrap_or_default()
}

/// Every pooled environment (all keys, or one), oldest first: one list request.
pub async fn entries(engine: &Engine, key: Option<&str>) -> Result<Vec<PoolEntry>> {
    let label = match key {
        Some(k) => format!("{}={k}", labels::POOL),
        None => labels::POOL.to_string(),
    };
    let filter = std::collections::HashMap::from([("label".to_string(), vec![label])]);
    let containers = engine.containers(filter).await?;
    let role = |c: &bollard::models::ContainerSummary, r: labels::Role| {
        c.labels.as_ref().and_then(|l| l.get(labels::ROLE)).map(String::as_str) == Some(r.as_str())
    };
    let env_of = |c: &bollard::models::ContainerSummary| c.labels.as_ref().and_then(|l| l.get(labels::ENV)).cloned();
    // Clients by environment: (container, state).
    let clients: std::collections::HashMap<String, (Container, String)> = containers
        .iter()
        .filter(|c| role(c, labels::Role::Client))
        .filter_map(|c| Some((env_of(c)?, (Container { name: container_name(c), id: c.id.clone()? }, state_of(c)))))
        .collect();
    let mut out: Vec<PoolEntry> = Vec::new();
    for c in containers.iter().filter(|c| role(c, labels::Role::Server)) {
        let l = c.labels.clone().unwrap_or_default();
        let (Some(id), Some(k)) = (l.get(labels::ENV), l.get(labels::POOL)) else { continue };
        let name = container_name(c);
        let client = clients.get(id);
        let state = match client {
            _ if name.ends_with(STARTING) => PoolState::Starting,
            Some((_, s)) if s == "paused" => PoolState::Ready,
            Some(_) => PoolState::Claimed,
            // Renamed, yet no client: made by a filler of another kind or half removed.
            None => PoolState::Claimed,
        };
        let files_volume = c
            .mounts
            .as_ref()
            .and_then(|m| m.iter().find(|m| m.destination.as_deref() == Some(CLIENT_FILES_DIR)))
            .and_then(|m| m.name.clone());
        out.push(PoolEntry {
            id: id.clone(),
            key: k.clone(),
            size: l.get(labels::POOL_SIZE).and_then(|s| s.parse().ok()).unwrap_or(1),
            created: l.get(labels::CREATED).and_then(|v| v.parse().ok()),
            server: Container { name, id: c.id.clone().unwrap_or_default() },
            running: state_of(c) == "running",
            state,
            client: client.map(|(c, _)| c.clone()),
            files_volume,
        });
    }
    out.sort_by_key(|e| (e.created, e.id.clone()));
    Ok(out)
}

/// What [`up`] did.
#[derive(Debug, Clone, Default)]
pub struct UpReport {
    /// The pool key.
    pub key: String,
    /// Unclaimed environments of this key found running.
    pub existing: usize,
    /// Environments started now.
    pub started: Vec<String>,
    /// Starts that failed (their resources removed), with the reason.
    pub failed: Vec<String>,
}

/// Top the pool of `template`'s key up to `size` ready environments and wait until the new
/// ones answer. `template`'s id, volumes and copies are ignored; each new environment gets a
/// fresh id. Unclaimed members that stopped running, or were left starting by a filler that
/// died, are removed first.
pub async fn up(
    engine: &Engine,
    template: &EnvSpec,
    size: usize,
    cancel: &Cancel,
    on: &(dyn Fn(Event<'_>) + Send + Sync),
) -> Result<UpReport> {
    let _lock = lock()?;
    let key = key(engine, template).await?;
    let mut report = UpReport { key: key.clone(), ..Default::default() };
    for e in entries(engine, Some(&key)).await? {
        if e.state == PoolState::Claimed {
            continue;
        }
        // Under the lock no filler on this host is at work, so one still starting was left by
        // a filler that died; stopped ones are of no use either.
        if e.running && e.state == PoolState::Ready {
            report.existing += 1;
        } else {
            remove(engine, &e.id).await?;
        }
    }
    let tag = PoolTag { key, size };
    let missing = size.saturating_sub(report.existing);
    let starts = (0..missing).map(|_| {
        let mut spec = template.clone();
        spec.id = EnvId::generate();
        spec.volumes.clear();
        let tag = &tag;
        async move {
            let r = start_pooled(engine, &spec, tag, cancel, on).await;
            if r.is_err()
                && let Err(rm) = remove(engine, spec.id.as_str()).await
            {
                tracing::warn!(env = %spec.id, error = %rm, "removing a failed pooled start failed");
            }
            (spec.id, r)
        }
    });
    for (id, r) in join_all(starts).await {
        match r {
            Ok(()) => report.started.push(id.to_string()),
            Err(Error::Cancelled) => return Err(Error::Cancelled),
            Err(e) => report.failed.push(format!("{id}: {e}")),
        }
    }
    Ok(report)
}

async fn start_pooled(
    engine: &Engine,
    spec: &EnvSpec,
    tag: &PoolTag,
    cancel: &Cancel,
    on: &(dyn Fn(Event<'_>) + Send + Sync),
) -> Result<()> {
    let name = spec.server_name();
    let starting = format!("{name}{STARTING}");
    let tls = TlsMaterial::generate(&[name.as_str()])?;
    let id = start_server(engine, spec, &starting, &tls, now_secs(), Some(tag), cancel, on).await?;
    // No client yet: the probe goes straight to the server.
    let server = Container { name: starting.clone(), id: id.clone() };
    wait_ready(engine, &server, None, &tls, spec.ready_timeout, cancel).await?;
    let volume = engine
        .inspect(&id)
        .await?
        .mounts
        .unwrap_or_default()
        .into_iter()
        .find(|m| m.destination.as_deref() == Some(CLIENT_FILES_DIR))
        .and_then(|m| m.name)
        .ok_or_else(|| Error::Io {
            what: format!("finding the client-files volume of {starting}"),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "no volume mounted there"),
        })?;
    let files = ClientFiles::Volume { name: volume, pool_key: tag.key.clone() };
    let client = create_client(engine, spec, &spec.client_name(), &starting, now_secs(), &files).await?;
    engine.start(&client).await?;
    engine.pause(&client).await?;
    engine.rename(&id, &name).await
}

/// Claim a ready pooled environment matching `spec`'s key and give it to the caller, its
/// client running (replaced by one with `spec`'s mounts if it has any). `spec.id` becomes the
/// claimed environment's id. `None`: none is ready. Returns the environment and the pool size
/// to refill to.
pub async fn claim(
    engine: &Engine,
    spec: &mut EnvSpec,
    cancel: &Cancel,
    on: &(dyn Fn(Event<'_>) + Send + Sync),
) -> Result<Option<(Environment, usize)>> {
    let t0 = std::time::Instant::now();
    let key = key(engine, spec).await?;
    let candidates: Vec<PoolEntry> =
        entries(engine, Some(&key)).await?.into_iter().filter(|e| e.running && e.state == PoolState::Ready).collect();
    for cand in candidates {
        cancel.check()?;
        let (Some(client), Some(volume)) = (cand.client.clone(), cand.files_volume.clone()) else { continue };
        if engine.unpause(&client.id).await.is_err() {
            // Another process claimed it first (or it is being removed): try the next.
            continue;
        }
        spec.id = EnvId(cand.id.clone());
        let env = Environment { engine: engine.clone(), id: spec.id.clone(), server: cand.server.clone(), client, settled: false };
        match with_mounts(engine, spec, env, volume, &key).await {
            Ok(env) => {
                on(Event::ClientStarted { name: &env.client.name, image: &spec.client_image });
                on(Event::Ready { elapsed: t0.elapsed() });
                return Ok(Some((env, cand.size)));
            }
            Err(e) => {
                if let Err(rm) = remove(engine, spec.id.as_str()).await {
                    tracing::warn!(env = %spec.id, error = %rm, "removing a failed claim failed");
                }
                return Err(e);
            }
        }
    }
    Ok(None)
}

/// The claimed environment as the run wants it: with `spec`'s client mounts, if any, on a
/// client made anew under the same name.
async fn with_mounts(engine: &Engine, spec: &EnvSpec, mut env: Environment, volume: String, key: &str) -> Result<Environment> {
    if spec.volumes.is_empty() {
        return Ok(env);
    }
    engine.remove_container(&env.client.id).await?;
    let files = ClientFiles::Volume { name: volume, pool_key: key.to_string() };
    let id = create_client(engine, spec, &env.client.name, &env.server.name, now_secs(), &files).await?;
    env.client.id = id;
    engine.start(&env.client.id).await?;
    Ok(env)
}

/// Remove every unclaimed pooled environment (claimed ones belong to their runs); returns
/// their ids.
pub async fn down(engine: &Engine) -> Result<Vec<String>> {
    let _lock = lock()?;
    let ids: Vec<String> =
        entries(engine, None).await?.into_iter().filter(|e| e.state != PoolState::Claimed).map(|e| e.id).collect();
    for r in join_all(ids.iter().map(|id| remove(engine, id))).await {
        r?;
    }
    Ok(ids)
}

/// The pool lock: held by `up` and `down` for their whole length (released when dropped).
fn lock() -> Result<std::fs::File> {
    let dir = crate::isolation::cache_dir().ok_or_else(|| Error::Io {
        what: "finding didx's cache directory for the pool lock".into(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "set DIDX_CACHE_DIR, XDG_CACHE_HOME or HOME"),
    })?;
    let path = dir.join("pool.lock");
    let io = |e| Error::Io { what: format!("locking {}", path.display()), source: e };
    std::fs::create_dir_all(&dir).map_err(io)?;
    let f = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(io)?;
    f.lock().map_err(io)?;
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{IsolationMode, Version};

    fn spec() -> EnvSpec {
        EnvSpec {
            id: EnvId::generate(),
            sv: Version::parse("--sv", "latest").unwrap(),
            cv: Version::parse("--cv", "latest").unwrap(),
            server_image: "didx/dind:local".into(),
            client_image: "didx/dind:local".into(),
            storage_driver: "overlay2".into(),
            dockerd_opts: vec![],
            isolation: IsolationMode::Auto,
            engine_id: String::new(),
            ready_timeout: std::time::Duration::from_secs(60),
            volumes: vec![],
        }
    }

    #[test]
    fn key_covers_server_options_but_not_the_id_or_client_mounts() {
        let a = spec();
        let k = key_of(&a, "sha256:1", "sha256:1");
        let mut b = spec();
        b.volumes = vec![crate::spec::VolumeSpec::parse("/data", std::path::Path::new("/")).unwrap()];
        assert_eq!(key_of(&b, "sha256:1", "sha256:1"), k, "id and mounts are not part of the key");
        assert_ne!(key_of(&a, "sha256:2", "sha256:1"), k, "a rebuilt server image");
        assert_ne!(key_of(&a, "sha256:1", "sha256:2"), k, "a rebuilt client image");
        let mut c = spec();
        c.dockerd_opts = vec!["--debug".into()];
        assert_ne!(key_of(&c, "sha256:1", "sha256:1"), k);
        let mut d = spec();
        d.cv = Version::parse("--cv", "24.0").unwrap();
        assert_ne!(key_of(&d, "sha256:1", "sha256:1"), k);
        let mut e = spec();
        e.storage_driver = "vfs".into();
        assert_ne!(key_of(&e, "sha256:1", "sha256:1"), k);
        // Word boundaries count: ["--a", "b"] is not ["--ab"].
        let (mut f, mut g) = (spec(), spec());
        f.dockerd_opts = vec!["--a".into(), "b".into()];
        g.dockerd_opts = vec!["--ab".into()];
        assert_ne!(key_of(&f, "x", "x"), key_of(&g, "x", "x"));
    }
}
