//! The proxies' directories (`<cache>/dood/<id>`): opened without following a link and refused
//! unless private, each recording the kernel its proxy runs on, and swept once their proxy is
//! gone (a killed run's included).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A `dood/<id>` directory younger than this is never swept (its proxy may be starting).
const SWEEP_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// The file in `dood/<id>` naming the kernel (boot id) whose process serves its socket.
pub(super) const KERNEL_FILE: &str = "kernel";

/// This kernel's boot id (the same in every container of this machine; another machine's
/// differs).
pub(super) fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// Open directory `path` without following a symbolic link, refusing one that is a link, not
/// a directory, not this user's, or writable by group or others (where another user could
/// swap in what the proxy's socket then appears through). The error names the path and fix.
pub(super) fn open_private_dir(path: &Path) -> Result<std::fs::File> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let bad = |why: String| Error::ProxyDirUnsafe { path: path.display().to_string(), why };
    if let Ok(meta) = std::fs::symlink_metadata(path)
        && meta.file_type().is_symlink()
    {
        let to = std::fs::read_link(path).map(|t| t.display().to_string()).unwrap_or_default();
        return Err(bad(format!("is a symbolic link (to {to}), which didx does not follow; remove it")));
    }
    let dir = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) | Some(libc::ENOTDIR) => bad("is not a directory (a symbolic link?), which didx does not follow; remove it".into()),
            _ => Error::io(format!("opening the engine proxy's directory {}", path.display()), e),
        })?;
    let meta = dir.metadata().map_err(|e| Error::io(format!("inspecting {}", path.display()), e))?;
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        return Err(bad(format!("belongs to user {}, not to didx's user {me}; remove it", meta.uid())));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(bad(format!("is writable by group or others (mode {:o}); remove it or chmod go-w it", meta.mode() & 0o7777)));
    }
    Ok(dir)
}

/// `name` inside the directory open as `dir`, as a path that reaches it through the open
/// descriptor (never through a link swapped in since it was opened).
pub(super) fn at(dir: &std::fs::File, name: &str) -> PathBuf {
    use std::os::fd::AsRawFd;
    PathBuf::from(format!("/proc/self/fd/{}/{name}", dir.as_raw_fd()))
}

/// Remove the `dood/<id>` directories (other than `keep`) of proxies that are gone: this
/// kernel's (its recorded boot id, or none recorded), older than [`SWEEP_GRACE`], and whose
/// socket is absent or refuses a connection (a unix socket's listener ends with its process,
/// however the process ended: `kill -9` included). A directory of a live proxy of any didx
/// process, on any engine, answers and stays; another machine's (a shared cache directory) is
/// left. Returns the ids removed.
pub(super) async fn sweep_dirs(dood: &std::fs::File, keep: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(at(dood, "")) else { return vec![] };
    let boot = boot_id();
    let mut swept = Vec::new();
    for entry in entries.flatten() {
        let Some(id) = entry.file_name().to_str().map(str::to_string) else { continue };
        if id == keep || id.is_empty() || !id.chars().all(|c| c.is_ascii_alphanumeric()) {
            continue;
        }
        let Ok(meta) = std::fs::symlink_metadata(entry.path()) else { continue };
        let young = meta.modified().ok().and_then(|m| m.elapsed().ok()).is_none_or(|age| age < SWEEP_GRACE);
        if !meta.is_dir() || young {
            continue;
        }
        let kernel = crate::cache::open_read(&entry.path().join(KERNEL_FILE)).and_then(std::io::read_to_string);
        if kernel.is_ok_and(|k| k.trim() != boot) {
            continue;
        }
        let connect = tokio::time::timeout(std::time::Duration::from_secs(1), tokio::net::UnixStream::connect(entry.path().join("docker.sock"))).await;
        let gone =
            matches!(connect, Ok(Err(ref e)) if matches!(e.kind(), std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound));
        if !gone {
            continue;
        }
        match std::fs::remove_dir_all(entry.path()) {
            Ok(()) => swept.push(id),
            Err(e) => tracing::warn!(dir = %entry.path().display(), error = %e, "cannot remove a dead engine proxy's directory"),
        }
    }
    if !swept.is_empty() {
        tracing::debug!(ids = ?swept, "directories of dead engine proxies removed");
    }
    swept
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory for one test.
    fn scratch(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("didx-dood-unit-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_link_or_a_directory_others_may_write_is_refused_as_the_proxy_s_directory() {
        use std::os::unix::fs::PermissionsExt;
        let d = scratch("private");
        let target = d.join("target");
        std::fs::create_dir(&target).unwrap();
        std::os::unix::fs::symlink(&target, d.join("link")).unwrap();
        let err = open_private_dir(&d.join("link")).unwrap_err().to_string();
        assert!(err.contains("symbolic link") && err.contains("remove it"), "{err}");
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = open_private_dir(&target).unwrap_err().to_string();
        assert!(err.contains("writable by group or others"), "{err}");
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o700)).unwrap();
        let dir = open_private_dir(&target).unwrap();
        std::fs::write(at(&dir, "f"), "x").unwrap();
        assert!(target.join("f").exists(), "a path through the open descriptor reaches the directory");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[tokio::test]
    async fn only_directories_of_gone_proxies_of_this_kernel_are_swept() {
        let d = scratch("sweep");
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        let mk = |id: &str, kernel: Option<&str>| {
            let p = d.join(id);
            std::fs::create_dir(&p).unwrap();
            if let Some(k) = kernel {
                std::fs::write(p.join(KERNEL_FILE), k).unwrap();
            }
            p
        };
        let dead = mk("dead", Some(&boot_id()));
        drop(std::os::unix::net::UnixListener::bind(dead.join("docker.sock")).unwrap()); // its listener is gone
        let live = mk("live", Some(&boot_id()));
        let _listener = std::os::unix::net::UnixListener::bind(live.join("docker.sock")).unwrap();
        let nosocket = mk("nosocket", None);
        let elsewhere = mk("elsewhere", Some("another-machine"));
        let young = mk("young", Some(&boot_id()));
        let keep = mk("mine", Some(&boot_id()));
        for p in [&dead, &live, &nosocket, &elsewhere, &keep] {
            std::fs::File::open(p).unwrap().set_modified(old).unwrap();
        }
        let dood = open_private_dir(&d).unwrap();
        let mut swept = sweep_dirs(&dood, "mine").await;
        swept.sort();
        assert_eq!(swept, ["dead", "nosocket"]);
        assert!(live.exists() && elsewhere.exists() && young.exists() && keep.exists());
        std::fs::remove_dir_all(&d).unwrap();
    }
}
