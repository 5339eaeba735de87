//! Operations: what turns validated options into a started, filled environment and runs the
//! work in it: the start sequence (`start.rs`), files into the client (`copy/`), images into
//! the inner engine (`load.rs`) and out of it (`save.rs`), the client's user and docker CLI (`launcher.rs`) and the
//! COMMAND steps (`run.rs`). Above the environment layer, below the library's face (sandbox,
//! session, pool), which call them.

internal!(copy, load, run);
#[cfg(feature = "kubernetes")]
pub(crate) mod cluster;
pub(crate) mod launcher;
mod registry;
pub(crate) mod save;
pub(crate) mod start;
