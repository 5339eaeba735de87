//! didx's own offline images, `didx/dind:local` and `didx/dind:<engine version>`, built from Debian's packages with no registry
//! ([`build`]), and how the server and client images are chosen.

pub use crate::build::{BuildEvent, BuildReport, BuildSpec, DEFAULT_SUITE, build, packages, tags_local};
pub use crate::images::{BUILD_COMMAND, LOCAL_IMAGE, PULL_RETRY_AFTER, Resolved};
