//! Everything didx made on an engine, found by label: list it ([`list`], what
//! `didx --clean rpt` shows), remove one environment ([`remove`]) or all of them
//! ([`remove_all`], `didx --clean all`), kept, pooled or exited alike; reach a running one
//! from a host tool ([`host_access`], what `didx env ID` prints).

pub use crate::engine::{DEFAULT_HOST, cli_env_for};
pub use crate::env::{
    EnvSummary, HeldAccess, HostAccess, Member, hold_host_access, host_access, is_on_this_machine, list, remove, remove_all, sweep,
};
pub use crate::labels::ENV as ENV_LABEL;
