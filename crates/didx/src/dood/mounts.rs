//! Paths translated through a container's mounts ([`MountTable`]): a client's bind sources,
//! and, when didx itself runs in a container of the engine, the paths didx hands the engine
//! ([`own_mounts`], [`translate_own`]).

use std::path::{Component, Path, PathBuf};

use crate::engine::Engine;
use crate::error::{Error, Result};

/// A container's mounts as (destination inside it, source on the engine's machine), from its
/// inspected `Mounts`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountTable(Vec<(PathBuf, PathBuf)>);

impl MountTable {
    /// From (destination, source) pairs.
    pub fn new(pairs: impl IntoIterator<Item = (PathBuf, PathBuf)>) -> MountTable {
        MountTable(pairs.into_iter().collect())
    }

    /// From an inspected container.
    pub fn of(inspect: &bollard::models::ContainerInspectResponse) -> MountTable {
        let mounts = inspect.mounts.as_deref().unwrap_or_default();
        MountTable::new(mounts.iter().filter_map(|m| Some((PathBuf::from(m.destination.as_ref()?), PathBuf::from(m.source.as_ref()?)))))
    }

    /// The engine-side path of `path` (absolute, in the container): the source of the mount
    /// whose destination is the longest whole-component prefix of it, joined with the rest.
    /// `path` is normalised lexically first (`.`, `..`, repeated `/`); `None` when no mount
    /// holds it (the engine could not see it) or it is not absolute.
    pub fn translate(&self, path: &str) -> Option<PathBuf> {
        let path = normalise(path)?;
        let (dst, src) = self.0.iter().filter(|(dst, _)| path.starts_with(dst)).max_by_key(|(dst, _)| dst.components().count())?;
        let rest = path.strip_prefix(dst).ok()?;
        Some(if rest.as_os_str().is_empty() { src.clone() } else { src.join(rest) })
    }
}

/// `path` with `.`, `..` and repeated separators resolved lexically; `None` unless absolute.
fn normalise(path: &str) -> Option<PathBuf> {
    let p = Path::new(path);
    if !p.is_absolute() {
        return None;
    }
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    Some(out)
}

/// The id of the container this process runs in, from the engine's bind of its `hostname`
/// file (`/var/lib/docker/containers/<id>/hostname` in `/proc/self/mountinfo`); `None` outside
/// a Docker container.
pub fn own_container_id(mountinfo: &str) -> Option<String> {
    mountinfo.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let (root, at) = (fields.get(3)?, fields.get(4)?);
        if *at != "/etc/hostname" {
            return None;
        }
        let dir = root.strip_suffix("/hostname")?;
        let id = dir.rsplit('/').next()?;
        (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_string())
    })
}

/// The mounts of the container this process runs in when that container is on `engine`
/// (didx in a CI job's container with the engine's socket): the table [`translate_own`] uses.
/// `None` when didx runs on the engine's machine itself (or the engine is another one).
pub async fn own_mounts(engine: &Engine) -> Result<Option<MountTable>> {
    if !engine.is_local() {
        return Ok(None);
    }
    let Some(id) = std::fs::read_to_string("/proc/self/mountinfo").ok().as_deref().and_then(own_container_id) else {
        return Ok(None);
    };
    Ok(engine.inspect_if_exists(&id).await?.map(|i| MountTable::of(&i)))
}

/// `path` (of this process) as the engine's machine names it: itself when didx is not in a
/// container of the engine, else translated through that container's mounts (an error naming
/// the fix when no mount holds it).
pub fn translate_own(own: Option<&MountTable>, what: &str, path: &Path) -> Result<PathBuf> {
    let Some(own) = own else { return Ok(path.to_path_buf()) };
    own.translate(&path.to_string_lossy()).ok_or_else(|| Error::NotOnAMount { what: what.to_string(), path: path.display().to_string() })
}

/// The unit tests' mount table (this module's and the rewrite's): a project, a nested cache
/// and the proxy's socket.
#[cfg(test)]
pub(super) fn example_table() -> MountTable {
    MountTable::new([
        ("/work".into(), "/home/u/proj".into()),
        ("/work/cache".into(), "/srv/cache".into()),
        ("/var/run/docker.sock".into(), "/root/.cache/didx/dood/e1/docker.sock".into()),
    ])
}

#[cfg(test)]
mod tests {
    use super::example_table as table;
    use super::*;

    #[test]
    fn client_paths_translate_through_the_longest_mount_holding_them() {
        let t = table();
        assert_eq!(t.translate("/work"), Some("/home/u/proj".into()));
        assert_eq!(t.translate("/work/src/a.c"), Some("/home/u/proj/src/a.c".into()));
        assert_eq!(t.translate("/work/cache/x"), Some("/srv/cache/x".into()));
        assert_eq!(t.translate("/work//./src/../b"), Some("/home/u/proj/b".into()));
        assert_eq!(t.translate("/var/run/docker.sock"), Some("/root/.cache/didx/dood/e1/docker.sock".into()));
    }

    #[test]
    fn paths_on_no_mount_or_escaping_one_do_not_translate() {
        let t = table();
        assert_eq!(t.translate("/workshop/x"), None, "a prefix must be whole components");
        assert_eq!(t.translate("/work/../etc/passwd"), None, "`..` is resolved before matching");
        assert_eq!(t.translate("/tmp/x"), None);
        assert_eq!(t.translate("relative/x"), None);
    }

    #[test]
    fn the_own_container_is_found_from_its_hostname_bind() {
        let id = "a".repeat(64);
        let info = format!(
            "600 500 0:50 / / rw - overlay overlay rw\n\
             610 600 8:1 /var/lib/docker/containers/{id}/hostname /etc/hostname rw - ext4 /dev/sda1 rw\n"
        );
        assert_eq!(own_container_id(&info), Some(id));
        assert_eq!(own_container_id("22 1 8:1 / / rw - ext4 /dev/sda1 rw\n"), None);
    }
}
