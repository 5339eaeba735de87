//! The image store (`--store`): images extracted once into a volume, used read-only by every
//! sandbox whose inner engine is of the same version.
//!
//! A store is one volume per (engine, inner engine version, storage driver), named
//! `<prefix>-<version>-overlay2` and labelled the `io.didx.store` label `=<prefix>` (never
//! `io.didx.managed`: `--clean all` and the sweep leave it). Its `root/` is the data root of a
//! **filler**, a container of the server image whose dockerd runs only while the store is
//! filled or changed: it is given the images the way `--load` gives them (the host's export
//! streamed into `docker load`), then its dockerd is stopped cleanly and the entrypoint
//! publishes a snapshot of the metadata (see `image/entrypoint.sh`). A server started with the
//! store mounts the volume read-only; its entrypoint copies the current snapshot into its own
//! data root and binds each layer's `diff/` read-only, so its engine lists the images at once
//! and what it deletes or writes goes to its own storage.
//!
//! Fills of one store are serialised by a lock in the cache directory (processes sharing it)
//! and by the filler's fixed name (any others: a second filler's create gets 409 and waits
//! until the first is gone, then looks again). Only the overlay2 inner driver is supported; a
//! sandbox with another driver, a `--dkropts` data root or driver, or `--engine host` does
//! without (a note says why) and `--load` loads as before.

mod admin;
mod event;
mod fill;
mod filler;
mod index;
mod seal;
mod version;
mod volume;

// What a user of the library manages stores with.
pub use admin::{Removed, StoreInfo, list, prune, remove};
pub use event::StoreEvent;
pub use index::{Index, StoredImage};
pub use version::engine_version;
pub use volume::{DEFAULT_PREFIX, DRIVER, PREFIX_VAR, Store, prefix};

// How a start uses a store: the crate's own (and, with `internals`, its tests').
#[cfg(feature = "internals")]
pub use internal::*;
#[cfg(not(feature = "internals"))]
#[allow(unused_imports)]
pub(crate) use internal::*;
#[allow(unused_imports)]
mod internal {
    pub use super::admin::{choose, exists, note_use};
    pub use super::fill::fill;
    pub use super::filler::FillerShape;
    pub use super::seal::{seal, withdraw};
    pub use super::version::engine_line;
}
