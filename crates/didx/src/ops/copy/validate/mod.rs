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

mod entry;
mod host;
mod report;
mod rules;
mod stream;
mod writer;

#[cfg(test)]
mod testing;

#[doc(hidden)]
#[cfg(any(test, feature = "internals"))]
pub mod craft;

pub use entry::{Origin, Placement};
#[cfg_attr(not(feature = "internals"), allow(unused_imports))]
pub use entry::{Checked, Kind, RawEntry, RawKind, Verdict};
pub use host::validate_host;
#[cfg_attr(not(feature = "internals"), allow(unused_imports))]
pub use host::walk_host;
pub use report::Report;
#[cfg_attr(not(feature = "internals"), allow(unused_imports))]
pub use rules::{Validator, normalize};
pub use stream::validate_tar;
#[cfg_attr(not(feature = "internals"), allow(unused_imports))]
pub use writer::TarWriter;
