//! [`Sandbox`]: a throwaway Docker engine as a handle, made by a [`SandboxBuilder`] whose methods
//! mirror the `didx` command's options, with the inner engine reachable from Rust
//! ([`Sandbox::docker`]) and removal by [`Sandbox::rm`] or on drop.

mod builder;
#[cfg(feature = "kubernetes")]
mod cluster;
mod handle;

pub use builder::{DEFAULT_READY_TIMEOUT, KEEP_VAR, SandboxBuilder, StartFrom};
pub use handle::{ExecOutput, Sandbox};

pub use crate::ops::start::SandboxOptions;
