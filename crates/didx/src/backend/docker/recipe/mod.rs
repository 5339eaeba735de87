//! The environment's recipe: what its server and client containers are made of (labels,
//! mounts, dockerd's arguments, the published port, the client's environment, the files placed
//! in them) as pure code, with no engine and no I/O. The Docker backend's start
//! (`backend/docker/start.rs`) and `env::pool` only sequence engine calls over it; another
//! backend (e.g. Kubernetes pods) would read the same recipe.

mod base;
mod client;
mod filler;
mod held;
mod server;

#[cfg(test)]
mod testing;

pub use base::{CLIENT_CERT_PATH, ENTRYPOINT, ENTRYPOINT_PATH, PUBLISHED_IP, STORE_PATH, TLS_PORT};
pub(crate) use base::{ENTRYPOINT_FILE, VERSION, loopback_binding};
pub(crate) use client::{Client, ClientFiles};
pub(crate) use filler::Filler;
pub(crate) use held::{handover, held, lease_env};
pub use server::INNER_CHECK;
pub(crate) use server::Server;
