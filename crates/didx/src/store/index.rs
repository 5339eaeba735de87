//! A store's index (what its current snapshot holds): parsed, read from the volume through a
//! reader container, and remembered in the cache directory for the volume's life.

use bollard::models::{ContainerCreateBody, HostConfig};
use futures_util::TryStreamExt;

use super::volume::{Store, helper_labels, store_mount};
use crate::engine::{Engine, status_of};
use crate::env::STORE_PATH;
use crate::error::{Error, Result};

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

/// The store's index as this process last read or filled it, kept in the cache directory for
/// the volume's life (its creation time): a fill skips reading the store when every image is
/// there already. Stale only when another cache directory's didx removed images from it since
/// (`store rm`, `prune`); then the sandbox lacks them and `--load` loads them as without.
pub(super) fn cached_index(store: &str, created: &str) -> Option<Index> {
    let text = crate::cache::read("store-index", store)?;
    let (stamp, index) = text.split_once('\n')?;
    (stamp == created).then(|| Index::parse(index)).flatten()
}

pub(super) fn remember_index(store: &str, created: &str, index: &Index) {
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
    let id = engine.create_container(&format!("{}-reader-{}", store.name, crate::util::token()), body).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
