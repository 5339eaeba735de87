//! The entries the validator deals in: as read ([`RawEntry`]), as judged ([`Checked`],
//! [`Verdict`]), and whose they are and where they land ([`Origin`], [`Placement`]).

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
