//! The warm pool: servers started ahead of time, with dockerd up and TLS made, waiting for a
//! run to claim them.
//!
//! A pooled environment is a running server container labelled with its pool key (a hash of
//! every option that shapes the server and names the client) and no client. Its filler starts
//! it as `dind_<id>_server_<sv>_starting` and renames it to `dind_<id>_server_<sv>` once its
//! dockerd answered over TLS, so "ready" is read from the name, with no extra request. The
//! client's entrypoint and certificates wait in a volume of the server's, which the claimer
//! mounts: claiming uploads nothing. A run claims one
//! by creating its client under the environment's deterministic name,
//! `dind_<id>_client_<cv>`: the engine reserves container names atomically, so of two
//! processes (or hosts) claiming the same environment exactly one succeeds and the other gets
//! a conflict and tries the next. A claimed environment has a client from then on and is never
//! offered again; it is removed like any other environment when the run ends.
//!
//! Topping up ([`up`]) holds a lock file in didx's cache directory for its whole length, so
//! concurrent refills on one host never overshoot: the second one counts the first one's work.


use futures_util::future::join_all;
use sha2::{Digest, Sha256};

use super::{
    CLIENT_FILES_DIR, Cancel, ClientFiles, Container, EnvId, EnvSpec, Environment, Event, create_client, now_secs, remove,
    start_server, wait_ready,
};
use crate::engine::{Engine, status_of};
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
/// (server and client image, `--sv`, `--cv`, storage driver, dockerd options, isolation). The
/// client's mounts, copies and environment are applied at claim time and are not part of it.
pub fn key(spec: &EnvSpec) -> String {
    let mut h = Sha256::new();
    for part in [
        spec.server_image.as_str(),
        spec.client_image.as_str(),
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
    /// The volume holding the client's files.
    files_volume: Option<String>,
}

/// Every pooled environment (all keys, or one), oldest first: one list request.
pub async fn entries(engine: &Engine, key: Option<&str>) -> Result<Vec<PoolEntry>> {
    let label = match key {
        Some(k) => format!("{}={k}", labels::POOL),
        None => labels::POOL.to_string(),
    };
    let filter = std::collections::HashMap::from([("label".to_string(), vec![label])]);
    let containers = engine.containers(filter).await?;
    // A claimer's client carries the pool label too: an environment with a client is claimed.
    let role = |c: &bollard::models::ContainerSummary, r: labels::Role| {
        c.labels.as_ref().and_then(|l| l.get(labels::ROLE)).map(String::as_str) == Some(r.as_str())
    };
    let claimed: std::collections::HashSet<String> = containers
        .iter()
        .filter(|c| role(c, labels::Role::Client))
        .filter_map(|c| c.labels.as_ref().and_then(|l| l.get(labels::ENV)).cloned())
        .collect();
    let mut out: Vec<PoolEntry> = Vec::new();
    for c in containers.iter().filter(|c| role(c, labels::Role::Server)) {
        let l = c.labels.clone().unwrap_or_default();
        let (Some(id), Some(k)) = (l.get(labels::ENV), l.get(labels::POOL)) else { continue };
        let name = c.names.as_ref().and_then(|n| n.first()).map(|n| n.trim_start_matches('/').to_string()).unwrap_or_default();
        let state = if claimed.contains(id) {
            PoolState::Claimed
        } else if name.ends_with(STARTING) {
            PoolState::Starting
        } else {
            PoolState::Ready
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
            running: c.state.as_ref().map(|s| s.to_string()).as_deref() == Some("running"),
            state,
            files_volume,
        });
    }
    out.sort_by_key(|e| (e.created, e.id.clone()));
    Ok(out)
}

/// What [`up`] did.
#[derive(Debug, Clone, Default)]
pub struct UpReport {
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
    let key = key(template);
    let mut report = UpReport::default();
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
            if r.is_err() {
                if let Err(rm) = remove(engine, spec.id.as_str()).await {
                    tracing::warn!(env = %spec.id, error = %rm, "removing a failed pooled start failed");
                }
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
    let probe = Environment {
        engine: engine.clone(),
        id: spec.id.clone(),
        server: Container { name: starting, id: id.clone() },
        // No client yet: the probe goes straight to the server (wait_ready only needs a client
        // for its fallback, which then fails and retries until the deadline).
        client: Container { name: String::new(), id: String::new() },
        settled: true,
    };
    wait_ready(engine, &probe, &tls, spec.ready_timeout, cancel).await?;
    engine.rename(&id, &name).await
}

/// Claim a ready pooled environment matching `spec`'s key: create its client from `spec`
/// (name, image, mounts) and start it. `spec.id` becomes the claimed environment's id. `None`:
/// none is ready. Returns the environment and the pool size to refill to.
pub async fn claim(
    engine: &Engine,
    spec: &mut EnvSpec,
    cancel: &Cancel,
    on: &(dyn Fn(Event<'_>) + Send + Sync),
) -> Result<Option<(Environment, usize)>> {
    let t0 = std::time::Instant::now();
    let key = key(spec);
    let candidates = entries(engine, Some(&key)).await?.into_iter().filter(|e| e.running && e.state == PoolState::Ready);
    // Nothing claimed leaves the spec's own fresh id: a caller that then starts (and on
    // failure rolls back) an environment must never do so under another process's id.
    let own_id = spec.id.clone();
    let found = claim_first(engine, spec, &key, candidates, cancel, on, t0).await;
    if !matches!(found, Ok(Some(_))) {
        spec.id = own_id;
    }
    found
}

async fn claim_first(
    engine: &Engine,
    spec: &mut EnvSpec,
    key: &str,
    candidates: impl Iterator<Item = PoolEntry>,
    cancel: &Cancel,
    on: &(dyn Fn(Event<'_>) + Send + Sync),
    t0: std::time::Instant,
) -> Result<Option<(Environment, usize)>> {
    for cand in candidates {
        cancel.check()?;
        let Some(volume) = cand.files_volume.clone() else { continue };
        spec.id = EnvId(cand.id.clone());
        let client_name = spec.client_name();
        let files = ClientFiles::Volume { name: volume, pool_key: key.to_string() };
        let client_id = match create_client(engine, spec, &client_name, &cand.server.name, now_secs(), &files).await {
            Ok(id) => id,
            // The name is taken: another process claimed it first.
            Err(e) if status_of(&e) == Some(409) => continue,
            Err(e) => return Err(e),
        };
        let env = Environment {
            engine: engine.clone(),
            id: spec.id.clone(),
            server: cand.server.clone(),
            client: Container { name: client_name, id: client_id },
            settled: false,
        };
        // The filler saw dockerd answer, and dockerd is the server's PID 1: a running server is
        // a ready one.
        if let Err(e) = engine.start(&env.client.id).await {
            env.keep();
            if let Err(rm) = remove(engine, spec.id.as_str()).await {
                tracing::warn!(env = %spec.id, error = %rm, "removing a failed claim failed");
            }
            return Err(e);
        }
        on(Event::ClientStarted { name: &env.client.name, image: &spec.client_image });
        on(Event::Ready { elapsed: t0.elapsed() });
        return Ok(Some((env, cand.size)));
    }
    Ok(None)
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
