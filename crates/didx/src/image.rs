//! didx's own offline image, `didx/dind:local`, built from Debian's packages with no registry
//! ([`build`]), and how the server and client images are chosen.

pub use crate::build::{BuildEvent, BuildReport, BuildSpec, build};
pub use crate::images::{BUILD_COMMAND, LOCAL_IMAGE, PULL_RETRY_AFTER, Resolved};
