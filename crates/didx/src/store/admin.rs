//! The stores as a whole: which one a sandbox would use, whether it exists, listing them with
//! their users, and `didx store rm` and `prune`.

use std::collections::HashMap;
use std::time::Duration;

use super::event::StoreEvent;
use super::filler::{Change, FillerShape, run_filler};
use super::index::{Index, read_index};
use super::seal::withdraw;
use super::version::{engine_line, parse_version};
use super::volume::{DRIVER, Store, prefix, users};
use crate::cancel::Cancel;
use crate::engine::Engine;
use crate::env::EnvSpec;
use crate::error::{Error, Result};
use crate::labels;
use crate::spec::EngineMode;

/// The store a sandbox of `spec` would use, or why it cannot use one.
pub async fn choose(engine: &Engine, spec: &EnvSpec) -> Result<std::result::Result<Store, String>> {
    if spec.engine_mode == EngineMode::Host {
        return Ok(Err("--engine host has no inner engine".to_string()));
    }
    if spec.storage_driver != DRIVER {
        return Ok(Err(format!("the inner storage driver is {:?}; a store holds {DRIVER} layers only", spec.storage_driver)));
    }
    let sets =
        |o: &String| ["--storage-driver", "-s", "--data-root", "-g", "--graph"].iter().any(|f| o == f || o.starts_with(&format!("{f}=")));
    if spec.dockerd_opts.iter().any(sets) {
        return Ok(Err("--dkropts sets the storage driver or the data root".to_string()));
    }
    let line = engine_line(engine, &spec.server_image).await?;
    let mut store = Store::new(&prefix()?, &parse_version(&line).unwrap_or_default(), &spec.server_image);
    store.engine = line;
    Ok(Ok(store))
}

/// Whether the store's volume exists.
pub async fn exists(engine: &Engine, store: &str) -> Result<bool> {
    Ok(engine.volume(store).await?.is_some())
}

/// A store on the engine, as [`list`] finds it.
#[derive(Debug, Clone)]
pub struct StoreInfo {
    /// The store.
    pub store: Store,
    /// Its current index (`None` when it cannot be read: its filler image is gone).
    pub index: Option<Index>,
    /// The containers mounting it now (servers, a filler), by name.
    pub users: Vec<String>,
    /// When a sandbox of this cache directory last mounted it (Unix seconds; `None`: never
    /// here). Other machines' or cache directories' use is not seen.
    pub last_used: Option<u64>,
}

/// Remember that a sandbox of this cache directory mounts `store` now (see
/// [`StoreInfo::last_used`]).
pub fn note_use(store: &str) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    if let Err(e) = crate::cache::write("store-used", store, &now.to_string()) {
        tracing::debug!(error = %e, "cannot remember a store's use");
    }
}

fn last_used(store: &str) -> Option<u64> {
    crate::cache::read("store-used", store)?.trim().parse().ok()
}

/// Every store of this prefix ([`prefix`]) on the engine.
pub async fn list(engine: &Engine) -> Result<Vec<StoreInfo>> {
    let prefix = prefix()?;
    let filter = HashMap::from([("label".to_string(), vec![format!("{}={prefix}", labels::STORE)])]);
    let mut out = Vec::new();
    for (name, l) in engine.volumes_labelled(filter).await? {
        if l.contains_key(labels::STORE_SEAL) {
            continue;
        }
        let get = |k: &str| l.get(k).cloned().unwrap_or_default();
        let store = Store {
            name: name.clone(),
            version: get(labels::STORE_VERSION),
            image: get(labels::STORE_IMAGE),
            prefix: prefix.clone(),
            engine: String::new(),
        };
        let index = match engine.image(&store.image).await? {
            Some(_) => read_index(engine, &store).await?,
            None => None,
        };
        let users = users(engine, &name).await?;
        let last_used = last_used(&name);
        out.push(StoreInfo { store, index, users, last_used });
    }
    out.sort_by(|a, b| a.store.name.cmp(&b.store.name));
    Ok(out)
}

/// What [`remove`] did to one store.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Removed {
    /// The whole store (its volume) was removed, freeing this many KiB.
    Store {
        /// The store.
        store: String,
        /// Its disk use when last published.
        kib: u64,
    },
    /// These images were removed from the store.
    Images {
        /// The store.
        store: String,
        /// The references removed.
        images: Vec<String>,
        /// Disk use before and after, in KiB.
        kib: (u64, u64),
    },
}

/// `didx store rm`: with no `images`, every store of this prefix (its volume: everything);
/// else those images (tags or IDs) from every store holding them (a filler run each). A store
/// in use by a server is left: [`Error::StoreInUse`].
pub async fn remove(
    engine: &Engine,
    images: &[String],
    cancel: &Cancel,
    on: &(dyn Fn(StoreEvent<'_>) + Send + Sync),
) -> Result<Vec<Removed>> {
    let shape = FillerShape::auto(engine).await?;
    let mut done = Vec::new();
    for info in list(engine).await? {
        if images.is_empty() {
            drop_store(engine, &info, cancel, on).await?;
            done.push(Removed::Store { store: info.store.name.clone(), kib: info.index.map_or(0, |i| i.kib) });
            continue;
        }
        let Some(index) = &info.index else { continue };
        let refs: Vec<String> = images.iter().filter(|r| !index.find(r).is_empty()).cloned().collect();
        if refs.is_empty() {
            continue;
        }
        if let Some(d) = change(engine, &info, &shape, Change::Remove(&refs), cancel, on).await? {
            done.push(d);
        }
    }
    Ok(done)
}

/// `didx store prune`: remove from every store of this prefix the images the host engine no
/// longer has (by ID: a tag rebuilt since leaves its old image here), and the stores left
/// empty.
pub async fn prune(engine: &Engine, cancel: &Cancel, on: &(dyn Fn(StoreEvent<'_>) + Send + Sync)) -> Result<Vec<Removed>> {
    let shape = FillerShape::auto(engine).await?;
    let mut done = Vec::new();
    for info in list(engine).await? {
        let Some(index) = &info.index else { continue };
        let mut stale = Vec::new();
        for img in &index.images {
            if engine.image(&img.id).await?.is_none() {
                stale.push(img.id.clone());
            }
        }
        if stale.len() == index.images.len() {
            drop_store(engine, &info, cancel, on).await?;
            done.push(Removed::Store { store: info.store.name.clone(), kib: index.kib });
        } else if !stale.is_empty()
            && let Some(d) = change(engine, &info, &shape, Change::Remove(&stale), cancel, on).await?
        {
            done.push(d);
        }
    }
    Ok(done)
}

/// Remove a whole store no container mounts: its volume (the engine refuses one in use), the
/// index this cache directory remembers of it, and its lock file (unlinked while held: a
/// process that waited on it and fills the store again is still kept from racing another by
/// the filler's fixed name).
async fn drop_store(engine: &Engine, info: &StoreInfo, cancel: &Cancel, on: &(dyn Fn(StoreEvent<'_>) + Send + Sync)) -> Result<()> {
    refuse_in_use(info)?;
    let name = &info.store.name;
    let lock = format!("store-{name}.lock");
    let _held = crate::cache::lock(&lock, Duration::from_millis(100), cancel, |_| on(StoreEvent::Waiting { store: name })).await?;
    engine.remove_volume(name).await?;
    withdraw(engine, name).await?;
    crate::cache::forget("store-used", name);
    if let Some(dir) = crate::cache::dir()
        && let Err(e) = std::fs::remove_file(dir.join(&lock))
    {
        tracing::debug!(error = %e, "cannot remove a store's lock file");
    }
    Ok(())
}

fn refuse_in_use(info: &StoreInfo) -> Result<()> {
    if info.users.is_empty() { Ok(()) } else { Err(Error::StoreInUse { store: info.store.name.clone(), containers: info.users.clone() }) }
}

/// One filler run over `change` on a store no server uses, under the store's lock.
async fn change(
    engine: &Engine,
    info: &StoreInfo,
    shape: &FillerShape,
    change: Change<'_>,
    cancel: &Cancel,
    on: &(dyn Fn(StoreEvent<'_>) + Send + Sync),
) -> Result<Option<Removed>> {
    // A server reading a layer this removes would lose it: the filler drains the store first
    // and then refuses if any server mounts it (see `run_filler`).
    let store = &info.store;
    let _lock = crate::cache::lock(&format!("store-{}.lock", store.name), Duration::from_millis(100), cancel, |_| {
        on(StoreEvent::Waiting { store: &store.name })
    })
    .await?;
    let before = info.index.as_ref().map_or(0, |i| i.kib);
    let refs = match &change {
        Change::Remove(r) => r.to_vec(),
        Change::Load(_) => Vec::new(),
    };
    if !run_filler(engine, store, shape, change, cancel, &|| {}).await? {
        return Err(Error::Store {
            store: store.name.clone(),
            why: "another filler is changing it; try again when it is done".to_string(),
        });
    }
    let after = read_index(engine, store).await?.map_or(0, |i| i.kib);
    Ok(Some(Removed::Images { store: store.name.clone(), images: refs, kib: (before, after) }))
}
