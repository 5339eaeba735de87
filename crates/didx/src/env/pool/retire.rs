//! Removing unclaimed pool members: which are provably dead, and retiring one by first
//! claiming its client, so one a run claimed meanwhile is never taken.

use super::entry::{PoolEntry, PoolState};
use super::lock::{Filler, site_of};
use super::names::claimed_name;
use crate::engine::{Engine, status_of};
use crate::env::list::remove;
use crate::error::{Error, Result};

/// Why an unclaimed entry is provably dead (so `me`, holding the pool lock, may remove it), or
/// `None`. Ready and claimed ones never are; a starting one is when stopped, past its
/// deadline, or started by another filler of the same lock file, which has therefore ended.
pub(super) fn dead(e: &PoolEntry, me: &Filler, now: u64) -> Option<String> {
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
pub(super) fn lost_rename(e: &Error) -> bool {
    matches!(status_of(e), Some(400 | 404 | 409))
}

/// Remove an unclaimed environment, first claiming its pooled client (renaming it to its run
/// name) so as never to take one a run claimed meanwhile. `false`: a run won it.
pub(super) async fn retire(engine: &Engine, e: &PoolEntry) -> Result<bool> {
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

#[cfg(test)]
mod tests {
    use bollard::models::{ContainerSummary, ContainerSummaryStateEnum as CState};

    use super::super::entry::entries_of;
    use super::super::testing::{client, server};
    use super::*;
    use crate::labels;

    const ME: &str = "host-a/0123456789ab/100/tokmine";

    fn me() -> Filler {
        Filler { site: "host-a/0123456789ab".into(), id: ME.into() }
    }

    #[test]
    fn only_provably_dead_environments_may_be_removed() {
        use CState::*;
        let now = 10_000;
        let entry = |cs: &[ContainerSummary]| entries_of(cs, None).remove(0);
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
}
