//! Validating the user's own host tree: walked without following links, each entry judged,
//! files opened without following a link or blocking on a fifo.

use std::io::{self, Write};
use std::path::Path;

use super::entry::{Kind, Origin, Placement, RawEntry, RawKind, Verdict};
use super::report::Report;
use super::rules::Validator;
use super::writer::TarWriter;
use crate::error::{Error, Result};

/// Walk the host tree `src` (not following symbolic links), giving each entry as read with its
/// path: `src`'s own name first (`top`; empty for "its contents"), then everything under it.
pub fn walk_host(src: &Path, top: &[u8], f: &mut dyn FnMut(&Path, RawEntry) -> Result<()>) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let io = |e| Error::io(format!("reading {}", src.display()), e);
    let meta = std::fs::symlink_metadata(src).map_err(io)?;
    let t = meta.file_type();
    if !top.is_empty() {
        let kind = if t.is_file() {
            RawKind::File
        } else if t.is_dir() {
            RawKind::Dir
        } else if t.is_symlink() {
            RawKind::Symlink(std::fs::read_link(src).map_err(io)?.as_os_str().as_bytes().to_vec())
        } else if t.is_socket() {
            RawKind::Socket
        } else if t.is_fifo() {
            RawKind::Other("fifo".into())
        } else if t.is_char_device() {
            RawKind::Other("character device".into())
        } else if t.is_block_device() {
            RawKind::Other("block device".into())
        } else {
            RawKind::Other("file of unknown type".into())
        };
        let size = if t.is_file() { meta.len() } else { 0 };
        let raw = RawEntry {
            path: top.to_vec(),
            kind,
            mode: meta.mode(),
            uid: meta.uid().into(),
            gid: meta.gid().into(),
            mtime: meta.mtime().max(0) as u64,
            size,
        };
        f(src, raw)?;
    }
    if t.is_dir() {
        for entry in std::fs::read_dir(src).map_err(io)? {
            let entry = entry.map_err(io)?;
            let mut name = top.to_vec();
            if !name.is_empty() {
                name.push(b'/');
            }
            name.extend_from_slice(entry.file_name().as_bytes());
            walk_host(&entry.path(), &name, f)?;
        }
    }
    Ok(())
}

/// Validate the host tree `src` (named `top` in the archive) and write it into `out`. With
/// `out` = `None`, only check it (the pre-scan: metadata only, no data read).
pub fn validate_host(src: &Path, top: &[u8], place: Placement, out: Option<&mut dyn Write>) -> Result<Report> {
    let mut v = Validator::new(place, Origin::Host);
    let mut report = Report::default();
    let mut w = out.map(TarWriter::new);
    walk_host(src, top, &mut |path, raw| {
        let verdict = v.admit(&raw)?;
        report.note(&verdict);
        if let (Verdict::Write(c), Some(w)) = (verdict, w.as_mut()) {
            let io = |e| Error::io(format!("copying {}", path.display()), e);
            let n = if let Kind::File { .. } = c.kind {
                // Not following a link, not blocking on a fifo put there since the scan.
                use std::os::unix::fs::OpenOptionsExt;
                let mut file =
                    std::fs::File::options().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path).map_err(io)?;
                if !file.metadata().map_err(io)?.is_file() {
                    return Err(io(io::Error::other("it is no longer a regular file")));
                }
                w.write(&c, &mut file).map_err(io)?
            } else {
                w.write(&c, &mut io::empty()).map_err(io)?
            };
            if let Kind::File { size } = c.kind
                && n < size
            {
                return Err(io(io::Error::other(format!("it shrank from {size} to {n} bytes while being copied"))));
            }
            report.entries += 1;
            report.bytes += n;
        }
        Ok(())
    })?;
    if let Some(w) = w {
        w.finish().map_err(|e| Error::io("writing the archive", e))?;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::super::testing::at;
    use super::*;

    #[test]
    fn host_trees_are_walked_and_validated() {
        use std::os::unix::fs::PermissionsExt;
        let d = std::env::temp_dir().join(format!("didx-validate-host-{}", std::process::id()));
        std::fs::remove_dir_all(&d).ok();
        std::fs::create_dir_all(d.join("tree/sub")).unwrap();
        std::fs::write(d.join("tree/sub/f"), "abc").unwrap();
        std::fs::set_permissions(d.join("tree/sub/f"), std::fs::Permissions::from_mode(0o4755)).unwrap();
        std::os::unix::fs::symlink("sub/f", d.join("tree/l")).unwrap();
        let _sock = std::os::unix::net::UnixListener::bind(d.join("tree/sock")).unwrap();
        let mut out = Vec::new();
        let r = validate_host(&d.join("tree"), b"tree", at("x"), Some(&mut out)).unwrap();
        assert_eq!(r.skipped, vec!["skipped x/tree/sock: a socket".to_string()]);
        let mut a = tar::Archive::new(&out[..]);
        let mut got: Vec<(String, u32)> = a
            .entries()
            .unwrap()
            .map(|e| e.unwrap())
            .map(|e| (e.path().unwrap().display().to_string(), e.header().mode().unwrap()))
            .collect();
        got.sort();
        assert_eq!(
            got,
            vec![("x/tree".into(), 0o755), ("x/tree/l".into(), 0o777), ("x/tree/sub".into(), 0o755), ("x/tree/sub/f".into(), 0o4755)]
        );
        let fifo = d.join("tree/fifo");
        rustix::fs::mkfifoat(rustix::fs::CWD, &fifo, rustix::fs::Mode::from_raw_mode(0o644)).unwrap();
        let e = validate_host(&d.join("tree"), b"tree", at("x"), None).unwrap_err();
        assert!(e.to_string().contains("fifo"), "{e}");
        std::fs::remove_dir_all(&d).ok();
    }
}
