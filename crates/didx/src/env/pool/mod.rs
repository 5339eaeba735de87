//! The warm pool: environments started ahead of time, with dockerd up and TLS made, waiting
//! for a run to claim them.
//!
//! A pooled environment moves one way only: **starting → ready → claimed** (→ removed). Its
//! state is read from what the engine keeps atomically, never from a flag anyone can flip back:
//!
//! - *starting*: the server (named `dind_<id>_server_<sv>` from creation, labelled with the
//!   pool key, its filler, a deadline and its idle timeout) has no client yet, or only one
//!   under the name `dind_<id>_pooling_<cv>`.
//! - *ready*: its filler, once dockerd answered, created and started the client as
//!   `_pooling_` and then renamed it to the pool-only name `dind_<id>_pooled_<cv>`. The client
//!   runs (not paused): it follows its server, ending itself when the server's dockerd no
//!   longer listens, so a pooled server that ends (its idle timeout passed, its engine
//!   restarted) takes its client along, and the engine's auto-removal takes both.
//! - *claimed*: the client was renamed to its run name `dind_<id>_client_<cv>`. The engine
//!   reserves names atomically, so of any number of processes (or hosts) renaming the same
//!   client to that name exactly one succeeds; the others are told "same name" (400), "name in
//!   use" (409) or "no such container" (404) and try the next. No name goes back to
//!   `_pooled_`, so a claimed environment is never offered again. The claimer then takes a
//!   lease on its server and client (see [`crate::engine::Engine::lease`]), which also marks
//!   the server claimed so its idle timeout no longer applies.
//! - *stopped*: an unclaimed environment whose containers stopped (what an engine restart
//!   leaves): of no use, removed by the next [`up`] or [`down`].
//!
//! Removal of an unclaimed environment ([`up`] clearing stale ones, [`down`]) first claims its
//! pooled client by the same rename and removes only what it won, so it never takes an
//! environment a run claimed meanwhile. A starting environment is removed only when provably
//! dead: stopped, past its deadline, or made by a filler that held the same lock file (same
//! host and cache directory) as the one now holding it, so that filler has ended.
//!
//! [`up`] and [`down`] hold a lock file in didx's cache directory for their whole length (one
//! filler per host and cache directory at a time; waiting for it answers cancellation). It is
//! opened without following a symbolic link planted in its place.
//!
//! A claim queues a [`refill`] (run detached by the CLI's helper, perhaps long after). So that
//! one still queued never repopulates a pool that `pool down` emptied after the claim, [`down`]
//! counts itself in the cache directory (`pool-downs`, [`downs`]) first thing under the lock;
//! the claim reads the count before it claims, and the refill compares, under the lock, before
//! it starts anything: moved, it starts nothing. Under one lock, a refill either ran wholly
//! before the `down` (which removes what it made) or sees it. Only a `down` sharing the cache
//! directory is seen.
//!
//! Pools have names (`DIDX_POOL_NAME`, [`name`]; none for the default pool): a pooled server
//! carries its pool's name, the name is part of every key, and each pool has its own lock and
//! `down` count. So pools of different names (CI projects on one engine, or tests running side
//! by side) fill, list, empty and serve claims without seeing each other.
//!
//! `didx ls` shows the same states from the names (`unclaimed_client`): an unclaimed
//! environment is `ready` or `starting` (or its stopped container's state), a claimed one is a
//! run's (`running`).
//!
//! [`down`]: fn@down

mod claim;
mod down;
mod entry;
mod fill;
mod key;
#[cfg(feature = "kubernetes")]
pub(crate) mod kube;
mod lock;
mod names;
mod retire;

#[cfg(test)]
mod testing;

pub use claim::claim;
pub use down::{DownReport, down, downs};
pub use entry::{PoolEntry, PoolState, entries};
pub use fill::{MAX_SIZE, MAX_STARTING, Refill, UpReport, refill, up};
#[cfg_attr(not(feature = "internals"), allow(unused_imports))]
pub use key::key;
pub use names::{NAME_VAR, name};

#[cfg_attr(not(feature = "internals"), allow(unused_imports))]
pub use super::spec::PoolTag;
