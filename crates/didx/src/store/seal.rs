//! A store's seals: the digest of each published snapshot, kept on the host engine as a
//! labelled volume; sealing a fresh snapshot, reading the newest seal, withdrawing them all.

use std::collections::HashMap;

use super::index::Index;
use super::volume::Store;
use crate::engine::Engine;
use crate::env::Seal;
use crate::error::{Error, Result};
use crate::labels;

fn snapshot_number(snapshot: &str) -> Option<u64> {
    snapshot.strip_prefix("snap-")?.parse().ok()
}

/// The seals the host engine keeps for `store`: (volume, seal), newest snapshot first.
async fn seals(engine: &Engine, store: &str) -> Result<Vec<(String, Seal)>> {
    let filter = HashMap::from([("label".to_string(), vec![format!("{}={store}", labels::STORE_SEAL)])]);
    let mut out: Vec<(String, Seal)> = engine
        .volumes_labelled(filter)
        .await?
        .into_iter()
        .filter_map(|(name, l)| {
            let seal = Seal { snapshot: l.get(labels::STORE_SNAPSHOT)?.clone(), digest: l.get(labels::STORE_DIGEST)?.clone() };
            snapshot_number(&seal.snapshot)?;
            Some((name, seal))
        })
        .collect();
    out.sort_by_key(|(_, s)| std::cmp::Reverse(snapshot_number(&s.snapshot)));
    Ok(out)
}

/// The seal of `store`'s newest sealed snapshot; `None` when it has none (never filled, filled
/// by an earlier didx, or withdrawn after a change was found).
pub async fn seal(engine: &Engine, store: &str) -> Result<Option<Seal>> {
    Ok(seals(engine, store).await?.into_iter().next().map(|(_, s)| s))
}

/// Seal `index`'s snapshot of `store` (just published by a filler of this process): its seal
/// kept on the host engine, the older ones removed.
pub(super) async fn seal_snapshot(engine: &Engine, store: &Store, index: &Index) -> Result<()> {
    if index.seal.len() != 64 || !index.seal.bytes().all(|b| b.is_ascii_hexdigit()) || snapshot_number(&index.snapshot).is_none() {
        return Err(Error::Store { store: store.name.clone(), why: format!("its snapshot {:?} has no seal", index.snapshot) });
    }
    let older = seals(engine, &store.name).await?;
    let labels = HashMap::from([
        (labels::STORE.to_string(), store.prefix.clone()),
        (labels::STORE_SEAL.to_string(), store.name.clone()),
        (labels::STORE_SNAPSHOT.to_string(), index.snapshot.clone()),
        (labels::STORE_DIGEST.to_string(), index.seal.clone()),
    ]);
    engine.create_volume(&format!("{}-seal-{}", store.prefix, crate::util::token()), labels).await?;
    for (name, _) in older {
        engine.remove_volume(&name).await?;
    }
    Ok(())
}

/// Withdraw every seal of `store`: no sandbox seeds from it until a fill seals it anew (the
/// next `--store --load` fills it anew once no server mounts it).
pub async fn withdraw(engine: &Engine, store: &str) -> Result<()> {
    for (name, _) in seals(engine, store).await? {
        engine.remove_volume(&name).await?;
    }
    crate::cache::forget("store-index", store);
    Ok(())
}
