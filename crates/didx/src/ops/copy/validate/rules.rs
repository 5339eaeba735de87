//! The rules: a [`Validator`] judges one entry after the other (names, paths, links, hard
//! links, modes), remembering the links and entries seen so far.

use std::collections::{HashMap, HashSet};

use super::entry::{Checked, Kind, Origin, Placement, RawEntry, RawKind, Verdict};
use crate::error::{Error, Result};

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

pub(super) fn refused(entry: &[u8], why: impl Into<String>) -> Error {
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

#[cfg(test)]
mod tests {
    use super::super::craft::{end, entry, pax, simple};
    use super::super::testing::{at, refused_with, run};
    use super::*;

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
}
