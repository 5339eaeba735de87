//! What a validated copy held: entries and bytes written, entries left out and why.

use super::entry::Verdict;

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
    pub(super) fn note(&mut self, v: &Verdict) {
        if let Verdict::Skip { path, note } = v
            && !note.is_empty()
        {
            self.skipped.push(format!("skipped {path}: {note}"));
        }
    }
}
