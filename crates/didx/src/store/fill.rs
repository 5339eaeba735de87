//! Filling a store: the images it lacks put in by one filler run under the store's lock, an
//! unsealed store emptied first, another process's filler waited for.

use std::time::{Duration, Instant};

use super::event::StoreEvent;
use super::filler::{Change, FillerShape, run_filler, wait_gone};
use super::index::{Index, cached_index, read_index};
use super::seal::{seal, withdraw};
use super::volume::{Store, users};
use crate::cancel::Cancel;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::ops::load::HostImage;

/// How long a fill waits for another process's filler of the same store to finish.
const CLAIM_WAIT: Duration = Duration::from_secs(30 * 60);

/// Put `images` into the store, each unless it already holds its ID: the images it lacks go in
/// one filler run. Returns the names filled (empty when all were there).
pub async fn fill(
    engine: &Engine,
    store: &Store,
    shape: &FillerShape,
    images: &[HostImage],
    cancel: &Cancel,
    on: &(dyn Fn(StoreEvent<'_>) + Send + Sync),
) -> Result<Vec<String>> {
    let _lock = crate::cache::lock(&format!("store-{}.lock", store.name), Duration::from_millis(100), cancel, |_| {
        on(StoreEvent::Waiting { store: &store.name })
    })
    .await?;
    let claim_deadline = Instant::now() + CLAIM_WAIT;
    if let Some((_, created)) = engine.volume(&store.name).await?
        && let Some(cached) = cached_index(&store.name, &created)
        && images.iter().all(|img| cached.has(&img.id))
        && seal(engine, &store.name).await?.is_some_and(|s| s.snapshot == cached.snapshot && s.digest == cached.seal)
    {
        return Ok(Vec::new());
    }
    loop {
        let mut index = read_index(engine, store).await?.unwrap_or_default();
        if !index.snapshot.is_empty() {
            let sealed = seal(engine, &store.name).await?;
            if sealed.is_none_or(|s| s.snapshot != index.snapshot || s.digest != index.seal) {
                // Unsealed: changed since (its seal withdrawn), or filled by an earlier didx. Its
                // content cannot be trusted, so it is filled anew from nothing.
                let in_use = users(engine, &store.name).await?;
                if !in_use.is_empty() {
                    return Err(Error::Store {
                        store: store.name.clone(),
                        why: format!(
                            "its snapshot {} is not sealed (changed since it was filled, or filled by an earlier didx); \
                             it is filled anew once {} no longer mount it",
                            index.snapshot,
                            in_use.join(", ")
                        ),
                    });
                }
                on(StoreEvent::Refused { store: &store.name, why: "not sealed: filling it anew" });
                engine.remove_volume(&store.name).await?;
                withdraw(engine, &store.name).await?;
                index = Index::default();
            }
        }
        let mut missing: Vec<&HostImage> = Vec::new();
        for img in images {
            if !index.has(&img.id) && !missing.iter().any(|m| m.name == img.name) {
                missing.push(img);
            }
        }
        if missing.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<String> = missing.iter().map(|i| i.name.clone()).collect();
        engine.create_volume(&store.name, store.volume_labels()).await?;
        let t0 = Instant::now();
        match run_filler(engine, store, shape, Change::Load(&missing), cancel, &|| {
            on(StoreEvent::Filling { store: &store.name, images: &names })
        })
        .await?
        {
            true => {
                // What counts is what the published snapshot holds.
                let index = read_index(engine, store).await?.unwrap_or_default();
                if let Some(lost) = missing.iter().find(|i| !index.has(&i.id)) {
                    return Err(Error::Store { store: store.name.clone(), why: format!("{} is not in the published snapshot", lost.name) });
                }
                on(StoreEvent::Filled { store: &store.name, images: &names, elapsed: t0.elapsed() });
                return Ok(names);
            }
            false => {
                on(StoreEvent::Waiting { store: &store.name });
                wait_gone(engine, &store.filler_name(), claim_deadline, cancel).await?;
            }
        }
    }
}
