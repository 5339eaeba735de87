//! The pool lock: a file in didx's cache directory held by `up` and `down` for their whole
//! length, and who this filler is under it.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::cancel::Cancel;
use crate::env::event::Event;
use crate::env::id::{EnvId, hostname};
use crate::error::{Error, Result};

/// The pool lock's file in didx's cache directory: `pool.lock`, or `pool-NAME.lock` for a
/// named pool.
const LOCK_BASE: &str = "pool";

/// Between two tries of the pool lock.
const LOCK_POLL: Duration = Duration::from_millis(50);

/// This filler: the lock file it holds (`site`: host and lock file) and itself within it.
#[derive(Debug, Clone)]
pub(super) struct Filler {
    /// `<host>/<lock id>`.
    pub(super) site: String,
    /// `<site>/<pid>/<token>`, the label value.
    pub(super) id: String,
}

/// The `<host>/<lock id>` part of a filler label.
pub(super) fn site_of(filler: &str) -> Option<&str> {
    let first = filler.find('/')?;
    let second = first + 1 + filler[first + 1..].find('/')?;
    Some(&filler[..second])
}

/// The pool lock, held by [`up`] and [`down`] for their whole length (released when dropped),
/// and who this filler is under it.
///
/// [`up`]: super::fill::up
/// [`down`]: super::down::down
pub(super) struct PoolLock {
    _file: std::fs::File,
    pub(super) filler: Filler,
}

/// Take pool `name`'s lock in didx's cache directory, polling so that `cancel` is answered while
/// another process holds it. A symbolic link (or anything but a regular file) planted in its
/// place is refused, not followed.
pub(super) async fn lock(name: Option<&str>, cancel: &Cancel, on: &(dyn Fn(Event<'_>) + Send + Sync)) -> Result<PoolLock> {
    cancel.check()?;
    // Each pool its own lock: fillers of different pools never wait for each other.
    let file = format!("{}.lock", super::names::file_of(LOCK_BASE, name));
    let path = crate::cache::dir().unwrap_or_default().join(&file);
    let f = crate::cache::lock(&file, LOCK_POLL, cancel, |path| on(Event::PoolLockWait { path })).await?;
    let meta = f.metadata().map_err(|e| Error::Io { what: format!("locking {}", path.display()), source: e })?;
    let lock_id = Sha256::digest(format!("{}\0{}\0{}", path.display(), meta.dev(), meta.ino()).as_bytes());
    let site = format!("{}/{}", hostname(), &hex::encode(lock_id)[..12]);
    let filler = Filler { id: format!("{site}/{}/{}", std::process::id(), EnvId::generate()), site };
    Ok(PoolLock { _file: f, filler })
}
