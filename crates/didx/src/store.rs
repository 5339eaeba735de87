//! The image store (`--store`): images extracted once into a volume, used read-only by every
//! sandbox whose inner engine is of the same version.
//!
//! A store is one volume per (engine, inner engine version, storage driver), named
//! `<prefix>-<version>-overlay2` and labelled [`labels::STORE`] `=<prefix>` (never
//! `io.didx.managed`: `--clean all` and the sweep leave it). Its `root/` is the data root of a
//! **filler**, a container of the server image whose dockerd runs only while the store is
//! filled or changed: it is given the images the way `--load` gives them (the host's export
//! streamed into `docker load`), then its dockerd is stopped cleanly and the entrypoint
//! publishes a snapshot of the metadata (see `image/entrypoint.sh`). A server started with the
//! store mounts the volume read-only; its entrypoint copies the current snapshot into its own
//! data root and binds each layer's `diff/` read-only, so its engine lists the images at once
//! and what it deletes or writes goes to its own storage.
//!
//! Fills of one store are serialised by a lock in the cache directory (processes sharing it)
//! and by the filler's fixed name (any others: a second filler's create gets 409 and waits
//! until the first is gone, then looks again). Only the overlay2 inner driver is supported; a
//! sandbox with another driver, a `--dkropts` data root or driver, or `--engine host` does
//! without (a note says why) and `--load` loads as before.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bollard::models::{ContainerCreateBody, HostConfig, Mount, MountType};
use futures_util::TryStreamExt;

use crate::archive::{Entry, tar_of};
use crate::cancel::Cancel;
use crate::engine::{Engine, Lease, message_of, status_of};
use crate::env::{ENTRYPOINT, ENTRYPOINT_PATH, EnvId, EnvSpec, STORE_PATH};
use crate::error::{Error, Result};
use crate::isolation::{self, Isolation};
use crate::labels;
use crate::load::HostImage;
use crate::spec::{EngineMode, IsolationMode};

/// The variable naming the stores' prefix (default [`DEFAULT_PREFIX`]): tests and separate
/// users of one engine keep their stores apart with it.
pub const PREFIX_VAR: &str = "DIDX_STORE_PREFIX";
/// The stores' default prefix.
pub const DEFAULT_PREFIX: &str = "didx-store";
/// The one inner storage driver a store holds.
pub const DRIVER: &str = "overlay2";
/// How long a fill waits for another process's filler of the same store to finish.
const CLAIM_WAIT: Duration = Duration::from_secs(30 * 60);

/// The stores' prefix: `DIDX_STORE_PREFIX`, else [`DEFAULT_PREFIX`]. A volume name's
/// characters only (letters, digits, `_ . -`, starting with a letter or digit).
pub fn prefix() -> Result<String> {
    let p = std::env::var(PREFIX_VAR).ok().filter(|p| !p.is_empty()).unwrap_or_else(|| DEFAULT_PREFIX.to_string());
    let ok =
        p.chars().next().is_some_and(|c| c.is_ascii_alphanumeric()) && p.chars().all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
    if !ok {
        return Err(Error::invalid(PREFIX_VAR, p, "letters, digits, '_', '.' and '-', starting with a letter or digit"));
    }
    Ok(p)
}

/// One store: its volume, the inner engine version it is for, the server image its fillers run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Store {
    /// The volume's name, `<prefix>-<version>-overlay2`.
    pub name: String,
    /// The inner engine's version (`20.10.24+dfsg1`).
    pub version: String,
    /// The server image its fillers (and readers) run.
    pub image: String,
    /// Its prefix.
    pub prefix: String,
    /// The `dockerd --version` line of the engine that uses it, when known (empty from
    /// [`list`]).
    pub engine: String,
}

impl Store {
    /// The store for inner engine `version`, filled by `image`.
    pub fn new(prefix: &str, version: &str, image: &str) -> Store {
        let safe: String = version.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' }).collect();
        Store {
            name: format!("{prefix}-{safe}-{DRIVER}"),
            version: version.to_string(),
            image: image.to_string(),
            prefix: prefix.to_string(),
            engine: String::new(),
        }
    }

    /// Its filler's container name: fixed, so that one filler at a time can exist (the claim).
    pub fn filler_name(&self) -> String {
        format!("{}-filler", self.name)
    }

    fn volume_labels(&self) -> HashMap<String, String> {
        HashMap::from([
            (labels::STORE.to_string(), self.prefix.clone()),
            (labels::STORE_VERSION.to_string(), self.version.clone()),
            (labels::STORE_DRIVER.to_string(), DRIVER.to_string()),
            (labels::STORE_IMAGE.to_string(), self.image.clone()),
        ])
    }
}

/// An image the store holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredImage {
    /// Its ID (`sha256:…`), the host engine's too.
    pub id: String,
    /// Its size in bytes (layers it shares with others counted in each).
    pub size: u64,
    /// Its tags.
    pub tags: Vec<String>,
}

/// What a store's current snapshot holds (its `index` file, written by the filler).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Index {
    /// The snapshot's name (`snap-N`).
    pub snapshot: String,
    /// The whole volume's disk use when it was published, in KiB (`du -sk`).
    pub kib: u64,
    /// The SHA-256 of the snapshot's `seal` file (empty for a snapshot made before seals).
    pub seal: String,
    /// Its images.
    pub images: Vec<StoredImage>,
}

impl Index {
    /// Parse an `index` file: `snap-N KIB`, then `ID SIZE [TAG…]` per image.
    pub fn parse(text: &str) -> Option<Index> {
        let mut lines = text.lines();
        let mut head = lines.next()?.split_whitespace();
        let snapshot = head.next()?.to_string();
        let kib = head.next()?.parse().ok()?;
        let seal = head.next().unwrap_or_default().to_string();
        let images = lines
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                let id = w.next()?.to_string();
                let size = w.next()?.parse().ok()?;
                Some(StoredImage { id, size, tags: w.map(str::to_string).collect() })
            })
            .collect();
        Some(Index { snapshot, kib, seal, images })
    }

    /// Whether it holds the image with this ID.
    pub fn has(&self, id: &str) -> bool {
        self.images.iter().any(|i| i.id == id)
    }

    /// The stored images `reference` names: a tag (`name` alone means `name:latest`), or an ID,
    /// whole or its first 12 or more hex digits.
    pub fn find(&self, reference: &str) -> Vec<&StoredImage> {
        let tag = if reference.rsplit('/').next().is_some_and(|last| last.contains(':')) {
            reference.to_string()
        } else {
            format!("{reference}:latest")
        };
        let hex = reference.strip_prefix("sha256:").unwrap_or(reference);
        let by_id = hex.len() >= 12 && hex.chars().all(|c| c.is_ascii_hexdigit());
        self.images.iter().filter(|i| i.tags.contains(&tag) || (by_id && i.id.trim_start_matches("sha256:").starts_with(hex))).collect()
    }
}

/// Progress and decisions of the store, for the caller to report.
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreEvent<'a> {
    /// The store is not used for this sandbox; `--load` loads as it does without.
    NotUsed {
        /// Why.
        reason: &'a str,
    },
    /// Another filler holds the store (or the lock); waiting for it.
    Waiting {
        /// The store.
        store: &'a str,
    },
    /// Images are being put into the store.
    Filling {
        /// The store.
        store: &'a str,
        /// The images.
        images: &'a [String],
    },
    /// Images were put into the store.
    Filled {
        /// The store.
        store: &'a str,
        /// The images.
        images: &'a [String],
        /// How long the fill took, filler start to snapshot.
        elapsed: Duration,
    },
    /// The sandbox's server mounts the store (read-only).
    Using {
        /// The store.
        store: &'a str,
    },
    /// The store's content no longer matches its seal (or it was never sealed): a sandbox
    /// changed it, or an earlier didx filled it. Its seal is withdrawn, so no sandbox seeds from
    /// it; it is filled anew by the next `--store --load` once no server mounts it.
    Refused {
        /// The store.
        store: &'a str,
        /// What was found.
        why: &'a str,
    },
}

/// A snapshot's seal, as the host engine keeps it (the labels of a volume that holds no data,
/// out of every sandbox's reach): the entrypoint seeds a server from the snapshot only when the
/// digest of its `seal` file is this one and the snapshot and every layer still match what that
/// file lists (see `image/entrypoint.sh`, and the book, docs/src/security.md, "The image store and its seal", for the threat model).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Seal {
    /// The snapshot (`snap-N`).
    pub snapshot: String,
    /// The SHA-256 of its `seal` file, in hex.
    pub digest: String,
}

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
async fn seal_snapshot(engine: &Engine, store: &Store, index: &Index) -> Result<()> {
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
    engine.create_volume(&format!("{}-seal-{}", store.prefix, EnvId::generate()), labels).await?;
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

/// What starts a filler: the isolation to try first and the engine's ID (under which a refusal
/// of `--privileged` is remembered), and how long its dockerd may take to answer.
#[derive(Debug, Clone)]
pub struct FillerShape {
    /// `--isolation`.
    pub isolation: IsolationMode,
    /// The engine's ID.
    pub engine_id: String,
    /// How long its dockerd may take to answer.
    pub ready_timeout: Duration,
}

impl FillerShape {
    /// The shape of `spec`'s server.
    pub fn of(spec: &EnvSpec) -> FillerShape {
        FillerShape { isolation: spec.isolation, engine_id: spec.engine_id.clone(), ready_timeout: spec.ready_timeout }
    }

    /// `auto` isolation on `engine`, a 60 s ready timeout.
    pub async fn auto(engine: &Engine) -> Result<FillerShape> {
        let info = engine.info().await?;
        Ok(FillerShape { isolation: IsolationMode::Auto, engine_id: info.id.unwrap_or_default(), ready_timeout: Duration::from_secs(60) })
    }
}

/// The inner engine of server `image`: `dockerd --version`'s line (`Docker version
/// 20.10.24+dfsg1, build 5d6db84`), asked once per image ID (a container that prints it) and
/// remembered in the cache directory.
pub async fn engine_line(engine: &Engine, image: &str) -> Result<String> {
    let id = engine
        .image(image)
        .await?
        .and_then(|i| i.id)
        .ok_or_else(|| Error::Store { store: String::new(), why: format!("its server image {image} is not on the engine") })?;
    if let Some(v) = crate::cache::read("engine-line", &id).map(|v| v.trim().to_string()).filter(|v| parse_version(v).is_some()) {
        return Ok(v);
    }
    let line = probe_version(engine, image).await?;
    let line = line.lines().find(|l| parse_version(l).is_some()).map(str::trim).map(str::to_string).ok_or_else(|| Error::Store {
        store: String::new(),
        why: format!("cannot read the engine version of {image} from `dockerd --version`: {:?}", line.trim()),
    })?;
    if let Err(e) = crate::cache::write("engine-line", &id, &line) {
        tracing::debug!(error = %e, "cannot remember an engine version");
    }
    Ok(line)
}

/// The inner engine version of server `image` (e.g. `20.10.24+dfsg1`; see [`engine_line`]).
pub async fn engine_version(engine: &Engine, image: &str) -> Result<String> {
    let line = engine_line(engine, image).await?;
    Ok(parse_version(&line).unwrap_or_default())
}

/// The version in `dockerd --version`'s line (`Docker version 20.10.24+dfsg1, build 5d6db84`).
pub fn parse_version(line: &str) -> Option<String> {
    let rest = line.split("version ").nth(1)?;
    let v = rest.split([',', ' ', '\n']).next()?.trim();
    (!v.is_empty()).then(|| v.to_string())
}

async fn probe_version(engine: &Engine, image: &str) -> Result<String> {
    let prefix = prefix()?;
    let body = ContainerCreateBody {
        image: Some(image.to_string()),
        entrypoint: Some(vec!["dockerd".to_string(), "--version".to_string()]),
        cmd: Some(vec![]),
        labels: Some(helper_labels(&prefix, "probe")),
        host_config: Some(HostConfig { network_mode: Some("none".to_string()), ..Default::default() }),
        ..Default::default()
    };
    let id = engine.create_container(&format!("{prefix}-probe-{}", EnvId::generate()), body).await?;
    let ran = async {
        engine.start(&id).await?;
        let code = engine.wait(&id).await?;
        let out = engine.logs_tail(&id, 5).await?;
        Ok::<_, Error>((code, out))
    }
    .await;
    if let Err(e) = engine.remove_container(&id).await {
        tracing::warn!(container = %id, error = %e, "cannot remove the engine version probe");
    }
    match ran? {
        (0, out) => Ok(out),
        (code, out) => {
            Err(Error::Store { store: String::new(), why: format!("`dockerd --version` in {image} exited {code}: {}", out.trim()) })
        }
    }
}

fn helper_labels(prefix: &str, role: &str) -> HashMap<String, String> {
    HashMap::from([(labels::STORE.to_string(), prefix.to_string()), (labels::STORE_ROLE.to_string(), role.to_string())])
}

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

/// The store's index as this process last read or filled it, kept in the cache directory for
/// the volume's life (its creation time): a fill skips reading the store when every image is
/// there already. Stale only when another cache directory's didx removed images from it since
/// (`store rm`, `prune`); then the sandbox lacks them and `--load` loads them as without.
fn cached_index(store: &str, created: &str) -> Option<Index> {
    let text = crate::cache::read("store-index", store)?;
    let (stamp, index) = text.split_once('\n')?;
    (stamp == created).then(|| Index::parse(index)).flatten()
}

fn remember_index(store: &str, created: &str, index: &Index) {
    let mut text = format!("{created}\n{} {} {}\n", index.snapshot, index.kib, index.seal);
    for i in &index.images {
        text.push_str(&format!("{} {} {}\n", i.id, i.size, i.tags.join(" ")));
    }
    if let Err(e) = crate::cache::write("store-index", store, &text) {
        tracing::debug!(error = %e, "cannot remember a store's index");
    }
}

/// The store's current index; `None` when its volume does not exist, an empty index when it
/// was never filled. Read through a container that is created, never started (the engine's
/// archive call reads its volumes), then removed.
pub async fn read_index(engine: &Engine, store: &Store) -> Result<Option<Index>> {
    let Some((_, created)) = engine.volume(&store.name).await? else { return Ok(None) };
    let index = read_index_from_volume(engine, store).await?;
    remember_index(&store.name, &created, &index);
    Ok(Some(index))
}

async fn read_index_from_volume(engine: &Engine, store: &Store) -> Result<Index> {
    let body = ContainerCreateBody {
        image: Some(store.image.clone()),
        entrypoint: Some(vec!["true".to_string()]),
        cmd: Some(vec![]),
        labels: Some(helper_labels(&store.prefix, "reader")),
        host_config: Some(HostConfig {
            network_mode: Some("none".to_string()),
            mounts: Some(vec![store_mount(&store.name, true)]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let id = engine.create_container(&format!("{}-reader-{}", store.name, EnvId::generate()), body).await?;
    let read: Result<Vec<bytes::Bytes>> = engine.download(&id, &format!("{STORE_PATH}/index")).try_collect().await;
    if let Err(e) = engine.remove_container(&id).await {
        tracing::warn!(container = %id, error = %e, "cannot remove a store reader");
    }
    let tar = match read {
        Ok(chunks) => chunks.concat(),
        Err(e) if status_of(&e) == Some(404) => return Ok(Index::default()),
        Err(e) => return Err(e),
    };
    let text = first_file(&tar).map_err(|e| Error::io(format!("reading the index of {}", store.name), e))?;
    Index::parse(&text)
        .ok_or_else(|| Error::Store { store: store.name.clone(), why: format!("its index is not readable: {:?}", text.lines().next()) })
}

fn first_file(tar: &[u8]) -> std::io::Result<String> {
    use std::io::Read;
    let mut archive = tar::Archive::new(tar);
    let mut entry = archive.entries()?.next().ok_or_else(|| std::io::Error::other("an empty archive"))??;
    let mut s = String::new();
    entry.read_to_string(&mut s)?;
    Ok(s)
}

fn store_mount(store: &str, read_only: bool) -> Mount {
    Mount {
        target: Some(STORE_PATH.to_string()),
        source: Some(store.to_string()),
        typ: Some(MountType::VOLUME),
        read_only: read_only.then_some(true),
        ..Default::default()
    }
}

/// What a filler does to the store between its start and its commit.
enum Change<'a> {
    /// Load these host images (streamed from the host engine's export).
    Load(&'a [&'a HostImage]),
    /// Remove these references (tags or IDs) from the store.
    Remove(&'a [String]),
}

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

/// Run one filler over `change`: started (held by this process), its dockerd ready, the change
/// made, committed, and gone with its snapshot published. `false` when another filler of the
/// store exists (its name is taken): nothing was done. `starting` is called once the filler runs.
async fn run_filler(
    engine: &Engine,
    store: &Store,
    shape: &FillerShape,
    change: Change<'_>,
    cancel: &Cancel,
    starting: &(dyn Fn() + Send + Sync),
) -> Result<bool> {
    let drain = matches!(change, Change::Remove(_));
    let Some((id, lease)) = start_filler(engine, store, shape, drain).await? else { return Ok(false) };
    starting();
    let work = async {
        wait_filler_ready(engine, &id, shape.ready_timeout, cancel).await?;
        let (mut out, mut err) = (Vec::new(), Vec::new());
        // A removal drained the store as its filler started (no snapshot to seed from): a server
        // mounting it now either started since (it seeded nothing) or seeded before and may be
        // reading the layers. They cannot be told apart, so any refuses the removal; the commit
        // below then publishes the store as it was.
        let mut in_use = Vec::new();
        if drain {
            in_use = users(engine, &store.name).await?.into_iter().filter(|u| *u != store.filler_name()).collect();
        }
        let (what, code) = match change {
            Change::Remove(_) if !in_use.is_empty() => ("nothing", 0),
            Change::Load(images) => {
                let names: Vec<&str> = images.iter().map(|i| i.name.as_str()).collect();
                let argv: Vec<String> = ["docker", "load", "-q"].iter().map(|s| s.to_string()).collect();
                ("docker load", engine.exec_with_input(&id, &argv, engine.export_images(&names), &mut out, &mut err).await?)
            }
            Change::Remove(refs) => {
                let mut argv: Vec<String> = ["docker", "image", "rm"].iter().map(|s| s.to_string()).collect();
                argv.extend(refs.iter().cloned());
                ("docker image rm", engine.exec(&id, &argv, &[], &mut out, &mut err).await?)
            }
        };
        if code != 0 {
            return Err(Error::Store {
                store: store.name.clone(),
                why: format!("{what} in its filler exited {code}: {}", String::from_utf8_lossy(&err).trim()),
            });
        }
        let argv = vec![ENTRYPOINT_PATH.to_string(), "store-commit".to_string()];
        let code = engine.exec(&id, &argv, &[], &mut out, &mut err).await?;
        if code != 0 {
            return Err(Error::Store {
                store: store.name.clone(),
                why: format!("committing the fill exited {code}: {}", String::from_utf8_lossy(&err).trim()),
            });
        }
        // Committed: dockerd is stopping and PID 1 publishes the snapshot once it has ended.
        // Released now, so this process ending does not cut that short.
        lease.release().await?;
        // The published index, read from the filler while it still holds the store's name, and
        // its seal kept on the host engine before the filler may go: another process waiting
        // on the name never sees the snapshot unsealed.
        let (mut index, mut err) = (Vec::new(), Vec::new());
        let argv = vec![ENTRYPOINT_PATH.to_string(), "store-published".to_string()];
        if engine.exec(&id, &argv, &[], &mut index, &mut err).await? == 0 {
            let text = String::from_utf8_lossy(&index);
            let index = Index::parse(&text).ok_or_else(|| Error::Store {
                store: store.name.clone(),
                why: format!("its index is not readable: {:?}", text.lines().next()),
            })?;
            seal_snapshot(engine, store, &index).await?;
            if let Some((_, created)) = engine.volume(&store.name).await? {
                remember_index(&store.name, &created, &index);
            }
            let argv = vec![ENTRYPOINT_PATH.to_string(), "store-sealed".to_string()];
            engine.exec(&id, &argv, &[], &mut Vec::new(), &mut err).await?;
        }
        let status = engine.wait(&id).await.unwrap_or(0);
        let logs = if status == 0 { String::new() } else { engine.logs_tail(&id, 10).await.unwrap_or_default() };
        wait_gone(engine, &id, Instant::now() + Duration::from_secs(60), cancel).await?;
        if status != 0 {
            return Err(Error::Store { store: store.name.clone(), why: format!("its filler exited {status}: {}", logs.trim()) });
        }
        if !in_use.is_empty() {
            return Err(Error::StoreInUse { store: store.name.clone(), containers: in_use });
        }
        Ok(())
    };
    let done = tokio::select! {
        r = work => r,
        () = cancel.cancelled() => Err(Error::Cancelled),
    };
    if let Err(e) = done {
        // Nothing is published: its snapshot is made only after a commit.
        if let Err(rm) = engine.remove_container(&id).await {
            tracing::warn!(filler = %id, error = %rm, "cannot remove a failed store filler");
        }
        return Err(e);
    }
    Ok(true)
}

/// Create and start the store's filler, held by this process from its start; `None` when its
/// name is taken (another filler runs). `auto` isolation falls back to the caps profile as a
/// server's does.
async fn start_filler(engine: &Engine, store: &Store, shape: &FillerShape, drain: bool) -> Result<Option<(String, Lease)>> {
    let filler = crate::env::Filler { store: &store.name, prefix: &store.prefix, image: &store.image, drain };
    let name = store.filler_name();
    let mut iso = crate::env::first_isolation(engine, shape.isolation, &shape.engine_id, &store.image, &store.name).await?;
    let files = tar_of(&[Entry { path: "didx/entrypoint", mode: 0o755, data: ENTRYPOINT.as_bytes() }])?;
    loop {
        let id = match engine.create_container(&name, crate::env::held(filler.body(&iso))).await {
            Ok(id) => id,
            Err(e) if status_of(&e) == Some(409) => return Ok(None),
            Err(e) => match message_of(&e).and_then(|m| iso.drop_unknown(m)) {
                Some(_) => continue,
                None => return Err(e),
            },
        };
        let started = async {
            engine.start(&id).await?;
            let mut lease = engine.attach_lease(&id).await?;
            engine.upload(&id, "/", files.clone()).await?;
            lease.go().await?;
            Ok::<_, Error>(lease)
        }
        .await;
        match started {
            Ok(lease) => return Ok(Some((id, lease))),
            Err(e) => {
                engine.remove_container(&id).await?;
                let msg = message_of(&e).unwrap_or_default().to_string();
                if iso == Isolation::Privileged && isolation::is_caps_refusal(&msg) && shape.isolation != IsolationMode::Privileged {
                    isolation::remember_refusal(&shape.engine_id);
                    iso = Isolation::caps_profile_on(engine, &shape.engine_id, &store.image, &store.name).await?;
                    continue;
                }
                return Err(e);
            }
        }
    }
}

/// Poll `docker version` in the filler until its dockerd answers.
async fn wait_filler_ready(engine: &Engine, id: &str, timeout: Duration, cancel: &Cancel) -> Result<()> {
    let deadline = Instant::now() + timeout;
    let argv: Vec<String> = ["docker", "version", "--format", "{{.Server.Version}}"].iter().map(|s| s.to_string()).collect();
    loop {
        cancel.check()?;
        let (mut out, mut err) = (tokio::io::sink(), Vec::new());
        let last = match engine.exec(id, &argv, &[], &mut out, &mut err).await {
            Ok(0) => return Ok(()),
            Ok(code) => format!("docker version exited {code}: {}", String::from_utf8_lossy(&err).trim()),
            Err(e) => e.to_string(),
        };
        if Instant::now() >= deadline {
            let logs = engine.logs_tail(id, 10).await.unwrap_or_default();
            return Err(Error::NotReady { name: id.to_string(), timeout, last_probe: last, logs });
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Wait until container `name` is gone (removed), polling; an error after `deadline`.
async fn wait_gone(engine: &Engine, name: &str, deadline: Instant, cancel: &Cancel) -> Result<()> {
    loop {
        if engine.inspect_if_exists(name).await?.is_none() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::Store { store: name.to_string(), why: "its filler did not go away in time".to_string() });
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(200)) => {}
            () = cancel.cancelled() => return Err(Error::Cancelled),
        }
    }
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

/// The containers that mount volume `store` (its readers excepted: they never run).
async fn users(engine: &Engine, store: &str) -> Result<Vec<String>> {
    let filter = HashMap::from([("volume".to_string(), vec![store.to_string()])]);
    Ok(engine
        .containers(filter)
        .await?
        .into_iter()
        .filter(|c| c.labels.as_ref().and_then(|l| l.get(labels::STORE_ROLE)).map(String::as_str) != Some("reader"))
        .filter_map(|c| c.names.and_then(|n| n.first().map(|n| n.trim_start_matches('/').to_string())))
        .collect())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_dockerd_s_line() {
        assert_eq!(parse_version("Docker version 20.10.24+dfsg1, build 5d6db84\n").as_deref(), Some("20.10.24+dfsg1"));
        assert_eq!(parse_version("Docker version 26.1.5+dfsg1, build 411e817").as_deref(), Some("26.1.5+dfsg1"));
        assert_eq!(parse_version("dockerd: not found"), None);
    }

    #[test]
    fn a_store_is_named_by_prefix_version_and_driver() {
        let s = Store::new("didx-store", "20.10.24+dfsg1", "didx/dind:local");
        assert_eq!(s.name, "didx-store-20.10.24_dfsg1-overlay2");
        assert_eq!(s.filler_name(), "didx-store-20.10.24_dfsg1-overlay2-filler");
        let l = s.volume_labels();
        assert_eq!(l[labels::STORE], "didx-store");
        assert_eq!(l[labels::STORE_VERSION], "20.10.24+dfsg1");
        assert!(!l.contains_key(labels::MANAGED), "--clean all must leave stores");
    }

    #[test]
    fn the_index_lists_images_and_finds_them_by_tag_or_id() {
        let text = "snap-3 206440\nsha256:1920239 209982147 exp/two:1\nsha256:1b6f9d0750fc9e53 204739261 didx/dind-busybox:local b:latest\nsha256:8e08 5\n";
        let i = Index::parse(text).unwrap();
        assert_eq!((i.snapshot.as_str(), i.kib, i.images.len()), ("snap-3", 206440, 3));
        assert_eq!(i.images[1].tags, ["didx/dind-busybox:local", "b:latest"]);
        assert!(i.images[2].tags.is_empty());
        assert!(i.has("sha256:1920239") && !i.has("sha256:19"));
        assert_eq!(i.find("exp/two:1").len(), 1);
        assert_eq!(i.find("b").len(), 1, "a name alone is :latest");
        assert_eq!(i.find("exp/two").len(), 0);
        assert_eq!(i.find("1b6f9d0750fc").len(), 1);
        assert_eq!(i.find("sha256:1b6f9d0750fc9e53").len(), 1);
        assert_eq!(i.find("1b6f").len(), 0, "too short to be an ID");
        assert_eq!(Index::parse(""), None);
        assert_eq!(Index::parse("snap-1 x"), None);
    }

    #[test]
    fn the_prefix_is_a_volume_name_s() {
        crate::cache::tests::with_cache(|_| {
            assert_eq!(prefix().unwrap(), DEFAULT_PREFIX);
            unsafe { std::env::set_var(PREFIX_VAR, "t-1.x_y") };
            assert_eq!(prefix().unwrap(), "t-1.x_y");
            unsafe { std::env::set_var(PREFIX_VAR, "-bad") };
            assert!(prefix().is_err());
            unsafe { std::env::set_var(PREFIX_VAR, "a/b") };
            assert!(prefix().is_err());
            unsafe { std::env::remove_var(PREFIX_VAR) };
        });
    }
}
