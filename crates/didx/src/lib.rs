//! didx: throwaway, fully encapsulated Docker engines on demand.
//!
//! A [`Sandbox`] is a Docker-in-Docker *server* container (its own dockerd and storage,
//! isolated from the host engine's images and containers) plus a *client* container with the
//! docker CLI wired to it over mutual TLS. Start one with [`Sandbox::builder`], reach its
//! engine from Rust with [`Sandbox::docker`] (a [`bollard::Docker`] over mutual TLS), run
//! commands in its client with [`Sandbox::exec`], and remove it with [`Sandbox::rm`] — or let
//! it go: dropping removes it too, unless [`Sandbox::keep`] or `DIDX_KEEP=1`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use didx::{Engine, Sandbox};
//! use didx::bollard::query_parameters::ListImagesOptions;
//!
//! let engine = Engine::connect_default().await?;   // DOCKER_HOST, else the docker context
//! let sb = Sandbox::builder()
//!     .server_version("latest")
//!     .load("my-app:test")                          // seed from the host engine
//!     .copy("./fixtures:/work/")                    // same grammar as --cp
//!     .volume("/data")                              // same grammar as -v
//!     .start(&engine)
//!     .await?;
//! let docker: didx::bollard::Docker = sb.docker().await?;
//! let images = docker.list_images(None::<ListImagesOptions>).await?;
//! let out = sb.exec(["docker", "info"]).await?;
//! assert!(out.success());
//! sb.rm().await?;
//! # let _ = images; Ok(()) }
//! ```
//!
//! To wait on the services a test starts on the inner engine (a log line, a port, HTTP, a
//! health check, an exit), follow their logs or reach one by an alias, see [`wait`].
//!
//! The `didx` command is a thin shell over this crate: a whole run (start, copy, load,
//! commands, clean-up by policy, cancellation) is a [`session::Session`]; the warm pool is
//! [`pool`]; what didx left on an engine is in [`inventory`]; the offline image is [`image`].
#![deny(missing_docs)]
// No unsafe code in the library. Its unit tests alone set environment variables (unsafe since
// edition 2024), in one helper that allows it (cache::tests::set_env).
#![cfg_attr(not(test), forbid(unsafe_code))]
#![cfg_attr(test, deny(unsafe_code))]

/// The bollard version didx is built with, so a [`Sandbox::docker`] client and your own calls
/// agree.
pub use bollard;

/// Declares modules private to the crate, or public but hidden with the `internals` feature
/// (for didx's own CLI tests and fuzz targets; no stability promise).
macro_rules! internal {
    ($($name:ident),* $(,)?) => {$(
        #[cfg(feature = "internals")]
        #[doc(hidden)]
        pub mod $name;
        #[cfg(not(feature = "internals"))]
        pub(crate) mod $name;
    )*};
}

internal!(archive, build, cache, command, dood, engine, env, images, isolation, labels, net, ready, tls);

// The operations' modules didx's own tests and fuzz targets reach (see `ops`).
#[cfg(feature = "internals")]
#[doc(hidden)]
pub use ops::{copy, load, run};
// The check a start runs in a ready server on a rootless engine, for didx's own tests.
#[cfg(feature = "internals")]
#[doc(hidden)]
pub use backend::docker::recipe::INNER_CHECK;

mod backend;
mod cancel;
mod context;
pub mod error;
mod event;
pub mod image;
pub mod inventory;
#[cfg(feature = "kubernetes")]
pub mod kubernetes;
mod limits;
mod ops;
pub mod pool;
mod publish;
mod registry;
mod sandbox;
pub mod session;
pub mod spec;
pub mod store;
mod util;
pub mod wait;

pub use cancel::Cancel;
pub use engine::Engine;
pub use env::Endpoint;
pub use error::{Error, Result};
pub use sandbox::{DEFAULT_READY_TIMEOUT, ExecOutput, KEEP_VAR, Sandbox, SandboxBuilder, SandboxOptions, StartFrom};
