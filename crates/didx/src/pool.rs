//! The warm pool: environments started ahead of time, dockerd up and certificates made, that a
//! start claims in tens of milliseconds ([`SandboxBuilder::start_pooled`], a
//! [`Session`](crate::session::Session) with `pooled(true)`). [`up`] fills it, [`down`] empties
//! it, [`entries`] lists it; a [`Refill`] tops it up after a claim.
//!
//! Which pool: this process's, [`name`] (`DIDX_POOL_NAME`), read once by each call here and
//! by each pooled start; a [`Refill`] tops up the pool its claim came from.
//!
//! A pooled environment moves one way only — starting → ready → claimed — and a claim is an
//! atomic rename on the engine, so any number of processes or hosts can share one pool.
//!
//! [`SandboxBuilder::start_pooled`]: crate::SandboxBuilder::start_pooled

use std::time::Duration;

use crate::cancel::Cancel;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::ops::start::SandboxOptions;

pub use crate::env::pool::{DownReport, MAX_SIZE, MAX_STARTING, NAME_VAR, PoolEntry, PoolState, Refill, UpReport, name};

/// Top the pool for `options`' server options up to `size` (1 to [`MAX_SIZE`]) ready
/// environments, at most [`MAX_STARTING`] starting at a time, and wait until the new ones
/// answer. `options`' mounts, copies and loads are not part of a pooled environment. Dead
/// unclaimed members are removed first. Holds the pool lock (one filler per host and cache
/// directory) for its whole length. On cancellation the environments being started are
/// removed and [`Error::Cancelled`] returned; ready ones stay.
///
/// A pooled environment nobody claims within `idle_timeout` ends itself and the engine removes
/// it (no later didx call needed): a pool filled by a job that then vanished does not live
/// forever. `None`: it waits for a claim forever. [`DEFAULT_IDLE_TIMEOUT`] is the command's
/// default.
pub async fn up(
    engine: &Engine,
    options: &SandboxOptions,
    size: usize,
    idle_timeout: Option<Duration>,
    cancel: &Cancel,
    on: &(dyn Fn(&Event<'_>) + Send + Sync),
) -> Result<UpReport> {
    up_or_refill(engine, options, size, idle_timeout, None, cancel, on).await
}

/// [`up`] as a refill queued by a claim ([`Refill::downs_seen`] is `downs_seen`): when the
/// pool was brought down ([`down`]) after the claim, nothing is started and the report says
/// so ([`UpReport::downed`]), so a refill still queued never repopulates a pool `down` emptied.
/// (Seen through the cache directory: a `down` using another one, or on another host, is not.)
pub async fn refill(
    engine: &Engine,
    options: &SandboxOptions,
    size: usize,
    idle_timeout: Option<Duration>,
    downs_seen: u64,
    cancel: &Cancel,
    on: &(dyn Fn(&Event<'_>) + Send + Sync),
) -> Result<UpReport> {
    up_or_refill(engine, options, size, idle_timeout, Some(downs_seen), cancel, on).await
}

async fn up_or_refill(
    engine: &Engine,
    options: &SandboxOptions,
    size: usize,
    idle_timeout: Option<Duration>,
    downs_seen: Option<u64>,
    cancel: &Cancel,
    on: &(dyn Fn(&Event<'_>) + Send + Sync),
) -> Result<UpReport> {
    check_size(size)?;
    let name = name()?;
    crate::env::sweep_logged(engine).await;
    // `pool up --store --load IMAGE`: the images go into the store first (pooled servers get
    // images from the store only; a claim's own `--load` loads the rest).
    if !options.loads.is_empty() && !options.store {
        return Err(Error::invalid("--load", options.loads.join(" "), "pooled servers get images from the image store only: add --store"));
    }
    let seeds = crate::ops::load::check(engine, &options.loads).await?;
    let mut spec = options.spec(engine, false, on).await?;
    // `--store`: pooled servers mount the store too (its images as of each one's start).
    options.use_store(engine, &mut spec, &seeds, cancel, on).await?;
    spec.policy = "pool".into();
    let on = |e: crate::env::Event<'_>| on(&Event::Start(e));
    match downs_seen {
        None => crate::env::pool::up(engine, name.as_deref(), &spec, size, idle_timeout, cancel, &on).await,
        Some(downs_seen) => {
            let refill = Refill { name, template: spec, size, idle_timeout, downs_seen };
            crate::env::pool::refill(engine, &refill, cancel, &on).await
        }
    }
}

/// How long a pooled environment waits for a claim by default (`pool up --idle-timeout`).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// Remove every pooled environment no run has claimed (a starting one only when its filler is
/// provably gone); says what it left and why. Counted in the cache directory first (holding
/// the pool lock), so a [`refill`] queued before and not yet begun starts nothing.
pub async fn down(engine: &Engine, cancel: &Cancel, on: &(dyn Fn(&Event<'_>) + Send + Sync)) -> Result<DownReport> {
    let name = name()?;
    crate::env::sweep_logged(engine).await;
    crate::env::pool::down(engine, name.as_deref(), cancel, &|e| on(&Event::Start(e))).await
}

/// Every pooled environment on the engine, oldest first.
pub async fn entries(engine: &Engine) -> Result<Vec<PoolEntry>> {
    crate::env::pool::entries(engine, name()?.as_deref(), None).await
}

/// The refill log in didx's cache directory (`pool-refill.log`), opened for appending: where a
/// caller that runs a [`Refill`] in the background sends its output.
pub fn open_refill_log() -> Result<std::fs::File> {
    crate::cache::open_append("pool-refill.log")
}

/// A pool size is 1 to [`MAX_SIZE`].
pub fn check_size(size: usize) -> Result<()> {
    if size == 0 || size > MAX_SIZE {
        return Err(Error::invalid(
            "pool size",
            size.to_string(),
            format!("give 1 to {MAX_SIZE} (the maximum); didx pool down empties the pool"),
        ));
    }
    Ok(())
}

impl Refill {
    /// How many `pool down`s had run (with this cache directory) before the claim: a refill
    /// given it ([`refill`]) starts nothing once another has run.
    pub fn downs_seen(&self) -> u64 {
        self.downs_seen
    }
    /// The size the pool is topped up to.
    pub fn size(&self) -> usize {
        self.size
    }
    /// The idle timeout of the pool it refills (its new members get the same).
    pub fn idle_timeout(&self) -> Option<Duration> {
        self.idle_timeout
    }
    /// Top the pool up (as [`up`] does, with the claimed environment's options), unless it was
    /// brought down since the claim (see [`refill`]).
    pub async fn run(&self, engine: &Engine, cancel: &Cancel, on: &(dyn Fn(&Event<'_>) + Send + Sync)) -> Result<UpReport> {
        let on = |e: crate::env::Event<'_>| on(&Event::Start(e));
        crate::env::pool::refill(engine, self, cancel, &on).await
    }
}
