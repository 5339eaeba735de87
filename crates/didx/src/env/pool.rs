//! The warm pool: environments started ahead of time, with dockerd up and TLS made, waiting
//! for a run to claim them.
//!
//! A pooled environment moves one way only: **starting → ready → claimed** (→ removed). Its
//! state is read from what the engine keeps atomically, never from a flag anyone can flip back:
//!
//! - *starting*: the server (named `dind_<id>_server_<sv>` from creation, labelled with the
//!   pool key, its filler, a deadline and its idle timeout) has no client yet, or only one
//!   under the name `dind_<id>_pooling_<cv>`.
//! - *ready*: its filler, once dockerd answered, created and started the client as
//!   `_pooling_` and then renamed it to the pool-only name `dind_<id>_pooled_<cv>`. The client
//!   runs (not paused): it follows its server, ending itself when the server's dockerd no
//!   longer listens, so a pooled server that ends (its idle timeout passed, its engine
//!   restarted) takes its client along, and the engine's auto-removal takes both.
//! - *claimed*: the client was renamed to its run name `dind_<id>_client_<cv>`. The engine
//!   reserves names atomically, so of any number of processes (or hosts) renaming the same
//!   client to that name exactly one succeeds; the others are told "same name" (400), "name in
//!   use" (409) or "no such container" (404) and try the next. No name goes back to
//!   `_pooled_`, so a claimed environment is never offered again. The claimer then takes a
//!   lease on its server and client (see [`crate::engine::Engine::lease`]), which also marks
//!   the server claimed so its idle timeout no longer applies.
//! - *stopped*: an unclaimed environment whose containers stopped (what an engine restart
//!   leaves): of no use, removed by the next [`up`] or [`down`].
//!
//! Removal of an unclaimed environment ([`up`] clearing stale ones, [`down`]) first claims its
//! pooled client by the same rename and removes only what it won, so it never takes an
//! environment a run claimed meanwhile. A starting environment is removed only when provably
//! dead: stopped, past its deadline, or made by a filler that held the same lock file (same
//! host and cache directory) as the one now holding it, so that filler has ended.
//!
//! [`up`] and [`down`] hold a lock file in didx's cache directory for their whole length (one
//! filler per host and cache directory at a time; waiting for it answers cancellation). It is
//! opened without following a symbolic link planted in its place.
//!
//! A claim queues a [`refill`] (run detached by the CLI's helper, perhaps long after). So that
//! one still queued never repopulates a pool that `pool down` emptied after the claim, [`down`]
//! counts itself in the cache directory (`pool-downs`, [`downs`]) first thing under the lock;
//! the claim reads the count before it claims, and the refill compares, under the lock, before
//! it starts anything: moved, it starts nothing. Under one lock, a refill either ran wholly
//! before the `down` (which removes what it made) or sees it. Only a `down` sharing the cache
//! directory is seen.
//!
//! `didx ls` shows the same states from the names ([`unclaimed_client`]): an unclaimed
//! environment is `ready` or `starting` (or its stopped container's state), a claimed one is a
//! run's (`running`).

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use bollard::models::{ContainerSummary, ContainerSummaryStateEnum as CState};
use futures_util::StreamExt;
use sha2::{Digest, Sha256};

use super::list::container_name;
use super::recipe::{self, CLIENT_CERT_PATH, ClientFiles};
use super::{Cancel, Container, EnvId, EnvSpec, Environment, Event, create_client, now_secs, remove, start_server, wait_ready};
use crate::engine::{Engine, status_of};
use crate::error::{Error, Result};
use crate::labels;
use crate::tls::TlsMaterial;

/// The largest pool [`up`](crate::pool::up) keeps (a larger size is a usage error).
pub const MAX_SIZE: usize = 32;
/// How many environments [`up`](crate::pool::up) starts at a time; the rest start as these finish.
pub const MAX_STARTING: usize = 4;
/// A starting environment's deadline is its creation + `--ready-timeout` + this: by then its
/// filler has either made it ready or given up (and removed it).
const DEADLINE_MARGIN_SECS: u64 = 120;
/// The pool lock's file in didx's cache directory.
const LOCK_FILE: &str = "pool.lock";
/// Between two tries of the pool lock.
const LOCK_POLL: Duration = Duration::from_millis(50);
/// The middle part of a pooled client's name until it is claimed.
const POOLED: &str = "_pooled_";
/// The middle part of a pooled client's name while its filler still makes it ready.
const POOLING: &str = "_pooling_";
/// The middle part of a claimed (run) client's name.
const CLIENT: &str = "_client_";

/// Marks a server as a pool member: its labels.
#[derive(Debug, Clone)]
pub struct PoolTag {
    /// The pool key ([`key`]).
    pub key: String,
    /// How many environments the pool keeps ready (what a refill tops up to).
    pub size: usize,
    /// Who is starting it: `<host>/<lock id>/<pid>/<token>` (see [`PoolEntry::filler`]).
    pub filler: String,
    /// Unix time after which, if still starting, it is dead.
    pub deadline: u64,
    /// Seconds after which the server ends itself unless claimed (`pool up --idle-timeout`).
    pub idle_timeout: Option<u64>,
}

impl PoolTag {
    /// The server's labels for this tag.
    pub(super) fn labels(&self) -> Vec<(String, String)> {
        let mut l = vec![
            (labels::POOL.to_string(), self.key.clone()),
            (labels::POOL_SIZE.to_string(), self.size.to_string()),
            (labels::POOL_FILLER.to_string(), self.filler.clone()),
            (labels::POOL_DEADLINE.to_string(), self.deadline.to_string()),
        ];
        if let Some(t) = self.idle_timeout {
            l.push((labels::POOL_IDLE.to_string(), t.to_string()));
        }
        l
    }
}

/// A pooled client's name before it is claimed: `dind_<id>_pooled_<cv>`.
fn pooled_name(spec: &EnvSpec) -> String {
    format!("dind_{}{POOLED}{}", spec.id, spec.cv.as_str())
}

/// A pooled client's name while its filler makes it: `dind_<id>_pooling_<cv>`.
fn pooling_name(spec: &EnvSpec) -> String {
    format!("dind_{}{POOLING}{}", spec.id, spec.cv.as_str())
}

/// What a client's name says of its pooled environment `env_id` (as [`entries_of`] reads it):
/// `Some(true)` under the pool-only name (ready once running), `Some(false)` still being made
/// (`_pooling_`), `None` under any other name (claimed). Pure.
pub(super) fn unclaimed_client(env_id: &str, client_name: &str) -> Option<bool> {
    if client_name.starts_with(&format!("dind_{env_id}{POOLED}")) {
        Some(true)
    } else if client_name.starts_with(&format!("dind_{env_id}{POOLING}")) {
        Some(false)
    } else {
        None
    }
}

/// The run name a pooled client is renamed to when claimed.
fn claimed_name(pooled: &str) -> String {
    pooled.replacen(POOLED, CLIENT, 1)
}

/// The pool key of a spec: everything that must match for a pooled environment to serve it
/// (the recipe's revision, so one pooled by an older didx making servers differently is never
/// served; server and client image, by ID, so a rebuilt image is never served from an older
/// pool; `--sv`, `--cv`, storage driver, dockerd options, isolation). The client's mounts,
/// copies and environment are applied at claim time and are not part of it.
pub async fn key(engine: &Engine, spec: &EnvSpec) -> Result<String> {
    let (server, client) = tokio::join!(engine.image(&spec.server_image), engine.image(&spec.client_image));
    let id = |i: Option<bollard::models::ImageInspect>, name: &str| i.and_then(|i| i.id).unwrap_or_else(|| name.to_string());
    let (server, client) = (id(server?, &spec.server_image), id(client?, &spec.client_image));
    Ok(key_of(spec, &server, &client))
}

fn key_of(spec: &EnvSpec, server_image_id: &str, client_image_id: &str) -> String {
    key_at(recipe::VERSION, spec, server_image_id, client_image_id)
}

fn key_at(recipe_version: u32, spec: &EnvSpec, server_image_id: &str, client_image_id: &str) -> String {
    let mut h = Sha256::new();
    let revision = format!("recipe {recipe_version}");
    let fixed =
        [server_image_id, client_image_id, spec.sv.as_str(), spec.cv.as_str(), spec.storage_driver.as_str(), spec.isolation.as_str()];
    // The address range and the network: a pooled server's block and network are fixed at its
    // start. (An empty part for "none": the parts are separated, so this adds no ambiguity.)
    let range = spec.address_range.map(|r| r.to_string()).unwrap_or_default();
    let shaped = [range.as_str(), spec.network.as_deref().unwrap_or_default()];
    for part in std::iter::once(revision.as_str()).chain(fixed).chain(shaped).chain(spec.dockerd_opts.iter().map(String::as_str)) {
        h.update(part.as_bytes());
        h.update([0]);
    }
    // `--publish` shapes the server: a pooled server without those ports must never serve a
    // run asking for them. Only when given, so the keys of servers without any stay the same
    // (and those pooled before `--publish` existed, which publish none, still serve them).
    // `--store`: a pooled server without the store must never serve a run asking for it (nor
    // one with it a run that did not). Only when given, as `--publish`.
    if let Some(store) = &spec.store {
        h.update(b"store\0");
        h.update(store.volume.as_bytes());
        h.update([0]);
    }
    if !spec.publish.is_empty() {
        h.update(b"publish\0");
        for p in &spec.publish {
            h.update(p.to_string().as_bytes());
            h.update([0]);
        }
    }
    hex::encode(h.finalize())[..12].to_string()
}

/// State of a pooled environment: starting → ready → claimed, never back; stopped is where an
/// unclaimed one ends when its containers stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolState {
    /// No client yet (its dockerd has not answered), or its client is still being made (under
    /// `_pooling_`) or not yet running.
    Starting,
    /// Its client runs under its pool-only name (`_pooled_`), as does its server: a run may
    /// claim it.
    Ready,
    /// Its client was renamed to its run name: it belongs to that run (or to a `pool down`
    /// removing it), whatever state its containers are in.
    Claimed,
    /// Unclaimed, and its server or client stopped (e.g. an engine restart): of no use.
    Stopped,
}

impl PoolState {
    /// As shown by `didx pool`.
    pub fn as_str(self) -> &'static str {
        match self {
            PoolState::Starting => "starting",
            PoolState::Ready => "ready",
            PoolState::Claimed => "claimed",
            PoolState::Stopped => "stopped",
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
    /// Starting, ready, claimed or stopped.
    pub state: PoolState,
    /// The filler that started it, `<host>/<lock id>/<pid>/<token>`: `<host>/<lock id>` names
    /// the lock file it held (host name, and a hash of the file's path, device and inode).
    pub filler: Option<String>,
    /// Unix time after which, if still starting, it counts as dead.
    pub deadline: Option<u64>,
    /// Seconds after its start within which it must be claimed, else it ends itself.
    pub idle_timeout: Option<u64>,
    /// Its client: the pooled one, or the claimed one once claimed.
    client: Option<Container>,
}

/// Every pooled environment (all keys, or one), oldest first: one list request.
pub async fn entries(engine: &Engine, key: Option<&str>) -> Result<Vec<PoolEntry>> {
    let label = match key {
        Some(k) => format!("{}={k}", labels::POOL),
        None => labels::POOL.to_string(),
    };
    let filter = std::collections::HashMap::from([("label".to_string(), vec![label])]);
    Ok(entries_of(&engine.containers(filter).await?))
}

/// The pool as read from a container list: pure, the one place states are decided.
fn entries_of(containers: &[ContainerSummary]) -> Vec<PoolEntry> {
    let label = |c: &ContainerSummary, k: &str| c.labels.as_ref().and_then(|l| l.get(k)).cloned();
    let is = |c: &ContainerSummary, r: labels::Role| label(c, labels::ROLE).as_deref() == Some(r.as_str());
    let state = |c: &ContainerSummary| c.state.unwrap_or(CState::EMPTY);
    let stopped = |s: CState| matches!(s, CState::EXITED | CState::DEAD);
    let as_container = |c: &ContainerSummary| Container { name: container_name(c), id: c.id.clone().unwrap_or_default() };
    let mut out: Vec<PoolEntry> = Vec::new();
    for s in containers.iter().filter(|c| is(c, labels::Role::Server)) {
        let (Some(id), Some(key)) = (label(s, labels::ENV), label(s, labels::POOL)) else { continue };
        let pooled_prefix = format!("dind_{id}{POOLED}");
        let pooling_prefix = format!("dind_{id}{POOLING}");
        let (pooled, claimed): (Vec<&ContainerSummary>, Vec<&ContainerSummary>) = containers
            .iter()
            .filter(|c| is(c, labels::Role::Client) && label(c, labels::ENV).as_deref() == Some(id.as_str()))
            .filter(|c| !container_name(c).starts_with(&pooling_prefix))
            .partition(|c| container_name(c).starts_with(&pooled_prefix));
        let pooling = containers
            .iter()
            .find(|c| is(c, labels::Role::Client) && label(c, labels::ENV).as_deref() == Some(id.as_str()) && container_name(c).starts_with(&pooling_prefix));
        // Any client under another name than the pool-only one means a claim won its rename
        // (while a claim swaps in a client with mounts, two may exist: prefer the run name).
        let run_client = claimed.iter().find(|c| container_name(c).contains(CLIENT)).or(claimed.first());
        let (st, client) = match (run_client, pooled.first()) {
            (Some(c), _) => (PoolState::Claimed, Some(*c)),
            (None, p) if stopped(state(s)) || p.copied().or(pooling).is_some_and(|c| stopped(state(c))) => {
                (PoolState::Stopped, p.copied().or(pooling))
            }
            (None, Some(p)) if state(p) == CState::RUNNING && state(s) == CState::RUNNING => (PoolState::Ready, Some(*p)),
            (None, p) => (PoolState::Starting, p.copied().or(pooling)),
        };
        out.push(PoolEntry {
            id: id.clone(),
            key,
            size: label(s, labels::POOL_SIZE).and_then(|v| v.parse().ok()).unwrap_or(1),
            created: label(s, labels::CREATED).and_then(|v| v.parse().ok()),
            server: as_container(s),
            running: state(s) == CState::RUNNING,
            state: st,
            filler: label(s, labels::POOL_FILLER),
            deadline: label(s, labels::POOL_DEADLINE).and_then(|v| v.parse().ok()),
            idle_timeout: label(s, labels::POOL_IDLE).and_then(|v| v.parse().ok()),
            client: client.map(as_container),
        });
    }
    out.sort_by_key(|e| (e.created, e.id.clone()));
    out
}

/// This filler: the lock file it holds (`site`: host and lock file) and itself within it.
#[derive(Debug, Clone)]
struct Filler {
    /// `<host>/<lock id>`.
    site: String,
    /// `<site>/<pid>/<token>`, the label value.
    id: String,
}

/// The `<host>/<lock id>` part of a filler label.
fn site_of(filler: &str) -> Option<&str> {
    let first = filler.find('/')?;
    let second = first + 1 + filler[first + 1..].find('/')?;
    Some(&filler[..second])
}

/// Why an unclaimed entry is provably dead (so `me`, holding the pool lock, may remove it), or
/// `None`. Ready and claimed ones never are; a starting one is when stopped, past its
/// deadline, or started by another filler of the same lock file, which has therefore ended.
fn dead(e: &PoolEntry, me: &Filler, now: u64) -> Option<String> {
    match e.state {
        PoolState::Ready | PoolState::Claimed => None,
        PoolState::Stopped => Some("its containers stopped (an engine restart?)".into()),
        PoolState::Starting => {
            if let Some(d) = e.deadline.filter(|d| now > *d) {
                return Some(format!("still starting {} s past its deadline", now - d));
            }
            let filler = e.filler.as_deref()?;
            (filler != me.id && site_of(filler) == Some(me.site.as_str()))
                .then(|| format!("its filler {filler} (this host and cache directory) has ended"))
        }
    }
}

/// Whether a failed rename means "someone else holds that client or name": 400 (it already
/// has that name), 409 (another container has it), 404 (removed meanwhile), as engine 20.10
/// answers the losers of a rename race.
fn lost_rename(e: &Error) -> bool {
    matches!(status_of(e), Some(400 | 404 | 409))
}

/// Remove an unclaimed environment, first claiming its pooled client (renaming it to its run
/// name) so as never to take one a run claimed meanwhile. `false`: a run won it.
async fn retire(engine: &Engine, e: &PoolEntry) -> Result<bool> {
    if let Some(client) = &e.client
        && let Err(err) = engine.rename(&client.id, &claimed_name(&client.name)).await
    {
        if lost_rename(&err) {
            return Ok(false);
        }
        return Err(err);
    }
    remove(engine, &e.id).await?;
    Ok(true)
}

/// What [`up`](crate::pool::up) did.
#[derive(Debug, Clone, Default)]
pub struct UpReport {
    /// The pool key.
    pub key: String,
    /// Ready environments of this key found.
    pub existing: usize,
    /// Environments of this key other fillers are still starting, counted as on their way.
    pub starting: usize,
    /// Dead environments of this key removed first (id, why).
    pub removed: Vec<(String, String)>,
    /// Environments started now.
    pub started: Vec<String>,
    /// Starts that failed (their resources removed), with the reason.
    pub failed: Vec<String>,
    /// A [`refill`] found the pool brought down ([`down`]) after it was queued, so it started
    /// nothing.
    pub downed: bool,
}

/// The file in didx's cache directory counting [`down`]s (`pool-downs`).
const DOWNS: (&str, &str) = ("pool", "downs");

/// How many times [`down`] has run with this cache directory: what a [`refill`] is queued
/// with, and compares (holding the pool lock, as `down` bumps it) before it starts anything.
pub fn downs() -> u64 {
    crate::cache::read(DOWNS.0, DOWNS.1).and_then(|s| s.trim().parse().ok()).unwrap_or(0)
}

/// Top the pool of `template`'s key up to `size` (1 to [`MAX_SIZE`]) ready environments, at
/// most [`MAX_STARTING`] at a time, and wait until the new ones answer. `template`'s id,
/// volumes and copies are ignored; each new environment gets a fresh id. Dead unclaimed members
/// (stopped, or left starting by a filler that ended) are removed first. On cancellation the
/// environments being started are removed and [`Error::Cancelled`] returned.
pub async fn up(
    engine: &Engine,
    template: &EnvSpec,
    size: usize,
    idle_timeout: Option<Duration>,
    cancel: &Cancel,
    on: &(dyn Fn(Event<'_>) + Send + Sync),
) -> Result<UpReport> {
    fill(engine, template, size, idle_timeout, None, cancel, on).await
}

/// [`up`] for a refill queued after a claim when [`downs`] was `downs_seen`: if a [`down`] ran
/// since (the count moved), the pool was brought down after the refill was queued and nothing
/// is started ([`UpReport::downed`]). Checked holding the pool lock, which `down` holds while
/// it counts and empties: so a refill either ran wholly before that `down` (which then removes
/// what it made) or sees it. (A `down` with another cache directory, or on another host, takes
/// another lock and count: it is not seen.)
pub async fn refill(
    engine: &Engine,
    template: &EnvSpec,
    size: usize,
    idle_timeout: Option<Duration>,
    downs_seen: u64,
    cancel: &Cancel,
    on: &(dyn Fn(Event<'_>) + Send + Sync),
) -> Result<UpReport> {
    fill(engine, template, size, idle_timeout, Some(downs_seen), cancel, on).await
}

async fn fill(
    engine: &Engine,
    template: &EnvSpec,
    size: usize,
    idle_timeout: Option<Duration>,
    downs_seen: Option<u64>,
    cancel: &Cancel,
    on: &(dyn Fn(Event<'_>) + Send + Sync),
) -> Result<UpReport> {
    if size == 0 || size > MAX_SIZE {
        return Err(Error::invalid("pool size", size.to_string(), format!("give 1 to {MAX_SIZE}; didx pool down empties the pool")));
    }
    let lock = lock(cancel, on).await?;
    let key = key(engine, template).await?;
    let mut report = UpReport { key: key.clone(), ..Default::default() };
    if downs_seen.is_some_and(|seen| seen != downs()) {
        report.downed = true;
        return Ok(report);
    }
    let now = now_secs();
    for e in entries(engine, Some(&key)).await? {
        match (e.state, dead(&e, &lock.filler, now)) {
            (PoolState::Claimed, _) => {}
            (PoolState::Ready, _) => report.existing += 1,
            (_, None) => report.starting += 1,
            (_, Some(why)) => {
                // Lost: a run claimed it meanwhile, so it is not ours to remove.
                if retire(engine, &e).await? {
                    report.removed.push((e.id, why));
                }
            }
        }
    }
    let tag = PoolTag { key, size, filler: lock.filler.id.clone(), deadline: 0, idle_timeout: idle_timeout.map(|d| d.as_secs().max(1)) };
    let missing = size.saturating_sub(report.existing + report.starting);
    let tag = &tag;
    let results: Vec<(EnvId, Result<()>)> = futures_util::stream::iter(0..missing)
        .map(|_| async move {
            let mut spec = template.clone();
            spec.id = EnvId::generate();
            spec.volumes.clear();
            // Not begun when cancelled: nothing to remove.
            if cancel.is_cancelled() {
                return (spec.id, Err(Error::Cancelled));
            }
            let r = start_pooled(engine, &spec, tag, cancel, on).await;
            if r.is_err()
                && let Err(rm) = remove(engine, spec.id.as_str()).await
            {
                tracing::warn!(env = %spec.id, error = %rm, "removing a failed pooled start failed");
            }
            (spec.id, r)
        })
        .buffer_unordered(MAX_STARTING)
        .collect()
        .await;
    let mut cancelled = false;
    for (id, r) in results {
        match r {
            Ok(()) => report.started.push(id.to_string()),
            Err(Error::Cancelled) => cancelled = true,
            Err(e) => report.failed.push(format!("{id}: {e}")),
        }
    }
    if cancelled {
        return Err(Error::Cancelled);
    }
    drop(lock);
    Ok(report)
}

/// Start one pooled environment: the server under its final name with the pool's labels, then,
/// once its dockerd answers, the client, created and started under `_pooling_` and then renamed
/// to its pool-only name `_pooled_` (ready). It runs from then on: nothing is paused.
async fn start_pooled(
    engine: &Engine,
    spec: &EnvSpec,
    tag: &PoolTag,
    cancel: &Cancel,
    on: &(dyn Fn(Event<'_>) + Send + Sync),
) -> Result<()> {
    let created = now_secs();
    let tag = PoolTag { deadline: created + spec.ready_timeout.as_secs() + DEADLINE_MARGIN_SECS, ..tag.clone() };
    let name = spec.server_name();
    let tls = TlsMaterial::generate(&[name.as_str()])?;
    let server = recipe::Server { spec, name: &name, tls: &tls, created, pool: Some(&tag), net: None };
    // Held from its start: if this filler dies, the half-started environment ends itself.
    let (id, lease) = start_server(engine, &server, true, cancel, on).await?;
    // No client yet: the probe goes straight to the server.
    let server = Container { name: name.clone(), id: id.clone() };
    wait_ready(engine, &server, None, &tls, spec.ready_timeout, cancel).await?;
    let client = recipe::Client { spec, server_name: &name, created: now_secs(), files: ClientFiles::Upload(&tls), engine_socket: None, pool_key: Some(&tag.key) };
    let client = create_client(engine, &pooling_name(spec), &client).await?;
    engine.start(&client).await?;
    engine.rename(&client, &pooled_name(spec)).await?;
    // Ready: the pool holds it now (its idle timeout bounds how long).
    match lease {
        Some(l) => l.release().await,
        None => Ok(()),
    }
}

/// Claim a ready pooled environment matching `spec`'s key and give it to the caller, its
/// client running under its run name (replaced by one with `spec`'s mounts if it has any).
/// `spec.id` becomes the claimed environment's id. `None`: none is ready. Returns the
/// environment and the pool size to refill to.
pub async fn claim(
    engine: &Engine,
    spec: &mut EnvSpec,
    cancel: &Cancel,
    on: &(dyn Fn(Event<'_>) + Send + Sync),
) -> Result<Option<(Environment, usize, Option<u64>)>> {
    let t0 = std::time::Instant::now();
    let key = key(engine, spec).await?;
    let candidates: Vec<PoolEntry> = entries(engine, Some(&key)).await?.into_iter().filter(|e| e.state == PoolState::Ready).collect();
    for cand in candidates {
        cancel.check()?;
        let Some(pooled) = cand.client.clone() else { continue };
        let run_name = claimed_name(&pooled.name);
        match engine.rename(&pooled.id, &run_name).await {
            Ok(()) => {}
            // Another process (a run, a pool down) claimed it first: try the next.
            Err(e) if lost_rename(&e) => continue,
            Err(e) => return Err(e),
        }
        spec.id = EnvId(cand.id.clone());
        let client = Container { name: run_name, id: pooled.id };
        let env = Environment {
            engine: engine.clone(),
            id: spec.id.clone(),
            server: Some(cand.server.clone()),
            client,
            client_cert_dir: CLIENT_CERT_PATH,
            settled: false,
            leases: Vec::new(),
            exec_as: crate::engine::ExecAs::default(),
            proxy: None,
        };
        match take(engine, spec, env, &key).await {
            Ok(mut env) => {
                // Held from here: a run killed right after its claim leaves nothing. Taking the
                // lease also marks the server claimed (its idle timeout stops); a run that keeps
                // the environment whatever happens releases it at once.
                env.lease().await?;
                if !spec.lease {
                    env.release().await?;
                }
                on(Event::ClientStarted { name: &env.client.name, image: &spec.client_image });
                on(Event::Ready { elapsed: t0.elapsed() });
                return Ok(Some((env, cand.size, cand.idle_timeout)));
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

/// The claimed environment as the run wants it: its client as it runs, or, when `spec` has
/// client mounts, a client made anew with them. The new one is made under a third name first
/// and takes the run name only once the old one is removed, so the environment always has a
/// client under a non-pooled name (it reads as claimed throughout).
async fn take(engine: &Engine, spec: &EnvSpec, mut env: Environment, key: &str) -> Result<Environment> {
    if spec.volumes.is_empty() {
        return Ok(env);
    }
    let server_name = env.inner_server()?.name.clone();
    let client =
        recipe::Client { spec, server_name: &server_name, created: now_secs(), files: ClientFiles::Copied, pool_key: Some(key), engine_socket: None };
    let swapping = format!("dind_{}_claiming_{}", spec.id, spec.cv.as_str());
    let id = create_client(engine, &swapping, &client).await?;
    // Its entrypoint and certificates, from the client it replaces (archives of a few KB).
    for dir in ["/didx", "/certs"] {
        let tar: Vec<bytes::Bytes> = futures_util::TryStreamExt::try_collect(engine.download(&env.client.id, dir)).await?;
        engine.upload(&id, "/", tar.concat()).await?;
    }
    engine.remove_container(&env.client.id).await?;
    engine.rename(&id, &env.client.name).await?;
    env.client.id = id;
    engine.start(&env.client.id).await?;
    Ok(env)
}

/// What [`down`](crate::pool::down) did.
#[derive(Debug, Clone, Default)]
pub struct DownReport {
    /// Environments removed.
    pub removed: Vec<String>,
    /// Environments left, with why (claimed by a run, or still starting by a live filler).
    pub left: Vec<(String, String)>,
}

/// Remove every pooled environment no run has claimed: each ready one only after claiming it
/// (so one a run claims at the same moment is left to that run), each starting one only when
/// provably dead (see the module doc). Waits for the pool lock, so for a local `pool up` under
/// way, answering `cancel` meanwhile.
pub async fn down(engine: &Engine, cancel: &Cancel, on: &(dyn Fn(Event<'_>) + Send + Sync)) -> Result<DownReport> {
    let lock = lock(cancel, on).await?;
    // Counted first, under the lock: a refill queued before this (by a claim) and not yet
    // begun then sees it and starts nothing.
    crate::cache::write(DOWNS.0, DOWNS.1, &(downs() + 1).to_string())?;
    let now = now_secs();
    let entries = entries(engine, None).await?;
    let outcomes = futures_util::future::join_all(entries.iter().map(|e| {
        let me = &lock.filler;
        async move {
            let why_left = match (e.state, dead(e, me, now)) {
                (PoolState::Claimed, _) => "claimed by a run".to_string(),
                (PoolState::Starting, None) => {
                    format!(
                        "still starting (filler {}; deadline in {} s)",
                        e.filler.as_deref().unwrap_or("?"),
                        e.deadline.unwrap_or(now).saturating_sub(now)
                    )
                }
                _ => match retire(engine, e).await {
                    Ok(true) => return Ok(None),
                    Ok(false) => "claimed by a run meanwhile".to_string(),
                    Err(err) => return Err(err),
                },
            };
            Ok(Some(why_left))
        }
    }))
    .await;
    let mut report = DownReport::default();
    for (e, r) in entries.iter().zip(outcomes) {
        match r? {
            None => report.removed.push(e.id.clone()),
            Some(why) => report.left.push((e.id.clone(), why)),
        }
    }
    drop(lock);
    Ok(report)
}

/// The pool lock, held by [`up`] and [`down`] for their whole length (released when dropped),
/// and who this filler is under it.
struct PoolLock {
    _file: std::fs::File,
    filler: Filler,
}

/// Take the pool lock in didx's cache directory, polling so that `cancel` is answered while
/// another process holds it. A symbolic link (or anything but a regular file) planted in its
/// place is refused, not followed.
async fn lock(cancel: &Cancel, on: &(dyn Fn(Event<'_>) + Send + Sync)) -> Result<PoolLock> {
    cancel.check()?;
    let path = crate::cache::dir().unwrap_or_default().join(LOCK_FILE);
    let f = crate::cache::lock(LOCK_FILE, LOCK_POLL, cancel, |path| on(Event::PoolLockWait { path })).await?;
    let meta = f.metadata().map_err(|e| Error::Io { what: format!("locking {}", path.display()), source: e })?;
    let lock_id = Sha256::digest(format!("{}\0{}\0{}", path.display(), meta.dev(), meta.ino()).as_bytes());
    let site = format!("{}/{}", hostname(), &hex::encode(lock_id)[..12]);
    let filler = Filler { id: format!("{site}/{}/{}", std::process::id(), EnvId::generate()), site };
    Ok(PoolLock { _file: f, filler })
}

/// This host's name ('/' never occurs in one; replaced all the same, it separates the filler
/// label's fields).
pub(super) fn hostname() -> String {
    // uname's nodename, which is what gethostname reads on Linux; it cannot fail.
    rustix::system::uname().nodename().to_string_lossy().replace('/', "_")
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
            publish: vec![],
            lease: false,
            address_range: None,
            network: None,
            policy: "anycase".into(),
            owner: String::new(),
            engine_mode: Default::default(),
            store: None,
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
        // Another recipe revision (e.g. a server made before the TLS port was published).
        assert_ne!(key_at(recipe::VERSION - 1, &a, "sha256:1", "sha256:1"), k, "an older recipe");
        let mut p = spec();
        p.publish = vec![crate::spec::PublishSpec::parse("8080:80").unwrap()];
        let kp = key_of(&p, "sha256:1", "sha256:1");
        assert_ne!(kp, k, "a server publishing a port is another shape");
        p.publish = vec![crate::spec::PublishSpec::parse("8081:80").unwrap()];
        assert_ne!(key_of(&p, "sha256:1", "sha256:1"), kp, "another host port");
        let mut st = spec();
        let mount = |v: &str| Some(crate::env::StoreMount { volume: v.into(), engine: "Docker version 20.10.24+dfsg1, build 5d6db84".into(), seal: None });
        st.store = mount("didx-store-20.10.24_dfsg1-overlay2");
        let ks = key_of(&st, "sha256:1", "sha256:1");
        assert_ne!(ks, k, "a server mounting a store is another shape");
        st.store = mount("other-20.10.24_dfsg1-overlay2");
        assert_ne!(key_of(&st, "sha256:1", "sha256:1"), ks, "another store");
        // Word boundaries count: ["--a", "b"] is not ["--ab"].
        let (mut f, mut g) = (spec(), spec());
        f.dockerd_opts = vec!["--a".into(), "b".into()];
        g.dockerd_opts = vec!["--ab".into()];
        assert_ne!(key_of(&f, "x", "x"), key_of(&g, "x", "x"));
    }

    const ME: &str = "host-a/0123456789ab/100/tokmine";

    fn me() -> Filler {
        Filler { site: "host-a/0123456789ab".into(), id: ME.into() }
    }

    fn summary(name: &str, env: &str, role: labels::Role, state: CState, extra: &[(&str, &str)]) -> ContainerSummary {
        let mut l = labels::for_resource(env, role, 1000);
        for (k, v) in extra {
            l.insert(k.to_string(), v.to_string());
        }
        ContainerSummary {
            id: Some(format!("id-{name}")),
            names: Some(vec![format!("/{name}")]),
            labels: Some(l),
            state: Some(state),
            ..Default::default()
        }
    }

    fn server(env: &str, state: CState, filler: &str, deadline: u64) -> ContainerSummary {
        let deadline = deadline.to_string();
        let extra =
            [(labels::POOL, "k1"), (labels::POOL_SIZE, "3"), (labels::POOL_FILLER, filler), (labels::POOL_DEADLINE, deadline.as_str())];
        summary(&format!("dind_{env}_server_latest"), env, labels::Role::Server, state, &extra)
    }

    fn client(name: &str, env: &str, state: CState) -> ContainerSummary {
        summary(name, env, labels::Role::Client, state, &[(labels::POOL, "k1")])
    }

    fn state_of(cs: &[ContainerSummary], env: &str) -> PoolState {
        entries_of(cs).into_iter().find(|e| e.id == env).expect("entry").state
    }

    #[test]
    fn states_follow_the_client_name_one_way() {
        use CState::*;
        let f = "host-b/ffffffffffff/7/tok";
        // No client: starting, whatever the server does before it stops.
        for s in [CREATED, RUNNING] {
            assert_eq!(state_of(&[server("e1", s, f, 0)], "e1"), PoolState::Starting);
        }
        // A client still being made (`_pooling_`): starting, whatever its state.
        for c in [CREATED, RUNNING] {
            let cs = [server("e1", RUNNING, f, 0), client("dind_e1_pooling_latest", "e1", c)];
            assert_eq!(state_of(&cs, "e1"), PoolState::Starting, "pooling client {c}");
        }
        // Renamed to the pool-only name: ready once running; not yet started: starting.
        for (c, want) in [(CREATED, PoolState::Starting), (RUNNING, PoolState::Ready)] {
            let cs = [server("e1", RUNNING, f, 0), client("dind_e1_pooled_latest", "e1", c)];
            assert_eq!(state_of(&cs, "e1"), want, "pooled client {c}");
        }
        // Pooled client but the server is not running: not ready.
        let cs = [server("e1", PAUSED, f, 0), client("dind_e1_pooled_latest", "e1", RUNNING)];
        assert_eq!(state_of(&cs, "e1"), PoolState::Starting);
        // Renamed to the run name: claimed, whatever its state, paused again included.
        for c in [RUNNING, PAUSED, EXITED] {
            let cs = [server("e1", RUNNING, f, 0), client("dind_e1_client_latest", "e1", c)];
            assert_eq!(state_of(&cs, "e1"), PoolState::Claimed, "claimed client {c}");
            let e = &entries_of(&cs)[0];
            assert_eq!(e.client.as_ref().map(|c| c.name.as_str()), Some("dind_e1_client_latest"));
        }
        // A claim swapping in a client with mounts: both clients present, still claimed.
        let cs =
            [server("e1", RUNNING, f, 0), client("dind_e1_client_latest", "e1", PAUSED), client("dind_e1_claiming_latest", "e1", CREATED)];
        assert_eq!(state_of(&cs, "e1"), PoolState::Claimed);
        assert_eq!(entries_of(&cs)[0].client.as_ref().unwrap().name, "dind_e1_client_latest");
        let cs = [server("e1", RUNNING, f, 0), client("dind_e1_claiming_latest", "e1", CREATED)];
        assert_eq!(state_of(&cs, "e1"), PoolState::Claimed);
        // Forging the old "starting" suffix in a --sv changes nothing: names of servers do not count.
        let mut s = server("e1", RUNNING, f, 0);
        s.names = Some(vec!["/dind_e1_server_x_starting".into()]);
        assert_eq!(state_of(&[s, client("dind_e1_pooled_x", "e1", RUNNING)], "e1"), PoolState::Ready);
        // Another environment's pooled name does not make this one's.
        let cs = [server("e1", RUNNING, f, 0), client("dind_e2_pooled_latest", "e1", PAUSED)];
        assert_eq!(state_of(&cs, "e1"), PoolState::Claimed);
        // Stopped (what an engine restart leaves): unclaimed with a stopped server or client.
        for (s, c) in [(EXITED, Some(EXITED)), (EXITED, Some(PAUSED)), (RUNNING, Some(EXITED)), (DEAD, None), (EXITED, None)] {
            let mut cs = vec![server("e1", s, f, 0)];
            cs.extend(c.map(|c| client("dind_e1_pooled_latest", "e1", c)));
            assert_eq!(state_of(&cs, "e1"), PoolState::Stopped, "server {s}, client {c:?}");
        }
        // A stopped claimed one is still its run's.
        let cs = [server("e1", EXITED, f, 0), client("dind_e1_client_latest", "e1", EXITED)];
        assert_eq!(state_of(&cs, "e1"), PoolState::Claimed);
        // Containers without the pool label on the server, or other roles, are no entries.
        let mut plain = server("e3", RUNNING, f, 0);
        plain.labels.as_mut().unwrap().remove(labels::POOL);
        assert!(entries_of(&[plain, client("dind_e3_pooled_latest", "e3", PAUSED)]).is_empty());
    }

    #[test]
    fn entries_carry_labels_and_sort_oldest_first() {
        let f = "host-b/ffffffffffff/7/tok";
        let mut a = server("ea", CState::RUNNING, f, 1234);
        a.labels.as_mut().unwrap().insert(labels::CREATED.into(), "2000".into());
        let b = server("eb", CState::RUNNING, f, 99);
        let es = entries_of(&[a, b]);
        assert_eq!(es.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(), ["eb", "ea"]);
        assert_eq!((es[1].size, es[1].deadline, es[1].filler.as_deref(), es[1].key.as_str()), (3, Some(1234), Some(f), "k1"));
        assert!(es[1].running);
    }

    #[test]
    fn only_provably_dead_environments_may_be_removed() {
        use CState::*;
        let now = 10_000;
        let entry = |cs: &[ContainerSummary]| entries_of(cs).remove(0);
        let pooled = |c| client("dind_e1_pooled_latest", "e1", c);
        // Another host's or another cache directory's filler, within its deadline: alive.
        for f in ["host-b/0123456789ab/100/tok", "host-a/ffffffffffff/100/tok"] {
            assert_eq!(dead(&entry(&[server("e1", RUNNING, f, now + 1)]), &me(), now), None, "{f}");
            assert_eq!(dead(&entry(&[server("e1", CREATED, f, now)]), &me(), now), None, "{f}: created, deadline now");
            assert_eq!(dead(&entry(&[server("e1", RUNNING, f, now), pooled(RUNNING)]), &me(), now), None);
        }
        // Past its deadline: dead, whoever made it.
        assert!(dead(&entry(&[server("e1", RUNNING, "host-b/0123456789ab/1/t", now - 1)]), &me(), now).is_some());
        // Same host and lock file, another filler: that filler ended (we hold the lock).
        let gone = dead(&entry(&[server("e1", RUNNING, "host-a/0123456789ab/99/old", now + 500)]), &me(), now);
        assert!(gone.is_some_and(|w| w.contains("has ended")));
        // This filler's own: alive.
        assert_eq!(dead(&entry(&[server("e1", RUNNING, ME, now + 500)]), &me(), now), None);
        // No filler or deadline label (made by an older didx): never provably dead while running.
        let mut bare = server("e1", RUNNING, "", 0);
        bare.labels.as_mut().unwrap().retain(|k, _| k != labels::POOL_FILLER && k != labels::POOL_DEADLINE);
        assert_eq!(dead(&entry(&[bare]), &me(), now), None);
        // Stopped: dead. Ready and claimed: never, even past the deadline or by an ended filler.
        assert!(dead(&entry(&[server("e1", EXITED, "host-b/x/1/t", now + 500), pooled(EXITED)]), &me(), now).is_some());
        let old = "host-a/0123456789ab/99/old";
        assert_eq!(dead(&entry(&[server("e1", RUNNING, old, 1), pooled(RUNNING)]), &me(), now), None);
        let claimed = client("dind_e1_client_latest", "e1", EXITED);
        assert_eq!(dead(&entry(&[server("e1", EXITED, old, 1), claimed]), &me(), now), None);
    }

    #[test]
    fn names_and_filler_sites() {
        let s = spec();
        assert_eq!(pooled_name(&s), format!("dind_{}_pooled_latest", s.id));
        assert_eq!(claimed_name(&pooled_name(&s)), s.client_name());
        assert_eq!(site_of("h/abc/12/tok"), Some("h/abc"));
        assert_eq!(site_of("h"), None);
        assert_eq!(site_of("h/abc"), None);
    }
}
