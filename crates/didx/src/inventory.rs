//! Everything didx made on an engine, found by label: list it ([`list`], what
//! `didx --clean rpt` shows), remove one environment ([`remove`]) or all of them
//! ([`remove_all`], `didx --clean all`), kept, pooled or exited alike; reach a running one
//! from a host tool ([`host_access`], what `didx env ID` prints); copy files out of and into
//! a running one's client ([`copy_out`], [`copy_in`]: `didx cp`).

pub use crate::engine::{DEFAULT_HOST, cli_env_for};
pub use crate::env::{
    EnvSummary, HeldAccess, HostAccess, Member, hold_host_access, host_access, is_on_this_machine, list, remove, remove_all, sweep,
};
pub use crate::labels::ENV as ENV_LABEL;

/// Copy `from` in the client of the running environment `id` (its id, or its server's or
/// client's container name) on `engine` to `to` on this machine, as
/// [`Sandbox::copy_out`](crate::Sandbox::copy_out) does (`didx cp ID:PATH HOST_PATH`).
pub async fn copy_out(engine: &crate::Engine, id: &str, from: &str, to: &std::path::Path) -> crate::Result<()> {
    if !from.starts_with('/') {
        return Err(crate::Error::invalid("copy source", from, "the client path must be absolute"));
    }
    let env = crate::env::view(engine, id).await?;
    crate::ops::copy::out::copy_out(&**env.backend(), &env.client().id, from, to).await.map(|_| ())
}

/// Copy `from` on this machine into the client of the running environment `id` on `engine`
/// at the absolute `to`, as [`Sandbox::copy_in`](crate::Sandbox::copy_in) does (`didx cp
/// HOST_PATH ID:PATH`).
pub async fn copy_in(engine: &crate::Engine, from: &std::path::Path, id: &str, to: &str) -> crate::Result<()> {
    let env = crate::env::view(engine, id).await?;
    crate::ops::copy::copy_in_host(&**env.backend(), &env.client().id, from, to).await.map(|_| ())
}
