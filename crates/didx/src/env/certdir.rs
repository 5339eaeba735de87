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

use super::ClientCerts;
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
    let tmp = dir.join(format!(".{name}.{}.{}", super::EnvId::generate(), std::process::id()));
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
/// `live` (gone from the engine without didx); returns their ids.
pub fn sweep(engine_host: &str, live: &HashSet<String>) -> Vec<String> {
    let Some(base) = crate::cache::dir().map(|d| d.join(ENV_DIR)) else { return vec![] };
    let Ok(entries) = std::fs::read_dir(&base) else { return vec![] };
    let mut swept = Vec::new();
    for entry in entries.flatten() {
        let Some(id) = entry.file_name().to_str().map(str::to_string) else { continue };
        if !safe(&id) || live.contains(&id) {
            continue;
        }
        let engine = crate::cache::open_read(&entry.path().join(ENGINE_FILE)).and_then(|mut f| {
            let mut s = String::new();
            std::io::Read::read_to_string(&mut f, &mut s).map(|_| s)
        });
        if engine.is_ok_and(|e| e == engine_host) {
            remove(&id);
            swept.push(id);
        }
    }
    swept
}
