//! Bringing the pool down: every unclaimed environment removed (a ready one only once claimed
//! here, a starting one only when provably dead), counted so a queued refill sees it.

use super::entry::{PoolState, entries};
use super::lock::lock;
use super::retire::{dead, retire};
use crate::cancel::Cancel;
use crate::engine::Engine;
use crate::env::event::Event;
use crate::error::Result;

/// What [`down`](crate::pool::down) did.
#[derive(Debug, Clone, Default)]
pub struct DownReport {
    /// Environments removed.
    pub removed: Vec<String>,
    /// Environments left, with why (claimed by a run, or still starting by a live filler).
    pub left: Vec<(String, String)>,
}

/// The file in didx's cache directory counting [`down`]s (`pool-downs`, `pool-downs-NAME`).
const DOWNS: (&str, &str) = ("pool", "downs");

/// How many times [`down`] has run on pool `name` with this cache directory: what a [`refill`]
/// is queued with, and compares (holding the pool lock, as `down` bumps it) before it starts
/// anything.
///
/// [`refill`]: super::fill::refill
pub fn downs(name: Option<&str>) -> u64 {
    crate::cache::read(DOWNS.0, &downs_key(name)).and_then(|s| s.trim().parse().ok()).unwrap_or(0)
}

/// The count's key: each pool (`name`, `None` for the default one) counts its own `down`s.
fn downs_key(name: Option<&str>) -> String {
    super::names::file_of(DOWNS.1, name)
}

/// Remove every pooled environment of pool `name` no run has claimed: each ready one only after
/// claiming it (so one a run claims at the same moment is left to that run), each starting one only
/// when provably dead (see the module doc). Waits for the pool lock, so for a local `pool up` under
/// way, answering `cancel` meanwhile.
pub async fn down(engine: &Engine, name: Option<&str>, cancel: &Cancel, on: &(dyn Fn(Event<'_>) + Send + Sync)) -> Result<DownReport> {
    let lock = lock(name, cancel, on).await?;
    // Counted first, under the lock: a refill queued before this (by a claim) and not yet
    // begun then sees it and starts nothing.
    crate::cache::write(DOWNS.0, &downs_key(name), &(downs(name) + 1).to_string())?;
    let now = crate::util::now_secs();
    let entries = entries(engine, name, None).await?;
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
