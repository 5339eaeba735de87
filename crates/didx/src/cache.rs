//! didx's local files: the cache directory where per-engine facts are remembered (isolation
//! outcome, failed pulls, the pool lock, the refill log), and fresh private work directories.
//!
//! Nothing here follows a symbolic link planted where didx writes: facts are written to a new
//! file (`O_CREAT|O_EXCL|O_NOFOLLOW`, mode 0600) renamed over the old one (a rename replaces a
//! link, it never writes through it), read and appended with `O_NOFOLLOW`, and the cache
//! directory is created mode 0700. Work directories get a random name and are created with
//! `mkdir` (never reusing what is there) mode 0700.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Where didx remembers per-engine facts: `DIDX_CACHE_DIR`, else `$XDG_CACHE_HOME/didx`, else
/// `~/.cache/didx`.
pub fn dir() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("DIDX_CACHE_DIR").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d).join("didx"));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("didx"))
}

/// The cache directory, created (mode 0700) if missing.
pub fn ensure_dir() -> Result<PathBuf> {
    let d = dir().ok_or_else(|| Error::Io {
        what: "finding didx's cache directory".into(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "set DIDX_CACHE_DIR, XDG_CACHE_HOME or HOME"),
    })?;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&d).map_err(|e| Error::io(format!("creating {}", d.display()), e))?;
    Ok(d)
}

/// The file in the cache directory that remembers a `kind` of fact about `key` (any text:
/// characters other than ASCII letters and digits become `_`).
pub fn file(kind: &str, key: &str) -> Option<PathBuf> {
    let safe: String = key.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    dir().map(|d| d.join(format!("{kind}-{safe}")))
}

/// Open `path` for reading without following a symbolic link.
pub fn open_read(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW).open(path)
}

/// Read a remembered fact; `None` when absent, unreadable or a symbolic link.
pub fn read(kind: &str, key: &str) -> Option<String> {
    let mut f = open_read(&file(kind, key)?).ok()?;
    let mut s = String::new();
    std::io::Read::read_to_string(&mut f, &mut s).ok()?;
    Some(s)
}

/// When a remembered fact was written (the file's own time, never a link's target's).
pub fn modified(kind: &str, key: &str) -> Option<std::time::SystemTime> {
    std::fs::symlink_metadata(file(kind, key)?).ok().filter(|m| m.is_file())?.modified().ok()
}

/// Remember a fact: written to a fresh file in the cache directory, then renamed over the old
/// one, so a symbolic link planted at that name is replaced, never written through.
pub fn write(kind: &str, key: &str, content: &str) -> Result<()> {
    let target = file(kind, key).ok_or_else(|| Error::Io {
        what: "finding didx's cache directory".into(),
        source: std::io::Error::new(std::io::ErrorKind::NotFound, "set DIDX_CACHE_DIR, XDG_CACHE_HOME or HOME"),
    })?;
    ensure_dir()?;
    let tmp = target.with_file_name(format!(".{}.{}", random_suffix(), std::process::id()));
    let io = |e| Error::io(format!("writing {}", target.display()), e);
    let written = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).mode(0o600).custom_flags(libc::O_NOFOLLOW).open(&tmp)?;
        f.write_all(content.as_bytes())?;
        std::fs::rename(&tmp, &target)
    })();
    if written.is_err() {
        std::fs::remove_file(&tmp).ok();
    }
    written.map_err(io)
}

/// Forget a fact (removes the name itself, a link included; absent is fine).
pub fn forget(kind: &str, key: &str) {
    if let Some(f) = file(kind, key)
        && let Err(e) = std::fs::remove_file(&f)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::debug!(file = %f.display(), error = %e, "cannot forget a cached fact");
    }
}

/// Open `name` in the cache directory for appending (created mode 0600), refusing a symbolic
/// link there.
pub fn open_append(name: &str) -> Result<File> {
    let path = ensure_dir()?.join(name);
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))
}

/// Open (creating, mode 0600) `name` in the cache directory for locking. A symbolic link
/// planted there is refused with a line saying so, and anything but a regular file too
/// (`O_NONBLOCK`: a fifo planted there fails at once instead of blocking the open).
pub fn open_lock(name: &str) -> Result<File> {
    let path = ensure_dir()?.join(name);
    let io = |e| Error::io(format!("locking {}", path.display()), e);
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => Error::io(format!("refusing the lock {}: it is a symbolic link (remove it)", path.display()), e),
            _ => io(e),
        })?;
    if !f.metadata().map_err(io)?.is_file() {
        return Err(io(std::io::Error::other("not a regular file")));
    }
    Ok(f)
}

/// Take the lock `name` in the cache directory (opened as [`open_lock`] does), polling every
/// `poll` while another process holds it: `waiting` is called once, on the first wait, and
/// `cancel` is answered between tries. The kernel releases it when the file is dropped or the
/// process ends, however.
pub async fn lock(name: &str, poll: std::time::Duration, cancel: &crate::Cancel, waiting: impl FnOnce(&Path)) -> Result<File> {
    let f = open_lock(name)?;
    let mut waiting = Some(waiting);
    loop {
        match f.try_lock() {
            Ok(()) => return Ok(f),
            Err(std::fs::TryLockError::WouldBlock) => {
                if let Some(w) = waiting.take() {
                    w(&dir().unwrap_or_default().join(name));
                }
                tokio::time::sleep(poll).await;
                cancel.check()?;
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(Error::io(format!("locking {}", dir().unwrap_or_default().join(name).display()), e));
            }
        }
    }
}

/// A private work directory: a new directory with a random name under the system's temporary
/// directory, created mode 0700 by a `mkdir` that fails rather than reuse anything already there.
/// Removed (with its contents) when the returned guard drops.
pub fn private_dir(prefix: &str) -> Result<PrivateDir> {
    let base = std::env::temp_dir();
    for _ in 0..16 {
        let path = base.join(format!("{prefix}-{}", random_suffix()));
        match std::fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => return Ok(PrivateDir(path)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(format!("creating {}", path.display()), e)),
        }
    }
    Err(Error::io(
        format!("creating a private directory in {}", base.display()),
        std::io::Error::new(std::io::ErrorKind::AlreadyExists, "every random name tried was taken"),
    ))
}

/// A directory made by [`private_dir`], removed on drop.
#[derive(Debug)]
pub struct PrivateDir(PathBuf);

impl PrivateDir {
    /// Its path.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            tracing::warn!(dir = %self.0.display(), error = %e, "cannot remove a work directory");
        }
    }
}

fn random_suffix() -> String {
    crate::env::EnvId::generate().to_string()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// Each test gets its own cache directory through DIDX_CACHE_DIR; tests that set it run
    /// one at a time.
    static ENV: std::sync::Mutex<()> = std::sync::Mutex::new(());

    pub(crate) fn with_cache<T>(f: impl FnOnce(&Path) -> T) -> T {
        let _g = ENV.lock().unwrap_or_else(|p| p.into_inner());
        let d = private_dir("didx-cache-test").unwrap();
        let cache = d.path().join("cache");
        // SAFETY: tests that touch the environment hold ENV.
        unsafe { std::env::set_var("DIDX_CACHE_DIR", &cache) };
        let r = f(&cache);
        unsafe { std::env::remove_var("DIDX_CACHE_DIR") };
        r
    }

    #[test]
    fn facts_round_trip_in_a_private_directory() {
        with_cache(|cache| {
            assert_eq!(read("k", "a/b"), None);
            write("k", "a/b", "one").unwrap();
            write("k", "a/b", "two").unwrap();
            assert_eq!(read("k", "a/b").as_deref(), Some("two"));
            assert_eq!(std::fs::metadata(cache).unwrap().permissions().mode() & 0o777, 0o700);
            let f = file("k", "a/b").unwrap();
            assert_eq!(f.file_name().unwrap(), "k-a_b");
            assert_eq!(std::fs::metadata(&f).unwrap().permissions().mode() & 0o777, 0o600);
            forget("k", "a/b");
            assert_eq!(read("k", "a/b"), None);
        });
    }

    #[test]
    fn a_planted_symbolic_link_redirects_nothing() {
        with_cache(|cache| {
            std::fs::create_dir_all(cache).unwrap();
            let victim = cache.parent().unwrap().join("victim");
            std::fs::write(&victim, "precious").unwrap();
            let planted = file("isolation", "engine").unwrap();
            std::os::unix::fs::symlink(&victim, &planted).unwrap();
            // Reading through the link is refused, so the victim's content is not taken as a fact.
            assert_eq!(read("isolation", "engine"), None);
            assert_eq!(modified("isolation", "engine"), None);
            // Writing replaces the link itself.
            write("isolation", "engine", "caps\n").unwrap();
            assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
            assert!(std::fs::symlink_metadata(&planted).unwrap().is_file());
            // Appending and locking refuse the link.
            std::os::unix::fs::symlink(&victim, cache.join("pool-refill.log")).unwrap();
            assert!(open_append("pool-refill.log").is_err());
            std::os::unix::fs::symlink(&victim, cache.join("pool.lock")).unwrap();
            assert!(open_lock("pool.lock").is_err());
            assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious");
        });
    }

    #[test]
    fn private_dirs_are_fresh_0700_and_removed() {
        let a = private_dir("didx-t").unwrap();
        let b = private_dir("didx-t").unwrap();
        assert_ne!(a.path(), b.path());
        assert_eq!(std::fs::metadata(a.path()).unwrap().permissions().mode() & 0o777, 0o700);
        let p = a.path().to_path_buf();
        std::fs::write(p.join("f"), "x").unwrap();
        drop(a);
        assert!(!p.exists());
    }
}
