//! Filling the pool: `up` and `refill` top it up to its size under the pool lock, dead
//! members removed first, new ones started a few at a time; what a refill carries.

use std::time::Duration;

use futures_util::StreamExt;

use super::down::downs;
use super::entry::{PoolState, entries};
use super::key::key;
use super::lock::lock;
use super::names::{pooled_name, pooling_name};
use super::retire::{dead, retire};
use crate::cancel::Cancel;
use crate::engine::Engine;
use crate::env::event::Event;
use crate::env::id::{Container, EnvId};
use crate::env::list::remove;
use crate::backend::docker::recipe::{self, ClientFiles};
use crate::env::spec::{EnvSpec, PoolTag};
use crate::backend::docker::start::{check_inner_runs, create_client, start_server, wait_ready};
use crate::error::{Error, Result};
use crate::tls::TlsMaterial;

/// The largest pool [`up`](crate::pool::up) keeps (a larger size is a usage error).
pub const MAX_SIZE: usize = 32;

/// How many environments [`up`](crate::pool::up) starts at a time; the rest start as these finish.
pub const MAX_STARTING: usize = 4;

/// A starting environment's deadline is its creation + `--ready-timeout` + this: by then its
/// filler has either made it ready or given up (and removed it).
const DEADLINE_MARGIN_SECS: u64 = 120;

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
    /// A [`refill`](crate::pool::refill) found the pool brought down ([`down`](crate::pool::down)) after it was queued, so it started
    /// nothing.
    pub downed: bool,
}

/// Top pool `name` (`None`: the default pool) for `template`'s key up to `size` (1 to [`MAX_SIZE`])
/// ready environments, at most [`MAX_STARTING`] at a time, and wait until the new ones answer.
/// `template`'s id, volumes and copies are ignored; each new environment gets a fresh id. Dead
/// unclaimed members (stopped, or left starting by a filler that ended) are removed first. On
/// cancellation the environments being started are removed and [`Error::Cancelled`] returned.
pub async fn up(
    engine: &Engine,
    name: Option<&str>,
    template: &EnvSpec,
    size: usize,
    idle_timeout: Option<Duration>,
    cancel: &Cancel,
    on: &(dyn Fn(Event<'_>) + Send + Sync),
) -> Result<UpReport> {
    fill(engine, name, template, size, idle_timeout, None, cancel, on).await
}

/// [`up`] for a refill queued after a claim, when [`downs`] was `refill.downs_seen`: if a [`down`]
/// ran since (the count moved), the pool was brought down after the refill was queued and nothing
/// is started ([`UpReport::downed`]). Checked holding the pool lock, which `down` holds while it
/// counts and empties: so a refill either ran wholly before that `down` (which then removes what it
/// made) or sees it. (A `down` with another cache directory, or on another host, takes another lock
/// and count: it is not seen.)
///
/// [`down`]: super::down::down
pub async fn refill(engine: &Engine, refill: &Refill, cancel: &Cancel, on: &(dyn Fn(Event<'_>) + Send + Sync)) -> Result<UpReport> {
    let r = refill;
    fill(engine, r.name.as_deref(), &r.template, r.size, r.idle_timeout, Some(r.downs_seen), cancel, on).await
}

#[expect(clippy::too_many_arguments, reason = "up's and refill's arguments, and which of them")]
async fn fill(
    engine: &Engine,
    name: Option<&str>,
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
    let lock = lock(name, cancel, on).await?;
    let key = key(engine, name, template).await?;
    let mut report = UpReport { key: key.clone(), ..Default::default() };
    if downs_seen.is_some_and(|seen| seen != downs(name)) {
        report.downed = true;
        return Ok(report);
    }
    let now = crate::util::now_secs();
    for e in entries(engine, name, Some(&key)).await? {
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
    let tag = PoolTag {
        key,
        size,
        filler: lock.filler.id.clone(),
        deadline: 0,
        idle_timeout: idle_timeout.map(|d| d.as_secs().max(1)),
        name: name.map(String::from),
    };
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
/// to its pool-only name `_pooled_` (ready). It runs from then on: nothing is paused. On an
/// engine elsewhere (SSH, TCP) the client starts before the wait, which probes from it.
async fn start_pooled(
    engine: &Engine,
    spec: &EnvSpec,
    tag: &PoolTag,
    cancel: &Cancel,
    on: &(dyn Fn(Event<'_>) + Send + Sync),
) -> Result<()> {
    let created = crate::util::now_secs();
    let tag = PoolTag { deadline: created + spec.ready_timeout.as_secs() + DEADLINE_MARGIN_SECS, ..tag.clone() };
    let name = spec.server_name();
    let tls = TlsMaterial::generate(&[name.as_str()])?;
    let server = recipe::Server { spec, name: &name, tls: &tls, created, pool: Some(&tag), net: None };
    // Held from its start: if this filler dies, the half-started environment ends itself.
    let (id, lease) = start_server(engine, &server, cancel, on).await?;
    let server = Container { name: name.clone(), id: id.clone() };
    let client = recipe::Client { spec, server_name: &name, created: crate::util::now_secs(), files: ClientFiles::Upload(&tls), engine_socket: None, pool_key: Some(&tag.key), pool_name: tag.name.as_deref() };
    // Where the engine's containers are reachable from here the probe goes straight to the
    // server and the client comes once it answers; elsewhere (another machine, another
    // network namespace) the server's address is not this one's: the client comes first and
    // the probe runs in it.
    let local = engine.reaches_containers().await;
    if local {
        wait_ready(engine, &server, None, &tls, spec.ready_timeout, cancel).await?;
    }
    let client = create_client(engine, &pooling_name(spec), &client).await?;
    engine.start(&client).await?;
    if !local {
        wait_ready(engine, &server, Some(&client), &tls, spec.ready_timeout, cancel).await?;
    }
    check_inner_runs(engine, &server, &spec.server_image).await?;
    engine.rename(&client, &pooled_name(spec)).await?;
    // Ready: the pool holds it now (its idle timeout bounds how long).
    lease.release().await
}

/// What tops a pool up again after a claim took one of its environments: the claimed
/// environment's server options and the pool's size.
#[derive(Debug, Clone)]
pub struct Refill {
    pub(crate) name: Option<String>,
    pub(crate) template: EnvSpec,
    pub(crate) size: usize,
    pub(crate) idle_timeout: Option<Duration>,
    pub(crate) downs_seen: u64,
}

impl Refill {
    pub(crate) fn new(name: Option<String>, template: EnvSpec, size: usize, idle_timeout: Option<u64>, downs_seen: u64) -> Refill {
        Refill { name, template, size, idle_timeout: idle_timeout.map(Duration::from_secs), downs_seen }
    }
}
