//! The one validator every `--cp` source passes before the client sees a byte of it — tar
//! archives from stdin, containers and images, and the user's own host trees alike.
//!
//! Each entry is read ([`RawEntry`]), judged by a [`Validator`], and written by a [`TarWriter`]
//! with a header made fresh from the validated fields only (type, path, link target, mode,
//! uid/gid, mtime, size): nothing of an input header is copied through. The rules:
//!
//! - Only regular files, directories, symbolic links and hard links pass. Devices, fifos,
//!   sockets, GNU sparse and "contiguous" files and unknown types are refused, naming the
//!   entry; in the user's own host tree ([`Origin::Host`]) a socket is skipped with a warning
//!   (as `docker cp` does), a fifo or device is refused.
//! - Names (paths, link targets) must be UTF-8 with no control character (NUL, newline, DEL,
//!   C1) and no `\`: a reader on the engine side (or a Windows engine) could read those
//!   differently, and they cannot be shown in a one-line error. PAX `path`/`linkpath` that
//!   disagree with a GNU long name are refused (readers differ on which wins).
//! - Paths are normalised; an absolute path or a `..` that climbs out is refused. A path
//!   through any earlier symbolic link of the archive is refused (a hash set of link paths,
//!   each entry's ancestors looked up: O(depth) per entry).
//! - A relative symbolic link must not climb out of the copied tree, nor resolve through an
//!   earlier link of the archive; absolute ones are kept (they resolve inside the client).
//! - A hard link is judged by what it points at: its target must be an earlier regular file
//!   of the archive (not through a link); a hard link to an earlier symbolic link is written
//!   as that symbolic link and checked as one, at its own place.
//! - Setuid/setgid bits are kept only for [`Origin::Host`]; the sticky bit is kept.
//! - The size written is the data really read (PAX and base-256 sizes resolved by the `tar`
//!   crate); an archive that ends early is refused. Entries with no data are written size 0.
//! - Paths and link targets longer than the ustar fields are written with PAX records.

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::path::Path;

use crate::error::{Error, Result};

/// Whose files these are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The user's own host tree: setuid/setgid kept, sockets skipped with a warning.
    Host,
    /// Anything else (stdin, a container, an image): setuid/setgid stripped, sockets refused.
    Foreign,
}

/// Where entries land in the client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// Path (relative to the client's `/`) of the directory entries are placed under.
    pub dir: String,
    /// Replace each path's first component with this name (copy *as* the target).
    pub rename_top: Option<String>,
}

/// An entry's type, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symbolic link to these bytes.
    Symlink(Vec<u8>),
    /// A hard link to this path of the same archive.
    HardLink(Vec<u8>),
    /// A socket.
    Socket,
    /// Anything else, named for the message (`fifo`, `character device`, …).
    Other(String),
}

/// One entry as read from an archive or a host tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEntry {
    /// The full path as read (PAX path, GNU long name or ustar prefix+name, resolved).
    pub path: Vec<u8>,
    /// Its type.
    pub kind: RawKind,
    /// Mode bits.
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// Modification time, seconds since the epoch.
    pub mtime: u64,
    /// Data size announced (files only).
    pub size: u64,
}

/// A validated entry's type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A regular file of this many bytes.
    File {
        /// Size announced; the writer checks the data holds exactly that.
        size: u64,
    },
    /// A directory.
    Dir,
    /// A symbolic link to this target.
    Symlink(String),
    /// A hard link to this path (relative to the client's `/`).
    HardLink(String),
}

/// A validated entry: what is written, and nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// Path relative to the client's `/`.
    pub path: String,
    /// Type.
    pub kind: Kind,
    /// Mode bits (permissions, and setuid/setgid/sticky as the origin allows).
    pub mode: u32,
    /// Owner.
    pub uid: u64,
    /// Group.
    pub gid: u64,
    /// Modification time.
    pub mtime: u64,
}

/// What to do with one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Write it.
    Write(Checked),
    /// Leave it out; `note` says why (empty for the archive's own root entry).
    Skip {
        /// The entry.
        path: String,
        /// Why, for a warning; empty when there is nothing to say.
        note: &'static str,
    },
}

#[derive(Debug, Clone)]
enum Seen {
    File,
    Dir,
    Symlink(String),
}

/// Judges entries one after the other; remembers the links and entries seen so far.
#[derive(Debug)]
pub struct Validator {
    place: Placement,
    origin: Origin,
    links: HashSet<String>,
    seen: HashMap<String, Seen>,
}

/// The entry as shown in messages: quoted, with odd bytes escaped.
fn show(bytes: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(bytes))
}

fn refused(entry: &[u8], why: impl Into<String>) -> Error {
    Error::Refused { source_name: String::new(), entry: show(entry), why: why.into() }
}

/// `bytes` as a name, or why not.
fn name(bytes: &[u8], what: &str) -> std::result::Result<String, String> {
    let s = std::str::from_utf8(bytes).map_err(|_| format!("its {what} is not UTF-8"))?;
    if let Some(c) = s.chars().find(|c| c.is_control() || *c == '\\') {
        return Err(format!("its {what} holds the character {c:?} (control characters and '\\' are refused)"));
    }
    Ok(s.to_string())
}

/// `path` normalised (`.` and empty parts removed, `..` applied), or `None` when it is
/// absolute or climbs out.
pub fn normalize(path: &str) -> Option<String> {
    if path.starts_with('/') {
        return None;
    }
    let mut out: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop()?;
            }
            p => out.push(p),
        }
    }
    Some(out.join("/"))
}

fn join(dir: &str, rel: &str) -> String {
    match (dir.is_empty(), rel.is_empty()) {
        (true, _) => rel.to_string(),
        (false, true) => dir.to_string(),
        (false, false) => format!("{dir}/{rel}"),
    }
}

fn parent(rel: &str) -> &str {
    rel.rsplit_once('/').map_or("", |(p, _)| p)
}

impl Validator {
    /// A validator for entries placed at `place`, from `origin`.
    pub fn new(place: Placement, origin: Origin) -> Validator {
        Validator { place, origin, links: HashSet::new(), seen: HashMap::new() }
    }

    fn renamed(&self, rel: String) -> String {
        match &self.place.rename_top {
            Some(top) => match rel.split_once('/') {
                Some((_, rest)) => join(top, rest),
                None => top.clone(),
            },
            None => rel,
        }
    }

    /// The earlier symbolic link of the archive `rel` goes through, if any (strict ancestors).
    fn through_link<'a>(&self, rel: &'a str) -> Option<&'a str> {
        rel.match_indices('/').map(|(i, _)| &rel[..i]).find(|p| self.links.contains(*p))
    }

    /// Check a symbolic link at `rel` pointing at `target`, and remember it.
    fn symlink(&mut self, rel: &str, target: &str) -> std::result::Result<(), String> {
        if target.is_empty() {
            return Err("its link target is empty".into());
        }
        if !target.starts_with('/') {
            // Resolve step by step, as the kernel will: through no link of the archive, never
            // above the copied tree.
            let mut cur: Vec<&str> = if parent(rel).is_empty() { Vec::new() } else { parent(rel).split('/').collect() };
            let parts: Vec<&str> = target.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
            for (i, part) in parts.iter().enumerate() {
                if *part == ".." {
                    if cur.pop().is_none() {
                        return Err(format!("its link target {target:?} climbs out of the target"));
                    }
                    continue;
                }
                cur.push(part);
                let here = cur.join("/");
                if i + 1 < parts.len() && self.links.contains(&here) {
                    return Err(format!("its link target {target:?} goes through the symbolic link {here:?} of the same archive"));
                }
            }
            if let Some(top) = &self.place.rename_top
                && cur.first() != Some(&top.as_str())
            {
                return Err(format!("its link target {target:?} climbs out of the copied tree"));
            }
        }
        self.links.insert(rel.to_string());
        self.remember(rel, Seen::Symlink(target.to_string()));
        Ok(())
    }

    /// Remember what `rel` is, for hard links to it. A host tree has no hard links (the walk
    /// writes each as a file), so nothing is kept for it: its memory stays flat.
    fn remember(&mut self, rel: &str, what: Seen) {
        if self.origin == Origin::Foreign {
            self.seen.insert(rel.to_string(), what);
        }
    }

    /// Judge one entry.
    pub fn admit(&mut self, raw: &RawEntry) -> Result<Verdict> {
        let refuse = |why: String| refused(&raw.path, why);
        let path = name(&raw.path, "path").map_err(refuse)?;
        let rel = normalize(&path).ok_or_else(|| refuse("its path is absolute or climbs out of the target with '..'".into()))?;
        if rel.is_empty() {
            return match raw.kind {
                RawKind::Dir => Ok(Verdict::Skip { path, note: "" }),
                _ => Err(refuse("it names the target itself but is not a directory".into())),
            };
        }
        let rel = self.renamed(rel);
        let out = join(&self.place.dir, &rel);
        match &raw.kind {
            RawKind::Socket if self.origin == Origin::Host => return Ok(Verdict::Skip { path: out, note: "a socket" }),
            RawKind::Socket => return Err(refuse("it is a socket; only regular files, directories and links are copied".into())),
            RawKind::Other(t) => return Err(refuse(format!("it is a {t}; only regular files, directories and links are copied"))),
            _ => {}
        }
        if let Some(link) = self.through_link(&rel) {
            return Err(refuse(format!("it goes through the symbolic link {link:?} of the same archive")));
        }
        let kind = match &raw.kind {
            RawKind::File => {
                self.remember(&rel, Seen::File);
                Kind::File { size: raw.size }
            }
            RawKind::Dir => {
                self.remember(&rel, Seen::Dir);
                Kind::Dir
            }
            RawKind::Symlink(t) => {
                let t = name(t, "link target").map_err(refuse)?;
                self.symlink(&rel, &t).map_err(refuse)?;
                Kind::Symlink(t)
            }
            RawKind::HardLink(t) => {
                let t = name(t, "hard-link target").map_err(refuse)?;
                let target = normalize(&t)
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| refuse(format!("its hard-link target {t:?} is outside the target")))?;
                let target = self.renamed(target);
                if let Some(link) = self.through_link(&target) {
                    return Err(refuse(format!("its hard-link target {t:?} goes through the symbolic link {link:?} of the same archive")));
                }
                match self.seen.get(&target).cloned() {
                    Some(Seen::File) => {
                        self.remember(&rel, Seen::File);
                        Kind::HardLink(join(&self.place.dir, &target))
                    }
                    Some(Seen::Symlink(to)) => {
                        self.symlink(&rel, &to)
                            .map_err(|why| refuse(format!("it is a hard link to the symbolic link {t:?}, and as one: {why}")))?;
                        Kind::Symlink(to)
                    }
                    Some(Seen::Dir) => return Err(refuse(format!("its hard-link target {t:?} is a directory"))),
                    None => return Err(refuse(format!("its hard-link target {t:?} is not an earlier file of this archive"))),
                }
            }
            RawKind::Socket | RawKind::Other(_) => unreachable!("refused above"),
        };
        let keep = if self.origin == Origin::Host { 0o7777 } else { 0o1777 };
        Ok(Verdict::Write(Checked { path: out, kind, mode: raw.mode & keep, uid: raw.uid, gid: raw.gid, mtime: raw.mtime }))
    }
}

const BLOCK: usize = 512;

/// Writes validated entries as a tar stream, every header made fresh.
pub struct TarWriter<W: Write> {
    out: W,
}

fn pax_record(buf: &mut Vec<u8>, key: &str, value: &str) {
    // "LEN key=value\n", LEN counting itself.
    let body = key.len() + value.len() + 3;
    let mut len = body + body.to_string().len();
    if len.to_string().len() != body.to_string().len() {
        len += 1;
    }
    buf.extend_from_slice(format!("{len} {key}={value}\n").as_bytes());
}

fn set_field(field: &mut [u8], value: &str) {
    let n = value.len().min(field.len());
    field[..n].copy_from_slice(&value.as_bytes()[..n]);
}

impl<W: Write> TarWriter<W> {
    /// A writer into `out`.
    pub fn new(out: W) -> TarWriter<W> {
        TarWriter { out }
    }

    fn pad(&mut self, len: u64) -> io::Result<()> {
        let rem = (len % BLOCK as u64) as usize;
        if rem != 0 {
            self.out.write_all(&[0; BLOCK][rem..])?;
        }
        Ok(())
    }

    fn header(&mut self, e: &Checked, kind: tar::EntryType, link: Option<&str>, size: u64) -> io::Result<()> {
        let mut pax = Vec::new();
        if e.path.len() > 100 {
            pax_record(&mut pax, "path", &e.path);
        }
        if let Some(l) = link.filter(|l| l.len() > 100) {
            pax_record(&mut pax, "linkpath", l);
        }
        if !pax.is_empty() {
            let mut h = tar::Header::new_ustar();
            set_field(&mut h.as_old_mut().name, "././@PaxHeader");
            h.set_entry_type(tar::EntryType::XHeader);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(e.mtime);
            h.set_size(pax.len() as u64);
            h.set_cksum();
            self.out.write_all(h.as_bytes())?;
            self.out.write_all(&pax)?;
            self.pad(pax.len() as u64)?;
        }
        let mut h = tar::Header::new_ustar();
        // Longer names are in the PAX record above, which readers take over this field.
        set_field(&mut h.as_old_mut().name, &e.path);
        if let Some(l) = link {
            set_field(&mut h.as_old_mut().linkname, l);
        }
        h.set_entry_type(kind);
        h.set_mode(e.mode);
        h.set_uid(e.uid);
        h.set_gid(e.gid);
        h.set_mtime(e.mtime);
        h.set_size(size);
        h.set_cksum();
        self.out.write_all(h.as_bytes())
    }

    /// Write `e`; a file's data is read from `data`, exactly its size. Returns the bytes of
    /// data read, which is less than the size when `data` ended early (the caller refuses).
    pub fn write(&mut self, e: &Checked, data: &mut dyn Read) -> io::Result<u64> {
        match &e.kind {
            Kind::File { size } => {
                self.header(e, tar::EntryType::Regular, None, *size)?;
                let n = io::copy(&mut data.take(*size), &mut self.out)?;
                if n < *size {
                    return Ok(n);
                }
                self.pad(n)?;
                Ok(n)
            }
            Kind::Dir => self.header(e, tar::EntryType::Directory, None, 0).map(|_| 0),
            Kind::Symlink(t) => self.header(e, tar::EntryType::Symlink, Some(t), 0).map(|_| 0),
            Kind::HardLink(t) => self.header(e, tar::EntryType::Link, Some(t), 0).map(|_| 0),
        }
    }

    /// End the archive (two zero blocks) and flush; returns the output.
    pub fn finish(mut self) -> io::Result<W> {
        self.out.write_all(&[0; 2 * BLOCK])?;
        self.out.flush()?;
        Ok(self.out)
    }
}

/// What a validated copy held.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Entries written.
    pub entries: u64,
    /// Bytes of file data written.
    pub bytes: u64,
    /// Entries left out, with why (sockets of a host tree).
    pub skipped: Vec<String>,
}

impl Report {
    fn note(&mut self, v: &Verdict) {
        if let Verdict::Skip { path, note } = v
            && !note.is_empty()
        {
            self.skipped.push(format!("skipped {path}: {note}"));
        }
    }
}

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

/// Hostile archives built byte by byte (the `tar` crate's builder would refuse to write them).
#[doc(hidden)]
#[cfg(any(test, feature = "internals"))]
pub mod craft {
    /// One raw ustar header with `name` (and `prefix`) written as given, then `data`, padded.
    #[allow(clippy::too_many_arguments)]
    pub fn entry(out: &mut Vec<u8>, prefix: &[u8], name: &[u8], kind: u8, link: &[u8], mode: u32, size: u64, data: &[u8]) {
        let mut h = tar::Header::new_ustar();
        {
            let u = h.as_ustar_mut().unwrap();
            u.name[..name.len()].copy_from_slice(name);
            u.prefix[..prefix.len()].copy_from_slice(prefix);
            u.linkname[..link.len()].copy_from_slice(link);
        }
        h.set_entry_type(tar::EntryType::new(kind));
        h.set_mode(mode);
        h.set_uid(1000);
        h.set_gid(1000);
        h.set_mtime(1_000_000_000);
        h.set_size(size);
        h.set_cksum();
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    /// A PAX extended header ('x') with these records for the next entry.
    pub fn pax(out: &mut Vec<u8>, records: &[(&str, &[u8])]) {
        let mut body = Vec::new();
        for (k, v) in records {
            let rest = k.len() + v.len() + 3;
            let mut len = rest + rest.to_string().len();
            if len.to_string().len() != rest.to_string().len() {
                len += 1;
            }
            body.extend_from_slice(format!("{len} {k}=").as_bytes());
            body.extend_from_slice(v);
            body.push(b'\n');
        }
        entry(out, b"", b"././@PaxHeader", b'x', b"", 0o644, body.len() as u64, &body);
    }
    /// A GNU long name ('L') or long link ('K') record for the next entry.
    pub fn gnu_long(out: &mut Vec<u8>, kind: u8, value: &[u8]) {
        let mut v = value.to_vec();
        v.push(0);
        entry(out, b"", b"././@LongLink", kind, b"", 0o644, v.len() as u64, &v);
    }
    /// A plain entry: regular file with `data`, or another type with no data.
    pub fn simple(out: &mut Vec<u8>, name: &str, kind: u8, link: &str, data: &[u8]) {
        entry(out, b"", name.as_bytes(), kind, link.as_bytes(), 0o644, data.len() as u64, data);
    }
    /// The end of an archive.
    pub fn end(mut out: Vec<u8>) -> Vec<u8> {
        out.extend_from_slice(&[0; 1024]);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::craft::*;
    use super::*;

    fn at(dir: &str) -> Placement {
        Placement { dir: dir.into(), rename_top: None }
    }

    /// (path, type byte, link target, mode, size) of each entry of a validated archive.
    type Listed = Vec<(String, char, String, u32, u64)>;

    fn run(input: &[u8], place: Placement) -> Result<Listed> {
        let mut out = Vec::new();
        validate_tar(input, place, Origin::Foreign, &mut out)?;
        let mut a = tar::Archive::new(&out[..]);
        Ok(a.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let link = e.link_name_bytes().map(|l| String::from_utf8(l.into_owned()).unwrap()).unwrap_or_default();
                let h = e.header();
                (
                    String::from_utf8(e.path_bytes().into_owned()).unwrap(),
                    h.entry_type().as_byte() as char,
                    link,
                    h.mode().unwrap(),
                    e.size(),
                )
            })
            .collect())
    }

    fn refused_with(input: Vec<u8>, needle: &str) {
        let e = run(&end(input), at("t")).unwrap_err();
        assert!(matches!(e, Error::Refused { .. }), "{e}");
        assert!(e.to_string().contains(needle), "wanted {needle:?} in: {e}");
    }

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
    fn paths_out_of_the_target_are_refused() {
        for name in ["/etc/passwd", "../x", "a/../../x"] {
            let mut a = Vec::new();
            simple(&mut a, name, b'0', "", b"x");
            refused_with(a, "absolute or climbs out");
        }
    }

    #[test]
    fn paths_through_an_earlier_symlink_are_refused() {
        let mut a = Vec::new();
        simple(&mut a, "l", b'2', "/etc", b"");
        simple(&mut a, "l/passwd", b'0', "", b"x");
        refused_with(a, "goes through the symbolic link \"l\"");
        // Through a hard link to a symbolic link.
        let mut a = Vec::new();
        simple(&mut a, "l", b'2', "/m", b"");
        simple(&mut a, "h", b'1', "l", b"");
        simple(&mut a, "h/evil", b'0', "", b"x");
        refused_with(a, "goes through the symbolic link \"h\"");
        // Deep: a/b/c/l, then a/b/c/l/x/y.
        let mut a = Vec::new();
        simple(&mut a, "a/b/c/l", b'2', "/", b"");
        simple(&mut a, "a/b/c/l/x/y", b'0', "", b"");
        refused_with(a, "a/b/c/l");
    }

    #[test]
    fn symlinks_that_climb_out_are_refused() {
        for target in ["../../etc", "..", "a/../../x"] {
            let mut a = Vec::new();
            simple(&mut a, "l", b'2', target, b"");
            refused_with(a, "climbs out");
        }
        // Through an earlier (absolute) link, then back up: resolves wherever that link points.
        let mut a = Vec::new();
        simple(&mut a, "l", b'2', "/deep/dir", b"");
        simple(&mut a, "s", b'2', "l/..", b"");
        refused_with(a, "goes through the symbolic link \"l\"");
        // Copied *as* a target: must stay in the renamed tree.
        let mut a = Vec::new();
        simple(&mut a, "payload/x", b'2', "../sibling", b"");
        let e = run(&end(a), Placement { dir: "opt".into(), rename_top: Some("c".into()) }).unwrap_err();
        assert!(e.to_string().contains("climbs out of the copied tree"), "{e}");
    }

    #[test]
    fn hard_links_are_judged_by_what_they_point_at() {
        let mut a = Vec::new();
        simple(&mut a, "h", b'1', "../../etc/shadow", b"");
        refused_with(a, "outside the target");
        let mut a = Vec::new();
        simple(&mut a, "h", b'1', "later", b"");
        simple(&mut a, "later", b'0', "", b"");
        refused_with(a, "not an earlier file");
        let mut a = Vec::new();
        simple(&mut a, "d/", b'5', "", b"");
        simple(&mut a, "h", b'1', "d", b"");
        refused_with(a, "is a directory");
        let mut a = Vec::new();
        simple(&mut a, "l", b'2', "/etc", b"");
        simple(&mut a, "h", b'1', "l/passwd", b"");
        refused_with(a, "hard-link target \"l/passwd\" goes through");
        // A hard link to a symlink is that symlink, checked at its own place.
        let mut a = Vec::new();
        simple(&mut a, "a/b/l", b'2', "../x", b"");
        simple(&mut a, "h", b'1', "a/b/l", b"");
        refused_with(a, "climbs out");
        let mut a = Vec::new();
        simple(&mut a, "l", b'2', "/m", b"");
        simple(&mut a, "h", b'1', "l", b"");
        assert_eq!(run(&end(a), at("t")).unwrap()[1], ("t/h".into(), '2', "/m".into(), 0o644, 0));
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
    fn odd_bytes_in_names_are_refused() {
        for name in [&b"a\0b"[..], b"new\nline", b"back\\slash", b"\xff\xfe", b"esc\x1b[31m", b"del\x7f"] {
            let mut a = Vec::new();
            pax(&mut a, &[("path", name)]);
            simple(&mut a, "x", b'0', "", b"");
            let e = run(&end(a), at("t")).unwrap_err();
            assert!(e.to_string().contains("refused"), "{name:?}: {e}");
        }
        let mut a = Vec::new();
        pax(&mut a, &[("linkpath", b"a\x01b")]);
        simple(&mut a, "l", b'2', "", b"");
        refused_with(a, "link target holds");
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
    fn setuid_is_stripped_unless_the_files_are_the_users_own() {
        let raw = RawEntry { path: b"su".to_vec(), kind: RawKind::File, mode: 0o6755, uid: 0, gid: 0, mtime: 0, size: 0 };
        let mode = |origin| match Validator::new(at(""), origin).admit(&raw).unwrap() {
            Verdict::Write(c) => c.mode,
            v => panic!("{v:?}"),
        };
        assert_eq!(mode(Origin::Foreign), 0o755);
        assert_eq!(mode(Origin::Host), 0o6755);
        let sticky = RawEntry { mode: 0o1777, kind: RawKind::Dir, ..raw.clone() };
        assert!(matches!(Validator::new(at(""), Origin::Foreign).admit(&sticky).unwrap(), Verdict::Write(Checked { mode: 0o1777, .. })));
        let mut a = Vec::new();
        entry(&mut a, b"", b"su", b'0', b"", 0o4755, 0, b"");
        assert_eq!(run(&end(a), at("")).unwrap()[0].3, 0o755);
    }

    #[test]
    fn sockets_are_skipped_in_host_trees_only() {
        let raw = RawEntry { path: b"s".to_vec(), kind: RawKind::Socket, mode: 0o755, uid: 0, gid: 0, mtime: 0, size: 0 };
        assert!(matches!(Validator::new(at(""), Origin::Host).admit(&raw).unwrap(), Verdict::Skip { note: "a socket", .. }));
        assert!(Validator::new(at(""), Origin::Foreign).admit(&raw).is_err());
        let fifo = RawEntry { kind: RawKind::Other("fifo".into()), ..raw };
        assert!(Validator::new(at(""), Origin::Host).admit(&fifo).is_err());
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
