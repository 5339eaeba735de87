//! Validating a tar archive (stdin, a container's or an image's files): each entry read,
//! refusing what readers could read in more than one way, judged and written afresh.

use std::io::{self, Read, Write};

use super::entry::{Kind, Origin, Placement, RawEntry, RawKind, Verdict};
use super::report::Report;
use super::rules::{Validator, refused};
use super::writer::TarWriter;
use crate::error::{Error, Result};

fn unreadable(e: io::Error) -> Error {
    Error::Refused { source_name: String::new(), entry: "(archive)".into(), why: format!("it is not a readable tar archive: {e}") }
}

/// The entry read from an archive, refusing what readers could read in more than one way.
fn raw_of<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Option<RawEntry>> {
    use tar::EntryType as T;
    if entry.header().entry_type() == T::XGlobalHeader {
        // Metadata for the whole archive (git archive writes one): nothing to place.
        return Ok(None);
    }
    let path = entry.path_bytes().into_owned();
    let link = entry.link_name_bytes().map(|l| l.into_owned()).unwrap_or_default();
    let bad = |why: String| refused(&path, why);
    if let Some(pax) = entry.pax_extensions().map_err(|e| bad(format!("its PAX header cannot be read: {e}")))? {
        for rec in pax {
            let rec = rec.map_err(|e| bad(format!("its PAX header cannot be read: {e}")))?;
            let key = rec.key_bytes();
            if key.starts_with(b"GNU.sparse") {
                return Err(bad("it is a GNU sparse file; only regular files, directories and links are copied".into()));
            }
            if key == b"path" && rec.value_bytes() != path.as_slice() {
                return Err(bad("its PAX path and its GNU long name disagree".into()));
            }
            if key == b"linkpath" && rec.value_bytes() != link.as_slice() {
                return Err(bad("its PAX linkpath and its GNU long link name disagree".into()));
            }
        }
    }
    let h = entry.header();
    let kind = match h.entry_type() {
        T::Regular => RawKind::File,
        T::Directory => RawKind::Dir,
        T::Symlink => RawKind::Symlink(link),
        T::Link => RawKind::HardLink(link),
        T::Char => RawKind::Other("character device".into()),
        T::Block => RawKind::Other("block device".into()),
        T::Fifo => RawKind::Other("fifo".into()),
        T::Continuous => RawKind::Other("contiguous file".into()),
        T::GNUSparse => RawKind::Other("GNU sparse file".into()),
        other => RawKind::Other(format!("entry of unknown type {:?}", other.as_byte() as char)),
    };
    // An empty numeric field reads as 0 (as Go's reader, the engine's, does); garbage is refused.
    let field = |r: io::Result<u64>, raw: &[u8], what: &str| match r {
        Err(_) if raw.iter().all(|b| *b == 0 || *b == b' ') => Ok(0),
        r => r.map_err(|e| bad(format!("its {what} cannot be read: {e}"))),
    };
    let old = h.as_old();
    Ok(Some(RawEntry {
        mode: field(h.mode().map(u64::from), &old.mode, "mode")? as u32,
        uid: field(h.uid(), &old.uid, "uid")?,
        gid: field(h.gid(), &old.gid, "gid")?,
        mtime: field(h.mtime(), &old.mtime, "mtime")?,
        size: entry.size(),
        kind,
        path,
    }))
}

/// Validate the tar archive `input` from `origin`, writing it re-rooted at `place` into `out`
/// with fresh headers. On a refusal, what was written to `out` must be discarded.
pub fn validate_tar(input: impl Read, place: Placement, origin: Origin, out: impl Write) -> Result<Report> {
    let mut v = Validator::new(place, origin);
    let mut w = TarWriter::new(out);
    let mut report = Report::default();
    let write_err = |e| Error::io("writing the validated archive", e);
    let mut archive = tar::Archive::new(input);
    for entry in archive.entries().map_err(unreadable)? {
        let mut entry = entry.map_err(unreadable)?;
        let Some(raw) = raw_of(&mut entry)? else { continue };
        let verdict = v.admit(&raw)?;
        report.note(&verdict);
        if let Verdict::Write(c) = verdict {
            let n = w.write(&c, &mut entry).map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof | io::ErrorKind::Other | io::ErrorKind::InvalidData => unreadable(e),
                _ => write_err(e),
            })?;
            if let Kind::File { size } = c.kind
                && n < size
            {
                return Err(refused(&raw.path, format!("its header says {size} bytes but the archive ends after {n}")));
            }
            report.entries += 1;
            report.bytes += n;
        }
    }
    w.finish().map_err(write_err)?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::super::craft::{end, entry, gnu_long, pax, simple};
    use super::super::testing::{at, refused_with, run};

    #[test]
    fn safe_archives_are_rerooted_with_fresh_headers() {
        let mut a = Vec::new();
        simple(&mut a, "d/", b'5', "", b"");
        simple(&mut a, "d/f", b'0', "", b"hello");
        simple(&mut a, "d/l", b'2', "f", b"");
        simple(&mut a, "d/h", b'1', "d/f", b"");
        simple(&mut a, "abs", b'2', "/usr/bin/env", b"");
        let got = run(&end(a), at("t")).unwrap();
        assert_eq!(
            got,
            vec![
                ("t/d".into(), '5', "".into(), 0o644, 0),
                ("t/d/f".into(), '0', "".into(), 0o644, 5),
                ("t/d/l".into(), '2', "f".into(), 0o644, 0),
                ("t/d/h".into(), '1', "t/d/f".into(), 0o644, 0),
                ("t/abs".into(), '2', "/usr/bin/env".into(), 0o644, 0),
            ]
        );
    }

    #[test]
    fn special_files_are_refused_by_type() {
        for (kind, needle) in [
            (b'3', "character device"),
            (b'4', "block device"),
            (b'6', "fifo"),
            (b'7', "contiguous"),
            (b'S', "sparse"),
            (b'Z', "unknown type"),
        ] {
            let mut a = Vec::new();
            simple(&mut a, "dev", kind, "", b"");
            refused_with(a, needle);
        }
        let mut a = Vec::new();
        pax(&mut a, &[("GNU.sparse.major", b"1"), ("GNU.sparse.minor", b"0")]);
        simple(&mut a, "f", b'0', "", b"");
        refused_with(a, "GNU sparse");
    }

    #[test]
    fn the_full_resolved_path_is_checked_and_written() {
        // PAX path overrides the header name.
        let mut a = Vec::new();
        pax(&mut a, &[("path", b"../../etc/evil")]);
        simple(&mut a, "harmless", b'0', "", b"x");
        refused_with(a, "climbs out");
        // GNU long name.
        let mut a = Vec::new();
        gnu_long(&mut a, b'L', b"/etc/evil");
        simple(&mut a, "harmless", b'0', "", b"x");
        refused_with(a, "absolute");
        // GNU long link name.
        let mut a = Vec::new();
        gnu_long(&mut a, b'K', b"../../../etc");
        simple(&mut a, "l", b'2', "ok", b"");
        refused_with(a, "climbs out");
        // PAX linkpath.
        let mut a = Vec::new();
        pax(&mut a, &[("linkpath", b"../..")]);
        simple(&mut a, "l", b'2', "ok", b"");
        refused_with(a, "climbs out");
        // ustar prefix.
        let mut a = Vec::new();
        entry(&mut a, b"..", b"evil", b'0', b"", 0o644, 0, b"");
        refused_with(a, "climbs out");
        // Readers disagree on PAX path vs GNU long name: refused.
        let mut a = Vec::new();
        gnu_long(&mut a, b'L', b"one");
        pax(&mut a, &[("path", b"two")]);
        simple(&mut a, "x", b'0', "", b"");
        refused_with(a, "disagree");
        // Long benign names come out whole.
        let long = format!("{}/{}", "d".repeat(120), "f".repeat(150));
        let target = "t".repeat(130);
        let mut a = Vec::new();
        pax(&mut a, &[("path", long.as_bytes())]);
        simple(&mut a, "x", b'0', "", b"data");
        gnu_long(&mut a, b'L', b"l");
        gnu_long(&mut a, b'K', target.as_bytes());
        simple(&mut a, "y", b'2', "", b"");
        entry(&mut a, b"pre/fix", b"name", b'0', b"", 0o644, 0, b"");
        let got = run(&end(a), at("t")).unwrap();
        assert_eq!(got[0].0, format!("t/{long}"));
        assert_eq!(got[0].4, 4);
        assert_eq!((got[1].0.as_str(), got[1].2.as_str()), ("t/l", target.as_str()));
        assert_eq!(got[2].0, "t/pre/fix/name");
    }

    #[test]
    fn size_lies_are_refused_and_sizes_written_are_real() {
        // Header says 100 bytes, the archive ends after 10.
        let mut a = Vec::new();
        entry(&mut a, b"", b"f", b'0', b"", 0o644, 100, b"");
        a.extend_from_slice(b"0123456789");
        let e = run(&a, at("t")).unwrap_err();
        assert!(e.to_string().contains("refused"), "{e}");
        // PAX size overrides the header's 0: 600 bytes really follow.
        let data = vec![7u8; 600];
        let mut a = Vec::new();
        pax(&mut a, &[("size", b"600")]);
        entry(&mut a, b"", b"f", b'0', b"", 0o644, 0, &data);
        let got = run(&end(a), at("t")).unwrap();
        assert_eq!(got, vec![("t/f".into(), '0', "".into(), 0o644, 600)]);
        // A directory or link that claims data is written with size 0.
        let mut a = Vec::new();
        entry(&mut a, b"", b"d/", b'5', b"", 0o755, 3, b"abc");
        let got = run(&end(a), at("t")).unwrap();
        assert_eq!(got, vec![("t/d".into(), '5', "".into(), 0o755, 0)]);
    }

    #[test]
    fn empty_numeric_fields_read_as_zero() {
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..1].copy_from_slice(b"f");
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(0);
        h.set_cksum();
        let got = run(&end(h.as_bytes().to_vec()), at("")).unwrap();
        assert_eq!(got, vec![("f".into(), '0', "".into(), 0, 0)]);
    }

    #[test]
    fn global_headers_are_dropped_and_garbage_is_refused() {
        let mut a = Vec::new();
        entry(&mut a, b"", b"pax_global_header", b'g', b"", 0o644, 16, b"16 comment=abcd\n");
        simple(&mut a, "f", b'0', "", b"x");
        assert_eq!(run(&end(a), at("")).unwrap().len(), 1);
        let e = run(&[1u8; 1024], at("")).unwrap_err();
        assert!(e.to_string().contains("not a readable tar archive"), "{e}");
    }
}
