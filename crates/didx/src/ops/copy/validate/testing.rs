//! The unit tests' helpers: validate an archive and list what came out, or the refusal.

use super::craft::end;
use super::entry::{Origin, Placement};
use super::stream::validate_tar;
use crate::error::{Error, Result};

pub(super) fn at(dir: &str) -> Placement {
    Placement { dir: dir.into(), rename_top: None }
}

/// (path, type byte, link target, mode, size) of each entry of a validated archive.
pub(super) type Listed = Vec<(String, char, String, u32, u64)>;

pub(super) fn run(input: &[u8], place: Placement) -> Result<Listed> {
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

pub(super) fn refused_with(input: Vec<u8>, needle: &str) {
    let e = run(&end(input), at("t")).unwrap_err();
    assert!(matches!(e, Error::Refused { .. }), "{e}");
    assert!(e.to_string().contains(needle), "wanted {needle:?} in: {e}");
}
