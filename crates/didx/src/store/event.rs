//! What the store reports as it decides, waits and fills, for the caller to show.

use std::time::Duration;

/// Progress and decisions of the store, for the caller to report.
#[derive(Debug)]
#[non_exhaustive]
pub enum StoreEvent<'a> {
    /// The store is not used for this sandbox; `--load` loads as it does without.
    NotUsed {
        /// Why.
        reason: &'a str,
    },
    /// Another filler holds the store (or the lock); waiting for it.
    Waiting {
        /// The store.
        store: &'a str,
    },
    /// Images are being put into the store.
    Filling {
        /// The store.
        store: &'a str,
        /// The images.
        images: &'a [String],
    },
    /// Images were put into the store.
    Filled {
        /// The store.
        store: &'a str,
        /// The images.
        images: &'a [String],
        /// How long the fill took, filler start to snapshot.
        elapsed: Duration,
    },
    /// The sandbox's server mounts the store (read-only).
    Using {
        /// The store.
        store: &'a str,
    },
    /// The store's content no longer matches its seal (or it was never sealed): a sandbox
    /// changed it, or an earlier didx filled it. Its seal is withdrawn, so no sandbox seeds from
    /// it; it is filled anew by the next `--store --load` once no server mounts it.
    Refused {
        /// The store.
        store: &'a str,
        /// What was found.
        why: &'a str,
    },
}
