//! Small tar archives built in memory: the entrypoint and certificates didx places into its
//! containers before they start (a few kilobytes, so no streaming needed here).

use crate::error::{Error, Result};

/// One file to place: path relative to the upload root, mode, content.
pub struct Entry<'a> {
    /// Path inside the archive, e.g. `didx/entrypoint`.
    pub path: &'a str,
    /// Unix mode bits.
    pub mode: u32,
    /// Content.
    pub data: &'a [u8],
}

/// A tar archive holding `entries` (parent directories are added, mode 0755).
pub fn tar_of(entries: &[Entry<'_>]) -> Result<Vec<u8>> {
    let mtime = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let mut builder = tar::Builder::new(Vec::new());
    let mut dirs: Vec<String> = Vec::new();
    let io = |e| Error::io("building a tar archive", e);
    for entry in entries {
        let mut parent = String::new();
        for part in entry.path.split('/').collect::<Vec<_>>().iter().rev().skip(1).rev() {
            parent = if parent.is_empty() { part.to_string() } else { format!("{parent}/{part}") };
            if !dirs.contains(&parent) {
                let mut h = tar::Header::new_gnu();
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_mtime(mtime);
                h.set_size(0);
                builder.append_data(&mut h, format!("{parent}/"), std::io::empty()).map_err(io)?;
                dirs.push(parent.clone());
            }
        }
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(entry.mode);
        h.set_mtime(mtime);
        h.set_size(entry.data.len() as u64);
        builder.append_data(&mut h, entry.path, entry.data).map_err(io)?;
    }
    builder.into_inner().map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_holds_files_with_modes_and_parent_dirs() {
        let tar = tar_of(&[
            Entry { path: "didx/entrypoint", mode: 0o755, data: b"#!/bin/sh\n" },
            Entry { path: "didx/certs/server/key.pem", mode: 0o600, data: b"k" },
        ])
        .unwrap();
        let mut a = tar::Archive::new(&tar[..]);
        let got: Vec<(String, u32)> = a
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.path().unwrap().display().to_string(), e.header().mode().unwrap())
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("didx/".into(), 0o755),
                ("didx/entrypoint".into(), 0o755),
                ("didx/certs/".into(), 0o755),
                ("didx/certs/server/".into(), 0o755),
                ("didx/certs/server/key.pem".into(), 0o600),
            ]
        );
    }
}
