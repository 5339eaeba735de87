//! One environment: a server container running dockerd on storage of its own, a client
//! container with the docker CLI wired to it over mutual TLS, and their removal.
//!
//! The client shares the server's network namespace (as containers of a Kubernetes pod do), so
//! it reaches the inner engine as `docker:2376` (`docker` → 127.0.0.1 in the server's hosts
//! file) without a network of its own. The server publishes that port on the host's
//! 127.0.0.1 only ([`Environment::endpoint`]), for host processes holding the client
//! certificate ([`Environment::client_certificates`]). The backend makes the members
//! ([`crate::backend::Backend::place`]; on Docker, `backend/docker/start.rs` over the pure
//! recipe in `backend/docker/recipe/`); [`pool`] sequences engine calls over the same recipe.
mod certdir;
mod endpoint;
pub(crate) mod event;
mod handle;
pub(crate) mod id;
mod list;
pub mod pool;
mod reach;
pub(crate) mod spec;
pub(crate) mod summary;

#[cfg_attr(not(feature = "internals"), allow(unused_imports))]
pub use certdir::ClientCerts;
#[cfg_attr(not(feature = "internals"), allow(unused_imports))]
pub use endpoint::Endpoint;
pub use event::Event;
pub use handle::Environment;
#[cfg_attr(not(feature = "internals"), allow(unused_imports))]
pub use id::{Container, EnvId, owner};
pub use list::{list, remove, remove_all, sweep, sweep_logged};
pub(crate) use reach::view;
pub use reach::{HeldAccess, HostAccess, hold_host_access, host_access};
pub use crate::engine::is_on_this_machine;
#[cfg_attr(not(feature = "internals"), allow(unused_imports))]
pub use crate::backend::docker::recipe::{CLIENT_CERT_PATH, ENTRYPOINT, ENTRYPOINT_PATH, PUBLISHED_IP, STORE_PATH, TLS_PORT};
pub use spec::{EnvSpec, Seal, StoreMount};
pub use summary::{EnvSummary, Member};
