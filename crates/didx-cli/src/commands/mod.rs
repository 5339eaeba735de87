//! One module per verb: each turns its part of the command line into a validated job (before
//! the engine is touched) and runs it. `main.rs` only picks the verb; the verbs share nothing
//! but the modules below them (run, matrix, listing, events, output, …).

pub mod completions;
pub mod cp;
pub mod env;
pub mod image;
pub mod k8s;
pub mod ls;
pub mod man;
pub mod pool;
pub mod run;
pub mod store;
