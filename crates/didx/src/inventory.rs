//! Everything didx made on an engine, found by label: list it ([`list`], what
//! `didx --clean rpt` shows), remove one environment ([`remove`]) or all of them
//! ([`remove_all`], `didx --clean all`), kept, pooled or exited alike.

pub use crate::engine::{DEFAULT_HOST, cli_env_for};
pub use crate::env::{EnvSummary, Member, Published, list, remove, remove_all, sweep};
pub use crate::labels::ENV as ENV_LABEL;
