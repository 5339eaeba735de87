//! The warm pool: servers started ahead of time, with dockerd up and TLS made, waiting for a
//! run to claim them.
//!
//! A pooled environment is a running server container labelled with its pool key (a hash of
//! every option that shapes the server and names the client) and no client. A run claims one
//! by creating its client under the environment's deterministic name,
//! `dind_<id>_client_<cv>`: the engine reserves container names atomically, so of two
//! processes (or hosts) claiming the same environment exactly one succeeds and the other gets
//! a conflict and tries the next. A claimed environment has a client from then on and is never
//! offered again; it is removed like any other environment when the run ends.
//!
//! Topping up ([`up`]) holds a lock file in didx's cache directory for its whole length, so
//! concurrent refills on one host never overshoot: the second one counts the first one's work.

use std::collections::BTreeMap;

use futures_util::TryStreamExt;
use futures_util::future::join_all;
use sha2::{Digest, Sha256};

use super::{
    Cancel, ClientFiles, Container, EnvId, EnvSpec, Environment, Event, create_client, now_secs, remove, start_server,
    wait_ready,
};
use crate::engine::{Engine, status_of};
use crate::error::{Error, Result};
use crate::labels;
use crate::tls::TlsMaterial;

/// Where a pooled server keeps the client's certificate and key for its claimer (the CA is
/// the server's own `ca.pem`).
pub(super) const POOL_CLIENT_CERT: &str = "didx/certs/pool-client/cert.pem";
pub(super) const POOL_CLIENT_KEY: &str = "didx/certs/pool-client/key.pem";
/// Written into a pooled server once its dockerd answered.
const READY_MARK: &str = "didx/pool-ready";

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
}

/// Every pooled environment (all keys, or one), oldest first.
pub async fn entries(engine: &Engine, key: Option<&str>) -> Result<Vec<PoolEntry>> {
    let label = match key {
        Some(k) => format!("{}={k}", labels::POOL),
        None => labels::POOL.to_string(),
    };
    let filter = std::collections::HashMap::from([("label".to_string(), vec![label])]);
    let servers = engine.containers(filter).await?;
    // Claimed environments have a client; clients carry the environment label, not the pool's.
    let clients: std::collections::HashSet<String> = engine
        .containers(std::collections::HashMap::from([(
            "label".to_string(),
            vec![format!("{}={}", labels::ROLE, labels::Role::Client.as_str())],
        )]))
        .await?
        .into_iter()
        .filter_map(|c| c.labels.and_then(|mut l| l.remove(labels::ENV)))
        .collect();
    let mut out: Vec<PoolEntry> = Vec::new();
    for c in servers {
        let l = c.labels.clone().unwrap_or_default();
        let (Some(id), Some(k)) = (l.get(labels::ENV), l.get(labels::POOL)) else { continue };
        let name = c.names.as_ref().and_then(|n| n.first()).map(|n| n.trim_start_matches('/').to_string()).unwrap_or_default();
        out.push(PoolEntry {
            id: id.clone(),
            key: k.clone(),
            size: l.get(labels::POOL_SIZE).and_then(|s| s.parse().ok()).unwrap_or(1),
            created: l.get(labels::CREATED).and_then(|v| v.parse().ok()),
            server: Container { name, id: c.id.clone().unwrap_or_default() },
            running: c.state.as_ref().map(|s| s.to_string()) == Some("running".to_string()),
            state: if clients.contains(id) { PoolState::Claimed } else { PoolState::Starting },
        });
    }
    let marks = join_all(out.iter().map(|e| async move {
        e.state == PoolState::Starting
            && engine.stat_is_dir(&e.server.id, &format!("/{READY_MARK}")).await.ok().flatten().is_some()
    }))
    .await;
    for (e, ready) in out.iter_mut().zip(marks) {
        if ready {
            e.state = PoolState::Ready;
        }
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
/// fresh id. Unclaimed members that stopped running are removed first.
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
        if e.running {
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
    let tls = TlsMaterial::generate(&[name.as_str()])?;
    let id = start_server(engine, spec, &name, &tls, now_secs(), Some(tag), cancel, on).await?;
    let probe = Environment {
        engine: engine.clone(),
        id: spec.id.clone(),
        server: Container { name, id: id.clone() },
        // No client yet: the probe goes straight to the server (wait_ready only needs a client
        // for its fallback, which then fails and retries until the deadline).
        client: Container { name: String::new(), id: String::new() },
        settled: true,
    };
    wait_ready(engine, &probe, &tls, spec.ready_timeout, cancel).await?;
    let tar = crate::archive::tar_of(&[crate::archive::Entry { path: READY_MARK, mode: 0o644, data: b"" }])?;
    engine.upload(&id, "/", tar).await
}

/// Claim a ready (or, failing that, starting) pooled environment matching `spec`'s key, make
/// its client from `spec` (name, image, mounts) and wait until the inner engine answers.
/// `spec.id` is replaced by the claimed environment's id. `None`: nothing to claim. Returns
/// the environment and the pool size to refill to.
pub async fn claim(
    engine: &Engine,
    spec: &mut EnvSpec,
    cancel: &Cancel,
    on: &(dyn Fn(Event<'_>) + Send + Sync),
) -> Result<Option<(Environment, usize)>> {
    let key = key(spec);
    let mut candidates: Vec<PoolEntry> =
        entries(engine, Some(&key)).await?.into_iter().filter(|e| e.running && e.state != PoolState::Claimed).collect();
    // Ready ones first, oldest first within each state.
    candidates.sort_by_key(|e| (e.state != PoolState::Ready, e.created));
    for cand in candidates {
        cancel.check()?;
        spec.id = EnvId(cand.id.clone());
        let files = match client_files_from(engine, &cand.server.id).await {
            Ok(f) => f,
            // Removed under us (pool down, another claimer's rollback): try the next.
            Err(e) if status_of(&e) == Some(404) => continue,
            Err(e) => return Err(e),
        };
        let client_name = spec.client_name();
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
        let tls = TlsMaterial {
            ca_pem: files.ca_pem.clone(),
            server_cert_pem: String::new(),
            server_key_pem: String::new(),
            client_cert_pem: files.cert_pem.clone(),
            client_key_pem: files.key_pem.clone(),
        };
        let t0 = std::time::Instant::now();
        let started = async {
            engine.start(&env.client.id).await?;
            on(Event::ClientStarted { name: &env.client.name, image: &spec.client_image });
            Ok::<(), Error>(())
        };
        let (s, r) = tokio::join!(started, wait_ready(engine, &env, &tls, spec.ready_timeout, cancel));
        if let Err(e) = s.and(r) {
            env.keep();
            if let Err(rm) = remove(engine, spec.id.as_str()).await {
                tracing::warn!(env = %spec.id, error = %rm, "removing a failed claim failed");
            }
            return Err(e);
        }
        on(Event::Ready { elapsed: t0.elapsed() });
        return Ok(Some((env, cand.size)));
    }
    Ok(None)
}

/// The client's certificates, as kept in a pooled server.
async fn client_files_from(engine: &Engine, server: &str) -> Result<ClientFiles> {
    let bytes: Vec<u8> = engine
        .download(server, "/didx/certs")
        .try_fold(Vec::new(), |mut acc, chunk| async move {
            acc.extend_from_slice(&chunk);
            Ok(acc)
        })
        .await?;
    let mut files: BTreeMap<String, String> = BTreeMap::new();
    let mut archive = tar::Archive::new(bytes.as_slice());
    let bad = |e: std::io::Error| Error::Io { what: format!("reading the pooled certificates of {server}"), source: e };
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let path = entry.path().map_err(bad)?.to_string_lossy().to_string();
        let mut text = String::new();
        if entry.header().entry_type().is_file() {
            std::io::Read::read_to_string(&mut entry, &mut text).map_err(bad)?;
            files.insert(path, text);
        }
    }
    let get = |suffix: &str| {
        files.iter().find(|(p, _)| p.ends_with(suffix)).map(|(_, t)| t.clone()).ok_or_else(|| Error::Io {
            what: format!("reading the pooled certificates of {server}"),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, format!("{suffix} missing")),
        })
    };
    Ok(ClientFiles { ca_pem: get("server/ca.pem")?, cert_pem: get("pool-client/cert.pem")?, key_pem: get("pool-client/key.pem")? })
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
