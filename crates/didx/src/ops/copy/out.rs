//! Files out of a member to this machine: `--cp-out CLIENT_PATH:HOST_PATH` after a run's
//! commands, `didx cp ID:PATH HOST_PATH`, [`crate::Sandbox::copy_out`].
//!
//! Targets follow `docker cp`: a host path ending in `/`, or an existing directory, receives
//! the source inside it; otherwise the source is copied *as* that path (its parent must
//! exist). A source directory ending in `/.` copies its contents (the target directory is
//! made when missing).
//!
//! The member's archive passes the same validator as every `--cp` source (setuid bits
//! stripped, devices refused, nothing absolute, climbing out or through a link of its own), into
//! a spool file, before anything is written here. Then every entry's place is checked on this
//! machine — no existing symbolic link (or non-directory) on its way below the target, so no
//! write can land outside it, whatever was there — and only then is it extracted, each entry
//! once more through the `tar` crate's own containment check. Files are the caller's (no
//! ownership is taken from the archive); modes and times are kept.

use std::path::{Component, Path, PathBuf};

use futures_util::StreamExt;

use super::validate::{Placement, Report};
use crate::backend::Backend;
use crate::error::{Error, Result};

/// Where an archive of `from` is extracted here, for a host path `to`: the directory, and the
/// name its top entry takes (copy *as* `to`).
fn destination(from: &str, from_is_dir: bool, to: &Path) -> Result<(PathBuf, Option<String>)> {
    let shown = to.display().to_string();
    let into = shown.ends_with('/') || to.is_dir();
    let contents = from_is_dir && from.ends_with("/.");
    let missing = |what: &str| Error::io(format!("copying {from} to {shown}"), std::io::Error::new(std::io::ErrorKind::NotFound, what.to_string()));
    if contents {
        if !to.is_dir() {
            let parent = to.parent().filter(|p| p.is_dir()).ok_or_else(|| missing("its parent directory does not exist"))?;
            std::fs::create_dir(to).map_err(|e| Error::io(format!("making {shown} (in {})", parent.display()), e))?;
        }
        return Ok((to.to_path_buf(), None));
    }
    if into {
        if !to.is_dir() {
            return Err(missing("no such directory here (a target ending in / must exist)"));
        }
        return Ok((to.to_path_buf(), None));
    }
    let parent = to.parent().filter(|p| p.is_dir()).ok_or_else(|| missing("its parent directory does not exist"))?;
    let name = to.file_name().and_then(|n| n.to_str()).ok_or_else(|| missing("no file name"))?;
    Ok((parent.to_path_buf(), Some(name.to_string())))
}

/// Copy `from` in `member` (see the module documentation) to `to` on this machine.
pub(crate) async fn copy_out(backend: &dyn Backend, member: &str, from: &str, to: &Path) -> Result<Report> {
    let source = from.strip_suffix("/.").unwrap_or(from);
    let source = if source.is_empty() { "/" } else { source };
    let is_dir = backend.is_dir(member, source).await?.ok_or_else(|| {
        Error::io(format!("copying {from} out of {member}"), std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory there"))
    })?;
    let (dest, rename_top) = destination(from, is_dir, to)?;
    let input = backend.copy_out(member, from).map(|r| r.map_err(std::io::Error::other)).boxed();
    let (file, report) = super::spool_stream(input, Placement { dir: String::new(), rename_top }).await?;
    let shown = format!("--cp-out {from}");
    tokio::task::spawn_blocking(move || extract(file, &dest, &shown))
        .await
        .map_err(|e| Error::Task { what: "the copy-out task", source: e })??;
    Ok(report)
}

/// Extract the validated archive `file` under `dest`: every entry's place checked first (see
/// [`check_place`]), then each unpacked (directories last, so that a read-only one does not
/// refuse its own files). `what` names the copy in errors.
pub(crate) fn extract(mut file: std::fs::File, dest: &Path, what: &str) -> Result<()> {
    use std::io::Seek;
    let refused = |entry: &Path, why: String| Error::Refused { source_name: what.to_string(), entry: format!("{:?}", entry.display().to_string()), why };
    let unreadable = |e: std::io::Error| Error::io(format!("reading the archive of {what}"), e);
    {
        let mut archive = tar::Archive::new(&file);
        for entry in archive.entries().map_err(unreadable)? {
            let entry = entry.map_err(unreadable)?;
            let path = entry.path().map_err(unreadable)?.into_owned();
            check_place(dest, &path).map_err(|why| refused(&path, why))?;
        }
    }
    file.rewind().map_err(unreadable)?;
    let mut archive = tar::Archive::new(&file);
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(false);
    archive.set_overwrite(true);
    let mut dirs = Vec::new();
    for entry in archive.entries().map_err(unreadable)? {
        let mut entry = entry.map_err(unreadable)?;
        if entry.header().entry_type().is_dir() {
            dirs.push(entry);
            continue;
        }
        unpack(&mut entry, dest, &refused)?;
    }
    for mut dir in dirs.into_iter().rev() {
        unpack(&mut dir, dest, &refused)?;
    }
    Ok(())
}

fn unpack(entry: &mut tar::Entry<'_, &std::fs::File>, dest: &Path, refused: &dyn Fn(&Path, String) -> Error) -> Result<()> {
    let path = entry.path().map_err(|e| Error::io("reading an entry's path", e))?.into_owned();
    match entry.unpack_in(dest) {
        Ok(true) => Ok(()),
        Ok(false) => Err(refused(&path, "it would land outside the target".into())),
        Err(e) => Err(refused(&path, format!("not written: {e}"))),
    }
}

/// Whether `rel` may be written under `dest`: relative, no `..`, and nothing on its way that
/// exists here as a symbolic link or (above it) as a non-directory — so the write lands under
/// `dest` whatever this machine held there before. The reason when not.
fn check_place(dest: &Path, rel: &Path) -> std::result::Result<(), String> {
    let mut here = dest.to_path_buf();
    let parts: Vec<Component<'_>> = rel.components().filter(|c| *c != Component::CurDir).collect();
    for (i, part) in parts.iter().enumerate() {
        let Component::Normal(name) = part else { return Err("its path is not a plain relative one".into()) };
        here.push(name);
        let meta = match std::fs::symlink_metadata(&here) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(format!("{} cannot be checked: {e}", here.display())),
        };
        if meta.file_type().is_symlink() {
            return Err(format!("{} is a symbolic link on this machine (a write there could land elsewhere)", here.display()));
        }
        if i + 1 < parts.len() && !meta.is_dir() {
            return Err(format!("{} is not a directory on this machine", here.display()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::copy::validate::craft::{end, simple};

    /// A spool file of the validated `tar` (as copy_out makes it).
    fn spooled(tar: Vec<u8>, place: Placement) -> Result<std::fs::File> {
        super::super::spool(&tar[..], place).map(|(f, _)| f)
    }

    #[test]
    fn a_file_lands_in_a_directory_or_as_the_named_path() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = Vec::new();
        simple(&mut a, "report.xml", b'0', "", b"<ok/>");
        let (dest, rename) = destination("/w/report.xml", false, &dir.path().join("renamed.xml")).unwrap();
        extract(spooled(end(a.clone()), Placement { dir: String::new(), rename_top: rename }).unwrap(), &dest, "t").unwrap();
        assert_eq!(std::fs::read(dir.path().join("renamed.xml")).unwrap(), b"<ok/>");
        let (dest, rename) = destination("/w/report.xml", false, dir.path()).unwrap();
        extract(spooled(end(a), Placement { dir: String::new(), rename_top: rename }).unwrap(), &dest, "t").unwrap();
        assert_eq!(std::fs::read(dir.path().join("report.xml")).unwrap(), b"<ok/>");
        // A missing parent, or a missing directory to copy into: nothing is made.
        assert!(destination("/w/x", false, &dir.path().join("no/such")).is_err());
        assert!(destination("/w/x", false, Path::new(&format!("{}/nodir/", dir.path().display()))).is_err());
        assert!(!dir.path().join("no").exists() && !dir.path().join("nodir").exists());
    }

    #[test]
    fn hostile_archives_write_nothing_here() {
        // Each is refused by the validator before any byte is written.
        let dir = tempfile::tempdir().unwrap();
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("absolute", {
                let mut a = Vec::new();
                simple(&mut a, "/etc/didx-owned", b'0', "", b"x");
                a
            }),
            ("climbing", {
                let mut a = Vec::new();
                simple(&mut a, "out/../../didx-owned", b'0', "", b"x");
                a
            }),
            ("through its own link", {
                let mut a = Vec::new();
                simple(&mut a, "out/link", b'2', "../..", b"");
                simple(&mut a, "out/link/didx-owned", b'0', "", b"x");
                a
            }),
            ("hard link out", {
                let mut a = Vec::new();
                simple(&mut a, "out/h", b'1', "../../etc/passwd", b"");
                a
            }),
            ("device", {
                let mut a = Vec::new();
                simple(&mut a, "out/null", b'3', "", b"");
                a
            }),
        ];
        for (name, a) in cases {
            let r = spooled(end(a), Placement::default()).and_then(|f| extract(f, dir.path(), "t"));
            assert!(r.is_err(), "{name}: accepted");
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "something was written");
    }

    #[test]
    fn a_symbolic_link_already_here_is_never_written_through() {
        let root = tempfile::tempdir().unwrap();
        let (dest, outside) = (root.path().join("dest"), root.path().join("outside"));
        std::fs::create_dir_all(&dest).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, dest.join("out")).unwrap();
        std::os::unix::fs::symlink(outside.join("file"), dest.join("file")).unwrap();
        for path in ["out/didx-owned", "file"] {
            let mut a = Vec::new();
            simple(&mut a, "ok-first", b'0', "", b"1");
            simple(&mut a, path, b'0', "", b"x");
            let e = extract(spooled(end(a), Placement::default()).unwrap(), &dest, "t").unwrap_err();
            assert!(e.to_string().contains("symbolic link on this machine"), "{path}: {e}");
            assert!(!dest.join("ok-first").exists(), "{path}: written before the refusal");
        }
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "written outside the target");
    }
}
