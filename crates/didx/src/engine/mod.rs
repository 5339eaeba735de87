//! The one wrapper around the Docker Engine API (bollard): every engine call didx makes is a
//! method here, each failure mapped to [`Error::Engine`] naming the call and its target.
//! A 404 on removal means "already gone" and is not an error.
//!
//! Every call is bounded, by a bound suited to it, and a call that passes it fails with
//! [`Error::TimedOut`] naming the call:
//! - quick calls (inspect, create, start, pause, rename, list, stat, logs tail, exec
//!   create/start/inspect) answer within [`QUICK_TIMEOUT`]; removals within
//!   [`REMOVE_TIMEOUT`] (a force remove kills the container and deletes its anonymous volumes);
//! - data calls (pull, import, upload, download, export, the input of an exec) fail when no
//!   data moves for [`IDLE_TIMEOUT`], however long they take in all; a commit (no progress to
//!   watch) within [`COMMIT_TIMEOUT`]; an image export's first byte (the engine writes the
//!   whole export to disk first) within [`EXPORT_FIRST_BYTE_TIMEOUT`];
//! - the output of an exec (a user's COMMAND), a container's followed logs and
//!   [`Engine::wait`] are not bounded: their length is the program's.
//!
//! bollard's own client-wide timeout only covers a request until the engine's response
//! headers arrive; for an upload that is the whole transfer, for a streamed response none of
//! the body. So didx bounds each call itself and gives bollard no bound.
//!
//! One file per engine resource, as bollard keeps them: [`Engine`] and connecting (`connect`),
//! the bound and error mapping every call goes through (`call`), containers, files in and out
//! of them, images, volumes, networks, execs, and the lease protocol (`lease`).
//!
//! [`Error::Engine`]: crate::error::Error::Engine
//! [`Error::TimedOut`]: crate::error::Error::TimedOut

/// A raw engine method: the crate's own, and public only with the `internals` feature (for
/// didx's tests and fuzz targets). A user of the library holds an [`Engine`] to start sandboxes
/// on, not a second Docker client.
macro_rules! raw {
    ($(#[$m:meta])* async fn $($rest:tt)*) => {
        #[cfg(feature = "internals")]
        $(#[$m])* pub async fn $($rest)*
        #[cfg(not(feature = "internals"))]
        $(#[$m])* pub(crate) async fn $($rest)*
    };
    ($(#[$m:meta])* fn $($rest:tt)*) => {
        #[cfg(feature = "internals")]
        $(#[$m])* pub fn $($rest)*
        #[cfg(not(feature = "internals"))]
        $(#[$m])* pub(crate) fn $($rest)*
    };
}

mod call;
mod dial;
mod connect;
mod container;
mod exec;
mod files;
mod image;
mod lease;
mod network;
mod podman;
mod ports;
mod ssh;
mod volume;

pub(crate) use call::body_from;
pub use call::{message_of, status_of};
// The bounds: named by this module's doc, and paths of the `internals` API; the crate itself
// uses them only inside this folder, through `call`.
#[allow(unused_imports)]
pub use call::{COMMIT_TIMEOUT, EXPORT_FIRST_BYTE_TIMEOUT, IDLE_TIMEOUT, QUICK_TIMEOUT, REMOVE_TIMEOUT};
pub use connect::{DEFAULT_HOST, Engine, cli_env_for, is_on_this_machine};
pub use exec::ExecAs;
pub use image::split_reference;
pub use lease::Lease;
#[cfg(feature = "kubernetes")]
pub(crate) use dial::{DIAL, Duplex, docker_over};
pub(crate) use ssh::Forward;
pub(crate) use ports::port_holder;
