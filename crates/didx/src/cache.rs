//! didx's local files: the cache directory where per-engine facts are remembered (isolation
//! outcome, failed pulls, the pool lock, the refill log), and fresh private work directories.
//!
//! The cache directory holds client certificates (private keys) and the engine proxy's
//! sockets, so didx uses only one that is private to the user running it: an absolute path
//! (a relative one would reach the engine as a volume name when a path under it is bound
//! into a container), a directory owned by this user and writable by no group or other user
//! (a symbolic link to one is fine; the link itself must be this user's or root's). Anything
//! else is refused with one line saying why and how to fix it ([`checked`]); made when
//! missing, it is made mode 0700.
//!
//! Nothing here follows a symbolic link planted where didx writes: facts are written to a new
//! file (`O_CREAT|O_EXCL|O_NOFOLLOW`, mode 0600) renamed over the old one (a rename replaces a
//! link, it never writes through it), read and appended with `O_NOFOLLOW`, and the cache
//! directory is created mode 0700. Work directories get a random name and are created with
//! `mkdir` (never reusing what is there) mode 0700.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// What [`checked`] calls the cache directory in its refusals.
const WHAT: &str = "cache directory";

/// Where the cache directory is, unchecked: `DIDX_CACHE_DIR` (which must be absolute), else
/// `$XDG_CACHE_HOME/didx` (a relative `XDG_CACHE_HOME` is ignored, as the XDG specification
/// says), else `$HOME/.cache/didx` (`HOME` absolute).
fn location() -> Result<PathBuf> {
    let absolute = |var: &str, d: std::ffi::OsString, fix: &str| {
        let p = PathBuf::from(d);
        if p.is_absolute() {
            Ok(p)
        } else {
            Err(Error::invalid(
                WHAT,
                p.display().to_string(),
                format!("{var} is a relative path, which the engine would take for a volume name; {fix}"),
            ))
        }
    };
    if let Some(d) = std::env::var_os("DIDX_CACHE_DIR").filter(|d| !d.is_empty()) {
        return absolute("DIDX_CACHE_DIR", d, "give an absolute path (e.g. DIDX_CACHE_DIR=\"$PWD/cache\")");
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty() && Path::new(d).is_absolute()) {
        return Ok(PathBuf::from(d).join("didx"));
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(h) => Ok(absolute("HOME", h, "set HOME to an absolute path, or DIDX_CACHE_DIR to one")?.join(".cache").join("didx")),
        None => Err(Error::Io {
            what: "finding didx's cache directory".into(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "set DIDX_CACHE_DIR, XDG_CACHE_HOME or HOME"),
        }),
    }
}

/// This process's effective user id.
fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Why the directory `meta` describes (as followed) may not hold didx's secrets, if it may not;
/// `link_owner` is the owner of the symbolic link `path` is, if it is one. Pure.
fn unsafe_because(meta: (bool, u32, u32), link_owner: Option<u32>, me: u32) -> Option<String> {
    let (is_dir, uid, mode) = meta;
    if let Some(owner) = link_owner.filter(|o| *o != me && *o != 0) {
        return Some(format!(
            "it is a symbolic link owned by uid {owner}, not by you (uid {me}) or root; remove it, or set DIDX_CACHE_DIR to a directory of your own"
        ));
    }
    if !is_dir {
        return Some("it is not a directory; remove it, or set DIDX_CACHE_DIR to a directory of your own".into());
    }
    if uid != me {
        return Some(format!(
            "it is owned by uid {uid}, not by you (uid {me}), and it holds client keys and sockets; set DIDX_CACHE_DIR to a directory of your own"
        ));
    }
    if mode & 0o022 != 0 {
        return Some(format!(
            "it is writable by its group or others (mode {:04o}), and it holds client keys and sockets; chmod go-w it (chmod 700), or set DIDX_CACHE_DIR to a private directory",
            mode & 0o7777
        ));
    }
    None
}

/// Check the cache directory at `path`: `Ok(false)` when absent, `Ok(true)` when fit to use,
/// else the refusal.
fn check(path: &Path) -> Result<bool> {
    let link = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
    };
    let link_owner = link.file_type().is_symlink().then(|| link.uid());
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        // A dangling link: refused (making its target would follow it).
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::invalid(WHAT, path.display().to_string(), "it is a symbolic link to nothing; remove it"));
        }
        Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
    };
    match unsafe_because((meta.is_dir(), meta.uid(), meta.mode()), link_owner, euid()) {
        Some(why) => Err(Error::invalid(WHAT, path.display().to_string(), why)),
        None => Ok(true),
    }
}

/// The cache directory, checked (see the module doc) but not made: a refusal ([`Error::Invalid`],
/// a usage error) when it is unfit. What a start checks before it creates anything.
pub fn checked() -> Result<PathBuf> {
    let d = location()?;
    check(&d)?;
    Ok(d)
}

/// Where didx remembers per-engine facts (see [`checked`]); `None` when it cannot be used
/// (unset, or refused: then nothing is read from it).
pub fn dir() -> Option<PathBuf> {
    checked().ok()
}

/// The cache directory, created (mode 0700) if missing; refused as [`checked`] says.
pub fn ensure_dir() -> Result<PathBuf> {
    let d = location()?;
    if !check(&d)? {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(&d).map_err(|e| Error::io(format!("creating {}", d.display()), e))?;
        // Made by someone else meanwhile, or under a umask that opened it: checked again.
        check(&d)?;
    }
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
    let safe: String = key.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    let target = ensure_dir()?.join(format!("{kind}-{safe}"));
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
/// directory, created mode 0700 by a `mkdir` that fails rather than reuse anything already there
/// (tempfile's, which tries another name when one is taken). Removed (with its contents) when
/// the returned guard drops.
pub fn private_dir(prefix: &str) -> Result<PrivateDir> {
    let base = std::env::temp_dir();
    let dir = tempfile::Builder::new()
        .prefix(&format!("{prefix}-"))
        .permissions(std::fs::Permissions::from_mode(0o700))
        .tempdir_in(&base)
        .map_err(|e| Error::io(format!("creating a private directory in {}", base.display()), e))?;
    // Removed by PrivateDir's Drop, which says when it cannot.
    Ok(PrivateDir(dir.keep()))
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
    crate::util::token()
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
        set_env("DIDX_CACHE_DIR", Some(cache.as_os_str()));
        let r = f(&cache);
        set_env("DIDX_CACHE_DIR", None);
        r
    }

    /// Set (or, with `None`, remove) environment variable `key`, for a test inside
    /// [`with_cache`]. The one unsafe call in the crate, and in its unit tests only: nothing
    /// safe replaces `set_var`, unsafe since edition 2024.
    #[allow(unsafe_code)]
    pub(crate) fn set_env(key: &str, value: Option<&std::ffi::OsStr>) {
        // SAFETY: tests that touch the environment run inside with_cache, which holds ENV.
        unsafe {
            match value {
                Some(v) => std::env::set_var(key, v),
                None => std::env::remove_var(key),
            }
        }
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
    fn only_a_private_directory_of_this_user_is_fit() {
        let me = 1000;
        // (is a directory, owner, mode), the link's owner if a link.
        assert_eq!(unsafe_because((true, me, 0o40700), None, me), None);
        assert_eq!(unsafe_because((true, me, 0o40755), None, me), None, "readable is fine: its files are 0600");
        assert_eq!(unsafe_because((true, me, 0o41700), Some(0), me), None, "a root-owned link to one's own");
        assert_eq!(unsafe_because((true, me, 0o40700), Some(me), me), None);
        for (meta, link, want) in [
            ((true, me, 0o40770), None, "writable by its group or others (mode 0770)"),
            ((true, me, 0o40777), None, "(mode 0777)"),
            ((true, me, 0o41777), None, "(mode 1777)"),
            ((true, me, 0o40702), None, "writable"),
            ((true, 65534, 0o40700), None, "owned by uid 65534, not by you (uid 1000)"),
            ((true, 0, 0o40700), None, "owned by uid 0"),
            ((false, me, 0o100600), None, "not a directory"),
            ((true, me, 0o40700), Some(65534), "symbolic link owned by uid 65534"),
        ] {
            let why = unsafe_because(meta, link, me).unwrap_or_default();
            assert!(why.contains(want), "{meta:?} {link:?}: {why}");
        }
    }

    #[test]
    fn an_unfit_cache_directory_is_refused_and_a_missing_one_made_private() {
        with_cache(|cache| {
            // Missing: fine to check, made 0700 (whatever the umask lets through).
            assert_eq!(checked().unwrap(), cache);
            assert!(!cache.exists());
            assert_eq!(ensure_dir().unwrap(), cache);
            assert_eq!(std::fs::metadata(cache).unwrap().permissions().mode() & 0o777, 0o700);
            // Opened to others: refused everywhere, and nothing is read from it.
            write("k", "a", "x").unwrap();
            std::fs::set_permissions(cache, std::fs::Permissions::from_mode(0o777)).unwrap();
            for e in [checked().unwrap_err(), ensure_dir().unwrap_err(), write("k", "b", "y").unwrap_err(), open_lock("pool.lock").unwrap_err()] {
                assert!(e.is_usage(), "{e}");
                assert!(e.to_string().contains("mode 0777"), "{e}");
            }
            assert_eq!(read("k", "a"), None);
            assert!(!cache.join("k-b").exists() && !cache.join("pool.lock").exists());
            // Foreign-owned (this test runs as root, or cannot chown: then the mode case above is it).
            std::fs::set_permissions(cache, std::fs::Permissions::from_mode(0o700)).unwrap();
            if std::os::unix::fs::chown(cache, Some(65534), None).is_ok() {
                assert!(ensure_dir().unwrap_err().to_string().contains("owned by uid 65534"));
                std::os::unix::fs::chown(cache, Some(euid()), None).unwrap();
            }
            assert!(ensure_dir().is_ok());
            // A link to a directory opened to others: refused; to a private one: fine.
            let open = cache.parent().unwrap().join("open");
            std::fs::create_dir(&open).unwrap();
            std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
            let link = cache.parent().unwrap().join("link");
            std::os::unix::fs::symlink(&open, &link).unwrap();
            set_env("DIDX_CACHE_DIR", Some(link.as_os_str()));
            assert!(ensure_dir().unwrap_err().to_string().contains("mode 0777"));
            std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o700)).unwrap();
            assert_eq!(ensure_dir().unwrap(), link);
            // Relative: refused, nothing made.
            set_env("DIDX_CACHE_DIR", Some("rel-cache".as_ref()));
            let e = ensure_dir().unwrap_err();
            assert!(e.is_usage() && e.to_string().contains("DIDX_CACHE_DIR is a relative path"), "{e}");
            assert!(!Path::new("rel-cache").exists());
            assert_eq!(dir(), None);
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
