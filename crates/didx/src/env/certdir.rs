//! The client certificate files a host tool needs to reach an environment's inner engine
//! (`DOCKER_CERT_PATH`): `$DIDX_CACHE_DIR/env/<id>/` with `ca.pem`, `cert.pem` and `key.pem`
//! (0600), in directories made mode 0700. Files are written to a fresh file
//! (`O_CREAT|O_EXCL|O_NOFOLLOW`) renamed into place, so a link planted there redirects nothing.
//! Removed with the environment ([`super::remove`]), and swept ([`sweep`]) once the environment
//! is gone from its engine without didx (reaped after `kill -9`, `docker rm -f`). Each directory
//! records the engine it belongs to (`engine`), so a sweep against one engine leaves another's.

use std::collections::HashSet;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::error::{Error, Result};

/// The directory under the cache directory that holds one directory per environment.
const ENV_DIR: &str = "env";
/// The file in an environment's directory naming the engine it runs on.
const ENGINE_FILE: &str = "engine";

/// An environment id as didx makes them (letters and digits): anything else never names a
/// directory here.
fn safe(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric())
}

/// Where environment `id`'s certificate files are (or would be).
pub fn path(id: &str) -> Option<PathBuf> {
    safe(id).then(|| crate::cache::dir().map(|d| d.join(ENV_DIR).join(id)))?
}

/// A directory made mode 0700, or one already there that is a real directory (not a link),
/// made 0700.
fn private(dir: &Path) -> std::io::Result<()> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let meta = std::fs::symlink_metadata(dir)?;
            if !meta.is_dir() {
                return Err(std::io::Error::other("exists and is not a directory (a link?); remove it"));
            }
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        }
        Err(e) => Err(e),
    }
}

/// Write `content` as `dir/name` (mode `mode`): a fresh file renamed into place.
fn put(dir: &Path, name: &str, content: &[u8], mode: u32) -> std::io::Result<()> {
    let tmp = dir.join(format!(".{name}.{}.{}", crate::util::token(), std::process::id()));
    let r = (|| {
        let mut f = OpenOptions::new().write(true).create_new(true).mode(mode).custom_flags(libc::O_NOFOLLOW).open(&tmp)?;
        f.write_all(content)?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(name))
    })();
    if r.is_err() {
        std::fs::remove_file(&tmp).ok();
    }
    r
}

/// Write environment `id`'s client certificate files (on the engine at `engine_host`); returns
/// the directory.
pub fn write(engine_host: &str, id: &str, certs: &ClientCerts) -> Result<PathBuf> {
    let dir = path(id).ok_or_else(|| {
        Error::io(format!("placing the certificates of environment '{id}'"), std::io::Error::other("no cache directory, or an id didx never makes"))
    })?;
    let base = crate::cache::ensure_dir()?;
    let io = |e| Error::io(format!("writing the client certificates to {}", dir.display()), e);
    private(&base.join(ENV_DIR)).map_err(io)?;
    private(&dir).map_err(io)?;
    for (name, content, mode) in [
        (ENGINE_FILE, engine_host, 0o600),
        ("ca.pem", certs.ca_pem.as_str(), 0o644),
        ("cert.pem", certs.cert_pem.as_str(), 0o644),
        ("key.pem", certs.key_pem.as_str(), 0o600),
    ] {
        put(&dir, name, content.as_bytes(), mode).map_err(io)?;
    }
    Ok(dir)
}

/// Remove environment `id`'s directory, if any (a link there is removed, never followed).
pub fn remove(id: &str) {
    let Some(dir) = path(id) else { return };
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => tracing::debug!(dir = %dir.display(), "client certificates removed"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "cannot remove an environment's client certificates"),
    }
}

/// Remove the directories of environments on the engine at `engine_host` that are not in
/// `live` (gone from the engine without didx), as listed at `listed`; a directory written
/// since (an environment started after the listing) is left. Returns their ids.
pub fn sweep(engine_host: &str, live: &HashSet<String>, listed: SystemTime) -> Vec<String> {
    let Some(base) = crate::cache::dir().map(|d| d.join(ENV_DIR)) else { return vec![] };
    let Ok(entries) = std::fs::read_dir(&base) else { return vec![] };
    let mut swept = Vec::new();
    for entry in entries.flatten() {
        let Some(id) = entry.file_name().to_str().map(str::to_string) else { continue };
        if !safe(&id) || live.contains(&id) {
            continue;
        }
        let engine = crate::cache::open_read(&entry.path().join(ENGINE_FILE)).and_then(|mut f| {
            let written = f.metadata()?.modified()?;
            let mut s = String::new();
            std::io::Read::read_to_string(&mut f, &mut s).map(|_| (s, written))
        });
        if engine.is_ok_and(|(e, written)| e == engine_host && written < listed) {
            remove(&id);
            swept.push(id);
        }
    }
    swept
}

/// The environment's client certificate, its key and the CA that signed them and the server's
/// certificate, as PEM. `Debug` leaves the key out.
#[derive(Clone)]
pub struct ClientCerts {
    /// The environment's CA certificate (trust it, and only it, for the inner engine).
    pub ca_pem: String,
    /// The client certificate.
    pub cert_pem: String,
    /// The client certificate's private key.
    pub key_pem: String,
}

impl std::fmt::Debug for ClientCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCerts")
            .field("ca_pem", &self.ca_pem)
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::tests::with_cache;

    fn certs() -> ClientCerts {
        ClientCerts { ca_pem: "CA".into(), cert_pem: "CERT".into(), key_pem: "KEY".into() }
    }

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn written_private_and_removed() {
        with_cache(|cache| {
            let dir = write("unix:///s", "abc123", &certs()).unwrap();
            assert_eq!(dir, cache.join("env/abc123"));
            assert_eq!((mode(cache), mode(&cache.join("env")), mode(&dir)), (0o700, 0o700, 0o700));
            assert_eq!(mode(&dir.join("key.pem")), 0o600);
            assert_eq!(std::fs::read_to_string(dir.join("cert.pem")).unwrap(), "CERT");
            // Written again (a second didx env): replaced, not appended.
            write("unix:///s", "abc123", &certs()).unwrap();
            assert_eq!(std::fs::read_to_string(dir.join("key.pem")).unwrap(), "KEY");
            remove("abc123");
            assert!(!dir.exists());
            // Ids didx never makes name no directory.
            assert!(path("../x").is_none() && path("").is_none());
            assert!(write("unix:///s", "../x", &certs()).is_err());
        });
    }

    #[test]
    fn a_planted_link_redirects_nothing() {
        with_cache(|cache| {
            std::fs::create_dir_all(cache.join("env")).unwrap();
            let victim = cache.parent().unwrap().join("victim-dir");
            std::fs::create_dir(&victim).unwrap();
            std::os::unix::fs::symlink(&victim, cache.join("env/abc123")).unwrap();
            assert!(write("unix:///s", "abc123", &certs()).is_err());
            assert_eq!(std::fs::read_dir(&victim).unwrap().count(), 0);
            // A link at a file's name is replaced, never written through.
            std::fs::remove_file(cache.join("env/abc123")).unwrap();
            let dir = write("unix:///s", "abc123", &certs()).unwrap();
            let target = victim.join("key");
            std::fs::write(&target, "precious").unwrap();
            std::fs::remove_file(dir.join("key.pem")).unwrap();
            std::os::unix::fs::symlink(&target, dir.join("key.pem")).unwrap();
            write("unix:///s", "abc123", &certs()).unwrap();
            assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious");
            assert!(std::fs::symlink_metadata(dir.join("key.pem")).unwrap().is_file());
            remove("abc123");
            assert!(victim.exists());
        });
    }

    #[test]
    fn sweep_takes_only_this_engine_s_gone_environments_listed_before() {
        with_cache(|cache| {
            for (host, id) in [("unix:///a", "live1"), ("unix:///a", "gone1"), ("tcp://127.0.0.1:1", "other1")] {
                write(host, id, &certs()).unwrap();
            }
            let live = HashSet::from(["live1".to_string()]);
            // Written after the listing: an environment started since, left.
            let before = SystemTime::now() - std::time::Duration::from_secs(60);
            assert!(sweep("unix:///a", &live, before).is_empty());
            let listed = SystemTime::now() + std::time::Duration::from_secs(1);
            assert_eq!(sweep("unix:///a", &live, listed), ["gone1"]);
            let left: HashSet<String> = std::fs::read_dir(cache.join("env")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
            assert_eq!(left, HashSet::from(["live1".to_string(), "other1".to_string()]));
        });
    }
}
